"""Nearest-neighbour scoring against the memory bank (PatchCore section 3.3).

The bank is prepared once (its squared norms cached); test patches are scored
in batches. :meth:`NearestNeighbourScorer.knn` is the exact search: one matrix
multiply per batch ranks the bank through
``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2``, and the few best-ranked bank
patches of each query are then re-ranked with the direct distance
``||a - b||``. The expansion form is fast but its float32 rounding error grows
with the norms (about 2e-4 at distances near 5 for these features) and depends
on the CPU's BLAS kernel; the direct form is accurate to a few units of float32
rounding on any machine. A query whose ranking the expansion's worst-case error
bound cannot vouch for (a near tie just outside the kept patches) is ranked
again in float64, so the neighbours returned are the nearest ones. The article
instead refits a scikit-learn ball tree on the bank for every test image.

That exact search runs at the machine's float32 matrix-multiply rate, and at a
1% coreset it costs more than half as many FLOPs as the backbone.
:meth:`NearestNeighbourScorer.nearest` cuts them: it ranks the bank in a
``search_dim``-dimensional principal subspace of the centred bank (in bfloat16
where the hardware multiplies it natively), keeps the ``candidates`` best bank
patches of each query and re-ranks those with the same direct distance. The
distance it returns is always a direct distance to a bank patch; it is the
nearest one unless the true nearest patch fell outside the candidates, which
the benchmark and the tests measure against the exact search.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from .features import check_finite


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or
    AMX; read from /proc/cpuinfo). Without it bfloat16 matrix products are
    emulated and slower than float32, so the search stays float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def search_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where it is native (CUDA with bf16 support, or a CPU with
    AVX512-BF16/AMX), else float32."""
    if device.type == "cuda":
        return (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        )
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def float32_dot_error(n: int) -> float:
    """Relative worst-case error bound of a float32 sum of ``n`` products, in
    any summation order (``gamma_n = n u / (1 - n u)``, Higham, *Accuracy and
    Stability of Numerical Algorithms*, 3.1), with two more terms for the
    additions that assemble a squared distance."""
    nu = (n + 2) * FLOAT32_UNIT_ROUNDOFF
    return nu / (1 - nu)


