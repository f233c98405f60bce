# make book   : builds the executed book (full settings, the articles') into _build/html/index.html
# make test   : runs the test suite (unit tests, every notebook in quick mode, a quick book build)
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

.PHONY: venv book test clean

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

clean:
	rm -rf _build
