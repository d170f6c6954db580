"""Exact nearest neighbours and ball coverage on feature sets, in bounded memory.

Squared distances are computed tile by tile as ``||a||² + ||b||² − 2 a·b`` (after centring both
sets on the reference mean, clamped at 0) on ``chunk_size`` × ``chunk_size`` tiles, so no N × N
matrix is ever held; each tile's smallest entries are merged into a running top list. The GEMM
runs in the features' precision (float32 features: fast float32 GEMM) with TF32 disabled, on the
device of the inputs. A set queried against itself excludes each point *by index* (duplicates of
a point still count as its neighbours) and computes each tile pair once.

Exactness: a rounding error of the GEMM could swap two neighbours whose distances nearly tie.
Rows whose candidates contain a gap smaller than the rounding bound (2 √D u (||q||² + max ||r||²),
the probabilistic bound of Higham & Mary, 2019, about ten times the largest error we measure)
are re-ranked with distances recomputed exactly in float64 as ``||q − r||``; rows whose surplus
of candidates is not provably enough are searched again in float64 first. Neighbour sets and
their order are therefore those of exact arithmetic (ties broken by the lower index); distances
of the other rows carry the GEMM's rounding (about 1e-7 relative in float32).
"""

from __future__ import annotations

import contextlib
import math
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


class _Tiles:
    """A feature set centred and cast once for the GEMM search, read in row tiles."""

    def __init__(self, x: Tensor, center: Tensor, dtype: torch.dtype, chunk_size: int) -> None:
        self.x, self.dtype, self.chunk = x, dtype, chunk_size
        self.centred = x.to(dtype) - center.to(dtype)
        self.sq_norms = self.centred.square().sum(dim=1)

    def tile(self, start: int) -> Tensor:
        return self.centred[start : start + self.chunk]

    def starts(self) -> range:
        return range(0, len(self.x), self.chunk)


def _squared_distances(a: _Tiles, i: int, b: _Tiles, j: int) -> Tensor:
    """Squared distances between row tile ``i`` of ``a`` and row tile ``j`` of ``b``."""
    dot = a.tile(i) @ b.tile(j).T
    sq = a.sq_norms[i : i + a.chunk, None] + b.sq_norms[None, j : j + b.chunk] - 2 * dot
    return sq.clamp_min_(0)


def _merge(best_d: Tensor, best_i: Tensor, rows: slice, sq: Tensor, offset: int) -> None:
    """Fold the candidates of one tile (rows × columns) into the running top list of ``rows``."""
    k = min(best_d.shape[1], sq.shape[1])
    tile_d, tile_i = sq.topk(k, dim=1, largest=False)
    all_d = torch.cat([best_d[rows], tile_d], dim=1)
    all_i = torch.cat([best_i[rows], tile_i + offset], dim=1)
    top_d, pos = all_d.topk(best_d.shape[1], dim=1, largest=False)
    best_d[rows] = top_d
    best_i[rows] = all_i.gather(1, pos)


