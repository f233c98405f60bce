"""Benchmark for Part II: the VAE's training time per epoch (in this process as
before, in one one-thread worker, and in one worker per core side by side)
against an arithmetic floor, and the batched sliding-window scorer vs the
article's per-window loop, measured in one run on this machine.

The floor is the epoch's arithmetic (counted layer by layer, training = 3x the
forward pass) at the rate this machine multiplies large float32 matrices with
all its cores: what the epoch would cost if nothing but arithmetic took time.

    VAD_ASSETS=../shared/assets python benchmarks/vae_bench.py            # the article's settings
    VAD_ASSETS=../shared/assets python benchmarks/vae_bench.py --quick    # a fast smoke run

Both scorers use the same trained model and the same two test images (a seeded
"1" and "9"); the loop is ``helpers.vae.article.evaluate_img`` (the article's
code, one ``evaluate``/``predict`` per window), run for the "old" (full loss)
and the "new" (M only) score as in the article.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def forward_flops(vae) -> float:
    """Multiply-adds x 2 of one 8x8 sample's forward pass through the dense and
    (transposed) conv layers."""
    from keras import layers

    total = 0
    for part in (vae.encoder, vae.decoder):
        for layer in part.layers:
            if isinstance(layer, layers.Dense):
                total += layer.kernel.shape[0] * layer.kernel.shape[1]
            elif isinstance(layer, layers.Conv2DTranspose):
                # every input pixel meets the whole kernel
                kh, kw, c_out, c_in = layer.kernel.shape
                h, w = layer.input.shape[1:3]
                total += h * w * kh * kw * c_in * c_out
            elif isinstance(layer, layers.Conv2D):
                # every output pixel meets the whole kernel
                kh, kw, c_in, c_out = layer.kernel.shape
                h, w = layer.output.shape[1:3]
                total += h * w * kh * kw * c_in * c_out
    return 2.0 * total


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate (FLOP/s, best of
    ``repeats``), all cores."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--crops",
        type=int,
        default=100_000,
        help="training crops (article: 100,000)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs to time (the first includes tracing)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="trainings side by side (default: one per core)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed repeats of the batched scorer",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="10,000 crops, 2 epochs"
    )
    args = parser.parse_args()
    if args.quick:
        args.crops, args.epochs = 10_000, 2

    import keras

    from helpers.data import load_mnist
    from helpers.vae import article, crops, model, scoring, workers

    x_all, y_all = load_mnist("train")
    x_test, y_test = load_mnist("test")
    ones = crops.to_unit(x_all[y_all == 1])
    x_crops = crops.sample_crops(ones, args.crops, seed=args.seed)
    os.environ.pop("VAD_MODEL_CACHE", None)  # time real trainings
    job = dict(
        crops=x_crops,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        reduction="article",
    )
    # this process, its threads (as before)
    serial = workers.train_many([job], workers=0, progress=False)[0]
    # one worker, one thread (train_vae)
    result = workers.train_many([job], workers=1, progress=False)[0]
    n_jobs = args.jobs or workers.usable_cores()
    side = [
        dict(
            job,
            crops=crops.sample_crops(ones, args.crops, seed=args.seed + j),
            seed=args.seed + j,
        )
        for j in range(n_jobs)
    ]
    warm = [
        dict(
            crops=x_crops[:256],
            epochs=1,
            batch_size=args.batch_size,
            seed=100 + j,
        )
        for j in range(n_jobs)
    ]
    # start every worker first
    workers.train_many(warm, workers=n_jobs, progress=False)
    t0 = time.perf_counter()
    parallel = workers.train_many(side, workers=n_jobs, progress=False)
    t_parallel = time.perf_counter() - t0
    vae = result.model
    secs = result.history["seconds"]

    rng = np.random.default_rng(args.seed)
    x_normal = crops.to_unit(
        x_test[[rng.choice(np.flatnonzero(y_test == 1))]]
    )[0]
    x_anomaly = crops.to_unit(
        x_test[[rng.choice(np.flatnonzero(y_test == 9))]]
    )[0]
    pair = np.stack([x_normal, x_anomaly])

    t0 = time.perf_counter()
    old_n, old_a = article.evaluate_img(vae, x_normal, x_anomaly, "old_")
    new_n, new_a = article.evaluate_img(vae, x_normal, x_anomaly, "new_")
    t_loop = time.perf_counter() - t0
    loop_windows = 2 * 2 * 10 * 10

    scoring.score_windows(vae, pair, ("full", "M"))  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ws = scoring.score_windows(vae, pair, ("full", "M"))
        times.append(time.perf_counter() - t0)
    t_batched = statistics.median(times)
    # scores computed for 2 images x 2 score names
    batched_windows = 2 * 2 * 11 * 11

    sub = scoring.WindowScores(
        {k: v[:, :10, :10] for k, v in ws.scores.items()}, 8, 2, (26, 26)
    )
    same = all(
        np.allclose(
            sub.heatmap(s)[k], ref[k][:26, :26, 0], rtol=1e-4, atol=1e-3
        )
        for s, ref in (("full", (old_n, old_a)), ("M", (new_n, new_a)))
        for k in range(2)
    )

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
        f"keras {keras.__version__} on {keras.backend.backend()}"
    )
    # one epoch: forward + backward (about 2x forward)
    flops = 3 * forward_flops(vae) * args.crops
    rate = gemm_rate()
    floor = flops / rate
    later = slice(1, None) if args.epochs > 1 else slice(None)
    s_serial = float(np.mean(serial.history["seconds"][later]))
    s_worker = float(np.mean(secs[later]))
    s_side = (
        float(
            np.mean([np.mean(r.history["seconds"][later]) for r in parallel])
        )
        / n_jobs
    )
    s_wall = t_parallel / (n_jobs * args.epochs)
    print(
        f"\nVAE training ({args.crops:,} crops of 8x8, batch {args.batch_size}), seconds per model-epoch"
        f" (epochs after the first, which traces):"
    )
    print(
        f"  arithmetic per epoch: {flops / 1e9:.1f} GFLOP; float32 GEMM here: {rate / 1e9:.0f} GFLOP/s "
        f"-> floor {floor:.2f} s"
    )
    print(f"  {'':46s}{'s/epoch':>9s}{'x floor':>9s}{'speed-up':>10s}")
    for label, sec in (
        (f"in this process, default threads (before)", s_serial),
        ("one worker, one thread (train_vae now)", s_worker),
        (f"{n_jobs} workers side by side (per model)", s_side),
        (f"  the same, wall time incl. start and hand-back", s_wall),
    ):
        print(
            f"  {label:46s}{sec:>9.2f}{sec / floor:>9.1f}{s_serial / sec:>9.1f}x"
        )
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            result.model.get_weights(), parallel[0].model.get_weights()
        )
    )
    print(
        f"  the side-by-side seed {args.seed} model equals the one trained alone, bit for bit: {same}"
    )
    print(
        "\nheat maps of one test '1' and one test '9', 'old' (full loss) and 'new' (M only):"
    )
    print(
        f"  {'':34s}{'windows scored':>15s}{'seconds':>10s}{'windows/s':>11s}"
    )
    print(
        f"  {'article loop (one call per window)':34s}{loop_windows:>15d}{t_loop:>10.2f}"
        f"{loop_windows / t_loop:>11.1f}"
    )
    print(
        f"  {'batched scorer (median of %d)' % args.repeats:34s}{batched_windows:>15d}{t_batched:>10.3f}"
        f"{batched_windows / t_batched:>11.1f}"
    )
    print(
        f"  speed-up (wall time, same images and scores): {t_loop / t_batched:.0f}x; "
        f"per window: {(batched_windows / t_batched) / (loop_windows / t_loop):.0f}x"
    )
    print(
        f"  batched == loop on the article's windows: {same}; the loop skips rows/cols 26-27, "
        f"the batched scorer covers all {11 * 11} windows per image"
    )


if __name__ == "__main__":
    main()
