import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.neighbors import NearestNeighbors

import torch.nn.functional as F

from helpers.patchcore.anomaly_map import (
    anomaly_maps,
    blur_matrix,
    gaussian_blur,
)
from helpers.patchcore.reference import (
    article_image_score,
    article_patch_scores,
)
from helpers.patchcore.scorer import (
    NearestNeighbourScorer,
    float32_dot_error,
    reweighted_image_score,
)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(300, 24, generator=g), torch.randn(130, 24, generator=g)


def test_knn_equals_brute_force():
    bank, q = _data()
    scorer = NearestNeighbourScorer(bank, batch_size=37)
    d, i = scorer.knn(q, k=4)
    full = torch.cdist(q.double(), bank.double())
    ref_d, ref_i = torch.topk(full, 4, dim=1, largest=False)
    assert torch.equal(i, ref_i)
    # a direct float32 squared distance over 24 coordinates is within
    # float32_dot_error(24) (about 1.6e-6) of the true one, relatively, on any
    # CPU; the distance, its square root, within half that plus one rounding of
    # the root
    assert torch.allclose(
        d.double(), ref_d, rtol=float32_dot_error(24), atol=0
    )
    d1, i1 = scorer.knn(q, k=1)
    assert torch.equal(i1[:, 0], full.argmin(1))


def test_knn_equals_article_ball_tree():
    bank, q = _data(1)
    ours, _ = NearestNeighbourScorer(bank).knn(q, k=9)
    theirs = article_patch_scores(q.numpy(), bank.numpy(), n_neighbors=9)
    # the ball tree works in float64, so our float32 rounding (bound above) is
    # all that separates them
    assert np.allclose(
        ours.numpy(), theirs, rtol=float32_dot_error(24), atol=0
    )


def test_article_image_score_is_the_farthest_neighbours_weight():
    """The community code's eq. 7: N_b is the k-row of the test patch with the
    largest nearest distance, and the weight is one minus the softmax share of
    its *farthest* neighbour, so it lies in (0, 1 - 1/k], the opposite end from
    the paper's [1 - 1/b, 1)."""
    bank, q = _data(4)
    # [130, 9], ascending rows
    d = article_patch_scores(q.numpy(), bank.numpy(), n_neighbors=9)
    row = d[np.argmax(d[:, 0])]
    w = 1 - np.exp(row[-1]) / np.exp(row).sum()
    # float64 both sides
    assert article_image_score(d) == pytest.approx(
        w * d[:, 0].max(), rel=1e-12
    )
    assert 0 < w <= 1 - 1 / 9
    # all neighbours equally far: weight exactly 1 - 1/9
    equal = np.full((5, 9), 2.0)
    assert article_image_score(equal) == pytest.approx(
        (1 - 1 / 9) * 2.0, rel=1e-12
    )


