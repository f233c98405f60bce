"""Where a window score's weight comes from: the background's share of M and of the squared error.

Chapter II.6 asks whether M is dominated by the exactly-black background once the learned variance
has collapsed there. The share is measured over every window of a set of images, and over the window
that decides each image's score when the image score is the max over its windows.
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
        raise ValueError("background_shares needs per-pixel outputs: score with keep_outputs=True")
    if ws.outputs["sigma2"].shape != x_win.shape:
        raise ValueError(f"the scores are of {ws.outputs['sigma2'].shape[0]} images with windows "
                         f"{ws.outputs['sigma2'].shape[1:3]}, the images give {x_win.shape[:3]}: pass the images "
                         "that were scored")
    background = (x_win == 0).reshape(n, -1, ws.window, ws.window)
    out: dict = {"background pixels": float(background.mean())}
    for term in terms:
        if term not in _PIXEL_OUTPUT:
            raise ValueError(f"background_shares knows the terms {sorted(_PIXEL_OUTPUT)}, got {term!r}")
        per_pixel = ws.outputs[_PIXEL_OUTPUT[term]].astype(np.float64).reshape(background.shape)
        decide = ws.scores[term] if term in ws.scores else per_pixel.sum(axis=(-2, -1))
        top = np.asarray(decide).reshape(n, -1).argmax(axis=1)          # each image's max window
        in_top, bg_top = per_pixel[np.arange(n), top], background[np.arange(n), top]
        out[term] = {"all": float(per_pixel[background].sum() / per_pixel.sum()),
                     "max window": float(in_top[bg_top].sum() / in_top.sum())}
    return out
