"""Train VAEs in worker processes, one TensorFlow thread each, several at a
time.

The article's VAE is tiny (about 60 MFLOP per step of 128 crops), so a training
step costs the framework's per-operation overhead, not arithmetic, and
TensorFlow's second thread buys nothing: one thread trains an epoch as fast as
two or faster (measured on the book's 2-core build machine: 5.3 s per epoch of
100,000 crops with one thread, 5.5 to 10.3 s with two, varying from run to run;
``benchmarks/vae_bench.py`` measures both). The seeds, pairs and settings of an
ablation are independent, so :func:`train_many` trains them side by side, one
worker process per core, each with one thread: about 1.7 times the models per
hour on that machine.

One thread also makes a training's numbers independent of the machine's core
count (TensorFlow splits its reductions by thread). A worker hands its model
back through :mod:`helpers.vae.cache` files (Keras ``.weights.h5`` and JSON, no
pickle): the build's cache folder when ``VAD_MODEL_CACHE`` is set, else a
temporary folder removed after loading.

``VAD_TRAIN_WORKERS`` sets how many workers run at once (default: the usable
CPU cores); ``0`` trains in the calling process with its own threads instead
(its models then round differently and are cached under a different key).
"""

from __future__ import annotations

import atexit
import os
import queue as queue_mod
import shutil
import signal
import tempfile
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

import numpy as np

from . import cache

ENV_WORKERS = "VAD_TRAIN_WORKERS"
# the cache key's "where" for models trained in a one-thread worker
WORKER = "worker"
# ... and for models trained in the calling process (VAD_TRAIN_WORKERS=0)
IN_PROCESS = "in-process"
_SETTINGS = ("epochs", "batch_size", "seed", "probe", "dequantise")
_ONE_THREAD = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}

_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_queue = None  # epochs finished in the workers, for the progress bar
_worker_queue = None  # the same queue, as a worker sees it


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_count(n_jobs: int, workers: int | None = None) -> int:
    """Workers for ``n_jobs`` trainings: ``workers``, else
    ``VAD_TRAIN_WORKERS``, else the usable cores; never more than the jobs.
    ``0`` means: train in this process."""
    if workers is None:
        value = os.environ.get(ENV_WORKERS, "").strip()
        if value:
            try:
                workers = int(value)
            except ValueError:
                workers = -1
            if workers < 0:
                raise ValueError(
                    f"{ENV_WORKERS}={value!r} is not a number of worker processes: set it to 0 "
                    "(train in this process) or a positive integer, or unset it (one per core)"
                )
        else:
            workers = usable_cores()
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(
            f"workers must be 0 (train in this process) or a positive integer, got {workers!r}"
        )
    return min(workers, n_jobs)


def _split(job: dict) -> tuple[np.ndarray, dict, dict]:
    """A job dict -> (checked crops, the training settings, the model's keyword
    arguments)."""
    from .model import check_crops

    job = dict(job)
    if "crops" not in job:
        raise ValueError(
            "each training job needs its 'crops' (an (N, 8, 8, 1) array in [0, 1])"
        )
    crops = check_crops(job.pop("crops"))
    train = {"epochs": 10, "batch_size": 128, "seed": 0, "probe": 2048}
    train.update({k: job.pop(k) for k in _SETTINGS if k in job})
    dequantise = train.pop("dequantise", False)
    if not isinstance(dequantise, (bool, np.bool_)):
        raise ValueError(
            f"dequantise must be True or False, got {dequantise!r}"
        )
    if dequantise:
        # named only in a dequantised job's settings (and so in its cache key)
        train["dequantise"] = True
    for name in ("epochs", "batch_size"):
        if not isinstance(train[name], (int, np.integer)) or train[name] < 1:
            raise ValueError(
                f"{name} must be a positive integer, got {train[name]!r}"
            )
    return crops, train, job