def _near_ties(
    seed=0, n_bank=400, n_query=200, dim=256, norm=1000.0, spread=0.05
):
    """Bank and queries far from the origin (norm about 1000) and close to each
    other (spread 0.05 per coordinate), so squared distances near 1 are
    computed from squared norms near 1e6: the expansion form's float32 rounding
    (about 1e6 * 6e-8 per term) is larger than the gaps it ranks."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(dim, generator=g)
    centre *= norm / centre.norm()
    return (
        centre + spread * torch.randn(n_bank, dim, generator=g),
        centre + spread * torch.randn(n_query, dim, generator=g),
    )


def test_knn_is_exact_where_the_expansion_form_is_not():
    bank, q = _near_ties()
    truth = torch.cdist(q.double(), bank.double())
    ref_d, ref_i = torch.topk(truth, 3, dim=1, largest=False)
    # the float32 expansion ||q||^2 - 2 q.b + ||b||^2 alone mis-ranks many
    # queries here (this is why knn re-ranks; if it ranked them all right this
    # data would not test anything)
    expansion = torch.addmm(
        (bank * bank).sum(1)[None, :], q, bank.T, alpha=-2
    ) + (q * q).sum(1, keepdim=True)
    assert (expansion.argmin(1) != ref_i[:, 0]).float().mean() > 0.1
    # ... and stays within the worst-case bound
    # that knn relies on (knn allows twice this)
    bound = (
        float32_dot_error(256)
        * (q.norm(dim=1, keepdim=True) + bank.norm(dim=1)) ** 2
    )
    assert ((expansion.double() - truth**2).abs() <= bound).all()
    scorer = NearestNeighbourScorer(bank, batch_size=64)
    d, i = scorer.knn(q, k=3)
    # the error bound sent near ties to the float64 ranking
    assert scorer.fallback_queries > 0
    # the true neighbours up to ties closer than the direct distance's own
    # rounding (bound above, on squared distances near 0.05^2 * 2 * 256 = 1.3)
    tol = float32_dot_error(256) * ref_d[:, -1:] ** 2
    gap_ok = (ref_d[:, 1:] ** 2 - ref_d[:, :-1] ** 2 > 2 * tol).all(1)
    assert gap_ok.float().mean() > 0.9
    assert torch.equal(i[gap_ok], ref_i[gap_ok])
    assert torch.allclose(
        d.double(), ref_d, rtol=float32_dot_error(256), atol=0
    )


def test_reweighted_score_follows_eq7():
    bank, q = _data(2)
    patches = q[:120].view(3, 40, 24)
    scorer = NearestNeighbourScorer(bank)
    d, i = scorer.knn(patches.reshape(-1, 24), k=1)
    ps, ni = d[:, 0].view(3, 40), i[:, 0].view(3, 40)
    got = reweighted_image_score(patches, ps, ni, scorer, k=5)
    for b in range(3):
        j = int(ps[b].argmax())
        m_star = int(ni[b, j])
        nb = (
            NearestNeighbors(n_neighbors=5)
            .fit(bank.numpy())
            .kneighbors(bank[m_star : m_star + 1].numpy())[1][0]
        )
        assert nb[0] == m_star
        dist = np.linalg.norm(bank.numpy()[nb] - patches[b, j].numpy(), axis=1)
        w = 1 - np.exp(dist[0]) / np.exp(dist).sum()
        assert float(got[b]) == pytest.approx(w * float(ps[b, j]), rel=1e-4)


def _clustered(seed=0, n_bank=600, n_query=900, dim=256):
    """Bank and queries like patch features: a few low-dimensional clusters
    plus small isotropic noise, all coordinates positive (post-ReLU), so the
    principal subspace carries most of the variance."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, dim, generator=g) * 3
    mixing = torch.randn(6, 4, dim, generator=g) * 0.5

    def sample(n):
        c = torch.randint(6, (n,), generator=g)
        z = torch.randn(n, 1, 4, generator=g)
        return (
            centres[c]
            + (z @ mixing[c])[:, 0]
            + 0.1 * torch.randn(n, dim, generator=g)
        ).relu()

    return sample(n_bank), sample(n_query)


def test_nearest_candidate_search_agrees_with_exact():
    bank, q = _clustered()
    scorer = NearestNeighbourScorer(
        bank, batch_size=250, search_dim=32, candidates=8
    )
    assert scorer.approximate
    d, i = scorer.nearest(q, chunk=100)
    ed, ei = scorer.knn(q, k=1)
    same = i == ei[:, 0]
    assert same.float().mean().item() >= 0.99, same.float().mean().item()
    # both searches compute the distance to a bank row with the same re-rank
    # code, so where they return the same row they return the same float32
    # number, on any CPU
    assert torch.equal(d[same], ed[same, 0])
    # every returned distance is the direct distance to the returned bank row:
    # within the float32 bound of a 256-term sum of squares of the float64
    # truth ...
    rel = float32_dot_error(256)
    true = torch.linalg.vector_norm(bank[i].double() - q.double(), dim=1)
    assert torch.allclose(d.double(), true, rtol=rel, atol=0)
    # ... so it is never below the exact nearest
    # distance by more than the two roundings
    assert (d.double() >= ed[:, 0].double() * (1 - 2 * rel)).all()
    # with every bank row a candidate the search is exact
    full = NearestNeighbourScorer(
        bank, search_dim=32, candidates=bank.shape[0] - 1
    )
    fd, fi = full.nearest(q)
    assert (fi == ei[:, 0]).float().mean().item() >= 0.999


