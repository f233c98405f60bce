"""Evaluation: image AUROC, pixel AUROC, PRO (per-region overlap), ROC curves
and thresholds.

All curves are exact (every distinct score is a threshold). Pixel metrics sort
the pixels' scores once (values only: NumPy's vectorised sort, several times
faster than an argsort of the tens of millions of pixels), group equal scores,
and count the defect pixels of each group by looking their scores up in the
sorted groups (they are few). Pixel AUROC and PRO share one such pass
(:func:`pixel_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage


def _flat(x) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        return torch.cat([torch.as_tensor(np.asarray(v)).flatten() for v in x])
    return torch.as_tensor(np.asarray(x)).flatten()


def auroc(labels, scores) -> float:
    """Area under the ROC curve (ties count one half, like scikit-learn), via
    the rank-sum statistic."""
    y = _flat(labels).bool()
    s = _flat(scores)
    if y.shape != s.shape:
        raise ValueError(f"{y.numel()} labels but {s.numel()} scores")
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative labels")
    if torch.isnan(s).any():
        # torch.sort puts NaN last, i.e. as the largest
        # score: NaN anomalies would look perfect
        raise ValueError(
            f"{int(torch.isnan(s).sum())} of {s.numel()} scores are NaN: AUROC is undefined; "
            "check the model and its inputs"
        )
    s_sorted, order = torch.sort(s)
    _, inverse, counts = torch.unique_consecutive(
        s_sorted, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    # 1-based average rank of each tie group
    avg_rank = ends - (counts.double() - 1) / 2
    rank_pos = avg_rank[inverse][y[order]].sum().item()
    return (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_curve(
    labels, scores, max_points: int | None = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (thinned to
    ``max_points`` for plots)."""
    y = _flat(labels).bool()
    s = _flat(scores)
    s_sorted, order = torch.sort(s, descending=True)
    yo = y[order].double()
    tp = torch.cumsum(yo, 0)
    fp = torch.cumsum(1 - yo, 0)
    last = torch.ones_like(s_sorted, dtype=torch.bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp[last] / tp[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp[last] / fp[-1]])
    if max_points and fpr.numel() > max_points:
        keep = torch.linspace(0, fpr.numel() - 1, max_points).round().long()
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr.numpy(), tpr.numpy()


def check_masks(masks: Sequence[np.ndarray], maps: Sequence) -> None:
    """Raise if any mask's shape differs from its map's."""
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks for {len(maps)} anomaly maps")
    for i, (m, a) in enumerate(zip(masks, maps)):
        if tuple(np.shape(m)) != tuple(np.shape(a)):
            raise ValueError(
                f"mask {i} has shape {np.shape(m)} but its anomaly map has {tuple(np.shape(a))}: "
                "bring masks into the maps' frame (PatchCore.mask_for / Preprocessor.mask)"
            )


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence) -> float:
    """AUROC over all pixels of all images."""
    return _auroc_from_groups(_score_groups(masks, maps, weights=False))


def pixel_metrics(
    masks: Sequence[np.ndarray], maps: Sequence, max_fpr: float = 0.3
) -> tuple[float, float]:
    """``(pixel AUROC, PRO score up to max_fpr)`` from one pass over the
    pixels."""
    return _metrics_from_groups(
        _score_groups(masks, maps, weights=True), max_fpr
    )


def _metrics_from_groups(groups: dict, max_fpr: float) -> tuple[float, float]:
    """``(pixel AUROC, PRO up to max_fpr)`` of :func:`_score_groups`'s
    counts."""
    fpr, pro = _pro_from_groups(groups)
    return _auroc_from_groups(groups), area_up_to(fpr, pro, max_fpr) / max_fpr


def _score_groups(
    masks: Sequence[np.ndarray], maps: Sequence, weights: bool
) -> dict:
    """Every distinct pixel score (ascending) with how many defect-free and
    defect pixels hold it, and (``weights``) the defect pixels' summed PRO
    weights: ``1 / size`` of the connected defect region (8-connected) that
    each belongs to. Counts are exact integers."""
    check_masks(masks, maps)
    if not masks:
        raise ValueError("no masks and maps given")
    values, defect = _pixels(masks, maps)
    ordered = np.sort(np.concatenate(values))
    every = range(len(masks))
    if not weights:
        return _groups_from_sorted(ordered, values, defect, every)
    w, n_regions = _region_weights(masks)
    return _groups_from_sorted(ordered, values, defect, every, w, n_regions)


def _pixels(masks, maps) -> tuple[list, list]:
    """Each map's scores (float32) and each mask's defect flags, flattened;
    raises on NaN scores."""
    values = [np.asarray(a, dtype=np.float32).ravel() for a in maps]
    n_nan = sum(int(np.isnan(v).sum()) for v in values)
    if n_nan:
        n = sum(v.size for v in values)
        raise ValueError(
            f"{n_nan} of {n} pixel scores are NaN: the metric is "
            "undefined; check the model and its inputs"
        )
    defect = [np.asarray(m).astype(bool).ravel() for m in masks]
    return values, defect


