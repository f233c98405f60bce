"""The whole book builds (quick mode, Sphinx warnings as errors), then every
page is opened in headless Chromium from a loopback server and checked as a
reader would see it."""

from __future__ import annotations

import functools
import re
import shutil
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from helpers import book

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory, quick_runs):
    out = tmp_path_factory.mktemp("book")
    # reuses the notebooks executed once
    book.build("quick", output=out, executed=quick_runs[0])
    return out / "_build" / "html"


@pytest.mark.book
def test_book_builds_in_quick_mode_with_figures(built):
    assert (built / "index.html").is_file()
    page = (built / "notebooks" / "getting-started.html").read_text()
    assert "quick</b> mode" in page, (
        "the rendered book must say which mode built it"
    )
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    executed = [src for src in images if "_images/" in src]
    assert len(executed) >= 4, (
        f"the getting-started chapter should show its figures, found {images}"
    )
    for src in executed:
        assert (built / "notebooks" / src).resolve().is_file(), src
    assert "Egyptian cat" in page
    assert (built / "_static" / "mathjax" / "tex-chtml.js").is_file(), (
        "MathJax must be served locally"
    )


@pytest.fixture(scope="module")
def server(built):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(built))
    handler.log_message = lambda *a, **k: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _pages(built: Path) -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(
        p.relative_to(built).as_posix()
        for p in built.rglob("*.html")
        if not p.relative_to(built).parts[0].startswith("_")
        and p.name not in skip
    )


# What a reader meets first below a chapter's title: "prose" when a paragraph
# of text comes before any visible code (setup cells run but are removed or
# folded behind a toggle; a folded cell's code is not rendered until opened).
FIRST_AFTER_TITLE = """() => {
    const h1 = document.querySelector('main h1') || document.querySelector('h1');
    if (!h1) return 'no title';
    const shown = e => e.getClientRects().length > 0;
    const after = e => h1.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING;
    const blocks = [...document.querySelectorAll('p, div.cell_input')].filter(e => after(e) && shown(e));
    const code = blocks.findIndex(e => e.matches('div.cell_input'));
    const prose = blocks.findIndex(e => e.matches('p') && !e.closest('div.cell')
                                        && e.textContent.trim().length > 80);
    if (prose === -1) return 'no paragraph of prose';
    return code !== -1 && code < prose ? 'a code cell comes first' : 'prose';
}"""


# Code blocks (cell inputs and printed outputs) a reader sees that scroll
# sideways: the longest line of each. Folded cells are not rendered until
# opened; tests/test_style.py limits their lines.
SCROLLING = """() => [...document.querySelectorAll('div.highlight pre, div.cell_output pre')]
    .filter(e => e.getClientRects().length > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''))"""
OUTPUT_TEXTS = """() => [...document.querySelectorAll('div.cell_output pre')]
    .filter(e => e.getClientRects().length > 0).map(e => e.textContent)"""


def _raw_text_table(text: str) -> bool:
    """True for printed output that is a table: three or more consecutive lines
    of three or more columns (cells apart by two or more spaces, or by `|`)."""
    run = 0
    for line in text.splitlines():
        line = line.strip()
        columns = max(len(re.split(r"\s{2,}", line)), line.count("|") - 1)
        run = run + 1 if line and columns >= 3 else 0
        if run >= 3:
            return True
    return False


def test_raw_text_table_detector():
    printed = "setting    AUROC   PRO\ndefault    0.93    0.81\nno pool    0.90    0.77\n"
    assert _raw_text_table(printed)
    assert _raw_text_table("| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |")
    assert not _raw_text_table(
        "good/    20 files\ninspect/  12 files\nmasks/  6 files"
    )
    assert not _raw_text_table(
        "image AUROC 0.929, pixel AUROC 0.810\nPRO 0.808"
    )


