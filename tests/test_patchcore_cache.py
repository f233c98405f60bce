"""The build's fitted-PatchCore cache: the same fit is reused exactly, anything else fits again."""

import numpy as np
import pytest
import torch

from helpers.patchcore import PatchCore
from helpers.patchcore import cache
from helpers.patchcore.testing import toy_backbone, toy_images, toy_settings


def test_same_fit_is_reused_exactly_and_other_fits_are_not(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    train, test = toy_images(3), toy_images(2, seed=9)
    first = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert "from_cache" not in first.fit_info
    assert len(list(tmp_path.glob("patchcore-*"))) == 1
    again = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert again.fit_info.get("from_cache") is True
    assert torch.equal(first.bank, again.bank) and torch.equal(first.coreset_index, again.coreset_index)
    s1, m1 = first.predict(test)
    s2, m2 = again.predict(test)
    np.testing.assert_array_equal(s1, s2)
    for a, b in zip(m1, m2):
        np.testing.assert_array_equal(a, b)
    # other images, another setting or other backbone weights: a fit of its own
    assert "from_cache" not in PatchCore(toy_backbone(), **toy_settings()).fit(train[:2]).fit_info
    assert "from_cache" not in PatchCore(toy_backbone(), **toy_settings(coreset_ratio=0.5)).fit(train).fit_info
    assert "from_cache" not in PatchCore(toy_backbone(seed=1), **toy_settings()).fit(train).fit_info
    # the progress bar is not part of the key
    assert PatchCore(toy_backbone(), **toy_settings(progress=True)).fit(train).fit_info.get("from_cache")


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
    with pytest.warns(RuntimeWarning, match="damaged or incomplete.*fitted again"):
        model = PatchCore(toy_backbone(), **toy_settings()).fit(train)
    assert "from_cache" not in model.fit_info
    assert PatchCore(toy_backbone(), **toy_settings()).fit(train).fit_info.get("from_cache")