def test_nearest_falls_back_to_exact_and_rejects_bad_queries():
    bank, q = _data()
    for scorer in (
        NearestNeighbourScorer(bank, search_dim=None),
        NearestNeighbourScorer(bank, search_dim=24),
        NearestNeighbourScorer(bank, search_dim=100),
    ):
        # no subspace, or a bank under 4x search_dim: exact search
        assert not scorer.approximate
        d, i = scorer.nearest(q)
        ed, ei = scorer.knn(q, k=1)
        assert torch.equal(i, ei[:, 0]) and torch.equal(d, ed[:, 0])
    s = NearestNeighbourScorer(bank, search_dim=8, candidates=4)
    bad = q.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        s.nearest(bad)
    with pytest.raises(ValueError, match="queries must be"):
        s.nearest(q[:, :5])
    with pytest.raises(ValueError, match="search_dim"):
        NearestNeighbourScorer(bank, search_dim=0)
    with pytest.raises(ValueError, match="candidates"):
        NearestNeighbourScorer(bank, candidates=0)


def test_scorer_errors():
    bank, q = _data()
    s = NearestNeighbourScorer(bank)
    with pytest.raises(ValueError, match="larger than the memory bank"):
        s.knn(q, k=301)
    with pytest.raises(ValueError, match="k must be >= 1"):
        s.knn(q, k=0)
    with pytest.raises(ValueError, match="queries must be"):
        s.knn(q[:, :5])
    bad = q.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        s.knn(bad)
    with pytest.raises(ValueError, match="rerank"):
        NearestNeighbourScorer(bank, rerank=-1)
    with pytest.raises(ValueError, match="NaN/inf"):
        NearestNeighbourScorer(torch.tensor([[1.0, float("nan")]]))


def test_blur_matches_scipy_and_maps_shape():
    x = torch.rand(2, 40, 50)
    ours = gaussian_blur(x, 4.0).numpy()
    for b in range(2):
        ref = gaussian_filter(
            x[b].numpy().astype(np.float64), sigma=4, mode="reflect"
        )
        assert np.allclose(ours[b], ref, atol=1e-5)
    maps = anomaly_maps(torch.rand(3, 16), (4, 4), 32)
    assert maps.shape == (3, 32, 32)


@pytest.mark.parametrize(
    "grid,size",
    [((28, 28), 224), ((40, 40), 320), ((4, 6), (32, 40)), ((3, 3), 12)],
)
def test_anomaly_map_operators_equal_resize_then_blur(grid, size):
    """The two-matrix form equals bilinear resizing followed by scipy's
    reflected Gaussian blur, also for maps narrower than the kernel (12 px
    against a 33-tap kernel)."""
    scores = torch.rand(
        2, grid[0] * grid[1], generator=torch.Generator().manual_seed(0)
    )
    hw = (size, size) if isinstance(size, int) else size
    resized = F.interpolate(
        scores.view(2, 1, *grid), size=hw, mode="bilinear", align_corners=False
    )[:, 0]
    got = anomaly_maps(scores, grid, size, sigma=4.0)
    for b in range(2):
        ref = gaussian_filter(
            resized[b].numpy().astype(np.float64), sigma=4, mode="reflect"
        )
        assert np.allclose(got[b].numpy(), ref, atol=1e-5)
    # weights sum to 1 on every row
    assert torch.allclose(blur_matrix(12, 4.0).sum(1), torch.ones(12))
