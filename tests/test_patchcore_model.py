import numpy as np
import pytest
import torch

from helpers.patchcore import PatchCore
from helpers.patchcore.scorer import NearestNeighbourScorer
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings


@pytest.fixture(scope="module")
def fitted():
    return PatchCore(toy_backbone(), **toy_settings()).fit(toy_images(6))


def test_fit_predict_shapes_and_defect_scores_higher(fitted):
    good = toy_images(3, seed=5)
    bad = [im.copy() for im in toy_images(3, seed=6)]
    for im in bad:
        im[10:25, 20:40] = 255
    scores, maps = fitted.predict(good + bad)
    assert (
        scores.shape == (6,) and len(maps) == 6 and maps[0].shape == (64, 64)
    )
    assert scores[3:].min() > scores[:3].max()
    assert fitted.fit_info["bank_size"] == int(6 * 64 * 0.25)


def test_fast_search_matches_exact_search(fitted):
    test = toy_images(4, seed=11)
    # a 96-patch bank is searched exactly ...
    assert not fitted._scorer.approximate
    fast = PatchCore(toy_backbone(), **toy_settings()).fit(toy_images(6))
    # ... unless the subspace is small
    fast._scorer = NearestNeighbourScorer(fast.bank, search_dim=16)
    assert fast._scorer.approximate
    fast_scores, fast_maps = fast.predict(test)
    exact = PatchCore(toy_backbone(), **toy_settings(search="exact")).fit(
        toy_images(6)
    )
    assert torch.equal(exact.bank, fast.bank)
    exact_scores, exact_maps = exact.predict(test)
    # both searches return the direct float32 distance to the bank row they
    # pick: same row, same bits. A near tie picked otherwise: |d1 - d2| <= 2 *
    # (384 + 2)u/2 * d <= 2.3e-5 * 1.1 = 2.5e-5 (maps weigh patch scores by >=
    # 0 summing to 1, eq. 7 by < 1): atol 1e-4 covers rounding, not a missed
    # patch
    assert np.allclose(fast_scores, exact_scores, atol=1e-4)
    assert all(
        np.allclose(a, b, atol=1e-4) for a, b in zip(fast_maps, exact_maps)
    )
    with pytest.raises(ValueError, match="search must be"):
        PatchCore(toy_backbone(), **toy_settings(search="approximate"))
    # a fitted model switches search without
    # refitting: same bank, the other scorer
    exact.set_search("fast")
    assert (
        exact.config.search == "fast" and exact.scorer.search_dim is not None
    )
    exact.set_search("exact")
    # the same bank, scorer and inputs in one process: bit for bit
    assert exact.scorer.search_dim is None and np.array_equal(
        exact.predict(test)[0], exact_scores
    )
    with pytest.raises(ValueError, match="search must be"):
        exact.set_search("approximate")
    assert exact.config.search == "exact"
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(toy_backbone(), **toy_settings()).set_search("exact")


def test_letterbox_maps_in_image_frame():
    m = PatchCore(toy_backbone(), **toy_settings(preprocess="letterbox")).fit(
        toy_images(3)
    )
    _, maps = m.predict(toy_images(2, shape=(30, 70)))
    assert maps[0].shape == (30, 70)


def test_save_load_round_trip(tmp_path, fitted):
    test = toy_images(3, seed=9)
    s1, m1 = fitted.predict(test)
    fitted.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {
        "config.json",
        "memory_bank.safetensors",
    }
    loaded = PatchCore.load(tmp_path / "model", backbone=toy_backbone())
    s2, m2 = loaded.predict(test)
    assert np.array_equal(s1, s2) and all(
        np.array_equal(a, b) for a, b in zip(m1, m2)
    )
    assert loaded.config == fitted.config
    # files written before eq. 7 searched its neighbours
    # at predict time also hold "bank_neighbours"
    from safetensors.torch import load_file, save_file

    bank_file = tmp_path / "model" / "memory_bank.safetensors"
    assert set(load_file(str(bank_file))) == {"bank", "coreset_index"}
    assert torch.equal(loaded.coreset_index, fitted.coreset_index)
    save_file(
        {
            "bank": fitted.bank,
            "bank_neighbours": fitted.scorer.knn(
                fitted.bank, k=fitted.config.k
            )[1],
        },
        str(bank_file),
    )
    s3, _ = PatchCore.load(
        tmp_path / "model", backbone=toy_backbone()
    ).predict(test)
    assert np.array_equal(s1, s3)
    with pytest.raises(ValueError, match="custom backbone"):
        PatchCore.load(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="not a saved PatchCore"):
        PatchCore.load(tmp_path / "nothing")


