"""Query strategies: contracts, expected picks on hand-made data, and one honest comparison."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from metalabel.errors import BadInputError
from metalabel.label import active
from metalabel.label.active import STRATEGIES, QueryPool, class_balanced, coreset, select, typiclust


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_digits(return_X_y=True)
    return (features / 16.0).astype(np.float32), labels


@pytest.fixture(scope="module")
def digits_probs(digits) -> np.ndarray:
    """Predictions of a model fitted on 3 labels per class: uncertain in places, as early rounds are."""
    features, labels = digits
    seed_rows = np.concatenate([np.flatnonzero(labels == c)[:3] for c in range(10)])
    return LogisticRegression(max_iter=500).fit(features[seed_rows], labels[seed_rows]).predict_proba(features)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_budget_unique_valid_indices(name, digits, digits_probs):
    features, _ = digits
    for budget in (0, 1, 25):
        picked = STRATEGIES[name](QueryPool(digits_probs, features, labeled_embeddings=features[:10]), budget=budget,
                                  rng=np.random.default_rng(0))
        assert picked.shape == (budget,)
        assert np.issubdtype(picked.dtype, np.integer)
        assert len(np.unique(picked)) == budget
        assert ((0 <= picked) & (picked < len(features))).all()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_same_rng_seed_same_picks(name, digits, digits_probs):
    features, _ = digits

    def pick(seed: int) -> np.ndarray:
        return select(name, QueryPool(digits_probs, features), budget=15, rng=np.random.default_rng(seed))

    assert np.array_equal(pick(3), pick(3))


def test_budget_beyond_the_pool_returns_the_whole_pool():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    picked = active.margin(QueryPool(probs), budget=10, rng=np.random.default_rng(0))
    assert sorted(picked.tolist()) == [0, 1, 2]


def test_uncertainty_strategies_pick_the_expected_items():
    probs = np.array(
        [
            [0.98, 0.01, 0.01],  # 0: sure
            [0.50, 0.49, 0.01],  # 1: two classes neck and neck: smallest margin
            [0.40, 0.31, 0.29],  # 2: spread over all three: least confident, highest entropy
            [0.80, 0.10, 0.10],  # 3: fairly sure
        ]
    )
    rng = np.random.default_rng(0)
    assert active.least_confidence(QueryPool(probs), budget=4, rng=rng).tolist() == [2, 1, 3, 0]
    assert active.margin(QueryPool(probs), budget=2, rng=rng).tolist() == [1, 2]
    assert active.entropy(QueryPool(probs), budget=4, rng=rng).tolist() == [2, 1, 3, 0]


def test_ties_are_broken_by_the_rng_not_by_position():
    uniform = np.full((100, 4), 0.25)
    firsts = {int(active.entropy(QueryPool(uniform), budget=1, rng=np.random.default_rng(seed))[0])
              for seed in range(10)}
    assert len(firsts) > 1


def test_coreset_picks_the_points_farthest_from_the_labeled_ones():
    rng = np.random.default_rng(0)
    near = rng.normal(0.0, 0.1, size=(50, 2))
    far = np.array([[10.0, 0.0], [0.0, -10.0], [-7.0, 7.0]])
    pool = np.concatenate([near, far])
    picked = coreset(QueryPool(None, pool, labeled_embeddings=np.zeros((1, 2))), budget=3, rng=rng)
    assert set(picked.tolist()) == {50, 51, 52}
    assert picked[0] == 50  # the farthest first


def test_coreset_spreads_its_picks_instead_of_taking_neighbours():
    """Two far points next to each other: after one is picked, its neighbour is close to a pick."""
    pool = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [5.0, 8.0]])
    labeled = np.array([[0.0, 0.0]])
    picked = coreset(QueryPool(None, pool, labeled_embeddings=labeled), budget=2, rng=np.random.default_rng(0))
    assert picked[0] == 3 and picked[1] == 4


def test_badge_prefers_uncertain_items_and_spreads_them():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 8)).astype(np.float32)
    probs = np.tile([0.99, 0.01], (200, 1))
    uncertain = np.arange(0, 200, 20)  # ten items the model is unsure about
    probs[uncertain] = [0.5, 0.5]
    picked = active.badge(QueryPool(probs, embeddings), budget=10, rng=rng)
    # Confident items have gradient embeddings near zero, so k-means++ seeding lands on the uncertain ones.
    assert len(set(picked.tolist()) & set(uncertain.tolist())) >= 8


def test_badge_accepts_gradient_embeddings_computed_elsewhere(digits, digits_probs):
    features, _ = digits
    residual = -digits_probs.copy()
    residual[np.arange(len(residual)), residual.argmin(axis=1)] += 1.0  # argmin of -p is argmax of p
    gradients = (residual[:, :, None] * features[:, None, :]).reshape(len(features), -1)
    implicit = active.badge(QueryPool(digits_probs, features), budget=12, rng=np.random.default_rng(5))
    explicit = active.badge(QueryPool(gradient_embeddings=gradients), budget=12, rng=np.random.default_rng(5))
    assert np.array_equal(implicit, explicit)


def test_diversity_strategies_subsample_large_pools(monkeypatch):
    monkeypatch.setattr(active, "MAX_CANDIDATES", 50)
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(400, 3))
    probs = rng.dirichlet(np.ones(3), size=400)
    for name in ("coreset", "badge", "typiclust"):
        picked = STRATEGIES[name](QueryPool(probs, pool), budget=80, rng=np.random.default_rng(1))
        assert len(np.unique(picked)) == 80  # budget above the cap still gets budget items


def test_typiclust_cold_start_picks_one_typical_point_per_dense_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    sizes = [120, 90, 60, 30]
    blobs = [centre + rng.normal(0, 1.0, size=(size, 2)) for centre, size in zip(centres, sizes)]
    pool = np.concatenate(blobs)
    blob_of = np.repeat(np.arange(4), sizes)

    picked = typiclust(QueryPool(None, pool), budget=4, rng=np.random.default_rng(1))
    assert sorted(blob_of[picked].tolist()) == [0, 1, 2, 3]
    assert blob_of[picked].tolist() == [0, 1, 2, 3]  # largest cluster first
    # Typical means central: each pick lies near its blob's centre, not on the fringe.
    assert (np.linalg.norm(pool[picked] - centres[blob_of[picked]], axis=1) < 1.0).all()


def test_typiclust_skips_clusters_that_already_hold_a_label():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    pool = np.concatenate([centre + rng.normal(0, 1.0, size=(60, 2)) for centre in centres])
    labeled = np.array([[0.0, 0.0], [20.0, 0.0]])
    picked = typiclust(QueryPool(None, pool, labeled_embeddings=labeled), budget=1, rng=np.random.default_rng(2))
    assert 120 <= picked[0] < 180


def test_typiclust_first_labels_cover_most_digit_classes(digits):
    features, labels = digits
    picked = typiclust(QueryPool(None, features), budget=10, rng=np.random.default_rng(0))
    random_picks = np.random.default_rng(0).permutation(len(features))[:10]
    assert len(set(labels[picked].tolist())) >= 8
    assert len(set(labels[picked].tolist())) >= len(set(labels[random_picks].tolist()))


def test_class_balanced_round_robins_over_predicted_classes():
    predicted = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    probs = np.eye(3)[predicted]
    ranked = np.arange(8)  # a strategy that ranked items in index order
    chosen = class_balanced(ranked, probs, budget=5)
    assert chosen.tolist() == [0, 4, 6, 1, 5]
    assert chosen[0] == ranked[0]  # the strategy's first choice stays first


@pytest.mark.parametrize("name", ["margin", "entropy", "badge"])
def test_select_spreads_questions_evenly_over_predicted_classes(name, digits, digits_probs):
    features, _ = digits
    alone = select(name, QueryPool(digits_probs, features), budget=20, rng=np.random.default_rng(0),
                   balance_classes=False)
    balanced = select(name, QueryPool(digits_probs, features), budget=20, rng=np.random.default_rng(0))
    per_class_alone = np.bincount(digits_probs[alone].argmax(axis=1), minlength=10)
    per_class_balanced = np.bincount(digits_probs[balanced].argmax(axis=1), minlength=10)
    assert per_class_alone.max() > 2  # on its own the strategy crowds some classes ...
    assert per_class_balanced.tolist() == [2] * 10  # ... balanced, each of the 10 classes gets 2 of 20


def test_select_names_the_valid_strategies_for_an_unknown_one(digits_probs):
    with pytest.raises(BadInputError, match="margin") as error:
        select("uncertainty", QueryPool(digits_probs), budget=3, rng=np.random.default_rng(0))
    assert "least_confidence" in str(error.value) and "typiclust" in str(error.value)
    # Hyphens as typed on a command line work too.
    assert len(select("least-confidence", QueryPool(digits_probs), budget=3, rng=np.random.default_rng(0))) == 3


def test_missing_or_bad_inputs_get_typed_errors(digits_probs):
    rng = np.random.default_rng(0)
    with pytest.raises(BadInputError, match="probabilities"):
        active.margin(QueryPool(None, np.zeros((5, 2))), budget=2, rng=rng)
    with pytest.raises(BadInputError, match="embeddings"):
        coreset(QueryPool(digits_probs), budget=2, rng=rng)
    with pytest.raises(BadInputError, match="logits"):
        active.entropy(QueryPool(np.array([[2.0, -1.0]])), budget=1, rng=rng)
    with pytest.raises(BadInputError, match="budget"):
        active.random(QueryPool(digits_probs), budget=-1, rng=rng)
    with pytest.raises(BadInputError, match="disagree"):
        active.badge(QueryPool(digits_probs, np.zeros((3, 4))), budget=1, rng=rng)
    with pytest.raises(BadInputError, match="dims"):
        coreset(QueryPool(None, np.zeros((5, 3)), labeled_embeddings=np.zeros((2, 4))), budget=1, rng=rng)


def _final_accuracy(strategy: str, seed: int, features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy on held-out digits after 10 random seed labels and 5 rounds of 10 questions."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))
    test, pool = order[:500], order[500:]
    labeled = rng.choice(len(pool), size=10, replace=False).tolist()
    for _ in range(5):
        model = LogisticRegression(max_iter=300).fit(features[pool[labeled]], labels[pool[labeled]])
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
        probs = np.zeros((len(unlabeled), 10))
        probs[:, model.classes_] = model.predict_proba(features[pool[unlabeled]])
        picked = select(strategy, QueryPool(probs, features[pool[unlabeled]]), budget=10, rng=rng)
        labeled += unlabeled[picked].tolist()
    model = LogisticRegression(max_iter=300).fit(features[pool[labeled]], labels[pool[labeled]])
    return model.score(features[test], labels[test])


def test_margin_sampling_beats_random_sampling_on_digits(digits):
    """Measured when written: margin 0.899 vs random 0.838 mean accuracy over these 5 seeds
    (60 labels each), and margin won on every seed; on three other blocks of 5 seeds the gap
    was 0.038 to 0.073. The assertion asks for 0.025, below the smallest gap seen."""
    features, labels = digits
    margin_accuracy = np.mean([_final_accuracy("margin", seed, features, labels) for seed in range(5)])
    random_accuracy = np.mean([_final_accuracy("random", seed, features, labels) for seed in range(5)])
    assert margin_accuracy >= random_accuracy + 0.025
