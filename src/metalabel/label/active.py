"""Query strategies: which pool items are worth a person's time next.

Every strategy is a plain function (as in modAL) with one signature::

    strategy(pool: QueryPool, *, budget, rng) -> np.ndarray of indices into the candidate pool, most valuable first

``QueryPool`` holds what a strategy may read of the candidate pool: the model's
``[N, C]`` class probabilities, its ``[N, D]`` features, the features of items
already labeled (the diversity strategies avoid their neighbourhood) and, for
BADGE, gradient embeddings computed elsewhere; a strategy that does not use one
accepts ``None`` for it. Each call returns ``min(budget, N)`` distinct indices,
and the same ``rng`` state gives the same answer.

The strategies:

- ``least_confidence``, ``margin``, ``entropy``: uncertainty of the prediction.
- ``random``: the baseline every other strategy must beat.
- ``coreset``: k-center greedy (Sener & Savarese, 2018): each pick is the item
  farthest from everything labeled or already picked.
- ``badge``: BADGE (Ash et al., 2020): k-means++ seeding on gradient embeddings
  ``(onehot(pred) - p) ⊗ embedding``, so picks are both uncertain (large
  gradient) and diverse (far apart in gradient space).
- ``typiclust``: TypiClust (Hacohen et al., 2022), for the cold start: cluster
  the pool into ``budget + n_labeled`` clusters and ask about the most typical
  item of each cluster that has no label yet, largest cluster first.

``select(name, ...)`` runs one by name and, by default, spreads the questions
over the predicted classes (``class_balanced``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from metalabel.data.arrays import check_matrix
from metalabel.errors import BadInputError, MissingDependencyError


@dataclass(frozen=True)
class QueryPool:
    """What a query strategy reads of the candidate pool, one row per candidate item (None: not given)."""

    probs: np.ndarray | None = None  # [N, C] the model's class probabilities
    embeddings: np.ndarray | None = None  # [N, D] its features
    labeled_embeddings: np.ndarray | None = None  # [L, D] features of the items already labeled
    gradient_embeddings: np.ndarray | None = None  # [N, G] for BADGE, where the caller computed true ones


class Strategy(Protocol):
    def __call__(self, pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray: ...


MAX_CANDIDATES = 20_000
"""The diversity strategies (coreset, badge, typiclust) look at a seeded random subsample of this
many pool items (or of ``budget``, if larger) when the pool is bigger: their cost grows with pool
size times budget, and a 20k sample of a pool covers its dense regions just as well."""

CLASS_BALANCE_OVERSAMPLE = 4
"""``select`` ranks this many times the budget before balancing, so that a class can be
represented by its own most valuable items instead of whatever happened to be in the top ``budget``."""

_TYPICALITY_NEIGHBOURS = 20  # as in the TypiClust paper
_TYPICLUST_DIMS = 50  # principal components TypiClust clusters in
_DISTANCE_BLOCK_ELEMENTS = 8_000_000  # bounds the [rows, n_labeled] distance block (64 MB of float64)


# ------------------------------------------------------------------ uncertainty


def least_confidence(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Items whose most likely class is least likely: highest ``1 - max(p)`` first."""
    p = _probabilities(pool.probs, "least_confidence")
    return _top_scores(1.0 - p.max(axis=1), budget, rng)


