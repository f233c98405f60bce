import numpy as np
import pytest
import torch

from helpers.patchcore.reference import kCenterGreedy
from helpers.patchcore.sampler import (
    agreement,
    coreset_size,
    coverage_radius,
    greedy_coreset,
    jl_min_dim,
    project,
    random_subset,
)


class _Identity:
    def transform(self, x):
        return x


def _article(x: np.ndarray, n: int) -> list[int]:
    sel = kCenterGreedy(x, 0, 0)
    return [
        int(i)
        for i in sel.select_batch(model=_Identity(), already_selected=[], N=n)
    ]


def test_same_selection_as_article_kcentergreedy_from_index_0():
    x = np.random.default_rng(0).normal(size=(600, 16))
    ours = greedy_coreset(
        torch.from_numpy(x), 40, start=0, progress=False
    ).tolist()
    assert ours == _article(x, 40)
    assert ours[0] == 0  # the article's start-point bug: always patch 0


def test_same_selection_from_another_start():
    x = np.random.default_rng(1).normal(size=(500, 8))
    start = 123
    # move `start` to row 0 for the article's code
    perm = np.r_[start, np.delete(np.arange(500), start)]
    article = [int(perm[i]) for i in _article(x[perm], 30)]
    ours = greedy_coreset(
        torch.from_numpy(x), 30, start=start, progress=False
    ).tolist()
    assert ours == article


def test_float32_selection_matches_and_radius():
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(2))
    idx, radius = greedy_coreset(
        x, 50, start=0, progress=False, return_radius=True
    )
    # float32 picks = float64 picks: the smallest float64 gap between the two
    # farthest rows of a step is 2.9e-3, above twice the float32 error of
    # |x|^2 - 2 x.c + |c|^2, gamma_34 * (2 * 8.23)^2 = 5.5e-4
    assert idx.tolist() == _article(x.double().numpy(), 50)
    # both float32 expansions (cdist's mm path too): <= 5.5e-4 on r^2 = 64,
    # 4.3e-6 of r each; rel 1e-4
    assert radius == pytest.approx(coverage_radius(x, idx), rel=1e-4)
    assert len(set(idx.tolist())) == 50
    # a greedy coreset covers better than a random subset of the same size
    assert radius < coverage_radius(x, random_subset(2000, 50, seed=0))


def test_jl_bound_and_projection():
    n, eps = 156_800, 0.9
    expected = int(4 * np.log(n) / (eps**2 / 2 - eps**3 / 3))
    assert jl_min_dim(n, eps) == expected
    x = torch.randn(300, 256, generator=torch.Generator().manual_seed(0))
    p1, p2, p3 = (
        project(x, 64, seed=0),
        project(x, 64, seed=0),
        project(x, 64, seed=1),
    )
    assert (
        p1.shape == (300, 64)
        and torch.equal(p1, p2)
        and not torch.equal(p1, p3)
    )
    assert project(x, None) is x
    # distances roughly preserved
    d0, d1 = torch.pdist(x), torch.pdist(p1)
    assert 0.8 < float((d1 / d0).median()) < 1.2


def test_errors():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        jl_min_dim(100, 1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        coreset_size(100, 0)
    assert coreset_size(100, 1.0) == 100 and coreset_size(10, 0.01) == 1
    with pytest.raises(ValueError, match="cannot select"):
        greedy_coreset(torch.randn(5, 2), 6, progress=False)
    with pytest.raises(ValueError, match="start index"):
        greedy_coreset(torch.randn(5, 2), 2, start=5, progress=False)


def test_radius_history_matches_prefix_radius():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(3))
    idx, radii = greedy_coreset(
        x, 20, start=5, progress=False, radius_history=True
    )
    for n in (1, 7, 20):
        # float32 expansions: <= gamma_8 * (2 * 4.66)^2 = 4.2e-5 on r^2 >=
        # 10.9, <= 2e-6 of r each; rel 1e-4
        assert float(radii[n - 1]) == pytest.approx(
            coverage_radius(x, idx[:n]), rel=1e-4
        )
    # exact: min_d only ever decreases (an elementwise minimum of stored
    # values), so its maximum cannot grow
    assert torch.all(radii[1:] <= radii[:-1])


def test_agreement_counts_the_shared_prefix():
    assert agreement([3, 1, 4], [3, 1, 5]) == 2
    assert agreement(torch.tensor([3, 1]), [3, 1, 5]) == 2
    assert agreement([], [1]) == 0


