"""Part II's figures: the article's heat maps (scores normalised to 1..10,
``LogNorm``, ``Blues``; old vs new) and III.4's 10 x 10 grids of a sweep."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors


def normalise_1_10(*maps: np.ndarray) -> list[np.ndarray]:
    """Rescale maps jointly to 1..10 (the article's ``(m - min) / (max - min) * 9 + 1``)."""
    lo = min(float(np.min(m)) for m in maps)
    hi = max(float(np.max(m)) for m in maps)
    span = hi - lo if hi > lo else 1.0
    return [(np.asarray(m, np.float64) - lo) / span * 9 + 1 for m in maps]


def article_figure(x_normal, x_anomaly, img_normal, img_anomaly, name: str):
    """The article's ``save_img`` layout (2x2: image | heat map), returned instead of saved."""
    img_normal, img_anomaly = normalise_1_10(img_normal, img_anomaly)
    fig = plt.figure(figsize=(6, 5))
    for k, (img, heat, label) in enumerate(
        ((x_normal, img_normal, "normal"), (x_anomaly, img_anomaly, "anomaly"))
    ):
        plt.subplot(2, 2, 2 * k + 1)
        plt.imshow(np.squeeze(img), cmap="gray")
        plt.axis("off")
        plt.colorbar()
        plt.subplot(2, 2, 2 * k + 2)
        plt.imshow(
            np.squeeze(heat),
            cmap="Blues",
            norm=colors.LogNorm(vmin=1, vmax=10),
        )
        plt.axis("off")
        plt.colorbar()
        plt.title(name + label)
    fig.tight_layout()
    return fig


def old_vs_new_figure(
    images,
    heat_old,
    heat_new,
    labels=("normal", "anomaly"),
    titles=("old: full loss D+A+M", "new: M only"),
    suptitle: str | None = None,
):
    """Rows = images; columns = image, "old" heat map, "new" heat map (each method normalised 1..10
    jointly over its images, ``LogNorm``, ``Blues``), side by side."""
    images = [np.squeeze(i) for i in images]
    old = normalise_1_10(*heat_old)
    new = normalise_1_10(*heat_new)
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(8.4, 2.6 * n), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(labels[r] if r < len(labels) else "")
        for c, (heat, title) in enumerate(
            ((old[r], titles[0]), (new[r], titles[1])), start=1
        ):
            im = axes[r, c].imshow(
                heat, cmap="Blues", norm=colors.LogNorm(vmin=1, vmax=10)
            )
            axes[r, c].set_title(title, fontsize=9)
            fig.colorbar(im, ax=axes[r, c], fraction=0.046)
        for ax in axes[r]:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _cell_text(v: float, signed: bool) -> str:
    """Two decimals without the leading zero: "+.12", "-.05", ".87"; "0"
    for a difference that rounds to zero."""
    if signed and round(v, 2) == 0:
        return "0"
    text = f"{v:+.2f}" if signed else f"{v:.2f}"
    return text.replace("0.", ".", 1) if abs(v) < 1 else text


def class_grid(
    ax,
    values: np.ndarray,
    names,
    title: str = "",
    threshold: float | None = None,
    signed: bool = True,
    vmax: float = 0.5,
):
    """One 10 x 10 grid of a sweep (rows: the normal class, columns: the
    anomalous class), every cell's value printed in it.

    ``signed``: a difference, on a red-blue scale centred on 0 (blue: the
    first score better) from -``vmax`` to ``vmax``; else an AUROC from 0.5 to
    1. With a ``threshold``, cells beyond it are printed in bold and the others
    in grey. Returns the image, for a colour bar."""
    values = np.asarray(values, np.float64)
    if signed:
        im = ax.imshow(values, cmap="RdBu", vmin=-vmax, vmax=vmax)
    else:
        im = ax.imshow(values, cmap="viridis", vmin=0.5, vmax=1.0)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isfinite(v):
                continue
            clear = threshold is None or abs(v) > threshold
            light = signed and abs(v) > 0.6 * vmax or (not signed and v < 0.7)
            colour = "white" if light else "black"
            ax.text(
                j,
                i,
                _cell_text(v, signed),
                ha="center",
                va="center",
                fontsize=5.5,
                color=colour if clear else "0.55",
                fontweight="bold" if clear and threshold is not None else None,
            )
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=90, fontsize=6)
    ax.set_yticks(ticks, names, fontsize=6)
    ax.set_xlabel("anomalous class", fontsize=7)
    ax.set_ylabel("normal class", fontsize=7)
    ax.set_title(title, fontsize=8)
    return im


def difference_figure(
    rows,
    data_sets,
    a: str,
    b: str,
    hows,
    noise: dict,
    seed: int = 0,
):
    """III.4's grids of AUROC(``a``) - AUROC(``b``): one row of grids per data
    set, one column per image score, cells beyond ``noise[(data, a, b,
    how)].threshold`` in bold. Returns the figure."""
    from . import sweep
    from .experiment import SHORT

    fig, axes = plt.subplots(
        len(data_sets),
        len(hows),
        figsize=(4.6 * len(hows), 4.5 * len(data_sets)),
        squeeze=False,
    )
    for row, d in zip(axes, data_sets):
        for ax, how in zip(row, hows):
            im = class_grid(
                ax,
                sweep.difference_grid(rows, d, a, b, how, seed),
                sweep.CLASS_NAMES[d],
                title=f"{d}, {how} over windows",
                threshold=noise[(d, a, b, how)].threshold,
            )
            if how != hows[0]:
                ax.set_ylabel("")
    label = f"AUROC, {SHORT.get(a, a)} - {SHORT.get(b, b)}"
    fig.colorbar(im, ax=axes, fraction=0.025, label=label)
    return fig
