# make book   : builds the executed book (full settings, the articles') into _build/html/index.html
# make test   : runs the test suite (unit tests, every notebook in quick mode, a quick book build)
# make test-variants : the rounding-sensitive unit tests again under other CPUs' kernel choices
# Both first create the virtual environment .venv with the pinned packages (once).
#
# Settings (environment variables or make arguments):
#   MODE=quick|full        book build settings (default full)
#   VAD_ASSETS=/path       offline assets folder (default ../shared/assets when it exists; empty:
#                          download into VAD_CACHE, default ~/.cache/visual-anomaly-book)

PYTHON ?= python3
VENV ?= .venv
MODE ?= full
VAD_ASSETS ?= $(abspath $(wildcard ../shared/assets))
export VAD_ASSETS

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv book test test-variants clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: venv
	$(BIN)/python -m helpers.book --mode $(MODE)

test: venv
	$(BIN)/python -m pytest

# Machines differ: MKL picks its GEMM kernel by CPU, torch its vectorised loops, and the thread count
# changes reduction orders. Each variant below makes this CPU round as another would (MKL_CBWR forces
# MKL's generic, AVX2 or AVX-512 code path; ATEN_CPU_CAPABILITY torch's own kernels; oneDNN off for
# TensorFlow; OPENBLAS_CORETYPE the kernels NumPy's OpenBLAS picks on an Intel Xeon with AVX-512),
# and the tests marked `numerics` must pass under every one (about 40 s each).
CPU_VARIANTS ?= MKL_CBWR=COMPATIBLE MKL_CBWR=AVX2 MKL_CBWR=AVX512 ATEN_CPU_CAPABILITY=default \
	ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 TF_ENABLE_ONEDNN_OPTS=0 OPENBLAS_CORETYPE=SkylakeX

test-variants: venv
	@for v in $(CPU_VARIANTS); do \
	  echo "== numerics unit tests under $$v"; \
	  env $$v $(BIN)/python -m pytest -q -m numerics -p no:cacheprovider --disable-warnings || exit 1; \
	done

clean:
	rm -rf _build
