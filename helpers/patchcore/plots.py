"""Figures the PatchCore chapters share (kept out of the chapters' code cells)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_type_bars(
    ax,
    rows: Sequence[dict],
    labels: Sequence[str],
    metric: str = "image_auroc",
    reference: tuple[float, str] | None = None,
    title: str = "",
) -> None:
    """Grouped bars: ``metric`` per defect type (``row["per_type"]``, from
    :func:`helpers.patchcore.evaluation.evaluate`) and overall, one bar per row; an optional horizontal
    ``reference`` line ``(value, label)``, e.g. a published number."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    types = sorted({t for r in rows for t in r["per_type"]})
    groups = types + ["all"]
    width = 0.8 / len(rows)
    lowest = 0.5
    for j, (r, label) in enumerate(zip(rows, labels)):
        values = [
            r["per_type"].get(t, {}).get(metric, np.nan) for t in types
        ] + [r[metric]]
        lowest = min(lowest, float(np.nanmin(values)) - 0.05)
        ax.bar(
            np.arange(len(groups)) + (j - (len(rows) - 1) / 2) * width,
            values,
            width,
            label=label,
        )
    if reference is not None:
        ax.axhline(reference[0], color="k", ls="--", lw=1, label=reference[1])
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(max(0.0, lowest), 1.0)
    ax.set_ylabel(
        metric.replace("_", " ")
        .replace("auroc", "AUROC")
        .replace("pro", "PRO")
    )
    ax.set_title(title, fontsize=10)


def heatmap_grid(folder, rows: Sequence[dict], per_row: int = 3):
    """The heat-map PNGs that :func:`helpers.patchcore.inspection.inspect_folder` wrote under
    ``folder``, for ``rows`` (its result rows), titled with the file and the normalised score
    (1 = the threshold). Returns the figure."""
    from pathlib import Path

    import matplotlib.pyplot as plt
    from PIL import Image

    if not rows:
        raise ValueError("no rows to show")
    n_rows = -(-len(rows) // per_row)
    fig, axes = plt.subplots(
        n_rows, per_row, figsize=(4 * per_row, 3.2 * n_rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows):
        ax.imshow(Image.open(Path(folder) / r["heatmap"]))
        flag = "flagged" if r["anomalous"] else "passed"
        ax.set_title(
            f"{r['file']}\n{r['normalised_score']:.2f} ({flag})", fontsize=8
        )
    fig.tight_layout()
    return fig


def typical_defects(
    types: Sequence[str], masks: Sequence[np.ndarray]
) -> list[int]:
    """One test image per defect type, in type order: the one whose defect
    covers the median share of its image (neither the easiest nor the
    hardest to see)."""
    from .evaluation import GOOD_TYPES

    if len(types) != len(masks):
        raise ValueError(f"{len(types)} types but {len(masks)} masks")
    picked = []
    for t in sorted(set(types) - set(GOOD_TYPES)):
        idx = [i for i, u in enumerate(types) if u == t]
        share = [np.asarray(masks[i]).mean() for i in idx]
        picked.append(idx[int(np.argsort(share)[len(idx) // 2])])
    return picked


def colour_range(maps: Sequence[np.ndarray], good: Sequence[bool]):
    """One colour range for a method's maps: from the median to the 99.9th
    percentile of the defect-free images' pixels, so that a defect shows where
    it is brighter than almost every normal pixel."""
    px = [np.ravel(m) for m, g in zip(maps, good) if g]
    if not px:
        raise ValueError("no defect-free image to set the colour range on")
    return tuple(
        float(v) for v in np.percentile(np.concatenate(px), [50, 99.9])
    )


def maps_by_type(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    titles: Sequence[str],
    maps: dict,
    good: Sequence[bool],
    picked: Sequence[int],
):
    """The figure of III.2 and III.3: for each picked test image a column,
    its image with the defect outlined on top, then one row per method in
    ``maps`` (``{row label: one map per test image}``), each method on its
    own colour range (:func:`colour_range`). Returns the figure."""
    import matplotlib.pyplot as plt

    from .overlay import heat_overlay

    if not picked:
        raise ValueError("no images picked to show")
    ranges = {name: colour_range(m, good) for name, m in maps.items()}
    fig, axes = plt.subplots(
        len(maps) + 1,
        len(picked),
        figsize=(2.6 * len(picked), 2.4 * (len(maps) + 1)),
        squeeze=False,
    )
    for j, i in enumerate(picked):
        image = np.asarray(images[i])
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)
        blank = np.zeros(rgb.shape[:2])
        axes[0, j].imshow(heat_overlay(rgb, blank, 0, 1, masks[i], opacity=0))
        axes[0, j].set_title(titles[i], fontsize=10)
        for k, (name, m) in enumerate(maps.items(), start=1):
            lo, hi = ranges[name]
            axes[k, j].imshow(heat_overlay(rgb, m[i], lo, hi, masks[i]))
    for k, name in enumerate(["image", *maps]):
        axes[k, 0].set_ylabel(name, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig
