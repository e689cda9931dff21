"""The confidence rule labeling tools use: accept where the calibrated confidence says the target is met.

The labeling loop does not use this rule: it accepts only what the reference sample
certifies (``metalabel.label.certify``), because a rule judged on the model's own
confidence overclaims once calibration is off (measured: 86-92% achieved against a 0.95
target). It is kept as the baseline the benchmarks compare the certificate with.
NumPy in, NumPy out. ``accept_at_precision`` takes calibrated probabilities of the
pool and decides which predicted labels to accept. ``wilson_accuracy`` turns a person's
check of a sample of labels into an accuracy with a Wilson interval.

The rule, in three steps:

1. Precision, per class. Sort the items predicted as class c by confidence. Class
   c becomes eligible for the longest top run whose mean calibrated confidence
   (its expected precision) is at least ``target_precision``. So every class, not
   only the average over classes, meets the target in expectation. With
   ``calibrated=False``, confidence is not a precision estimate. Then an item is
   eligible only if its own confidence reaches the target, and no precision is
   estimated.
2. Balance, so no class is starved. Beyond its first ``min_per_class`` items, no
   class may make up more than ``max_share`` times its share of the predictions in
   the accepted set: ``accepted_c <= max(min_per_class, max_share * predicted_c / N * accepted_total)``.
   An easy class therefore grows only as the others keep up, in proportion to how
   often they are predicted. A hard class that reaches the target for only a few
   items caps how far the easy ones run ahead. It cannot be pushed below the
   target to catch up. The largest accepted set that obeys both steps is taken,
   keeping each class's most confident eligible items. With ``max_share=1``, the
   accepted mix mirrors the predicted mix. If the classes that reach the target
   at all make up less than ``1 / max_share`` of the predictions, only the
   ``min_per_class`` allowances remain. Classes with a small ``eligible`` count
   in ``per_class`` are the ones to ask a person about next.
3. Report. Precision is estimated as the mean calibrated confidence of what is
   accepted, overall and per class. The interval is a Wilson interval at that
   rate over the accepted count. Given calibrated probabilities, the number correct
   is a sum of independent Bernoullis, whose spread the binomial never
   underestimates. The interval covers sampling noise only. If the calibration
   itself is off, the estimate is off too, which is why ``audit_precision`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

from metalabel.errors import BadInputError
from metalabel.label.calibrate import validate_probabilities

DEFAULT_MIN_PER_CLASS = 10
DEFAULT_MAX_SHARE = 3.0

# A cap of exactly n items can come out of floating point as n - 1e-13. Rounding that down to n - 1
# would let the counts slide item by item to the floor, and with max_share * share summing to exactly 1
# every total is a fixed point. This slack keeps such exact cases exact.
_RELATIVE_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class ClassAcceptance:
    """What the rule decided for one class."""

    predicted: int  # pool items predicted as this class
    eligible: int  # how many of them the precision target alone would accept
    accepted: int  # how many were accepted after the balance rule (at most ``eligible``)
    threshold: float  # lowest accepted confidence; inf when none was accepted
    estimated_precision: float  # mean calibrated confidence of the accepted; NaN when none or uncalibrated


@dataclass(frozen=True, eq=False)
class AcceptDecision:
    """Which pool items get their predicted label, and how good that set is expected to be.

    An accepted item i has ``confidence[i] >= thresholds[predicted[i]]``. Items tied
    with the lowest accepted confidence can stay out when the balance rule cuts
    through a tie. ``thresholds[c]`` is inf for a class with nothing accepted.
    """

    mask: NDArray[np.bool_]  # [N] accepted
    predicted: NDArray[np.int64]  # [N] top class of every item, accepted or not
    thresholds: NDArray[np.float64]  # [C]
    estimated_precision: float  # NaN when nothing was accepted or probabilities are uncalibrated
    precision_ci: tuple[float, float]
    coverage: float  # fraction of the pool accepted
    per_class: dict[int, ClassAcceptance]
    target_precision: float


def accept_at_precision(
    probs: ArrayLike,
    *,
    target_precision: float,
    calibrated: bool = True,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    max_share: float | None = DEFAULT_MAX_SHARE,
    confidence: float = 0.95,
) -> AcceptDecision:
    """Accept the predicted labels of ``probs`` [N, C] at ``target_precision`` (the module doc gives the rule).

    ``max_share=None`` turns the balance rule off, and ``min_per_class`` then has no effect.
    ``confidence`` is the level of ``precision_ci``.
    """
    p = validate_probabilities(probs)
    target = _check_open_unit(target_precision, "target_precision")
    level = _check_open_unit(confidence, "confidence")
    if int(min_per_class) != min_per_class or min_per_class < 0:
        raise BadInputError(f"min_per_class must be a whole number >= 0, got {min_per_class}")
    if max_share is not None and not 1 <= max_share < np.inf:
        raise BadInputError(
            f"max_share must be >= 1 or None, got {max_share}",
            hint="shares of the accepted set and of the predictions both sum to 1, so a cap below 1 leaves no room",
        )

    items, classes = p.shape
    predicted = p.argmax(axis=1)
    item_confidence = p.max(axis=1)
    # Each class's members, most confident first; the stable sort makes ties go by pool order.
    members_by_confidence = [
        members[np.argsort(-item_confidence[members], kind="stable")]
        for members in (np.flatnonzero(predicted == c) for c in range(classes))
    ]
    eligible = np.array(
        [_eligible_count(item_confidence[members], target, calibrated=calibrated) for members in members_by_confidence],
        dtype=np.int64,
    )
    predicted_share = np.bincount(predicted, minlength=classes) / items
    accepted = (
        eligible
        if max_share is None
        else _balanced_counts(eligible, predicted_share, min_per_class=int(min_per_class), max_share=max_share)
    )

    mask = np.zeros(items, dtype=bool)
    thresholds = np.full(classes, np.inf)
    per_class: dict[int, ClassAcceptance] = {}
    for c, members in enumerate(members_by_confidence):
        taken = members[: accepted[c]]
        mask[taken] = True
        if taken.size:
            thresholds[c] = item_confidence[taken[-1]]
        per_class[c] = ClassAcceptance(
            predicted=int(members.size),
            eligible=int(eligible[c]),
            accepted=int(taken.size),
            threshold=float(thresholds[c]),
            estimated_precision=float(item_confidence[taken].mean()) if calibrated and taken.size else float("nan"),
        )

    accepted_total = int(mask.sum())
    if calibrated and accepted_total:
        estimated_precision = float(item_confidence[mask].mean())
        precision_ci = _wilson_interval(estimated_precision, accepted_total, confidence=level)
    else:
        estimated_precision, precision_ci = float("nan"), (float("nan"), float("nan"))
    return AcceptDecision(
        mask=mask,
        predicted=predicted.astype(np.int64),
        thresholds=thresholds,
        estimated_precision=estimated_precision,
        precision_ci=precision_ci,
        coverage=accepted_total / items,
        per_class=per_class,
        target_precision=target,
    )


def wilson_accuracy(correct: ArrayLike, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Accuracy of labels a person checked: ``(estimate, low, high)``.

    ``correct`` holds one bool per checked label. The interval is the Wilson score
    interval, which stays inside [0, 1] and keeps its coverage with few checks or a
    rate near 1. Both are common here: samples are small, and targets are 0.95 or more.
    """
    audited = np.asarray(correct)
    if audited.ndim != 1 or audited.size == 0:
        raise BadInputError(f"correct must be a non-empty 1-D array of bools, got shape {audited.shape}")
    if audited.dtype != np.bool_ and not np.isin(audited, (0, 1)).all():
        raise BadInputError("correct must hold only True/False (or 1/0), one per audited label")
    estimate = float(audited.astype(np.float64).mean())
    low, high = _wilson_interval(estimate, audited.size, confidence=_check_open_unit(confidence, "confidence"))
    return estimate, low, high


