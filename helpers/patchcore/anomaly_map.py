"""Patch scores -> pixel anomaly maps: reshape to the patch grid, resize to the input, Gaussian blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``round(truncate*sigma)`` like ``scipy.ndimage.gaussian_filter``."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of ``[b, H, W]`` maps with reflected borders (scipy's ``mode='reflect'``)."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma)
    r = (k.numel() - 1) // 2
    x = maps[:, None]
    # scipy's 'reflect' is torch's 'symmetric' padding (edge pixel repeated); build it by flipping.
    def pad_sym(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        if r > n:  # tiny maps: fall back to replicate
            pads = (r, r, 0, 0) if dim == 3 else (0, 0, r, r)
            return F.pad(t, pads, mode="replicate")
        lo = t.narrow(dim, 0, r).flip(dim)
        hi = t.narrow(dim, n - r, r).flip(dim)
        return torch.cat([lo, t, hi], dim=dim)
    x = F.conv2d(pad_sym(x, 3), k.view(1, 1, 1, -1))
    x = F.conv2d(pad_sym(x, 2), k.view(1, 1, -1, 1))
    return x[:, 0]


def anomaly_maps(patch_scores: torch.Tensor, grid: tuple[int, int], size: int | tuple[int, int],
                 sigma: float = 4.0) -> torch.Tensor:
    """``[b, H*W]`` patch scores -> ``[b, S, S]`` maps: reshape, bilinear resize, blur (sigma in pixels)."""
    b = patch_scores.shape[0]
    maps = patch_scores.reshape(b, 1, grid[0], grid[1])
    size = (size, size) if isinstance(size, int) else tuple(size)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(maps, sigma)
