"""Damaged or unusual files a user's own data brings: each is read correctly
or refused with a message that names the file, says what is wrong and what to
do."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import assets, data
from helpers.patchcore import PatchCore
from helpers.patchcore.model import SavedModelError
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings

ORIENTATION = 0x0112  # the EXIF tag
# "the 0th row is the visual right-hand
# side": viewers turn it 90 degrees clockwise
ROTATE_90_CW = 6


def _asymmetric(h=6, w=10) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    img[0, 0] = 255  # a bright top-left corner to follow through the rotation
    img[1:3, :] = 120
    return img


def _save_with_orientation(
    arr: np.ndarray, path, orientation: int, **kw
) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(arr).save(path, exif=exif, **kw)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied_to_images_and_masks(tmp_path, suffix):
    stored = _asymmetric()
    path = tmp_path / f"phone{suffix}"
    _save_with_orientation(
        stored,
        path,
        ROTATE_90_CW,
        **({"quality": 100} if suffix == ".jpg" else {}),
    )
    # what a viewer shows: turned 90 degrees clockwise
    shown = np.rot90(stored, k=-1)
    got = data.read_image(path, "L")
    assert got.shape == shown.shape == (10, 6)
    # JPEG rounding
    assert np.abs(got.astype(int) - shown).max() <= (
        0 if suffix == ".png" else 8
    )
    # a mask stored with the same tag is turned the same way ...
    mask_path = tmp_path / "phone_mask.png"
    _save_with_orientation(
        (stored == 255).astype(np.uint8) * 255, mask_path, ROTATE_90_CW
    )
    assert np.array_equal(data.read_mask(mask_path, got.shape), shown == 255)
    # ... and a mask drawn on the shown (upright)
    # image, without a tag, fits it as it is
    Image.fromarray((shown == 255).astype(np.uint8) * 255).save(
        tmp_path / "drawn.png"
    )
    assert np.array_equal(
        data.read_mask(tmp_path / "drawn.png", got.shape), shown == 255
    )


def test_masks_from_annotation_tools(tmp_path):
    truth = np.zeros((6, 8), bool)
    truth[2:4, 3:6] = True
    red = np.zeros((6, 8, 3), np.uint8)
    # colour on black: grey value 76, once read as empty
    red[truth] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "red.png")
    # label index 2 (a second defect class)
    labels = (truth * 2).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    # palette: index 1 drawn dark red, as VOC does
    pal = Image.fromarray(truth.astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    pal.save(tmp_path / "palette.png")
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but transparent off the defect
    rgba[truth, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    Image.fromarray(truth).save(tmp_path / "bilevel.png")  # mode "1"
    for name in ("red", "labels", "palette", "layer", "bilevel"):
        assert np.array_equal(
            data.read_mask(tmp_path / f"{name}.png", (6, 8)), truth
        ), name


def test_unusual_image_files(tmp_path, monkeypatch):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ValueError, match="is not a file"):
        data.read_image(tmp_path / "folder.png")
    # 32-bit float TIFF
    Image.fromarray(np.full((4, 5), 0.5, np.float32), "F").save(
        tmp_path / "float.tif"
    )
    assert (data.read_image(tmp_path / "float.tif") == 128).all()
    # 16-bit, 0-255 values
    Image.fromarray(np.full((4, 5), 200, np.uint16)).save(
        tmp_path / "sixteen_low.png"
    )
    assert (data.read_image(tmp_path / "sixteen_low.png") == 200).all()
    Image.fromarray(np.full((4, 5, 2), 90, np.uint8), "LA").save(
        tmp_path / "grey_alpha.png"
    )
    # stays grey
    assert data.read_image(tmp_path / "grey_alpha.png", "auto").shape == (4, 5)
    cmyk = Image.new("CMYK", (5, 4), (0, 0, 0, 0))
    cmyk.save(tmp_path / "cmyk.jpg")  # print-shop JPEG
    assert data.read_image(tmp_path / "cmyk.jpg", "RGB").shape == (4, 5, 3)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png is not a readable image"):
        data.read_image(tmp_path / "empty.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 > 2x limit
    with pytest.raises(ValueError, match="too large to read safely"):
        data.read_image(tmp_path / "big.png")


def test_hidden_files_beside_images_are_skipped(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.PNG")
    # macOS AppleDouble companion
    (tmp_path / "._a.PNG").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in data.image_files(tmp_path)] == ["a.PNG"]


# --------------------------------------------------------------- saved models


@pytest.fixture
def saved(tmp_path):
    model = PatchCore(toy_backbone(), **toy_settings()).fit(toy_images(4))
    return model.save(tmp_path / "model")


def _load(path):
    return PatchCore.load(path, backbone=toy_backbone())


def test_truncated_memory_bank(saved):
    bank = saved / "memory_bank.safetensors"
    # a copy that stopped half-way
    bank.write_bytes(bank.read_bytes()[: bank.stat().st_size // 2])
    with pytest.raises(
        SavedModelError,
        match=r"memory_bank\.safetensors of the saved PatchCore model .* "
        r"damaged or truncated.*save the model again",
    ):
        _load(saved)


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"format_version": 1, "config": {', "not valid JSON"),  # cut short
        ("\x00" * 40, "not valid JSON"),  # zero-filled by a crashed disk
        ("[1, 2]", "not valid JSON.*JSON object"),
        ('{"format_version": 1}', "lacks or garbles the entry 'config'"),
        ('{"format_version": 7}', "unsupported PatchCore format version 7"),
    ],
)
def test_damaged_config(saved, text, match):
    (saved / "config.json").write_text(text)
    with pytest.raises(SavedModelError, match=match):
        _load(saved)


def test_config_from_another_version_and_mismatched_files(saved, tmp_path):
    meta = json.loads((saved / "config.json").read_text())
    meta["config"]["future_setting"] = 1
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        SavedModelError, match="settings are not valid here.*future_setting"
    ):
        _load(saved)
    del meta["config"]["future_setting"]
    meta["channels"] = 7
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(SavedModelError, match="do not belong together"):
        _load(saved)


def test_save_is_atomic_and_refuses_a_file(saved, tmp_path, monkeypatch):
    model = _load(saved)
    before = {p.name: p.read_bytes() for p in saved.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        model.save(saved)
    # the old model, whole
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="it is a file"):
        model.save(tmp_path / "file")


# ----------------------------------------------------------------- VAD_ASSETS


def test_assets_root_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VAD_ASSETS", str(tmp_path / "nowhere"))
    with pytest.raises(
        assets.AssetError,
        match=r"VAD_ASSETS is set to .*nowhere.*which does not exist.*unset",
    ):
        data.load_mnist()
    (tmp_path / "assets.zip").write_bytes(b"PK")
    monkeypatch.setenv("VAD_ASSETS", str(tmp_path / "assets.zip"))
    with pytest.raises(
        assets.AssetError, match="which is a file, not a folder"
    ):
        data.load_mnist()


def test_assets_root_without_the_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("VAD_ASSETS", str(tmp_path))
    monkeypatch.setenv("VAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAD_OFFLINE", "1")
    with pytest.raises(
        assets.AssetNotFoundError,
        match=r"VAD_ASSETS is set to .*, which has no 'mnist/' folder",
    ):
        data.load_mnist()


# ------------------------------------------------------------------ VAE cache


def test_damaged_vae_cache_entry_is_trained_again(monkeypatch, tmp_path):
    from helpers.vae import cache, crops, model

    monkeypatch.setenv(cache.ENV, str(tmp_path))
    x = crops.sample_crops(
        np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32),
        64,
        seed=0,
    )
    model.train_vae(x, epochs=1, batch_size=32, seed=0)
    weights = next(tmp_path.glob("*.weights.h5"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.warns(
        RuntimeWarning, match="damaged or incomplete.*trained again"
    ):
        again = model.train_vae(x, epochs=1, batch_size=32, seed=0)
    assert not again.from_cache
    # stored whole again
    assert model.train_vae(x, epochs=1, batch_size=32, seed=0).from_cache
