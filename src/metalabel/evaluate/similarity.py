"""How close generated data is to real data, measured in an encoder's feature space.

NumPy in, NumPy out: ``real`` is ``[N, D]`` and ``generated`` is ``[M, D]`` features
of the same encoder. Three views, because each misses something the others catch:

- ``mmd``: a kernel two-sample statistic. It is about 0 when both come from one
  distribution and grows as they part.
- ``frechet_distance``: the distance between Gaussians fitted to each side (FID
  when the encoder is Inception). It reads the means and covariances only.
- ``knn_precision_recall``: fidelity and diversity apart. A generator that
  copies a few real items has high precision and low recall.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import LinAlgWarning, sqrtm
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors

from metalabel.data.arrays import check_matrix
from metalabel.errors import BadInputError, check_whole_number

FloatArray = NDArray[np.float64]

DEFAULT_MAX_ITEMS = 2000
"""Items per side for the pairwise statistics. The kernel matrix of 2 x 2000 items is 128 MB and takes
well under a second. The statistics' sampling noise at that size is far below the gaps worth reporting."""

_SQRTM_RIDGE = 1e-6  # relative to the mean variance; what makes a singular covariance product's root finite


def mmd(
    real: ArrayLike,
    generated: ArrayLike,
    *,
    bandwidth: float | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
    seed: int = 0,
) -> float:
    """Unbiased squared maximum mean discrepancy with the Gaussian kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``.

    ``bandwidth=None`` takes the median heuristic: the median distance between distinct
    points of the pooled sample. Each side is subsampled to at most ``max_items``
    items, chosen with ``seed``. The estimate is unbiased, so for two samples
    of one distribution it scatters around 0 and can come out slightly negative.
    """
    x, y = _feature_pair(real, generated)
    check_whole_number("max_items", max_items, minimum=2)
    if bandwidth is not None and not 0 < bandwidth < np.inf:
        raise BadInputError(f"bandwidth must be a finite number > 0 or None, got {bandwidth}")
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_items, rng), _subsample(y, max_items, rng)

    pooled = np.concatenate([x, y])
    pooled -= pooled.mean(axis=0)  # centring keeps |a|^2 + |b|^2 - 2ab from cancelling on data far from 0
    norms = np.square(pooled).sum(axis=1)
    kernel = norms[:, None] + norms[None, :] - 2.0 * (pooled @ pooled.T)
    np.maximum(kernel, 0.0, out=kernel)  # squared distances; round-off can dip below 0
    if bandwidth is None:
        positive = kernel[kernel > 0]
        # With no two distinct points the kernel is all ones and MMD is 0 at any bandwidth.
        bandwidth = float(np.sqrt(np.median(positive))) if positive.size else 1.0
    # In place: a second 4000 x 4000 matrix would double the memory.
    np.multiply(kernel, -0.5 / bandwidth**2, out=kernel)
    np.exp(kernel, out=kernel)

    n, m = len(x), len(y)
    real_block, generated_block = kernel[:n, :n], kernel[n:, n:]
    within_real = (real_block.sum() - np.trace(real_block)) / (n * (n - 1))
    within_generated = (generated_block.sum() - np.trace(generated_block)) / (m * (m - 1))
    between = kernel[:n, n:].mean()
    return float(within_real + within_generated - 2.0 * between)


def frechet_distance(real: ArrayLike, generated: ArrayLike) -> float:
    """``|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` between Gaussians fitted to each side.

    Uses every item, since the means and covariances cost only ``O(N D^2)``. With ``N <= D``
    or ``M <= D`` items a side's covariance is rank-deficient. A number still comes
    back, but it is biased upward and not comparable across sample sizes.
    Compare distances computed from equal, large counts (for FID, thousands). The
    result is clipped at 0, which round-off can undershoot.
    """
    x, y = _feature_pair(real, generated)
    mean_gap = x.mean(axis=0) - y.mean(axis=0)
    cov_real = np.atleast_2d(np.cov(x, rowvar=False))  # atleast_2d: np.cov of one feature is 0-d
    cov_generated = np.atleast_2d(np.cov(y, rowvar=False))
    cross = _trace_sqrt_product(cov_real, cov_generated)
    value = mean_gap @ mean_gap + np.trace(cov_real) + np.trace(cov_generated) - 2.0 * cross
    return float(max(value, 0.0))


