"""helpers.runtime: the book mode a chapter runs in, and the banner that says
so on the page."""

import pytest

from helpers.runtime import MODE_VARIABLE, book_mode, is_quick, mode_banner


def test_the_parameter_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(MODE_VARIABLE, "quick")
    assert (
        book_mode(False) == "full"
        and book_mode(None) == "quick"
        and is_quick(None)
    )
    monkeypatch.setenv(MODE_VARIABLE, "full")
    assert is_quick(True) and not is_quick(None)


def test_full_is_the_default(monkeypatch):
    monkeypatch.delenv(MODE_VARIABLE, raising=False)
    assert book_mode() == "full"


def test_bad_modes_are_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv(MODE_VARIABLE, "fast")
    with pytest.raises(ValueError, match="'quick'.*'full'"):
        book_mode()
    with pytest.raises(TypeError, match="True, False or None"):
        book_mode("yes")


def test_the_quick_banner_says_its_numbers_are_a_smoke_run():
    quick, full = mode_banner(True), mode_banner(False)
    assert (
        "QUICK" in quick
        and "smoke run" in quick
        and "not conclusions" in quick
        and "full build" in quick
    )
    assert full.startswith("Build mode: FULL")
