"""helpers.backbones: the offline weights are real, strides are moved, names
are checked."""

from __future__ import annotations

import pytest
import skimage.data
import torch

from helpers import backbones


@pytest.fixture(scope="module")
def v1():
    return backbones.load_backbone("resnet50_v1")


def test_offline_resnet50_v1_is_pretrained(v1):
    model, info = v1
    assert info.name == "resnet50_v1" and "ResNet-50 v1" in info.description
    top = backbones.classify(model, skimage.data.chelsea(), top=3)
    assert top[0][0] == "Egyptian cat" and top[0][1] > 0.5
    assert (
        backbones.classify(model, skimage.data.coffee(), top=1)[0][0]
        == "espresso"
    )


def test_v1_strides_and_patchcore_shapes(v1):
    model, _ = v1
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[
        0
    ].conv2.stride == (1, 1)
    feats = {}
    model.layer2[-1].register_forward_hook(
        lambda m, i, o: feats.__setitem__("l2", o)
    )
    model.layer3[-1].register_forward_hook(
        lambda m, i, o: feats.__setitem__("l3", o)
    )
    with torch.no_grad():
        model(torch.zeros(1, 3, 256, 256))
    assert feats["l2"].shape == (1, 512, 32, 32) and feats["l3"].shape == (
        1,
        1024,
        16,
        16,
    )
    assert not any(p.requires_grad for p in model.parameters())


def test_without_moving_strides_the_features_are_wrong(v1):
    """The v1.5 layout runs without error but computes other features: the
    point of move_v1_strides."""
    model, _ = v1
    x = backbones.imagenet_tensor(skimage.data.chelsea())
    feats = {}
    hook = model.layer3[-1].register_forward_hook(
        lambda m, i, o: feats.__setitem__("l3", o)
    )
    try:
        with torch.no_grad():
            model(x)
            right = feats["l3"].clone()
            for stage in (model.layer2, model.layer3, model.layer4):
                stage[0].conv1.stride, stage[0].conv2.stride = (1, 1), (2, 2)
            model(x)
            wrong = feats["l3"].clone()
    finally:
        backbones.move_v1_strides(model)
        hook.remove()
    assert right.shape == wrong.shape
    assert ((right - wrong).norm() / right.norm()).item() > 0.3


def test_random_backbone_is_seeded():
    a, info = backbones.load_backbone("random", seed=3)
    b, _ = backbones.load_backbone("random", seed=3)
    c, _ = backbones.load_backbone("random", seed=4)
    assert info.name == "random"
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(
        a.conv1.weight, c.conv1.weight
    )


def test_names_are_checked_and_auto_resolves_offline():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.load_backbone("vgg16")
    assert backbones.resolve_name("auto") in ("wide_resnet50_2", "resnet50_v1")


def test_imagenet_tensor_rejects_bad_shapes():
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        backbones.imagenet_tensor(torch.zeros(4, 4, 4).numpy())
