"""Pretrained CNN backbones behind one call: ``load_backbone(name)``.

* ``wide_resnet50_2``: torchvision's ImageNet weights (IMAGENET1K_V1), the
  PatchCore paper's backbone; downloaded (sha256-checked) into the cache when
  online.
* ``resnet50_v1``: the original ResNet-50 v1 ImageNet weights from the offline
  assets. Its layer2 / layer3 have 512 / 1024 channels like
  ``wide_resnet50_2``, so every PatchCore shape carries over. torchvision
  builds v1.5 (stride in the 3x3 conv); v1 strides in the first 1x1 conv, so
  the strides are moved after loading.
* ``random``: a randomly initialised ResNet-50 (a control: what do pretrained
  features buy?).
* ``auto``: ``wide_resnet50_2`` if its weights are already at hand; else
  ``resnet50_v1`` if the offline assets hold it; else ``wide_resnet50_2``,
  downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from . import assets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("auto", "wide_resnet50_2", "resnet50_v1", "random")


@dataclass(frozen=True)
class BackboneInfo:
    """Which network and weights a chapter used; ``description`` is printed in
    the book."""

    name: str
    weights: str  # a file path, or "random (seed N)"
    description: str


def _torchvision_models():
    try:
        import torchvision.models as models
    except Exception as err:
        # torchvision beside the '+cpu' torch wheel fails at import
        raise ImportError(
            "torchvision could not be imported. Install the pinned environment (make venv, or "
            "'pip install torch==2.13.0 torchvision==0.28.0' from PyPI); torchvision does not work "
            f"with the local '+cpu' torch wheel. Original error: {err}"
        ) from err
    return models


def move_v1_strides(model) -> None:
    """Turn torchvision's ResNet-50 v1.5 into v1: stride 2 in the first 1x1
    conv of each stage."""
    for stage in (model.layer2, model.layer3, model.layer4):
        stage[0].conv1.stride = (2, 2)
        stage[0].conv2.stride = (1, 1)


def _wide_resnet50_2(download_ok: bool):
    import torch

    models = _torchvision_models()
    path = assets.asset_file(
        "wide_resnet50_2",
        "wide_resnet50_2-95faca4d.pth",
        download_ok=download_ok,
    )
    model = models.wide_resnet50_2(weights=None)
    model.load_state_dict(
        torch.load(path, map_location="cpu", weights_only=True)
    )
    info = BackboneInfo(
        "wide_resnet50_2",
        str(path),
        "wide_resnet50_2 with torchvision's ImageNet-1k weights (IMAGENET1K_V1), "
        "the PatchCore paper's backbone",
    )
    return model, info


def _resnet50_v1():
    from safetensors.torch import load_file

    models = _torchvision_models()
    path = assets.asset_file("resnet50_v1", "resnet50_imagenet_v1.safetensors")
    model = models.resnet50(weights=None)
    state = load_file(str(path))
    result = model.load_state_dict(state, strict=False)
    missing = [
        k for k in result.missing_keys if not k.endswith("num_batches_tracked")
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit torchvision's ResNet-50: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    move_v1_strides(model)
    info = BackboneInfo(
        "resnet50_v1",
        str(path),
        "ResNet-50 v1 with the original ImageNet-1k weights (He et al. 2016; offline "
        "stand-in for wide_resnet50_2, same 512/1024 layer2/layer3 channels)",
    )
    return model, info


def _random_resnet50(seed: int):
    import torch

    models = _torchvision_models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.resnet50(weights=None)
    return model, BackboneInfo(
        "random",
        f"random (seed {seed})",
        f"ResNet-50 with random weights (seed {seed}): a control, not pretrained",
    )


def _have_locally(name: str) -> bool:
    try:
        assets.locate(name, download_ok=False)
        return True
    except assets.AssetError:
        return False


def resolve_name(name: str = "auto") -> str:
    """The backbone that ``name`` stands for here (resolves ``auto``)."""
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {BACKBONES}"
        )
    if name != "auto":
        return name
    if _have_locally("wide_resnet50_2"):
        return "wide_resnet50_2"
    if _have_locally("resnet50_v1"):
        return "resnet50_v1"
    return "wide_resnet50_2"


def load_backbone(
    name: str = "auto", *, seed: int = 0, download_ok: bool = True
):
    """Return ``(model, info)``: a torchvision ResNet in eval mode, gradients
    off, on the CPU.

    Inputs are RGB in [0, 1] normalised with ``IMAGENET_MEAN`` /
    ``IMAGENET_STD``.
    """
    resolved = resolve_name(name)
    if resolved == "wide_resnet50_2":
        model, info = _wide_resnet50_2(download_ok)
    elif resolved == "resnet50_v1":
        model, info = _resnet50_v1()
    else:
        model, info = _random_resnet50(seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order of the classifier's
    outputs."""
    return list(
        _torchvision_models().ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    )


def imagenet_tensor(image: np.ndarray, resize: int = 256, crop: int = 224):
    """uint8 HxW or HxWx3 image -> normalised (1, 3, crop, crop) float tensor
    (resize + centre crop)."""
    import torch
    import torch.nn.functional as F

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"expected an HxW or HxWx3 image, got shape {arr.shape}"
        )
    x = (
        torch.from_numpy(np.ascontiguousarray(arr))
        .permute(2, 0, 1)
        .float()[None]
        / 255.0
    )
    h, w = x.shape[-2:]
    scale = resize / min(h, w)
    x = F.interpolate(
        x,
        size=(round(h * scale), round(w * scale)),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    x = x[..., top : top + crop, left : left + crop]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def classify(
    model, image: np.ndarray, top: int = 5
) -> list[tuple[str, float]]:
    """Top-``top`` ImageNet classes and probabilities for one image (a check
    that weights are real)."""
    import torch

    with torch.no_grad():
        probs = torch.softmax(model(imagenet_tensor(image)), dim=1)[0]
    values, indices = probs.topk(top)
    names = imagenet_categories()
    return [
        (names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())
    ]


__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "classify",
    "imagenet_categories",
    "imagenet_tensor",
    "load_backbone",
    "move_v1_strides",
    "resolve_name",
]
