"""Evaluate PatchCore on a test split, and study settings cheaply by reusing extracted features."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from . import metrics as M
from .model import PatchCore

GOOD_TYPES = ("Free", "good")


def evaluate(scores: np.ndarray, maps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
             types: Sequence[str], per_type: bool = True, pixel: bool = True) -> dict:
    """Image AUROC, pixel AUROC and PRO (FPR <= 0.3), overall and per defect type.

    Per type, the defect images of that type are evaluated together with all defect-free images.
    """
    types = np.asarray(types)
    good = np.isin(types, GOOD_TYPES)
    y = ~good
    out = {"image_auroc": M.auroc(y, scores)}
    if pixel:
        out["pixel_auroc"] = M.pixel_auroc(masks, maps)
        out["pro"] = M.pro_score(masks, maps)
    if per_type:
        out["per_type"] = {}
        for t in sorted(set(types[y])):
            sel = np.flatnonzero(good | (types == t))
            row = {"n": int((types == t).sum()), "image_auroc": M.auroc(y[sel], np.asarray(scores)[sel])}
            if pixel:
                mk, mp = [masks[i] for i in sel], [maps[i] for i in sel]
                if any(m.any() for m in mk):
                    row["pixel_auroc"] = M.pixel_auroc(mk, mp)
                    row["pro"] = M.pro_score(mk, mp)
            out["per_type"][t] = row
    return out


def study(train, test, base: dict, feature_variants: Sequence[dict], model_variants: Sequence[dict],
          backbone="auto", batch_size: int = 16, per_type: bool = False, progress: bool = True) -> list[dict]:
    """Measure every (feature variant x model variant) on ``test``.

    Features of the training and test images are extracted once per feature variant (preprocessing,
    image size, layers, pooling) and reused by all model variants (coreset ratio, k, projection), so a
    variant costs only its coreset selection and nearest-neighbour search.
    Returns one dict per combination with the settings, metrics, bank size and timings.
    """
    from tqdm import tqdm

    rows = []
    types = [s.defect_type for s in test]
    shared_backbone = None
    for fv in feature_variants:
        settings = {**base, **fv, "progress": False}
        ref = PatchCore(shared_backbone or backbone, **settings)
        shared_backbone = ref.extractor.backbone
        masks = [ref.mask_for(s.mask, s.image) for s in test]
        t0 = time.perf_counter()
        train_patches = ref.extract(train, desc=f"train features {fv}", dtype=getattr(torch, ref.config.fit_dtype))
        t_train = time.perf_counter() - t0
        models, banks = [], {}
        for mv in model_variants:
            m = PatchCore(shared_backbone, **{**settings, **mv})
            m._extractor, m.grid = ref.extractor, ref.grid
            key = tuple(sorted((k, v) for k, v in {**settings, **mv}.items() if k != "k"))
            t0 = time.perf_counter()
            if key in banks:
                src = banks[key]
                m.bank, m.channels, m.fit_info = src.bank, src.channels, dict(src.fit_info)
                m._scorer = m._make_scorer()
            else:
                m.fit_patches(train_patches)
                banks[key] = m
            models.append((mv, m, time.perf_counter() - t0))
        del train_patches
        results = [([], [], 0.0) for _ in models]
        t_feat = 0.0
        for i in tqdm(range(0, len(test), batch_size), desc=f"test {fv}", disable=not progress):
            chunk = test[i:i + batch_size]
            t0 = time.perf_counter()
            p = ref._embed(ref.preprocessor.batch([s.image for s in chunk]))
            t_feat += time.perf_counter() - t0
            for j, (_, m, _) in enumerate(models):
                t0 = time.perf_counter()
                s, mp = m.score_patches(p, [c.image.shape[:2] for c in chunk])
                sc, maps, t = results[j]
                sc.append(s)
                maps.extend(mp)
                results[j] = (sc, maps, t + time.perf_counter() - t0)
        for (mv, m, t_fit), (sc, maps, t_score) in zip(models, results):
            ev = evaluate(np.concatenate(sc), maps, masks, types, per_type=per_type)
            rows.append({**fv, **mv, **{k: v for k, v in ev.items()},
                         "bank_patches": int(m.bank.shape[0]), "bank_mb": m.bank.numel() * 4 / 1e6,
                         "train_features_s": t_train, "coreset_s": t_fit,
                         "test_features_ms_per_image": 1000 * t_feat / len(test),
                         "scoring_ms_per_image": 1000 * t_score / len(test)})
    return rows
