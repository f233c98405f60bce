"""Every notebook: stored clean with a parameters cell, executed with papermill
in quick mode, then re-executed and compared by nbval (cells marked
``# NBVAL_CHECK_OUTPUT`` must print the same)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(
    p
    for p in (ROOT / "notebooks").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
IDS = [str(p.relative_to(ROOT / "notebooks")) for p in NOTEBOOKS]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_notebooks_and_all_are_in_the_toc():
    assert NOTEBOOKS, "no notebooks found"
    import fnmatch

    toc = (ROOT / "_toc.yml").read_text()
    globs = __import__("re").findall(r"glob:\s*(\S+)", toc)
    for nb in NOTEBOOKS:
        rel = nb.relative_to(ROOT).with_suffix("").as_posix()
        listed = f"file: {rel}" in toc or any(
            fnmatch.fnmatch(rel, g) for g in globs
        )
        assert listed, f"{rel} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_clean_with_a_parameters_cell(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _source(
        cells[0]
    ).lstrip().startswith("# "), "the first cell must be the markdown title"
    params = cells[1]
    assert params["cell_type"] == "code" and "parameters" in params.get(
        "metadata", {}
    ).get("tags", []), (
        "the first cell after the title must be the papermill 'parameters' cell"
    )
    assert "quick = None" in _source(params)
    for cell in cells:
        if cell["cell_type"] == "code":
            assert (
                not cell.get("outputs") and cell.get("execution_count") is None
            ), "stored with outputs"
    # a valid nbformat 4.5 file: every cell has an id, and no id repeats (a
    # hand-inserted cell may lack one)
    import nbformat

    nb = nbformat.reads(path.read_text(), as_version=4)
    nbformat.validate(nb, relax_add_props=False)
    ids = [c.get("id") for c in cells]
    assert all(ids) and len(set(ids)) == len(ids), (
        "every cell needs a unique id (nbformat 4.5)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_installs_helpers_from_the_one_repository(path):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"][
        "url"
    ]
    text = "\n".join(_source(c) for c in _cells(path))
    assert f'REPOSITORY = "{url}"' in text, (
        "the setup cell must install helpers from _config.yml's repository"
    )
    others = {
        u
        for u in __import__("re").findall(
            r"https://github\.com/[\w.-]+/[\w.-]+", text
        )
        if not u.startswith(url)
    }
    assert not others, f"other repository URLs: {others}"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_quick_mode_twice_and_nbval_agrees(
    path, tmp_path, quick_runs
):
    """papermill has run the notebook with ``quick=True`` (the ``quick_runs``
    fixture, shared with the book build); nbval now runs it twice over in ONE
    fresh kernel (all cells, then all cells again: no hidden state may break a
    re-run) and compares the cells marked ``# NBVAL_CHECK_OUTPUT``, in both
    passes, with papermill's outputs."""
    import copy
    import uuid

    import nbformat

    run = quick_runs[1][path.relative_to(ROOT / "notebooks").as_posix()]
    assert run.ok, (
        f"papermill failed on {path.name} (executed copy: {run.path}):\n{run.error}"
    )
    nb = nbformat.read(run.path, as_version=4)
    injected = [
        c
        for c in nb.cells
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert injected and "quick = True" in injected[0].source, (
        "papermill must inject quick = True"
    )
    # everything after the title, the injected parameters included
    again = copy.deepcopy(nb.cells[1:])
    for cell in again:
        cell.metadata["tags"] = [
            t for t in cell.metadata.get("tags", []) if t != "parameters"
        ]
        cell["id"] = uuid.uuid4().hex[:8]
    nb.cells.extend(again)
    twice = tmp_path / f"twice-{path.name}"
    nbformat.write(nb, twice)
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-c",
            str(ini),
            "--rootdir",
            str(tmp_path),
            str(twice),
        ],
        cwd=path.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"nbval failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    )


CHAPTERS = [p for p in NOTEBOOKS if p.name != "appendix-reproducibility.ipynb"]
CHAPTER_IDS = [str(p.relative_to(ROOT / "notebooks")) for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=CHAPTER_IDS)
def test_chapter_ends_with_exercises_and_hidden_solutions(path):
    """2-4 exercises under a final '## Exercises' heading; each has a solution
    behind a toggle (a dropdown admonition, and optionally a runnable code cell
    tagged hide-cell)."""
    cells = _cells(path)
    heads = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
        and _source(c).lstrip().startswith("## Exercises")
    ]
    assert heads, "the chapter must end with a '## Exercises' section"
    start = heads[-1]
    assert not any(
        c["cell_type"] == "markdown" and _source(c).lstrip().startswith("## ")
        for c in cells[start + 1 :]
    ), "the exercises must be the chapter's last section"
    exercises = [
        i
        for i in range(start, len(cells))
        if cells[i]["cell_type"] == "markdown"
        and "### Exercise" in _source(cells[i])
    ]
    assert 2 <= len(exercises) <= 4, (
        f"expected 2-4 exercises, found {len(exercises)}"
    )
    for a, b in zip(exercises, exercises[1:] + [len(cells)]):
        block = cells[a:b]
        text = "\n".join(
            _source(c) for c in block if c["cell_type"] == "markdown"
        )
        dropdown = (
            "{admonition} Solution" in text and ":class: dropdown" in text
        )
        assert dropdown, (
            f"exercise at cell {a} has no solution in a dropdown admonition"
        )
        for c in block:
            if c["cell_type"] == "code":
                tags = c.get("metadata", {}).get("tags", [])
                assert "hide-cell" in tags or "remove-cell" in tags, (
                    f"solution code at cell {a} must be hidden (tag hide-cell; a claim check: remove-cell)"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_figure_has_a_caption(path):
    """Cells that draw a figure carry myst-nb figure metadata with a caption
    (and a name to cite it)."""
    for i, c in enumerate(_cells(path)):
        if c["cell_type"] == "code" and "plt.show()" in _source(c):
            fig = c.get("metadata", {}).get("mystnb", {}).get("figure", {})
            assert fig.get("caption", "").strip() and fig.get("name"), (
                f"cell {i} draws a figure without metadata mystnb.figure.caption and name"
            )
            # myst-nb wraps every rich output of a captioned cell in the
            # figure: a second one (a table shown with display(), another
            # plt.show()) repeats the figure's name and breaks the -W build
            assert _source(c).count(
                "plt.show()"
            ) == 1 and "display(" not in _source(c), (
                f"cell {i} has a caption, so it must show exactly one figure and nothing else"
            )


def test_figure_names_are_unique_across_the_book():
    names = [
        c["metadata"]["mystnb"]["figure"]["name"]
        for p in NOTEBOOKS
        for c in _cells(p)
        if c.get("metadata", {})
        .get("mystnb", {})
        .get("figure", {})
        .get("name")
    ]
    assert len(names) == len(set(names)), sorted(
        {n for n in names if names.count(n) > 1}
    )