def test_determinism_and_seed():
    imgs = toy_images(4)
    a = PatchCore(toy_backbone(), **toy_settings(seed=0)).fit(imgs)
    b = PatchCore(toy_backbone(), **toy_settings(seed=0)).fit(imgs)
    c = PatchCore(toy_backbone(), **toy_settings(seed=1)).fit(imgs)
    assert torch.equal(a.bank, b.bank)
    assert not torch.equal(a.bank, c.bank)


def test_errors(tmp_path, fitted):
    bb = toy_backbone()
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchCore(bb, **toy_settings()).predict(toy_images(1))
    with pytest.raises(ValueError, match="fit: no images given"):
        PatchCore(bb, **toy_settings()).fit([])
    with pytest.raises(ValueError, match="mixed grayscale"):
        fitted.predict([toy_images(1)[0], np.zeros((40, 40, 3), np.uint8)])
    with pytest.raises(ValueError, match="HxW"):
        fitted.predict([np.zeros((40, 40, 4), np.uint8)])
    with pytest.raises(ValueError, match="single image"):
        fitted.predict(np.zeros((40, 40), np.uint8))
    bad = tmp_path / "readme.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="image 0: .*not a readable image"):
        fitted.predict([bad])
    with pytest.raises(ValueError, match="does not match its image"):
        fitted.mask_for(np.zeros((10, 10), bool), np.zeros((40, 56), np.uint8))
    with pytest.raises(ValueError, match="larger than the memory bank"):
        PatchCore(bb, **toy_settings(k=50, coreset_ratio=0.01)).fit(
            toy_images(2)
        )
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(bb, **toy_settings(coreset_ratio=1.5))
    with pytest.raises(ValueError, match="k must be"):
        PatchCore(bb, **toy_settings(k=0))
    with pytest.raises(ValueError, match="eps"):
        PatchCore(bb, **toy_settings(eps=1.0))
    with pytest.raises(TypeError, match="unknown PatchCore setting"):
        PatchCore(bb, ratio=0.1)


def test_nan_features_rejected():
    bb = toy_backbone()
    with torch.no_grad():
        bb.layer2[0].conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        PatchCore(bb, **toy_settings()).fit(toy_images(2))


def test_tile_centre_model_round_trips_and_differs_from_the_plain_one(
    tmp_path,
):
    images = toy_images(6)
    settings = toy_settings(preprocess="letterbox")
    plain = PatchCore(toy_backbone(), **settings)
    # earlier settings keep their cache keys
    assert "tile_centre" not in plain.config.to_json()
    tiled = PatchCore(toy_backbone(), **settings, tile_centre=True).fit(
        images[:4]
    )
    assert tiled.config.to_json()["tile_centre"] is True
    scores, maps = tiled.predict(images[4:])
    back = PatchCore.load(tiled.save(tmp_path / "m"), backbone=toy_backbone())
    assert back.config.tile_centre
    s2, m2 = back.predict(images[4:])
    assert np.array_equal(scores, s2) and all(
        np.array_equal(a, b) for a, b in zip(maps, m2)
    )
    # the bank holds standardised patches: per
    # image, valid patches have mean 0 per channel
    patches = tiled.extract(images[:1])[0]
    x = tiled.preprocessor.batch(images[:1])
    from helpers.patchcore.features import padding_free_cells

    valid = padding_free_cells(x, tiled.grid)[0]
    assert torch.allclose(
        patches[valid].mean(0), torch.zeros(patches.shape[1]), atol=1e-4
    )
    assert not np.array_equal(
        scores, plain.fit(images[:4]).predict(images[4:])[0]
    )
