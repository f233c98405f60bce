"""The ablation: train VAEs over seeds, score test images window by window, report image-level ROC AUC."""

from __future__ import annotations


import numpy as np
from scipy.stats import rankdata

from . import crops as crops_mod
from . import scoring

#: The scores compared in the ablation (the same trained model, different sums of its terms).
SCORES = ("full", "A+M", "M", "D", "SE")
SCORE_LABELS = {"full": "full D+A+M (old)", "A+M": "A+M", "M": "M only (new)", "D": "D only",
                "SE": "squared error"}


def auroc(normal: np.ndarray, anomaly: np.ndarray) -> float:
    """ROC AUC with anomalies as positives (Mann-Whitney form, ties counted half).

    A NaN score ranks worst for the model, so a broken model cannot look good: a NaN on a normal image
    counts as +inf (a certain false alarm), a NaN on an anomaly as -inf (a certain miss).
    """
    normal = np.asarray(normal, np.float64)
    anomaly = np.asarray(anomaly, np.float64)
    s = np.concatenate([np.where(np.isnan(normal), np.inf, normal), np.where(np.isnan(anomaly), -np.inf, anomaly)])
    r = rankdata(s)
    n0, n1 = len(normal), len(anomaly)
    return float((r[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def evaluate(model, normal: np.ndarray, anomaly: np.ndarray, scores=SCORES, hows=("max", "mean"),
             batch_size: int = 8192) -> list[dict]:
    """Image-level AUROC of each score and image reduction for one model."""
    ws_n = scoring.score_windows(model, normal, scores, batch_size=batch_size)
    ws_a = scoring.score_windows(model, anomaly, scores, batch_size=batch_size)
    return [{"score": s, "image": how, "auroc": auroc(ws_n.image_score(s, how), ws_a.image_score(s, how))}
            for s in scores for how in hows]


def run_ablation(train_images: np.ndarray, normal: np.ndarray, anomaly: np.ndarray, *,
                 n_crops: int, epochs: int, batch_size: int, seeds, scores=SCORES,
                 hows=("max", "mean"), progress: bool = True, dequantise: bool = False,
                 tag: str = "", keep_models: list | None = None, **model_kwargs) -> list[dict]:
    """For each seed: sample crops (seeded), train, score ``normal`` vs ``anomaly``; one row per result.

    Rows hold ``seed``, ``score``, ``image`` (max/mean), ``auroc``, ``tag``, the final training loss
    and the seconds per epoch. Pass a list as ``keep_models`` to collect each seed's
    :class:`~helpers.vae.model.TrainResult` (model and per-epoch history). The seeds train side by
    side (:func:`helpers.vae.workers.train_many`); :func:`run_ablations` does the same for several
    settings at once.
    """
    arm = dict(train_images=train_images, normal=normal, anomaly=anomaly, n_crops=n_crops,
               dequantise=dequantise, tag=tag, keep_models=keep_models, **model_kwargs)
    return run_ablations([arm], epochs=epochs, batch_size=batch_size, seeds=seeds, scores=scores, hows=hows,
                         progress=progress)


_ARM_KEYS = ("train_images", "normal", "anomaly", "n_crops", "dequantise", "tag", "keep_models")


def run_ablations(arms, *, seeds, scores=SCORES, hows=("max", "mean"), progress: bool = True,
                  **common) -> list[dict]:
    """:func:`run_ablation` for several settings ("arms") at once: every (arm, seed) model trains in one
    batch of worker processes, then each is scored in turn. Rows come in the order that one
    ``run_ablation`` call per arm would give.

    Each arm is a dict with ``train_images``, ``normal``, ``anomaly`` and optionally ``n_crops``,
    ``dequantise``, ``tag``, ``keep_models`` and model settings; ``common`` (``epochs``,
    ``batch_size``, ``n_crops``, model settings) applies to every arm unless the arm overrides it.
    """
    from .workers import train_many

    seeds = list(seeds)
    jobs, owners = [], []
    for arm in arms:
        spec = {**common, **arm}
        missing = [k for k in ("train_images", "normal", "anomaly", "n_crops") if k not in spec]
        if missing:
            raise ValueError(f"ablation arm {spec.get('tag', '')!r} lacks {missing}")
        training = {k: v for k, v in spec.items() if k not in _ARM_KEYS}
        for seed in seeds:
            x = crops_mod.sample_crops(spec["train_images"], spec["n_crops"], seed=seed)
            if spec.get("dequantise", False):
                x = crops_mod.dequantise(x, seed=seed)
            jobs.append(dict(crops=x, seed=seed, **training))
            owners.append((spec, seed))
    label = ", ".join(dict.fromkeys(spec.get("tag", "") for spec, _ in owners if spec.get("tag"))) or "seeds"
    results = train_many(jobs, progress=progress, desc=f"training ({label})")
    rows = []
    it = zip(owners, results)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=len(owners), desc="scoring")
    for (spec, seed), res in it:
        sec = float(np.mean(res.history["seconds"])) if res.history["seconds"] else 0.0
        if spec.get("keep_models") is not None:
            spec["keep_models"].append(res)
        for row in evaluate(res.model, spec["normal"], spec["anomaly"], scores, hows):
            row.update(seed=seed, tag=spec.get("tag", ""), final_loss=res.history["loss"][-1], sec_per_epoch=sec,
                       median_sigma2=res.history["median_sigma2"][-1])
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """(tag, score, image) -> {"mean", "std", "values"} over seeds (std with ddof=1 when >1 seed)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.get("tag", ""), r["score"], r["image"]), []).append(r["auroc"])
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "values": v} for k, v in groups.items()}


def table(rows: list[dict], digits: int = 3) -> str:
    """A plain-text table: one line per (tag, score, image), mean +- std and the per-seed values."""
    summary = summarise(rows)
    w = max([len("setting")] + [len(k[0]) for k in summary]) + 2
    lines = [f"{'setting':<{w}}{'score':<20}{'image':<6}{'AUROC mean':>11}{'std':>7}   per seed"]
    for (tag, score, how), v in summary.items():
        per = " ".join(f"{a:.{digits}f}" for a in v["values"])
        lines.append(f"{tag:<{w}}{SCORE_LABELS.get(score, score):<20}{how:<6}"
                     f"{v['mean']:>11.{digits}f}{v['std']:>7.{digits}f}   {per}")
    return "\n".join(lines)