def train_many(
    jobs: Sequence[dict],
    workers: int | None = None,
    progress: bool = True,
    desc: str = "training VAEs",
) -> list:
    """Train one VAE per job and return their
    :class:`~helpers.vae.model.TrainResult`, in job order.

    A job is a dict of :func:`~helpers.vae.model.train_vae`'s arguments:
    ``crops`` (required), ``epochs``, ``batch_size``, ``seed``, ``probe`` and
    the model's settings (``terms``, ``latent_dim``, ...). Each result equals
    the same job trained alone: the workers are independent and deterministic,
    and identical jobs are trained once. ``progress`` shows one bar over all
    epochs.
    """
    from .model import TrainResult, build_vae

    jobs = list(jobs)
    if not jobs:
        return []
    parts = [_split(job) for job in jobs]
    n_workers = worker_count(len(jobs), workers)
    where = WORKER if n_workers > 0 else IN_PROCESS
    results: list = [None] * len(jobs)
    # key -> the jobs it answers (duplicates train once)
    pending: dict[str, list[int]] = {}
    keys = []
    for i, (crops, train, model_kwargs) in enumerate(parts):
        model = build_vae(
            seed=train["seed"], input_shape=crops.shape[1:], **model_kwargs
        )
        settings = {**train, **model_kwargs}
        key = cache.training_key(crops, settings, where)
        keys.append(key)
        cached = cache.load(key, model)
        if cached is not None:
            results[i] = TrainResult(model, cached, from_cache=True)
        else:
            results[i] = TrainResult(model)
            pending.setdefault(key, []).append(i)
    if not pending:
        return results

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(parts[ids[0]][1]["epochs"] for ids in pending.values()),
            desc=desc,
            unit="epoch",
        )
    try:
        if n_workers == 0:
            _train_here(parts, results, pending, bar)
        else:
            _train_in_workers(parts, results, keys, pending, n_workers, bar)
    finally:
        if bar is not None:
            bar.close()
    return results


def _train_here(parts, results, pending, bar) -> None:
    """Train the pending jobs one after the other in this process
    (``VAD_TRAIN_WORKERS=0``)."""
    for key, ids in pending.items():
        crops, train, model_kwargs = parts[ids[0]]
        model = results[ids[0]].model
        tick = (lambda _: bar.update(1)) if bar is not None else None
        history = _fit(model, crops, train, tick)
        cache.store(key, model, history, {**train, **model_kwargs})
        _share(results, ids, history)


def _fit(model, crops: np.ndarray, train: dict, on_epoch) -> dict:
    """One job's training loop (:func:`~helpers.vae.model.fit_vae`) with its
    settings, here or in a worker."""
    from .model import fit_vae

    return fit_vae(
        model,
        crops,
        train["epochs"],
        train["batch_size"],
        train["seed"],
        train["probe"],
        on_epoch=on_epoch,
        dequantise=train.get("dequantise", False),
    )


def _share(results, ids, history) -> None:
    """Give every job of one key the trained weights and history (duplicates
    get copies)."""
    first = results[ids[0]]
    first.history = history
    for j in ids[1:]:
        results[j].model.set_weights(first.model.get_weights())
        results[j].history = {k: list(v) for k, v in history.items()}


