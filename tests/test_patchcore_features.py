import numpy as np
import pytest
import torch

from helpers.patchcore import PatchCore
from helpers.patchcore.features import (
    FeatureExtractor,
    aggregate_features,
    check_finite,
    embedding_to_patches,
    padding_free_cells,
    centre_per_tile,
)
from helpers.patchcore.preprocess import Preprocessor
from helpers.patchcore.reference import reshape_embedding
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings


@pytest.mark.parametrize(
    "layers, shapes",
    [
        (("layer2", "layer3"), [(2, 128, 8, 8), (2, 256, 4, 4)]),
        # layer4, the stage the paper leaves out (studied in I.5): the
        # truncated pass then runs the whole trunk
        (
            ("layer2", "layer3", "layer4"),
            [(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)],
        ),
    ],
)
def test_hook_shapes_and_truncated_forward_equals_full(layers, shapes):
    fe = FeatureExtractor(toy_backbone(), layers)
    x = torch.randn(2, 3, 64, 64)
    short = fe(x)
    fe.truncate = False
    full = fe(x)
    assert [tuple(f.shape) for f in short] == shapes
    for a, b in zip(short, full):
        assert torch.equal(a, b)
    # every deeper map is pooled and upsampled to the first map's grid
    emb = aggregate_features(short)
    assert emb.shape == (2, sum(s[1] for s in shapes), 8, 8)
    deepest = torch.nn.functional.interpolate(
        torch.nn.AvgPool2d(3, 1, 1)(short[-1]),
        size=(8, 8),
        mode="bilinear",
        align_corners=False,
    )
    # the same avg_pool2d and interpolate calls on the same tensor: bitwise
    # equal on any CPU (measured 0)
    assert torch.allclose(emb[:, -shapes[-1][1] :], deepest)


def test_aggregate_concat_and_upsampling():
    f2, f3 = torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4)
    emb = aggregate_features([f2, f3])
    assert emb.shape == (2, 12, 8, 8)
    pooled = torch.nn.AvgPool2d(3, 1, 1)(f2)
    # same kernels on the same tensors as aggregate_features:
    # bitwise equal on any CPU (measured 0)
    assert torch.allclose(emb[:, :5], pooled)
    up = torch.nn.functional.interpolate(
        torch.nn.AvgPool2d(3, 1, 1)(f3),
        size=(8, 8),
        mode="bilinear",
        align_corners=False,
    )
    assert torch.allclose(emb[:, 5:], up)
    assert torch.equal(aggregate_features([f2, f3], pool=False)[:, :5], f2)
    # channel-first inputs too give channels-last
    # memory, so the reshape to patches is a view
    assert emb.is_contiguous(memory_format=torch.channels_last)
    assert embedding_to_patches(emb).data_ptr() == emb.data_ptr()


def test_channels_last_extractor_matches_nchw():
    x = torch.randn(2, 3, 64, 64)
    nchw = FeatureExtractor(toy_backbone(), channels_last=False)(x)
    cl = FeatureExtractor(toy_backbone(), channels_last=True)
    # CPU default: on
    assert cl.channels_last and FeatureExtractor(toy_backbone()).channels_last
    feats = cl(x)
    # NCHW and NHWC kernels sum each conv's n <= 2304 products in other orders.
    # Random-walk rounding (Higham & Mary 2019): ~u * sqrt(sum of n / 2) =
    # 6e-8 * sqrt(14739 / 2) ~ 5e-6 of the features' RMS (2.0) over the 13
    # convs to layer3, ~4e-5 at 4 sigma (observed 1.4e-5); 1e-4 + 1e-4 |b|
    # covers it. (The worst-case gamma_n bound, n*u per conv, is far looser
    # than any observed kernel.)
    for a, b in zip(nchw, feats):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # stays channels-last: the reshape is a view
    emb = aggregate_features(feats)
    assert emb.is_contiguous(memory_format=torch.channels_last)
    assert embedding_to_patches(emb).data_ptr() == emb.data_ptr()


def test_check_finite_finds_nan_and_inf():
    p = torch.randn(50, 8)
    check_finite(p)
    check_finite(p.half())
    for bad in (float("nan"), float("inf")):
        q = p.clone()
        q[7, 3] = bad
        with pytest.raises(ValueError, match="1 NaN/inf"):
            check_finite(q)


def test_reshape_equals_article_triple_loop():
    emb = torch.randn(3, 6, 4, 5)
    assert torch.equal(
        embedding_to_patches(emb), torch.stack(reshape_embedding(emb))
    )


def test_streaming_extraction_matches_direct():
    pc = PatchCore(toy_backbone(), **toy_settings(batch_size=2))
    images = toy_images(5)
    # batches of 2, 2 and 1, written into one preallocated tensor
    streamed = pc.extract(images)
    assert pc.grid == (8, 8) and streamed.shape == (5, 64, 384)
    direct = embedding_to_patches(
        aggregate_features(pc.extractor(pc.preprocessor.batch(images)))
    )
    # batches of 2, 2, 1 vs one of 5: the same kernels, blocked or threaded
    # otherwise at most; even a full reorder (NCHW vs NHWC above: <= 1.2e-6 of
    # the largest feature) gives <= 2e-6 at |f| <= 1.7 (observed 6.6e-7 on
    # every variant tried); atol 1e-5 (+ the default rtol 1e-5) covers it
    assert torch.allclose(streamed.reshape(-1, 384), direct, atol=1e-5)
    assert pc.extract(images, dtype=torch.float16).dtype == torch.float16


