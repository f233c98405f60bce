"""helpers.data: idx files, Magnetic Tile and MVTec AD layouts, bad images and masks."""

from __future__ import annotations

import gzip

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import assets, data


def _idx(shape, values) -> bytes:
    header = (
        b"\x00\x00\x08"
        + bytes([len(shape)])
        + b"".join(int(s).to_bytes(4, "big") for s in shape)
    )
    return header + np.asarray(values, np.uint8).tobytes()


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "a-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx(arr.shape, arr)))
    assert np.array_equal(data.read_idx(p), arr)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(_idx((2, 3, 4), arr)[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(bad)
    notidx = tmp_path / "x.idx"
    notidx.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(notidx)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable"):
        data.read_idx(broken)


def test_real_mnist_and_fashion_mnist():
    x, y = data.load_mnist("test")
    assert (
        x.shape == (10000, 28, 28)
        and x.dtype == np.uint8
        and y.shape == (10000,)
    )
    assert np.bincount(data.load_mnist("train")[1]).tolist()[:3] == [
        5923,
        6742,
        5958,
    ]
    xf, yf = data.load_fashion_mnist("train")
    assert (
        xf.shape == (60000, 28, 28) and np.bincount(yf).tolist() == [6000] * 10
    )
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.load_mnist("validation")


def _write_tile_tree(
    root, n_free=10, types=data.MAGNETIC_TILE_TYPES, mask_size=None
):
    rng = np.random.default_rng(0)
    for t in ("Free",) + tuple(types):
        folder = root / f"MT_{t}" / "Imgs"
        folder.mkdir(parents=True)
        for i in range(n_free if t == "Free" else 2):
            h, w = 20 + i, 30
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(
                folder / f"exp{i}.jpg"
            )
            mask = np.zeros(mask_size or (h, w), np.uint8)
            if t != "Free":
                mask[5:9, 5:9] = 255
            Image.fromarray(mask).save(folder / f"exp{i}.png")


def test_magnetic_tile_split_is_seeded_and_complete(tmp_path):
    _write_tile_tree(tmp_path)
    a = data.load_magnetic_tile(seed=0, root=tmp_path)
    b = data.load_magnetic_tile(seed=0, root=tmp_path)
    c = data.load_magnetic_tile(seed=1, root=tmp_path)
    names = lambda split: [s.path.name for s in split]
    assert names(a.good_test) == names(b.good_test) and names(
        a.good_test
    ) != names(c.good_test)
    assert len(a.good_test) == 4 and len(a.train) == 6
    assert not set(names(a.train)) & set(names(a.good_test))
    assert len(a.defect_test) == 10 and all(
        s.mask.sum() == 16 for s in a.defect_test
    )
    assert all(
        s.image.dtype == np.uint8 and s.mask.dtype == bool for s in a.test
    )


def test_magnetic_tile_missing_split_and_bad_masks(tmp_path):
    _write_tile_tree(tmp_path / "partial", types=("Crack",))
    with pytest.raises(assets.AssetLayoutError, match="MT_Blowhole/Imgs"):
        data.load_magnetic_tile(root=tmp_path / "partial")
    _write_tile_tree(tmp_path / "masks", mask_size=(7, 7))
    with pytest.raises(ValueError, match="masks must match their image"):
        data.load_magnetic_tile(root=tmp_path / "masks")
    with pytest.raises(ValueError, match="good_test_fraction"):
        data.load_magnetic_tile(
            good_test_fraction=1.0, root=tmp_path / "masks"
        )


def test_masks_grey_edges_and_zero_one_masks(tmp_path):
    grey = np.zeros((6, 6), np.uint8)
    grey[1:4, 1:4] = 255
    grey[0, 1:4] = 100  # antialiased edge below the threshold
    grey[4, 1:4] = 200  # and above it
    Image.fromarray(grey).save(tmp_path / "grey.png")
    m = data.read_mask(tmp_path / "grey.png", (6, 6))
    assert (
        m.dtype == bool
        and m.sum() == 12
        and not m[0].any()
        and m[4, 1:4].all()
    )
    Image.fromarray((grey == 255).astype(np.uint8)).save(
        tmp_path / "zero_one.png"
    )  # 0/1, not 0/255
    assert data.read_mask(tmp_path / "zero_one.png", (6, 6)).sum() == 9, (
        "a 0/1 mask must not read as empty"
    )
    with pytest.raises(ValueError, match=r"has size \(6, 6\).*\(7, 6\)"):
        data.read_mask(tmp_path / "grey.png", (6, 7))


def test_real_magnetic_tile_counts():
    split = data.load_magnetic_tile(seed=0)
    assert split.counts() == {
        "train": 571,
        "good_test": 381,
        "Blowhole": 115,
        "Break": 85,
        "Crack": 57,
        "Fray": 32,
        "Uneven": 103,
    }
    assert all(
        s.image.ndim == 2 and s.image.shape == s.mask.shape for s in split.test
    )
    held = data.load_magnetic_tile(
        seed=0, validation_fraction=0.25
    )  # the split of chapters I.5 and I.6
    assert held.counts() == {
        "train": 428,
        "good_test": 381,
        "Blowhole": 86,
        "Break": 64,
        "Crack": 43,
        "Fray": 24,
        "Uneven": 77,
        "good_validation": 143,
        "Blowhole_validation": 29,
        "Break_validation": 21,
        "Crack_validation": 14,
        "Fray_validation": 8,
        "Uneven_validation": 26,
    }


def test_validation_split_is_disjoint_stratified_and_seeded(tmp_path):
    _write_tile_tree(tmp_path)
    plain = data.load_magnetic_tile(seed=0, root=tmp_path)
    split = data.load_magnetic_tile(
        seed=0, root=tmp_path, validation_fraction=0.3
    )
    names = lambda samples: [
        s.path.parent.parent.name + "/" + s.path.name for s in samples
    ]
    # the good test images are those of the split without validation; nothing is lost or duplicated
    assert names(split.good_test) == names(plain.good_test)
    assert sorted(names(split.train + split.good_validation)) == sorted(
        names(plain.train)
    )
    assert sorted(
        names(split.defect_test + split.defect_validation)
    ) == sorted(names(plain.defect_test))
    assert not set(names(split.validation)) & set(
        names(split.test + split.train)
    )
    assert len(split.good_validation) == round(0.3 * len(plain.train))
    for t in data.MAGNETIC_TILE_TYPES:  # every type in both, in proportion
        n = sum(s.defect_type == t for s in plain.defect_test)
        assert sum(s.defect_type == t for s in split.defect_validation) == min(
            max(1, round(0.3 * n)), n - 1
        )
        assert any(s.defect_type == t for s in split.defect_test)
    again = data.load_magnetic_tile(
        seed=0, root=tmp_path, validation_fraction=0.3
    )
    other = data.load_magnetic_tile(
        seed=1, root=tmp_path, validation_fraction=0.3
    )
    assert (
        names(again.validation)
        == names(split.validation)
        != names(other.validation)
    )
    assert split.counts()["good_validation"] == len(split.good_validation)
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        data.load_magnetic_tile(root=tmp_path, validation_fraction=1.0)
    with pytest.raises(ValueError, match="already has a validation set"):
        data.with_validation(split, 0.2)
    assert data.with_validation(plain, 0.0) is plain


def _write_mvtec_tree(root, category="bottle", with_masks=True):
    rng = np.random.default_rng(0)
    base = root / category
    for sub in (
        "train/good",
        "test/good",
        "test/broken_large",
        "ground_truth/broken_large",
    ):
        (base / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(
            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        ).save(base / "train/good" / f"{i:03d}.png")
        Image.fromarray(
            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        ).save(base / "test/good" / f"{i:03d}.png")
        Image.fromarray(
            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        ).save(base / "test/broken_large" / f"{i:03d}.png")
        if with_masks:
            m = np.zeros((16, 16), np.uint8)
            m[2:5, 2:5] = 255
            Image.fromarray(m).save(
                base / "ground_truth/broken_large" / f"{i:03d}_mask.png"
            )


def test_mvtec_layout(tmp_path):
    _write_mvtec_tree(tmp_path)
    split = data.load_mvtec("bottle", root=tmp_path)
    assert split.counts() == {"train": 3, "good_test": 3, "broken_large": 3}
    assert split.train[0].image.shape == (16, 16, 3)
    assert all(s.mask.sum() == 9 for s in split.defect_test)
    held = data.load_mvtec("bottle", root=tmp_path, validation_fraction=0.34)
    assert held.counts() == {
        "train": 2,
        "good_test": 3,
        "broken_large": 2,
        "good_validation": 1,
        "broken_large_validation": 1,
    }
    with pytest.raises(ValueError, match="unknown MVTec AD category"):
        data.load_mvtec("bottles")  # not a category MVTec publishes
    # with root=, any category name: a reader's own parts in MVTec AD's layout
    shutil.copytree(tmp_path / "bottle", tmp_path / "own" / "my_part")
    own = data.load_mvtec("my_part", root=tmp_path / "own")
    assert own.name == "mvtec-my_part" and own.counts() == split.counts()
    with pytest.raises(assets.AssetLayoutError, match="train/good"):
        data.load_mvtec("bottles", root=tmp_path)
    with pytest.raises(ValueError, match="folder name"):
        data.load_mvtec("../bottle", root=tmp_path / "own")
    with pytest.raises(assets.AssetLayoutError, match="train/good"):
        data.load_mvtec("cable", root=tmp_path)
    _write_mvtec_tree(tmp_path / "nomask", with_masks=False)
    with pytest.raises(assets.AssetLayoutError, match="has no mask"):
        data.load_mvtec("bottle", root=tmp_path / "nomask")


def test_read_image_conversions_and_errors(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((4, 5, 4), 200, np.uint8), "RGBA").save(rgba)
    assert data.read_image(rgba, "L").shape == (4, 5)
    assert data.read_image(rgba, "RGB").shape == (4, 5, 3)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(deep)
    assert data.read_image(deep, "L").max() == 255
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ValueError, match="unreadable or truncated"):
        data.read_image(truncated)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        data.read_image(text)
    with pytest.raises(FileNotFoundError):
        data.read_image(tmp_path / "missing.png")


def test_differnet_split_follows_its_file(tmp_path):
    _write_tile_tree(tmp_path / "mt")
    names = [f"exp{i}.jpg" for i in (7, 0, 3, 5, 1, 8)]
    split_file = tmp_path / "train.txt"
    split_file.write_text("\n".join(names) + "\n")
    split = data.load_magnetic_tile_differnet(
        root=tmp_path / "mt", split_file=split_file
    )
    assert [s.path.name for s in split.train] == sorted(names)
    assert [s.path.name for s in split.good_test] == [
        "exp2.jpg",
        "exp4.jpg",
        "exp6.jpg",
        "exp9.jpg",
    ]
    assert (
        len(split.defect_test) == 2 * len(data.MAGNETIC_TILE_TYPES)
        and not split.validation
    )
    split_file.write_text("exp1.jpg\nexp42.jpg\n")
    with pytest.raises(assets.AssetLayoutError, match="exp42.jpg"):
        data.load_magnetic_tile_differnet(
            root=tmp_path / "mt", split_file=split_file
        )
    split_file.write_text("exp1.jpg\nexp1.jpg\n")
    with pytest.raises(ValueError, match="twice"):
        data.load_magnetic_tile_differnet(
            root=tmp_path / "mt", split_file=split_file
        )


def test_real_differnet_split_counts():
    split = data.load_magnetic_tile_differnet()
    assert split.counts() == {
        "train": 761,
        "good_test": 191,
        "Blowhole": 115,
        "Break": 85,
        "Crack": 57,
        "Fray": 32,
        "Uneven": 103,
    }
    assert not {s.path.name for s in split.train} & {
        s.path.name for s in split.good_test
    }


def _toy_split(n_train=10, n_good=6, n_defect=8):
    def s(name, t):
        return data.Sample(Path(name), None, None, t)

    types = ["Crack", "Fray"]
    return data.Split(
        "toy",
        [s(f"train{i}", "Free") for i in range(n_train)],
        [s(f"good{i}", "Free") for i in range(n_good)],
        # listed type by type, as the loaders list them
        [s(f"bad{i}", types[2 * i // n_defect]) for i in range(n_defect)],
    )


def test_smoke_subset_keeps_every_type_and_file_order():
    split = _toy_split()
    assert data.smoke_subset(split) == (split.train, split.test)
    train, test = data.smoke_subset(split, 4, 4, seed=3)
    assert len(train) == 4 and train == sorted(
        train, key=lambda s: int(s.path.name[5:])
    )
    assert train == data.smoke_subset(split, 4, 4, seed=3)[0]
    assert train != data.smoke_subset(split, 4, 4, seed=4)[0]
    assert [s.path.name for s in test] == ["good0", "good1", "bad0", "bad4"]
    assert {s.defect_type for s in test if s.is_anomalous} == {
        "Crack",
        "Fray",
    }
    _, test = data.smoke_subset(split, None, 8)
    assert [s.path.name for s in test if s.is_anomalous] == [
        "bad0",
        "bad2",
        "bad4",
        "bad6",
    ]
    with pytest.raises(ValueError, match="train_limit"):
        data.smoke_subset(split, 0)
    with pytest.raises(ValueError, match="test_limit"):
        data.smoke_subset(split, None, 1)
