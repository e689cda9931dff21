"""Downstream effect of the built data: a fresh classifier trained on it, tested on held-out real data."""

import warnings

import numpy as np
import pytest

from metalabel.errors import BadInputError
from metalabel.evaluate import compare_with_generated, downstream_accuracy

CLASSES, DIMS = 5, 10
CENTERS = np.random.default_rng(0).normal(size=(CLASSES, DIMS))  # close enough that one item per class is not enough


def blobs(per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), per_class)
    return CENTERS[y] + rng.normal(size=(len(y), DIMS)), y


TEST_X, TEST_Y = blobs(200, seed=1)


def test_more_real_data_gives_higher_accuracy() -> None:
    few = downstream_accuracy(*blobs(1, seed=2), TEST_X, TEST_Y)
    many = downstream_accuracy(*blobs(50, seed=2), TEST_X, TEST_Y)
    assert many > few + 0.15
    assert many > 0.8


def test_generated_data_from_the_right_classes_help_one_shot_real_data() -> None:
    result = compare_with_generated(*blobs(1, seed=2), *blobs(40, seed=3), TEST_X, TEST_Y)
    assert result["gain"] > 0.15
    assert result["gain"] == pytest.approx(result["with_generated"] - result["real_only"])
    assert result["tstr"] > 0.8
    assert result["test_size"] == len(TEST_Y)


def test_mislabeled_generated_data_hurt() -> None:
    generated_x, generated_y = blobs(40, seed=3)
    result = compare_with_generated(*blobs(50, seed=2), generated_x, (generated_y + 1) % CLASSES, TEST_X, TEST_Y)
    assert result["gain"] < -0.1
    assert result["tstr"] < 0.1  # every generated label names the wrong class


def test_generated_weight_zero_changes_nothing_and_one_class_has_no_tstr() -> None:
    real = blobs(5, seed=2)
    generated_x, generated_y = blobs(10, seed=3)
    unweighted = compare_with_generated(*real, generated_x, generated_y, TEST_X, TEST_Y, generated_weight=0.0)
    assert unweighted["gain"] == 0.0
    only_one = generated_y == 1
    one_class = compare_with_generated(*real, generated_x[only_one], generated_y[only_one], TEST_X, TEST_Y)
    assert one_class["tstr"] is None
    empty = compare_with_generated(*real, np.zeros((0, DIMS)), np.zeros(0, dtype=int), TEST_X, TEST_Y)
    assert empty["gain"] == 0.0 and empty["tstr"] is None


def test_a_class_missing_from_training_counts_as_wrong() -> None:
    train_x, train_y = blobs(50, seed=2)
    kept = train_y != 2
    share_of_missing = np.mean(TEST_Y == 2)
    accuracy = downstream_accuracy(train_x[kept], train_y[kept], TEST_X, TEST_Y, classes=CLASSES)
    assert 0.5 < accuracy <= 1 - share_of_missing
    only = train_y == 3  # one class alone: it is the only answer
    assert downstream_accuracy(train_x[only], train_y[only], TEST_X, TEST_Y) == pytest.approx(np.mean(TEST_Y == 3))


def test_same_seed_same_accuracy() -> None:
    train = blobs(3, seed=2)
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=len(train[1]))
    first = downstream_accuracy(*train, TEST_X, TEST_Y, sample_weight=weights, seed=7)
    assert first == downstream_accuracy(*train, TEST_X, TEST_Y, sample_weight=weights, seed=7)


def test_bad_input_is_named() -> None:
    train_x, train_y = blobs(2, seed=2)
    with pytest.raises(BadInputError, match="test_x has 3 features"):
        downstream_accuracy(train_x, train_y, TEST_X[:, :3], TEST_Y)
    with pytest.raises(BadInputError, match="sample_weight"):
        downstream_accuracy(train_x, train_y, TEST_X, TEST_Y, sample_weight=-np.ones(len(train_y)))
    with pytest.raises(BadInputError, match="train_y holds 4"):
        downstream_accuracy(train_x, train_y, TEST_X, TEST_Y, classes=4)
    with pytest.raises(BadInputError, match="generated_weight"):
        compare_with_generated(train_x, train_y, train_x, train_y, TEST_X, TEST_Y, generated_weight=-1.0)


def test_exact_copies_change_nothing_and_only_the_parents_share_their_weight() -> None:
    real_x, real_y = blobs(4, seed=5)
    copies = compare_with_generated(real_x, real_y, real_x, real_y, TEST_X, TEST_Y, generated_weight=1.0)
    assert copies["with_generated"] == pytest.approx(copies["real_only"], abs=0.01)  # same objective, same weight
    helpful_x, helpful_y = blobs(40, seed=6)
    parents = real_y < 2  # generated rows made from the items of two classes only
    narrow = compare_with_generated(real_x, real_y, helpful_x, helpful_y, TEST_X, TEST_Y, parents=parents)
    broad = compare_with_generated(real_x, real_y, helpful_x, helpful_y, TEST_X, TEST_Y)
    assert narrow["with_generated"] != broad["with_generated"]  # the weight they share differs
    with pytest.raises(BadInputError, match="one bool per real item"):
        compare_with_generated(real_x, real_y, helpful_x, helpful_y, TEST_X, TEST_Y, parents=parents[:3])


def test_one_label_a_class_fits_without_scikit_learns_regression_warning():
    """30 classes, one training item each: scikit-learn warns that y might be a regression target (more distinct
    values than half its length) unless the fit says they are classes (metalabel.data.classifier)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, DIMS)), np.arange(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0 <= downstream_accuracy(x, y, x, y, classes=30) <= 1
