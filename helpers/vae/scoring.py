"""Batched sliding-window scoring: every window, one batched model call, any
score, heat maps.

The article slid an 8x8 window with stride 2 over a 28x28 digit, called the
model once per window, and (through ``range(int((28 - 8) / 2))``) never scored
the last two rows and columns. Here all ``((H - window) / stride + 1)^2``
windows of all images are scored in large batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from keras import ops

from . import losses
from .model import TERMS, parse_terms

#: Named scores; any '+'-joined subset of D, A, M, SE is accepted too ("full"
#: is the article's Lvae).
SCORE_ALIASES = {
    "full": ("D", "A", "M"),
    "old": ("D", "A", "M"),
    "new": ("M",),
}


def score_terms(name: str) -> tuple[str, ...]:
    """The loss terms a score name adds up: ``"full"`` -> (D, A, M),
    ``"A+M"`` -> (A, M), ..."""
    if not isinstance(name, str):
        raise TypeError(
            f"score name must be a string, got {type(name).__name__}"
        )
    if name in SCORE_ALIASES:
        return SCORE_ALIASES[name]
    try:
        return parse_terms(name)
    except ValueError:
        raise ValueError(
            f"unknown score name {name!r}: use one of {sorted(SCORE_ALIASES)} or a "
            f"'+'-joined subset of {TERMS} such as 'A+M' or 'SE'"
        ) from None


def check_images(images, window: int = 8, stride: int = 2) -> np.ndarray:
    """Validate images for the scorer and return them as float32 ``(N, H, W)``.

    Accepts ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, 1)`` with pixel values in
    [0, 1].
    """
    if not (
        isinstance(window, (int, np.integer))
        and isinstance(stride, (int, np.integer))
    ):
        raise TypeError(
            f"window and stride must be integers, got {window!r} and {stride!r}"
        )
    if window < 1 or stride < 1:
        raise ValueError(
            f"window and stride must be >= 1, got window={window}, stride={stride}"
        )
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(
            f"expected images of shape (H, W), (N, H, W) or (N, H, W, 1), got {np.shape(images)}"
        )
    if x.shape[0] == 0:
        raise ValueError("no images to score (the batch is empty)")
    h, w = x.shape[1:]
    if h < window or w < window:
        raise ValueError(
            f"images of {h}x{w} are smaller than the {window}x{window} window: "
            "use a smaller window or larger images"
        )
    for size, axis in ((h, "height"), (w, "width")):
        if (size - window) % stride:
            good = [
                s
                for s in range(1, size - window + 1)
                if (size - window) % s == 0
            ] or [1]
            raise ValueError(
                f"stride {stride} does not fit: image {axis} {size} minus window {window} "
                f"= {size - window} is not a multiple of {stride}, so the last "
                f"rows/columns would never be scored; use a stride in {good}"
            )
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(
            "images contain NaN or infinite values; clean or drop those images first"
        )
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(
            f"pixel values must lie in [0, 1], got min {x.min():g} and max {x.max():g}; "
            "divide uint8 images by 255 (see helpers.vae.crops.to_unit)"
        )
    return x


def windows_of(x: np.ndarray, window: int = 8, stride: int = 2) -> np.ndarray:
    """All windows of validated images ``(N, H, W)`` as
    ``(N, n_rows, n_cols, window, window)``."""
    view = np.lib.stride_tricks.sliding_window_view(
        x, (window, window), axis=(1, 2)
    )
    return view[:, ::stride, ::stride]


@dataclass
class WindowScores:
    """Per-window scores of N images, with heat maps and image scores derived
    from them."""

    scores: dict  # score name -> (N, n_rows, n_cols)
    window: int
    stride: int
    image_shape: tuple
    # optional "mu", "sigma2": (N, nr, nc, w, w)
    outputs: dict = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        """Top row of every window row."""
        return np.arange(0, self.image_shape[0] - self.window + 1, self.stride)

    @property
    def cols(self) -> np.ndarray:
        """Left column of every window column."""
        return np.arange(0, self.image_shape[1] - self.window + 1, self.stride)

    def _get(self, name: str) -> np.ndarray:
        if name not in self.scores:
            raise KeyError(
                f"score {name!r} was not computed; available: {sorted(self.scores)} "
                "(pass it in score_windows(..., scores=...))"
            )
        return self.scores[name]

    def _spread(self, per_window: np.ndarray, reduce: str) -> np.ndarray:
        """Add each window's value (scalar or per-pixel) onto the pixels it
        covers."""
        n = per_window.shape[0]
        h, w = self.image_shape
        out = np.zeros((n, h, w))
        count = np.zeros((h, w))
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                v = per_window[:, i, j]
                out[:, r : r + self.window, c : c + self.window] += (
                    v if v.ndim == 3 else v[:, None, None]
                )
                count[r : r + self.window, c : c + self.window] += 1
        if reduce == "sum":
            return out
        if reduce == "mean":
            return out / count
        raise ValueError(
            f"reduce must be 'sum' (the article's +=) or 'mean', got {reduce!r}"
        )

    def heatmap(self, name: str, reduce: str = "sum") -> np.ndarray:
        """Per-pixel heat maps ``(N, H, W)``: each window's score added to (or
        averaged over) its pixels."""
        return self._spread(self._get(name), reduce)

    def image_score(self, name: str, how: str = "max") -> np.ndarray:
        """One score per image: the ``max`` or ``mean`` over its windows."""
        s = self._get(name).reshape(len(self._get(name)), -1)
        if how == "max":
            return s.max(axis=1)
        if how == "mean":
            return s.mean(axis=1)
        raise ValueError(
            f"image score must be 'max' or 'mean' over windows, got {how!r}"
        )

    def pixel_map(self, output: str) -> np.ndarray:
        """Per-pixel mean over covering windows of "mu", "sigma2", "sq_err" or
        "m_pixel" (M's summand)."""
        if output not in self.outputs:
            raise KeyError(
                f"{output!r} not kept; call score_windows(..., keep_outputs=True)"
            )
        return self._spread(self.outputs[output], "mean")


def model_outputs(
    model, windows: np.ndarray, batch_size: int = 8192
) -> tuple[np.ndarray, ...]:
    """``(mu, sigma2, z_mean, z_log_var)`` for ``windows`` (M, w, w, 1), in
    batches, at inference."""
    parts = []
    for start in range(0, len(windows), batch_size):
        out = model(windows[start : start + batch_size], training=False)
        parts.append([ops.convert_to_numpy(o) for o in out])
    return tuple(np.concatenate(p) for p in zip(*parts))


def terms_of(x: np.ndarray, outputs: tuple) -> dict:
    """Per-sample D, A, M, SE (float64 NumPy) of windows ``x`` given the
    model's outputs."""
    mu, sigma2, z_mean, z_log_var = (
        np.asarray(o, np.float64) for o in outputs
    )
    x = np.asarray(x, np.float64)
    f = ops.convert_to_numpy
    return {
        "D": f(losses.kl_term(z_mean, z_log_var)),
        "A": f(losses.a_term(sigma2)),
        "M": f(losses.m_term(x, mu, sigma2)),
        "SE": f(losses.squared_error(x, mu)),
    }


def score_windows(
    model,
    images,
    scores=("full", "M"),
    window: int = 8,
    stride: int = 2,
    batch_size: int = 8192,
    keep_outputs: bool = False,
) -> WindowScores:
    """Score every ``window`` x ``window`` window (step ``stride``) of every
    image with ``model``.

    ``scores`` are names such as "full" (D+A+M), "A+M", "M", "D", "SE". Returns
    a :class:`WindowScores` with arrays ``(N, n_rows, n_cols)``.
    """
    if isinstance(scores, str):
        scores = (scores,)
    wanted = {name: score_terms(name) for name in scores}
    x = check_images(images, window, stride)
    win = windows_of(x, window, stride)
    n, nr, nc = win.shape[:3]
    flat = np.ascontiguousarray(win.reshape(-1, window, window, 1))
    outputs = model_outputs(model, flat, batch_size)
    terms = terms_of(flat, outputs)
    result = {
        name: sum(terms[t] for t in ts).reshape(n, nr, nc)
        for name, ts in wanted.items()
    }
    kept = {}
    if keep_outputs:
        shape = (n, nr, nc, window, window)
        kept = {
            "mu": outputs[0].reshape(shape),
            "sigma2": outputs[1].reshape(shape),
            "sq_err": ((flat - outputs[0]) ** 2).reshape(shape),
            "m_pixel": (0.5 * (flat - outputs[0]) ** 2 / outputs[1]).reshape(
                shape
            ),
        }
    return WindowScores(result, window, stride, x.shape[1:], kept)
