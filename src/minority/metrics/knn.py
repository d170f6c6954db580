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

Ball tests (``d(q, c) ≤ r`` or ``< r``, for Rarity and precision / recall) read the same tiles:
a pair farther than that rounding bound from the sphere r² is settled by the GEMM, the few
pairs within it get their exact float64 distance, so the memberships are those of exact
arithmetic in float32 too. :func:`cross_search` serves a kNN search and ball tests in both
directions from one pass over the query × reference tiles.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
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
        self.x, self.center, self.dtype, self.chunk = x, center, dtype, chunk_size
        self.centred = x.to(dtype) - center.to(dtype)
        self.sq_norms = torch.cat([self.tile(s).square().sum(dim=1) for s in self.starts()])

    def tile(self, start: int) -> Tensor:
        return self.centred[start : start + self.chunk]

    def starts(self) -> range:
        return range(0, len(self.x), self.chunk)


def _squared_distances(a: _Tiles, i: int, b: _Tiles, j: int) -> Tensor:
    """Squared distances between row tile ``i`` of ``a`` and row tile ``j`` of ``b``.

    One fused GEMM ``||b||² − 2 a·b``, then ``+ ||a||²`` in place. Not clamped at 0.
    """
    sq = torch.addmm(b.sq_norms[None, j : j + b.chunk], a.tile(i), b.tile(j).T, alpha=-2)
    return sq.add_(a.sq_norms[i : i + a.chunk, None])


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


class _Cover:
    """Smallest radius of a ball holding each point, gathered over distance tiles.

    Balls are (centre c, radius r) with a float64 radius. A tile's GEMM squared distances
    settle every pair farther than ``bound`` from the sphere r² (inside below r² − bound,
    outside above r² + bound); the pairs in between are kept and decided at the end on exact
    float64 distances, so the result is that of exact arithmetic for either boundary rule.
    """

    def __init__(
        self, points: Tensor, centers: Tensor, radii: Tensor, bound: float, tiles: _Tiles
    ) -> None:
        self.points, self.centers, self.chunk = points, centers, tiles.chunk
        self.radii = torch.as_tensor(radii, device=points.device).to(torch.float64)
        sq = self.radii.square()
        self.below = torch.nextafter((sq - bound).to(tiles.dtype), sq.new_tensor(-torch.inf))
        self.above = torch.nextafter((sq + bound).to(tiles.dtype), sq.new_tensor(torch.inf))
        self.best = torch.full((len(points),), torch.inf, dtype=torch.float64, device=sq.device)
        self.pairs: list[tuple[Tensor, Tensor]] = []
        self.exact: tuple[Tensor, Tensor, Tensor] | None = None

    def add(self, sq: Tensor, row_start: int, column_start: int) -> None:
        """Offer a tile of squared distances (points × centres) at the given offsets.

        Only the pairs not surely outside are gathered (few: a ball holds few points).
        """
        columns = slice(column_start, column_start + sq.shape[1])
        i, j = (sq <= self.above[None, columns]).nonzero(as_tuple=True)
        rows, j = i + row_start, j + column_start
        inside = sq[i, j - column_start] < self.below[j]
        self.best.scatter_reduce_(0, rows[inside], self.radii[j[inside]], "amin")
        self.pairs.append((rows[~inside], j[~inside]))

    def smallest(self, inclusive: bool) -> Tensor:
        """float64 (N,): smallest radius of a ball holding each point (``inf``: none).

        A point is in a ball when ``d ≤ r`` (``inclusive``) or ``d < r``.
        """
        rows, radii, exact = self._settled()
        inside = exact <= radii.square() if inclusive else exact < radii.square()
        return self.best.scatter_reduce(0, rows[inside], radii[inside], "amin")

    def _settled(self) -> tuple[Tensor, Tensor, Tensor]:
        """The kept pairs' points, ball radii and exact float64 squared distances, computed
        once for both boundary rules (Rarity's strict, precision's inclusive)."""
        if self.exact is None:
            empty = self.best.new_zeros(0, dtype=torch.long)
            rows = torch.cat([empty, *(p[0] for p in self.pairs)])
            columns = torch.cat([empty, *(p[1] for p in self.pairs)])
            exact = _exact_squared(self.points, self.centers, rows, columns, self.chunk)
            self.exact = rows, self.radii[columns], exact
        return self.exact


