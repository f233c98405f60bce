"""Locally aware patch features from a pretrained CNN (PatchCore, Roth et al.
2022, section 3.1).

Forward hooks collect the outputs of ``layer2[-1]`` and ``layer3[-1]``; the
forward pass stops after the last hooked layer (the article's code also runs
``layer4`` and the classifier, whose outputs it never uses). Each feature map
is smoothed with ``AvgPool2d(3, 1, 1)`` (local neighbourhood aggregation), the
deeper map is upsampled bilinearly to the grid of the shallower one and the two
are concatenated: 512 + 1024 = 1536 channels for ResNet-50 / Wide-ResNet-50-2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The stem and the residual stages of a torchvision ResNet, in the order the
# forward pass runs them.
RESNET_STAGES: tuple[str, ...] = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
)


class FeatureExtractor(nn.Module):
    """Collect the outputs of ``<layer>[-1]`` for each named layer of a
    torchvision-style ResNet.

    ``truncate=True`` runs the stages only up to the deepest hooked layer;
    ``truncate=False`` runs the backbone's own ``forward`` (all of it,
    classifier included), as the article does.

    ``channels_last`` stores the weights and the input channels-last (NHWC). On
    CPU the same convolutions then take about a quarter less time here
    (oneDNN's NHWC kernels; 1.3-1.4x in the benchmark's runs); the numbers
    agree with NCHW to float32 rounding. ``None`` (default) turns it on when
    the backbone lives on the CPU.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layers: Sequence[str] = ("layer2", "layer3"),
        truncate: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError(
                "layers is empty: name at least one stage, e.g. ('layer2', 'layer3')"
            )
        for name in layers:
            if name not in RESNET_STAGES[4:] or not hasattr(backbone, name):
                raise ValueError(
                    f"layer {name!r} is not a residual stage of this backbone; "
                    f"choose from {[s for s in RESNET_STAGES[4:] if hasattr(backbone, s)]}"
                )
        order = [RESNET_STAGES.index(n) for n in layers]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError(
                f"layers must be distinct and ordered shallow to deep, got {tuple(layers)}"
            )
        if channels_last is None:
            param = next(backbone.parameters(), None)
            channels_last = param is not None and param.device.type == "cpu"
        self.channels_last = bool(channels_last)
        if self.channels_last:
            backbone.to(memory_format=torch.channels_last)
        self.backbone = backbone.eval()
        self.layers = tuple(layers)
        self.truncate = truncate
        self._stop = RESNET_STAGES.index(self.layers[-1])
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            getattr(backbone, name)[-1].register_forward_hook(self._hook(name))
            for name in self.layers
        ]

    def _hook(self, name: str):
        def hook(
            _module: nn.Module, _inputs: tuple, output: torch.Tensor
        ) -> None:
            self._outputs[name] = output

        return hook

    def remove_hooks(self) -> None:
        """Detach the hooks from the backbone (the extractor is unusable
        afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def parameters_used(self) -> int:
        """How many backbone parameters a forward pass uses: the stem and the
        stages up to the deepest hooked layer when truncated (what a deployed
        PatchCore must keep), else all of them."""
        if not self.truncate:
            return sum(p.numel() for p in self.backbone.parameters())
        return sum(
            p.numel()
            for stage in RESNET_STAGES[: self._stop + 1]
            for p in getattr(self.backbone, stage).parameters()
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the hooked layers, shallow to deep, for a normalised
        batch ``x``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected a batch of RGB images [b, 3, h, w], got shape {tuple(x.shape)}"
            )
        self._outputs = {}
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.truncate:
            for stage in RESNET_STAGES[: self._stop + 1]:
                x = getattr(self.backbone, stage)(x)
        else:
            self.backbone(x)
        return [self._outputs[name] for name in self.layers]


def aggregate_features(
    features: Sequence[torch.Tensor], pool: bool = True
) -> torch.Tensor:
    """Locally aware patch features: ``AvgPool2d(3, 1, 1)`` on each map,
    bilinear upsampling of the deeper maps to the first map's grid,
    concatenation along channels -> ``[b, sum(C), H, W]``.

    The result is stored channels-last (each patch's 1536 numbers contiguous),
    whatever the inputs' memory format: :func:`embedding_to_patches` is then a
    view, and concatenating ``[b, H, W, C]`` views along their last dimension
    copies whole rows (here about a third of the time of ``torch.cat`` along
    dimension 1 of channels-last maps)."""
    if not features:
        raise ValueError("no feature maps to aggregate")
    size = features[0].shape[-2:]
    out = []
    for f in features:
        if pool:
            f = F.avg_pool2d(f, kernel_size=3, stride=1, padding=1)
        if f.shape[-2:] != size:
            f = F.interpolate(
                f, size=size, mode="bilinear", align_corners=False
            )
        out.append(f.permute(0, 2, 3, 1))
    return torch.cat(out, dim=3).permute(0, 3, 1, 2)


def embedding_to_patches(embedding: torch.Tensor) -> torch.Tensor:
    """``[b, C, H, W]`` -> ``[b*H*W, C]``, rows ordered image, row, column (the
    article's triple loop)."""
    if embedding.ndim != 4:
        raise ValueError(
            f"expected an embedding [b, C, H, W], got shape {tuple(embedding.shape)}"
        )
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])


