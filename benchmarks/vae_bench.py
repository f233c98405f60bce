"""Benchmark for Part II: the batched sliding-window scorer vs the article's per-window loop, and
the VAE's training time per epoch, measured in one run on this machine.

    VAD_ASSETS=../shared/assets python benchmarks/vae_bench.py            # the article's settings
    VAD_ASSETS=../shared/assets python benchmarks/vae_bench.py --quick    # a fast smoke run

Both scorers use the same trained model and the same two test images (a seeded "1" and "9"); the loop
is ``helpers.vae.article.evaluate_img`` (the article's code, one ``evaluate``/``predict`` per window),
run for the "old" (full loss) and the "new" (M only) score as in the article.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=100_000, help="training crops (article: 100,000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to time (the first includes tracing)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the batched scorer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10,000 crops, 2 epochs")
    args = parser.parse_args()
    if args.quick:
        args.crops, args.epochs = 10_000, 2

    import keras

    from helpers.data import load_mnist
    from helpers.vae import article, crops, model, scoring

    x_all, y_all = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_crops = crops.sample_crops(crops.to_unit(x_all[y_all == 1]), args.crops, seed=args.seed)
    result = model.train_vae(x_crops, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             reduction="article")
    vae = result.model
    secs = result.history["seconds"]

    rng = np.random.default_rng(args.seed)
    x_normal = crops.to_unit(x_test[[rng.choice(np.flatnonzero(y_test == 1))]])[0]
    x_anomaly = crops.to_unit(x_test[[rng.choice(np.flatnonzero(y_test == 9))]])[0]
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
    batched_windows = 2 * 2 * 11 * 11  # scores computed for 2 images x 2 score names

    sub = scoring.WindowScores({k: v[:, :10, :10] for k, v in ws.scores.items()}, 8, 2, (26, 26))
    same = all(np.allclose(sub.heatmap(s)[k], ref[k][:26, :26, 0], rtol=1e-4, atol=1e-3)
               for s, ref in (("full", (old_n, old_a)), ("M", (new_n, new_a))) for k in range(2))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
          f"keras {keras.__version__} on {keras.backend.backend()}")
    print(f"\nVAE training ({args.crops:,} crops of 8x8, batch {args.batch_size}):")
    print(f"  epoch 1 (includes tracing): {secs[0]:6.1f} s")
    if len(secs) > 1:
        print(f"  later epochs, mean of {len(secs) - 1}: {np.mean(secs[1:]):6.1f} s per epoch")
    print("\nheat maps of one test '1' and one test '9', 'old' (full loss) and 'new' (M only):")
    print(f"  {'':34s}{'windows scored':>15s}{'seconds':>10s}{'windows/s':>11s}")
    print(f"  {'article loop (one call per window)':34s}{loop_windows:>15d}{t_loop:>10.2f}"
          f"{loop_windows / t_loop:>11.1f}")
    print(f"  {'batched scorer (median of %d)' % args.repeats:34s}{batched_windows:>15d}{t_batched:>10.3f}"
          f"{batched_windows / t_batched:>11.1f}")
    print(f"  speed-up (wall time, same images and scores): {t_loop / t_batched:.0f}x; "
          f"per window: {(batched_windows / t_batched) / (loop_windows / t_loop):.0f}x")
    print(f"  batched == loop on the article's windows: {same}; the loop skips rows/cols 26-27, "
          f"the batched scorer covers all {11 * 11} windows per image")


if __name__ == "__main__":
    main()
