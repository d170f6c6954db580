"""Exact nearest neighbours and ball coverage on feature sets, in bounded memory.

Squared distances are computed as ``||a||² + ||b||² − 2 a·b`` (both sets centred on the
reference mean; clamped at 0 before the square root) on ``chunk_size`` × ``chunk_size`` tiles,
so no N × N matrix is ever held; each tile's smallest entries are merged into a running top
list. The GEMM runs in the features' precision (float32 features: fast float32 GEMM) with TF32
disabled, on the device of the inputs. A set queried against itself excludes each point *by
index* (duplicates of a point still count as its neighbours) and computes each tile pair once.

Exactness: a rounding error of the GEMM could swap two neighbours whose distances nearly tie.
Every candidate within the rounding bound 2 √D u (||q||² + max ||r||²) of its neighbour in the
sorted list or of 0 (a probabilistic bound in the sense of Higham & Mary, 2019; about ten times
the largest float32 error we measure) gets its distance recomputed exactly in float64 as
``||q − r||`` before the final sort; a row whose surplus of candidates is not provably enough is
searched again in float64 first. Neighbour sets and their order are therefore those of exact
arithmetic (exact ties broken by the lower index unless more than k + margin points tie;
duplicates at distance exactly 0); the other squared distances carry the GEMM's rounding,
about 1e-7 · (||q||² + ||r||²) in float32 (pass ``dtype=torch.float64`` for float64 rounding).
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
        self.sq_norms = torch.cat([self.tile(s).square().sum(dim=1) for s in self.starts()])

    def tile(self, start: int) -> Tensor:
        return self.centred[start : start + self.chunk]

    def starts(self) -> range:
        return range(0, len(self.x), self.chunk)


def _squared_distances(a: _Tiles, i: int, b: _Tiles, j: int, row_norms: bool = True) -> Tensor:
    """Squared distances between row tile ``i`` of ``a`` and row tile ``j`` of ``b``.

    One fused GEMM ``||b||² − 2 a·b``, plus ``||a||²`` unless ``row_norms`` is False (a
    constant per row, which does not change a row's ranking). Not clamped at 0.
    """
    sq = torch.addmm(b.sq_norms[None, j : j + b.chunk], a.tile(i), b.tile(j).T, alpha=-2)
    return sq.add_(a.sq_norms[i : i + a.chunk, None]) if row_norms else sq


class _RunningTop:
    """The ``n`` smallest entries seen so far in each row tile, folded every few tiles.

    The top lists of a row tile's column tiles are kept and reduced together, so each tile
    costs one ``topk`` and the small merge operations stay rare.
    """

    FOLD_EVERY = 8

    def __init__(self, n: int) -> None:
        self.n = n
        self.pending: dict[int, list[tuple[Tensor, Tensor]]] = {}

    def add(self, row_start: int, sq: Tensor, column_start: int) -> None:
        """Offer the squared distances of a tile whose first row and column are given."""
        d, i = sq.topk(min(self.n, sq.shape[1]), dim=1, largest=False)
        lists = self.pending.setdefault(row_start, [])
        lists.append((d, i + column_start))
        if len(lists) >= self.FOLD_EVERY:
            self.pending[row_start] = [self._fold(lists)]

    def _fold(self, lists: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        d = torch.cat([entry[0] for entry in lists], dim=1)
        i = torch.cat([entry[1] for entry in lists], dim=1)
        d, pos = d.topk(min(self.n, d.shape[1]), dim=1, largest=False)
        return d, i.gather(1, pos)

    def result(self) -> tuple[Tensor, Tensor]:
        """(rows, n) squared distances and indices, rows in order, each sorted (ties by index)."""
        folded = [self._fold(self.pending[start]) for start in sorted(self.pending)]
        return _sorted(torch.cat([f[0] for f in folded]), torch.cat([f[1] for f in folded]))


def _sorted(sq: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row ordered by distance, ties by index."""
    idx, by_index = idx.sort(dim=1)
    sq, order = sq.gather(1, by_index).sort(dim=1, stable=True)
    return sq, idx.gather(1, order)


def progress(rows: range, what: str) -> Iterator[int]:
    """Row tiles with a progress bar on a terminal (none in logs or tests), one tick a tile."""
    from tqdm.auto import tqdm

    return tqdm(rows, desc=what, unit="tile", leave=False, disable=None)


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
        Squared distances (Nq, n) in the search precision (not clamped at 0) and int64
        indices (Nq, n).
    """
    top = _RunningTop(n)
    for i in progress(q.starts(), "kNN search"):
        for j in r.starts():
            if symmetric and j < i:
                continue
            sq = _squared_distances(q, i, r, j, row_norms=symmetric)
            if symmetric and i == j:
                sq.fill_diagonal_(torch.inf)
            elif exclude is not None:
                columns = torch.arange(j, j + sq.shape[1], device=sq.device)
                sq.masked_fill_(exclude[i : i + q.chunk, None] == columns, torch.inf)
            top.add(i, sq, j)
            if symmetric and i != j:
                top.add(j, sq.T, i)
    sq, idx = top.result()
    return (sq, idx) if symmetric else (sq + q.sq_norms[:, None], idx)


def _rounding_bound(q: _Tiles, r: _Tiles) -> Tensor:
    """Per query, the largest plausible GEMM error on a difference of two squared distances."""
    unit = torch.finfo(q.dtype).eps / 2
    scale = q.sq_norms.double() + r.sq_norms.double().max()
    return 2 * math.sqrt(q.x.shape[1]) * unit * scale


def _uncertain(sq: Tensor, k: int, bound: Tensor) -> Tensor:
    """(Nq, n) bool: entries the GEMM cannot settle, to be recomputed exactly.

    Those within ``bound`` of a sorted neighbour among the first k + 1 (their order may be
    wrong) and those within ``bound`` of 0 (duplicates and near-duplicates, whose distance the
    GEMM cannot resolve).
    """
    m = min(k, sq.shape[1] - 1)
    close = sq[:, 1 : m + 1] - sq[:, :m] <= bound[:, None]
    uncertain = sq <= bound[:, None]
    uncertain[:, :m] |= close
    uncertain[:, 1 : m + 1] |= close
    return uncertain


def _exact_squared(
    query: Tensor, reference: Tensor, rows: Tensor, columns: Tensor, chunk_size: int
) -> Tensor:
    """Exact float64 ``||query[rows] − reference[columns]||²`` for (P,) index pairs."""
    step = max(1, chunk_size * chunk_size // query.shape[1])
    parts = [
        (reference[columns[s : s + step]].double() - query[rows[s : s + step]].double())
        .square()
        .sum(dim=1)
        for s in range(0, len(rows), step)
    ]
    return torch.cat(parts) if parts else query.new_zeros(0, dtype=torch.float64)


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
        short = sq[:, -1] - sq[:, k - 1] <= bound if n < available else bound < 0
        if short.any():
            rows = short.nonzero().squeeze(1)
            exact_q = _Tiles(q[rows], center, torch.float64, chunk_size)
            exact_r = _Tiles(r, center, torch.float64, chunk_size)
            exclude = None if own is None else own[rows]
            idx[rows] = _search(exact_q, exact_r, n, exclude, symmetric=False)[1]
        recompute = _uncertain(sq, k, bound) | short[:, None]
        sq = sq.double()
        rows, columns = recompute.nonzero(as_tuple=True)
        sq[rows, columns] = _exact_squared(q, r, rows, idx[rows, columns], chunk_size)
        sq, idx = _sorted(sq, idx)
    return Neighbors(sq[:, :k].clamp_min(0).sqrt(), idx[:, :k])


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
        for i in progress(qb.starts(), "ball coverage"):
            for j in cb.starts():
                sq = _squared_distances(qb, i, cb, j)
                ball_sq = r_sq[None, j : j + chunk_size]
                inside = sq <= ball_sq if inclusive else sq < ball_sq
                covering = torch.where(inside, r[None, j : j + chunk_size], torch.inf).amin(dim=1)
                rows = slice(i, i + chunk_size)
                best[rows] = torch.minimum(best[rows], covering)
    return best
