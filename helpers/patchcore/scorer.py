"""Exact nearest-neighbour scoring against the memory bank (PatchCore section 3.3).

The bank is prepared once (its squared norms cached); test patches are scored in batches with one matrix
multiply each: ``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2``. The article instead refits a scikit-learn
ball tree on the bank for every test image.
"""

from __future__ import annotations

import torch


class NearestNeighbourScorer:
    """k nearest bank patches of each query patch, exact, in batches of ``batch_size`` queries."""

    def __init__(self, bank: torch.Tensor, batch_size: int = 4096) -> None:
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty [n, dim] tensor, got shape {tuple(bank.shape)}")
        if not torch.isfinite(bank).all():
            raise ValueError("memory bank contains NaN/inf values: refit the model on valid images")
        self.bank = bank.float().contiguous()
        self.bank_sq = (self.bank * self.bank).sum(1)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.bank.shape[0]

    @torch.no_grad()
    def knn(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances ``[q, k]`` (ascending) and bank indices ``[q, k]`` of the ``k`` nearest bank rows."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the memory bank ({len(self)} patches): lower k or raise "
                             "the coreset ratio / number of training images")
        if queries.ndim != 2 or queries.shape[1] != self.bank.shape[1]:
            raise ValueError(f"queries must be [q, {self.bank.shape[1]}], got shape {tuple(queries.shape)}")
        queries = queries.float()
        dist = torch.empty((queries.shape[0], k))
        index = torch.empty((queries.shape[0], k), dtype=torch.long)
        for i in range(0, queries.shape[0], self.batch_size):
            q = queries[i:i + self.batch_size]
            d2 = torch.addmm(self.bank_sq[None, :], q, self.bank.T, alpha=-2)
            d2 += (q * q).sum(1, keepdim=True)
            if k == 1:
                v, j = d2.min(1, keepdim=True)
            else:
                v, j = torch.topk(d2, k, dim=1, largest=False)
            dist[i:i + q.shape[0]] = v.clamp_(min=0).sqrt_()
            index[i:i + q.shape[0]] = j
        return dist, index


def reweighted_image_score(patches: torch.Tensor, patch_scores: torch.Tensor, nn_index: torch.Tensor,
                           bank: torch.Tensor, bank_neighbours: torch.Tensor) -> torch.Tensor:
    """The paper's eq. 7 for each image.

    For the test patch ``m_test`` with the largest score ``s*`` and its nearest bank patch ``m*``:
    ``s = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*``, where ``N_b(m*)``
    are the ``b`` nearest bank neighbours of ``m*`` (``m*`` itself first). A patch far from every other
    bank patch in a sparse region of the bank gets its score damped less than one in a dense region.

    ``patches`` is ``[b, P, C]``, ``patch_scores`` ``[b, P]``, ``nn_index`` ``[b, P]`` (index of each
    patch's nearest bank row), ``bank_neighbours`` ``[n_bank, k]`` (precomputed within the bank).
    """
    best = patch_scores.argmax(1)
    rows = torch.arange(patches.shape[0])
    m_test = patches[rows, best]                                   # [b, C]
    support = bank_neighbours[nn_index[rows, best]]                # [b, k]
    d = torch.linalg.vector_norm(bank[support] - m_test[:, None, :], dim=2)  # [b, k]
    # support[:, 0] is m* itself, so d[:, 0] is s*; softmax keeps exp() from overflowing
    weight = 1 - torch.softmax(d, dim=1)[:, 0]
    return weight * patch_scores[rows, best]