def _train_in_workers(parts, results, keys, pending, n_workers, bar) -> None:
    """Send the pending jobs to the pool and load each model as its worker
    finishes it."""
    folder = cache.cache_dir()
    scratch = None
    if folder is None:
        scratch = Path(tempfile.mkdtemp(prefix="vae-train-"))
        folder = scratch
    folder.mkdir(parents=True, exist_ok=True)
    pool = _get_pool(n_workers)
    try:
        futures = {}
        # longest first, so that the last worker to
        # finish is not left with a long job (LPT order)
        order = sorted(
            pending,
            key=lambda k: (
                -parts[pending[k][0]][1]["epochs"]
                * len(parts[pending[k][0]][0])
            ),
        )
        for key in order:
            ids = pending[key]
            crops, train, model_kwargs = parts[ids[0]]
            token = uuid.uuid4().hex
            futures[
                pool.submit(
                    _worker_train,
                    crops,
                    train,
                    model_kwargs,
                    key,
                    str(folder),
                    token,
                )
            ] = key
        remaining = set(futures)
        while remaining:
            done, remaining = wait(
                remaining, timeout=0.5, return_when=FIRST_COMPLETED
            )
            _drain(bar)
            for future in done:
                key = futures[future]
                try:
                    future.result()
                except BrokenProcessPool as err:
                    _reset_pool()
                    raise RuntimeError(
                        f"a VAE training worker process died ({err}); if this machine is short "
                        f"of memory, set {ENV_WORKERS}=1 (one worker) or 0 (train in this "
                        "process)"
                    ) from None
                ids = pending[key]
                history = cache.load(key, results[ids[0]].model, folder=folder)
                if history is None:
                    raise RuntimeError(
                        f"the training worker finished but its model {key} is missing from "
                        f"{folder}"
                    )
                _share(results, ids, history)
        _drain(bar)
    except BaseException as err:
        for future in list(futures):
            future.cancel()
        if not isinstance(err, Exception):
            # an interrupt (the workers ignore it, see _init_worker) or an
            # exit: stop the one still training now rather than at the end
            # of its model
            _stop_pool(folder)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _drain(bar) -> None:
    """Move the workers' finished-epoch messages onto the progress bar."""
    while _queue is not None:
        try:
            _queue.get_nowait()
        except queue_mod.Empty:
            return
        except (OSError, EOFError, ValueError):
            return
        if bar is not None:
            bar.update(1)


def _get_pool(n_workers: int) -> ProcessPoolExecutor:
    """The process's pool of training workers, started on first use and kept
    for later calls."""
    global _pool, _pool_size, _queue
    if (
        _pool is None
        or _pool_size < n_workers
        or getattr(_pool, "_broken", False)
    ):
        _reset_pool()
        import multiprocessing

        # a fresh interpreter: no forked TensorFlow state
        ctx = multiprocessing.get_context("spawn")
        _queue = ctx.Queue()
        _pool = ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(_queue,),
        )
        _pool_size = n_workers
    return _pool


def _stop_pool(folder: Path | None = None) -> None:
    """Terminate the workers (an interrupted training) and forget the pool;
    the next call starts a fresh one. A model being stored is either complete
    in the cache or absent (:func:`helpers.vae.cache.store` renames
    atomically); the terminated workers' temporary files in ``folder`` are
    removed."""
    if _pool is not None:
        # ProcessPoolExecutor has no public way to stop a running job
        processes = list(getattr(_pool, "_processes", {}).values())
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
            if folder is not None:
                cache.remove_temporary(folder, process.pid)
    _reset_pool()


def _reset_pool() -> None:
    global _pool, _pool_size, _queue
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
    _pool, _pool_size, _queue = None, 0, None


atexit.register(_reset_pool)


def _init_worker(progress_queue) -> None:
    """Runs first in each worker: one thread for TensorFlow (and BLAS, OpenMP,
    torch), before any import."""
    global _worker_queue
    # Ctrl-C or a notebook's interrupt reaches the whole process group: the
    # parent stops the workers (_stop_pool), so that each idle one does not
    # print its own KeyboardInterrupt traceback (a worker still starting, not
    # yet here, can print one)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(_ONE_THREAD)
    _worker_queue = progress_queue
    # TensorFlow's start-up notices go to file descriptor 2, which a notebook
    # kernel shows in the cell: silence it while TensorFlow loads (errors still
    # come back through the futures)
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)


def _worker_train(
    crops: np.ndarray,
    train: dict,
    model_kwargs: dict,
    key: str,
    folder: str,
    token: str,
) -> str:
    """In a worker: build, train and store one model under ``key`` in
    ``folder``."""
    from .model import build_vae

    model = build_vae(
        seed=train["seed"], input_shape=crops.shape[1:], **model_kwargs
    )

    def tick(_epoch: int) -> None:
        if _worker_queue is not None:
            _worker_queue.put(token)

    history = _fit(model, crops, train, tick)
    cache.store(
        key, model, history, {**train, **model_kwargs}, folder=Path(folder)
    )
    return key
