"""Every class as the normal class (III.4): one VAE per (data set, class,
seed), each tested against every other class of its data set, and the paired
differences between two scores of the same model as 10 x 10 grids, read
against the seed-to-seed noise of those differences.

A run is trained exactly as :func:`helpers.vae.experiment.run_ablations` trains
an arm (the same crops of the same training images, the same seed and
settings), so Part II's models are this sweep's models for their classes and a
book build loads them from its cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import crops as crops_mod
from . import scoring
from .experiment import SCORES, auroc, crop_job, load_split

#: The classes' names, in label order
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
}


def check_runs(runs) -> list[tuple[str, int, int]]:
    """``runs`` as a list of ``(data, normal class, seed)``, or a
    ``ValueError`` naming the bad entry."""
    out = []
    for run in runs:
        try:
            data, normal, seed = run
        except (TypeError, ValueError):
            raise ValueError(
                f"a run is (data set, normal class, seed), got {run!r}"
            ) from None
        if data not in CLASS_NAMES:
            raise ValueError(
                f"unknown data set {data!r} in run {run!r}: use one of "
                f"{list(CLASS_NAMES)}"
            )
        if not (isinstance(normal, (int, np.integer)) and 0 <= normal < 10):
            raise ValueError(
                f"normal class must be an integer label 0..9, got {normal!r}"
            )
        out.append((data, int(normal), int(seed)))
    if not out:
        raise ValueError("no runs: give at least one (data, class, seed)")
    if len(set(out)) != len(out):
        raise ValueError("the same (data, class, seed) is given twice")
    return out


@dataclass
class DataSet:
    """One data set's training images by class (for crops) and its test
    images by class (the first ``n_test`` of each), in [0, 1]."""

    train: dict  # class -> (N, 28, 28, 1)
    test: dict  # class -> (n, 28, 28, 1)


def load_data_set(data: str, n_test: int | None = None) -> DataSet:
    """Every class of ``data``, split as
    :func:`helpers.vae.experiment.load_classes` splits two of them."""
    if n_test is not None and n_test < 2:
        raise ValueError(f"n_test must be None or >= 2, got {n_test!r}")
    (x, y), (xt, yt) = load_split(data)
    unit = crops_mod.to_unit
    return DataSet(
        train={c: unit(x[y == c]) for c in range(10)},
        test={c: unit(xt[yt == c][:n_test]) for c in range(10)},
    )


def image_scores(
    model, test: dict, scores=SCORES, hows=("max", "mean")
) -> dict:
    """(class, score, how) -> one image score per test image of that class,
    from one pass of ``model`` over every window of every class."""
    classes = sorted(test)
    sizes = [len(test[c]) for c in classes]
    ws = scoring.score_windows(
        model, np.concatenate([test[c] for c in classes]), scores
    )
    edges = np.cumsum([0] + sizes)
    out = {}
    for s in scores:
        for how in hows:
            values = ws.image_score(s, how)
            for c, a, b in zip(classes, edges[:-1], edges[1:]):
                out[(c, s, how)] = values[a:b]
    return out


def run_sweep(
    runs: Sequence,
    *,
    n_crops: int,
    epochs: int,
    batch_size: int,
    n_test: int | None = None,
    scores=SCORES,
    hows=("max", "mean"),
    progress: bool = True,
    models: dict | None = None,
    **model_kwargs,
) -> list[dict]:
    """Train one VAE per run ``(data, normal class, seed)`` (all side by
    side, :func:`helpers.vae.workers.train_many`), score the test images of
    every class of its data set, and return one row per (run, anomalous
    class, score, image score): ``data``, ``normal``, ``anomaly``, ``seed``,
    ``score``, ``image``, ``auroc`` (anomalous class against the normal
    class's test images) and ``from_cache``. Pass a dict as ``models`` to
    collect each run's :class:`~helpers.vae.model.TrainResult` by run."""
    from .workers import train_many

    runs = check_runs(runs)
    sets = {
        d: load_data_set(d, n_test) for d in dict.fromkeys(r[0] for r in runs)
    }
    jobs = [
        crop_job(
            sets[d].train[c],
            n_crops,
            seed,
            epochs=epochs,
            batch_size=batch_size,
            **model_kwargs,
        )
        for d, c, seed in runs
    ]
    trained = train_many(jobs, progress=progress, desc="one VAE per class")
    del jobs
    it = zip(runs, trained)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(runs), desc="scoring every class")
    rows = []
    for (d, c, seed), res in it:
        if models is not None:
            models[(d, c, seed)] = res
        got = image_scores(res.model, sets[d].test, scores, hows)
        for a in range(10):
            if a == c:
                continue
            for s in scores:
                for how in hows:
                    rows.append(
                        dict(
                            data=d,
                            normal=c,
                            anomaly=a,
                            seed=seed,
                            score=s,
                            image=how,
                            auroc=auroc(got[(c, s, how)], got[(a, s, how)]),
                            from_cache=res.from_cache,
                        )
                    )
    return rows


