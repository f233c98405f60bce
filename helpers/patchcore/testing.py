"""Small, fast fixtures shared by the PatchCore tests (random toy backbone,
tiny images)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision


def toy_backbone(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised ResNet-18 (layer2: 128, layer3: 256 channels),
    eval mode."""
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval()


def toy_images(
    n: int, seed: int = 0, shape: tuple[int, ...] = (40, 56)
) -> list[np.ndarray]:
    """``n`` smooth random uint8 grayscale images."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.normal(128, 20, size=shape)
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return out


def toy_settings(**over) -> dict:
    d = dict(
        image_size=64,
        resize=72,
        coreset_ratio=0.25,
        k=3,
        progress=False,
        batch_size=4,
        seed=0,
    )
    d.update(over)
    return d
