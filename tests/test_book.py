"""The whole book builds (quick mode, Sphinx warnings as errors) with executed figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import book

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.book
def test_book_builds_in_quick_mode(tmp_path):
    index = book.build("quick", output=tmp_path)
    html = tmp_path / "_build" / "html"
    assert index.is_file()
    page = (html / "notebooks" / "getting-started.html").read_text()
    assert "quick</b> mode" in page, "the rendered book must say which mode built it"
    assert "Traceback" not in page
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    executed = [src for src in images if "_images/" in src]
    assert len(executed) >= 4, f"the getting-started chapter should show its figures, found {images}"
    for src in executed:
        assert (html / "notebooks" / src).resolve().is_file(), src
    assert "Egyptian cat" in page
