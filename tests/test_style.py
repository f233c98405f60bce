"""The code's format is checked, not hoped for: `ruff format --check` over everything a reader or a
contributor opens, and the rules that keep the rendered chapters readable (lines that fit the
book's code column, cells short enough to read)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORMATTED = ("helpers", "tests", "benchmarks", "notebooks")
MAX_CELL_LINES = 40
NOTEBOOKS = sorted(
    p
    for p in (ROOT / "notebooks").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)


def _line_length() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["ruff"]["line-length"]


def test_code_is_formatted_with_ruff():
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.is_file(), (
        "ruff is pinned in requirements.txt: run `make venv`"
    )
    run = subprocess.run(
        [str(ruff), "format", "--check", *FORMATTED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, (
        "these files are not formatted; run `.venv/bin/ruff format "
        f"{' '.join(FORMATTED)}`:\n{run.stdout}{run.stderr}"
    )


def _shown_code_cells(path: Path):
    """The code cells a reader sees (their code shown, or one click away)."""
    for cell in json.loads(path.read_text())["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code" and "remove-cell" not in tags:
            yield cell.get("id"), "".join(cell["source"]).split("\n")


@pytest.mark.parametrize(
    "path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_chapter_code_fits_the_page(path):
    limit = _line_length()
    wide = [
        f"cell {cid}, line {i + 1} ({len(line)} characters): {line.strip()[:50]}"
        for cid, lines in _shown_code_cells(path)
        for i, line in enumerate(lines)
        if len(line) > limit
    ]
    assert not wide, (
        f"lines longer than {limit} characters scroll sideways in the rendered "
        "book; wrap them (strings by implicit concatenation):\n"
        + "\n".join(wide)
    )
    long = [
        f"cell {cid}: {len(lines)} lines"
        for cid, lines in _shown_code_cells(path)
        if len(lines) > MAX_CELL_LINES
    ]
    assert not long, (
        f"code cells longer than {MAX_CELL_LINES} lines: split them or move the "
        "plumbing into a tested helper:\n" + "\n".join(long)
    )
