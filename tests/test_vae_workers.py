"""Training in worker processes: side by side equals one at a time, duplicates
train once, errors are clear."""

import numpy as np
import pytest

from helpers.vae.testing import toy_crops
from helpers.vae import cache, model, scoring, workers


def _crops(seed=0, n=192):
    return toy_crops(seed, n)


def _weights(result):
    return [np.asarray(w) for w in result.model.get_weights()]


def _same(a, b):
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for u, v in zip(wa, wb):
        np.testing.assert_array_equal(u, v)
    assert a.history["loss"] == b.history["loss"]


def test_side_by_side_equals_one_at_a_time(monkeypatch):
    monkeypatch.delenv(cache.ENV, raising=False)
    jobs = [
        dict(crops=_crops(0), epochs=2, batch_size=32, seed=0),
        dict(crops=_crops(1), epochs=1, batch_size=32, seed=1, terms="M"),
    ]
    together = workers.train_many(jobs, workers=2, progress=False)
    alone = [
        workers.train_many([job], workers=1, progress=False)[0] for job in jobs
    ]
    for a, b in zip(together, alone):
        _same(a, b)
    # and train_vae is the same single job
    _same(
        model.train_vae(_crops(0), epochs=2, batch_size=32, seed=0),
        together[0],
    )
    # the two jobs really differ (seed, data, loss)
    assert together[0].history["loss"] != together[1].history["loss"]
    assert (
        len(together[0].history["loss"]) == 2
        and len(together[1].history["loss"]) == 1
    )


def test_duplicates_train_once_and_the_cache_holds_one_entry(
    monkeypatch, tmp_path
):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    job = dict(crops=_crops(2), epochs=1, batch_size=32, seed=3)
    a, b = workers.train_many([job, dict(job)], workers=2, progress=False)
    _same(a, b)
    assert a.model is not b.model
    assert len(list(tmp_path.glob("*.weights.h5"))) == 1
    again = workers.train_many([job], progress=False)[0]
    assert again.from_cache
    _same(again, a)


def test_in_process_training_is_keyed_apart(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    job = dict(crops=_crops(3, n=96), epochs=1, batch_size=32, seed=0)
    here = workers.train_many([job], workers=0, progress=False)[0]
    assert not here.from_cache and len(here.history["loss"]) == 1
    out = scoring.model_outputs(here.model, _crops(4, n=16))
    assert all(np.isfinite(o).all() for o in out)
    # the worker's run rounds with one thread:
    # it is not served the in-process model
    assert not workers.train_many([job], workers=1, progress=False)[
        0
    ].from_cache
    assert len(list(tmp_path.glob("*.weights.h5"))) == 2


def test_worker_count_and_bad_settings(monkeypatch):
    monkeypatch.delenv(workers.ENV_WORKERS, raising=False)
    assert workers.worker_count(1) == 1
    assert workers.worker_count(50) == min(50, workers.usable_cores())
    monkeypatch.setenv(workers.ENV_WORKERS, "0")
    assert workers.worker_count(5) == 0
    monkeypatch.setenv(workers.ENV_WORKERS, "two")
    with pytest.raises(
        ValueError, match="VAD_TRAIN_WORKERS='two' is not a number"
    ):
        workers.worker_count(3)
    monkeypatch.delenv(workers.ENV_WORKERS)
    with pytest.raises(ValueError, match="workers must be 0"):
        workers.worker_count(3, workers=-2)
    with pytest.raises(ValueError, match=r"crops of shape \(N, h, w, 1\)"):
        workers.train_many(
            [dict(crops=np.zeros((4, 8, 8)), epochs=1)], progress=False
        )
    with pytest.raises(ValueError, match="needs its 'crops'"):
        workers.train_many([dict(epochs=1)], progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        workers.train_many([dict(crops=_crops(), epochs=0)], progress=False)
    with pytest.raises(ValueError, match="dequantise must be True or False"):
        workers.train_many(
            [dict(crops=_crops(), epochs=1, dequantise="yes")], progress=False
        )
    with pytest.raises(ValueError, match="unknown loss term"):
        workers.train_many(
            [dict(crops=_crops(), epochs=1, terms="X")], progress=False
        )
    assert workers.train_many([], progress=False) == []


_INTERRUPTED = """
from helpers.vae.testing import toy_crops
from helpers.vae import workers
# a first call leaves two workers in the pool; the second keeps one busy
warm = [dict(crops=toy_crops(s, 64), epochs=1, seed=s) for s in range(2)]
workers.train_many(warm, workers=2, progress=False)
job = dict(crops=toy_crops(0, 4096), epochs=500, batch_size=32, seed=0)
print("training", flush=True)
workers.train_many([job], workers=1, progress=False)
print("finished", flush=True)
"""


def test_an_interrupt_stops_the_workers_with_one_traceback(tmp_path):
    """Ctrl-C (or a notebook's interrupt) reaches the whole process group:
    the trainings stop at once, and only the caller reports it."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != cache.ENV}
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "training"
        time.sleep(3)  # one worker trains, the other waits
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert "finished" not in out
        assert err.count("Traceback") == 1, err
        assert err.rstrip().endswith("KeyboardInterrupt"), err
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # no worker is left running
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("training workers outlived the interrupt")
    finally:  # whatever failed, leave no process behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
