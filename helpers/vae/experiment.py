"""The ablation: train VAEs over seeds, score test images window by window,
report image-level ROC AUC."""

from __future__ import annotations


import numpy as np
from scipy.stats import rankdata

from . import crops as crops_mod
from . import scoring

#: The scores compared in the ablation (the same
#: trained model, different sums of its terms).
SCORES = ("full", "A+M", "M", "D", "SE")
SCORE_LABELS = {
    "full": "full D+A+M (old)",
    "A+M": "A+M",
    "M": "M only (new)",
    "D": "D only",
    "SE": "squared error",
}
SHORT = {
    "full": "full loss",
    "A+M": "A+M",
    "M": "M only",
    "D": "D only",
    "SE": "squared error",
}


#: Part II's pairs: name -> (data set, normal class, anomalous class)
PAIRS = {
    "MNIST 1 vs 9": ("mnist", 1, 9),
    "Fashion sneaker vs ankle boot": ("fashion-mnist", 7, 9),
    "Fashion pullover vs dress": ("fashion-mnist", 2, 3),
}


def load_split(data: str) -> tuple:
    """``((train images, labels), (test images, labels))`` of ``data``
    ("mnist" or "fashion-mnist"), uint8 ``(N, 28, 28)``."""
    from helpers.data import load_fashion_mnist, load_mnist

    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
    if data not in loaders:
        raise ValueError(
            f"unknown data set {data!r}: use one of {list(loaders)}"
        )
    return loaders[data]("train"), loaders[data]("test")


def crop_job(train_images, n_crops: int, seed: int, **training) -> dict:
    """One training job for :func:`helpers.vae.workers.train_many`: ``n_crops``
    random 8x8 crops of ``train_images`` drawn with ``seed``, and the
    training settings. Every chapter that trains on digit crops builds its
    jobs here, so the same class, seed and settings give the same model (and
    the same cache entry)."""
    return dict(
        crops=crops_mod.sample_crops(train_images, n_crops, seed=seed),
        seed=seed,
        **training,
    )


def load_classes(
    data: str,
    normal: int,
    anomaly: int,
    n_test: int | None = None,
    unit: bool = True,
):
    """One normal and one anomalous class of ``data`` ("mnist" or
    "fashion-mnist"): the normal class's training images and the first
    ``n_test`` test images of each class (all when ``None``), as
    ``(train, normal, anomaly)``: in [0, 1] with a channel axis, as the VAE
    reads them, or the raw uint8 ``(N, 28, 28)`` images when ``unit`` is
    false."""
    (x, y), (xt, yt) = load_split(data)
    images = (
        x[y == normal],
        xt[yt == normal][:n_test],
        xt[yt == anomaly][:n_test],
    )
    return tuple(crops_mod.to_unit(a) if unit else a for a in images)


def load_pair(name: str, n_test: int | None = None, unit: bool = True):
    """:func:`load_classes` for one of Part II's :data:`PAIRS`, by name."""
    if name not in PAIRS:
        raise ValueError(f"unknown pair {name!r}: use one of {list(PAIRS)}")
    return load_classes(*PAIRS[name], n_test=n_test, unit=unit)


def pair_arms(n_test: int | None = None, keep_models: dict | None = None):
    """One :func:`run_ablations` arm per pair of :data:`PAIRS`, tagged with
    its name: the normal class's training images and the first ``n_test``
    test images of each class. With ``keep_models`` (a dict), each pair's
    trained models are appended to ``keep_models[name]``."""
    arms = []
    for name in PAIRS:
        train, normal, anomaly = load_pair(name, n_test)
        arm = dict(
            train_images=train, normal=normal, anomaly=anomaly, tag=name
        )
        if keep_models is not None:
            arm["keep_models"] = keep_models.setdefault(name, [])
        arms.append(arm)
    return arms