def _sorted(sq: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row ordered by distance, ties by index."""
    idx, by_index = idx.sort(dim=1)
    sq, order = sq.gather(1, by_index).sort(dim=1, stable=True)
    return sq, idx.gather(1, order)


def _search(
    q: _Tiles, r: _Tiles, n: int, exclude: Tensor | None, symmetric: bool
) -> tuple[Tensor, Tensor]:
    """The ``n`` nearest references of every query by GEMM distance, sorted.

    Args:
        q, r: query and reference tiles.
        n: candidates kept per query.
        exclude: (Nq,) reference index each query must skip (its own), or None.
        symmetric: ``q`` is ``r`` and every point skips itself: only tiles on or above the
            diagonal are computed, each serving its rows and, transposed, its columns.

    Returns:
        Squared distances (Nq, n) in the search precision and int64 indices (Nq, n).
    """
    best_d = torch.full((len(q.x), n), torch.inf, dtype=q.dtype, device=q.x.device)
    best_i = torch.zeros((len(q.x), n), dtype=torch.int64, device=q.x.device)
    for i in q.starts():
        for j in r.starts():
            if symmetric and j < i:
                continue
            sq = _squared_distances(q, i, r, j)
            if symmetric and i == j:
                sq.fill_diagonal_(torch.inf)
            elif exclude is not None:
                columns = torch.arange(j, j + sq.shape[1], device=sq.device)
                sq.masked_fill_(exclude[i : i + q.chunk, None] == columns, torch.inf)
            _merge(best_d, best_i, slice(i, i + q.chunk), sq, j)
            if symmetric and i != j:
                _merge(best_d, best_i, slice(j, j + r.chunk), sq.T, i)
    return _sorted(best_d, best_i)


def _rounding_bound(q: _Tiles, r: _Tiles) -> Tensor:
    """Per query, the largest plausible GEMM error on a difference of two squared distances."""
    unit = torch.finfo(q.dtype).eps / 2
    scale = q.sq_norms.double() + r.sq_norms.double().max()
    return 2 * math.sqrt(q.x.shape[1]) * unit * scale


def _exact_sorted(
    query: Tensor, reference: Tensor, candidates: Tensor, k: int, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Exact float64 distances ``||q − r||`` to the candidates; the k smallest, ties by index."""
    n, c = candidates.shape
    rows_per_step = max(1, chunk_size * chunk_size // max(1, c * query.shape[1]))
    distances, indices = [], []
    for s in range(0, n, rows_per_step):
        idx = candidates[s : s + rows_per_step]
        diff = reference[idx].to(torch.float64) - query[s : s + rows_per_step, None].double()
        d, idx = _sorted(diff.square().sum(dim=2), idx)
        distances.append(d[:, :k].sqrt())
        indices.append(idx[:, :k])
    if not distances:
        return query.new_zeros((0, k), dtype=torch.float64), candidates[:, :k]
    return torch.cat(distances), torch.cat(indices)


def knn(
    query: Tensor | np.ndarray,
    reference: Tensor | np.ndarray | None = None,
    k: int = 5,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype | None = None,
    margin: int = DEFAULT_MARGIN,
) -> Neighbors:
    """Exact k nearest neighbours in L2.

    Args:
        query: (Nq, D) features (any trailing shape is flattened).
        reference: (Nr, D) features; None searches ``query`` against itself with each point's
            own index excluded.
        k: neighbours per query point, at most Nr (Nq − 1 for a self search).
        chunk_size: side of the distance tiles; memory is O(chunk_size² + N·(k + margin)).
        dtype: GEMM precision (float32 or float64); default: that of the features.
        margin: surplus candidates kept by the search for the exact re-ranking.

    Returns:
        :class:`Neighbors`: float64 (Nq, k) distances ascending and int64 (Nq, k) indices, on
        the query's device.
    """
    q = as_features(query)
    r = q if reference is None else as_features(reference, device=q.device)
    available = len(q) - 1 if reference is None else len(r)
    if not 1 <= k <= available:
        raise UserError(f"kNN needs 1 ≤ k ≤ {available} (the reference set size), got k = {k}.")
    if r.shape[1] != q.shape[1]:
        raise UserError(
            f"Feature sizes differ: {q.shape[1]} for the queries, {r.shape[1]} for the reference."
        )
    dtype = dtype or torch.promote_types(q.dtype, r.dtype)
    n = min(k + margin, available)
    center = r.to(torch.float64).mean(dim=0)
    own = torch.arange(len(q), device=q.device) if reference is None else None
    with full_precision_matmul(), torch.no_grad():
        qt = _Tiles(q, center, dtype, chunk_size)
        rt = qt if reference is None else _Tiles(r, center, dtype, chunk_size)
        sq, idx = _search(qt, rt, n, None, symmetric=reference is None)
        bound = _rounding_bound(qt, rt)
        gaps = sq[:, 1 : k + 1] - sq[:, : min(k, n - 1)]
        near_tie = (gaps <= bound[:, None]).any(dim=1)
        short = (sq[:, -1] - sq[:, k - 1] <= bound) if n < available else torch.zeros_like(near_tie)
        if short.any():
            rows = short.nonzero().squeeze(1)
            exact_q = _Tiles(q[rows], center, torch.float64, chunk_size)
            exact_r = _Tiles(r, center, torch.float64, chunk_size)
            exclude = None if own is None else own[rows]
            idx[rows] = _search(exact_q, exact_r, n, exclude, symmetric=False)[1]
        distances, indices = sq[:, :k].double().sqrt(), idx[:, :k]
        rows = (near_tie | short).nonzero().squeeze(1)
        distances[rows], indices[rows] = _exact_sorted(q[rows], r, idx[rows], k, chunk_size)
    return Neighbors(distances, indices)


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
    qb, cb = _Tiles(q, center, dtype, chunk_size), _Tiles(c, center, dtype, chunk_size)
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
