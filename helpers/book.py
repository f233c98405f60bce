"""Build the executed book: ``python -m helpers.book --mode quick|full``.

Two steps, one execution path for the build and for the tests:

1. :func:`execute` runs every chapter notebook with **papermill**
   (``quick=True`` or ``False``) into ``_build/executed/<mode>/``, one after
   the other in the book's order (:func:`chapter_notebooks`), keeping going
   past a failing chapter and reporting all failures at the end. Each executed
   notebook records a key (the notebook's code cells, the mode, the ``helpers``
   sources and the pins); a later build reuses it when the key is unchanged, so
   an interrupted full build resumes where it stopped, and an edit of prose or
   captions only is re-staged with the earlier outputs instead of executed
   again. The reproducibility appendix runs last and reads the recorded times.
   Trained VAEs and fitted PatchCore models are shared between chapters through
   :mod:`helpers.vae.cache` and :mod:`helpers.patchcore.cache`
   (``_build/executed/<mode>/.models``).
2. :func:`build` copies the book's pages and the executed notebooks into a
   staging tree and runs Jupyter Book 1 on it with execution off and Sphinx
   warnings as errors. The HTML lands in ``_build/html``.

``BOOK_MODE`` (quick|full) is set for the kernels and for Sphinx, whose banner
names the mode.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = "notebooks"
# reads the other chapters' execution times
LAST = ("appendix-reproducibility.ipynb",)
# a guard against a hung kernel, not a budget: chapter I.5's study and II.6's
# training cells each run for about half an hour on a 2-core machine with the
# full settings, more on a slower or busier one
CELL_TIMEOUT = 4 * 3600
TIMINGS = "timings.json"
# the build's model cache (helpers.vae.cache, helpers.patchcore.cache)
MODELS = ".models"
PAGES = ("book", "_toc.yml")  # copied as they are into the staging tree


@dataclass
class Run:
    """One chapter's execution: where its executed copy is, how long it took,
    and whether it failed."""

    # path relative to notebooks/, e.g. "patchcore/05-evaluation.ipynb"
    notebook: str
    path: str  # the executed notebook
    seconds: float
    status: str  # "executed", "reused" or "failed"
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class BookBuildError(RuntimeError):
    """A chapter failed to execute or Sphinx reported a problem."""


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook under ``notebooks/``, in the book's order (``_toc.yml``:
    Part I, then II, then III, whose chapters reuse the earlier ones' models
    from the build's cache), the appendix last; a notebook the table of
    contents does not list comes after the listed ones."""
    found = sorted(
        p
        for p in (root / NOTEBOOKS).rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    )
    rank = {p: i for i, p in enumerate(toc_notebooks(root))}
    return sorted(
        found,
        key=lambda p: (
            p.name in LAST,
            rank.get(p, len(rank)),
            p.relative_to(root).as_posix(),
        ),
    )


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks ``_toc.yml`` lists (``file`` entries and ``glob``
    patterns, each glob's matches sorted), in its order."""
    import yaml

    toc = root / "_toc.yml"
    if not toc.exists():
        return []
    out: list[Path] = []

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                name = str(node["file"]).removesuffix(".ipynb")
                path = root / f"{name}.ipynb"
                if path.exists():
                    out.append(path)
            if "glob" in node:
                # sorted as Sphinx sorts them, by name without the suffix
                found = root.glob(f"{node['glob']}.ipynb")
                out.extend(sorted(found, key=lambda p: p.with_suffix("")))
            for key in (
                "parts",
                "chapters",
                "sections",
                "subtrees",
                "entries",
            ):
                walk(node.get(key))

    walk(yaml.safe_load(toc.read_text()))
    return list(dict.fromkeys(out))


def _helpers_sources(notebook: Path, root: Path) -> list[Path]:
    """The ``helpers`` modules a chapter may use: a Part's chapters
    (``notebooks/patchcore/``, ``notebooks/vae/``) use the top-level modules
    and their own subpackage; other notebooks use all."""
    helpers = root / "helpers"
    part = helpers / notebook.parent.name
    if notebook.parent.parent == root / NOTEBOOKS and part.is_dir():
        return sorted(helpers.glob("*.py")) + sorted(part.rglob("*.py"))
    return sorted(helpers.rglob("*.py"))


def _code_cells(nb: dict) -> list[dict]:
    """The code cells that papermill runs (its injected-parameters cell left
    out)."""
    return [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def source_key(notebook: Path, mode: str, root: Path = ROOT) -> str:
    """Hash of what an executed notebook's *outputs* depend on: its code
    cells (source and tags), its kernel, the mode, its ``helpers`` and the
    pins. Prose and cell metadata such as figure captions are left out:
    editing them re-stages the notebook (:func:`refresh_prose`) without
    executing it again."""
    nb = json.loads(notebook.read_text())
    h = hashlib.sha256()
    h.update(mode.encode())
    h.update(
        json.dumps(
            nb.get("metadata", {}).get("kernelspec", {}), sort_keys=True
        ).encode()
    )
    for cell in _code_cells(nb):
        h.update(
            json.dumps(
                [
                    _text(cell["source"]),
                    cell.get("metadata", {}).get("tags", []),
                ]
            ).encode()
        )
    for path in _helpers_sources(notebook, root):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    pins = root / "requirements.txt"
    if pins.is_file():
        h.update(pins.read_bytes())
    return h.hexdigest()


def _recorded(executed: Path) -> dict:
    try:
        return json.loads(executed.read_text())["metadata"].get(
            "book_build", {}
        )
    except (OSError, ValueError, KeyError):
        return {}


def refresh_prose(source: Path, executed: Path) -> None:
    """Give an executed notebook the current markdown cells and cell metadata
    of ``source``, keeping its outputs. Only valid when both have the same code
    cells (equal :func:`source_key`)."""
    import copy

    import nbformat

    src = nbformat.read(source, as_version=4)
    done = nbformat.read(executed, as_version=4)
    ran = _code_cells(done)
    code = _code_cells(src)
    if [c.source for c in ran] != [c.source for c in code]:
        raise BookBuildError(
            f"{executed} does not hold the code of {source}; execute it again"
        )
    injected = [
        c
        for c in done.cells
        if "injected-parameters" in c.metadata.get("tags", [])
    ]
    outputs = iter(ran)
    cells = []
    for cell in src.cells:
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            old = next(outputs)
            cell.outputs, cell.execution_count = (
                old.outputs,
                old.execution_count,
            )
            cell.metadata = {
                **{
                    k: v
                    for k, v in old.metadata.items()
                    if k in ("papermill", "execution")
                },
                **cell.metadata,
            }
        cells.append(cell)
        if "parameters" in cell.metadata.get("tags", []):
            cells.extend(injected)
    done.cells = cells
    nbformat.write(done, executed)


@contextlib.contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(
    mode: str = "full",
    root: Path = ROOT,
    out: Path | None = None,
    reuse: bool = True,
    timeout: int = CELL_TIMEOUT,
) -> list[Run]:
    """Execute every chapter with papermill into ``out`` (default
    ``root/_build/executed/<mode>``).

    Returns one :class:`Run` per notebook; never raises for a failing chapter
    (see :func:`check`).
    """
    import nbformat
    import papermill

    _check_mode(mode)
    root = Path(root)
    out = Path(out) if out is not None else root / "_build" / "executed" / mode
    out.mkdir(parents=True, exist_ok=True)
    models = os.environ.get("VAD_MODEL_CACHE") or str(out / MODELS)
    runs: list[Run] = []
    notebooks = chapter_notebooks(root)
    for i, nb in enumerate(notebooks, 1):
        rel = nb.relative_to(root / NOTEBOOKS).as_posix()
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        key = source_key(nb, mode, root)
        seen = _recorded(target)
        if (
            reuse
            and nb.name not in LAST
            and seen.get("key") == key
            and seen.get("status") == "executed"
        ):
            refresh_prose(nb, target)
            runs.append(Run(rel, str(target), seen["seconds"], "reused"))
            print(
                f"[{i}/{len(notebooks)}] {rel}: unchanged, reusing the run of {seen['seconds']:.0f} s",
                flush=True,
            )
            continue
        (out / TIMINGS).write_text(
            json.dumps([asdict(r) for r in runs], indent=1)
        )
        print(
            f"[{i}/{len(notebooks)}] {rel}: executing ({mode} mode) ...",
            flush=True,
        )
        start = time.perf_counter()
        error = ""
        with _environ(
            BOOK_MODE=mode,
            PYTHONHASHSEED="0",
            VAD_MODEL_CACHE=models,
            BOOK_EXECUTED=str(out),
        ):
            try:
                papermill.execute_notebook(
                    str(nb),
                    str(target),
                    parameters={"quick": mode == "quick"},
                    cwd=str(nb.parent),
                    kernel_name="python3",
                    progress_bar=False,
                    execution_timeout=timeout,
                )
            except Exception as err:
                # papermill's execution error, a timeout, a dead kernel
                error = f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - start
        status = "failed" if error else "executed"
        if target.is_file():
            done = nbformat.read(target, as_version=4)
            done.metadata["book_build"] = {
                "key": key,
                "seconds": round(seconds, 1),
                "status": status,
                "mode": mode,
            }
            nbformat.write(done, target)
        runs.append(
            Run(rel, str(target), round(seconds, 1), status, error[-3000:])
        )
        print(
            f"[{i}/{len(notebooks)}] {rel}: {status} in {seconds:.0f} s",
            flush=True,
        )
    (out / TIMINGS).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return runs


def check(runs: list[Run]) -> None:
    """Raise :class:`BookBuildError` naming every chapter that failed, with the
    end of its error."""
    failed = [r for r in runs if not r.ok]
    if failed:
        lines = [
            f"- {r.notebook} (executed copy with the error: {r.path})\n  {r.error[-1500:]}"
            for r in failed
        ]
        raise BookBuildError(
            f"{len(failed)} chapter(s) failed to execute:\n" + "\n".join(lines)
        )


def hide_injected_parameters(notebook: Path) -> None:
    """Tag the cell papermill injected (``quick = ...``) ``remove-cell``: it
    runs, but a reader's page starts with the chapter, not with its settings
    (the parameters cell itself is folded, ``hide-cell``)."""
    data = json.loads(notebook.read_text())
    changed = False
    for cell in data.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        notebook.write_text(
            json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        )


def stage(root: Path, executed: Path, dest: Path) -> Path:
    """A buildable copy of the book at ``dest``: pages as they are, notebooks
    executed, execution off."""
    import yaml

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PAGES:
        src = root / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    shutil.copytree(
        executed,
        dest / NOTEBOOKS,
        ignore=shutil.ignore_patterns(TIMINGS, MODELS),
    )
    for nb in (dest / NOTEBOOKS).rglob("*.ipynb"):
        hide_injected_parameters(nb)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (dest / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def build(
    mode: str = "full",
    root: Path = ROOT,
    output: Path | None = None,
    executed: Path | None = None,
    builder: str = "html",
) -> Path:
    """Execute (or reuse) every chapter, then build the book into ``output``
    (default ``root``), which receives ``_build/html``; return the path of the
    built index page."""
    _check_mode(mode)
    root = Path(root)
    out = Path(output) if output is not None else root
    start = time.perf_counter()
    executed = (
        Path(executed)
        if executed is not None
        else root / "_build" / "executed" / mode
    )
    runs = execute(mode, root, executed)
    check(runs)
    source = stage(root, executed, out / "_build" / "source" / mode)
    env = dict(os.environ, BOOK_MODE=mode, PYTHONHASHSEED="0")
    cmd = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(source),
        "--builder",
        builder,
        "--path-output",
        str(out),
        "-W",
        "-n",
        "--keep-going",
    ]
    result = subprocess.run(cmd, env=env, cwd=root)
    if result.returncode:
        raise BookBuildError(
            f"Jupyter Book reported errors (exit {result.returncode}); see the messages above"
        )
    index = out / "_build" / "html" / "index.html"
    if not index.is_file():
        raise BookBuildError(f"the build finished but {index} is missing")
    executed_s = sum(r.seconds for r in runs if r.status == "executed")
    print(
        f"Built the book in {mode} mode in {time.perf_counter() - start:.0f} s "
        f"({executed_s:.0f} s executing chapters, {sum(r.status == 'reused' for r in runs)} reused): {index}"
    )
    return index


def _check_mode(mode: str) -> None:
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=("quick", "full"),
        default=os.environ.get("BOOK_MODE", "full"),
    )
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="execute every chapter even if unchanged",
    )
    args = parser.parse_args(argv)
    try:
        if args.no_reuse:
            check(execute(args.mode, reuse=False))
        build(args.mode)
    except BookBuildError as err:
        sys.exit(f"The book build failed: {err}")


if __name__ == "__main__":
    main()