def auroc(normal: np.ndarray, anomaly: np.ndarray) -> float:
    """ROC AUC with anomalies as positives (Mann-Whitney form, ties counted
    half).

    A NaN score ranks worst for the model, so a broken model cannot look good:
    a NaN on a normal image counts as +inf (a certain false alarm), a NaN on an
    anomaly as -inf (a certain miss).
    """
    normal = np.asarray(normal, np.float64)
    anomaly = np.asarray(anomaly, np.float64)
    s = np.concatenate(
        [
            np.where(np.isnan(normal), np.inf, normal),
            np.where(np.isnan(anomaly), -np.inf, anomaly),
        ]
    )
    r = rankdata(s)
    n0, n1 = len(normal), len(anomaly)
    return float((r[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def evaluate(
    model,
    normal: np.ndarray,
    anomaly: np.ndarray,
    scores=SCORES,
    hows=("max", "mean"),
    batch_size: int = 8192,
) -> list[dict]:
    """Image-level AUROC of each score and image reduction for one model."""
    ws_n = scoring.score_windows(model, normal, scores, batch_size=batch_size)
    ws_a = scoring.score_windows(model, anomaly, scores, batch_size=batch_size)
    return [
        {
            "score": s,
            "image": how,
            "auroc": auroc(ws_n.image_score(s, how), ws_a.image_score(s, how)),
        }
        for s in scores
        for how in hows
    ]


def run_ablation(
    train_images: np.ndarray,
    normal: np.ndarray,
    anomaly: np.ndarray,
    *,
    n_crops: int,
    epochs: int,
    batch_size: int,
    seeds,
    scores=SCORES,
    hows=("max", "mean"),
    progress: bool = True,
    dequantise: bool = False,
    tag: str = "",
    keep_models: list | None = None,
    **model_kwargs,
) -> list[dict]:
    """For each seed: sample crops (seeded), train, score ``normal`` vs
    ``anomaly``; one row per result.

    Rows hold ``seed``, ``score``, ``image`` (max/mean), ``auroc``, ``tag``,
    the final training loss and the seconds per epoch. Pass a list as
    ``keep_models`` to collect each seed's
    :class:`~helpers.vae.model.TrainResult` (model and per-epoch history). The
    seeds train side by side (:func:`helpers.vae.workers.train_many`);
    :func:`run_ablations` does the same for several settings at once.
    """
    arm = dict(
        train_images=train_images,
        normal=normal,
        anomaly=anomaly,
        n_crops=n_crops,
        dequantise=dequantise,
        tag=tag,
        keep_models=keep_models,
        **model_kwargs,
    )
    return run_ablations(
        [arm],
        epochs=epochs,
        batch_size=batch_size,
        seeds=seeds,
        scores=scores,
        hows=hows,
        progress=progress,
    )


_ARM_KEYS = (
    "train_images",
    "normal",
    "anomaly",
    "n_crops",
    "dequantise",
    "tag",
    "keep_models",
)


def run_ablations(
    arms,
    *,
    seeds,
    scores=SCORES,
    hows=("max", "mean"),
    progress: bool = True,
    **common,
) -> list[dict]:
    """:func:`run_ablation` for several settings ("arms") at once: every (arm,
    seed) model trains in one batch of worker processes, then each is scored in
    turn. Rows come in the order that one ``run_ablation`` call per arm would
    give.

    Each arm is a dict with ``train_images``, ``normal``, ``anomaly`` and
    optionally ``n_crops``, ``dequantise``, ``tag``, ``keep_models`` and model
    settings; ``common`` (``epochs``, ``batch_size``, ``n_crops``, model
    settings) applies to every arm unless the arm overrides it.
    """
    from .workers import train_many

    seeds = list(seeds)
    jobs, owners = [], []
    for arm in arms:
        spec = {**common, **arm}
        missing = [
            k
            for k in ("train_images", "normal", "anomaly", "n_crops")
            if k not in spec
        ]
        if missing:
            raise ValueError(
                f"ablation arm {spec.get('tag', '')!r} lacks {missing}"
            )
        training = {k: v for k, v in spec.items() if k not in _ARM_KEYS}
        for seed in seeds:
            # dequantised: noise redrawn every epoch in training, test images
            # scored at the bins' centres
            jobs.append(
                crop_job(
                    spec["train_images"],
                    spec["n_crops"],
                    seed,
                    **training,
                    **({"dequantise": True} if spec.get("dequantise") else {}),
                )
            )
            owners.append((spec, seed))
    label = (
        ", ".join(
            dict.fromkeys(
                spec.get("tag", "") for spec, _ in owners if spec.get("tag")
            )
        )
        or "seeds"
    )
    results = train_many(jobs, progress=progress, desc=f"training ({label})")
    rows = []
    it = zip(owners, results)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(owners), desc="scoring")
    for (spec, seed), res in it:
        sec = (
            float(np.mean(res.history["seconds"]))
            if res.history["seconds"]
            else 0.0
        )
        if spec.get("keep_models") is not None:
            spec["keep_models"].append(res)
        normal, anomaly = spec["normal"], spec["anomaly"]
        if spec.get("dequantise", False):
            normal, anomaly = (
                crops_mod.bin_centre(normal),
                crops_mod.bin_centre(anomaly),
            )
        for row in evaluate(res.model, normal, anomaly, scores, hows):
            row.update(
                seed=seed,
                tag=spec.get("tag", ""),
                final_loss=res.history["loss"][-1],
                sec_per_epoch=sec,
                median_sigma2=res.history["median_sigma2"][-1],
            )
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """(tag, score, image) -> {"mean", "std", "values"} over seeds (std with
    ddof=1 when >1 seed)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(
            (r.get("tag", ""), r["score"], r["image"]), []
        ).append(r["auroc"])
    return {
        k: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "values": v,
        }
        for k, v in groups.items()
    }


def table(rows: list[dict], digits: int = 3, markdown: bool = False) -> str:
    """One line per (tag, score, image): mean +- std and the per-seed values.
    Plain text, or with ``markdown=True`` a Markdown table (a chapter displays
    it with ``IPython.display.Markdown``, and the book renders it as an HTML
    table)."""
    summary = summarise(rows)
    cells = [
        (
            tag,
            SCORE_LABELS.get(score, score),
            how,
            f"{v['mean']:.{digits}f}",
            f"{v['std']:.{digits}f}",
            " ".join(f"{a:.{digits}f}" for a in v["values"]),
        )
        for (tag, score, how), v in summary.items()
    ]
    head = ("setting", "score", "image", "AUROC mean", "std", "per seed")
    if markdown:
        return "\n".join(
            ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---|"]
            + ["| " + " | ".join(c) + " |" for c in cells]
        )
    w = max([len("setting")] + [len(c[0]) for c in cells]) + 2
    lines = [
        f"{head[0]:<{w}}{head[1]:<20}{head[2]:<6}{head[3]:>11}{head[4]:>7}   {head[5]}"
    ]
    lines += [
        f"{c[0]:<{w}}{c[1]:<20}{c[2]:<6}{c[3]:>11}{c[4]:>7}   {c[5]}"
        for c in cells
    ]
    return "\n".join(lines)


#: Two mean AUROCs closer than this count as
#: equal: they print alike at two decimals.
TIE = 0.005


def compare(
    rows: list[dict], tag: str, a: str, b: str, how: str, tie: float = TIE
) -> dict:
    """Score ``a`` against score ``b`` (e.g. "M" vs "full") for one setting and
    image score, seed by seed.

    Both scores come from the same model of each seed, so the differences are
    paired. Returns ``diffs`` (a - b per seed, in seed order), ``mean``, ``sd``
    (ddof=1), ``t_crit`` (the two-sided 5% quantile of Student's t with n-1
    degrees of freedom: 4.30 for 3 seeds), ``clear`` (whether |mean| > t_crit
    sd / sqrt(n), a paired t test) and ``verdict``: "tie" when |mean| <=
    ``tie``, else "<a> better" or "<b> better". With one seed ``sd`` and
    ``t_crit`` are NaN and nothing is clear.
    """

    def per_seed(score):
        got = {
            r["seed"]: r["auroc"]
            for r in rows
            if r.get("tag", "") == tag
            and r["score"] == score
            and r["image"] == how
        }
        if not got:
            raise ValueError(
                f"no rows for setting {tag!r}, score {score!r}, image score {how!r}"
            )
        return got

    va, vb = per_seed(a), per_seed(b)
    if sorted(va) != sorted(vb):
        raise ValueError(
            f"scores {a!r} and {b!r} of {tag!r} come from different seeds: {sorted(va)} vs {sorted(vb)}"
        )
    seeds = sorted(va)
    d = np.array([va[s] - vb[s] for s in seeds], np.float64)
    n, mean = len(d), float(d.mean())
    if n > 1:
        from scipy import stats

        sd, t_crit = float(d.std(ddof=1)), float(stats.t.ppf(0.975, n - 1))
        clear = bool(abs(mean) > t_crit * sd / np.sqrt(n))
    else:
        sd, t_crit, clear = float("nan"), float("nan"), False
    verdict = (
        "tie"
        if abs(mean) <= tie
        else (f"{a} better" if mean > 0 else f"{b} better")
    )
    return {
        "seeds": seeds,
        "diffs": d.tolist(),
        "mean": mean,
        "sd": sd,
        "t_crit": t_crit,
        "clear": clear,
        "verdict": verdict,
        "a": float(np.mean([va[s] for s in seeds])),
        "b": float(np.mean([vb[s] for s in seeds])),
    }


def verdict_table(
    rows: list[dict],
    tags,
    a: str = "M",
    b: str = "full",
    hows=("max", "mean"),
    labels: dict | None = None,
) -> str:
    """A Markdown table of :func:`compare` for every setting in ``tags`` and
    image score: the two mean AUROCs, the per-seed differences, their mean and
    the verdict (marked "clear" when it stands out from the seed-to-seed noise
    by the paired t test)."""
    labels = {**SCORE_LABELS, **(labels or {})}
    head = (
        f"| setting | image score | {labels.get(b, b)} | {labels.get(a, a)} | {a} - {b} per seed "
        f"| mean difference | verdict |"
    )
    lines = [head, "|---|---|---:|---:|---|---:|---|"]
    for tag in tags:
        for how in hows:
            c = compare(rows, tag, a, b, how)
            n = len(c["seeds"])
            winner = a if c["verdict"] == f"{a} better" else b
            if c["verdict"] == "tie":
                word = "tie"
            elif n == 1:
                word = f"{SHORT.get(winner, winner)} better (one seed: noise unknown)"
            else:
                word = f"{SHORT.get(winner, winner)} better, " + (
                    "clear" if c["clear"] else "within seed noise"
                )
            lines.append(
                f"| {tag} | {how} | {c['b']:.3f} | {c['a']:.3f} | "
                + " ".join(f"{x:+.3f}" for x in c["diffs"])
                + f" | {c['mean']:+.3f} | {word} |"
            )
    return "\n".join(lines)