def margin(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Items whose two most likely classes are closest: smallest ``p(1st) - p(2nd)`` first."""
    p = _probabilities(pool.probs, "margin")
    if p.shape[1] < 2:
        raise BadInputError("margin sampling needs probabilities over at least 2 classes", hint="use 'random'")
    top_two = np.partition(p, -2, axis=1)[:, -2:]
    return _top_scores(top_two[:, 0] - top_two[:, 1], budget, rng)


def entropy(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Items with the most spread-out prediction: highest Shannon entropy first."""
    p = _probabilities(pool.probs, "entropy")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return _top_scores(terms.sum(axis=1), budget, rng)


def random(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random items: the baseline."""
    n = _pool_size("random", pool)
    return rng.permutation(n)[: _budget(budget, n)]


# -------------------------------------------------------------------- diversity


def coreset(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """k-center greedy: repeatedly pick the item farthest from all labeled and already picked items.

    With nothing labeled yet, the first pick is random.
    """
    features = _features(pool.embeddings, "coreset", "embeddings")
    n = len(features)
    budget = _budget(budget, n)
    candidates = _subsample(n, budget, rng)
    x = features[candidates]
    x_sq = _row_sq_norms(x)

    labeled = _labeled(pool.labeled_embeddings, x.shape[1])
    if labeled is None:
        nearest_sq = np.full(len(x), np.inf)
    else:
        nearest_sq = _min_sq_distances(x, x_sq, labeled)

    picks: list[int] = []
    for _ in range(budget):
        pick = int(rng.integers(len(x))) if np.isposinf(nearest_sq).all() else int(np.argmax(nearest_sq))
        picks.append(pick)
        nearest_sq = np.minimum(nearest_sq, _sq_distances_to(x, x_sq, pick))
        nearest_sq[picks] = -np.inf  # never pick twice, even when every item left duplicates a picked one
    return candidates[np.asarray(picks, dtype=np.int64)]


def badge(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE: k-means++ seeding on gradient embeddings.

    The gradient embedding of item ``i`` is the last layer's loss gradient under the
    model's own prediction: ``g_i = (onehot(argmax p_i) - p_i) ⊗ e_i``. Its length grows
    with uncertainty and its direction says where the item lies, so k-means++ seeding
    (first the longest, then each next one with probability proportional to its squared
    distance to the nearest pick) trades uncertainty against diversity without a knob.

    ``g`` is never built: ``<g_i, g_j> = <a_i, a_j> <e_i, e_j>`` with ``a = onehot - p``,
    so distances cost ``O(N (C + D))`` memory instead of ``O(N C D)``. A caller with true
    gradient embeddings (e.g. of a deeper layer) passes them as ``gradient_embeddings``.
    As in the paper, labeled items are not consulted: the model fitted on them already
    shrinks the gradients of items like them.
    """
    space: _ExplicitSpace | _GradientSpace
    if pool.gradient_embeddings is not None:
        explicit = _features(pool.gradient_embeddings, "badge", "gradient_embeddings")
        n = _pool_size("badge", pool)
        budget = _budget(budget, n)
        candidates = _subsample(n, budget, rng)
        space = _ExplicitSpace(explicit[candidates])
    else:
        p = _probabilities(pool.probs, "badge")
        features = _features(pool.embeddings, "badge", "embeddings")
        n = _pool_size("badge", QueryPool(p, features))
        budget = _budget(budget, n)
        candidates = _subsample(n, budget, rng)
        p = p[candidates]
        residual = -p
        residual[np.arange(len(p)), p.argmax(axis=1)] += 1.0
        space = _GradientSpace(residual, features[candidates])
    if budget == 0:
        return np.empty(0, dtype=np.int64)

    picks = [int(np.argmax(space.sq_norms))]
    nearest_sq = space.sq_distances_to(picks[0])
    while len(picks) < budget:
        nearest_sq[picks] = 0.0  # rounding must not give a picked item a chance again
        total = nearest_sq.sum()
        if total > 0:
            pick = int(rng.choice(len(nearest_sq), p=nearest_sq / total))
        else:  # every item left coincides with a pick (e.g. all fully confident): fall back to random
            pick = int(rng.choice(np.setdiff1d(np.arange(len(nearest_sq)), picks)))
        picks.append(pick)
        nearest_sq = np.minimum(nearest_sq, space.sq_distances_to(pick))
    return candidates[np.asarray(picks, dtype=np.int64)]


class _GradientSpace:
    """Squared distances between implicit gradient embeddings ``a_i ⊗ e_i``."""

    def __init__(self, residual: np.ndarray, features: np.ndarray) -> None:
        self.residual = residual
        self.features = features
        self.sq_norms = _row_sq_norms(residual) * _row_sq_norms(features)

    def sq_distances_to(self, index: int) -> np.ndarray:
        inner = (self.residual @ self.residual[index]) * (self.features @ self.features[index]).astype(np.float64)
        return np.maximum(self.sq_norms + self.sq_norms[index] - 2.0 * inner, 0.0)


class _ExplicitSpace:
    """Squared distances between gradient embeddings the caller computed."""

    def __init__(self, gradients: np.ndarray) -> None:
        self.gradients = gradients
        self.sq_norms = _row_sq_norms(gradients)

    def sq_distances_to(self, index: int) -> np.ndarray:
        return _sq_distances_to(self.gradients, self.sq_norms, index)


def typiclust(pool: QueryPool, *, budget: int, rng: np.random.Generator) -> np.ndarray:
    """TypiClust, for the first labels, when a model's uncertainty means little yet.

    The pool is split into ``budget + n_labeled`` k-means clusters; each pick is the most
    typical item (inverse mean distance to its 20 nearest neighbours in its cluster) of the
    largest cluster that holds no labeled or picked item. Once every cluster holds one, the
    least covered clusters, largest first, give their next most typical item.
    """
    try:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
    except ImportError:
        raise MissingDependencyError(
            "the 'typiclust' strategy needs scikit-learn: pip install scikit-learn"
        ) from None

    features = _features(pool.embeddings, "typiclust", "embeddings")
    n = len(features)
    budget = _budget(budget, n)
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    candidates = _subsample(n, budget, rng)
    x = features[candidates].astype(np.float32, copy=False)
    labeled = _labeled(pool.labeled_embeddings, x.shape[1])
    n_labeled = 0 if labeled is None else len(labeled)

    seed = int(rng.integers(2**31 - 1))
    if x.shape[1] > _TYPICLUST_DIMS:
        # k-means on 20k x 1280 encoder features takes minutes on two cores; in 50 principal
        # components it takes seconds and the clusters and neighbourhoods are much the same.
        pca = PCA(n_components=min(_TYPICLUST_DIMS, len(x)), random_state=seed).fit(x)
        x = pca.transform(x).astype(np.float32)
        labeled = None if labeled is None else pca.transform(labeled).astype(np.float32)

    n_clusters = min(len(x), budget + n_labeled)
    kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
    cluster_of = kmeans.fit_predict(x)
    sizes = np.bincount(cluster_of, minlength=n_clusters)
    coverage = np.zeros(n_clusters, dtype=np.int64)
    if labeled is not None:
        coverage += np.bincount(kmeans.predict(labeled.astype(np.float32)), minlength=n_clusters)

    members_by_typicality = [_by_typicality(x, np.flatnonzero(cluster_of == c)) for c in range(n_clusters)]
    next_member = np.zeros(n_clusters, dtype=np.int64)
    picks: list[int] = []
    while len(picks) < budget:
        exhausted = next_member >= sizes
        # Least covered first, then largest, then lowest cluster id (lexsort: last key is primary).
        cluster = int(np.lexsort((np.arange(n_clusters), -sizes, coverage, exhausted))[0])
        picks.append(int(members_by_typicality[cluster][next_member[cluster]]))
        next_member[cluster] += 1
        coverage[cluster] += 1
    return candidates[np.asarray(picks, dtype=np.int64)]


def _by_typicality(x: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The cluster's members, most typical first (a singleton is trivially its own most typical).

    Typicality is the inverse mean distance to the item's ``k`` nearest neighbours in its
    cluster; the neighbours come from row blocks of the distance matrix, so a large
    cluster never needs the whole matrix in memory.
    """
    if len(members) < 2:
        return members
    points = x[members]
    points_sq = _row_sq_norms(points)
    k = min(_TYPICALITY_NEIGHBOURS, len(members) - 1)
    mean_distance = np.empty(len(points))
    rows = max(1, _DISTANCE_BLOCK_ELEMENTS // len(points))
    for start in range(0, len(points), rows):
        block = slice(start, start + rows)
        sq = np.maximum(points_sq[block, None] + points_sq[None, :] - 2.0 * (points[block] @ points.T), 0.0)
        nearest = np.partition(sq, k, axis=1)[:, : k + 1]  # the k nearest plus the item itself (distance 0)
        mean_distance[block] = np.sqrt(nearest).sum(axis=1) / k
    typicality = 1.0 / (mean_distance + 1e-12)
    return members[np.argsort(-typicality, kind="stable")]


# ------------------------------------------------------------ class balance, select


def class_balanced(strategy_indices: np.ndarray, probs: np.ndarray, *, budget: int) -> np.ndarray:
    """Choose ``budget`` of a strategy's ranked indices, round-robin over the predicted classes.

    Round ``r`` takes the ``r``-th most valuable item of every predicted class, in the
    strategy's order, so the first question is still the strategy's first choice and no
    predicted class gets a second question before every class present got its first.
    """
    p = _probabilities(probs, "class_balanced")
    ranked = np.asarray(strategy_indices)
    if ranked.ndim != 1 or (ranked.size and not np.issubdtype(ranked.dtype, np.integer)):
        raise BadInputError("strategy_indices must be a 1-D array of integer indices")
    if ranked.size and (ranked.min() < 0 or ranked.max() >= len(p)):
        raise BadInputError(f"strategy_indices must lie in 0..{len(p) - 1}, the rows of probs")
    if len(np.unique(ranked)) != len(ranked):
        raise BadInputError("strategy_indices name an item twice", hint="pass a strategy's ranking as it is")

    predicted = p[ranked].argmax(axis=1)
    seen_per_class: dict[int, int] = {}
    round_of = np.empty(len(ranked), dtype=np.int64)
    for position, cls in enumerate(predicted.tolist()):
        round_of[position] = seen_per_class.get(cls, 0)
        seen_per_class[cls] = round_of[position] + 1
    order = np.lexsort((np.arange(len(ranked)), round_of))
    return ranked[order][: _budget(budget, len(ranked))]


STRATEGIES: dict[str, Strategy] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "random": random,
    "coreset": coreset,
    "badge": badge,
    "typiclust": typiclust,
}


def select(name: str, pool: QueryPool, *, budget: int, rng: np.random.Generator,
           balance_classes: bool = True) -> np.ndarray:
    """Run the strategy called ``name`` (``least-confidence`` and ``least_confidence`` both work).

    With ``balance_classes`` and the pool's ``probs`` given, the strategy ranks
    ``CLASS_BALANCE_OVERSAMPLE * budget`` items and ``class_balanced`` chooses ``budget``
    of them spread over the predicted classes; without ``probs`` (a cold start) there are
    no predicted classes to balance over and the strategy's own choice is returned.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in STRATEGIES:
        raise BadInputError(f"no query strategy named {name!r}", hint=f"choose one of {', '.join(STRATEGIES)}")
    strategy = STRATEGIES[key]
    if not balance_classes or pool.probs is None:
        return strategy(pool, budget=budget, rng=rng)
    n = _pool_size(key, pool)
    budget = _budget(budget, n)
    ranked = strategy(pool, budget=min(n, CLASS_BALANCE_OVERSAMPLE * budget), rng=rng)
    return class_balanced(ranked, pool.probs, budget=budget)


# ---------------------------------------------------------------------- helpers


def _top_scores(scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the highest scores; ties are broken at random so equal items are not chosen by position."""
    budget = _budget(budget, len(scores))
    shuffled = rng.permutation(len(scores))
    return shuffled[np.argsort(-scores[shuffled], kind="stable")[:budget]]


def _budget(budget: int, n: int) -> int:
    try:
        budget = operator.index(budget)
    except TypeError:
        raise BadInputError(f"budget must be a whole number, got {budget!r}") from None
    if budget < 0:
        raise BadInputError(f"budget must be 0 or more, got {budget}")
    return min(budget, n)


def _probabilities(probs: np.ndarray | None, strategy: str) -> np.ndarray:
    if probs is None:
        raise BadInputError(
            f"the {strategy!r} strategy needs the model's class probabilities",
            hint="pass probs [N, C], or use 'typiclust' or 'coreset' before a model exists",
        )
    p = check_matrix(probs, name="probs", columns="classes", min_rows=0, dtype=np.float64,
                     hint="check the model's output")
    negative = np.flatnonzero((p < 0).any(axis=1))
    if negative.size:
        raise BadInputError("probs must be non-negative", row=int(negative[0]), hint="pass probabilities, not logits")
    return p


def _features(values: np.ndarray | None, strategy: str, what: str) -> np.ndarray:
    if values is None:
        raise BadInputError(f"the {strategy!r} strategy needs {what} [N, D]", hint=f"pass {what}")
    return check_matrix(values, name=what, columns="dims", min_rows=0, min_columns=0, hint="check the encoder's output")


def _labeled(labeled_embeddings: np.ndarray | None, dims: int) -> np.ndarray | None:
    if labeled_embeddings is None or len(labeled_embeddings) == 0:
        return None
    labeled = _features(labeled_embeddings, "diversity", "labeled_embeddings")
    if labeled.shape[1] != dims:
        raise BadInputError(
            f"labeled_embeddings have {labeled.shape[1]} dims but the pool's embeddings have {dims}",
            hint="embed labeled and pool items with the same encoder",
        )
    return labeled


def _pool_size(strategy: str, pool: QueryPool) -> int:
    arrays = {"probs": pool.probs, "embeddings": pool.embeddings, "gradient_embeddings": pool.gradient_embeddings}
    sizes = {what: len(values) for what, values in arrays.items() if values is not None}
    if not sizes:
        raise BadInputError(f"the {strategy!r} strategy needs probs or embeddings to know the pool")
    if len(set(sizes.values())) > 1:
        said = ", ".join(f"{what} has {size}" for what, size in sizes.items())
        raise BadInputError(f"the candidate pool's arrays disagree on its size: {said} rows")
    return next(iter(sizes.values()))


def _subsample(n: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """All candidate indices, or a seeded sorted sample of ``MAX_CANDIDATES`` (or ``budget``, if more) of them."""
    size = max(MAX_CANDIDATES, budget)
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def _row_sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


def _sq_distances_to(x: np.ndarray, x_sq: np.ndarray, index: int) -> np.ndarray:
    inner = (x @ x[index]).astype(np.float64)
    return np.maximum(x_sq + x_sq[index] - 2.0 * inner, 0.0)


def _min_sq_distances(x: np.ndarray, x_sq: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Squared distance from each row of ``x`` to its nearest row of ``others``, in row chunks."""
    others = others.astype(x.dtype, copy=False)
    others_sq = _row_sq_norms(others)
    nearest = np.empty(len(x))
    rows = max(1, _DISTANCE_BLOCK_ELEMENTS // len(others))
    for start in range(0, len(x), rows):
        block = slice(start, start + rows)
        sq = x_sq[block, None] + others_sq[None, :] - 2.0 * (x[block] @ others.T)
        nearest[block] = np.maximum(sq.min(axis=1), 0.0)
    return nearest
