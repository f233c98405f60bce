"""Anomaly maps drawn over their image, as inspection tools show them.

One function makes the picture (:func:`heat_overlay`, an RGB array), so the book's figures and
the PNG files the command line writes are the same picture: the image in grey, the map in colour
where it is high (transparent where it is low), and the outline of the ground-truth defect.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OUTLINE_RGB = (0, 255, 255)  # cyan: apart from every colour of the heat map


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The boundary pixels of a boolean mask (``width`` pixels inside its edge)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be HxW, got shape {mask.shape}")
    inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~inner


def heat_overlay(
    image: np.ndarray,
    amap: np.ndarray,
    low: float,
    high: float,
    mask: np.ndarray | None = None,
    cmap: str = "inferno",
    opacity: float = 0.65,
) -> np.ndarray:
    """The map over its image, as a ``uint8`` HxWx3 array.

    ``low`` and ``high`` fix the colour scale, so that pictures of different images compare: at or
    below ``low`` the map is transparent, at or above ``high`` it is the colour map's top colour at
    ``opacity``. (The command line uses the median pixel of held-out defect-free maps and a high
    percentile of their maxima.)
    ``mask`` (optional, boolean, the map's shape) is drawn as an outline.
    """
    from matplotlib import colormaps

    amap = np.asarray(amap, np.float64)
    image = np.asarray(image)
    if amap.ndim != 2:
        raise ValueError(f"an anomaly map must be HxW, got shape {amap.shape}")
    if image.shape[:2] != amap.shape:
        raise ValueError(
            f"image of shape {image.shape} and map of shape {amap.shape} "
            "differ: pass the image in the map's frame "
            "(Preprocessor.frame_image)"
        )
    if not high > low:
        raise ValueError(f"high ({high}) must be above low ({low})")
    grey = image if image.ndim == 2 else image[..., :3].mean(-1)
    base = np.repeat(grey.astype(np.float64)[..., None], 3, -1)
    level = np.clip((amap - low) / (high - low), 0.0, 1.0)
    colour = colormaps[cmap](0.25 + 0.75 * level)[..., :3] * 255
    alpha = (opacity * level)[..., None]
    out = (1 - alpha) * base + alpha * colour
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != amap.shape:
            raise ValueError(
                f"mask of shape {mask.shape} does not match the map "
                f"{amap.shape}"
            )
        out[outline(mask, max(1, round(max(mask.shape) / 300)))] = OUTLINE_RGB
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
