"""Exact nearest neighbours and ball coverage on feature sets, in bounded memory.

Distances are computed block by block as ``||a||² + ||b||² − 2 a·b`` (clamped at 0) on
``chunk_size`` × ``chunk_size`` tiles, so no N × N matrix is ever held; each tile's k smallest
entries are merged into a running top-k. The search may run in float32 (fast GEMM): it keeps a
few surplus candidates, whose distances are then recomputed exactly in float64 as ``||a − b||``
and re-sorted, so the returned neighbours and distances are those of an exact float64 search
(ties broken by the lower index). Everything runs on the device of the input tensors, with
TF32 disabled. A set queried against itself excludes each point *by index*, so duplicates of a
point still count as its neighbours at distance 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from minority.errors import UserError

DEFAULT_CHUNK = 2048
DEFAULT_MARGIN = 8


class Neighbors(NamedTuple):
    """k nearest neighbours of each query point, nearest first.

    Attributes:
        distances: float64 (N, k) L2 distances, ascending along each row.
        indices: int64 (N, k) rows of the reference set.
    """

    distances: Tensor
    indices: Tensor

    def head(self, k: int) -> Neighbors:
        """The ``k`` nearest of the stored neighbours (k ≤ stored k)."""
        return Neighbors(self.distances[:, :k], self.indices[:, :k])


def as_features(x: Tensor | np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """A feature set as a 2-D tensor: (N, ...) array or tensor -> (N, D), dtype kept if float."""
    t = torch.as_tensor(x, device=device)
    if not t.is_floating_point():
        t = t.double()
    if t.ndim != 2:
        t = t.reshape(t.shape[0], -1)
    return t


@contextlib.contextmanager
def full_precision_matmul() -> Iterator[None]:
    """Disable TF32 (and any reduced-precision float32 matmul) inside the block."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class _Blocks:
    """One feature set cut into row blocks, centred and cast for the GEMM search."""

    def __init__(self, x: Tensor, center: Tensor, dtype: torch.dtype, chunk_size: int) -> None:
        self.x, self.center, self.dtype, self.chunk = x, center, dtype, chunk_size
        self.sq_norms = torch.cat(
            [self.block(s).square().sum(dim=1) for s in range(0, len(x), chunk_size)]
        )

    def block(self, start: int) -> Tensor:
        rows = self.x[start : start + self.chunk].to(torch.float64) - self.center
        return rows.to(self.dtype)

    def starts(self) -> range:
        return range(0, len(self.x), self.chunk)


def _squared_distances(a: _Blocks, i: int, b: _Blocks, j: int) -> Tensor:
    """Squared distances between row block ``i`` of ``a`` and row block ``j`` of ``b``."""
    dot = a.block(i) @ b.block(j).T
    sq = a.sq_norms[i : i + a.chunk, None] + b.sq_norms[None, j : j + b.chunk] - 2 * dot
    return sq.clamp_min_(0)


def _merge(best_d: Tensor, best_i: Tensor, rows: slice, sq: Tensor, offset: int) -> None:
    """Fold the candidates of one tile (rows × columns) into the running top-k of ``rows``."""
    k = min(best_d.shape[1], sq.shape[1])
    tile_d, tile_i = sq.topk(k, dim=1, largest=False)
    all_d = torch.cat([best_d[rows], tile_d.to(best_d.dtype)], dim=1)
    all_i = torch.cat([best_i[rows], tile_i + offset], dim=1)
    top_d, pos = all_d.topk(best_d.shape[1], dim=1, largest=False)
    best_d[rows] = top_d
    best_i[rows] = all_i.gather(1, pos)


def _candidates(
    query: Tensor, reference: Tensor | None, n: int, chunk_size: int, dtype: torch.dtype
) -> Tensor:
    """Indices (Nq, n) of the ``n`` nearest references by the GEMM distance (unordered).

    With ``reference`` None the set is searched against itself: only tiles on or above the
    diagonal are computed (each serves its rows and, transposed, its columns) and every point's
    own index is masked out.
    """
    ref = query if reference is None else reference
    center = ref.to(torch.float64).mean(dim=0)
    q = _Blocks(query, center, dtype, chunk_size)
    r = q if reference is None else _Blocks(reference, center, dtype, chunk_size)
    best_d = torch.full((len(query), n), torch.inf, dtype=dtype, device=query.device)
    best_i = torch.zeros((len(query), n), dtype=torch.int64, device=query.device)
    for i in q.starts():
        for j in r.starts():
            if reference is None and j < i:
                continue
            sq = _squared_distances(q, i, r, j)
            if reference is None and i == j:
                sq.fill_diagonal_(torch.inf)
            _merge(best_d, best_i, slice(i, i + chunk_size), sq, j)
            if reference is None and i != j:
                _merge(best_d, best_i, slice(j, j + chunk_size), sq.T, i)
    return best_i


