"""Run-time settings shared by every chapter: quick/full mode, seeding and the
compute device."""

from __future__ import annotations

import os
import random

import numpy as np

MODE_VARIABLE = "BOOK_MODE"
_MODES = ("quick", "full")


def book_mode(quick: bool | None = None) -> str:
    """Return ``"quick"`` or ``"full"``.

    ``quick`` (a notebook's papermill parameter) wins when it is not ``None``;
    otherwise the ``BOOK_MODE`` environment variable decides, and ``full`` (the
    articles' settings) is the default.
    """
    if quick is not None:
        if not isinstance(quick, bool):
            raise TypeError(
                f"quick must be True, False or None, got {quick!r}"
            )
        return "quick" if quick else "full"
    value = os.environ.get(MODE_VARIABLE, "full").strip().lower() or "full"
    if value not in _MODES:
        raise ValueError(
            f"{MODE_VARIABLE}={value!r} is not a book mode: set it to 'quick' (reduced settings, for CI) "
            "or 'full' (the articles' settings)"
        )
    return value


def is_quick(quick: bool | None = None) -> bool:
    """True when the chapter should use its reduced (CI) settings."""
    return book_mode(quick) == "quick"


def mode_banner(quick: bool | None = None) -> str:
    """One line that a chapter prints so the rendered page says which settings
    produced it."""
    if is_quick(quick):
        return (
            "Build mode: QUICK (a smoke run: reduced settings so the book builds fast in CI; its numbers "
            "are not conclusions, and the discussion in the text is about a full build's numbers)"
        )
    return "Build mode: FULL (the articles' settings)"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and, when they are imported, PyTorch and Keras."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover
        # torch is part of the pinned environment
        torch = None
    if torch is not None:
        torch.manual_seed(seed)
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(seed)


def torch_device(prefer: str | None = None):
    """The torch device to use: ``prefer`` if given, else CUDA when present,
    else CPU."""
    import torch

    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
