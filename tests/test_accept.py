"""Acceptance at a target precision: precision, coverage, class balance, audit intervals."""

import numpy as np
import pytest

from metalabel.errors import BadInputError
from metalabel.label import accept_at_precision, wilson_accuracy


def calibrated_pool(
    items: int, *, predicted_share: list[float], confidence_beta: list[tuple[float, float]], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose top class is c with the given shares, top confidence ~ Beta per class,
    and true labels drawn from each row: calibrated by construction, class by class."""
    rng = np.random.default_rng(seed)
    classes = len(predicted_share)
    top_class = rng.choice(classes, size=items, p=predicted_share)
    a, b = np.array(confidence_beta).T
    # Keep the top probability above the others' (1 - top) / (classes - 1), so it really is the top.
    top = np.maximum(rng.beta(a[top_class], b[top_class]), 1.0 / classes + 1e-3)
    probs = np.repeat(((1 - top) / (classes - 1))[:, None], classes, axis=1)
    probs[np.arange(items), top_class] = top
    y = (probs.cumsum(axis=1) > rng.random((items, 1))).argmax(axis=1)
    return probs, y


def achieved_precision(decision, y: np.ndarray) -> float:
    return float((decision.predicted[decision.mask] == y[decision.mask]).mean())


EVEN_POOL = dict(predicted_share=[0.2] * 5, confidence_beta=[(6.0, 1.5)] * 5)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_achieved_precision_meets_the_target_within_noise(target: float) -> None:
    probs, y = calibrated_pool(20_000, **EVEN_POOL, seed=0)
    decision = accept_at_precision(probs, target_precision=target)
    accepted = int(decision.mask.sum())
    assert accepted > 1000
    noise = 3 * np.sqrt(target * (1 - target) / accepted)
    assert achieved_precision(decision, y) >= target - noise
    assert decision.estimated_precision >= target
    low, high = decision.precision_ci
    assert low <= achieved_precision(decision, y) <= high
    assert sorted(decision.per_class) == list(range(5))  # the loop below checks every class
    for c, outcome in decision.per_class.items():
        in_class = decision.mask & (decision.predicted == c)
        assert outcome.estimated_precision >= target  # every class meets it, not only the average
        assert (y[in_class] == c).mean() >= target - 3 * np.sqrt(target * (1 - target) / in_class.sum())


def test_coverage_grows_as_the_target_drops() -> None:
    probs, _ = calibrated_pool(10_000, **EVEN_POOL, seed=1)
    coverages = [accept_at_precision(probs, target_precision=t).coverage for t in (0.99, 0.95, 0.9, 0.8, 0.7)]
    assert coverages == sorted(coverages)
    assert coverages[0] < 0.2 < 0.8 < coverages[-1]


def test_decision_is_consistent_with_its_thresholds() -> None:
    probs, _ = calibrated_pool(5000, **EVEN_POOL, seed=2)
    decision = accept_at_precision(probs, target_precision=0.9)
    np.testing.assert_array_equal(decision.predicted, probs.argmax(axis=1))
    np.testing.assert_array_equal(decision.mask, probs.max(axis=1) >= decision.thresholds[decision.predicted])
    assert decision.coverage == pytest.approx(decision.mask.mean())
    counts = np.bincount(decision.predicted[decision.mask], minlength=5)
    assert [decision.per_class[c].accepted for c in range(5)] == counts.tolist()
    assert all(o.accepted <= o.eligible <= o.predicted for o in decision.per_class.values())
    assert decision.target_precision == 0.9


# One easy class (0) that is often predicted, and three hard ones that reach 0.95 for few items.
SKEWED_POOL = dict(
    predicted_share=[0.4, 0.2, 0.2, 0.2], confidence_beta=[(60.0, 1.0), (4.0, 2.0), (4.0, 2.0), (4.0, 2.0)]
)


def test_without_the_balance_rule_an_easy_class_dominates() -> None:
    probs, _ = calibrated_pool(8000, **SKEWED_POOL, seed=3)
    decision = accept_at_precision(probs, target_precision=0.95, max_share=None)
    accepted = np.array([decision.per_class[c].accepted for c in range(4)])
    assert accepted[0] / accepted.sum() > 0.85


@pytest.mark.parametrize("max_share", [1.5, 2.0])
def test_the_balance_rule_caps_each_class_share_relative_to_its_predictions(max_share: float) -> None:
    probs, y = calibrated_pool(8000, **SKEWED_POOL, seed=3)
    decision = accept_at_precision(probs, target_precision=0.95, max_share=max_share, min_per_class=10)
    per_class = decision.per_class
    total = sum(o.accepted for o in per_class.values())
    for outcome in per_class.values():
        predicted_share = outcome.predicted / len(probs)
        assert outcome.accepted <= max(10, max_share * predicted_share * total)
    # The hard classes are the scarce ones: they keep everything that meets the target...
    assert all(per_class[c].accepted == per_class[c].eligible for c in (1, 2, 3))
    # ...and the easy class is cut back, to the cap or within one item of it (whole counts).
    assert per_class[0].accepted < per_class[0].eligible
    assert per_class[0].accepted >= max_share * per_class[0].predicted / len(probs) * total - 1
    assert achieved_precision(decision, y) >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / total)


def test_min_per_class_is_all_a_class_may_take_while_no_other_class_keeps_up() -> None:
    probs, _ = calibrated_pool(4000, predicted_share=[0.5, 0.5], confidence_beta=[(60.0, 1.0), (2.0, 2.0)], seed=4)
    unbalanced = accept_at_precision(probs, target_precision=0.99, max_share=None)
    assert unbalanced.per_class[1].eligible == 0 < 1000 < unbalanced.per_class[0].accepted
    # Class 0 alone would be 100% of the accepted set, over 1.5 x its ~50% share of the predictions:
    # only its first min_per_class items are free of the rule.
    balanced = accept_at_precision(probs, target_precision=0.99, min_per_class=25, max_share=1.5)
    assert balanced.per_class[0].accepted == 25
    assert balanced.per_class[0].eligible == unbalanced.per_class[0].accepted
    assert balanced.thresholds[1] == np.inf


def test_uncalibrated_probabilities_accept_item_by_item_and_estimate_nothing() -> None:
    probs, _ = calibrated_pool(3000, **EVEN_POOL, seed=5)
    decision = accept_at_precision(probs, target_precision=0.9, calibrated=False, max_share=None)
    np.testing.assert_array_equal(decision.mask, probs.max(axis=1) >= 0.9)
    assert np.isnan(decision.estimated_precision) and np.isnan(decision.precision_ci).all()
    assert len(decision.per_class) == 5 and all(np.isnan(o.estimated_precision) for o in decision.per_class.values())


def test_nothing_accepted_gives_zero_coverage_and_no_estimate() -> None:
    probs = np.full((10, 4), 0.25)
    decision = accept_at_precision(probs, target_precision=0.9)
    assert decision.coverage == 0 and not decision.mask.any()
    assert np.isnan(decision.estimated_precision)
    assert np.isinf(decision.thresholds).all()


def test_wilson_accuracy_matches_the_known_wilson_interval() -> None:
    estimate, low, high = wilson_accuracy(np.r_[np.ones(8, bool), np.zeros(2, bool)], confidence=0.95)
    assert estimate == 0.8
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Wilson, 8 of 10, 95%
    estimate, low, high = wilson_accuracy(np.ones(20, dtype=int))
    assert estimate == 1.0 and high == 1.0 and low == pytest.approx(0.8389, abs=1e-4)  # 20 of 20


def test_bad_inputs_get_typed_errors() -> None:
    probs, _ = calibrated_pool(100, **EVEN_POOL, seed=6)
    for target in (0.0, 1.0, 95):
        with pytest.raises(BadInputError, match="target_precision must lie strictly between 0 and 1"):
            accept_at_precision(probs, target_precision=target)
    with pytest.raises(BadInputError, match=r"row 0: probs sum to .*not 1"):
        accept_at_precision(probs / 2, target_precision=0.9)
    with pytest.raises(BadInputError, match="2-D"):
        accept_at_precision(probs[0], target_precision=0.9)
    with pytest.raises(BadInputError, match="max_share must be >= 1"):
        accept_at_precision(probs, target_precision=0.9, max_share=0.5)
    with pytest.raises(BadInputError, match="min_per_class"):
        accept_at_precision(probs, target_precision=0.9, min_per_class=-1)
    with pytest.raises(BadInputError, match="confidence"):
        wilson_accuracy([True, False], confidence=1.5)
    with pytest.raises(BadInputError, match="non-empty"):
        wilson_accuracy([])
    with pytest.raises(BadInputError, match="True/False"):
        wilson_accuracy([1, 2, 0])


def pool_with_counts(predicted: list[int], eligible: list[int]) -> np.ndarray:
    """Probabilities where class c is predicted for predicted[c] items, eligible[c] of them at 0.99, the rest at 0.6."""
    classes = len(predicted)
    rows = []
    for c, (n_predicted, n_eligible) in enumerate(zip(predicted, eligible)):
        for top in [0.99] * n_eligible + [0.6] * (n_predicted - n_eligible):
            row = np.full(classes, (1 - top) / (classes - 1))
            row[c] = top
            rows.append(row)
    return np.array(rows)


def largest_balanced_counts(predicted, eligible, *, min_per_class, max_share):
    """Brute force: the largest total whose per-class caps add up to exactly that total."""
    predicted, eligible = np.array(predicted), np.array(eligible)
    floor = np.minimum(eligible, min_per_class)
    for total in range(eligible.sum(), -1, -1):
        caps = np.floor(max_share * predicted / predicted.sum() * total * (1 + 1e-9))
        counts = np.minimum(eligible, np.maximum(floor, caps)).astype(int)
        if counts.sum() == total:
            return counts


def test_the_balance_rule_takes_the_largest_set_it_allows() -> None:
    rng = np.random.default_rng(7)
    for _ in range(150):
        classes = int(rng.integers(2, 6))
        predicted = rng.integers(1, 40, classes)
        eligible = (rng.integers(0, 41, classes) * (rng.random(classes) < 0.8)).clip(max=predicted)
        min_per_class, max_share = int(rng.integers(0, 6)), float(rng.choice([1.0, 1.5, 2.0, 3.0]))
        decision = accept_at_precision(
            pool_with_counts(predicted.tolist(), eligible.tolist()),
            target_precision=0.9,
            calibrated=False,
            min_per_class=min_per_class,
            max_share=max_share,
        )
        accepted = [decision.per_class[c].accepted for c in range(classes)]
        expected = largest_balanced_counts(predicted, eligible, min_per_class=min_per_class, max_share=max_share)
        assert accepted == expected.tolist()
