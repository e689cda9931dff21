"""Label propagation over the pool's nearest-neighbour graph (Zhou et al. 2004, "local and global consistency").

With a few labels per class a linear head sees a handful of points; the pool itself
says which items lie together. Propagation spreads each label along the pool's
k-nearest-neighbour graph, so a cluster holding one labeled item is labeled as a
whole. Measured on Fashion-MNIST (10k pool, EfficientNet-Lite0 features, 5 labels per
class): 72% pool accuracy against 66% for a logistic regression; with hundreds of
labels the regression overtakes it, and the product of the two beats both
(``metalabel.label.round_model``, head "ensemble").

The graph is built once per embedding (exact k nearest neighbours by Euclidean
distance, in chunks, weighted by a Gaussian kernel; spaces wider than
``GRAPH_DIMENSIONS`` are first projected on their leading principal components so a
60k pool takes seconds, not minutes: exact ones, from the covariance summed by blocks of
rows, ``metalabel.data.components``) and each propagation is a few sparse matrix
products. Euclidean neighbours matched or beat cosine ones on Fashion-MNIST (73-75%
against 73% at 250 labels) and, unlike cosine, also suit tables and low-dimensional data.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from metalabel.data.arrays import check_matrix
from metalabel.data.components import leading_components, principal_axes
from metalabel.data.paths import cache_dir
from metalabel.files import remove_stale_temporaries, write_atomically

GRAPH_DIMENSIONS = 128
NEIGHBOURS = 10
# The distance blocks' memory, whatever the pool's size: a block is as many rows as fit (2,048 at most, 16 at
# least). A fixed 2,048 rows held 16 KB a pool item, most of a round's memory on a big pool (bench/results/scale.md).
BLOCK_BYTES = 64 * 2**20
# Above this many items the neighbours are searched approximately where faiss is installed (the exact search's
# time grows with the square of the pool): measured in bench/results/scale.md.
EXACT_NEIGHBOURS_MAX = 200_000
# Rows an approximate search projects and searches at a time, as float64 bytes of the unprojected rows.
SEARCH_BYTES = 64 * 2**20
# Pools from this many items keep their graph in the cache folder: a smaller pool's takes seconds to build, a
# 100k pool's minutes (the exact search), a 1M pool's most of its first round (bench/results/scale.md).
CACHED_FROM = 50_000


@dataclass(frozen=True, eq=False)
class PoolGraph:
    """The symmetrically normalized affinity ``D^-1/2 W D^-1/2`` of the pool's k-nearest-neighbour graph."""

    affinity: sp.csr_matrix

    @classmethod
    def build(cls, embeddings: np.ndarray, *, neighbours: int = NEIGHBOURS, seed: int = 0) -> PoolGraph:
        """The graph of ``embeddings`` (``[N, d]``); a big pool's is kept in the cache folder by its content
        (``CACHED_FROM`` items and more), so the next run over the same embeddings reads it instead."""
        x = check_matrix(embeddings, name="the pool's embeddings", columns="dimensions", dtype=np.float32,
                         hint="check the encoder's output for those items")
        n = len(x)
        k = min(neighbours, n - 1)
        if k < 1:
            return cls(sp.csr_matrix((n, n), dtype=np.float64))
        if n < CACHED_FROM:
            return cls(_affinity(x, k, seed=seed))
        path = _cache_path(x, k, seed=seed)
        cached = _read_cached(path, n)
        if cached is not None:
            return cls(cached)
        affinity = _affinity(x, k, seed=seed)
        _write_cached(path, affinity)
        return cls(affinity)

    def propagate(self, positions: np.ndarray, classes: np.ndarray, weights: np.ndarray, ways: int, *,
                  alpha: float = 0.99, iterations: int = 30) -> np.ndarray:
        """Class scores ``[items, ways]`` (rows sum to 1) after spreading the labels over the graph.

        ``F <- alpha S F + (1 - alpha) Y`` from ``F = Y``; 30 iterations of ``alpha = 0.99``
        reach items up to 30 hops away. ``Y`` holds each labeled item's class at its weight,
        scaled so every class's labels weigh 1 in all: otherwise a class with more labels
        spreads more mass and wins contested items. Active learning labels classes unevenly:
        on 20 Newsgroups (3k posts, 5 labels a class plus 15 more for three classes) plain
        propagation labeled 39-41% of the pool right, class-normalized 66-68%. An item no
        label reaches gets equal shares, not a made-up preference.
        """
        n = self.affinity.shape[0]
        seeds = np.zeros((n, ways))
        np.add.at(seeds, (np.asarray(positions, dtype=np.int64), np.asarray(classes, dtype=np.int64)),
                  np.asarray(weights, dtype=np.float64))
        mass = seeds.sum(axis=0)
        seeds /= np.where(mass > 0, mass, 1.0)
        scores = seeds.copy()
        for _ in range(iterations):
            scores = alpha * (self.affinity @ scores) + (1 - alpha) * seeds
        scores += 1e-12 * (mass > 0)  # ties and unreached items: equal shares of the labeled classes
        return scores / scores.sum(axis=1, keepdims=True)