def _eligible_count(sorted_confidence: NDArray[np.float64], target: float, *, calibrated: bool) -> int:
    """Length of the longest most-confident run that meets ``target`` (see the module doc, step 1)."""
    if calibrated:
        # The running mean of a descending sequence never rises, so the first miss ends the run.
        running_mean = np.cumsum(sorted_confidence) / np.arange(1, sorted_confidence.size + 1)
        misses = np.flatnonzero(running_mean < target)
    else:
        misses = np.flatnonzero(sorted_confidence < target)
    return int(misses[0]) if misses.size else int(sorted_confidence.size)


def _balanced_counts(
    eligible: NDArray[np.int64], predicted_share: NDArray[np.float64], *, min_per_class: int, max_share: float
) -> NDArray[np.int64]:
    """The largest counts with ``a_c <= eligible_c`` and ``a_c <= max(min_per_class, max_share * share_c * sum(a))``.

    For a total T, each class may take ``allowed_c(T)``, and the counts are
    consistent when ``sum_c allowed_c(T) = T``. The sum is piecewise linear and
    never falls as T grows, so the largest consistent T is found exactly by
    walking the linear pieces from the top. Integer counts are then settled by
    iterating the rounded map, which moves monotonically to an integer fixed
    point.
    """
    floor = np.minimum(eligible, min_per_class).astype(np.float64)
    slope = max_share * predicted_share

    def allowed(total: float) -> NDArray[np.float64]:
        return np.minimum(eligible, np.maximum(floor, slope * total))

    top = float(eligible.sum())
    predicted_classes = slope > 0
    breakpoints = np.concatenate(
        [floor[predicted_classes] / slope[predicted_classes], eligible[predicted_classes] / slope[predicted_classes]]
    )
    knots = np.unique(np.concatenate([[0.0, top], breakpoints[breakpoints < top]]))[::-1]
    fixed_point = 0.0
    for high, low in zip(knots[:-1], knots[1:]):
        sum_high, sum_low = allowed(high).sum(), allowed(low).sum()
        if sum_high >= high * (1 - _RELATIVE_ROUNDING_SLACK):
            fixed_point = high
            break
        if sum_low >= low * (1 - _RELATIVE_ROUNDING_SLACK):  # the piece crosses the diagonal between low and high
            piece_slope = (sum_high - sum_low) / (high - low)
            fixed_point = low + (sum_low - low) / (1.0 - piece_slope)
            break

    total = int(np.floor(fixed_point * (1 + _RELATIVE_ROUNDING_SLACK)))
    while True:
        capped = np.floor(slope * total * (1 + _RELATIVE_ROUNDING_SLACK))
        counts = np.minimum(eligible, np.maximum(floor, capped)).astype(np.int64)
        if counts.sum() == total:
            return counts
        total = int(counts.sum())


def _wilson_interval(rate: float, trials: int, *, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z**2 / trials
    center = (rate + z**2 / (2 * trials)) / denominator
    half_width = z * np.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / denominator
    # at a rate of exactly 0 or 1 a bound equals the rate, but round-off can put it an ulp inside
    return float(max(min(center - half_width, rate), 0.0)), float(min(max(center + half_width, rate), 1.0))


def _check_open_unit(value: float, name: str) -> float:
    if not 0 < value < 1:
        raise BadInputError(f"{name} must lie strictly between 0 and 1, got {value}", hint="e.g. 0.95")
    return float(value)
