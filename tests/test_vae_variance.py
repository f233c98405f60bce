"""The background's share of M and of the squared error, checked against plain loops."""

import numpy as np
import pytest

from helpers.vae import scoring, variance


class _Fixed:
    """A stand-in model: mu = 0.25 everywhere, sigma^2 = 1e-4 on black pixels and 0.1 elsewhere."""

    def __call__(self, x, training=False):
        x = np.asarray(x)
        n = len(x)
        return (
            np.full_like(x, 0.25),
            np.where(x == 0, 1e-4, 0.1).astype(np.float32),
            np.zeros((n, 2), np.float32),
            np.zeros((n, 2), np.float32),
        )


def test_background_shares_equal_loops():
    rng = np.random.default_rng(0)
    images = np.zeros((3, 12, 12), np.float32)
    images[:, 3:9, 5:7] = (
        rng.random((3, 6, 2)).astype(np.float32) * 0.5 + 0.5
    )  # a stroke
    ws = scoring.score_windows(
        _Fixed(), images, ("M", "SE"), keep_outputs=True
    )
    got = variance.background_shares(ws, images)
    win = scoring.windows_of(images)  # (3, 3, 3, 8, 8)
    mu, s2 = 0.25, np.where(win == 0, 1e-4, 0.1)
    m_pix, se_pix = 0.5 * (win - mu) ** 2 / s2, (win - mu) ** 2
    for term, pix in (("M", m_pix), ("SE", se_pix)):
        assert got[term]["all"] == pytest.approx(
            pix[win == 0].sum() / pix.sum(), rel=1e-5
        )
        num = den = 0.0
        for i in range(3):  # each image's highest window, by loops
            best = max(
                ((r, c) for r in range(3) for c in range(3)),
                key=lambda rc: pix[i][rc].sum(),
            )
            w, p = win[i][best], pix[i][best]
            num, den = num + p[w == 0].sum(), den + p.sum()
        assert got[term]["max window"] == pytest.approx(num / den, rel=1e-5)
    assert got["background pixels"] == pytest.approx((win == 0).mean())
    assert got["M"]["all"] > got["SE"]["all"], (
        "a collapsed background variance must weigh more in M"
    )


def test_background_shares_bad_input():
    images = np.zeros((2, 12, 12), np.float32)
    ws = scoring.score_windows(_Fixed(), images, ("M",))
    with pytest.raises(ValueError, match="keep_outputs=True"):
        variance.background_shares(ws, images)
    ws = scoring.score_windows(_Fixed(), images, ("M",), keep_outputs=True)
    with pytest.raises(ValueError, match="pass the images that were scored"):
        variance.background_shares(ws, np.zeros((3, 12, 12), np.float32))
    with pytest.raises(ValueError, match="knows the terms"):
        variance.background_shares(ws, images, terms=("D",))


def test_shares_table_rows_and_columns():
    def one(m_all, m_max, se_all, se_max):
        return {
            "M": {"all": m_all, "max window": m_max},
            "SE": {"all": se_all, "max window": se_max},
        }

    shares = {
        0: {
            "1s": one(0.61, 0.2, 0.5, 0.3),
            "9s": one(0.02, 0.004, 0.4, 0.25),
            "sigma2": (1.234e-4, 5.6e-2),
        },
        2: {
            "1s": one(0.1, 0.0, 0.9, 0.8),
            "9s": one(0.3, 0.1, 0.7, 0.6),
            "sigma2": (2e-5, 3e-3),
        },
    }
    lines = variance.shares_table(shares, shown_seed=2).split("\n")
    assert len(lines) == 2 + len(shares)
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:3] == [
        "baseline seed",
        "median σ² background",
        "median σ² strokes",
    ]
    assert head[3:] == [
        f"{t}: {w}, {d}"
        for t in ("M", "SE")
        for w in ("all windows", "max windows")
        for d in ("1s", "9s")
    ]
    assert lines[1] == "|---" * 11 + "|"
    assert lines[2] == (
        "| 0 | 1.2e-04 | 5.6e-02 | "
        "61% | 2% | 20% | 0% | 50% | 40% | 30% | 25% |"
    )
    assert lines[3].startswith("| 2 (shown above) | 2.0e-05 | 3.0e-03 | ")
    assert "(shown above)" not in lines[2]