def _region_weights(masks) -> tuple[list, list]:
    """Per mask: the PRO weight of each defect pixel (``1 / size`` of its
    8-connected region; ``None`` for a mask without defects) and the number
    of regions."""
    w, n_regions = [], []
    for m in masks:
        m = np.asarray(m).astype(bool)
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        w.append(1.0 / np.bincount(lab.ravel())[lab[m]] if n else None)
        n_regions.append(n)
    return w, n_regions


def _groups_from_sorted(
    ordered: np.ndarray,
    values: list,
    defect: list,
    images,
    weights: list | None = None,
    n_regions: list | None = None,
) -> dict:
    """:func:`_score_groups` of ``images`` (indices, in order) from the sorted
    scores of all their pixels, each image's scores and defect flags (from
    :func:`_pixels`) and, for PRO, each image's region weights and count
    (from :func:`_region_weights`)."""
    pos_values = np.concatenate([values[i][defect[i]] for i in images])
    pos_weights = None
    if weights is not None:
        pos_weights = [weights[i] for i in images if weights[i] is not None]
    ends = np.flatnonzero(ordered[1:] != ordered[:-1])
    distinct = np.concatenate([ordered[ends], ordered[-1:]])
    counts = np.diff(np.concatenate([[-1], ends, [ordered.size - 1]]))
    # the defect pixels' groups, looked up in increasing order (a binary
    # search that starts where the last one ended); the stable order keeps
    # equal scores' weights in their order, so each group's sum is the same
    # float as summed in the pixels' order
    by_value = np.argsort(pos_values, kind="stable")
    group = np.searchsorted(distinct, pos_values[by_value])
    pos_count = np.bincount(group, minlength=distinct.size)
    out = {"values": distinct, "pos": pos_count, "neg": counts - pos_count}
    if pos_weights is not None:
        out["pos_weight"] = np.bincount(
            group,
            weights=np.concatenate(pos_weights)[by_value]
            if pos_weights
            else None,
            minlength=distinct.size,
        )
        out["n_regions"] = sum(n_regions[i] for i in images)
    return out


def pixel_metrics_of_subsets(
    masks: Sequence[np.ndarray],
    maps: Sequence,
    subsets: Mapping,
    max_fpr: float = 0.3,
) -> dict:
    """:func:`pixel_metrics` of several subsets of the images at once:
    ``{name: (pixel AUROC, PRO)}`` for ``subsets`` ``{name: image indices}``,
    each the same numbers, bit for bit, as ``pixel_metrics`` of that subset's
    masks and maps (in increasing index order).

    Sorting the pixels' scores is most of that function's time, and the
    evaluation asks for many overlapping subsets (all images, then every
    defect type with all defect-free images). Here the images are split into
    blocks by which subsets hold them; each block's scores are sorted once,
    and a subset's sorted scores are merged from its blocks' (a stable sort of
    a few sorted runs is a linear merge): the same sorted array, in a fraction
    of the time."""
    check_masks(masks, maps)
    names = list(subsets)
    picks = []
    for name in names:
        sel = np.asarray(subsets[name], dtype=np.intp).ravel()
        if sel.size == 0 or (np.diff(sel) <= 0).any():
            raise ValueError(
                f"subset {name!r}: give a non-empty, increasing list of "
                f"image indices, got {sel.tolist()[:8]}"
            )
        if sel[0] < 0 or sel[-1] >= len(masks):
            raise ValueError(
                f"subset {name!r}: image indices must lie in [0, "
                f"{len(masks)}), got {int(sel[0])}..{int(sel[-1])}"
            )
        picks.append(sel)
    values, defect = _pixels(masks, maps)
    weights, n_regions = _region_weights(masks)
    member = np.zeros((len(names), len(masks)), dtype=bool)
    for row, sel in enumerate(picks):
        member[row, sel] = True
    blocks: dict[bytes, list[int]] = {}
    for i in np.flatnonzero(member.any(0)):
        blocks.setdefault(member[:, i].tobytes(), []).append(int(i))
    runs = {
        key: np.sort(np.concatenate([values[i] for i in imgs]))
        for key, imgs in blocks.items()
    }
    out = {}
    for row, (name, sel) in enumerate(zip(names, picks)):
        parts = [runs[k] for k, imgs in blocks.items() if member[row, imgs[0]]]
        if len(parts) == 1:
            ordered = parts[0]
        else:  # merged in place: one copy of the subset's scores
            ordered = np.concatenate(parts)
            ordered.sort(kind="stable")
        groups = _groups_from_sorted(
            ordered, values, defect, sel, weights, n_regions
        )
        del ordered
        out[name] = _metrics_from_groups(groups, max_fpr)
    return out


