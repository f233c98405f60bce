"""Shared fixtures: the offline assets root and a loopback HTTP server for
download tests."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers._compat import load_triton_before_tensorflow

# test modules import both keras and torchvision
load_triton_before_tensorflow()

ROOT = Path(__file__).resolve().parent.parent
SHARED_ASSETS = (ROOT.parent / "shared" / "assets").resolve()

# The unit tests whose results depend on floating-point rounding (BLAS kernels,
# vectorised loops, thread counts). `make test-variants` runs them again under
# other CPUs' kernel choices (see the Makefile); the slow end-to-end tests of
# these modules stay out of that run.
NUMERIC_MODULES = {
    "test_patchcore_scorer",
    "test_patchcore_features",
    "test_patchcore_sampler",
    "test_patchcore_metrics",
    "test_patchcore_model",
    "test_patchcore_preprocess",
    "test_patchcore_evaluation",
    "test_vae_losses",
    "test_vae_model_scoring",
    "test_vae_crops",
    "test_bad_inputs",
}
SLOW_NUMERIC = {
    "test_torch_backend_trains",
    "test_determinism_same_seed_same_weights_and_scores",
    "test_damaged_vae_cache_entry_is_trained_again",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in NUMERIC_MODULES and item.originalname not in SLOW_NUMERIC:
            item.add_marker(pytest.mark.numerics)


# Tests run against the offline assets (CI and
# these machines have them beside the checkout).
if not os.environ.get("VAD_ASSETS") and SHARED_ASSETS.is_dir():
    os.environ["VAD_ASSETS"] = str(SHARED_ASSETS)


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory):
    """Every notebook executed once with papermill in quick mode, exactly as
    the book build does it; the notebook tests re-run these under nbval and the
    book test builds from them. Returns
    ``(folder, {notebook relative to notebooks/: helpers.book.Run})``."""
    from helpers import book

    out = tmp_path_factory.mktemp("executed-quick")
    runs = book.execute("quick", out=out)
    return out, {r.notebook: r for r in runs}


@pytest.fixture
def isolated_assets(tmp_path, monkeypatch):
    """No assets root, an empty cache in tmp_path, downloads allowed."""
    monkeypatch.delenv("VAD_ASSETS", raising=False)
    monkeypatch.delenv("VAD_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VAD_CACHE", str(cache))
    return cache


class _Routes(dict):
    """path -> dict(body=bytes, status=int, delay=float, truncate=int|None,
    fail_times=int)."""

    hits: dict


@pytest.fixture
def http_server():
    """A loopback HTTP server; tests add routes to ``server.routes`` and read
    ``server.url``."""
    routes = _Routes()
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.get("fail_times", 0) >= hits[self.path]:
                self.send_error(503)
                return
            if route.get("status", 200) != 200:
                self.send_error(route["status"])
                return
            body = route["body"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            time.sleep(route.get("delay", 0.0))
            cut = route.get("truncate")
            try:
                self.wfile.write(body[:cut] if cut is not None else body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.routes = routes
    server.hits = hits
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
