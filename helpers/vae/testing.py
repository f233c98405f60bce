"""Small, fast fixtures shared by the VAE tests."""

from __future__ import annotations

import numpy as np

from . import crops


def toy_crops(seed: int = 0, n: int = 256) -> np.ndarray:
    """``n`` 8x8 crops of twelve 28x28 images, each a vertical bar at a seeded
    column."""
    rng = np.random.default_rng(seed)
    x = np.zeros((12, 28, 28), np.float32)
    for k in range(12):
        c = rng.integers(8, 18)
        x[k, 4:24, c : c + 3] = 1.0
    return crops.sample_crops(x[..., None], n, seed=seed)
