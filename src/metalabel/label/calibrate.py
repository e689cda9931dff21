"""Calibrate model confidence so that "0.9" means right about 9 times in 10.

NumPy in, NumPy out, no model coupling. The labeling loop uses it like this::

    oof = cross_validated_logits(fit_predict, human_y, folds=5, seed=0)
    calibrator = TemperatureScaling().fit(oof.logits[oof.held_out], human_y[oof.held_out])
    pool_probs = calibrator.predict_proba(pool_logits)
    expected_calibration_error(calibrator.predict_proba(oof.logits[oof.held_out]), human_y[oof.held_out])

The calibrator must be fitted on logits of labels the model did not adapt to
(out-of-fold): on its own training labels a few-shot model is right almost
always, and a calibrator fitted there learns to be overconfident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax

from metalabel.data.arrays import check_class_ids, check_matrix
from metalabel.errors import BadInputError, MetalabelError, NotEnoughDataError, check_whole_number

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

PROBABILITY_SUM_TOLERANCE = 1e-3
"""How far a row of probabilities may sum from 1: float32 softmax rows miss by ~1e-6, logits or
unnormalised scores by far more than this."""

DEFAULT_TEMPERATURE_BOUNDS = (1e-2, 1e4)
"""Wide, because logits such as minus squared distances on raw features can need T in the hundreds."""

_TEMPERATURE_GRID_POINTS = 64  # brackets the minimum before Brent, which alone can stall on a flat end of a wide range


# ----------------------------------------------------------------------------- input checks


def validate_logits(logits: ArrayLike, *, name: str = "logits") -> FloatArray:
    """``logits`` as a float64 ``[items, classes]`` array, or a BadInputError saying what is wrong."""
    return check_matrix(logits, name=name, columns="classes", min_columns=2, dtype=np.float64,
                        hint="check the model's output; of OutOfFoldLogits, use only the rows where held_out is True")


def validate_probabilities(probs: ArrayLike, *, name: str = "probs") -> FloatArray:
    """``probs`` as a float64 ``[items, classes]`` array whose rows are probability distributions."""
    array = validate_logits(probs, name=name)
    out_of_range_rows = np.flatnonzero(((array < 0) | (array > 1 + PROBABILITY_SUM_TOLERANCE)).any(axis=1))
    if out_of_range_rows.size:
        raise BadInputError(
            f"{name} must lie in [0, 1]",
            row=int(out_of_range_rows[0]),
            hint="pass probabilities (softmax of the logits, e.g. TemperatureScaling.predict_proba), not logits",
        )
    row_sums = array.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(row_sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
    if bad_rows.size:
        first = int(bad_rows[0])
        raise BadInputError(
            f"{name} sum to {row_sums[first]:.4g}, not 1 ({bad_rows.size} rows like this)",
            row=first,
            hint="pass probabilities (softmax of the logits, e.g. TemperatureScaling.predict_proba), not scores",
        )
    return array


def _check_temperature_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not 0 < low < high < np.inf:
        raise BadInputError(f"temperature bounds must satisfy 0 < low < high, got {bounds}")
    return low, high


def _check_strength(value: float, name: str) -> float:
    if not 0 <= value < np.inf:
        raise BadInputError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


# ----------------------------------------------------------------------------- calibrators


def _smoothed_targets(labels: IntArray, classes: int, uniform_pseudo_labels: float) -> FloatArray:
    """One-hot targets mixed with the uniform distribution, as if ``uniform_pseudo_labels`` more
    labels spread evenly over the classes had been seen: label smoothing with eps = m / (n + m)."""
    smoothing = uniform_pseudo_labels / (len(labels) + uniform_pseudo_labels)
    return (1 - smoothing) * np.eye(classes)[labels] + smoothing / classes


def _cross_entropy(scaled_logits: FloatArray, targets: FloatArray) -> float:
    return float(-(log_softmax(scaled_logits, axis=1) * targets).sum())


def _fit_temperature(
    z: FloatArray, labels: IntArray, uniform_pseudo_labels: float, bounds: tuple[float, float]
) -> float:
    """The temperature minimising the smoothed cross-entropy of ``softmax(z / T)`` within ``bounds``."""
    targets = _smoothed_targets(labels, z.shape[1], uniform_pseudo_labels)

    def objective(log_temperature: float) -> float:
        return _cross_entropy(z * np.exp(-log_temperature), targets)

    # The loss is convex in 1/T, so unimodal in log T. A coarse grid brackets the
    # minimum across the wide bounds, and bounded Brent refines it inside the bracket.
    low, high = np.log(bounds)
    grid = np.linspace(low, high, _TEMPERATURE_GRID_POINTS)
    best = int(np.argmin([objective(g) for g in grid]))
    bracket = (grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    result = minimize_scalar(objective, bounds=bracket, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


class TemperatureScaling:
    """One temperature for all classes: ``probs = softmax(logits / T)`` (Guo et al. 2017).

    ``fit`` minimises the summed cross-entropy of the labels, with the targets
    smoothed as if ``uniform_pseudo_labels`` extra labels spread evenly over the
    classes had been seen (Laplace's rule of succession). With many labels this
    changes nothing. With a handful that the model all gets right, plain
    maximum likelihood drives T to 0 and every prediction to confidence 1.0.
    The pseudo-labels keep the fitted confidence well below 1, about where
    Laplace's (n + 1) / (n + 2) puts it.
    This does not depend on the logits' scale, unlike a prior on T.
    ``uniform_pseudo_labels=0`` is the plain maximum-likelihood fit. Dividing by
    one T never changes the predicted class.
    """

    def __init__(
        self,
        *,
        uniform_pseudo_labels: float = 1.0,
        bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS,
    ) -> None:
        self.uniform_pseudo_labels = _check_strength(uniform_pseudo_labels, "uniform_pseudo_labels")
        self.bounds = _check_temperature_bounds(bounds)
        self.temperature: float | None = None

    def fit(self, logits: ArrayLike, y: ArrayLike) -> Self:
        z = validate_logits(logits)
        labels = check_class_ids(y, name="y", rows=len(z), row_name="item", classes=z.shape[1])
        self.temperature = _fit_temperature(z, labels, self.uniform_pseudo_labels, self.bounds)
        return self

    def predict_proba(self, logits: ArrayLike) -> FloatArray:
        if self.temperature is None:
            raise MetalabelError("TemperatureScaling is not fitted yet -> call fit(logits, y) first")
        return softmax(validate_logits(logits) / self.temperature, axis=1)


class ClassTemperatureScaling:
    """One temperature per class, shrunk toward a shared temperature so few labels cannot overfit it.

    ``probs = softmax((logits - row mean) / T_c)`` with ``T_c`` for class (column) c.
    Subtracting each row's mean first makes the result independent of the arbitrary
    offset a model's logits carry (minus squared distances, log-probabilities), which
    a per-class scale would otherwise turn into a per-class bias.

    Why this and not vector scaling (a scale and a bias per class): it has C
    parameters instead of 2C, and no biases. A bias fitted on a few held-out labels
    learns how often each class happened to be held out, not anything about the pool.
    And each ``log T_c`` carries a Gaussian prior centred at the shared temperature's
    ``log T``: the fit minimises ``loss + shrinkage * sum_c (log T_c - log T)**2``,
    where the loss is the smoothed cross-entropy of :class:`TemperatureScaling`. So
    a class with one or two held-out labels keeps about the shared temperature, and
    only a class with tens of held-out labels that disagree with it moves away.
    Unlike a single temperature, per-class temperatures can change the predicted
    class.
    """

    def __init__(
        self,
        *,
        shrinkage: float = 10.0,
        uniform_pseudo_labels: float = 1.0,
        bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS,
    ) -> None:
        self.shrinkage = _check_strength(shrinkage, "shrinkage")
        self.uniform_pseudo_labels = _check_strength(uniform_pseudo_labels, "uniform_pseudo_labels")
        self.bounds = _check_temperature_bounds(bounds)
        self.shared_temperature: float | None = None
        self.temperatures: FloatArray | None = None

    def fit(self, logits: ArrayLike, y: ArrayLike) -> Self:
        z = validate_logits(logits)
        labels = check_class_ids(y, name="y", rows=len(z), row_name="item", classes=z.shape[1])
        shared_temperature = _fit_temperature(z, labels, self.uniform_pseudo_labels, self.bounds)
        centered = z - z.mean(axis=1, keepdims=True)
        targets = _smoothed_targets(labels, z.shape[1], self.uniform_pseudo_labels)
        prior_center = np.log(shared_temperature)

        def objective_and_gradient(log_temperatures: FloatArray) -> tuple[float, FloatArray]:
            scaled = centered * np.exp(-log_temperatures)
            log_probs = log_softmax(scaled, axis=1)
            loss = -float((log_probs * targets).sum())
            # d loss / d scaled = p - targets; d scaled / d log T_c = -scaled[:, c]
            loss_gradient = -((np.exp(log_probs) - targets) * scaled).sum(axis=0)
            offset = log_temperatures - prior_center
            return loss + self.shrinkage * float(offset @ offset), loss_gradient + 2 * self.shrinkage * offset

        log_bounds = [tuple(np.log(self.bounds))] * z.shape[1]
        result = minimize(
            objective_and_gradient, np.full(z.shape[1], prior_center), jac=True, method="L-BFGS-B", bounds=log_bounds
        )
        self.shared_temperature = shared_temperature
        self.temperatures = np.exp(result.x)
        return self

    def predict_proba(self, logits: ArrayLike) -> FloatArray:
        if self.temperatures is None:
            raise MetalabelError("ClassTemperatureScaling is not fitted yet -> call fit(logits, y) first")
        z = validate_logits(logits)
        if z.shape[1] != len(self.temperatures):
            raise BadInputError(
                f"logits have {z.shape[1]} classes but the calibrator was fitted on {len(self.temperatures)}"
            )
        return softmax((z - z.mean(axis=1, keepdims=True)) / self.temperatures, axis=1)


# ----------------------------------------------------------------------------- metrics


def reliability_curve(probs: ArrayLike, y: ArrayLike, *, bins: int = 15) -> dict[str, NDArray]:
    """Accuracy against confidence in ``bins`` equal-width confidence bins over [0, 1].

    Confidence is the top probability, and accuracy asks whether the top class is ``y``.
    Returns ``edges`` [bins + 1] and, per bin, ``confidence`` (mean top probability),
    ``accuracy`` and ``count`` [bins]. The mean of an empty bin is NaN.
    Bin i holds confidences in (edges[i], edges[i+1]].
    """
    p = validate_probabilities(probs)
    labels = check_class_ids(y, name="y", rows=len(p), row_name="item", classes=p.shape[1])
    if int(bins) != bins or bins < 1:
        raise BadInputError(f"bins must be a whole number >= 1, got {bins}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    bin_of = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(bin_of, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN on purpose
        mean_confidence = np.bincount(bin_of, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(bin_of, weights=correct, minlength=bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, bins + 1),
        "confidence": mean_confidence,
        "accuracy": accuracy,
        "count": count,
    }


def expected_calibration_error(probs: ArrayLike, y: ArrayLike, *, bins: int = 15) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over the bins of ``reliability_curve``."""
    curve = reliability_curve(probs, y, bins=bins)
    filled = curve["count"] > 0
    gaps = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float((curve["count"][filled] * gaps).sum() / curve["count"].sum())


# ----------------------------------------------------------------------------- out-of-fold logits


@dataclass(frozen=True, eq=False)
class OutOfFoldLogits:
    """Logits of each human label from a model that was adapted without it.

    ``logits`` is [N, C] and its rows are NaN where ``held_out`` is False. Those are the
    labels of classes that have a single label: holding that label out would leave
    the model without the class, so it is never held out. It stays in every
    training fold. ``skipped_classes`` lists those classes.
    """

    logits: FloatArray
    held_out: NDArray[np.bool_]
    skipped_classes: tuple[int, ...]

    @property
    def skipped_count(self) -> int:
        return int((~self.held_out).sum())


def stratified_folds(y: ArrayLike, *, folds: int, seed: int | np.random.Generator = 0) -> IntArray:
    """The fold (0 .. folds-1) each label is held out in, or -1 for the label of a single-label class (never).

    Each class's labels are shuffled and dealt round-robin across the folds, each class
    starting where the previous one stopped (``cross_validated_logits`` says why).
    """
    labels = check_class_ids(y, name="y")
    check_whole_number("folds", folds, minimum=2)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    if labels.size == 0 or counts.max() < 2:
        raise NotEnoughDataError(
            "no class has two labels, so none can be held out to calibrate on",
            hint="label a second example of at least one class, or keep the uncalibrated probabilities",
        )
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    next_fold = 0
    for cls, count in zip(classes, counts):
        if count < 2:
            continue
        members = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[members] = (next_fold + np.arange(count)) % folds
        next_fold = (next_fold + count) % folds
    return fold_of


def cross_validated_logits(
    fit_predict: Callable[[IntArray], Callable[[IntArray], ArrayLike]],
    y: ArrayLike,
    *,
    folds: int = 5,
    seed: int | np.random.Generator = 0,
) -> OutOfFoldLogits:
    """Out-of-fold logits of the labeled items, for fitting a calibrator.

    ``fit_predict(train_idx)`` adapts the model to the labeled items ``train_idx``
    (indices into ``y``) and returns ``predict(test_idx) -> logits [len(test_idx), C]``.

    Folds are stratified so every training fold keeps at least one label of every
    class. Each class's labels are shuffled and dealt round-robin across the folds,
    and each class starts where the previous one stopped, so fold sizes differ by at
    most one. A fold then holds out at most ceil(n_c / folds) of a class's n_c >= 2
    labels, which is at most n_c - 1. With as many folds as the largest class has
    labels, this is leave-one-out within each class: each fold holds out at most one
    label per class. Empty folds are skipped, so ``fit_predict`` is called at most
    ``folds`` times.

    A class with a single label cannot be held out. Its item is skipped, counted in
    ``skipped_count`` and listed in ``skipped_classes``. If every class has a single
    label, nothing can be held out, and a NotEnoughDataError (a BadInputError) says so;
    a wrong ``folds`` is a plain BadInputError, so a caller can skip calibration on the
    first and still stop on the second.
    """
    labels = check_class_ids(y, name="y")
    fold_of = stratified_folds(labels, folds=folds, seed=seed)
    classes, counts = np.unique(labels, return_counts=True)
    logits: FloatArray | None = None
    for fold in range(folds):
        test_idx = np.flatnonzero(fold_of == fold)
        if test_idx.size == 0:
            continue
        predict = fit_predict(np.flatnonzero(fold_of != fold))
        fold_logits = np.asarray(predict(test_idx), dtype=np.float64)
        if logits is None:
            if fold_logits.ndim != 2:
                raise BadInputError(
                    f"predict(test_idx) must return logits [items, classes], got shape {fold_logits.shape}"
                )
            logits = np.full((len(labels), fold_logits.shape[1]), np.nan)
        if fold_logits.shape != (test_idx.size, logits.shape[1]):
            raise BadInputError(
                f"predict(test_idx) returned shape {fold_logits.shape} in fold {fold}, "
                f"expected {(test_idx.size, logits.shape[1])}",
                hint="return one row of logits per held-out index, with the same classes in every fold",
            )
        if labels[test_idx].max() >= logits.shape[1]:
            raise BadInputError(
                f"y holds class {labels[test_idx].max()} but predict returns logits for {logits.shape[1]} classes"
            )
        logits[test_idx] = fold_logits

    # The first class with two labels deals one into fold 0, so some fold was predicted.
    assert logits is not None
    return OutOfFoldLogits(
        logits=logits,
        held_out=fold_of >= 0,
        skipped_classes=tuple(int(c) for c, n in zip(classes, counts) if n < 2),
    )
