"""Random 8x8 training crops: the article's ``cut_img`` loop and a vectorised,
seeded sampler."""

from __future__ import annotations

import numpy as np


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, H, W)`` -> float32 ``(N, H, W, 1)`` in [0, 1] (the
    article's input)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(
            f"expected images of shape (N, H, W), got {images.shape}"
        )
    if images.dtype != np.uint8:
        raise TypeError(
            f"expected uint8 images (0..255), got {images.dtype}; pass the raw loader output"
        )
    return (images.astype(np.float32) / 255.0)[..., None]


def cut_img(
    x: np.ndarray,
    number: int,
    height: int = 8,
    width: int = 8,
    random=np.random,
) -> np.ndarray:
    """The article's crop loop, kept as written (only ``random`` is added so a
    test can seed it).

    ``x`` has shape ``(N, H, W, 1)``. Note ``np.random.randint(0, H - height)``
    excludes its upper bound, so the crop whose top row is ``H - height``
    (touching the last image row) is never drawn.
    """
    print("cutting images ...")
    x_out = []
    x_shape = x.shape

    for i in range(number):
        shape_0 = random.randint(0, x_shape[0])
        shape_1 = random.randint(0, x_shape[1] - height)
        shape_2 = random.randint(0, x_shape[2] - width)
        temp = x[
            shape_0, shape_1 : shape_1 + height, shape_2 : shape_2 + width, 0
        ]
        x_out.append(temp.reshape((height, width, x_shape[3])))

    print("Complete.")
    x_out = np.array(x_out)
    return x_out


def crops_at(
    x: np.ndarray,
    index: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    height: int = 8,
    width: int = 8,
) -> np.ndarray:
    """Crops ``x[index[k], rows[k]:rows[k]+height, cols[k]:cols[k]+width]`` for
    all k, in one gather."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected x of shape (N, H, W, C), got {x.shape}")
    index, rows, cols = (
        np.asarray(a, dtype=np.int64) for a in (index, rows, cols)
    )
    if not (index.shape == rows.shape == cols.shape) or index.ndim != 1:
        raise ValueError(
            "index, rows and cols must be 1-d arrays of the same length"
        )
    if rows.size and (
        rows.min() < 0
        or cols.min() < 0
        or rows.max() + height > x.shape[1]
        or cols.max() + width > x.shape[2]
    ):
        raise ValueError(
            f"a crop of {height}x{width} falls outside the {x.shape[1]}x{x.shape[2]} image"
        )
    dr = np.arange(height)[None, :, None]
    dc = np.arange(width)[None, None, :]
    return x[
        index[:, None, None],
        rows[:, None, None] + dr,
        cols[:, None, None] + dc,
    ]


def sample_crops(
    x: np.ndarray,
    number: int,
    seed: int,
    height: int = 8,
    width: int = 8,
    include_last: bool = True,
    return_positions: bool = False,
):
    """``number`` random crops drawn with ``np.random.default_rng(seed)``,
    vectorised.

    ``include_last=True`` lets crops touch the last row/column (the article's
    loop cannot); ``include_last=False`` draws positions from the same range as
    the article.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"expected x of shape (N, H, W, C), got {x.shape}; use to_unit(images) first"
        )
    if number < 1:
        raise ValueError(f"number of crops must be >= 1, got {number}")
    if height > x.shape[1] or width > x.shape[2]:
        raise ValueError(
            f"crop {height}x{width} is larger than the images ({x.shape[1]}x{x.shape[2]})"
        )
    extra = 1 if include_last else 0
    rng = np.random.default_rng(seed)
    index = rng.integers(0, x.shape[0], number)
    rows = rng.integers(0, x.shape[1] - height + extra, number)
    cols = rng.integers(0, x.shape[2] - width + extra, number)
    out = crops_at(x, index, rows, cols, height, width)
    if return_positions:
        return out, (index, rows, cols)
    return out


def dequantise(x: np.ndarray, seed, levels: int = 256) -> np.ndarray:
    """Uniform dequantisation: ``(255 x + u) / levels`` with ``u ~ U(0, 1)``,
    kept in [0, 1].

    Turns the 256 pixel levels into a continuous density, so a Gaussian
    likelihood can no longer grow without bound by shrinking sigma^2 on
    exactly-constant (black) pixels. ``seed`` is anything
    ``np.random.default_rng`` takes (training redraws the noise each epoch with
    ``[seed, epoch]``).
    """
    rng = np.random.default_rng(seed)
    u = rng.random(x.shape, dtype=np.float32)
    return np.clip(
        (np.round(np.asarray(x, np.float32) * 255.0) + u) / levels, 0.0, 1.0
    ).astype(np.float32)


def bin_centre(x: np.ndarray, levels: int = 256) -> np.ndarray:
    """Each pixel at the centre of its dequantisation bin,
    ``(255 x + 0.5) / levels``: the mean of :func:`dequantise` over its noise.
    A model trained on dequantised crops is scored on these values; clean
    pixels sit at the bin's lower edge, where such a model never saw a black
    pixel."""
    return (
        (np.round(np.asarray(x, np.float32) * 255.0) + 0.5) / levels
    ).astype(np.float32)