def _search(
    q: _Tiles,
    r: _Tiles,
    n: int,
    exclude: Tensor | None,
    symmetric: bool,
    query_covers: Sequence[_Cover] = (),
    reference_covers: Sequence[_Cover] = (),
) -> tuple[Tensor, Tensor] | None:
    """The ``n`` nearest references of every query by GEMM distance, sorted.

    Args:
        q, r: query and reference tiles.
        n: candidates kept per query (0: no search, only the covers).
        exclude: (Nq,) reference index each query must skip (its own), or None.
        symmetric: ``q`` is ``r`` and every point skips itself: only tiles on or above the
            diagonal are computed, each serving its rows and, transposed, its columns.
        query_covers, reference_covers: fed from the same tiles (not with ``symmetric``):
            covers of the queries by balls at the references, of the references by balls at
            the queries.

    Returns:
        Squared distances (Nq, n) in the search precision (not clamped at 0) and int64
        indices (Nq, n); None when ``n`` is 0.
    """
    top = _RunningTop(n) if n else None
    for i in progress(q.starts(), "kNN search" if n else "ball coverage"):
        for j in r.starts():
            if symmetric and j < i:
                continue
            sq = _squared_distances(q, i, r, j)
            for cover in query_covers:
                cover.add(sq, i, j)
            for cover in reference_covers:
                cover.add(sq.T, j, i)
            if top is None:
                continue
            if symmetric and i == j:
                sq.fill_diagonal_(torch.inf)
            elif exclude is not None:
                columns = torch.arange(j, j + sq.shape[1], device=sq.device)
                sq.masked_fill_(exclude[i : i + q.chunk, None] == columns, torch.inf)
            top.add(i, sq, j)
            if symmetric and i != j:
                top.add(j, sq.T.contiguous(), i)
    return None if top is None else top.result()


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


def _tile_pair(
    q: Tensor, r: Tensor | None, dtype: torch.dtype | None, chunk_size: int
) -> tuple[_Tiles, _Tiles]:
    """Query and reference tiles centred on the reference mean (``r`` None: a self search)."""
    reference = q if r is None else r
    dtype = dtype or torch.promote_types(q.dtype, reference.dtype)
    center = reference.to(torch.float64).mean(dim=0)
    qt = _Tiles(q, center, dtype, chunk_size)
    return qt, qt if r is None else _Tiles(r, center, dtype, chunk_size)


def _exact_neighbors(
    qt: _Tiles, rt: _Tiles, found: tuple[Tensor, Tensor], k: int, self_search: bool
) -> Neighbors:
    """The k nearest of the GEMM search's candidates, re-ranked exactly (module docstring).

    Rows whose surplus of candidates cannot be shown to hold the true k nearest are searched
    again in float64; candidates the GEMM cannot order get exact float64 distances.
    """
    (sq, idx), q, r = found, qt.x, rt.x
    n, available = sq.shape[1], len(r) - 1 if self_search else len(r)
    bound = _rounding_bound(qt, rt)
    short = sq[:, -1] - sq[:, k - 1] <= bound if n < available else bound < 0
    if short.any():
        rows = short.nonzero().squeeze(1)
        exact_q = _Tiles(q[rows], qt.center, torch.float64, qt.chunk)
        exact_r = _Tiles(r, qt.center, torch.float64, qt.chunk)
        exclude = rows if self_search else None
        idx[rows] = _search(exact_q, exact_r, n, exclude, symmetric=False)[1]
    recompute = _uncertain(sq, k, bound) | short[:, None]
    sq = sq.double()
    rows, columns = recompute.nonzero(as_tuple=True)
    sq[rows, columns] = _exact_squared(q, r, rows, idx[rows, columns], qt.chunk)
    sq, idx = _sorted(sq, idx)
    return Neighbors(sq[:, :k].clamp_min(0).sqrt(), idx[:, :k])


