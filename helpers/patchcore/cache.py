"""A cache of fitted PatchCore models for book builds: a chapter reuses an
identical earlier fit.

Chapters I.4, I.5 and I.6 fit some of the same models on the same 200 training
images (I.6's letterbox model is I.5's default; I.6's centre-crop model is
I.4's). When ``VAD_MODEL_CACHE`` names a folder (``python -m helpers.book``
sets it for every chapter), :meth:`helpers.patchcore.PatchCore.fit` stores each
fitted memory bank there and loads it when the *same* fit is asked for again; a
chapter run on its own (Colab) fits as usual.

"Same" is strict: the key hashes every setting that can change the bank (all of
:class:`~helpers.patchcore.model.PatchCoreConfig` except the progress bar), the
training images' pixels, the backbone's weights, the source of every
``helpers/patchcore`` module, and the torch and NumPy versions. Entries are
written with :meth:`PatchCore.save` (safetensors and JSON, no pickle, atomic
renames); a damaged entry is reported, removed and fitted again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

# one variable and one folder for all of the book's models
from helpers.vae.cache import ENV, cache_dir
from helpers.vae.cache import hash_arrays as _hash_arrays

__all__ = [
    "ENV",
    "cache_dir",
    "fit_key",
    "load_into",
    "store",
    "scores_key",
    "store_scores",
    "load_scores",
]


def _backbone_digest(backbone) -> str:
    h = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_key(config, arrays: Sequence[np.ndarray], backbone) -> str:
    """A hex key for one fit: settings, training pixels, backbone weights, code
    and library versions."""
    import torch

    h = hashlib.sha256()
    settings = {k: v for k, v in config.to_json().items() if k != "progress"}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    _hash_arrays(h, arrays)
    h.update(_backbone_digest(backbone).encode())
    here = Path(__file__).resolve().parent
    for source in sorted(here.glob("*.py")):
        h.update(source.name.encode())
        h.update(source.read_bytes())
    h.update(f"torch {torch.__version__} numpy {np.__version__}".encode())
    return h.hexdigest()[:32]


def _entry(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"patchcore-{key}"


def load_into(model, key: str) -> bool:
    """Give ``model`` the cached bank of ``key``; ``False`` when caching is off
    or nothing is cached."""
    from .model import PatchCore, SavedModelError

    path = _entry(key)
    if path is None or not path.is_dir():
        return False
    try:
        saved = PatchCore.load(path, backbone=model._backbone)
    except (SavedModelError, FileNotFoundError, ValueError) as err:
        warnings.warn(
            f"the cached PatchCore model {path} is damaged or incomplete ({err}); it is removed and "
            "the model fitted again",
            RuntimeWarning,
            stacklevel=3,
        )
        shutil.rmtree(path, ignore_errors=True)
        return False
    model.bank, model.grid, model.channels = (
        saved.bank,
        saved.grid,
        saved.channels,
    )
    model.coreset_index, model.fit_info = (
        saved.coreset_index,
        dict(saved.fit_info, from_cache=True),
    )
    model._scorer = saved._scorer
    return True


def store(model, key: str) -> Path | None:
    """Save a fitted model under ``key``; ``None`` when caching is off."""
    path = _entry(key)
    if path is None:
        return None
    return model.save(path)


def scores_key(
    fit_key: str, batch_size: int, arrays: Sequence[np.ndarray]
) -> str:
    """A hex key for one model's image scores on some images: the fit's key,
    the batch size (batches group the nearest-neighbour search) and the images'
    pixels."""
    h = hashlib.sha256(f"{fit_key}|{batch_size}".encode())
    _hash_arrays(h, arrays)
    return h.hexdigest()[:32]


def _scores_path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"patchcore-scores-{key}.npy"


def store_scores(key: str, scores: np.ndarray) -> Path | None:
    """Save image scores under ``key`` (a plain ``.npy``, no pickle, renamed
    into place); ``None`` when caching is off."""
    path = _scores_path(key)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.asarray(scores, np.float64), allow_pickle=False)
    tmp.replace(path)
    return path


def load_scores(key: str, n: int) -> np.ndarray | None:
    """The scores stored under ``key`` (``n`` of them), or ``None``; a damaged
    entry is reported and removed."""
    path = _scores_path(key)
    if path is None or not path.is_file():
        return None
    try:
        scores = np.load(path, allow_pickle=False)
        if scores.shape != (n,) or scores.dtype != np.float64:
            raise ValueError(
                f"holds {scores.shape} {scores.dtype}, expected ({n},) float64"
            )
    except (ValueError, OSError) as err:
        warnings.warn(
            f"the cached scores {path} are damaged ({err}); they are removed and computed again",
            RuntimeWarning,
            stacklevel=3,
        )
        path.unlink(missing_ok=True)
        return None
    return scores