class NearestNeighbourScorer:
    """k nearest bank patches of each query patch, in batches of ``batch_size``
    queries.

    :meth:`knn` is exact: a matrix multiply ranks the bank and the
    ``k + rerank`` best-ranked patches are re-ranked by direct distance (with a
    float64 ranking for the rare query whose order the float32 error bound
    cannot vouch for). :meth:`nearest` is the fast candidate search for the
    single nearest patch (``search_dim`` principal directions, ``candidates``
    re-ranked by the same direct distance; ``search_dim=None`` makes it exact
    too). Every distance either returns is the direct float32 distance
    ``||q - b||`` to the bank row it names, computed by the same code.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        batch_size: int = 4096,
        search_dim: int | None = 256,
        candidates: int = 8,
        rerank: int = 8,
    ) -> None:
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(
                f"memory bank must be a non-empty [n, dim] tensor, got shape {tuple(bank.shape)}"
            )
        if not torch.isfinite(bank).all():
            raise ValueError(
                "memory bank contains NaN/inf values: refit the model on valid images"
            )
        if search_dim is not None and search_dim < 1:
            raise ValueError(
                f"search_dim must be None (exact) or >= 1, got {search_dim}"
            )
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if rerank < 0:
            raise ValueError(f"rerank must be >= 0, got {rerank}")
        self.bank = bank.float().contiguous()
        self.bank_sq = (self.bank * self.bank).sum(1)
        self.batch_size = batch_size
        self.search_dim = search_dim
        self.candidates = candidates
        self.rerank = rerank
        # queries ranked again in float64 by knn (diagnostics)
        self.fallback_queries = 0
        self._index: dict[str, torch.Tensor] | None = None

    @property
    def approximate(self) -> bool:
        """Whether :meth:`nearest` searches a subspace. It pays only for banks
        of at least four times ``search_dim`` patches (projecting and
        re-ranking cost about as much as an exact search of a bank of ~600
        patches here); smaller or narrower banks are searched exactly."""
        n, dim = self.bank.shape
        return (
            self.search_dim is not None
            and self.search_dim < dim
            and n >= 4 * self.search_dim
            and self.candidates < n
        )

    def prepare(self) -> "NearestNeighbourScorer":
        """Build the subspace index of :meth:`nearest` now rather than on its
        first call."""
        if self.approximate:
            self._search_index()
        return self

    def _search_index(self) -> dict[str, torch.Tensor]:
        """Principal directions of the centred bank and the bank's side of the
        subspace distance, built once (about a second). A query ``q`` projects
        to ``p = q @ basis - mean @ basis`` in one ``addmm`` (the shift is
        added before the product is rounded, so ``p`` is rounded to bfloat16
        centred and small); bank row ``b``, centred and projected to ``c_b``,
        then ranks by ``||p - c_b||^2 - ||p||^2 = -2 p.c_b + ||c_b||^2``: a
        second ``addmm``."""
        if self._index is None:
            mean = self.bank.mean(0)
            centred = self.bank - mean
            # the basis needs no more rows
            rows = centred[:: max(1, centred.shape[0] // 65536)]
            cov = (rows.T @ rows).double()
            _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
            # [dim, search_dim]
            basis = vectors[:, -self.search_dim :].flip(1).float().contiguous()
            projected = centred @ basis  # c_b, [n, search_dim]
            dtype = search_dtype(self.bank.device)
            self._index = {
                "basis": basis.to(dtype),
                "shift": -(mean @ basis)[None, :].to(dtype),
                "bank_t": (-2 * projected).T.contiguous().to(dtype),
                "bank_sq": (projected * projected).sum(1)[None, :].to(dtype),
            }
        return self._index

    def __len__(self) -> int:
        return self.bank.shape[0]

    def _rows_per_batch(self) -> int:
        """Queries per batch: ``batch_size``, fewer for large banks so that one
        batch's ``[rows, n]`` distance matrix stays near 256 MB (a 100% bank of
        156,800 patches: 428 rows)."""
        return max(64, min(self.batch_size, (1 << 26) // self.bank.shape[0]))

    def _checked(self, queries: torch.Tensor) -> torch.Tensor:
        if queries.ndim != 2 or queries.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"queries must be [q, {self.bank.shape[1]}], got shape {tuple(queries.shape)}"
            )
        queries = queries.float()
        # one cheap sum per chunk; no full-size mask
        check_finite(queries, what="query patches")
        return queries

    def _buffer(self, width: int, chunk: int) -> torch.Tensor:
        return torch.empty(
            chunk * width,
            self.bank.shape[1],
            dtype=self.bank.dtype,
            device=self.bank.device,
        )

    def _rerank(
        self,
        q: torch.Tensor,
        cand: torch.Tensor,
        k: int,
        buffer: torch.Tensor,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` smallest direct squared distances ``||q - b||^2``
        (ascending) of each query ``q`` ``[r, C]`` over its candidate bank rows
        ``cand`` ``[r, m]``, and their bank indices. The rows are gathered into
        one reused ``buffer`` (fresh multi-megabyte temporaries per chunk made
        this step twice as slow)."""
        r, m = cand.shape
        d_out = torch.empty(r, k)
        i_out = torch.empty(r, k, dtype=torch.long)
        for j in range(0, r, chunk):
            c, qj = cand[j : j + chunk], q[j : j + chunk]
            n = c.shape[0]
            rows_c = torch.index_select(
                self.bank, 0, c.reshape(-1), out=buffer[: n * m]
            )
            d2 = rows_c.view(n, m, -1).sub_(qj[:, None, :]).pow_(2).sum(2)
            if k == 1:
                v, best = d2.min(1, keepdim=True)
            else:
                v, best = torch.topk(d2, k, dim=1, largest=False)
            d_out[j : j + n] = v
            i_out[j : j + n] = c.gather(1, best)
        return d_out, i_out

    def _float64_candidates(self, q: torch.Tensor, m: int) -> torch.Tensor:
        """Indices ``[r, m]`` of the ``m`` nearest bank rows of each query,
        ranked in float64 (its rounding error is about 1e-9 of float32's), one
        slice of the bank at a time."""
        q64 = q.double()
        q_sq = (q64 * q64).sum(1, keepdim=True)
        parts = []
        step = 1 << 16
        for s in range(0, len(self), step):
            b64 = self.bank[s : s + step].double()
            parts.append(
                torch.addmm(
                    (b64 * b64).sum(1)[None, :], q64, b64.T, alpha=-2
                ).add_(q_sq)
            )
        d2 = torch.cat(parts, 1)
        return torch.topk(d2, m, dim=1, largest=False, sorted=False).indices

    @torch.no_grad()
    def knn(
        self, queries: torch.Tensor, k: int = 1, chunk: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances ``[q, k]`` (ascending) and bank indices ``[q, k]`` of the
        ``k`` nearest bank rows.

        One float32 ``addmm`` per batch ranks the bank by
        ``||q||^2 - 2 q.b + ||b||^2`` and keeps the ``m = k + rerank`` best;
        those are re-ranked by direct distance. A bank row outside the kept
        ``m`` has an expansion value of at least the ``m``-th one, ``g_m``, so
        its true squared distance is at least ``g_m - e`` with ``e`` the
        expansion's worst-case error,
        ``float32_dot_error(dim) * (||q|| + max ||b||)^2``. Where ``g_m - e``
        does not exceed the ``k``-th re-ranked distance (with its own
        rounding), that query is ranked again in float64 before the direct
        re-rank.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > len(self):
            raise ValueError(
                f"k={k} is larger than the memory bank ({len(self)} patches): lower k or raise "
                "the coreset ratio / number of training images"
            )
        queries = self._checked(queries)
        n = len(self)
        m = min(n, k + self.rerank)
        slack = float32_dot_error(self.bank.shape[1])
        bank_norm = float(self.bank_sq.max().sqrt()) * (1 + slack)
        dist = torch.empty((queries.shape[0], k))
        index = torch.empty((queries.shape[0], k), dtype=torch.long)
        buffer = self._buffer(m, chunk)
        rows = self._rows_per_batch()
        ranking = (
            None
            if m == n
            else torch.empty(
                min(rows, queries.shape[0]),
                n,
                dtype=self.bank.dtype,
                device=self.bank.device,
            )
        )
        for i in range(0, queries.shape[0], rows):
            q = queries[i : i + rows]
            if m == n:  # a bank this small is re-ranked whole
                cand = torch.arange(n).expand(q.shape[0], n)
                v, j = self._rerank(q, cand, k, buffer, chunk)
            else:  # one ranking matrix for all batches (see nearest)
                d2 = torch.addmm(
                    self.bank_sq[None, :],
                    q,
                    self.bank.T,
                    alpha=-2,
                    out=ranking[: q.shape[0]],
                )
                q_sq = (q * q).sum(1)
                d2 += q_sq[:, None]
                g, cand = torch.topk(d2, m, dim=1, largest=False, sorted=False)
                v, j = self._rerank(q, cand, k, buffer, chunk)
                err = 2 * slack * (q_sq.sqrt() * (1 + slack) + bank_norm) ** 2
                unsure = (
                    g.max(1).values - err <= v[:, -1] * (1 + 2 * slack)
                ).nonzero()[:, 0]
                if unsure.numel():
                    self.fallback_queries += int(unsure.numel())
                    qu = q[unsure]
                    v[unsure], j[unsure] = self._rerank(
                        qu, self._float64_candidates(qu, m), k, buffer, chunk
                    )
            dist[i : i + q.shape[0]] = v.sqrt_()
            index[i : i + q.shape[0]] = j
        return dist, index

    @torch.no_grad()
    def nearest(
        self, queries: torch.Tensor, chunk: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``[q]`` and bank index ``[q]`` of the nearest bank patch,
        by candidate search.

        Each query is projected onto the bank's top ``search_dim`` principal
        directions; the ``candidates`` bank patches closest there are re-ranked
        by direct distance (the code of :meth:`knn`'s re-rank).
        """
        if not self.approximate:
            dist, index = self.knn(queries, k=1, chunk=chunk)
            return dist[:, 0], index[:, 0]
        queries = self._checked(queries)
        idx = self._search_index()
        dist = torch.empty(queries.shape[0])
        index = torch.empty(queries.shape[0], dtype=torch.long)
        rows = self._rows_per_batch()
        buffer = self._buffer(self.candidates, chunk)
        # one [rows, n] ranking matrix for every batch of this call: a fresh
        # one per batch (256 MB for a 100% bank) costs as much in page faults
        # as the product itself
        ranking = torch.empty(
            min(rows, queries.shape[0]),
            len(self),
            dtype=idx["bank_t"].dtype,
            device=self.bank.device,
        )
        for i in range(0, queries.shape[0], rows):
            q = queries[i : i + rows]
            # (q - mean) @ basis
            p = torch.addmm(
                idx["shift"], q.to(idx["basis"].dtype), idx["basis"]
            )
            approx = torch.addmm(
                idx["bank_sq"], p, idx["bank_t"], out=ranking[: q.shape[0]]
            )
            cand = torch.topk(
                approx, self.candidates, dim=1, largest=False, sorted=False
            ).indices
            v, j = self._rerank(q, cand, 1, buffer, chunk)
            dist[i : i + q.shape[0]] = v[:, 0].sqrt_()
            index[i : i + q.shape[0]] = j[:, 0]
        return dist, index


def reweighted_image_score(
    patches: torch.Tensor,
    patch_scores: torch.Tensor,
    nn_index: torch.Tensor,
    scorer: NearestNeighbourScorer,
    k: int,
) -> torch.Tensor:
    """The paper's eq. 7 for each image.

    For the test patch ``m_test`` with the largest score ``s*`` and its nearest
    bank patch ``m*``:
    ``s = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*``,
    where ``N_b(m*)`` are the ``b = k`` nearest bank neighbours of ``m*``
    (``m*`` itself first). A patch far from every other bank patch in a sparse
    region of the bank gets its score damped less than one in a dense region.

    ``patches`` is ``[n, P, C]`` for ``n`` images, ``patch_scores`` ``[n, P]``,
    ``nn_index`` ``[n, P]`` (index of each patch's nearest bank row in
    ``scorer.bank``). ``N_b(m*)`` is searched here, exactly, for the one ``m*``
    of each image: ``n`` queries against the bank, far cheaper than neighbour
    lists for every bank patch (an exact search of the bank against itself,
    minutes for a 100% bank).
    """
    best = patch_scores.argmax(1)
    rows = torch.arange(patches.shape[0])
    m_test = patches[rows, best].float()  # [n, C]
    # N_b(m*), [n, k]
    _, support = scorer.knn(scorer.bank[nn_index[rows, best]], k=k)
    # [n, k]
    d = torch.linalg.vector_norm(
        scorer.bank[support] - m_test[:, None, :], dim=2
    )
    # support[:, 0] is m* itself, so d[:, 0] is
    # s*; softmax keeps exp() from overflowing
    weight = 1 - torch.softmax(d, dim=1)[:, 0]
    return weight * patch_scores[rows, best]
