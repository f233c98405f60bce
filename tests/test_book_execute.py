"""The build's executor: papermill per chapter, keeps going past a failure,
reuses unchanged runs."""

from pathlib import Path

import nbformat
import pytest

from helpers import book


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# t"),
        params,
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_execute_keeps_going_reports_failures_and_reuses_unchanged(tmp_path):
    root = tmp_path / "proj"
    _notebook(root / "notebooks" / "a.ipynb", "print('mode', quick)")
    _notebook(root / "notebooks" / "b.ipynb", "raise ValueError('boom in b')")
    _notebook(
        root / "notebooks" / "appendix-reproducibility.ipynb", "print('last')"
    )
    out = tmp_path / "out"
    runs = book.execute("quick", root=root, out=out)
    # appendix last
    assert [r.notebook for r in runs] == [
        "a.ipynb",
        "b.ipynb",
        "appendix-reproducibility.ipynb",
    ]
    assert [r.status for r in runs] == ["executed", "failed", "executed"]
    assert "mode True" in Path(runs[0].path).read_text()
    assert "boom in b" in runs[1].error
    with pytest.raises(book.BookBuildError, match=r"b\.ipynb"):
        book.check(runs)
    again = book.execute("quick", root=root, out=out)
    assert [r.status for r in again] == ["reused", "failed", "executed"]
    # an edit invalidates the run
    _notebook(root / "notebooks" / "a.ipynb", "print('changed', quick)")
    assert book.execute("quick", root=root, out=out)[0].status == "executed"
    assert (
        book.execute("full", root=root, out=tmp_path / "full")[0].status
        == "executed"
    )


def test_a_prose_edit_is_restaged_without_executing_again(tmp_path):
    root = tmp_path / "proj"
    nb_path = root / "notebooks" / "a.ipynb"
    _notebook(nb_path, "import random; print('drawn', random.random())")
    out = tmp_path / "out"
    first = book.execute("quick", root=root, out=out)[0]
    drawn = [
        o
        for c in nbformat.read(first.path, as_version=4).cells
        for o in c.get("outputs", [])
    ]
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("## Exercises\n\nnew prose"))
    nb.cells[2].metadata["mystnb"] = {
        "figure": {"caption": "a caption", "name": "fig-a"}
    }
    nbformat.write(nb, nb_path)
    again = book.execute("quick", root=root, out=out)[0]
    assert again.status == "reused"
    staged = nbformat.read(again.path, as_version=4)
    assert staged.cells[-1].source.endswith("new prose")
    code = [c for c in staged.cells if c.cell_type == "code"]
    assert "injected-parameters" in code[1].metadata["tags"], (
        "papermill's parameters stay in place"
    )
    assert (
        code[2].outputs == drawn
        and code[2].metadata["mystnb"]["figure"]["name"] == "fig-a"
    )
    nb.cells[2].source += "\nprint('more')"  # a code edit executes again
    nbformat.write(nb, nb_path)
    assert book.execute("quick", root=root, out=out)[0].status == "executed"


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="quick' or 'full"):
        book.execute("fast")


def test_a_part_depends_on_its_own_helpers_only(tmp_path):
    root = tmp_path / "proj"
    for name in (
        "helpers/common.py",
        "helpers/patchcore/x.py",
        "helpers/vae/y.py",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# v1\n")
    nb = root / "notebooks" / "patchcore" / "p.ipynb"
    _notebook(nb, "pass")
    key = book.source_key(nb, "quick", root)
    (root / "helpers/vae/y.py").write_text("# v2\n")
    assert book.source_key(nb, "quick", root) == key, (
        "a VAE helper change must not re-run Part I"
    )
    (root / "helpers/patchcore/x.py").write_text("# v2\n")
    key2 = book.source_key(nb, "quick", root)
    assert key2 != key
    (root / "helpers/common.py").write_text("# v2\n")
    assert book.source_key(nb, "quick", root) != key2
    assert book.source_key(nb, "full", root) != book.source_key(
        nb, "quick", root
    )


def test_staging_hides_the_injected_parameters_cell(tmp_path):
    root = tmp_path / "proj"
    _notebook(root / "notebooks" / "a.ipynb", "print('mode', quick)")
    out = tmp_path / "out"
    book.execute("quick", root=root, out=out)
    (root / "book").mkdir()
    (root / "_toc.yml").write_text("format: jb-book\nroot: notebooks/a\n")
    (root / "_config.yml").write_text("title: t\n")
    staged = book.stage(root, out, tmp_path / "staged")
    cells = nbformat.read(staged / "notebooks" / "a.ipynb", as_version=4).cells
    injected = [
        c for c in cells if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata.tags
    # it still ran with the injected value
    assert "quick = True" in injected[0].source
    assert [c for c in cells if "parameters" in c.metadata.get("tags", [])][
        0
    ].source == "quick = None"


def test_chapters_execute_in_the_books_order(tmp_path):
    """Part I, II, III as the table of contents lists them (later parts
    reuse earlier parts' models), not the folders' alphabetical order; the
    appendix last, an unlisted notebook after the listed ones."""
    names = [
        "notebooks/getting-started",
        "notebooks/zeta/01-a",
        "notebooks/alpha/02-b",
        "notebooks/alpha/01-a",
        "notebooks/appendix-reproducibility",
        "notebooks/unlisted",
    ]
    for name in names:
        _notebook(tmp_path / f"{name}.ipynb", "pass")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        # a file may be named with its suffix
        "  - chapters:\n      - file: notebooks/getting-started.ipynb\n"
        "  - chapters:\n      - file: book/zeta\n        sections:\n"
        "          - glob: notebooks/zeta/*\n"
        "  - chapters:\n      - file: book/alpha\n        sections:\n"
        "          - glob: notebooks/alpha/*\n"
        "  - chapters:\n      - file: notebooks/appendix-reproducibility\n"
    )
    got = [
        p.relative_to(tmp_path).with_suffix("").as_posix()
        for p in book.chapter_notebooks(tmp_path)
    ]
    assert got == [
        "notebooks/getting-started",
        "notebooks/zeta/01-a",
        "notebooks/alpha/01-a",
        "notebooks/alpha/02-b",
        "notebooks/unlisted",
        "notebooks/appendix-reproducibility",
    ]
    real = book.chapter_notebooks()
    parts = [p.parent.name for p in real if p.parent.name != "notebooks"]
    assert parts == sorted(parts, key=["patchcore", "vae", "beyond"].index)
