"""Evaluate PatchCore on a test split, and study settings cheaply by reusing
extracted features."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import numpy as np
import torch

from . import metrics as M
from .model import PatchCore
from .sampler import coreset_size

GOOD_TYPES = ("Free", "good")
# the label of the single training set when ``train`` is not a mapping
_ONE_SET = object()


def evaluate(
    scores: np.ndarray,
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    types: Sequence[str],
    per_type: bool = True,
    pixel: bool = True,
) -> dict:
    """Image AUROC, pixel AUROC and PRO (FPR <= 0.3), overall and per defect
    type.

    Per type, the defect images of that type are evaluated together with all
    defect-free images.
    """
    types = np.asarray(types)
    good = np.isin(types, GOOD_TYPES)
    y = ~good
    out = {"image_auroc": M.auroc(y, scores)}
    subsets = {None: np.arange(len(types))}
    if per_type:
        for t in sorted(set(types[y])):
            subsets[t] = np.flatnonzero(good | (types == t))
    if pixel:
        M.check_masks(masks, maps)
        if len(masks) != len(types):
            raise ValueError(
                f"{len(masks)} masks and maps but {len(types)} defect types"
                " given: one type per test image"
            )
        # pixel metrics of every subset in one pass (one sort per block of
        # images, then merges), for types whose masks hold a defect
        has_defect = np.array([np.any(m) for m in masks])
        with_defects = {
            t: sel
            for t, sel in subsets.items()
            if t is None or has_defect[sel].any()
        }
        pix = M.pixel_metrics_of_subsets(masks, maps, with_defects)
        out["pixel_auroc"], out["pro"] = pix[None]
    if per_type:
        out["per_type"] = {}
        for t, sel in subsets.items():
            if t is None:
                continue
            row = {
                "n": int((types == t).sum()),
                "image_auroc": M.auroc(y[sel], np.asarray(scores)[sel]),
            }
            if pixel and t in pix:
                row["pixel_auroc"], row["pro"] = pix[t]
            out["per_type"][t] = row
    return out


def study(
    train,
    test,
    base: dict,
    feature_variants: Sequence[dict],
    model_variants: Sequence[dict],
    backbone="auto",
    batch_size: int = 16,
    per_type: bool = False,
    progress: bool = True,
    cache_fits: bool = False,
) -> list[dict]:
    """Measure every (feature variant x model variant) on ``test``.

    The backbone runs once per preprocessing (mode, image size) over the
    training and the test images, with every layer that any variant of that
    preprocessing needs hooked; each feature variant (layers, pooling) builds
    its patches from those maps, exactly as its own pass would. Model variants
    (coreset ratio, k, projection) reuse their variant's features; coresets
    that differ only in size share one greedy run (its choices are nested). A
    variant then costs its coreset selection and its nearest-neighbour search.
    Returns one dict per combination, in the order given, with the settings,
    metrics, bank size and timings (``backbone_pass_shared_by``: how many
    feature variants one pass served).

    ``train`` may also be a mapping ``{label: training images}``: every variant
    is then fitted on each training set (rows carry ``train_set``: the label),
    and the test images still pass through the backbone once.

    ``cache_fits``: when the build's model cache is on (``VAD_MODEL_CACHE``),
    store every fitted model there, as :meth:`PatchCore.fit` would, so that a
    later ``PatchCore(...).fit`` with the same settings on the same images
    loads it instead of fitting again (off by default: large banks are many
    megabytes each).
    """
    from tqdm import tqdm

    from helpers.backbones import load_backbone
    from helpers.runtime import torch_device

    from .features import RESNET_STAGES, FeatureExtractor

    types = [s.defect_type for s in test]
    train_sets = (
        dict(train) if isinstance(train, Mapping) else {_ONE_SET: train}
    )
    if not train_sets:
        raise ValueError("study: no training sets given (an empty mapping)")
    if not isinstance(backbone, torch.nn.Module):
        backbone, _ = load_backbone(backbone)
    backbone = backbone.to(torch_device(base.get("device")))
    groups: dict[tuple, list[int]] = {}
    refs = []
    for pos, fv in enumerate(feature_variants):
        ref = PatchCore(backbone, **{**base, **fv, "progress": False})
        refs.append(ref)
        cfg = ref.config
        groups.setdefault(
            (cfg.preprocess, cfg.image_size, cfg.resize), []
        ).append(pos)
    rows_at: dict[int, list[dict]] = {}
    for (mode, size, _), members in groups.items():
        union = sorted(
            {name for pos in members for name in refs[pos].config.layers},
            key=RESNET_STAGES.index,
        )
        extractor = FeatureExtractor(backbone, union)
        first = refs[members[0]]
        device = first.device
        try:

            def maps_of(x: torch.Tensor) -> dict:
                return dict(zip(union, extractor(x.to(device))))

            fitted: dict[int, list] = {pos: [] for pos in members}
            t_train = {}
            for label, images in train_sets.items():
                # training features of every variant
                # of this preprocessing, from one pass
                arrays = first._arrays(images, "study: train")
                feats: dict[int, torch.Tensor] = {}
                row = 0
                t0 = time.perf_counter()
                # streamed: one batch in memory at a time
                n_batches = -(-len(arrays) // first.config.batch_size)
                bar = tqdm(
                    first._batches(arrays),
                    total=n_batches,
                    desc=f"train features, {mode} {size} px",
                    disable=not progress,
                )
                for x in bar:
                    maps = maps_of(x)
                    for pos in members:
                        p = refs[pos].patches_from_maps(
                            [maps[n] for n in refs[pos].config.layers], x
                        )
                        if pos not in feats:
                            feats[pos] = torch.empty(
                                (len(arrays),) + tuple(p.shape[1:]),
                                dtype=getattr(
                                    torch, refs[pos].config.fit_dtype
                                ),
                            )
                        feats[pos][row : row + p.shape[0]] = p
                    row += x.shape[0]
                t_train[label] = time.perf_counter() - t0
                for pos in members:
                    models = _fit_variants(
                        refs[pos],
                        feats.pop(pos),
                        model_variants,
                        backbone,
                        progress,
                    )
                    for _, m, seconds in models:
                        m.fit_info["seconds"] = {
                            "features": t_train[label],
                            "coreset": seconds,
                        }
                        if cache_fits:
                            _store_fit(m, arrays, backbone)
                    fitted[pos] += [(label, *f) for f in models]
            # test features: one pass, every
            # variant's patches, every model's scores
            masks = {
                pos: [refs[pos].mask_for(s.mask, s.image) for s in test]
                for pos in members
            }
            scored = {
                pos: [([], [], 0.0) for _ in fitted[pos]] for pos in members
            }
            t_pass, t_own = 0.0, dict.fromkeys(members, 0.0)
            for i in tqdm(
                range(0, len(test), batch_size),
                desc=f"test, {mode} {size} px",
                disable=not progress,
            ):
                chunk = test[i : i + batch_size]
                shapes = [c.image.shape[:2] for c in chunk]
                t0 = time.perf_counter()
                x = first.preprocessor.batch([c.image for c in chunk])
                maps = maps_of(x)
                t_pass += time.perf_counter() - t0
                for pos in members:
                    t0 = time.perf_counter()
                    p = refs[pos].patches_from_maps(
                        [maps[n] for n in refs[pos].config.layers], x
                    )
                    t_own[pos] += time.perf_counter() - t0
                    for j, (_, _, m, _) in enumerate(fitted[pos]):
                        t0 = time.perf_counter()
                        sc, mp = m.score_patches(p, shapes)
                        acc_s, acc_m, t = scored[pos][j]
                        acc_s.append(sc)
                        acc_m.extend(mp)
                        scored[pos][j] = (
                            acc_s,
                            acc_m,
                            t + time.perf_counter() - t0,
                        )
        finally:
            extractor.remove_hooks()
        for pos in members:
            rows_at[pos] = []
            for (label, mv, m, t_fit), (sc, mp, t_score) in zip(
                fitted[pos], scored[pos]
            ):
                ev = evaluate(
                    np.concatenate(sc),
                    mp,
                    masks[pos],
                    types,
                    per_type=per_type,
                )
                rows_at[pos].append(
                    {
                        **feature_variants[pos],
                        **mv,
                        **ev,
                        **({} if label is _ONE_SET else {"train_set": label}),
                        "bank_patches": int(m.bank.shape[0]),
                        "bank_mb": m.bank.numel() * 4 / 1e6,
                        "train_features_s": t_train[label],
                        "coreset_s": t_fit,
                        "test_features_ms_per_image": 1000
                        * (t_pass + t_own[pos])
                        / len(test),
                        "scoring_ms_per_image": 1000 * t_score / len(test),
                        "backbone_pass_shared_by": len(members),
                    }
                )
    return [
        row for pos in range(len(feature_variants)) for row in rows_at[pos]
    ]


def _fit_variants(
    ref: PatchCore,
    train_patches: torch.Tensor,
    model_variants: Sequence[dict],
    backbone,
    progress: bool = False,
) -> list[tuple[dict, PatchCore, float]]:
    """Fit one model per model variant on ``ref``'s training patches:
    ``(variant, model, seconds)``.

    Variants that differ only in ``k`` share a bank. Coresets that differ only
    in their ratio share one greedy run, as long as the largest; each is timed
    as a run of its own size would be (projection plus the run's clock at its
    size, plus copying and indexing its bank)."""
    settings = {k: v for k, v in asdict(ref.config).items() if k != "backbone"}
    flat = train_patches.reshape(-1, train_patches.shape[-1])
    models = [
        PatchCore(backbone, **{**settings, **mv}) for mv in model_variants
    ]
    # selection settings -> the largest coreset asked for
    largest: dict[tuple, int] = {}
    for m in models:
        n = coreset_size(flat.shape[0], m.config.coreset_ratio)
        if n < flat.shape[0]:
            key = (m.config.projection_dim, m.config.eps, m.config.seed)
            largest[key] = max(largest.get(key, 0), n)
    runs = {}
    for key, n in largest.items():
        owner = next(
            m
            for m in models
            if (m.config.projection_dim, m.config.eps, m.config.seed) == key
        )
        clock: list[float] = []
        t0 = time.perf_counter()
        runs[key] = (
            owner.coreset_selection(flat, n, clock=clock, progress=progress),
            t0,
            clock,
        )
    banks: dict[tuple, PatchCore] = {}
    out = []
    for mv, m in zip(model_variants, models):
        m.grid = ref.grid
        cfg = m.config
        bank_key = (cfg.coreset_ratio, cfg.projection_dim, cfg.eps, cfg.seed)
        t0 = time.perf_counter()
        if bank_key in banks:
            src = banks[bank_key]
            m.bank, m.channels, m.fit_info = (
                src.bank,
                src.channels,
                dict(src.fit_info),
            )
            m._scorer = m._make_scorer()
            seconds = time.perf_counter() - t0
        else:
            n = coreset_size(flat.shape[0], cfg.coreset_ratio)
            selection, selected_s = None, 0.0
            if n < flat.shape[0]:
                selection, start, clock = runs[
                    (cfg.projection_dim, cfg.eps, cfg.seed)
                ]
                selected_s = clock[n - 1] - start
            m.fit_patches(flat, selection=selection)
            banks[bank_key] = m
            seconds = selected_s + time.perf_counter() - t0
        out.append((mv, m, seconds))
    return out


def _store_fit(model: PatchCore, arrays, backbone) -> None:
    """Put a model fitted here into the build's model cache under the key that
    ``PatchCore.fit`` computes for the same settings and training images."""
    from . import cache

    if cache.cache_dir() is not None:
        model._fit_key = cache.fit_key(model.config, arrays, backbone)
        cache.store(model, model._fit_key)
