"""Nothing the book loads can run code: no pickle, torch.load only with
weights_only=True."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for p in (ROOT / "helpers").rglob("*.py")] + [
    p for p in (ROOT / "benchmarks").rglob("*.py")
]
NOTEBOOKS = list((ROOT / "notebooks").rglob("*.ipynb"))


def _texts():
    for path in SOURCES + NOTEBOOKS:
        yield path, path.read_text()


def test_no_pickle_anywhere():
    for path, text in _texts():
        assert not re.search(
            r"\b(import pickle|from pickle|cPickle|dill|joblib\.load|pickle\.load)",
            text,
        ), path
        assert "allow_pickle=True" not in text, path


def test_torch_load_only_with_weights_only():
    for path, text in _texts():
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


def test_no_eval_or_exec_of_data():
    for path, text in _texts():
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), path
