"""Where a window score's weight comes from: the background's share of M and of the squared error.

Chapter II.6 asks whether M is dominated by the exactly-black background once the learned variance
has collapsed there. The share is measured over every window of a set of images, and over the window
that decides each image's score when the image score is the max over its windows.
:func:`shares_table` formats the chapter's table of these shares.
"""

from __future__ import annotations

import numpy as np

from .scoring import WindowScores, check_images, windows_of

#: per-pixel output kept by ``score_windows(..., keep_outputs=True)`` for each score
_PIXEL_OUTPUT = {"M": "m_pixel", "SE": "sq_err"}


def background_shares(ws: WindowScores, images, terms=("M", "SE")) -> dict:
    """For each term in ``terms`` ("M", "SE"): the share of its sum that background pixels (x == 0)
    contribute, over all windows (``"all"``) and over each image's highest-scoring window of that
    term (``"max window"``, the window that decides the image's max score). Also
    ``"background pixels"``: the background's share of all window pixels.

    ``ws`` comes from ``score_windows(model, images, scores ⊇ terms, keep_outputs=True)``.
    """
    x_win = windows_of(check_images(images), ws.window, ws.stride)
    n = x_win.shape[0]
    if not ws.outputs:
        raise ValueError(
            "background_shares needs per-pixel outputs: score with keep_outputs=True"
        )
    if ws.outputs["sigma2"].shape != x_win.shape:
        raise ValueError(
            f"the scores are of {ws.outputs['sigma2'].shape[0]} images with windows "
            f"{ws.outputs['sigma2'].shape[1:3]}, the images give {x_win.shape[:3]}: pass the images "
            "that were scored"
        )
    background = (x_win == 0).reshape(n, -1, ws.window, ws.window)
    out: dict = {"background pixels": float(background.mean())}
    for term in terms:
        if term not in _PIXEL_OUTPUT:
            raise ValueError(
                f"background_shares knows the terms {sorted(_PIXEL_OUTPUT)}, got {term!r}"
            )
        per_pixel = (
            ws.outputs[_PIXEL_OUTPUT[term]]
            .astype(np.float64)
            .reshape(background.shape)
        )
        decide = (
            ws.scores[term]
            if term in ws.scores
            else per_pixel.sum(axis=(-2, -1))
        )
        top = (
            np.asarray(decide).reshape(n, -1).argmax(axis=1)
        )  # each image's max window
        in_top, bg_top = (
            per_pixel[np.arange(n), top],
            background[np.arange(n), top],
        )
        out[term] = {
            "all": float(per_pixel[background].sum() / per_pixel.sum()),
            "max window": float(in_top[bg_top].sum() / in_top.sum()),
        }
    return out


#: the shares table's columns: (term, where, test digits)
_SHARE_COLUMNS = [
    (t, where, d)
    for t in ("M", "SE")
    for where in ("all", "max window")
    for d in ("1s", "9s")
]


def shares_table(shares: dict, shown_seed=None) -> str:
    """Chapter II.6's table of background shares, as Markdown (no caption).

    ``shares`` maps each seed to ``{"1s": ..., "9s": ..., "sigma2":
    (background, strokes)}``: :func:`background_shares` of the test 1s and
    9s, and the median sigma^2 on background and stroke pixels. One row per
    seed; the row of ``shown_seed`` is marked "(shown above)".
    """
    cols = _SHARE_COLUMNS
    head = (
        "| baseline seed | median σ² background | median σ² strokes | "
        + " | ".join(
            f"{t}: {'all windows' if w == 'all' else 'max windows'}, {d}"
            for t, w, d in cols
        )
        + " |"
    )
    lines = [head, "|---" * (3 + len(cols)) + "|"]
    for seed, sh in shares.items():
        mark = " (shown above)" if seed == shown_seed else ""
        background, strokes = sh["sigma2"]
        lines.append(
            f"| {seed}{mark} | {background:.1e} | {strokes:.1e} | "
            + " | ".join(f"{sh[d][t][w]:.0%}" for t, w, d in cols)
            + " |"
        )
    return "\n".join(lines)
