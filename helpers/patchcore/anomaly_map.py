"""Patch scores -> pixel anomaly maps: reshape to the patch grid, resize to the
input, Gaussian blur.

Both steps are linear and act on rows and columns separately, so each axis is
one small matrix: for a ``g x g`` patch grid and an ``S x S`` input,
``map = A_h @ scores @ A_w.T`` with ``A = blur @ upsample`` of shape
``[S, g]``. That is the same map as ``F.interpolate(..., mode="bilinear")``
followed by a separable Gaussian blur, at a fraction of the cost (two tiny
matrix products per image).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``round(truncate*sigma)`` like
    ``scipy.ndimage.gaussian_filter``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@lru_cache(maxsize=32)
def blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``[n, n]`` matrix of a 1-D Gaussian blur with scipy's ``mode='reflect'``
    borders (the edge pixel repeated: ``d c b a | a b c d | d c b a``), for any
    ``n``, even shorter than the kernel."""
    if sigma <= 0:
        return torch.eye(n)
    k = gaussian_kernel1d(sigma)
    r = (k.numel() - 1) // 2
    # [n, 2r+1] source positions
    src = torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :]
    src = src % (2 * n)
    src = torch.where(src >= n, 2 * n - 1 - src, src)  # fold back: reflect
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, src, k.expand(n, -1).contiguous())
    return m.float()


@lru_cache(maxsize=32)
def upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``[n_out, n_in]`` matrix of 1-D linear interpolation as
    ``F.interpolate(align_corners=False)`` does it (bilinear resizing is this
    along each axis)."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]  # n_in unit signals
    return (
        F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[
            :, 0
        ]
        .T.float()
        .contiguous()
    )


@lru_cache(maxsize=32)
def map_operator(n_in: int, n_out: int, sigma: float) -> torch.Tensor:
    """``[n_out, n_in]``: upsample one axis of the patch grid to the input
    size, then blur it."""
    return (
        blur_matrix(n_out, sigma).double()
        @ upsample_matrix(n_in, n_out).double()
    ).float()


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of ``[b, H, W]`` maps with scipy's
    ``mode='reflect'`` borders."""
    if sigma <= 0:
        return maps
    kh = blur_matrix(maps.shape[-2], float(sigma)).to(maps)
    kw = blur_matrix(maps.shape[-1], float(sigma)).to(maps)
    return kh @ maps @ kw.T


def anomaly_maps(
    patch_scores: torch.Tensor,
    grid: tuple[int, int],
    size: int | tuple[int, int],
    sigma: float = 4.0,
) -> torch.Tensor:
    """``[b, H*W]`` patch scores -> ``[b, S, S]`` maps: reshape, bilinear
    resize, blur (sigma in pixels)."""
    b = patch_scores.shape[0]
    size = (size, size) if isinstance(size, int) else tuple(size)
    scores = patch_scores.reshape(b, grid[0], grid[1]).float()
    ah = map_operator(grid[0], size[0], float(sigma)).to(scores.device)
    aw = map_operator(grid[1], size[1], float(sigma)).to(scores.device)
    return ah @ scores @ aw.T
