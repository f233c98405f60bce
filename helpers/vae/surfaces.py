"""Inspection images for the VAE: grey, one size, pixels in [0, 1]; maps back
to each image's own size.

The article's VAE reads 28x28 digits. Real inspection images (the Magnetic
Tile set) come in many sizes and shapes, so they are resized to one square
``size`` (aspect not kept: every pixel of the tile stays in the frame), the
VAE's windows slide over that frame, and its per-pixel maps are resized back
to the image's own size, where the masks are and where PatchCore's maps are
evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


def to_frame(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 image (H, W) or (H, W, 3) -> float32 ``(size, size)`` grey in
    [0, 1] (bilinear, antialiased)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            "expected a uint8 image of shape (H, W) or (H, W, 3), got "
            f"{image.dtype} {image.shape}"
        )
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    img = Image.fromarray(image).convert("L")
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32) / 255.0


def frames(samples: Sequence, size: int) -> np.ndarray:
    """The images of ``samples`` (objects with ``.image``, as in
    :mod:`helpers.data`) as one ``(N, size, size)`` float32 array."""
    if len(samples) == 0:
        raise ValueError("no images given")
    return np.stack([to_frame(s.image, size) for s in samples])


def to_image_size(frame_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A per-pixel map of the square frame, resized (bilinear) to an image of
    ``shape`` (H, W)."""
    m = np.asarray(frame_map, np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected one 2-d map, got shape {m.shape}")
    h, w = shape
    out = Image.fromarray(m, mode="F").resize(
        (w, h), Image.Resampling.BILINEAR
    )
    return np.asarray(out, np.float32)


def score_frames(
    model,
    frames_: np.ndarray,
    scores: Sequence[str],
    window: int,
    stride: int,
    chunk: int = 32,
    progress: bool = False,
):
    """:func:`helpers.vae.scoring.score_windows` over ``chunk`` images at a
    time (the windows of a few hundred frames would fill gigabytes), as one
    :class:`~helpers.vae.scoring.WindowScores`."""
    from .scoring import WindowScores, score_windows

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    starts = range(0, len(frames_), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring windows", unit="chunk")
    parts = [
        score_windows(
            model, frames_[i : i + chunk], tuple(scores), window, stride
        )
        for i in starts
    ]
    if not parts:
        raise ValueError("no frames to score")
    joined = {
        k: np.concatenate([p.scores[k] for p in parts])
        for k in parts[0].scores
    }
    return WindowScores(joined, window, stride, parts[0].image_shape)


def image_maps(ws, name: str, shapes: Sequence[tuple[int, int]]) -> list:
    """Per-pixel maps of score ``name`` (each window's score averaged over
    the windows covering a pixel), each resized to its image's ``shape``."""
    frame_maps = ws.heatmap(name, reduce="mean")
    if len(frame_maps) != len(shapes):
        raise ValueError(
            f"{len(frame_maps)} maps but {len(shapes)} image shapes given"
        )
    return [to_image_size(m, s) for m, s in zip(frame_maps, shapes)]


def average_results(results: Sequence[dict]) -> dict:
    """The mean over seeds of :func:`helpers.patchcore.evaluation.evaluate`
    results (overall and per defect type, metric by metric), with each
    metric's per-seed values under ``"seeds"``."""
    if not results:
        raise ValueError("no results to average")
    metrics = [k for k in results[0] if k != "per_type"]
    out = {m: float(np.mean([r[m] for r in results])) for m in metrics}
    out["seeds"] = {m: [float(r[m]) for r in results] for m in metrics}
    if "per_type" in results[0]:
        out["per_type"] = {
            t: {
                m: float(np.mean([r["per_type"][t][m] for r in results]))
                for m in results[0]["per_type"][t]
            }
            for t in results[0]["per_type"]
        }
    return out


def window_contrast(frames_: np.ndarray, window: int, stride: int):
    """The standard deviation of the pixels of every window, ``(N, rows,
    cols)``, laid out as :func:`helpers.vae.scoring.score_windows` lays out
    its scores: a simple measure of how complex a window's texture is."""
    from .scoring import check_images, windows_of

    win = windows_of(check_images(frames_, window, stride), window, stride)
    return win.std(axis=(-2, -1))


def tile_jobs(
    train_frames: np.ndarray,
    n_crops: int,
    window: int,
    seeds: Sequence[int],
    **training,
) -> list[dict]:
    """One training job per seed for :func:`helpers.vae.workers.train_many`:
    ``n_crops`` random ``window`` x ``window`` windows of the training frames
    (drawn with the seed) and the other ``training`` settings (epochs,
    batch size, architecture...). III.2 and III.3 ask for the same jobs, so a
    book build trains them once."""
    from .crops import sample_crops

    x = np.asarray(train_frames)[..., None]
    return [
        dict(
            crops=sample_crops(x, n_crops, seed, window, window),
            seed=seed,
            **training,
        )
        for seed in seeds
    ]


@dataclass
class SurfaceEvaluation:
    """What :func:`evaluate_models` measured, model by model."""

    #: score name -> the seeds' mean of
    #: :func:`helpers.patchcore.evaluation.evaluate` (:func:`average_results`)
    results: dict
    #: image AUROC rows for :mod:`helpers.vae.experiment`'s tables: one per
    #: seed, score and image score ("max", "mean")
    rows: list
    #: the :class:`~helpers.vae.scoring.WindowScores` of each model
    window_scores: list
    #: per model: seconds per test image to score every window (all scores in
    #: one pass) and make the first score's map at the image's size
    seconds_per_image: list
    #: True when loaded from the build's model cache (see
    #: :func:`evaluate_models`); the seconds are then those of the run that
    #: computed it
    from_cache: bool = False


def evaluate_models(
    models: Sequence,
    seeds: Sequence[int],
    test_frames: np.ndarray,
    shapes: Sequence[tuple[int, int]],
    masks: Sequence[np.ndarray],
    types: Sequence[str],
    window: int,
    stride: int,
    scores: Sequence[str] | None = None,
    tag: str = "tiles",
    progress: bool = True,
) -> SurfaceEvaluation:
    """Score every test frame window by window with each model (one per
    seed), and evaluate each score as Part I evaluates PatchCore: the max over
    windows as the image score, the overlap-mean maps at each image's size for
    pixel AUROC and PRO, overall and per defect type. The rows also carry the
    mean over windows as a second image score.

    In a book build (``VAD_MODEL_CACHE`` set) the evaluation is stored, and an
    identical one (the same weights, test frames, masks, types and settings,
    the same code) is loaded instead of computed: III.3 evaluates III.2's
    models on III.2's split. It then reports the seconds per image that the
    run which computed it measured (``from_cache`` says so)."""
    import time

    from helpers.patchcore.evaluation import GOOD_TYPES, evaluate

    from . import cache
    from .experiment import SCORES, auroc

    scores = tuple(SCORES if scores is None else scores)
    if len(models) != len(seeds):
        raise ValueError(f"{len(models)} models but {len(seeds)} seeds given")
    if not (len(test_frames) == len(shapes) == len(masks) == len(types)):
        raise ValueError(
            "test frames, shapes, masks and types differ in length: "
            f"{len(test_frames)}, {len(shapes)}, {len(masks)}, {len(types)}"
        )
    key = None
    if cache.cache_dir() is not None:
        inputs = dict(
            seeds=[int(s) for s in seeds],
            shapes=[[int(v) for v in s] for s in shapes],
            types=[str(t) for t in types],
            window=int(window),
            stride=int(stride),
            scores=list(scores),
            tag=tag,
        )
        key = cache.evaluation_key(models, inputs, [test_frames, *masks])
        stored = cache.load_evaluation(key)
        if stored is not None:
            return _evaluation_from(*stored)
    good = np.isin(types, GOOD_TYPES)
    per_seed = {s: [] for s in scores}
    out = SurfaceEvaluation({}, [], [], [])
    pairs = zip(seeds, models)
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, total=len(seeds), desc="scoring seeds")
    for seed, model in pairs:
        t0 = time.perf_counter()
        ws = score_frames(model, test_frames, scores, window, stride)
        first = image_maps(ws, scores[0], shapes)
        out.seconds_per_image.append(
            (time.perf_counter() - t0) / len(test_frames)
        )
        out.window_scores.append(ws)
        for s in scores:
            maps = first if s == scores[0] else image_maps(ws, s, shapes)
            image = ws.image_score(s, "max")
            per_seed[s].append(evaluate(image, maps, masks, types))
            for how in ("max", "mean"):
                v = ws.image_score(s, how)
                out.rows.append(
                    dict(
                        seed=seed,
                        score=s,
                        image=how,
                        auroc=auroc(v[good], v[~good]),
                        tag=tag,
                    )
                )
    out.results = {s: average_results(per_seed[s]) for s in scores}
    if key is not None:
        cache.store_evaluation(key, *_evaluation_to(out))
    return out


def _evaluation_to(ev: SurfaceEvaluation) -> tuple[dict, dict]:
    """A :class:`SurfaceEvaluation` as JSON-ready ``meta`` and named arrays
    (the window scores), for the model cache."""
    arrays, windows = {}, []
    for k, ws in enumerate(ev.window_scores):
        for name, a in ws.scores.items():
            arrays[f"{k}/{name}"] = np.asarray(a)
        windows.append(
            dict(
                scores=list(ws.scores),
                window=int(ws.window),
                stride=int(ws.stride),
                image_shape=[int(v) for v in ws.image_shape],
            )
        )
    meta = dict(
        results=ev.results,
        rows=[
            {**r, "seed": int(r["seed"]), "auroc": float(r["auroc"])}
            for r in ev.rows
        ],
        windows=windows,
        seconds_per_image=[float(t) for t in ev.seconds_per_image],
        arrays=sorted(arrays),
    )
    return meta, arrays


def _evaluation_from(meta: dict, arrays: dict) -> SurfaceEvaluation:
    """The inverse of :func:`_evaluation_to`."""
    from .scoring import WindowScores

    window_scores = [
        WindowScores(
            {name: arrays[f"{k}/{name}"] for name in w["scores"]},
            w["window"],
            w["stride"],
            tuple(w["image_shape"]),
        )
        for k, w in enumerate(meta["windows"])
    ]
    return SurfaceEvaluation(
        meta["results"],
        meta["rows"],
        window_scores,
        meta["seconds_per_image"],
        from_cache=True,
    )
