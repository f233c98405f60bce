"""Sphinx extension: the rendered book says whether it was built in quick or
full mode."""

from __future__ import annotations

from .runtime import book_mode


def _announce(app, config) -> None:
    mode = book_mode()
    if mode == "quick":
        text = (
            "Built in <b>quick</b> mode: reduced settings so the book builds in minutes; "
            "numbers differ from the full build with the articles' settings."
        )
    else:
        text = "Built in <b>full</b> mode: every chapter ran with the articles' settings."
    options = dict(config.html_theme_options or {})
    options["announcement"] = text
    config.html_theme_options = options
    config.html_context = dict(config.html_context or {}, book_mode=mode)


def setup(app):
    app.connect("config-inited", _announce)
    return {
        "parallel_read_safe": True,
        "parallel_write_safe": True,
        "version": "1",
    }