@pytest.mark.book
def test_every_page_in_a_real_browser(built, server):
    assert CHROMIUM, (
        "Debian's chromium is needed for this test: apt-get install chromium (.ci/run does)"
    )
    from playwright.sync_api import sync_playwright

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"][
        "url"
    ]
    colab_prefix = (
        "https://colab.research.google.com/github/"
        + repo.removeprefix("https://github.com/")
    )
    notebook_pages = {
        p.relative_to(ROOT).with_suffix(".html").as_posix()
        for p in (ROOT / "notebooks").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    }
    pages = _pages(built)
    assert "index.html" in pages and notebook_pages <= set(pages), sorted(
        notebook_pages - set(pages)
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    links: set[str] = set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # no request may leave the machine: the book must work offline
        page.route(
            re.compile(r"^https?://(?!127\.0\.0\.1)"),
            lambda route: route.abort(),
        )
        for rel in pages:
            redirect = re.search(
                r'http-equiv="refresh"[^>]*url=([^"]+)"',
                (built / rel).read_text(),
                re.I,
            )
            if redirect:
                # e.g. index.html -> book/intro.html:
                # check the target, not the redirect page
                links.add(
                    urllib.parse.urljoin(
                        f"{server}/{rel}", redirect.group(1).strip()
                    )
                )
                continue
            page.goto(f"{server}/{rel}", wait_until="load")
            page.evaluate(
                "async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }"
            )
            text = page.inner_text("body")
            if (
                "Traceback (most recent call last)" in text
                or page.locator(".output.traceback, .output.error").count()
            ):
                problems.append(
                    f"{rel}: shows a Python traceback or error output"
                )
            for src, width in page.eval_on_selector_all(
                "img", "els => els.map(e => [e.src, e.naturalWidth])"
            ):
                if not width:
                    problems.append(f"{rel}: image did not load: {src}")
            for href in page.eval_on_selector_all(
                "a[href]", "els => els.map(e => e.href)"
            ):
                if href.startswith(server):
                    links.add(href.split("#")[0])
            if rel in notebook_pages:
                colab = page.eval_on_selector_all(
                    "a[href]",
                    f"els => els.filter(e => e.href.startsWith('{colab_prefix}')).length",
                )
                if not colab:
                    problems.append(f"{rel}: no Colab launch link")
                first = page.evaluate(FIRST_AFTER_TITLE)
                if first != "prose":
                    problems.append(
                        f"{rel}: the page must open with prose after its title, not with setup "
                        f"code ({first}); tag setup cells remove-cell / remove-input / hide-cell"
                    )
            for line in page.evaluate(SCROLLING):
                problems.append(
                    f"{rel}: a code block scrolls sideways at 1280 px: "
                    f"{line[:60]!r}"
                )
            for text in page.evaluate(OUTPUT_TEXTS):
                if _raw_text_table(text):
                    problems.append(
                        f"{rel}: a table is printed as text; display it "
                        f"as a table (Markdown or HTML): {text[:80]!r}"
                    )
            # code cells may hold table strings legitimately
            prose = page.evaluate("""() => { const b = document.body.cloneNode(true);
                b.querySelectorAll('pre, code, script, style, .highlight').forEach(e => e.remove());
                return b.textContent; }""")
            if re.search(r"\|\s*:?-{3,}:?\s*\|", prose):
                problems.append(
                    f"{rel}: a Markdown table is shown as raw text (|---|) instead of a table"
                )
            if re.search(r"(?m)^\s*:::|\{admonition\}", prose):
                problems.append(
                    f"{rel}: a MyST directive is shown as raw text"
                )
            raw = page.locator(".math:not(:has(mjx-container))").count()
            if raw:
                problems.append(
                    f"{rel}: {raw} formula(s) not rendered by MathJax"
                )
        # index.html redirects here
        page.goto(f"{server}/book/intro.html", wait_until="load")
        page.screenshot(
            path=str(SCREENSHOTS / "front-page.png"), full_page=False
        )
        chapter = "notebooks/getting-started.html"
        page.goto(f"{server}/{chapter}", wait_until="load")
        page.screenshot(path=str(SCREENSHOTS / "chapter.png"), full_page=False)
        # three chapters as a reader opens them, and one result further down
        for shot, (rel, anchor) in {
            "chapter-I5": ("patchcore/05-evaluation", None),
            "chapter-II4": ("vae/04-ablation", None),
            "chapter-I7": ("patchcore/07-your-images", "fig-pc7-heatmaps"),
        }.items():
            page.goto(f"{server}/notebooks/{rel}.html", wait_until="load")
            page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"))
            if anchor and page.locator(f"#{anchor}").count():
                page.locator(f"#{anchor}").scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / f"{shot}-figure.png"))
        # a chapter's exercises: the solutions are hidden
        # behind a toggle until the reader opens one
        page.goto(
            f"{server}/notebooks/patchcore/03-coreset.html", wait_until="load"
        )
        solutions = page.locator("div.admonition.dropdown")
        if not solutions.count():
            problems.append(
                "03-coreset.html: no solution dropdowns in the exercises"
            )
        else:
            solutions.first.scroll_into_view_if_needed()
            page.screenshot(
                path=str(SCREENSHOTS / "exercises.png"), full_page=False
            )
        browser.close()
    for link in sorted(links):
        path = urllib.parse.urlparse(link).path.lstrip("/")
        target = built / urllib.parse.unquote(path)
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"broken internal link: {link}")
    assert not problems, "\n".join(problems)
    assert (SCREENSHOTS / "front-page.png").stat().st_size > 10_000
