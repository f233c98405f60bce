"""Crop sampler: the article's loop and the vectorised sampler agree given the
same positions."""

import numpy as np
import pytest

from helpers.vae import crops


def _images(n=7, size=28, seed=0):
    return (
        np.random.default_rng(seed)
        .random((n, size, size, 1))
        .astype(np.float32)
    )


def test_vectorised_equals_article_loop_on_same_positions(capsys):
    x = _images()
    got_loop = crops.cut_img(x, 50, random=np.random.RandomState(3))
    rs = np.random.RandomState(3)  # replay the loop's draws in the same order
    pos = np.array(
        [
            (rs.randint(0, 7), rs.randint(0, 20), rs.randint(0, 20))
            for _ in range(50)
        ]
    )
    got_vec = crops.crops_at(x, pos[:, 0], pos[:, 1], pos[:, 2])
    assert got_loop.shape == (50, 8, 8, 1)
    np.testing.assert_array_equal(got_loop, got_vec)


def test_sample_crops_seeded_and_positions():
    x = _images()
    a, (idx, r, c) = crops.sample_crops(x, 500, seed=1, return_positions=True)
    b = crops.sample_crops(x, 500, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, crops.sample_crops(x, 500, seed=2))
    for k in (0, 17, 499):
        np.testing.assert_array_equal(
            a[k], x[idx[k], r[k] : r[k] + 8, c[k] : c[k] + 8]
        )
    # include_last: crops can touch the last row/column
    assert r.max() == 20 and c.max() == 20
    _, (_, r2, c2) = crops.sample_crops(
        x, 500, seed=1, include_last=False, return_positions=True
    )
    assert r2.max() == 19 and c2.max() == 19  # the article's range


def test_crop_errors_and_to_unit():
    with pytest.raises(ValueError, match="larger than the images"):
        crops.sample_crops(_images(size=6), 3, seed=0)
    with pytest.raises(ValueError, match="outside"):
        crops.crops_at(_images(), [0], [25], [0])
    with pytest.raises(TypeError, match="uint8"):
        crops.to_unit(np.zeros((2, 28, 28), np.float32))
    u = crops.to_unit(np.full((2, 28, 28), 255, np.uint8))
    assert (
        u.shape == (2, 28, 28, 1) and u.dtype == np.float32 and u.max() == 1.0
    )


def test_dequantise_keeps_levels_apart():
    x = crops.to_unit(np.arange(256, dtype=np.uint8).reshape(1, 16, 16))
    d = crops.dequantise(x, seed=0)
    assert d.min() >= 0 and d.max() <= 1
    assert np.all(np.floor(d * 256) == np.round(x * 255))


def test_bin_centre_is_the_mean_of_the_dequantisation_noise():
    x = crops.to_unit(
        np.array([[0, 1, 128, 254, 255]], dtype=np.uint8).reshape(1, 1, 5)
    )
    c = crops.bin_centre(x)
    assert np.array_equal(
        c, ((np.round(x * 255) + 0.5) / 256).astype(np.float32)
    )
    assert c.min() == np.float32(0.5 / 256) and c.max() == np.float32(
        255.5 / 256
    )
    draws = np.stack([crops.dequantise(x, seed=[0, i]) for i in range(4000)])
    # the mean of 4000 uniform draws on a bin of width 1/256: sd 1/(256
    # sqrt(12 * 4000)) = 1.8e-5; 5 sd
    assert np.abs(draws.mean(axis=0) - c).max() < 5 * (1 / 256) / np.sqrt(
        12 * 4000
    )
    assert not np.array_equal(draws[0], draws[1]), (
        "each seed must draw its own noise"
    )


def test_fit_vae_redraws_the_noise_every_epoch(monkeypatch):
    from helpers.vae import model as vmodel

    seen = []

    class Recorder:
        def fit(self, x, **_kw):
            seen.append(np.array(x))
            return type("H", (), {"history": {"loss": [0.0]}})()

    probes = []
    monkeypatch.setattr(
        vmodel, "probe_terms", lambda _m, x: probes.append(np.array(x)) or {}
    )
    clean = crops.to_unit(
        np.random.default_rng(1).integers(0, 256, (32, 8, 8), dtype=np.uint8)
    )
    vmodel.fit_vae(
        Recorder(),
        clean,
        epochs=2,
        batch_size=8,
        seed=3,
        probe=4,
        dequantise=True,
    )
    rng = np.random.default_rng(3)
    for epoch, x in enumerate(seen):
        # same shuffle as without noise, noise of its own
        o = rng.permutation(32)
        assert np.array_equal(np.floor(x * 256), np.round(clean[o] * 255)), (
            "noise left the pixel's bin"
        )
        assert np.array_equal(x, crops.dequantise(clean, seed=[3, epoch])[o])
    assert not np.array_equal(
        np.sort(seen[0], axis=None), np.sort(seen[1], axis=None)
    ), "noise frozen across epochs"
    assert all(
        np.array_equal(p, crops.bin_centre(clean[:4])) for p in probes
    ), "probe must use the bins' centres"
    seen.clear()
    vmodel.fit_vae(Recorder(), clean, epochs=1, batch_size=8, seed=3, probe=4)
    assert np.array_equal(
        seen[0], clean[np.random.default_rng(3).permutation(32)]
    ), "clean training changed"
