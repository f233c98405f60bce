import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.neighbors import NearestNeighbors

from helpers.patchcore.anomaly_map import anomaly_maps, gaussian_blur
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
    _, neigh = scorer.knn(bank, k=5)
    got = reweighted_image_score(patches, ps, ni, bank, neigh)
    for b in range(3):
        j = int(ps[b].argmax())
        m_star = int(ni[b, j])
        nb = NearestNeighbors(n_neighbors=5).fit(bank.numpy()).kneighbors(bank[m_star:m_star + 1].numpy())[1][0]
        assert nb[0] == m_star
        dist = np.linalg.norm(bank.numpy()[nb] - patches[b, j].numpy(), axis=1)
        w = 1 - np.exp(dist[0]) / np.exp(dist).sum()
        assert float(got[b]) == pytest.approx(w * float(ps[b, j]), rel=1e-4)


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
