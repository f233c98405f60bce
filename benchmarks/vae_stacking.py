"""Benchmark for issue #17's VAE lever: do K models advanced in one training
step cost about what one does?

The article's VAE spends about 7 ms per training step of 128 crops on one
thread, for about 60 MFLOP of arithmetic. If that time were the framework's
per-operation overhead, K independent models written as one network with
batched weights (every layer one batched matmul over a leading model axis, so
the step has the same operations for any K) would cost about what one model
does. This script measures it, one thread, side by side in one run:

- the book's model (:func:`helpers.vae.model.build_vae`, Keras ``fit``);
- the same network for K models at once, in plain TensorFlow: the stride-2
  (transposed) convolutions as space-to-depth and a batched matmul, batch
  norm per model and channel, and the two 4 x 4 output heads either as
  one transposed convolution per model (``tf.nn.conv2d``, K operations) or as
  one batched matmul against the kernel unrolled over the 8 x 8 window (a
  Toeplitz matrix built by one gather); Adam written out per variable.

    python benchmarks/vae_stacking.py            # K = 1, 2, 4, 8
    python benchmarks/vae_stacking.py --quick    # fewer steps

The step's numbers are not the book's (other kernels, other summation orders):
this measures cost only.
"""

from __future__ import annotations

import argparse
import os
import time

for _name in (
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "OMP_NUM_THREADS",
):
    os.environ[_name] = "1"  # as a training worker runs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH, NC, LATENT = 128, 16, 2


def head_index(nc: int = NC) -> np.ndarray:
    """(8*8*nc, 8*8) indices into a 4 x 4 x nc kernel (flattened, plus one
    zero at index 16*nc) that unroll a stride-1 'same' transposed
    convolution over an 8 x 8 window into one matrix."""
    idx = np.full((8, 8, nc, 8, 8), 16 * nc, np.int32)
    for i in range(8):
        for j in range(8):
            for p in range(8):
                for q in range(8):
                    a, b = p - i + 1, q - j + 1
                    if 0 <= a < 4 and 0 <= b < 4:
                        idx[i, j, :, p, q] = (a * 4 + b) * nc + np.arange(nc)
    return idx.reshape(64 * nc, 64)


