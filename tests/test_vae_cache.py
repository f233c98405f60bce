"""The build's trained-model cache: the same run is reused exactly, anything
else retrains."""

import numpy as np

from helpers.vae.testing import toy_crops
from helpers.vae import cache, crops, model, scoring


def _crops(seed=0, n=256):
    return toy_crops(seed, n)


def test_no_cache_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    res = model.train_vae(_crops(), epochs=1, batch_size=64, seed=0)
    assert not res.from_cache and cache.cache_dir() is None
    assert not list(tmp_path.iterdir())


def test_same_run_is_reused_exactly_and_other_runs_retrain(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    x = _crops()
    first = model.train_vae(x, epochs=1, batch_size=64, seed=0, terms="D+A+M")
    assert not first.from_cache
    stored = sorted(p.name for p in tmp_path.iterdir())
    assert len(stored) == 2 and not any(
        n.startswith("tmp-") for n in stored
    ), stored
    again = model.train_vae(x, epochs=1, batch_size=64, seed=0, terms="D+A+M")
    assert again.from_cache and again.history == first.history
    probe = crops.sample_crops(x, 64, seed=5)
    a = scoring.model_outputs(first.model, probe)
    b = scoring.model_outputs(again.model, probe)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # a different seed, setting or data is a different run
    assert not model.train_vae(x, epochs=1, batch_size=64, seed=1).from_cache
    assert not model.train_vae(
        x, epochs=1, batch_size=64, seed=0, terms="M"
    ).from_cache
    assert not model.train_vae(
        x[:-1], epochs=1, batch_size=64, seed=0
    ).from_cache


def test_half_written_entry_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    x = _crops(n=128)
    model.train_vae(x, epochs=1, batch_size=64, seed=0)
    # weights without their history: retrain
    next(tmp_path.glob("*.json")).unlink()
    assert not model.train_vae(x, epochs=1, batch_size=64, seed=0).from_cache