def _select(rows, data, score, how):
    got = [
        r
        for r in rows
        if r["data"] == data and r["score"] == score and r["image"] == how
    ]
    if not got:
        raise ValueError(
            f"no rows for data set {data!r}, score {score!r}, image score "
            f"{how!r}"
        )
    return got


def grid(rows, data: str, score: str, how: str, seed: int = 0) -> np.ndarray:
    """10 x 10 AUROC of one score and one seed: row = normal class, column =
    anomalous class; NaN on the diagonal and for classes not run."""
    out = np.full((10, 10), np.nan)
    for r in _select(rows, data, score, how):
        if r["seed"] == seed:
            out[r["normal"], r["anomaly"]] = r["auroc"]
    return out


def paired(rows, data: str, a: str, b: str, how: str) -> dict:
    """(normal, anomaly) -> {seed: AUROC of score ``a`` minus that of ``b``},
    both from the same model of that seed."""
    va = {
        (r["normal"], r["anomaly"], r["seed"]): r["auroc"]
        for r in _select(rows, data, a, how)
    }
    vb = {
        (r["normal"], r["anomaly"], r["seed"]): r["auroc"]
        for r in _select(rows, data, b, how)
    }
    if va.keys() != vb.keys():
        raise ValueError(f"scores {a!r} and {b!r} cover different runs")
    out: dict = {}
    for (n, an, seed), v in va.items():
        out.setdefault((n, an), {})[seed] = v - vb[(n, an, seed)]
    return out


def difference_grid(
    rows, data: str, a: str, b: str, how: str, seed: int = 0
) -> np.ndarray:
    """10 x 10 grid of AUROC(``a``) - AUROC(``b``) for one seed's models."""
    return grid(rows, data, a, how, seed) - grid(rows, data, b, how, seed)


@dataclass
class Noise:
    """The seed-to-seed standard deviation of a paired difference, pooled
    over the cells that have two seeds or more."""

    sd: float
    df: int  # degrees of freedom: sum over cells of (seeds - 1)
    cells: int  # cells with two seeds or more
    t_crit: float  # two-sided 5% quantile of Student's t with df

    @property
    def threshold(self) -> float:
        """How far one seed's difference must be from 0 to stand out from
        the noise: t_crit * sd."""
        return self.t_crit * self.sd


def seed_noise(rows, data: str, a: str, b: str, how: str) -> Noise:
    """Pool the per-cell variances (ddof=1) of ``a`` - ``b`` over the cells
    with several seeds: var = sum((n_i - 1) var_i) / sum(n_i - 1)."""
    from scipy import stats

    num, df, cells = 0.0, 0, 0
    for per_seed in paired(rows, data, a, b, how).values():
        d = np.array(list(per_seed.values()), np.float64)
        if len(d) > 1:
            num += float(((d - d.mean()) ** 2).sum())
            df += len(d) - 1
            cells += 1
    if df == 0:
        raise ValueError(
            f"no cell of {data!r} has two seeds: train some classes with "
            "more seeds to measure the noise"
        )
    return Noise(
        sd=float(np.sqrt(num / df)),
        df=df,
        cells=cells,
        t_crit=float(stats.t.ppf(0.975, df)),
    )


def tally(diff: np.ndarray, noise: Noise) -> dict:
    """How many cells of a difference grid (``a`` - ``b``) stand out from the
    noise either way, and how many do not (NaN cells are not counted)."""
    d = diff[np.isfinite(diff)]
    t = noise.threshold
    return {
        "a better": int((d > t).sum()),
        "within noise": int((np.abs(d) <= t).sum()),
        "b better": int((d < -t).sum()),
        "a ahead": int((d > 0).sum()),
        "cells": int(d.size),
    }


def tally_table(
    rows,
    data_sets: Sequence[str],
    a: str,
    b: str,
    hows: Sequence[str],
    noise: dict,
    seed: int = 0,
) -> str:
    """A Markdown table of :func:`tally` for ``a`` - ``b``: one line per data
    set and image score, with ``noise[(data, a, b, how)]`` as the band."""
    from .experiment import SHORT

    sa, sb = SHORT.get(a, a), SHORT.get(b, b)
    lines = [
        f"| data set | image score | {sa} better, beyond noise | within noise "
        f"| {sb} better, beyond noise | {sa} ahead at all |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for d in data_sets:
        for how in hows:
            diff = difference_grid(rows, d, a, b, how, seed)
            t = tally(diff, noise[(d, a, b, how)])
            lines.append(
                f"| {d} | {how} | {t['a better']} | {t['within noise']} "
                f"| {t['b better']} | {t['a ahead']} of {t['cells']} |"
            )
    return "\n".join(lines)