def test_bad_layers_and_inputs_rejected():
    bb = toy_backbone()
    with pytest.raises(ValueError, match="not a residual stage"):
        FeatureExtractor(bb, ("layer9",))
    with pytest.raises(ValueError, match="ordered shallow to deep"):
        FeatureExtractor(bb, ("layer3", "layer2"))
    fe = FeatureExtractor(bb)
    with pytest.raises(ValueError, match="RGB images"):
        fe(torch.randn(1, 1, 64, 64))


def test_receptive_field_matches_the_gradient_support():
    """The theoretical receptive field is where the input can change one output
    unit: the support of the gradient of a central layer3 unit (float64, so no
    contribution rounds to zero)."""
    import torchvision
    from helpers.backbones import move_v1_strides
    from helpers.patchcore.features import receptive_field

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).double().eval()
    field, stride = receptive_field(net, "layer3")
    assert stride == 16
    x = torch.rand(
        1,
        3,
        320,
        320,
        dtype=torch.double,
        generator=torch.Generator().manual_seed(0),
    ).requires_grad_()
    out = x
    for stage in (
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
    ):
        out = getattr(net, stage)(out)
    h, w = out.shape[-2:]
    out[0, :, h // 2, w // 2].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3)))[:, 0]
    # 211 px, well inside the 320 px input
    assert int(rows.max() - rows.min()) + 1 == field
    # ResNet-50: v1 puts the stride before the 3x3
    # convolution, which then sees a wider field
    r50 = torchvision.models.resnet50()
    v15 = receptive_field(r50, "layer4")[0]
    move_v1_strides(r50)
    assert receptive_field(r50, "layer4")[0] > v15
    assert (
        receptive_field(r50, "layer3", pool=3)[0]
        == receptive_field(r50, "layer3")[0] + 2 * 16
    )


def test_centre_per_tile_subtracts_each_tiles_own_mean_over_its_valid_patches():
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(3, 50, 8, generator=gen, dtype=torch.float64) * 3 + 5
    valid = torch.ones(3, 50, dtype=torch.bool)
    valid[1, 40:] = False  # image 1: its last 10 patches are padding
    out = centre_per_tile(patches, valid)
    for i in range(3):
        assert torch.allclose(
            out[i][valid[i]].mean(0),
            torch.zeros(8, dtype=torch.float64),
            atol=1e-12,
        )
        # differences between patches of one tile are
        # kept exactly as they were (up to rounding)
        assert torch.allclose(
            out[i] - out[i, :1], patches[i] - patches[i, :1], atol=1e-12
        )
    # a tile-wide shift (per channel) leaves its centred patches as they were
    shift = torch.randn(1, 1, 8, generator=gen, dtype=torch.float64) * 10
    assert torch.allclose(
        centre_per_tile(patches + shift, valid), out, atol=1e-12
    )
    # padding patches do not enter the mean: changing them moves no valid patch
    changed = patches.clone()
    changed[1, 40:] = 1e3
    assert torch.equal(centre_per_tile(changed, valid)[1, :40], out[1, :40])
    assert torch.allclose(
        centre_per_tile(patches)[1].mean(0),
        torch.zeros(8, dtype=torch.float64),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match=r"\[b, P, C\]"):
        centre_per_tile(patches[0])


def test_padding_free_cells_marks_the_letterbox_padding():
    # 3:1, so a 64 px letterbox pads top and bottom
    image = np.full((20, 60), 128, dtype=np.uint8)
    x = Preprocessor("letterbox", 64).batch([image])
    cells = padding_free_cells(x, (8, 8)).view(8, 8)
    g = Preprocessor("letterbox", 64).geometry(20, 60)
    # the image's rows inside the input
    top, bottom = g.offset[0], g.offset[0] + g.scaled[0]
    expected = torch.tensor(
        [8 * r < bottom and 8 * r + 8 > top for r in range(8)]
    )
    assert 0 < int(expected.sum()) < 8
    assert torch.equal(cells, expected[:, None].expand(8, 8))
    assert padding_free_cells(
        Preprocessor("center_crop", 64, 72).batch([image]), (8, 8)
    ).all()


def test_parameters_used_counts_the_stages_a_truncated_pass_runs():
    net = toy_backbone()
    total = sum(p.numel() for p in net.parameters())
    to_layer3 = FeatureExtractor(net, ("layer2", "layer3"))
    layer4 = sum(p.numel() for p in net.layer4.parameters())
    head = (
        sum(p.numel() for p in net.fc.parameters())
        if hasattr(net, "fc")
        else 0
    )
    assert to_layer3.parameters_used() == total - layer4 - head
    to_layer3.remove_hooks()
    only2 = FeatureExtractor(net, ("layer2",))
    assert only2.parameters_used() < to_layer3.parameters_used()
    only2.truncate = False
    assert only2.parameters_used() == total
