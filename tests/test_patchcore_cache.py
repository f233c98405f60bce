"""The build's fitted-PatchCore cache: the same fit is reused exactly, anything
else fits again."""

import numpy as np
import pytest
import torch

from helpers.patchcore import PatchCore
from helpers.patchcore import cache
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings


def test_same_fit_is_reused_exactly_and_other_fits_are_not(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    train, test = toy_images(3), toy_images(2, seed=9)
    first = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert "from_cache" not in first.fit_info
    assert len(list(tmp_path.glob("patchcore-*"))) == 1
    again = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert again.fit_info.get("from_cache") is True
    assert torch.equal(first.bank, again.bank) and torch.equal(
        first.coreset_index, again.coreset_index
    )
    s1, m1 = first.predict(test)
    s2, m2 = again.predict(test)
    np.testing.assert_array_equal(s1, s2)
    for a, b in zip(m1, m2):
        np.testing.assert_array_equal(a, b)
    # other images, another setting or other backbone weights: a fit of its own
    assert (
        "from_cache"
        not in PatchCore(toy_backbone(), **toy_settings())
        .fit(train[:2])
        .fit_info
    )
    assert (
        "from_cache"
        not in PatchCore(toy_backbone(), **toy_settings(coreset_ratio=0.5))
        .fit(train)
        .fit_info
    )
    assert (
        "from_cache"
        not in PatchCore(toy_backbone(seed=1), **toy_settings())
        .fit(train)
        .fit_info
    )
    # the progress bar is not part of the key
    assert (
        PatchCore(toy_backbone(), **toy_settings(progress=True))
        .fit(train)
        .fit_info.get("from_cache")
    )


def test_no_cache_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    PatchCore(toy_backbone(), **toy_settings()).fit(toy_images(2))
    assert not list(tmp_path.iterdir())


def test_damaged_entry_is_fitted_again(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    train = toy_images(2)
    PatchCore(toy_backbone(), **toy_settings()).fit(train)
    bank = next(tmp_path.glob("patchcore-*/memory_bank.safetensors"))
    bank.write_bytes(bank.read_bytes()[:100])
    with pytest.warns(
        RuntimeWarning, match="damaged or incomplete.*fitted again"
    ):
        model = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert "from_cache" not in model.fit_info
    assert (
        PatchCore(toy_backbone(), **toy_settings())
        .fit(train)
        .fit_info.get("from_cache")
    )


def test_image_scores_are_reused_for_the_same_model_and_images(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    train, test, other = (
        toy_images(3),
        toy_images(2, seed=9),
        toy_images(2, seed=10),
    )
    first = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    scores, _ = first.predict(test)
    assert len(list(tmp_path.glob("patchcore-scores-*.npy"))) == 1
    # from the fit cache
    again = PatchCore(toy_backbone(), **toy_settings()).fit(train)

    def no_predict(self, images):
        raise AssertionError("predict must not run: the scores are cached")

    monkeypatch.setattr(PatchCore, "predict", no_predict)
    # the same bits, no predict
    np.testing.assert_array_equal(again.score_images(test), scores)
    monkeypatch.undo()
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    fresh = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    # other images: computed
    np.testing.assert_array_equal(
        fresh.score_images(other), fresh.predict(other)[0]
    )
    # a bank fitted from patches has no key: never cached, never reused
    manual = PatchCore(toy_backbone(), **toy_settings())
    manual.fit_patches(manual.extract(train))
    before = set(tmp_path.glob("patchcore-scores-*.npy"))
    manual.predict(test)
    assert set(tmp_path.glob("patchcore-scores-*.npy")) == before
    # a damaged entry is reported, removed and computed again
    for path in before:
        path.write_bytes(b"not an array")
    with pytest.warns(RuntimeWarning, match="cached scores .* damaged"):
        np.testing.assert_array_equal(fresh.score_images(test), scores)
