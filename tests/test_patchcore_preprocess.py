import numpy as np
import pytest
import torch

from helpers.patchcore.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessor,
    as_image_array,
    load_image,
)


def test_center_crop_letterbox_resize_shapes():
    img = np.random.default_rng(0).integers(0, 255, (100, 200), dtype=np.uint8)
    for mode in ("center_crop", "resize", "letterbox"):
        x = Preprocessor(mode, 64, 72).image(img)
        assert x.shape == (3, 64, 64)
        rgb = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(
            IMAGENET_MEAN
        ).view(3, 1, 1)
        inside = rgb[:, 16:48] if mode == "letterbox" else rgb
        # x * std + mean undoes (g - mean) / std to <= u (3 |g - mean| +
        # |g|) <= 2.6u = 1.6e-7 per channel; 1e-5 still catches a change of one
        # grey level (1/255 = 3.9e-3)
        # grayscale repeated to 3 channels
        assert torch.allclose(inside[0], inside[1], atol=1e-5)
    lb = Preprocessor("letterbox", 64)
    g = lb.geometry(100, 200)
    assert g.scaled == (32, 64) and g.offset == (16, 0)
    x = lb.image(img)
    # padding = ImageNet mean
    assert torch.all(x[:, :16] == 0) and torch.all(x[:, 48:] == 0)


def test_map_and_mask_frames():
    lb = Preprocessor("letterbox", 64)
    amap = torch.zeros(64, 64)
    amap[16:48] = 1.0
    back = lb.map_to_frame(amap, 100, 200)
    # bilinear weights of a constant 1 sum to
    # 1 up to ~4u = 2.4e-7 (default rtol 1e-5)
    assert back.shape == (100, 200) and torch.allclose(
        back, torch.ones(100, 200)
    )
    cc = Preprocessor("center_crop", 64, 80)
    mask = np.zeros((100, 200), bool)
    mask[:, :5] = True  # a defect at the border is cut by the centre crop
    assert cc.mask(mask).shape == (64, 64) and not cc.mask(mask).any()
    assert lb.mask(mask).shape == (100, 200)
    with pytest.raises(ValueError, match="does not match its image"):
        lb.mask(mask, (100, 201))


def test_image_validation(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(bad)
    with pytest.raises(ValueError, match="HxW"):
        as_image_array(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_image_array(np.full((10, 10), 3.0))
    with pytest.raises(ValueError, match="unknown"):
        Preprocessor("crop")