def _exact_sorted(
    query: Tensor, reference: Tensor, candidates: Tensor, k: int, chunk_size: int
) -> Neighbors:
    """Exact float64 distances ``||q − r||`` to the candidates; the k smallest, ties by index."""
    n, c = candidates.shape
    rows_per_step = max(1, chunk_size * chunk_size // max(1, c * query.shape[1]))
    distances, indices = [], []
    for s in range(0, n, rows_per_step):
        idx = candidates[s : s + rows_per_step].sort(dim=1).values
        diff = reference[idx].to(torch.float64) - query[s : s + rows_per_step, None].double()
        d = diff.square().sum(dim=2).sqrt()
        d, order = d.sort(dim=1, stable=True)
        distances.append(d[:, :k])
        indices.append(idx.gather(1, order[:, :k]))
    return Neighbors(torch.cat(distances), torch.cat(indices))


def knn(
    query: Tensor | np.ndarray,
    reference: Tensor | np.ndarray | None = None,
    k: int = 5,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float32,
    margin: int = DEFAULT_MARGIN,
) -> Neighbors:
    """Exact k nearest neighbours in L2.

    Args:
        query: (Nq, D) features (any trailing shape is flattened).
        reference: (Nr, D) features; None searches ``query`` against itself with each point's
            own index excluded.
        k: neighbours per query point, at most Nr (Nq − 1 for a self search).
        chunk_size: side of the distance tiles; memory is O(chunk_size² + N·(k + margin)).
        dtype: precision of the GEMM search (float32 or float64); returned distances are
            always exact float64.
        margin: surplus candidates kept by the search and re-ranked exactly.

    Returns:
        :class:`Neighbors` with float64 (Nq, k) distances ascending and int64 (Nq, k) indices,
        on the query's device.
    """
    q = as_features(query)
    r = None if reference is None else as_features(reference, device=q.device)
    available = len(q) - 1 if r is None else len(r)
    if not 1 <= k <= available:
        raise UserError(f"kNN needs 1 ≤ k ≤ {available} (the reference set size), got k = {k}.")
    if r is not None and r.shape[1] != q.shape[1]:
        raise UserError(
            f"Feature sizes differ: {q.shape[1]} for the queries, {r.shape[1]} for the reference."
        )
    n_candidates = min(k + margin, available)
    with full_precision_matmul(), torch.no_grad():
        candidates = _candidates(q, r, n_candidates, chunk_size, dtype)
        return _exact_sorted(q, q if r is None else r, candidates, k, chunk_size)


def smallest_covering_radius(
    query: Tensor | np.ndarray,
    centers: Tensor | np.ndarray,
    radii: Tensor | np.ndarray,
    *,
    inclusive: bool,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """For each query point, the smallest radius among the balls that contain it.

    A point q lies in ball i when ``d(q, c_i) ≤ r_i`` (``inclusive``) or ``d(q, c_i) < r_i``.

    Args:
        query: (Nq, D) features.
        centers: (Nc, D) ball centres.
        radii: (Nc,) ball radii, non-negative.
        inclusive: whether the sphere itself belongs to the ball.
        chunk_size: side of the distance tiles.
        dtype: precision of the distance computation.

    Returns:
        float64 (Nq,): the smallest containing radius, ``inf`` where no ball contains the point.
    """
    q = as_features(query)
    c = as_features(centers, device=q.device)
    r = torch.as_tensor(radii, device=q.device).to(torch.float64)
    r_sq = r.to(dtype).square()
    center = c.to(torch.float64).mean(dim=0)
    qb, cb = _Blocks(q, center, dtype, chunk_size), _Blocks(c, center, dtype, chunk_size)
    best = torch.full((len(q),), torch.inf, dtype=torch.float64, device=q.device)
    with full_precision_matmul(), torch.no_grad():
        for i in qb.starts():
            for j in cb.starts():
                sq = _squared_distances(qb, i, cb, j)
                ball_sq = r_sq[None, j : j + chunk_size]
                inside = sq <= ball_sq if inclusive else sq < ball_sq
                covering = torch.where(inside, r[None, j : j + chunk_size], torch.inf).amin(dim=1)
                rows = slice(i, i + chunk_size)
                best[rows] = torch.minimum(best[rows], covering)
    return best
