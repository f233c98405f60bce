"""The terms of Lvae against hand-computed NumPy values."""

import math

import numpy as np
import pytest
from keras import ops

from helpers.vae import losses

rng = np.random.default_rng(0)


def np_(t):
    return ops.convert_to_numpy(t)


def test_kl_matches_numpy():
    m = rng.normal(size=(5, 2)).astype(np.float32)
    lv = rng.normal(size=(5, 2)).astype(np.float32)
    want = -0.5 * np.sum(1 + lv - m**2 - np.exp(lv), axis=-1)
    # float32 on both sides, with different exp kernels (<= 4 ulps assumed).
    # 1 + lv - m^2 - exp(lv) cancels (22x for sample 0), so bound the error by
    # the operands: per side <= 0.5 * 13u * S, with S = sum(1 + |lv| + m^2 +
    # exp(lv)) (3 additions, a square, exp, the sum); both sides <= 13u * S
    u = 2.0**-24
    scale = np.sum(1 + np.abs(lv) + m**2 + np.exp(lv), axis=-1)
    np.testing.assert_array_less(
        np.abs(np_(losses.kl_term(m, lv)) - want), 16 * u * scale
    )
    # KL of the prior itself is zero: 1 + 0 -
    # 0 - exp(0) = 0 exactly, in any rounding
    np.testing.assert_allclose(
        np_(losses.kl_term(np.zeros((3, 2)), np.zeros((3, 2)))), 0.0, atol=1e-7
    )


def test_a_and_m_match_numpy_per_sample():
    x = rng.random((4, 8, 8, 1)).astype(np.float32)
    mu = rng.random((4, 8, 8, 1)).astype(np.float32)
    s2 = rng.uniform(0.05, 1, (4, 8, 8, 1)).astype(np.float32)
    t = np.log(2 * np.pi * s2).reshape(4, -1)
    a = 0.5 * t.sum(1)
    m = 0.5 * ((x - mu) ** 2 / s2).reshape(4, -1).sum(1)
    se = ((x - mu) ** 2).reshape(4, -1).sum(1)
    # float32 on both sides, n = 64 terms summed in other orders (numpy
    # pairwise, the backend's own): each side is off by <= (n - 1)u sum|terms|
    # (gamma_n, any order) plus its per-term roundings. A's logs change sign at
    # sigma^2 = 1/(2 pi): bound by sum|t|, 4 ulps per log, 2u per argument.
    u, n = 2.0**-24, 64
    tol_a = (n + 8) * u * np.abs(t).sum(1) + 2 * n * u
    np.testing.assert_array_less(np.abs(np_(losses.a_term(s2)) - a), tol_a)
    # M and SE add n >= 0 terms of <= 4 roundings each: <= (n + 3)u = 4.0e-6
    # per side, 8.0e-6 < rtol 1e-5
    np.testing.assert_allclose(np_(losses.m_term(x, mu, s2)), m, rtol=1e-5)
    np.testing.assert_allclose(np_(losses.squared_error(x, mu)), se, rtol=1e-5)
    assert np_(losses.m_term(x, mu, s2)).shape == (4,)


def test_hand_values_and_pi():
    # one 1x2 "image": x = (1, 0), mu = (0.5, 0.5), sigma^2 = (0.25, 1)
    x = np.array([[1.0, 0.0]])
    mu = np.array([[0.5, 0.5]])
    s2 = np.array([[0.25, 1.0]])
    # every operand and result is a short binary
    # fraction (0.5, 0.25, 1.25): exact in any precision
    assert float(np_(losses.m_term(x, mu, s2))[0]) == pytest.approx(
        0.5 * (0.25 / 0.25 + 0.25 / 1.0)
    )
    assert float(np_(losses.squared_error(x, mu))[0]) == pytest.approx(0.5)
    # sigma^2 = 1 / (2 pi) makes log(2 pi
    # sigma^2) = 0 with the real pi, not with 3.14
    s2 = np.full((1, 4), 1 / (2 * math.pi))
    # 2 pi * fl(1 / (2 pi)) = 1 + O(u): |A| <= 0.5 * 4 * 3u = 4e-16 in float64
    # (3.6e-7 even in float32)
    assert float(np_(losses.a_term(s2))[0]) == pytest.approx(0.0, abs=1e-6)
    # 2 log(3.14 / pi) = -1.0142e-3: 1.4e-5
    # beyond the threshold, rounding is < 1e-6
    assert abs(float(np_(losses.a_term(s2, pi=3.14))[0])) > 1e-3