def _affinity(x: np.ndarray, k: int, *, seed: int) -> sp.csr_matrix:
    """``D^-1/2 W D^-1/2`` of the k-nearest-neighbour graph of ``x``'s rows, Gaussian-weighted."""
    n = len(x)
    if n > EXACT_NEIGHBOURS_MAX and faiss_installed():
        columns, squared_distance = _approximate_neighbours(x, k, seed=seed)
    else:
        columns, squared_distance = _exact_neighbours(_centred_projection(x), k)
    # each row's neighbours in their search order (an approximate search may find fewer than k: -1)
    found = columns >= 0
    indptr = np.concatenate([[0], np.cumsum(found.sum(1))])
    columns, squared_distance = columns[found], squared_distance[found]
    # a Gaussian kernel whose width is the typical neighbour distance: the space's unit does not matter
    width = max(float(squared_distance.mean()), 1e-12)
    weights = sp.csr_matrix((np.exp(-squared_distance / width), columns, indptr), shape=(n, n))
    del columns, squared_distance
    weights.sum_duplicates()  # sorted within each row, as scipy orders a matrix built from coordinates
    weights = (weights + weights.T).tocsr()  # symmetric: a neighbour relation counts both ways
    degree = np.asarray(weights.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0))
    # D^-1/2 W D^-1/2 in place, each weight scaled by its row's factor, then its column's (the order of
    # the product of diagonal matrices it replaces: the same bits, without two more copies of the graph)
    weights.data *= scale[np.repeat(np.arange(n, dtype=np.int32), np.diff(weights.indptr))]
    weights.data *= scale[weights.indices]
    weights.eliminate_zeros()
    # the sum's arrays were sized for both terms' entries; only those in use are kept
    return sp.csr_matrix((weights.data.copy(), weights.indices.copy(), weights.indptr), shape=(n, n))


