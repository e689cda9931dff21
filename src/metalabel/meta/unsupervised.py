"""Meta-training tasks from an unlabeled pool: clusters in an embedding space as pseudo-classes (CACTUs).

Hsu et al. (2019) showed that episodes whose "classes" are k-means clusters of a
pool's embeddings teach a learner the pool's own notion of similarity, with no
labels at all. A project uses them to meta-learn an embedding for a domain that no
labeled source covers; labeled classes, where the project has enough labels, join
as further classes.
"""

from __future__ import annotations

import numpy as np

from metalabel.data.components import leading_components
from metalabel.data.dataset import LabeledDataset

MAX_CLUSTERING_ITEMS = 20_000  # k-means on a sample keeps this quick on big pools; all items are then assigned
# k-means runs on the leading principal components: on 10k EfficientNet features (1280-d) the
# clustering took over three minutes of a round's four, and the clusters are only pseudo-classes.
CLUSTERING_DIMENSIONS = 64


def cluster_pseudo_labels(features: np.ndarray, *, clusters: int, seed: int = 0) -> np.ndarray:
    """A k-means cluster id for every row of ``features`` (fitted on at most MAX_CLUSTERING_ITEMS rows)."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    reduced = np.asarray(features, dtype=np.float32)
    if reduced.shape[1] > CLUSTERING_DIMENSIONS < len(reduced):
        reduced = leading_components(reduced, CLUSTERING_DIMENSIONS)
    sample = reduced if len(reduced) <= MAX_CLUSTERING_ITEMS else reduced[
        rng.choice(len(reduced), MAX_CLUSTERING_ITEMS, replace=False)]
    kmeans = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit(sample)
    return kmeans.predict(reduced).astype(np.int64)


def pseudo_task_dataset(
    features: np.ndarray,
    *,
    clusters: int,
    min_per_cluster: int,
    labeled: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> LabeledDataset:
    """Pool rows labeled by cluster, plus the labeled rows as classes of their own, ready for episodes.

    Clusters smaller than ``min_per_cluster`` (what an episode needs of a class) are
    left out. ``labeled`` is ``(row indices, class ids)``; a class joins when it has
    ``min_per_cluster`` rows.
    """
    assignments = cluster_pseudo_labels(features, clusters=clusters, seed=seed)
    counts = np.bincount(assignments, minlength=clusters)
    kept = np.flatnonzero(counts >= min_per_cluster)
    remap = np.full(clusters, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    rows = np.flatnonzero(remap[assignments] >= 0)
    labels = [remap[assignments[rows]]]
    names = [f"cluster {k}" for k in kept]
    if labeled is not None:
        indices, classes = labeled
        for cls in np.unique(classes):
            members = indices[classes == cls]
            if len(members) >= min_per_cluster:
                rows = np.concatenate([rows, members])
                labels.append(np.full(len(members), len(names)))
                names.append(f"class {cls}")
    return LabeledDataset(
        name="pseudo-tasks", modality="tabular", items=np.ascontiguousarray(features[rows], dtype=np.float32),
        labels=np.concatenate(labels), class_names=names, uris=[f"pool/{i}" for i in rows],
    )
