"""Memory-bank subsampling: random projection (Johnson-Lindenstrauss) and
greedy k-center coreset.

PatchCore (Roth et al. 2022, section 3.2) keeps a subset of the training
patches chosen so that every patch lies close to a kept one: the greedy
k-center rule adds, at each step, the patch farthest from everything kept so
far. Distances for the selection are computed on randomly projected features.
When the dimension is at least the Johnson-Lindenstrauss bound
``4 ln(n) / (eps^2/2 - eps^3/3)``, every *squared* distance is kept within a
factor ``1 +- eps`` (with high probability), so distances stay within
``sqrt(1 - eps)`` and ``sqrt(1 + eps)``: 0.32 and 1.38 for the article's
``eps = 0.9``.
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch
from sklearn.random_projection import johnson_lindenstrauss_min_dim

# principal directions of the CPU loop's lower bound (see greedy_coreset)
PREFILTER_DIM = 32


def prefilter_dim(dim: int) -> int:
    """How many principal directions the CPU greedy loop bounds distances in
    (``prefilter="auto"``): a quarter of the projected dimensions, rounded up
    to a multiple of 16, at least :data:`PREFILTER_DIM` (32 of the paper's
    128; 80 of the 312 that the article's JL projection gives 320,000
    patches, where 32 left so many rows for the full distance that a 1%
    selection took 2.8x as long, measured on Magnetic Tile patches)."""
    return max(PREFILTER_DIM, 16 * -(-int(dim) // 64))


def jl_min_dim(n_samples: int, eps: float) -> int:
    """Smallest projection dimension for which the JL lemma keeps squared
    distances within ``1 +- eps`` (scikit-learn's
    ``johnson_lindenstrauss_min_dim``; distances then within
    ``sqrt(1 +- eps)``)."""
    if not 0 < eps < 1:
        raise ValueError(
            f"eps must lie in (0, 1) for the Johnson-Lindenstrauss bound, got {eps}"
        )
    return int(johnson_lindenstrauss_min_dim(n_samples, eps=eps))


def coreset_size(n: int, ratio: float) -> int:
    """Number of points kept for a coreset ``ratio`` of ``n`` points (at least
    one)."""
    if not 0 < ratio <= 1:
        raise ValueError(
            f"coreset ratio must lie in (0, 1], got {ratio} (0.01 keeps 1% of the patches)"
        )
    return max(1, int(n * ratio))


def random_projection_matrix(
    in_dim: int, out_dim: int, seed: int = 0
) -> torch.Tensor:
    """A seeded Gaussian projection ``[in_dim, out_dim]`` with entries N(0,
    1/out_dim)."""
    if out_dim < 1:
        raise ValueError(f"projection dimension must be >= 1, got {out_dim}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(in_dim, out_dim, generator=gen) / math.sqrt(out_dim)


def project(
    x: torch.Tensor, out_dim: int | None, seed: int = 0, batch: int = 8192
) -> torch.Tensor:
    """Project rows of ``x`` to ``out_dim`` dimensions (``None`` or >= input
    dim: return ``x``)."""
    if out_dim is None or out_dim >= x.shape[1]:
        return x
    # float16 input: float32 output
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = random_projection_matrix(x.shape[1], out_dim, seed).to(x.device, dtype)
    out = torch.empty((x.shape[0], out_dim), dtype=dtype, device=x.device)
    for i in range(0, x.shape[0], batch):
        torch.matmul(x[i : i + batch].to(dtype), w, out=out[i : i + batch])
    return out


@torch.no_grad()
def greedy_coreset(
    x: torch.Tensor,
    n: int,
    start: int = 0,
    progress: bool = True,
    return_radius: bool = False,
    radius_history: bool = False,
    clock: list | None = None,
    prefilter: int | str | None = "auto",
):
    """Greedy k-center selection of ``n`` row indices of ``x``, starting from
    row ``start``.

    Each step is one matrix-vector product ``x @ c`` (squared distances via
    ``||x||^2 - 2 x.c + ||c||^2``), an elementwise minimum and an argmax: one
    pass over ``x``. Ties go to the lowest index, like ``np.argmax`` in the
    article's ``kCenterGreedy``. With ``return_radius=True`` also returns the
    coverage radius (largest distance from any row to its nearest selected
    row). With ``radius_history=True`` returns ``(indices, radii)`` where
    ``radii[i]`` is the coverage radius of the first ``i + 1`` selected rows
    (greedy selections are nested, so one run gives the radius for every
    coreset size up to ``n``). A list passed as ``clock`` receives the
    ``time.perf_counter()`` after each step: the time a run of any smaller size
    would take.

    On the CPU, ``prefilter`` (a number of principal directions; the default
    ``"auto"`` is :func:`prefilter_dim`, 32 of 128) makes each step cheaper
    without changing what it computes: a lower bound of every row's distance
    to the new centre, in ``prefilter`` dimensions,
    rules out the rows it cannot bring closer (late in a selection, usually
    over 95% of them), and only the rest get the full distance (see
    :func:`distance_lower_bounds`). ``None`` computes every row's distance at
    every step.
    """
    from tqdm import tqdm

    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty [n_points, dim] tensor, got shape {tuple(x.shape)}"
        )
    n_points = x.shape[0]
    if prefilter == "auto":
        prefilter = prefilter_dim(x.shape[1])
    elif prefilter is not None and (
        isinstance(prefilter, bool)
        or not isinstance(prefilter, numbers.Integral)
        or prefilter < 1
    ):
        raise ValueError(
            f"prefilter must be 'auto', None or a positive number of "
            f"principal directions, got {prefilter!r}"
        )
    if not 1 <= n <= n_points:
        raise ValueError(f"cannot select {n} points out of {n_points}")
    if not 0 <= start < n_points:
        raise ValueError(f"start index {start} outside [0, {n_points})")
    sq = torch.linalg.vector_norm(x, dim=1).square_()
    selected = torch.empty(n, dtype=torch.long)
    radii = torch.empty(n, dtype=torch.float64) if radius_history else None
    steps = tqdm(
        range(n),
        desc="coreset",
        unit="pt",
        disable=not progress,
        mininterval=0.5,
    )
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        min_d = _greedy_steps_numpy(
            x, sq, start, steps, selected, radii, clock, prefilter
        )
    else:  # a GPU, or half precision
        min_d = _greedy_steps_torch(
            x, sq, start, steps, selected, radii, clock
        )
    if radius_history:
        return selected, radii.sqrt()
    if return_radius:
        return selected, float(min_d.max().sqrt())
    return selected


def _greedy_steps_torch(
    x: torch.Tensor,
    sq: torch.Tensor,
    start: int,
    steps,
    selected: torch.Tensor,
    radii: torch.Tensor | None,
    clock: list | None = None,
) -> torch.Tensor:
    """The greedy loop in torch, on ``x``'s device (used on a GPU): the same
    steps as :func:`_greedy_steps_numpy`, in place so that no step allocates.
    Fills ``selected`` (and ``radii``) and returns each row's squared distance
    to its nearest selected row."""
    n_points = x.shape[0]
    min_d = torch.full(
        (n_points,), float("inf"), dtype=x.dtype, device=x.device
    )
    dots = torch.empty(n_points, dtype=x.dtype, device=x.device)
    idx = start
    for step in steps:
        selected[step] = idx
        torch.mv(x, x[idx], out=dots)
        # squared distance = ||x||^2 - 2 x.c + ||c||^2,
        # clamped at 0 against rounding (in place)
        d = dots.mul_(-2).add_(sq).add_(sq[idx]).clamp_(min=0)
        torch.minimum(min_d, d, out=min_d)
        min_d[idx] = 0
        idx = int(torch.argmax(min_d))
        if radii is not None:
            radii[step] = float(min_d[idx])
        if clock is not None:
            clock.append(time.perf_counter())
    return min_d


def principal_basis(xn: np.ndarray, dim: int) -> np.ndarray:
    """``dim`` orthonormal columns ``[d, dim]`` spanning the rows' top
    principal directions (eigenvectors of their covariance, in float64)."""
    n = xn.shape[0]
    mean = xn.mean(0, dtype=np.float64)
    cov = (xn.T @ xn).astype(np.float64) / n - np.outer(mean, mean)
    _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim]).astype(xn.dtype)


def distance_lower_bounds(
    xn: np.ndarray, sqn: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """What the CPU greedy loop needs to bound squared distances from below.

    For an orthonormal basis ``V`` of ``dim`` columns, ``|V^T (x - c)|^2 <=
    |x - c|^2`` (a projection never lengthens a vector). With ``y = x V``, the
    bound of row ``x`` to centre ``c`` is ``|y_x|^2 - 2 y_x.y_c + |y_c|^2``;
    the top principal directions make it tight (on Magnetic Tile patches in
    128 random dimensions, 32 of them leave 1.1% of the rows for the full
    distance, averaged over the steps of a 10% selection).

    Rounding: the loop's float expansion of the full distance, the bound's
    expansion, the rounding of ``V`` to the working precision and of
    ``y = x V`` each err by at most a few ``gamma_128 = 128 u`` times
    ``|x|^2 + |c|^2``; in all under ``2.2e-4 (|x|^2 + |c|^2)`` in float32. The
    bound is therefore lowered by ``tau (|x|^2 + |c|^2)`` with ``tau = 8192
    eps`` (``9.8e-4`` in float32, more than four times that sum), so a row it
    rules out has a computed full distance no smaller than its current one,
    and the step's minimum leaves it as it was.

    Returns ``y`` ``[n, dim]``, ``|y|^2 - tau |x|^2`` per row, and ``tau``."""
    tau = 8192 * float(np.finfo(xn.dtype).eps)
    y = xn @ principal_basis(xn, dim)
    sqy = np.einsum("ij,ij->i", y, y)
    sqy -= (tau * sqn).astype(xn.dtype)
    return y, sqy, tau


def _greedy_steps_numpy(
    x: torch.Tensor,
    sq: torch.Tensor,
    start: int,
    steps,
    selected: torch.Tensor,
    radii: torch.Tensor | None,
    clock: list | None = None,
    prefilter: int | None = PREFILTER_DIM,
) -> torch.Tensor:
    """The greedy loop on the CPU, in NumPy on the tensors' memory (no copies):
    one ``x @ c`` through NumPy's BLAS (OpenBLAS) and a few in-place vector
    operations per step. The MKL that ships with torch runs this matrix-vector
    product about 3x slower on AMD processors, and alternating torch's OpenMP
    threads with BLAS threads every step costs more than the step itself on a
    small machine (both measured by ``benchmarks/patchcore_bench.py``). Same
    arithmetic as the torch loop.

    With ``prefilter`` (and more than twice that many columns), each step
    first bounds every row's distance in ``prefilter`` principal dimensions
    (:func:`distance_lower_bounds`, a quarter of the memory traffic at 32 of
    128) and computes the full distance only for rows whose bound is below
    their current nearest distance: the other rows' minimum cannot change. A
    step that leaves more than an eighth of the rows takes the full pass, as do
    the next 15 steps (early in a selection the bound rules out little). The
    selection is the full pass's, bit for bit wherever BLAS rounds a row's
    product the same in a short call as in the long one (OpenBLAS does, tested
    on banks of whole blocks of 16 rows; a row at an unaligned boundary between
    two threads' shares can differ in the last bit, which changes a choice
    only at an exact near-tie)."""
    xn = x.detach().contiguous().numpy()
    sqn = sq.numpy()
    n_points, dim = xn.shape
    min_d = np.full(n_points, np.inf, dtype=xn.dtype)
    dots = np.empty(n_points, dtype=xn.dtype)
    bounded = prefilter is not None and dim > 2 * prefilter
    if bounded:
        y, sqy, _ = distance_lower_bounds(xn, sqn, prefilter)
    idx, retry = start, 0
    for step in steps:
        selected[step] = idx
        rows = None
        if bounded and step >= retry:
            # lower bound of each row's squared distance to the new centre
            np.dot(y, -2 * y[idx], out=dots)
            dots += sqy
            dots += sqy[idx]  # |y_c|^2 - tau |c|^2
            rows = np.flatnonzero(dots < min_d)
            if rows.size > n_points // 8:
                # too many rows left (early in a selection): full passes,
                # and the bound tried again 16 steps on
                rows, retry = None, step + 16
        if rows is None:  # every row
            rows = slice(None)
            d = np.dot(xn, xn[idx], out=dots)
        else:  # the rows the bound left, padded (repeating rows) to a
            # multiple of 16 rows, so that BLAS computes each row with the
            # kernel the full pass uses for it: the same bits, not just the
            # same value up to rounding
            padded = np.resize(rows, -(-rows.size // 16) * 16)
            d = np.dot(xn[padded], xn[idx])[: rows.size]
        d *= -2
        d += sqn[rows]
        d += sqn[idx]
        np.maximum(d, 0, out=d)
        min_d[rows] = np.minimum(min_d[rows], d)
        min_d[idx] = 0
        idx = int(np.argmax(min_d))
        if radii is not None:
            radii[step] = float(min_d[idx])
        if clock is not None:
            clock.append(time.perf_counter())
    return torch.from_numpy(min_d)


def agreement(a, b) -> int:
    """How many leading entries two selections share (the index of their first
    difference)."""
    a, b = [int(i) for i in a], [int(i) for i in b]
    return next(
        (i for i, (u, v) in enumerate(zip(a, b)) if u != v),
        min(len(a), len(b)),
    )


def random_subset(n_points: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct indices drawn uniformly (the baseline the coreset is
    compared with)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_points, generator=gen)[:n]


@torch.no_grad()
def coverage_radius(
    x: torch.Tensor, selected: torch.Tensor, batch: int = 8192
) -> float:
    """Largest Euclidean distance from a row of ``x`` to its nearest selected
    row."""
    centres = x[selected]
    worst = 0.0
    for i in range(0, x.shape[0], batch):
        d = torch.cdist(x[i : i + batch], centres).min(1).values.max()
        worst = max(worst, float(d))
    return worst