def test_torch_loop_used_on_a_gpu_selects_like_the_numpy_loop():
    # the torch loop serves GPUs and half precision; no GPU here, so run it on
    # the CPU against the NumPy loop
    from helpers.patchcore import sampler

    x = torch.from_numpy(np.random.default_rng(3).normal(size=(700, 12)))
    sq = torch.linalg.vector_norm(x, dim=1).square_()
    picked = {}
    for name, loop in (
        ("numpy", sampler._greedy_steps_numpy),
        ("torch", sampler._greedy_steps_torch),
    ):
        selected, radii = (
            torch.empty(35, dtype=torch.long),
            torch.empty(35, dtype=torch.float64),
        )
        min_d = loop(x, sq, 7, range(35), selected, radii)
        picked[name] = (selected.tolist(), radii, min_d)
    assert picked["torch"][0] == picked["numpy"][0]
    assert picked["torch"][0][0] == 7
    # float64 MKL (torch.mv) vs OpenBLAS (np.dot) of 12 terms: <= gamma_14 *
    # (2 * 6.0)^2 = 2.2e-13 on squared distances of 0 to 57; assert_close's
    # float64 defaults (rtol 1e-7, atol 1e-7) cover it
    torch.testing.assert_close(picked["torch"][1], picked["numpy"][1])
    torch.testing.assert_close(picked["torch"][2], picked["numpy"][2])
    # and through the public function: half precision takes the torch loop, and
    # still covers like float32
    half = greedy_coreset(x.to(torch.bfloat16), 35, start=7, progress=False)
    assert half[0] == 7 and len(set(half.tolist())) == 35
    # not a rounding bound: bfloat16 (u = 2^-8) may pick other rows; 10% is the
    # quality margin (seen: 0.03%)
    assert coverage_radius(x, half) < 1.1 * coverage_radius(
        x, torch.tensor(picked["numpy"][0])
    )


def _low_rank_rows(n: int, seed: int) -> np.ndarray:
    """Rows near a 16-dimensional subspace of 128 dimensions, like CNN
    patch features (whose variance sits in few directions)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16)) @ rng.standard_normal((16, 128))
    return z + 0.1 * rng.standard_normal((n, 128))


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefilter_selects_what_the_full_pass_selects(dtype):
    # 3008 rows: whole blocks of 16 (see _greedy_steps_numpy)
    x = torch.from_numpy(_low_rank_rows(3008, 4).astype(dtype))
    runs = {
        pf: greedy_coreset(
            x, 300, start=11, progress=False, radius_history=True, prefilter=pf
        )
        for pf in (32, None)
    }
    (fast, r_fast), (full, r_full) = runs[32], runs[None]
    assert fast.tolist() == full.tolist()
    # bit for bit: the rows the bound leaves go through the same BLAS kernel
    # in their padded call as in the full pass, and the rest keep their value
    assert torch.equal(r_fast, r_full)


@pytest.mark.numerics
def test_auto_prefilter_grows_with_the_dimension_and_selects_the_same():
    from helpers.patchcore.sampler import prefilter_dim

    assert [prefilter_dim(d) for d in (64, 128, 200, 312, 1536)] == [
        32,
        32,
        64,
        80,
        384,
    ]
    # the article's JL dimension for a large bank: 312 columns
    rng = np.random.default_rng(8)
    z = rng.standard_normal((3008, 24)) @ rng.standard_normal((24, 312))
    x = torch.from_numpy(
        (z + 0.1 * rng.standard_normal(z.shape)).astype(np.float32)
    )
    auto, r_auto = greedy_coreset(
        x, 250, start=3, progress=False, radius_history=True
    )
    full, r_full = greedy_coreset(
        x, 250, start=3, progress=False, radius_history=True, prefilter=None
    )
    assert auto.tolist() == full.tolist() and torch.equal(r_auto, r_full)
    assert torch.equal(
        greedy_coreset(x, 40, start=3, progress=False, prefilter=np.int64(80)),
        auto[:40],
    )
    for bad in (0, -4, 2.5, True, "32"):
        with pytest.raises(ValueError, match="prefilter must be"):
            greedy_coreset(x, 5, progress=False, prefilter=bad)


def test_prefilter_in_128_dimensions_matches_the_article():
    x = _low_rank_rows(600, 5)
    ours = greedy_coreset(torch.from_numpy(x), 40, start=0, progress=False)
    assert ours.tolist() == _article(x, 40)


@pytest.mark.numerics
@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,
        lambda x: x + 30,  # a common offset: cancellation in |x|^2 - 2 x.c
        lambda x: x * np.random.default_rng(6).lognormal(0, 2, (len(x), 1)),
    ],
    ids=["plain", "offset", "mixed-scale"],
)
def test_lower_bound_never_exceeds_the_loops_distance(make):
    from helpers.patchcore.sampler import distance_lower_bounds

    x = make(_low_rank_rows(4000, 7)).astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    y, sqy, tau = distance_lower_bounds(x, sq, 32)
    unsafe = 0
    for c in range(0, len(x), 97):
        # the greedy loop's float32 distance, exactly as it computes it
        d = np.maximum(np.dot(x, x[c]) * -2 + sq + sq[c], 0)
        bound = np.dot(y, -2 * y[c]) + sqy + sqy[c]
        assert np.all(bound <= d)
        # the bound does the work: it rules out nearly every row
        assert np.mean(bound >= 0.5 * d) > 0.99
        # and the margin is needed: without it rounding breaks the bound
        unsafe += int(np.sum(bound + tau * (sq + sq[c]) > d))
    assert unsafe > 0
