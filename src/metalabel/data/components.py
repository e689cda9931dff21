"""A big matrix's rows projected on their leading principal components, with no copy of the matrix.

A pool's embeddings ([N, d] float32, often the memory-mapped embedding cache) are read a block of rows
at a time: the covariance is summed in float64 block by block, its top eigenvectors are the axes, and
the centred rows are projected block by block. Centring the whole matrix first (and a randomized SVD's
[N, q] temporaries) held about 4 KB an item at 784-d, the peak of a labeling round on a big pool
(bench/results/scale.md). The axes are exact, not randomized: the same matrix gives the same axes
whatever the seed. A caller that cannot hold even the [N, dimensions] result (a big pool's neighbour
search) keeps the :class:`PrincipalAxes` and projects the rows it reads, a block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# float64 rows a block: the block's temporaries stay at about 4 MB whatever the pool
BLOCK_BYTES = 4 * 2**20


@dataclass(frozen=True, eq=False)
class PrincipalAxes:
    """The mean of a matrix's rows and its leading principal axes, both float64."""

    mean: Tensor  # [d]
    axes: Tensor  # [d, dimensions], the leading axis first, each axis's largest entry positive

    def project(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), dimensions]`` float32: ``rows`` centred and projected (a temporary float64 copy of them)."""
        return (torch.from_numpy(np.asarray(rows, dtype=np.float64)).sub_(self.mean) @ self.axes).numpy() \
            .astype(np.float32)

    def blocks(self, x: np.ndarray, *, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, projection)`` of ``x``'s rows, ``rows`` at a time (by default about ``BLOCK_BYTES`` of them)."""
        size = rows or max(BLOCK_BYTES // (8 * x.shape[1]), 1)
        for start in range(0, len(x), size):
            yield start, self.project(x[start:start + size])


def principal_axes(x: np.ndarray, dimensions: int) -> PrincipalAxes:
    """The ``dimensions`` leading principal axes of ``x``'s rows (``[N, d]``, ``dimensions < d``), read by blocks.

    Each axis's sign is fixed (its largest entry positive), so the axes depend on the matrix alone.
    """
    import scipy.linalg

    n, d = x.shape
    block = max(BLOCK_BYTES // (8 * d), 1)
    # summed about the first block's mean, not the origin: embeddings far from it would cancel digits below
    shift = torch.from_numpy(x[:block].astype(np.float64)).mean(0)
    total, scatter = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, n, block):
        rows = torch.from_numpy(x[start:start + block].astype(np.float64)).sub_(shift)
        total += rows.sum(0)
        scatter.addmm_(rows.T, rows)
    offset = total / n
    scatter.sub_(torch.outer(offset, offset), alpha=n)  # about the mean; its scale (1/N) moves no eigenvector
    # only the leading eigenvectors: half the time of all of them at 2,024-d (in ascending order)
    _, vectors = scipy.linalg.eigh(scatter.numpy(), subset_by_index=[d - dimensions, d - 1])
    axes = torch.from_numpy(np.ascontiguousarray(vectors[:, ::-1]))
    axes *= axes.gather(0, axes.abs().argmax(0, keepdim=True)).sign()
    return PrincipalAxes(shift + offset, axes)


def leading_components(x: np.ndarray, dimensions: int) -> np.ndarray:
    """``[N, dimensions]`` float32: the rows of ``x`` (``[N, d]``) centred and projected on their
    ``dimensions`` leading principal components (``dimensions < d``)."""
    axes = principal_axes(x, dimensions)
    projected = np.empty((len(x), dimensions), dtype=np.float32)
    for start, block in axes.blocks(x):
        projected[start:start + len(block)] = block
    return projected