def knn_precision_recall(
    real: ArrayLike,
    generated: ArrayLike,
    *,
    k: int = 3,
    max_items: int = DEFAULT_MAX_ITEMS,
    seed: int = 0,
) -> tuple[float, float]:
    """``(precision, recall)`` of generated against real data (Kynkäänniemi et al. 2019).

    Each item spans a ball out to its k-th nearest neighbour on its own side.
    Precision (fidelity) is the share of generated items inside some real item's
    ball. Recall (diversity) is the share of real items inside some generated item's
    ball. The balls shrink as a side grows, so compare results from equal counts.
    Each side is subsampled to at most ``max_items`` items, chosen with ``seed``.
    """
    x, y = _feature_pair(real, generated)
    check_whole_number("k", k, minimum=1)
    check_whole_number("max_items", max_items, minimum=2)
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_items, rng), _subsample(y, max_items, rng)
    if k >= min(len(x), len(y)):
        raise BadInputError(
            f"k={k} needs more than k items on each side, got {len(x)} real and {len(y)} generated",
            hint="lower k or pass more items",
        )
    return _share_inside(y, x, k=k), _share_inside(x, y, k=k)


def similarity_report(real: ArrayLike, generated: ArrayLike, *, seed: int = 0) -> dict[str, float]:
    """All three views at their defaults: ``mmd``, ``frechet``, ``precision``, ``recall``, and the
    item counts ``real`` and ``generated`` (before subsampling)."""
    x, y = _feature_pair(real, generated)
    precision, recall = knn_precision_recall(x, y, seed=seed)
    return {
        "mmd": mmd(x, y, seed=seed),
        "frechet": frechet_distance(x, y),
        "precision": precision,
        "recall": recall,
        "real": len(x),
        "generated": len(y),
    }


def _feature_pair(real: ArrayLike, generated: ArrayLike) -> tuple[FloatArray, FloatArray]:
    # two items at least: a covariance or a nearest neighbour needs them
    x, y = (check_matrix(values, name=name, min_rows=2, dtype=np.float64, hint="drop or re-embed those items",
                         shape_hint="pass encoder features, one row per item")
            for values, name in ((real, "real"), (generated, "generated")))
    if x.shape[1] != y.shape[1]:
        raise BadInputError(
            f"real has {x.shape[1]} features per item but generated has {y.shape[1]}",
            hint="embed both with the same encoder",
        )
    return x, y


def _subsample(x: FloatArray, max_items: int, rng: np.random.Generator) -> FloatArray:
    if len(x) <= max_items:
        return x
    return x[np.sort(rng.choice(len(x), size=max_items, replace=False))]


def _trace_sqrt_product(a: FloatArray, b: FloatArray) -> float:
    """``Tr((a b)^(1/2))`` for covariances ``a`` and ``b``."""
    with warnings.catch_warnings():
        # Singular products are expected with N <= D (see frechet_distance) and handled here.
        warnings.simplefilter("ignore", LinAlgWarning)
        root = sqrtm(a @ b)
        if not np.isfinite(root).all():
            # A singular product can defeat the Schur method; a small ridge on both makes the root well posed.
            scale = (np.trace(a) + np.trace(b)) / (2 * len(a))
            ridge = _SQRTM_RIDGE * scale * np.eye(len(a))
            root = sqrtm((a + ridge) @ (b + ridge))
    # a b is similar to a^(1/2) b a^(1/2), so its eigenvalues are real and >= 0; any imaginary part is round-off.
    return float(np.trace(root).real)


def _share_inside(points: FloatArray, manifold: FloatArray, *, k: int) -> float:
    """Share of ``points`` within the k-NN ball of at least one item of ``manifold``."""
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(manifold)
    radii = neighbours.kneighbors(manifold)[0][:, k]  # column 0 is the item itself
    inside = pairwise_distances_chunked(
        points, manifold, reduce_func=lambda chunk, _start: (chunk <= radii).any(axis=1)
    )
    return float(np.concatenate(list(inside)).mean())