def _exact_neighbours(z: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n, k]`` positions and squared distances of each row's k nearest other rows, by blocks of rows."""
    n = len(z)
    squared_norms = torch.einsum("ij,ij->i", z, z)
    columns, distances = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float64)
    # two [block, n] float32 buffers, reused (a block's squared distances were four temporaries)
    block = min(max(BLOCK_BYTES // (8 * n), 16), 2048, n)
    squared, products = torch.empty(block, n), torch.empty(block, n)
    for start in range(0, n, block):
        height = min(block, n - start)
        rows_squared, rows_products = squared[:height], products[:height]
        torch.add(squared_norms[start:start + height, None], squared_norms[None], out=rows_squared)
        torch.matmul(z[start:start + height], z.T, out=rows_products)
        rows_squared.sub_(rows_products.mul_(2))
        own = torch.arange(height)
        rows_squared[own, own + start] = np.inf  # an item is not its own neighbour
        nearest, index = rows_squared.neg_().topk(k, dim=1)
        columns[start:start + height] = index.numpy()
        distances[start:start + height] = np.maximum(-nearest.numpy(), 0.0)
    return columns, distances


def _centred_projection(x: np.ndarray) -> Tensor:
    """The rows centred (the distances' float32 arithmetic loses less far from the origin); a space wider than
    ``GRAPH_DIMENSIONS`` projected on its leading principal components, with no [N, d] copy of it."""
    if x.shape[1] > GRAPH_DIMENSIONS < len(x):
        return torch.from_numpy(leading_components(x, GRAPH_DIMENSIONS))
    z = torch.from_numpy(x)
    return z - z.mean(0)


def _approximate_neighbours(x: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Like ``_exact_neighbours`` from an inverted-file index (faiss), -1 where fewer than k were found.

    4 sqrt(n) k-means cells, 16 of them searched per item: on 100k Fashion-MNIST rows in the
    graph's 128 dimensions 99% of the exact 10 nearest were found, in a third of the exact search's
    time; the exact search grows with n squared (hours at a million items on two cores). The index
    keeps each row in 16-bit floats (99.2% found, as with 32-bit ones, at half the memory), and the
    rows are projected a block at a time as they are added and searched: no [N, 128] projection is held.
    """
    import faiss

    n, dims = x.shape
    axes = principal_axes(x, GRAPH_DIMENSIONS) if dims > GRAPH_DIMENSIONS else None
    mean = None if axes is not None else x.mean(axis=0, dtype=np.float64)  # summed in float64, x not copied

    unit = 1.0

    def projected(rows: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(axes.project(rows) if axes is not None else np.asarray(rows - mean,
                                                                                           dtype=np.float32))
        block /= unit
        return block

    block = max(SEARCH_BYTES // (8 * dims), 1)
    width = min(dims, GRAPH_DIMENSIONS)
    cells = int(4 * np.sqrt(n))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(width), width, cells, faiss.ScalarQuantizer.QT_fp16)
    index.cp.seed = seed
    training = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * cells), replace=False))
    sample = np.empty((len(training), width), dtype=np.float32)  # filled in place: held once, not also as blocks
    for start in range(0, len(training), block):
        sample[start:start + block] = projected(x[training[start:start + block]])
    # 16-bit floats end at 65504: the rows are measured in the sample's largest coordinate, so a pool of any
    # scale fits (16 bits keep 3 digits whatever the unit; distances are given back in the rows' own unit)
    unit = max(float(sample.max(initial=0.0)), -float(sample.min(initial=0.0))) or 1.0  # no |sample| copy
    sample /= unit
    index.train(sample)
    del sample
    for start in range(0, n, block):
        index.add(projected(x[start:start + block]))
    index.nprobe = 16
    columns, distances = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.float64)
    for start in range(0, n, block):
        rows = projected(x[start:start + block])
        block_distances, found = index.search(rows, k + 1)
        # an item is not its own neighbour: drop it where it was found, else the farthest of the k + 1
        drop = found == np.arange(start, start + len(rows))[:, None]
        drop[~drop.any(1), -1] = True
        keep = ~drop
        columns[start:start + len(rows)] = found[keep].reshape(-1, k)
        distances[start:start + len(rows)] = np.maximum(block_distances[keep].reshape(-1, k), 0.0)
    return columns, distances * unit**2


def _cache_path(x: np.ndarray, k: int, *, seed: int) -> Path:
    """Where the graph of ``x`` is kept: named by the embeddings' bytes, the graph's settings, this code's own
    source and the versions of the libraries it calls (a change to how graphs are built never reads an older
    graph)."""
    digest = hashlib.sha256()
    rows = max(HASH_BYTES // max(x.shape[1] * 4, 1), 1)
    for start in range(0, len(x), rows):  # by blocks: a memory-mapped pool is read, never copied whole
        digest.update(np.ascontiguousarray(x[start:start + rows]).data)
    import scipy

    from metalabel.data import components

    approximate = len(x) > EXACT_NEIGHBOURS_MAX and faiss_installed()
    # the libraries that compute it too: another version may break a near tie otherwise
    libraries = [np, scipy, torch, *([sys.modules["faiss"]] if approximate else [])]
    settings = {"shape": list(x.shape), "neighbours": k, "seed": seed, "dimensions": GRAPH_DIMENSIONS,
                "approximate": approximate, "embeddings": digest.hexdigest(),
                "code": [hashlib.sha256(Path(module.__file__ or "").read_bytes()).hexdigest()
                         for module in (sys.modules[__name__], components)],
                "libraries": {library.__name__: str(library.__version__) for library in libraries}}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir() / "graphs" / f"graph-{key}.npz"


HASH_BYTES = 16 * 2**20  # the embeddings hashed a block at a time


def _read_cached(path: Path, n: int) -> sp.csr_matrix | None:
    """The graph kept at ``path``, or None where there is none or it is not whole (a zip member's CRC-32 is checked
    as it is read, so a damaged file is a miss and is made again)."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            data, indices, indptr = kept["data"], kept["indices"], kept["indptr"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if len(indptr) != n + 1 or indptr[0] != 0 or indptr[-1] != len(data) or len(indices) != len(data) \
            or (len(indices) and (indices.min() < 0 or indices.max() >= n)):
        return None
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def _write_cached(path: Path, affinity: sp.csr_matrix) -> None:
    """Keep the graph for the next run; a cache folder that cannot take it leaves the run as it is (the graph is
    made again next time)."""
    def save(file: Path) -> None:
        with open(file, "xb") as out:
            np.savez(out, data=affinity.data, indices=affinity.indices, indptr=affinity.indptr)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        write_atomically(path, save)
    except OSError:
        return


def faiss_installed() -> bool:
    """Whether big pools get the approximate neighbour search (``pip install 'metalabel[ray]'``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True
