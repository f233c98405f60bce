"""Build the executed book: ``python -m helpers.book --mode quick|full``.

Sets ``BOOK_MODE`` (which every chapter reads through :mod:`helpers.runtime`), then runs
Jupyter Book 1 with Sphinx warnings treated as errors. The HTML lands in ``_build/html``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(mode: str = "full", root: Path = ROOT, output: Path | None = None,
          builder: str = "html") -> Path:
    """Build the book at ``root`` in ``mode`` into ``output`` (default ``root``), which receives
    ``_build/html``; return the path of the built index page."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    env = dict(os.environ, BOOK_MODE=mode, PYTHONHASHSEED="0")
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(root), "--builder", builder,
           "-W", "-n", "--keep-going"]
    out = Path(output) if output is not None else root
    if output is not None:
        cmd += ["--path-output", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=root)
    index = out / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"the build finished but {index} is missing")
    print(f"Built the book in {mode} mode in {time.perf_counter() - start:.0f} s: {index}")
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("quick", "full"), default=os.environ.get("BOOK_MODE", "full"))
    args = parser.parse_args(argv)
    try:
        build(args.mode)
    except subprocess.CalledProcessError as err:
        sys.exit(f"The book build failed (exit {err.returncode}); see the messages above.")


if __name__ == "__main__":
    main()
