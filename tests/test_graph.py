"""Label propagation over the pool's nearest-neighbour graph, and the round model's heads built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalabel.data.components import leading_components
from metalabel.errors import BadInputError
from metalabel.label.graph import GRAPH_DIMENSIONS, PoolGraph
from metalabel.label.round_model import RoundModel, default_learner, surest_per_class


def two_moons(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles: no line separates them, their neighbours do."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, n)
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 0, np.c_[np.cos(angle), np.sin(angle)],
                 np.c_[1 - np.cos(angle), 0.5 - np.sin(angle)])
    return (x + rng.normal(0, 0.05, x.shape)).astype(np.float32), y


def test_one_label_per_moon_labels_each_moon():
    x, y = two_moons()
    first = [int(np.flatnonzero(y == c)[0]) for c in (0, 1)]
    scores = PoolGraph.build(x).propagate(np.array(first), np.array([0, 1]), np.ones(2), 2)
    assert scores.shape == (len(x), 2) and np.allclose(scores.sum(1), 1)
    assert (scores.argmax(1) == y).mean() > 0.95


def test_an_item_no_label_reaches_gets_equal_shares_of_the_labeled_classes():
    # two far-apart groups of points; only the first carries labels (three of class 0, one of class 1)
    x = np.r_[np.random.default_rng(0).normal(0, 0.01, (20, 2)) + [1, 0],
              np.random.default_rng(1).normal(0, 0.01, (20, 2)) + [-1, 0]].astype(np.float32)
    graph = PoolGraph.build(x, neighbours=3)
    scores = graph.propagate(np.array([0, 1, 2, 3]), np.array([0, 0, 0, 1]), np.ones(4), 2)
    assert np.allclose(scores[20:], [0.5, 0.5])


def test_a_class_with_more_labels_does_not_take_over_its_neighbours():
    # two clusters; class 0 has ten labels, class 1 one: each cluster still keeps its own class
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.3, (50, 2)), rng.normal(0, 0.3, (50, 2)) + [1.2, 0]].astype(np.float32)
    labeled = np.r_[np.arange(10), [50]]
    scores = PoolGraph.build(x).propagate(labeled, np.r_[np.zeros(10, int), [1]], np.ones(11), 2)
    # unnormalized, the ten labels' mass took 14% of the second cluster
    assert (scores[:50].argmax(1) == 0).mean() > 0.95 and (scores[50:].argmax(1) == 1).mean() > 0.95


def test_a_wide_space_is_projected_and_the_graph_is_reproducible():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 600))
    y = np.repeat(np.arange(3), 100)
    x = (centres[y] + rng.normal(0, 0.5, (300, 600))).astype(np.float32)
    assert x.shape[1] > GRAPH_DIMENSIONS
    first, second = PoolGraph.build(x, seed=3), PoolGraph.build(x, seed=3)
    assert (first.affinity != second.affinity).nnz == 0
    labeled = np.array([0, 100, 200])
    assert (first.propagate(labeled, np.arange(3), np.ones(3), 3).argmax(1) == y).mean() > 0.95


def test_the_leading_components_are_an_svds_whatever_the_block_and_their_signs_are_fixed(monkeypatch):
    # summed by blocks of rows (no centred copy of the pool): the projection of the exact principal axes
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(500, 200)) * np.linspace(4, 0.5, 200) + 3).astype(np.float32)
    centred = x - x.astype(np.float64).mean(0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:GRAPH_DIMENSIONS].T
    axes *= np.sign(axes[np.abs(axes).argmax(0), np.arange(GRAPH_DIMENSIONS)])
    whole = leading_components(x, GRAPH_DIMENSIONS)
    np.testing.assert_allclose(whole, centred @ axes, atol=2e-4 * np.abs(centred @ axes).max())
    monkeypatch.setattr("metalabel.data.components.BLOCK_BYTES", 8 * 200 * 7)  # blocks of 7 rows
    np.testing.assert_allclose(leading_components(x, GRAPH_DIMENSIONS), whole, atol=1e-4)


def test_the_graph_does_not_depend_on_how_many_rows_a_distance_block_holds(monkeypatch):
    x, _ = two_moons(300)
    whole = PoolGraph.build(x)  # one block of all 300 rows
    monkeypatch.setattr("metalabel.label.graph.BLOCK_BYTES", 8 * 300 * 16)  # the smallest block, 16 rows
    blocked = PoolGraph.build(x)
    assert abs(whole.affinity - blocked.affinity).max() < 1e-9
    assert whole.affinity.nnz == blocked.affinity.nnz > 0


def test_a_big_pool_gets_approximate_neighbours_that_agree_with_the_exact_ones(monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 4, size=(20, 32))
    x = (centres[rng.integers(0, 20, 3000)] + rng.normal(size=(3000, 32))).astype(np.float32)
    exact = PoolGraph.build(x)
    monkeypatch.setattr("metalabel.label.graph.EXACT_NEIGHBOURS_MAX", 1000)  # 3000 items count as big
    approximate, again = PoolGraph.build(x), PoolGraph.build(x)
    assert (approximate.affinity != again.affinity).nnz == 0  # reproducible: a resumed run gets the same graph
    assert approximate.affinity.diagonal().max() == 0  # no item is its own neighbour
    same_edges = exact.affinity.multiply(approximate.affinity > 0).nnz / exact.affinity.nnz
    assert same_edges > 0.9


@pytest.mark.parametrize("bad", [np.zeros(5), np.array([[0.0, np.nan], [1.0, 2.0]])])
def test_embeddings_that_are_not_a_finite_matrix_are_refused(bad):
    with pytest.raises(BadInputError):
        PoolGraph.build(bad)


def test_the_round_model_offers_propagation_and_an_ensemble_of_it_with_the_linear_probe():
    x, y = two_moons(200)
    model = RoundModel(default_learner(), torch.from_numpy(x))
    heads = {variant.head: variant for variant in model.variants()}
    assert set(heads) == set(RoundModel.HEADS)
    support = np.array([int(np.flatnonzero(y == c)[i]) for c in (0, 1) for i in range(3)])
    weights = np.ones(len(support))
    propagated = heads["label propagation"].logits(support, y[support], weights, 2)
    probe = heads["linear probe"].logits(support, y[support], weights, 2)
    ensemble = heads["ensemble"].logits(support, y[support], weights, 2)
    assert np.allclose(ensemble, probe + propagated)
    # on moons the neighbours know better than a line
    assert (propagated.argmax(1) == y).mean() > (probe.argmax(1) == y).mean()


def test_surest_per_class_takes_the_surest_of_each_predicted_class_among_the_eligible():
    log_probs = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.99, 0.01]]))
    eligible = np.array([True, True, True, True, True, False])  # item 5 is labeled: never a pseudo-label
    positions, classes = surest_per_class(log_probs, eligible, 2)
    # class 0 is predicted for items 0, 1, 2 (the surest two: 0 and 2); class 1 for 3 and 4
    assert positions.tolist() == [0, 2, 3, 4] and classes.tolist() == [0, 0, 1, 1]
    assert surest_per_class(log_probs, np.zeros(6, dtype=bool), 2)[0].size == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_training_on_the_pool_beats_the_probe_it_starts_from_on_real_digits(seed):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype(np.float32)
    rng = np.random.default_rng(seed)
    support = np.concatenate([rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in range(10)])
    heads = {variant.head: variant for variant in RoundModel(default_learner(), torch.from_numpy(x)).variants()}
    accuracy = {head: (heads[head].logits(support, y[support], np.ones(len(support)), 10).argmax(1) == y).mean()
                for head in ("linear probe", "self-training")}
    assert accuracy["self-training"] > accuracy["linear probe"] + 0.03, accuracy  # 0.75-0.78 -> 0.83-0.89 here
    targets = np.array([5, 250])
    alone = heads["self-training"].logits(support, y[support], np.ones(len(support)), 10, targets=targets)
    assert np.allclose(alone, heads["self-training"].logits(support, y[support], np.ones(len(support)), 10)[targets])


def test_wide_spaces_skip_self_training():
    wide = RoundModel(default_learner(), torch.zeros(20, RoundModel.SELF_TRAINING_MAX_DIMENSIONS + 1))
    assert "self-training" not in {variant.head for variant in wide.variants()}


def _same(first: PoolGraph, second: PoolGraph) -> bool:
    a, b = first.affinity, second.affinity
    return bool((a.indptr == b.indptr).all() and (a.indices == b.indices).all() and (a.data == b.data).all())


def test_a_big_pools_graph_is_kept_by_its_content_and_read_back_the_same(cache, monkeypatch):
    import metalabel.label.graph as graph

    monkeypatch.setattr(graph, "CACHED_FROM", 100)  # 300 items count as big
    x, _ = two_moons(300)
    built = PoolGraph.build(x)
    [kept] = (cache / "graphs").glob("graph-*.npz")

    def no_search(*args, **kwargs):
        raise AssertionError("the graph was searched again")

    with monkeypatch.context() as searching:
        searching.setattr(graph, "_exact_neighbours", no_search)
        assert _same(PoolGraph.build(x.copy()), built)  # the same bytes: read back, not searched
        with pytest.raises(AssertionError, match="searched again"):
            PoolGraph.build(x[::-1].copy())  # other embeddings (the same rows in another order): another graph
        with pytest.raises(AssertionError, match="searched again"):
            PoolGraph.build(x, seed=1)  # another seed: another graph

    # a damaged file is a miss: made again, the same graph, and kept whole again
    damaged = bytearray(kept.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    kept.write_bytes(bytes(damaged))
    assert _same(PoolGraph.build(x), built)
    assert graph._read_cached(kept, len(x)) is not None


def test_a_cache_folder_that_cannot_keep_the_graph_leaves_the_graph_as_built(tmp_path, monkeypatch):
    import metalabel.label.graph as graph

    monkeypatch.setattr(graph, "CACHED_FROM", 100)
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("METALABEL_CACHE", str(blocked))
    x, _ = two_moons(300)
    monkeypatch.setattr(graph, "CACHED_FROM", 10**9)
    expected = PoolGraph.build(x)
    monkeypatch.setattr(graph, "CACHED_FROM", 100)
    assert _same(PoolGraph.build(x), expected)


@pytest.mark.parametrize("scale", [1e5, 1e-5])
def test_a_big_pool_far_from_unit_scale_gets_the_same_approximate_neighbours(monkeypatch, scale):
    # faiss keeps the rows in 16-bit floats (at most 65504): coordinates of 1e5 were clipped and 21% of the true
    # neighbours found (check13); measured in the sample's largest coordinate, any scale finds what scale 1 finds
    pytest.importorskip("faiss")
    import metalabel.label.graph as graph

    rng = np.random.default_rng(2)
    centres = rng.normal(0, 4, size=(20, 32))
    x = (centres[rng.integers(0, 20, 3000)] + rng.normal(size=(3000, 32))).astype(np.float32)
    monkeypatch.setattr(graph, "EXACT_NEIGHBOURS_MAX", 1000)
    unit = PoolGraph.build(x).affinity
    scaled = PoolGraph.build(x * np.float32(scale)).affinity
    assert unit.multiply(scaled > 0).nnz / unit.nnz > 0.99 and abs(scaled - unit).max() < 1e-4
