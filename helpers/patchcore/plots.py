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