def padding_free_cells(
    inputs: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """``[b, H*W]`` booleans: which cells of a patch ``grid`` cover image
    pixels of the normalised batch ``inputs`` ``[b, 3, h, w]``. Letterbox
    padding is exactly 0 in every channel (the ImageNet mean; no 8-bit pixel
    normalises to exactly 0), so a cell is padding when all of its input pixels
    are."""
    image = (inputs != 0).any(dim=1, keepdim=True).float()
    cells = F.adaptive_max_pool2d(image, grid)
    return cells.flatten(1) > 0


def centre_per_tile(
    patches: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Subtract from each image's patch features ``[b, P, C]`` the mean of that
    image's own patches. A patch then describes how it differs from the rest of
    its own tile, not what the tile looks like overall (its tone, its texture).
    ``valid`` ``[b, P]`` (booleans) names the patches the mean is taken over
    (:func:`padding_free_cells`: the letterbox padding is left out); every
    patch is shifted. No division by the tile's spread: that would reweight the
    channels (and turn channels that are nearly constant over a tile into
    amplified noise), which is a different change."""
    if patches.ndim != 3:
        raise ValueError(
            f"expected patch features [b, P, C], got shape {tuple(patches.shape)}"
        )
    w = (
        torch.ones(patches.shape[:2], dtype=patches.dtype)
        if valid is None
        else valid.to(patches.dtype)
    )
    if w.shape != patches.shape[:2]:
        raise ValueError(
            f"valid has shape {tuple(w.shape)}, patches {tuple(patches.shape[:2])} patches"
        )
    w = w.unsqueeze(-1)
    mean = (patches * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_(
        min=1
    )
    return patches - mean


def check_finite(
    patches: torch.Tensor, what: str = "features", chunk: int = 8192
) -> None:
    """Raise if ``patches`` holds NaN or infinite values (a broken backbone or
    input). Rows are checked in chunks (no full-size temporary): a finite
    float32 sum clears a chunk in one cheap pass, and only a chunk whose sum is
    not finite is searched element by element."""
    flat = (
        patches.reshape(-1, patches.shape[-1])
        if patches.ndim > 1
        else patches[:, None]
    )
    for i in range(0, flat.shape[0], chunk):
        block = flat[i : i + chunk]
        if not bool(
            torch.isfinite(block.sum(dtype=torch.float32))
        ) and not bool(torch.isfinite(block).all()):
            bad = int((~torch.isfinite(patches)).sum())
            raise ValueError(
                f"{what} contain {bad} NaN/inf values: check the input images (uint8 or floats in "
                "[0, 1]) and the backbone weights"
            )


def receptive_field(
    backbone: nn.Module, layer: str, pool: int = 0
) -> tuple[int, int]:
    """Theoretical receptive field (pixels) and stride of ``<layer>``'s output
    in a torchvision-style ResNet, along the main path (the 1x1 shortcut
    convolutions see less), optionally followed by a ``pool`` x ``pool``
    stride-1 local aggregation. Read from the modules themselves, so it follows
    where the strides sit (v1 or v1.5): each kernel ``k`` (dilation ``d``) at
    cumulative stride ``j`` widens the field by ``(k - 1) d j``."""
    if layer not in RESNET_STAGES[4:]:
        raise ValueError(
            f"layer must be one of {RESNET_STAGES[4:]}, got {layer!r}"
        )
    stages = RESNET_STAGES[: RESNET_STAGES.index(layer) + 1]
    field, jump = 1, 1
    for name, module in backbone.named_modules():
        if name.split(".")[0] not in stages or "downsample" in name:
            continue
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            # AvgPool: no dilation
            k, s, d = (
                getattr(module, a, 1)
                for a in ("kernel_size", "stride", "dilation")
            )
            k, s, d = (v if isinstance(v, int) else v[0] for v in (k, s, d))
            field += (k - 1) * d * jump
            jump *= s
    if pool > 1:
        field += (pool - 1) * jump
    return field, jump
