"""A cache of trained VAEs for book builds: one training run is done once and
reused by later chapters.

Several chapters train the same model (chapter 1's baseline is chapter 4's
first MNIST seed and chapter 6's baseline; chapter 5 repeats chapter 4's
Fashion-MNIST pairs). When the environment variable ``VAD_MODEL_CACHE`` names a
folder (``python -m helpers.book`` sets it to ``_build/models``),
:func:`helpers.vae.model.train_vae` stores each trained model there and reuses
it when the *same* run is asked for again.

"Same" is strict: the key hashes the training crops (bytes, shape, dtype),
every training setting, where it ran (a one-thread worker process or the
calling process: the thread count changes rounding), the source of the modules
that define the model, loss and training loop, and the Keras, backend and NumPy
versions. Anything else changes the key and the model is trained afresh.
Weights are stored as Keras ``.weights.h5`` (HDF5 arrays, no pickle) beside a
JSON file with the training history, each written to a temporary name and
renamed into place. Without the variable nothing is cached.

The same folder keeps evaluations of trained models on inspection images
(:func:`helpers.vae.surfaces.evaluate_models`; III.3 evaluates III.2's models
on III.2's split), keyed by the models' weights, the test frames, masks and
settings, and the scoring and evaluation code: JSON for the metrics, ``.npz``
(no pickle) for the window scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

ENV = "VAD_MODEL_CACHE"
_SOURCES = ("model.py", "losses.py", "cache.py", "workers.py")


def cache_dir() -> Path | None:
    """The cache folder named by ``VAD_MODEL_CACHE``, or ``None`` when caching
    is off."""
    value = os.environ.get(ENV, "").strip()
    return Path(value).expanduser() if value else None


def hash_arrays(h, arrays) -> None:
    """Feed each array's shape, dtype and bytes to the hash ``h`` (the data a
    cache key stands for)."""
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}|{a.dtype}".encode())
        h.update(a.tobytes())


def training_key(
    crops: np.ndarray, settings: dict, where: str = "worker"
) -> str:
    """A hex key for one training run: crops, settings, where it ran, code and
    library versions."""
    import keras

    h = hashlib.sha256()
    hash_arrays(h, [crops])
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(where.encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(
        f"keras {keras.__version__} {keras.backend.backend()} numpy {np.__version__}".encode()
    )
    return h.hexdigest()[:32]


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"vae-{key}.weights.h5", folder / f"vae-{key}.json"


def load(key: str, model, folder: Path | None = None) -> dict | None:
    """Load cached weights into ``model`` (built with the same settings) and
    return the stored history, or ``None`` when caching is off or the run is
    not cached. ``folder`` overrides ``VAD_MODEL_CACHE`` (the training workers
    hand their models back through one)."""
    folder = Path(folder) if folder is not None else cache_dir()
    if folder is None:
        return None
    weights, meta = _paths(folder, key)
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        history = json.loads(meta.read_text())["history"]
        with warnings.catch_warnings():
            # the optimizer's state is not needed (no further training)
            warnings.filterwarnings(
                "ignore", message="Skipping variable loading for optimizer"
            )
            model.load_weights(str(weights))
    except Exception as err:
        # h5py/Keras raise many types for a damaged file; any of them is a miss
        _discard(
            f"VAE {weights.name} in {folder}",
            (weights, meta),
            err,
            "the model trained again",
        )
        return None
    return history


def _discard(what: str, paths, err: Exception, then: str) -> None:
    """Report a damaged cache entry (to the caller's caller) and remove its
    files."""
    warnings.warn(
        f"the cached {what} is damaged or incomplete "
        f"({type(err).__name__}: {err}); it is removed and {then}",
        RuntimeWarning,
        stacklevel=3,
    )
    for damaged in paths:
        damaged.unlink(missing_ok=True)


def _publish(folder: Path, files) -> None:
    """Write each ``(final path, write)`` pair: ``write(tmp)`` to a temporary
    name of this process, then every temporary renamed into place in order
    (the last one marks the entry complete); what a failure leaves is
    removed."""
    tmps = [folder / f"{_tmp_prefix(os.getpid())}{p.name}" for p, _ in files]
    try:
        for tmp, (_, write) in zip(tmps, files):
            write(tmp)
        for tmp, (final, _) in zip(tmps, files):
            os.replace(tmp, final)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def store(
    key: str, model, history: dict, settings: dict, folder: Path | None = None
) -> Path | None:
    """Save a trained model and its history under ``key`` (atomic renames);
    ``None`` when off. ``folder`` overrides ``VAD_MODEL_CACHE``."""
    folder = Path(folder) if folder is not None else cache_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = _paths(folder, key)
    text = json.dumps({"settings": settings, "history": history}, default=str)
    _publish(
        folder,
        [
            (weights, lambda tmp: model.save_weights(str(tmp))),
            (meta, lambda tmp: tmp.write_text(text)),
        ],
    )
    return weights


def _tmp_prefix(pid: int) -> str:
    return f"tmp-{pid}-"


def remove_temporary(folder: Path, pid: int) -> None:
    """Remove what a process ``pid`` killed in :func:`store` left half-way in
    ``folder`` (its temporary files; finished entries are untouched)."""
    for tmp in Path(folder).glob(f"{_tmp_prefix(pid)}*"):
        tmp.unlink(missing_ok=True)


# --- evaluations of trained models (III.2 and III.3 evaluate the same three) --
_EVALUATION_SOURCES = (
    "model.py",
    "losses.py",
    "scoring.py",
    "surfaces.py",
    "experiment.py",
)


def evaluation_key(models, inputs: dict, arrays) -> str:
    """A hex key for one evaluation of trained ``models``: their weights,
    the ``inputs`` settings (JSON), the bytes of ``arrays`` (test frames,
    masks), the source of the modules that score and evaluate, and the
    library versions."""
    import keras

    h = hashlib.sha256()
    for model in models:
        hash_arrays(h, model.get_weights())
    h.update(json.dumps(inputs, sort_keys=True, default=str).encode())
    hash_arrays(h, arrays)
    here = Path(__file__).resolve().parent
    sources = [here / n for n in _EVALUATION_SOURCES]
    sources += sorted((here.parent / "patchcore").glob("*.py"))
    for source in sources:
        h.update(source.name.encode())
        h.update(source.read_bytes())
    h.update(
        f"keras {keras.__version__} {keras.backend.backend()} numpy {np.__version__}".encode()
    )
    return h.hexdigest()[:32]


def _evaluation_paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"vae-eval-{key}.npz", folder / f"vae-eval-{key}.json"


def store_evaluation(
    key: str, meta: dict, arrays: dict[str, np.ndarray]
) -> Path | None:
    """Save an evaluation: ``meta`` as JSON (floats written exactly) and
    ``arrays`` as ``.npz`` (no pickle), each under a temporary name renamed
    into place, the JSON last. ``None`` when caching is off."""
    folder = cache_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    data, info = _evaluation_paths(folder, key)
    text = json.dumps(meta)
    _publish(
        folder,
        [
            (data, lambda tmp: np.savez(tmp, allow_pickle=False, **arrays)),
            (info, lambda tmp: tmp.write_text(text)),
        ],
    )
    return info


def load_evaluation(key: str) -> tuple[dict, dict] | None:
    """``(meta, arrays)`` stored under ``key``, or ``None`` when caching is
    off or nothing is stored; a damaged entry is reported and removed."""
    folder = cache_dir()
    if folder is None:
        return None
    data, info = _evaluation_paths(folder, key)
    if not (data.is_file() and info.is_file()):
        return None
    try:
        meta = json.loads(info.read_text())
        with np.load(data, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        missing = set(meta["arrays"]) - set(arrays)
        if missing:
            raise ValueError(f"arrays {sorted(missing)} missing")
    except Exception as err:
        # json, zipfile and numpy raise many types for a damaged file
        _discard(
            f"evaluation {info.name} in {folder}",
            (data, info),
            err,
            "computed again",
        )
        return None
    return meta, arrays
