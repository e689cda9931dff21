"""Calibration: temperature scaling, per-class temperatures, ECE and out-of-fold logits."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.datasets import load_digits

from metalabel.errors import BadInputError, MetalabelError
from metalabel.label import (
    ClassTemperatureScaling,
    TemperatureScaling,
    cross_validated_logits,
    expected_calibration_error,
    reliability_curve,
)


def sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's distribution: probs are then calibrated by construction."""
    return (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)


def true_logits_and_labels(items: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (items, classes))
    return logits, sample_labels(softmax(logits, axis=1), rng)


def mean_nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(probs[np.arange(len(y)), y]).mean())


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    logits, y = true_logits_and_labels(5000, 5, seed=0)
    calibrator = TemperatureScaling().fit(3.0 * logits, y)  # a model 3x overconfident
    assert calibrator.temperature == pytest.approx(3.0, rel=0.05)


def test_temperature_scaling_lowers_nll_and_ece_of_overconfident_logits_on_held_out_items() -> None:
    logits, y = true_logits_and_labels(6000, 5, seed=1)
    overconfident = 2.5 * logits
    fit_part, held_out = slice(0, 3000), slice(3000, None)
    calibrator = TemperatureScaling().fit(overconfident[fit_part], y[fit_part])

    raw = softmax(overconfident[held_out], axis=1)
    calibrated = calibrator.predict_proba(overconfident[held_out])
    assert mean_nll(calibrated, y[held_out]) < mean_nll(raw, y[held_out]) - 0.1
    assert expected_calibration_error(calibrated, y[held_out]) < 0.03
    assert expected_calibration_error(raw, y[held_out]) > 0.1
    np.testing.assert_array_equal(calibrated.argmax(1), raw.argmax(1))  # one temperature never changes the class


def test_a_few_all_correct_labels_do_not_drive_the_temperature_to_zero() -> None:
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0], [2.5, 0.0, 0.0]])
    y = np.array([0, 1, 2, 0])
    plain = TemperatureScaling(uniform_pseudo_labels=0).fit(logits, y)
    smoothed = TemperatureScaling().fit(logits, y)
    assert plain.temperature < 2 * TemperatureScaling().bounds[0]  # maximum likelihood runs to the lower bound
    top_confidence = smoothed.predict_proba(logits).max(axis=1)
    assert 0.6 < top_confidence.mean() < 0.95  # near the rule of succession's (4 + 1) / (4 + 2), not 1.0


def test_ece_of_calibrated_probabilities_is_near_zero_and_the_curve_follows_the_diagonal() -> None:
    logits, y = true_logits_and_labels(40_000, 4, seed=2)
    probs = softmax(logits, axis=1)
    assert expected_calibration_error(probs, y) < 0.01

    curve = reliability_curve(probs, y, bins=10)
    assert curve["count"].sum() == len(y)
    assert curve["edges"][0] == 0.0 and curve["edges"][-1] == 1.0
    busy = curve["count"] > 500
    np.testing.assert_allclose(curve["accuracy"][busy], curve["confidence"][busy], atol=0.03)
    assert np.isnan(curve["accuracy"][curve["count"] == 0]).all()  # no top probability below 1/4


def test_ece_counts_the_gap_of_a_known_overconfident_model() -> None:
    probs = np.tile([0.9, 0.1], (100, 1))
    y = np.r_[np.zeros(60, dtype=int), np.ones(40, dtype=int)]  # 60% right at confidence 0.9
    assert expected_calibration_error(probs, y) == pytest.approx(0.3)


def test_class_temperatures_recover_known_per_class_temperatures() -> None:
    rng = np.random.default_rng(3)
    classes, true_temperatures = 4, np.array([0.7, 1.0, 2.0, 4.0])
    model_logits = rng.normal(0.0, 3.0, (20_000, classes)) + rng.normal(-50, 10, (20_000, 1))  # any row offset
    centered = model_logits - model_logits.mean(axis=1, keepdims=True)
    y = sample_labels(softmax(centered / true_temperatures, axis=1), rng)

    calibrator = ClassTemperatureScaling().fit(model_logits, y)
    np.testing.assert_allclose(calibrator.temperatures, true_temperatures, rtol=0.1)
    one_temperature = TemperatureScaling().fit(model_logits, y)
    per_class_nll = mean_nll(calibrator.predict_proba(model_logits), y)
    assert per_class_nll < mean_nll(one_temperature.predict_proba(model_logits), y)


def test_class_temperatures_stay_near_the_shared_one_with_two_labels_per_class() -> None:
    rng = np.random.default_rng(4)
    model_logits = rng.normal(0.0, 3.0, (5000, 4))
    centered = model_logits - model_logits.mean(axis=1, keepdims=True)
    y = sample_labels(softmax(centered / np.array([0.7, 1.0, 2.0, 4.0]), axis=1), rng)
    few = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(4)])

    calibrator = ClassTemperatureScaling().fit(model_logits[few], y[few])
    spread = np.abs(np.log(calibrator.temperatures) - np.log(calibrator.shared_temperature))
    assert spread.max() < 0.25
    unshrunk = ClassTemperatureScaling(shrinkage=0).fit(model_logits[few], y[few])
    assert np.abs(np.log(unshrunk.temperatures) - np.log(unshrunk.shared_temperature)).max() > spread.max()