class Stacked:
    """K copies of the article's VAE as one network with batched weights."""

    def __init__(self, k: int, head: str, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.k, self.head = k, head

        def w(*shape):
            v = rng.normal(0, 0.1, shape).astype(np.float32)
            return tf.Variable(v)

        self.w = dict(
            c1=w(k, 4, NC),
            c2=w(k, 4 * NC, 2 * NC),
            zm=w(k, 8 * NC, LATENT),
            zv=w(k, 8 * NC, LATENT),
            d0=w(k, LATENT, 4),
            t1=w(k, 1, 8 * NC),
            t2=w(k, 2 * NC, 4 * NC),
            head=w(4, 4, k * NC, 2),
        )
        widths = dict(b1=NC, b2=2 * NC, b3=4, b4=2 * NC, b5=NC, b6=1, b7=1)
        self.bn = {n: (w(k, 1, c), w(k, 1, c)) for n, c in widths.items()}
        self.variables = list(self.w.values()) + [
            v for pair in self.bn.values() for v in pair
        ]
        self.adam = [
            (tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v)))
            for v in self.variables
        ]
        self.idx = tf.constant(head_index())

    def _bn(self, x, name):
        mean, var = tf.nn.moments(x, axes=[1], keepdims=True)
        gamma, beta = self.bn[name]
        return (x - mean) * tf.math.rsqrt(var + 1e-3) * gamma + beta

    def _s2d(self, x):  # (K, B, H, W, C) -> (K, B*H*W/4, 4C)
        k, b, h, w, c = x.shape
        x = tf.reshape(x, (k, b, h // 2, 2, w // 2, 2, c))
        x = tf.transpose(x, (0, 1, 2, 4, 3, 5, 6))
        return tf.reshape(x, (k, -1, 4 * c))

    def _d2s(self, x, h, w, c):  # (K, B*h*w, 4c) -> (K, B, 2h, 2w, c)
        x = tf.reshape(x, (self.k, -1, h, w, 2, 2, c))
        x = tf.transpose(x, (0, 1, 2, 4, 3, 5, 6))
        return tf.reshape(x, (self.k, -1, 2 * h, 2 * w, c))

    def _heads(self, d):  # (K, B, 8, 8, NC) -> (K, B*64, 2)
        k, kernel = self.k, self.w["head"]
        if self.head == "conv":
            out = []
            for i in range(k):
                x = tf.pad(d[i], ((0, 0), (2, 1), (2, 1), (0, 0)))
                part = kernel[:, :, i * NC : (i + 1) * NC, :]
                out.append(tf.nn.conv2d(x, part, 1, "VALID"))
            return tf.reshape(tf.stack(out), (k, -1, 2))
        flat = tf.reshape(tf.transpose(kernel, (2, 0, 1, 3)), (k, NC, 16, 2))
        flat = tf.reshape(tf.transpose(flat, (0, 2, 1, 3)), (k, 16 * NC, 2))
        flat = tf.concat([flat, tf.zeros((k, 1, 2))], axis=1)
        big = tf.gather(flat, self.idx, axis=1)  # (K, 64*NC, 64, 2)
        big = tf.reshape(tf.transpose(big, (0, 1, 3, 2)), (k, 64 * NC, 128))
        out = tf.matmul(tf.reshape(d, (k, BATCH, 64 * NC)), big)
        out = tf.transpose(tf.reshape(out, (k, BATCH, 2, 64)), (0, 1, 3, 2))
        return tf.reshape(out, (k, -1, 2))

    def loss(self, x, eps):
        k, w = self.k, self.w
        h = tf.nn.relu(self._bn(tf.matmul(self._s2d(x), w["c1"]), "b1"))
        h = tf.reshape(h, (k, BATCH, 4, 4, NC))
        h = tf.nn.relu(self._bn(tf.matmul(self._s2d(h), w["c2"]), "b2"))
        h = tf.reshape(h, (k, BATCH, 8 * NC))
        zm, zv = tf.matmul(h, w["zm"]), tf.matmul(h, w["zv"])
        z = zm + tf.exp(0.5 * zv) * eps
        d = tf.nn.relu(self._bn(tf.matmul(z, w["d0"]), "b3"))
        d = tf.matmul(tf.reshape(d, (k, BATCH * 4, 1)), w["t1"])
        d = tf.nn.relu(self._bn(tf.reshape(d, (k, -1, 2 * NC)), "b4"))
        d = self._d2s(tf.reshape(d, (k, BATCH * 4, 8 * NC)), 2, 2, 2 * NC)
        d = tf.matmul(tf.reshape(d, (k, -1, 2 * NC)), w["t2"])
        d = tf.nn.relu(self._bn(tf.reshape(d, (k, -1, NC)), "b5"))
        d = self._d2s(tf.reshape(d, (k, BATCH * 16, 4 * NC)), 4, 4, NC)
        o = self._heads(d)
        mu = tf.sigmoid(self._bn(o[..., :1], "b6"))
        s2 = tf.sigmoid(self._bn(o[..., 1:], "b7"))
        xf = tf.reshape(x, (k, -1, 1))
        a_m = 0.5 * tf.math.log(s2) + 0.5 * tf.square(xf - mu) / s2
        kl = -0.5 * (1 + zv - zm**2 - tf.exp(zv))
        return (tf.reduce_sum(a_m) + tf.reduce_sum(kl)) / BATCH

    def step_function(self):
        lr, b1, b2 = 1e-3, 0.9, 0.999

        @tf.function
        def step(x, eps):
            with tf.GradientTape() as tape:
                loss = self.loss(x, eps)
            grads = tape.gradient(loss, self.variables)
            for v, g, (m, s) in zip(self.variables, grads, self.adam):
                m.assign(b1 * m + (1 - b1) * g)
                s.assign(b2 * s + (1 - b2) * g * g)
                v.assign_sub(lr * m / (tf.sqrt(s) + 1e-7))
            return loss

        return step


def time_stacked(k: int, head: str, steps: int) -> float:
    """Seconds per training step of K stacked models."""
    rng = np.random.default_rng(k)
    net = Stacked(k, head)
    step = net.step_function()
    x = tf.constant(rng.random((k, BATCH, 8, 8, 1), dtype=np.float32))
    eps = tf.constant(rng.normal(size=(k, BATCH, LATENT)).astype(np.float32))
    for _ in range(5):  # trace and warm up
        step(x, eps)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, eps)
    return (time.perf_counter() - t0) / steps


def time_book_model(steps: int) -> float:
    """Seconds per step of the book's Keras VAE, ``fit`` over ``steps``
    batches (after one warm-up fit)."""
    from helpers.vae.model import build_vae

    rng = np.random.default_rng(0)
    crops = (rng.random((steps * BATCH, 8, 8, 1)) < 0.3).astype(np.float32)
    vae = build_vae(seed=0)
    vae.fit(crops[: 10 * BATCH], batch_size=BATCH, verbose=0)
    t0 = time.perf_counter()
    vae.fit(crops, batch_size=BATCH, shuffle=False, verbose=0)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--quick", action="store_true", help="40 steps")
    args = parser.parse_args()
    if args.quick:
        args.steps = 40
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    book = time_book_model(args.steps)
    print(f"one thread, batches of {BATCH} 8x8 crops, {args.steps} steps")
    print(f"book's model (Keras fit): {book * 1e3:.2f} ms per step\n")
    print("| K models | heads | ms per step | ms per model-step | vs K=1 |")
    print("|---:|---|---:|---:|---:|")
    best = (np.inf, 0, "")
    for head in ("conv", "matmul"):
        one = None
        for k in args.ks:
            t = time_stacked(k, head, args.steps)
            one = one or t
            best = min(best, (t / k, k, head))
            print(
                f"| {k} | {head} | {t * 1e3:.2f} | {t / k * 1e3:.2f} "
                f"| {t / k / one:.2f} |"
            )
    per_model, k, head = best
    print(
        "\nvs K=1 near 1.00: K models cost K times one (arithmetic and memory"
        " traffic); near 1/K: the step would be per-operation overhead."
        f"\nfastest per model: K={k}, {head} heads, {per_model * 1e3:.2f} ms, "
        f"{book / per_model:.2f}x the book model's rate per model"
    )


if __name__ == "__main__":
    main()
