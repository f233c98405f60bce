"""The three terms of Lvae, each with one value per sample.

Lvae = D + A + M with
  D = KL(q(z|x) || N(0, I)) = -0.5 sum_j (1 + log s_j^2 - m_j^2 - s_j^2)
  A = 0.5 sum_i log(2 pi sigma_i^2)
  M = 0.5 sum_i (x_i - mu_i)^2 / sigma_i^2
(sums over latent units j and pixels i). They accept NumPy arrays or backend tensors and return a
backend tensor of shape (batch,); wrap with ``keras.ops.convert_to_numpy`` for NumPy.
"""

from __future__ import annotations

import math

from keras import ops


def _t(t):
    return ops.convert_to_tensor(t)


def _flat(t):
    t = _t(t)
    return ops.reshape(t, (ops.shape(t)[0], -1))


def kl_term(z_mean, z_log_var):
    """D: KL divergence of N(z_mean, exp(z_log_var)) from N(0, I), per
    sample."""
    z_mean, z_log_var = _t(z_mean), _t(z_log_var)
    return -0.5 * ops.sum(
        1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1
    )


def a_term(sigma2, pi: float = math.pi):
    """A: 0.5 * sum over pixels of log(2 pi sigma^2), per sample (the article
    wrote 3.14 for pi)."""
    return 0.5 * ops.sum(ops.log(2.0 * pi * _flat(sigma2)), axis=-1)


def m_term(x, mu, sigma2):
    """M: 0.5 * sum over pixels of (x - mu)^2 / sigma^2, per sample (the
    Mahalanobis part)."""
    return 0.5 * ops.sum(
        ops.square(_flat(x) - _flat(mu)) / _flat(sigma2), axis=-1
    )


def squared_error(x, mu):
    """Plain squared error sum over pixels of (x - mu)^2, per sample (an
    ordinary autoencoder score)."""
    return ops.sum(ops.square(_flat(x) - _flat(mu)), axis=-1)