def digits_prototype_model(features: np.ndarray, labels: np.ndarray):
    """Nearest class mean on raw digit pixels: logits are minus squared distances, badly overconfident."""
    prototypes = np.stack([features[labels == c].mean(axis=0) for c in range(10)])
    return lambda x: -((x[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_validated_logits_on_digits_calibrate_the_pool(seed: int) -> None:
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:10] for c in range(10)])
    pool = np.setdiff1d(np.arange(len(y)), labeled)

    def fit_predict(train_idx: np.ndarray):
        model = digits_prototype_model(x[labeled[train_idx]], y[labeled[train_idx]])
        return lambda test_idx: model(x[labeled[test_idx]])

    oof = cross_validated_logits(fit_predict, y[labeled], folds=5, seed=0)
    assert oof.held_out.all() and oof.skipped_count == 0 and oof.skipped_classes == ()
    calibrator = TemperatureScaling().fit(oof.logits, y[labeled])

    pool_logits = digits_prototype_model(x[labeled], y[labeled])(x[pool])
    raw_ece = expected_calibration_error(softmax(pool_logits, axis=1), y[pool])
    calibrated_ece = expected_calibration_error(calibrator.predict_proba(pool_logits), y[pool])
    assert raw_ece > 0.1  # nearly every top probability is ~1.0, while about 88% are right
    assert calibrated_ece < raw_ece / 2


def test_a_class_with_a_single_label_is_never_held_out_and_stays_in_every_training_fold() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 0, 1])  # class 2 has one label
    training_sets: list[np.ndarray] = []

    def fit_predict(train_idx: np.ndarray):
        training_sets.append(train_idx)
        assert set(y[train_idx]) == {0, 1, 2}  # the model always sees every class
        return lambda test_idx: np.zeros((len(test_idx), 3))

    oof = cross_validated_logits(fit_predict, y, folds=5, seed=0)
    assert oof.skipped_classes == (2,) and oof.skipped_count == 1
    np.testing.assert_array_equal(oof.held_out, y != 2)
    assert np.isnan(oof.logits[y == 2]).all() and not np.isnan(oof.logits[y != 2]).any()
    assert len(training_sets) <= 5


def test_two_labels_per_class_give_leave_one_out_within_each_class() -> None:
    y = np.repeat(np.arange(4), 2)
    held_out_per_fold: list[np.ndarray] = []

    def fit_predict(train_idx: np.ndarray):
        held_out_per_fold.append(np.setdiff1d(np.arange(len(y)), train_idx))
        return lambda test_idx: np.zeros((len(test_idx), 4))

    oof = cross_validated_logits(fit_predict, y, folds=5, seed=1)
    assert oof.held_out.all()
    assert all(np.bincount(y[held], minlength=4).max() == 1 for held in held_out_per_fold)
    assert sorted(np.concatenate(held_out_per_fold)) == list(range(len(y)))  # each label held out exactly once


def test_cross_validated_folds_repeat_with_the_seed() -> None:
    y = np.repeat(np.arange(3), 6)

    def folds_for(seed: int) -> list[list[int]]:
        seen: list[list[int]] = []

        def fit_predict(train_idx: np.ndarray):
            seen.append(train_idx.tolist())
            return lambda test_idx: np.zeros((len(test_idx), 3))

        cross_validated_logits(fit_predict, y, folds=3, seed=seed)
        return seen

    assert folds_for(7) == folds_for(7)
    assert folds_for(7) != folds_for(8)


def test_bad_inputs_get_typed_errors() -> None:
    logits, y = true_logits_and_labels(20, 3, seed=5)
    with pytest.raises(BadInputError, match=r"one class id per item \(20\)"):
        TemperatureScaling().fit(logits, y[:3])
    with pytest.raises(BadInputError, match="outside 0..2"):
        TemperatureScaling().fit(logits, np.r_[y[:-1], 3])
    with pytest.raises(BadInputError, match="integer class ids"):
        TemperatureScaling().fit(logits, y.astype(float))
    with pytest.raises(BadInputError, match="row 4"):
        TemperatureScaling().fit(np.where(np.arange(20)[:, None] == 4, np.nan, logits), y)
    with pytest.raises(BadInputError, match=r"row 0: probs must lie in \[0, 1\]"):
        expected_calibration_error(logits - 10, y)  # logits, not probabilities
    with pytest.raises(BadInputError, match=r"sum to .*not 1"):
        expected_calibration_error(np.full((20, 3), 0.5), y)  # scores, not a distribution
    with pytest.raises(BadInputError, match="2-D"):
        reliability_curve(softmax(logits, axis=1)[0], y[:1])
    with pytest.raises(MetalabelError, match="not fitted"):
        TemperatureScaling().predict_proba(logits)
    with pytest.raises(BadInputError, match="fitted on 3"):
        ClassTemperatureScaling().fit(logits, y).predict_proba(logits[:, :2])
    with pytest.raises(BadInputError, match="no class has two labels"):
        cross_validated_logits(lambda train: lambda test: np.zeros((len(test), 3)), np.arange(3))
    with pytest.raises(BadInputError, match="returned shape"):
        cross_validated_logits(lambda train: lambda test: np.zeros((len(test) + 1, 3)), np.repeat(np.arange(3), 2))

