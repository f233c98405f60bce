import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.neighbors import NearestNeighbors

import torch.nn.functional as F

from helpers.patchcore.anomaly_map import anomaly_maps, blur_matrix, gaussian_blur
from helpers.patchcore.reference import article_patch_scores
from helpers.patchcore.scorer import NearestNeighbourScorer, reweighted_image_score


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
    assert torch.allclose(d.double(), ref_d, atol=1e-4)
    d1, i1 = scorer.knn(q, k=1)
    assert torch.equal(i1[:, 0], full.argmin(1))


def test_knn_equals_article_ball_tree():
    bank, q = _data(1)
    ours, _ = NearestNeighbourScorer(bank).knn(q, k=9)
    theirs = article_patch_scores(q.numpy(), bank.numpy(), n_neighbors=9)
    assert np.allclose(ours.numpy(), theirs, atol=1e-4)


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
        nb = NearestNeighbors(n_neighbors=5).fit(bank.numpy()).kneighbors(bank[m_star:m_star + 1].numpy())[1][0]
        assert nb[0] == m_star
        dist = np.linalg.norm(bank.numpy()[nb] - patches[b, j].numpy(), axis=1)
        w = 1 - np.exp(dist[0]) / np.exp(dist).sum()
        assert float(got[b]) == pytest.approx(w * float(ps[b, j]), rel=1e-4)


def _clustered(seed=0, n_bank=600, n_query=900, dim=256):
    """Bank and queries like patch features: a few low-dimensional clusters plus small isotropic noise,
    all coordinates positive (post-ReLU), so the principal subspace carries most of the variance."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, dim, generator=g) * 3
    mixing = torch.randn(6, 4, dim, generator=g) * 0.5

    def sample(n):
        c = torch.randint(6, (n,), generator=g)
        z = torch.randn(n, 1, 4, generator=g)
        return (centres[c] + (z @ mixing[c])[:, 0] + 0.1 * torch.randn(n, dim, generator=g)).relu()
    return sample(n_bank), sample(n_query)


def test_nearest_candidate_search_agrees_with_exact():
    bank, q = _clustered()
    scorer = NearestNeighbourScorer(bank, batch_size=250, search_dim=32, candidates=8)
    assert scorer.approximate
    d, i = scorer.nearest(q, chunk=100)
    ed, ei = scorer.knn(q, k=1)
    same = (i == ei[:, 0]).float().mean().item()
    assert same >= 0.99, same
    # every returned distance is the exact float32 distance to the returned bank row ...
    true = torch.linalg.vector_norm(bank[i] - q, dim=1)
    assert torch.allclose(d, true, atol=1e-4)
    # ... so it can only be larger than the exact nearest distance, never smaller
    assert (d >= ed[:, 0] - 1e-4).all()
    # with every bank row a candidate the search is exact
    full = NearestNeighbourScorer(bank, search_dim=32, candidates=bank.shape[0] - 1)
    fd, fi = full.nearest(q)
    assert (fi == ei[:, 0]).float().mean().item() >= 0.999


def test_nearest_falls_back_to_exact_and_rejects_bad_queries():
    bank, q = _data()
    for scorer in (NearestNeighbourScorer(bank, search_dim=None), NearestNeighbourScorer(bank, search_dim=24),
                   NearestNeighbourScorer(bank, search_dim=100)):
        assert not scorer.approximate          # no subspace, or a bank under 4x search_dim: exact search
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
    with pytest.raises(ValueError, match="NaN/inf"):
        NearestNeighbourScorer(torch.tensor([[1.0, float("nan")]]))


def test_blur_matches_scipy_and_maps_shape():
    x = torch.rand(2, 40, 50)
    ours = gaussian_blur(x, 4.0).numpy()
    for b in range(2):
        ref = gaussian_filter(x[b].numpy().astype(np.float64), sigma=4, mode="reflect")
        assert np.allclose(ours[b], ref, atol=1e-5)
    maps = anomaly_maps(torch.rand(3, 16), (4, 4), 32)
    assert maps.shape == (3, 32, 32)


@pytest.mark.parametrize("grid,size", [((28, 28), 224), ((40, 40), 320), ((4, 6), (32, 40)), ((3, 3), 12)])
def test_anomaly_map_operators_equal_resize_then_blur(grid, size):
    """The two-matrix form equals bilinear resizing followed by scipy's reflected Gaussian blur, also
    for maps narrower than the kernel (12 px against a 33-tap kernel)."""
    scores = torch.rand(2, grid[0] * grid[1], generator=torch.Generator().manual_seed(0))
    hw = (size, size) if isinstance(size, int) else size
    resized = F.interpolate(scores.view(2, 1, *grid), size=hw, mode="bilinear", align_corners=False)[:, 0]
    got = anomaly_maps(scores, grid, size, sigma=4.0)
    for b in range(2):
        ref = gaussian_filter(resized[b].numpy().astype(np.float64), sigma=4, mode="reflect")
        assert np.allclose(got[b].numpy(), ref, atol=1e-5)
    assert torch.allclose(blur_matrix(12, 4.0).sum(1), torch.ones(12))  # weights sum to 1 on every row