def _check_sets(q: Tensor, r: Tensor, k: int, available: int) -> None:
    if not 1 <= k <= available:
        raise UserError(f"kNN needs 1 ≤ k ≤ {available} (the reference set size), got k = {k}.")
    _check_dims(q, r)


def _check_dims(q: Tensor, r: Tensor) -> None:
    if r.shape[1] != q.shape[1]:
        raise UserError(
            f"Feature sizes differ: {q.shape[1]} for the queries, {r.shape[1]} for the reference."
        )


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
    _check_sets(q, r, k, len(q) - 1 if reference is None else len(r))
    with full_precision_matmul(), torch.no_grad():
        qt, rt = _tile_pair(q, None if reference is None else r, dtype, chunk_size)
        n = min(k + margin, len(q) - 1 if reference is None else len(r))
        found = _search(qt, rt, n, None, symmetric=reference is None)
        return _exact_neighbors(qt, rt, found, k, self_search=reference is None)


def cross_search(
    query: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    k: int = 0,
    *,
    reference_radii: Sequence[Tensor] = (),
    query_radii: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype | None = None,
    margin: int = DEFAULT_MARGIN,
) -> tuple[Neighbors | None, list[_Cover], _Cover | None]:
    """One pass over the query × reference distances: kNN and ball covers in both directions.

    Every tile of distances is computed once and serves the k-nearest-reference search of the
    queries, the covers of the queries by balls at the references (one per radii set) and the
    cover of the references by balls at the queries — what AvgkNN, LOF, Rarity, precision and
    recall need of the generated × real distances, for the price of one GEMM.

    Args:
        query: (Nq, D) features.
        reference: (Nr, D) features.
        k: neighbours of each query among the references as :func:`knn`; 0: no search.
        reference_radii: float64 (Nr,) radii of balls centred at the references, each set
            covering the queries.
        query_radii: float64 (Nq,) radii of balls centred at the queries, covering the
            references, or None.
        chunk_size, dtype, margin: as :func:`knn`.

    Returns:
        (neighbours or None, one cover of the queries per ``reference_radii``, the cover of the
        references or None); a cover's ``smallest(inclusive)`` gives float64 (N,) the
        smallest radius of a ball holding each point, ``inf`` where none does.
    """
    q = as_features(query)
    r = as_features(reference, device=q.device)
    _check_sets(q, r, k, len(r)) if k else _check_dims(q, r)  # k = 0: covers alone
    with full_precision_matmul(), torch.no_grad():
        qt, rt = _tile_pair(q, r, dtype, chunk_size)
        bound = float(_rounding_bound(qt, rt).max())
        queries = [_Cover(q, r, radii, bound, qt) for radii in reference_radii]
        references = [] if query_radii is None else [_Cover(r, q, query_radii, bound, qt)]
        n = min(k + margin, len(r)) if k else 0
        found = _search(qt, rt, n, None, False, queries, references)
        neighbors = _exact_neighbors(qt, rt, found, k, self_search=False) if k else None
    return neighbors, queries, references[0] if references else None


def smallest_covering_radius(
    query: Tensor | np.ndarray,
    centers: Tensor | np.ndarray,
    radii: Tensor | np.ndarray,
    *,
    inclusive: bool,
    chunk_size: int = DEFAULT_CHUNK,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """For each query point, the smallest radius among the balls that contain it.

    A point q lies in ball i when ``d(q, c_i) ≤ r_i`` (``inclusive``) or ``d(q, c_i) < r_i``,
    decided as in exact arithmetic (pairs near a sphere get exact float64 distances).

    Args:
        query: (Nq, D) features.
        centers: (Nc, D) ball centres.
        radii: (Nc,) ball radii, non-negative.
        inclusive: whether the sphere itself belongs to the ball.
        chunk_size: side of the distance tiles.
        dtype: GEMM precision (default: that of the features).

    Returns:
        float64 (Nq,): the smallest containing radius, ``inf`` where no ball contains the point.
    """
    radii = torch.as_tensor(radii)
    _, (cover,), _ = cross_search(
        query, centers, reference_radii=[radii], chunk_size=chunk_size, dtype=dtype
    )
    return cover.smallest(inclusive)