def _auroc_from_groups(g: dict) -> float:
    """Mann-Whitney: each defect pixel counts the defect-free pixels scored
    below it, ties one half; integer arithmetic, so the same number as the
    rank-sum formula of :func:`auroc`, exactly."""
    n_pos, n_neg = int(g["pos"].sum()), int(g["neg"].sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative labels")
    # defect-free pixels strictly below each group
    below = np.cumsum(g["neg"]) - g["neg"]
    # twice the U statistic: an exact integer
    twice_u = int(np.dot(g["pos"], 2 * below + g["neg"]))
    return (twice_u / 2) / (n_pos * n_neg)


def _pro_from_groups(g: dict) -> tuple[np.ndarray, np.ndarray]:
    n_neg, n_regions = int(g["neg"].sum()), g["n_regions"]
    if n_regions == 0 or n_neg == 0:
        raise ValueError(
            "PRO needs at least one defect region and one defect-free pixel"
        )
    # thresholds from high to low
    fpr = np.concatenate([[0.0], np.cumsum(g["neg"][::-1]) / n_neg])
    pro = np.concatenate([[0.0], np.cumsum(g["pos_weight"][::-1]) / n_regions])
    return fpr, pro


def per_image_pixel_auroc(
    masks: Sequence[np.ndarray], maps: Sequence
) -> np.ndarray:
    """Pixel AUROC of each image on its own: how well its map ranks its own
    defect pixels above its own defect-free ones, whatever the scale of other
    images' maps. NaN for an image whose mask is all defect-free or all defect
    (no pairs to rank)."""
    check_masks(masks, maps)
    out = np.full(len(masks), np.nan)
    for i, (m, a) in enumerate(zip(masks, maps)):
        n_pos = int(np.count_nonzero(m))
        if 0 < n_pos < np.size(m):
            out[i] = auroc(m, torch.as_tensor(np.asarray(a)).float())
    return out


def pro_curve(
    masks: Sequence[np.ndarray], maps: Sequence
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve: mean overlap of the connected defect regions vs false
    positive rate on defect-free pixels, at every distinct threshold (Bergmann
    et al. 2020/2021)."""
    return _pro_from_groups(_score_groups(masks, maps, weights=True))


def pro_score(
    masks: Sequence[np.ndarray], maps: Sequence, max_fpr: float = 0.3
) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (1.0
    is perfect)."""
    fpr, pro = pro_curve(masks, maps)
    return area_up_to(fpr, pro, max_fpr) / max_fpr


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under ``y(x)`` for ``x`` in ``[0, x_max]`` (``y``
    interpolated at ``x_max``)."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    if xs[-1] < x_max:
        i = np.searchsorted(x, x_max)
        y_end = np.interp(x_max, x[i - 1 : i + 1], y[i - 1 : i + 1])
        xs, ys = np.append(xs, x_max), np.append(ys, y_end)
    return float(np.trapezoid(ys, xs))


# ----------------------------------------------------------------- thresholds


def percentile_threshold(good_scores, q: float = 99.0) -> float:
    """Threshold at the ``q``-th percentile of defect-free validation scores
    (no defects needed)."""
    good = np.asarray(good_scores, dtype=np.float64)
    if good.size == 0:
        raise ValueError("need at least one defect-free validation score")
    return float(np.percentile(good, q))


def best_f1_threshold(labels, scores) -> tuple[float, float]:
    """Threshold maximising F1 on a labelled set (``score >= t`` is flagged);
    returns ``(t, F1)``."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp, t = tp[last], fp[last], s[last]
    f1 = 2 * tp / (tp + fp + y.sum())
    i = int(np.argmax(f1))
    return float(t[i]), float(f1[i])


def rates_per_100(labels, scores, threshold: float) -> dict[str, float]:
    """Misses per 100 defective parts and false alarms per 100 good parts at
    ``score >= threshold``."""
    y = np.asarray(labels).astype(bool)
    flagged = np.asarray(scores) >= threshold
    return {
        "misses_per_100_defective": 100 * float((~flagged[y]).mean()),
        "false_alarms_per_100_good": 100 * float(flagged[~y].mean()),
    }


def normalise_scores(scores, good_scores, q: float = 99.0) -> np.ndarray:
    """Map scores so that 0 is the median defect-free validation score and 1
    its ``q``-th percentile: "1" then means "as unusual as the threshold" for
    any product, whatever its raw score scale."""
    good = np.asarray(good_scores, dtype=np.float64)
    lo, hi = np.median(good), np.percentile(good, q)
    if hi <= lo:
        raise ValueError("defect-free scores are constant: cannot normalise")
    return (np.asarray(scores, dtype=np.float64) - lo) / (hi - lo)
