"""Certify an acceptance rule: exported precision >= target with probability >= 1 - delta.

NumPy/SciPy in, frozen dataclasses out. ``certify_acceptance`` picks a confidence
threshold (global, or one per class) from a *reference sample*; ``plan_budget`` says
how many more human answers a requested coverage is expected to take.

What is guaranteed
------------------
Let the candidates be the pool items whose predicted label would be exported if
accepted, with calibrated confidence ``s_i``, and let ``A(t) = {i : s_i >= t}``.
For the threshold ``t_hat`` this module returns,

    P( precision of A(t_hat) >= target ) >= 1 - delta

where the probability is over the draw of the reference sample only: the pool, its
confidences and its (unknown) truths are held fixed. With ``per_class=True`` the same
holds for every class's accepted set at once (so also for their union).

Assumptions it rests on (the caller's side of the contract):

1. The reference items are random draws from the candidates: a fixed number R of
   uniform draws with replacement over exactly the candidates passed
   (``strata_edges=None``), or stratified by confidence (``strata_edges``): within each
   stratum a fixed number of uniform draws with replacement. Drawing without
   replacement a sample that is small next to the pool is close to this (measured
   conservative in bench/results/certify_sim.md, not proven here).
   The reference items count as candidates: exporting their human labels instead of
   the model's only raises the precision of the exported set.
2. Their confidence and predicted class come from the same model as the candidates'
   and that model was **not trained on their answers** (use out-of-fold predictions
   for reference items, or keep them out of training). A model that has seen an item's
   label is right about it more often than about the pool, which would make the
   reference sample overstate precision.
3. Which items were drawn did not depend on their answers, and no reference answer is
   dropped because of what it said.

How
---
Fixed-sequence testing (Learn-then-Test, Angelopoulos, Bates et al. 2021): thresholds
are tested from most to least confident, each null hypothesis "precision of A(t) <
target" at level delta, and the walk stops at the first threshold that is not
rejected. Because only a prefix of a sequence fixed in advance is rejected, no
multiplicity correction is needed. The sequence is fixed from the pool and the design
alone (never from the answers): it starts at the threshold where a calibrated model
would be most likely to pass (within 98% of the best predicted pass probability, taking
the highest such threshold), and steps down in ``grid_size`` even steps of pool count.

Per-threshold p-values (each valid for its threshold over the draw of the reference
sample, which is all the fixed-sequence argument needs):

* ``method="binomial"``, uniform design: given the count n of reference draws above the
  threshold, they are uniform over its candidates, so their errors are Binomial(n, e) with
  e the pool error rate above it, and ``P(Binomial(n, 1 - target) <= errors)`` is the exact
  (Clopper-Pearson) conditional p-value. Being discrete, it sits below its level at most
  n (at 0.95, n = 59 draws without error give 0.0485, n = 70 give 0.028). The count n is
  itself Binomial(R, M/N) with R the reference draws and M of the N candidates above the
  threshold, both known, so by default the conditional p-value is recalibrated to its exact
  law under the design (``design_binomial_p_value``): never larger, still exact, and it
  certifies from fewer answers (measured in bench/results/certify_sim.md). This needs the R
  draws to be uniform with replacement over exactly the candidates given;
  ``condition_on_counts=True`` keeps the conditional p-value, which needs only that the
  draws above each threshold be uniform over the candidates above it.
* ``method="binomial"``, stratified design (conditional on the draws per stratum above
  the threshold; given those, they are uniform over the stratum's candidates above it):
  the error count of A(t) is estimated by
  inverse-probability (post-stratified) weights ``M_h / n_h`` per stratum, a weighted
  sum of independent bounded variables. Each draw's weighted error is scaled into
  [0, 1] by the largest weight and tested with the Hoeffding-Bentkus p-value
  ``min(exp(-n kl(mean, a)), e * P(Binomial(n, a) <= ceil(sum)))`` (Hoeffding 1963,
  Thm 1; Bentkus 2004; both hold for independent, not identically distributed,
  variables in [0, 1], through the mean of their means). Strata with candidates above
  the threshold but no draws there are counted as all wrong.
* ``method="ppi"`` (prediction-powered, Angelopoulos et al. 2023): precision of A(t) =
  mean calibrated confidence over A(t) (known exactly from the pool) + a rectifier,
  the mean of ``correct - confidence`` over A(t), which the reference sample
  estimates. The rectifier's per-draw value lies in ``[-1, 1 - t]``; it is shifted
  and scaled into [0, 1] and tested with the same Hoeffding-Bentkus p-value (weighted
  where stratified), so the bound is finite-sample valid, not a CLT interval. Note
  what this buys: per item, ``correct - confidence`` has variance
  ``Var(correct) - Var(confidence)``, and above a high threshold the confidences vary
  little, so PPI is rarely cheaper here than the exact binomial (the bench shows it).

* ``regions`` (a ``RegionDesign``; binomial, conditional, no ``strata_edges``): part of the
  draws were uniform over a *region* of the candidates (the most confident part of some
  earlier round's pool), the rest uniform over all of them. At each threshold, how many of
  the most recent regions to use is chosen from counts and confidences alone (the best
  chance a calibrated model would pass, never an answer); every
  draw that lands in ``A(t)`` inside those regions is uniform over that part, so its errors
  are Binomial there; the items of ``A(t)`` outside are counted as errors. Precision of
  ``A(t)`` >= target then follows from the inside part's error rate being at most
  ``((1 - target) |A(t)| - |outside|) / |inside|``, tested exactly.

The certified lower bound is the target: that is what the fixed-sequence test proves.
A pointwise bound at the chosen threshold would not be valid after the choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from metalabel.data.arrays import check_class_ids
from metalabel.errors import BadInputError, check_whole_number

Method = Literal["binomial", "ppi"]
METHODS: tuple[str, ...] = ("binomial", "ppi")
DEFAULT_GRID_SIZE = 200
PRIOR_ITEMS = 5.0
"""Projections of what more answers would show shrink the observed error rate toward the
calibrated one (1 - mean confidence) with this many pseudo-items, so that 3 lucky answers
do not promise a certificate."""
_START_POWER_SHARE = 0.98
_MAX_PROJECTED_ANSWERS = 10_000_000


@dataclass(frozen=True, eq=False)
class RegionDesign:
    """Where each reference draw came from, for ``certify_acceptance(regions=...)``; K regions.

    ``candidates`` [N, K] and ``draws`` [R, K]: the item lies in region k, or was no
    candidate when region k was drawn from (so no draw from k could have missed it).
    ``drawn_from`` [R]: the region a draw was uniform over, -1 for a draw over all candidates.
    Regions are ordered oldest first.
    """

    candidates: NDArray[np.bool_]
    draws: NDArray[np.bool_]
    drawn_from: NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Certificate:
    """Which candidates are accepted, and what the reference sample proves about them.

    ``lower_bound`` is None and ``mask`` is all False when nothing could be certified;
    ``reference_needed`` then says how many more reference answers, drawn by the same
    design and at the error rate seen so far, would certify the first threshold tested
    (None when that rate is already too high: more answers will not help, a better model
    will).
    """

    method: str  # "binomial" or "ppi"
    target: float  # the precision asked for
    delta: float  # the certificate fails with probability at most delta
    threshold: float | None  # the global threshold (inf when nothing accepted); None with per_class
    thresholds: NDArray[np.float64]  # [C] per predicted class (all equal to ``threshold`` in global mode)
    mask: NDArray[np.bool_]  # [N] accepted candidates: confidence >= thresholds[predicted]
    accepted: int  # mask.sum()
    coverage: float  # accepted / N
    lower_bound: float | None  # precision proven with probability >= 1 - delta (the target), None if nothing
    estimate: float | None  # point estimate of the accepted set's precision (not a guarantee); None if nothing
    reference_used: int  # reference answers above the chosen threshold(s) (above the first tested, if none)
    reference_size: int  # reference answers given
    reference_needed: int | None  # more reference answers that would certify the first threshold; 0 if certified
    reason: str  # one line a person can read

    @property
    def certified(self) -> bool:
        return self.accepted > 0


@dataclass(frozen=True)
class BudgetPlan:
    """What a requested coverage at the target is expected to cost in human answers.

    The model behind it (``assumptions`` says it in words): the error rate over the most
    confident ``coverage`` share of the pool is the reference sample's (shrunk toward the
    calibrated rate); each active answer lowers it along a learning curve
    ``error * ((trained_on + active) / trained_on) ** -learning_exponent``; and the
    reference answers needed are those the exact binomial test needs at that rate,
    scaled by the share of reference draws landing in that set. The pair (reference,
    active) with the smallest total is returned. The fixed-sequence path above the
    threshold and per-class testing are not modelled, so treat the figures as a floor.
    """

    target: float
    delta: float
    coverage: float  # requested share of the pool
    threshold: float  # confidence of the least confident item in that share
    error_rate: float  # estimated error rate of that set now
    reference_needed: int | None  # more reference answers; None when not reachable
    active_needed: int | None  # more active-learning answers; None when not reachable
    reachable: bool  # False when no split within max_active reaches it under the model
    next_reference: int  # questions of the next round to spend on the reference sample
    next_active: int  # ... and on active learning (sum = questions_per_round)
    assumptions: str
    reason: str


def certify_acceptance(
    confidence: ArrayLike,
    predicted: ArrayLike,
    *,
    reference_confidence: ArrayLike,
    reference_predicted: ArrayLike,
    reference_correct: ArrayLike,
    target: float,
    delta: float = 0.05,
    method: Method = "binomial",
    per_class: bool = False,
    strata_edges: ArrayLike | None = None,
    classes: int | None = None,
    grid_size: int = DEFAULT_GRID_SIZE,
    condition_on_counts: bool = False,
    regions: RegionDesign | None = None,
) -> Certificate:
    """Choose the acceptance threshold(s) whose precision is certified (the module doc gives the rule).

    ``confidence`` and ``predicted`` [N] describe the candidates; the ``reference_*``
    arrays [R] the reference sample (``reference_correct``: whether the predicted class
    matched the person's answer). ``strata_edges`` (ascending, inside (0, 1)) declares a
    design stratified by confidence: stratum h holds confidences in
    ``[edges[h-1], edges[h])``, and each stratum's reference draws were uniform over its
    candidates. ``per_class`` certifies one threshold per predicted class, each at
    ``delta / (classes with candidates)``, so every class meets the target.
    ``condition_on_counts`` (uniform design only) uses the plain conditional binomial
    p-value instead of its design-calibrated version: for reference draws that were
    uniform over the candidates above each threshold but not over exactly this pool.
    ``regions`` declares draws made over regions of the candidates (the module doc says how
    they are used); it needs ``condition_on_counts`` and the binomial method.
    """
    conf, pred = _check_items(confidence, predicted, "confidence", "predicted")
    ref_conf, ref_pred = _check_items(reference_confidence, reference_predicted, "reference_confidence",
                                      "reference_predicted", allow_empty=True)
    ref_correct = _check_correct(reference_correct, ref_conf.size)
    target, delta = _check_unit(target, "target"), _check_unit(delta, "delta")
    if method not in METHODS:
        raise BadInputError(f"method must be one of {METHODS}, got {method!r}")
    check_whole_number("grid_size", grid_size, minimum=1)
    edges = _check_edges(strata_edges)
    _check_regions(regions, conf.size, ref_conf.size, conditional=condition_on_counts, method=method,
                   stratified=edges.size > 0)
    n_classes = int(max(pred.max(initial=-1), ref_pred.max(initial=-1)) + 1)
    if classes is not None:
        check_whole_number("classes", classes, minimum=n_classes)
        n_classes = int(classes)
    stratum, ref_stratum = _strata(conf, edges), _strata(ref_conf, edges)
    draws = np.bincount(ref_stratum, minlength=edges.size + 1)
    candidates = np.bincount(stratum, minlength=edges.size + 1)
    empty = np.flatnonzero((draws > 0) & (candidates == 0))
    if empty.size:
        raise BadInputError(
            f"{int(draws[empty].sum())} reference answers fall in confidence strata with no candidates",
            hint="the reference sample must be drawn from the candidates (score both with the same model)",
        )

    groups: list[int | None]  # None: one global group
    if per_class:
        groups = [c for c in range(n_classes) if np.any(pred == c)]
        level = delta / max(len(groups), 1)
    else:
        groups, level = [None], delta
    results: dict[int | None, _Result] = {}
    for c in groups:
        keep = slice(None) if c is None else pred == c
        ref_keep = slice(None) if c is None else ref_pred == c
        group_regions = None if regions is None else RegionDesign(
            regions.candidates[keep], regions.draws[ref_keep], regions.drawn_from[ref_keep])
        results[c] = _fixed_sequence(
            conf[keep], stratum[keep], ref_conf[ref_keep], ref_correct[ref_keep], ref_stratum[ref_keep],
            design_draws=draws, design_candidates=candidates, reference_size=int(ref_conf.size), target=target,
            level=level, method=method, grid_size=int(grid_size), calibrate=not condition_on_counts,
            regions=group_regions,
        )

    thresholds = np.full(n_classes, np.inf)
    for c, result in results.items():
        if c is None:
            thresholds[:] = result.threshold
        else:
            thresholds[c] = result.threshold
    mask = conf >= thresholds[pred]
    accepted = int(mask.sum())
    certified = [r for r in results.values() if r.accepted]
    if accepted:
        estimate = sum(r.estimate * r.accepted for r in certified) / sum(r.accepted for r in certified)
        used = sum(r.reference_used for r in certified)
        needed: int | None = 0
        what = "per class" if per_class else f"at confidence >= {results[None].threshold:.4f}"
        reason = (f"certified precision >= {target:.3f} with probability >= {1 - delta:.3f} for {accepted} labels "
                  f"({accepted / conf.size:.1%} of the pool) {what}, from {used} reference answers above the threshold")
        if per_class:
            missing = [c for c in groups if not results[c].accepted]
            if missing:
                reason += f"; nothing certified for class(es) {missing}"
    else:
        used = sum(r.reference_used for r in results.values())
        options = [r.reference_needed for r in results.values() if r.reference_needed is not None]
        needed = min(options) if options else None
        if ref_conf.size == 0:
            reason = (f"nothing certified at {target:.3f}: no reference answers yet (a random sample of the pool "
                      "checked by a person is the only evidence a certificate can rest on)")
        elif needed is None:
            reason = (f"nothing certified at {target:.3f}: the reference sample's error rate is at or above "
                      f"{1 - target:.3f} even at the most confident threshold tested; more reference answers at "
                      "this rate will not certify it, a better model (more active answers) or a lower target will")
        else:
            reason = (f"nothing certified at {target:.3f}: about {needed} more reference answers at the error rate "
                      "seen so far would certify the first threshold")
    return Certificate(
        method=method, target=target, delta=delta,
        threshold=None if per_class else float(results[None].threshold),
        thresholds=thresholds, mask=mask, accepted=accepted, coverage=accepted / conf.size,
        lower_bound=target if accepted else None,
        estimate=float(np.clip(estimate, 0.0, 1.0)) if accepted else None,
        reference_used=int(used), reference_size=int(ref_conf.size), reference_needed=needed, reason=reason,
    )


def plan_budget(
    confidence: ArrayLike,
    *,
    reference_confidence: ArrayLike,
    reference_correct: ArrayLike,
    target: float,
    coverage: float,
    trained_on: int,
    questions_per_round: int,
    delta: float = 0.05,
    strata_edges: ArrayLike | None = None,
    learning_exponent: float = 0.5,
    max_active: int | None = None,
) -> BudgetPlan:
    """Expected more reference and active-learning answers to certify ``coverage`` at ``target``.

    ``trained_on`` is how many human labels the model has learned from so far (the
    learning curve's scale); ``max_active`` caps the active answers considered (default:
    the pool size). The next round's ``questions_per_round`` are split in proportion to
    the two figures; when the goal is already met (both zero) they all go to active
    learning, and when it is out of reach under the model, to active learning too (only
    a better model helps).
    """
    conf = _check_confidence(confidence, "confidence")
    ref_conf = _check_confidence(reference_confidence, "reference_confidence", allow_empty=True)
    ref_correct = _check_correct(reference_correct, ref_conf.size)
    target, delta = _check_unit(target, "target"), _check_unit(delta, "delta")
    if not 0 < coverage <= 1:
        raise BadInputError(f"coverage must lie in (0, 1], got {coverage}", hint="e.g. 0.6 for 60% of the pool")
    check_whole_number("trained_on", trained_on, minimum=1)
    check_whole_number("questions_per_round", questions_per_round, minimum=0)
    if not 0 < learning_exponent < np.inf:
        raise BadInputError(f"learning_exponent must be > 0, got {learning_exponent}", hint="0.5 is typical")
    limit = conf.size if max_active is None else max_active
    check_whole_number("max_active", limit, minimum=0)
    edges = _check_edges(strata_edges)

    stratum, ref_stratum = _strata(conf, edges), _strata(ref_conf, edges)
    n_strata = edges.size + 1
    candidates = np.bincount(stratum, minlength=n_strata)
    draws = np.bincount(ref_stratum, minlength=n_strata)
    order = np.sort(conf)[::-1]
    threshold = float(order[max(int(math.ceil(coverage * conf.size)), 1) - 1])
    above = np.bincount(stratum[conf >= threshold], minlength=n_strata)
    calibrated_error = float(1 - conf[conf >= threshold].mean())
    rate = _shrunk_error(ref_conf, ref_correct, ref_stratum, above, threshold, calibrated_error)
    # share of a reference answer (same design; proportional to stratum size without one) landing above the threshold
    design = draws / draws.sum() if draws.sum() else candidates / candidates.sum()
    share = float(np.sum(design * np.divide(above, candidates, out=np.zeros(n_strata), where=candidates > 0)))
    needed_above = _items_to_certify(target, delta)

    best: tuple[int, int] | None = None
    steps = np.unique(np.concatenate([[0], np.geomspace(1, max(limit, 1), 400).astype(int)])) if limit else [0]
    for active in steps:
        if active > limit:
            break
        error = rate * ((trained_on + active) / trained_on) ** (-learning_exponent)
        items = needed_above(error)
        if items is None or share <= 0:
            continue
        reference = max(int(math.ceil(items / share)) - int(ref_conf.size), 0)
        if best is None or reference + active < sum(best):
            best = (reference, int(active))
    assumptions = (f"error rate over the top {coverage:.0%} now {rate:.4f} (reference sample, shrunk toward the "
                   f"calibrated {calibrated_error:.4f} with {PRIOR_ITEMS:g} pseudo-items); each active answer lowers "
                   f"it as ((n + a) / n) ** -{learning_exponent:g} from n = {trained_on} labels; reference answers "
                   f"from the exact binomial test at delta {delta:g}, {share:.1%} of them landing in that set; "
                   "fixed-sequence path and per-class testing not modelled")
    if best is None:
        return BudgetPlan(target, delta, float(coverage), threshold, rate, None, None, False, 0,
                          int(questions_per_round), assumptions,
                          f"{coverage:.0%} coverage at {target:.3f} is out of reach within {limit} active answers "
                          "under the model: the error rate there stays too high")
    reference, active = best
    total = reference + active
    if total == 0:
        next_reference, reason = 0, f"{coverage:.0%} coverage at {target:.3f} is expected to certify already"
    else:
        next_reference = min(int(round(questions_per_round * reference / total)), reference)
        reason = (f"about {reference} more reference and {active} more active answers for {coverage:.0%} coverage "
                  f"at {target:.3f}")
    return BudgetPlan(target, delta, float(coverage), threshold, rate, reference, active, True, next_reference,
                      int(questions_per_round) - next_reference, assumptions, reason)


def clopper_pearson_upper(errors: int, trials: int, delta: float) -> float:
    """One-sided exact upper bound on a binomial rate at level 1 - delta (1.0 with no trials)."""
    if trials == 0 or errors >= trials:
        return 1.0
    return float(stats.beta.ppf(1 - delta, errors + 1, trials - errors))


def binomial_p_value(errors: ArrayLike, trials: ArrayLike, target: float) -> NDArray[np.float64]:
    """Exact p-value of "error rate > 1 - target" given ``errors`` of ``trials``: P(Bin(trials, 1 - target) <= errors).

    ``p <= delta`` exactly when ``clopper_pearson_upper(errors, trials, delta) <= 1 - target``.
    """
    k, n = np.asarray(errors), np.asarray(trials)
    return np.where(n > 0, stats.binom.cdf(k, np.maximum(n, 1), 1 - target), 1.0)


def design_binomial_p_value(errors: ArrayLike, trials: ArrayLike, target: float, *, draws: int,
                            share: ArrayLike) -> NDArray[np.float64]:
    """``binomial_p_value`` calibrated to a uniform design: never larger, and exact over the draw of the sample.

    ``draws`` reference items are drawn uniformly with replacement from a pool, ``share`` of
    which lies in the tested set A, and ``trials`` of them landed in A with ``errors`` wrong.
    Conditional on ``trials`` the binomial p-value P is valid but, being discrete, usually
    strictly below its level. Here the count in A is random, Binomial(draws, share), with a
    known law, so the exact null law of P can be computed: the returned p-value is
    P(P' <= P) with P' the conditional p-value of a fresh sample at error rate 1 - target. It
    is valid for every error rate >= 1 - target (P' only grows with the error rate), and it is
    at most P since P is valid given every count. Only P < 1/2 is recalibrated (P itself is
    returned above; the certificate never needs a p-value that large).
    """
    check_whole_number("draws", draws, minimum=0)
    shape = np.broadcast_shapes(np.shape(errors), np.shape(trials), np.shape(share))
    conditional = np.broadcast_to(binomial_p_value(errors, trials, target), shape).ravel()
    shares = np.broadcast_to(np.asarray(share, dtype=np.float64), shape).ravel()
    small = np.flatnonzero(conditional < 0.5)
    if draws == 0 or small.size == 0:
        return conditional.reshape(shape)
    e0 = 1 - target
    # cdf of Binomial(n, e0) for every n <= draws, up to the k where every such cdf reaches 1/2 (the median
    # of a binomial is at most the ceiling of its mean)
    n = np.arange(draws + 1)[:, None]
    k = np.arange(min(draws, math.ceil(draws * e0) + 1) + 1)[None, :]
    rest = np.maximum(n - k, 0)
    log_pmf = (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(rest + 1)
               + k * math.log(e0) + rest * math.log1p(-e0))
    cdf = np.cumsum(np.where(k <= n, np.exp(log_pmf), 0.0), axis=1)
    p = conditional[small] * (1 + 1e-9)  # float tolerance: the observed count's own cdf must count as <= p
    # per count n, P(P' <= p | n): the largest cdf value of Binomial(n, e0) that is <= p
    attained = np.zeros((draws + 1, small.size))
    for count in range(1, draws + 1):
        at = np.searchsorted(cdf[count], p, side="right") - 1
        attained[count] = np.where(at >= 0, cdf[count, np.maximum(at, 0)], 0.0)
    s = np.clip(shares[small], 0.0, 1.0)[None, :]
    log_weight = (special.gammaln(draws + 1) - special.gammaln(n + 1) - special.gammaln(draws - n + 1)
                  + special.xlogy(n, s) + special.xlog1py(draws - n, -s))
    out = np.array(conditional, dtype=np.float64)
    out[small] = np.minimum((np.exp(log_weight) * attained).sum(axis=0), conditional[small])
    return out.reshape(shape)


def hoeffding_bentkus_p_value(mean: ArrayLike, trials: ArrayLike, null_mean: ArrayLike) -> NDArray[np.float64]:
    """p-value of "mean of means >= null_mean" for ``trials`` independent variables in [0, 1] with observed ``mean``."""
    m, n, a = (np.asarray(x, dtype=np.float64) for x in (mean, trials, null_mean))
    m, n, a = np.broadcast_arrays(m, n, a)
    a_safe = np.clip(a, 1e-300, 1.0)
    low = np.minimum(m, a_safe)
    kl = special.xlogy(low, low / a_safe) + special.xlogy(1 - low, (1 - low) / np.maximum(1 - a_safe, 1e-300))
    hoeffding = np.exp(-n * kl)
    successes = np.ceil(n * m - 1e-9)
    bentkus = math.e * stats.binom.cdf(successes, np.maximum(n, 1), np.minimum(a_safe, 1.0))
    p = np.minimum(1.0, np.minimum(hoeffding, bentkus))
    return np.where((n > 0) & (a > 0), p, 1.0)


# ---------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Result:
    threshold: float  # inf when nothing certified
    accepted: int
    estimate: float
    reference_used: int
    reference_needed: int | None


def _fixed_sequence(
    conf: NDArray[np.float64], stratum: NDArray[np.int64], ref_conf: NDArray[np.float64],
    ref_correct: NDArray[np.bool_], ref_stratum: NDArray[np.int64], *, design_draws: NDArray[np.int64],
    design_candidates: NDArray[np.int64], reference_size: int, target: float, level: float, method: str,
    grid_size: int, calibrate: bool, regions: RegionDesign | None = None,
) -> _Result:
    """Walk the threshold sequence for one group of candidates (all, or one class)."""
    if conf.size == 0:
        return _Result(np.inf, 0, float("nan"), 0, None)
    order = np.sort(conf)[::-1]
    n_strata = design_draws.size
    # Expected draws per candidate in each stratum: the design, restricted to this group.
    draw_rate = np.divide(design_draws, design_candidates, out=np.zeros(n_strata), where=design_candidates > 0)
    # per single reference answer drawn by the same design (uniform over the pool when there is none yet)
    unit_rate = draw_rate / reference_size if reference_size else np.full(n_strata, 1.0 / design_candidates.sum())
    start = _start_count(conf, stratum, draw_rate, target, level) if regions is None else \
        _region_start_count(conf, ref_conf, ref_correct, regions, target, level)
    counts = np.unique(np.linspace(start, order.size, min(grid_size, order.size - start + 1)).round().astype(int))
    grid = np.unique(order[counts - 1])[::-1]  # thresholds, descending
    stats_ = _summaries(grid, conf, stratum, ref_conf, ref_correct, ref_stratum, n_strata)
    # the design the uniform binomial p-value is calibrated to: this many draws over this many candidates
    design = (reference_size, int(design_candidates.sum())) if n_strata == 1 and calibrate else None
    p = _p_values(stats_, grid, target, method, single_stratum=n_strata == 1, design=design)
    if regions is not None:
        p, n, errors, _ = _region_tests(grid, conf, ref_conf, ref_correct, regions, target, level)
        stats_ = {**stats_, "n": n[:, None], "errors": errors[:, None]}
    passed = p <= level
    run = int(np.argmin(passed)) if not passed.all() else passed.size
    if run == 0:
        needed = _reference_needed(stats_, grid, unit_rate, reference_size, target, level, method,
                                   single_stratum=n_strata == 1)
        return _Result(np.inf, 0, float("nan"), int(stats_["n"][0].sum()), needed)
    g = run - 1
    return _Result(float(grid[g]), int(stats_["M"][g].sum()), _estimate(stats_, g, method),
                   int(stats_["n"][g].sum()), 0)




def _start_count(conf: NDArray[np.float64], stratum: NDArray[np.int64], draw_rate: NDArray[np.float64],
                 target: float, level: float) -> int:
    """First pool count to test: the highest threshold at which a calibrated model would be within
    ``_START_POWER_SHARE`` of its best chance to pass (averaged over the expected count of reference draws
    above it, and one standard deviation either side). Uses the pool and the design only, never an answer."""
    idx = np.argsort(-conf, kind="stable")
    expected_draws = np.cumsum(draw_rate[stratum[idx]])
    calibrated_error = 1 - np.cumsum(conf[idx]) / np.arange(1, conf.size + 1)
    counts = np.unique(np.geomspace(1, conf.size, min(conf.size, 300)).round().astype(int))
    expected = expected_draws[counts - 1]
    error = np.clip(calibrated_error[counts - 1], 0, 1)
    power = np.zeros(counts.size)
    for spread in (-1.0, 0.0, 1.0):  # how many draws land above a threshold is itself random: smooth over it
        n = np.floor(expected + spread * np.sqrt(expected) + 1e-9).clip(0).astype(int)
        passing = _max_passing_errors(n, target, level)
        power += np.where(passing >= 0, stats.binom.cdf(passing, np.maximum(n, 1), error), 0.0) / 3
    if power.max() <= 1e-12:
        enough = np.flatnonzero(_max_passing_errors(np.floor(expected).astype(int), target, level) >= 0)
        return int(counts[enough[0]] if enough.size else conf.size)
    return int(counts[np.flatnonzero(power >= _START_POWER_SHARE * power.max())[0]])


def _max_passing_errors(trials: NDArray[np.int64], target: float, level: float) -> NDArray[np.int64]:
    """Most errors among ``trials`` that the exact binomial test still certifies at ``level`` (-1: none)."""
    n = np.maximum(trials, 1)
    k = stats.binom.ppf(level, n, 1 - target)
    k = np.where(stats.binom.cdf(k, n, 1 - target) <= level, k, k - 1)
    return np.where(trials > 0, k, -1).astype(np.int64)


def _summaries(grid: NDArray[np.float64], conf: NDArray[np.float64], stratum: NDArray[np.int64],
               ref_conf: NDArray[np.float64], ref_correct: NDArray[np.bool_], ref_stratum: NDArray[np.int64],
               n_strata: int) -> dict[str, NDArray[np.float64]]:
    """Per threshold (rows) and stratum (columns): pool count M and confidence sum above it; reference draws n,
    errors and sum of (confidence - correct) above it."""
    out = {key: np.zeros((grid.size, n_strata)) for key in ("M", "sumconf", "n", "errors", "loss")}
    for h in range(n_strata):
        pool = np.sort(conf[stratum == h])
        below = np.searchsorted(pool, grid, side="left")
        out["M"][:, h] = pool.size - below
        prefix = np.concatenate([[0.0], np.cumsum(pool)])
        out["sumconf"][:, h] = prefix[-1] - prefix[below]
        mine = ref_stratum == h
        order = np.argsort(ref_conf[mine], kind="stable")
        r_conf, r_correct = ref_conf[mine][order], ref_correct[mine][order]
        below = np.searchsorted(r_conf, grid, side="left")
        out["n"][:, h] = r_conf.size - below
        for key, values in (("errors", ~r_correct), ("loss", r_conf - r_correct)):
            prefix = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
            out[key][:, h] = prefix[-1] - prefix[below]
    return out


def _p_values(st: dict[str, NDArray[np.float64]], grid: NDArray[np.float64], target: float, method: str, *,
              single_stratum: bool, design: tuple[int, int] | None = None) -> NDArray[np.float64]:
    """p-value of "precision of A(t) < target" at every threshold t of ``grid`` (module doc); ``design``
    (draws, candidates) calibrates the uniform binomial p-value to that design."""
    M, n = st["M"], st["n"]
    total = M.sum(axis=1)
    if method == "binomial":
        if single_stratum:
            errors, trials = np.ceil(st["errors"][:, 0] - 1e-9), n[:, 0].astype(int)
            if design is None:
                return binomial_p_value(errors, trials, target)
            draws, candidates = design
            return design_binomial_p_value(errors, trials, target, draws=draws, share=total / candidates)
        y, null_total = st["errors"], (1 - target) * total
    else:
        lam = grid[:, None]
        y = (st["loss"] + n * (1 - lam)) / (2 - lam)  # per draw in [0, 1]
        null_total = (st["sumconf"].sum(axis=1) - target * total + total * (1 - grid)) / (2 - grid)
    sampled = (n > 0) & (M > 0)
    need = null_total - np.where(sampled, 0.0, M).sum(axis=1)  # unsampled strata counted at their worst
    weight = np.where(sampled, M / np.maximum(n, 1), 0.0)
    heaviest = weight.max(axis=1)
    draws = np.where(sampled, n, 0).sum(axis=1)
    scale = np.maximum(heaviest * draws, 1e-300)
    mean = (weight * np.where(sampled, y, 0.0)).sum(axis=1) / scale
    p = hoeffding_bentkus_p_value(mean, draws, np.clip(need / scale, 0.0, 1.0))
    return np.where((need > 0) & (draws > 0), p, 1.0)


def _region_start_count(conf: NDArray[np.float64], ref_conf: NDArray[np.float64], ref_correct: NDArray[np.bool_],
                        regions: RegionDesign, target: float, level: float) -> int:
    """``_start_count`` for region draws: the highest threshold within ``_START_POWER_SHARE`` of the best chance
    a calibrated model would pass, by the design (how many draws each region and the whole pool got)."""
    order = np.sort(conf)[::-1]
    counts = np.unique(np.geomspace(1, conf.size, min(conf.size, 300)).round().astype(int))
    power = _region_tests(order[counts - 1], conf, ref_conf, ref_correct, regions, target, level)[3]
    if power.max() <= 1e-12:
        return int(conf.size)
    return int(counts[np.flatnonzero(power >= _START_POWER_SHARE * power.max())[0]])


def _region_tests(grid: NDArray[np.float64], conf: NDArray[np.float64], ref_conf: NDArray[np.float64],
                  ref_correct: NDArray[np.bool_], regions: RegionDesign, target: float, level: float
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per threshold: p-value of the region design (module doc), the draws and errors it used, and the chance
    a calibrated model would pass there.

    At each threshold, how many of the most recent regions to use is chosen by that chance, computed from
    the design alone (the draws each region got, its size, the confidences): never from where the draws
    landed or what they said, so the choice cannot favour a lucky sample.
    """
    k = regions.candidates.shape[1]
    order = np.argsort(-conf, kind="stable")
    above = np.searchsorted(-conf[order], -grid, side="right")  # candidates with confidence >= each threshold
    uniform_rate = np.sum(regions.drawn_from < 0) / conf.size  # expected draws per candidate, uniform part
    region_rate = np.bincount(regions.drawn_from[regions.drawn_from >= 0], minlength=k) / np.maximum(
        regions.candidates.sum(axis=0), 1)
    p, n, errors = np.ones(grid.size), np.zeros(grid.size), np.zeros(grid.size)
    best_power = np.full(grid.size, -1.0)
    inside, ref_inside = np.ones(conf.size, dtype=bool), np.ones(ref_conf.size, dtype=bool)
    for j in range(k + 1):  # j: inside the j most recent regions (0: no region, everything inside)
        if j:
            inside &= regions.candidates[:, k - j]
            ref_inside &= regions.draws[:, k - j]
        in_order = inside[order]
        inside_count = np.concatenate([[0], np.cumsum(in_order)])[above]
        inside_conf = np.concatenate([[0.0], np.cumsum(np.where(in_order, conf[order], 0.0))])[above]
        # the inside part's error rate that keeps A(t) at the target with every outside item wrong
        allowed = np.clip(((1 - target) * above - (above - inside_count)) / np.maximum(inside_count, 1), 0, 1)
        testable = (allowed > 0) & (allowed < 1)
        safe_allowed = np.clip(allowed, 1e-12, 1 - 1e-12)
        expected = np.floor(inside_count * (uniform_rate + region_rate[k - j:].sum()) + 1e-9).astype(int)
        calibrated_error = np.clip(1 - inside_conf / np.maximum(inside_count, 1), 0, 1)
        power = np.where(testable & (expected > 0), _pass_chance(expected, safe_allowed, calibrated_error, level), 0.0)
        usable = ((regions.drawn_from < 0) | (regions.drawn_from >= k - j)) & ref_inside
        drawn = usable[None, :] & (ref_conf[None, :] >= grid[:, None])  # [G, R]
        trials = drawn.sum(axis=1)
        wrong = (drawn & ~ref_correct[None, :]).sum(axis=1)
        better = power > best_power
        best_power = np.where(better, power, best_power)
        tested = testable & (trials > 0)
        p = np.where(better, np.where(tested, stats.binom.cdf(wrong, np.maximum(trials, 1), safe_allowed), 1.0), p)
        n, errors = np.where(better, trials, n), np.where(better, wrong, errors)
    return p, n, errors, best_power


def _pass_chance(trials: NDArray[np.int64], allowed: NDArray[np.float64], error: NDArray[np.float64],
                 level: float) -> NDArray[np.float64]:
    """Chance that ``trials`` draws at error rate ``error`` pass the exact binomial test of ``allowed`` at ``level``."""
    n = np.maximum(trials, 1)
    passing = stats.binom.ppf(level, n, allowed)
    passing = np.where(stats.binom.cdf(passing, n, allowed) <= level, passing, passing - 1)
    return np.where(passing >= 0, stats.binom.cdf(passing, n, error), 0.0)


def _observed_error(st: dict[str, NDArray[np.float64]], g: int) -> tuple[float, float]:
    """Post-stratified error rate over the sampled strata above grid point g, and the draws behind it."""
    M, n, errors = st["M"][g], st["n"][g], st["errors"][g]
    sampled = (n > 0) & (M > 0)
    if not sampled.any():
        return 0.0, 0.0
    rate = float(np.sum(M[sampled] * errors[sampled] / n[sampled]) / M[sampled].sum())
    return rate, float(n[sampled].sum())


def _shrink(rate: float, draws: float, calibrated_error: float) -> float:
    return (rate * draws + PRIOR_ITEMS * calibrated_error) / (draws + PRIOR_ITEMS)


def _estimate(st: dict[str, NDArray[np.float64]], g: int, method: str) -> float:
    M, n = st["M"][g], st["n"][g]
    sampled = (n > 0) & (M > 0)
    if not sampled.any():
        return float("nan")
    if method == "binomial":
        return 1.0 - _observed_error(st, g)[0]
    rectifier = -np.sum(M[sampled] * st["loss"][g][sampled] / n[sampled]) / M[sampled].sum()
    return float(st["sumconf"][g].sum() / M.sum() + rectifier)


def _reference_needed(st: dict[str, NDArray[np.float64]], grid: NDArray[np.float64], unit_rate: NDArray[np.float64],
                      reference_size: int, target: float, level: float, method: str, *,
                      single_stratum: bool) -> int | None:
    """More reference answers (same design) that would certify the first threshold at the error rate seen there."""
    M = st["M"][0]
    calibrated_error = float(1 - st["sumconf"][0].sum() / M.sum())
    rate = _shrink(*_observed_error(st, 0), calibrated_error)
    if rate >= 1 - target:
        return None
    lam = grid[:1]
    mean_conf = st["sumconf"][0].sum() / M.sum()

    def p_value(answers: int) -> float:
        n = np.floor(answers * unit_rate * M + 1e-9)
        projected = {"M": M[None], "sumconf": st["sumconf"][0][None], "n": n[None],
                     "errors": (n * rate)[None], "loss": (n * (mean_conf - (1 - rate)))[None]}
        # the conditional p-value: its cost does not grow with ``answers``, and it only overstates what is needed
        return float(_p_values(projected, lam, target, method, single_stratum=single_stratum)[0])

    enough = _smallest_count(lambda answers: p_value(answers) <= level, start=reference_size)
    return None if enough is None else max(enough - reference_size, 1)


def _smallest_count(passes: Callable[[int], bool], *, start: int) -> int | None:
    """The fewest n with ``passes(n)`` (monotone in n), by doubling from ``start`` then bisecting; None past the cap."""
    high = max(start, 1)
    while not passes(high):
        if high > _MAX_PROJECTED_ANSWERS:
            return None
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high


def _items_to_certify(target: float, delta: float):
    """error rate -> fewest items above a threshold the exact binomial test certifies at that rate (None: never)."""

    def passes(n: int, error: float) -> bool:
        return bool(stats.binom.cdf(math.ceil(error * n - 1e-9), n, 1 - target) <= delta)

    def items(error: float) -> int | None:
        if error >= 1 - target:
            return None
        return _smallest_count(lambda n: passes(n, error), start=1)

    return items


def _shrunk_error(ref_conf, ref_correct, ref_stratum, above, threshold, calibrated_error) -> float:
    n_strata = above.size
    keep = ref_conf >= threshold
    n = np.bincount(ref_stratum[keep], minlength=n_strata).astype(np.float64)
    errors = np.bincount(ref_stratum[keep], weights=~ref_correct[keep], minlength=n_strata)
    st = {"M": above[None].astype(np.float64), "n": n[None], "errors": errors[None]}
    return _shrink(*_observed_error(st, 0), calibrated_error)


# ---------------------------------------------------------------------------------------------- checks


def _check_confidence(values: ArrayLike, name: str, *, allow_empty: bool = False) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or (array.size == 0 and not allow_empty):
        raise BadInputError(f"{name} must be a {'' if allow_empty else 'non-empty '}1-D array, got shape {array.shape}")
    if not np.all((array >= 0) & (array <= 1)):
        raise BadInputError(f"{name} must hold calibrated confidences in [0, 1]", hint="pass the top probability")
    return array


def _check_items(confidence: ArrayLike, predicted: ArrayLike, name: str, predicted_name: str, *,
                 allow_empty: bool = False) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    conf = _check_confidence(confidence, name, allow_empty=allow_empty)
    return conf, check_class_ids(predicted, name=predicted_name, rows=conf.size, row_name=f"value of {name}")


def _check_correct(values: ArrayLike, size: int) -> NDArray[np.bool_]:
    correct = np.asarray(values)
    if correct.shape != (size,):
        raise BadInputError(f"reference_correct has shape {correct.shape}, expected ({size},)",
                            hint="one True/False per reference answer")
    if correct.size and correct.dtype != np.bool_ and not np.isin(correct, (0, 1)).all():
        raise BadInputError("reference_correct must hold only True/False (or 1/0)")
    return correct.astype(bool)


def _check_regions(regions: RegionDesign | None, items: int, draws: int, *, conditional: bool, method: str,
                   stratified: bool) -> None:
    if regions is None:
        return
    if not conditional or method != "binomial" or stratified:
        raise BadInputError("region draws are certified by the conditional binomial test only",
                            hint="pass condition_on_counts=True, method='binomial' and no strata_edges")
    k = regions.candidates.shape[1] if regions.candidates.ndim == 2 else -1
    if (regions.candidates.shape != (items, k) or regions.draws.shape != (draws, k)
            or regions.drawn_from.shape != (draws,)):
        raise BadInputError(f"regions must be [{items}, K], [{draws}, K] and [{draws}] arrays",
                            hint="one row per candidate and per reference answer, one column per region")
    if regions.drawn_from.size and (regions.drawn_from.min() < -1 or regions.drawn_from.max() >= k):
        raise BadInputError(f"drawn_from must be -1 (all candidates) or a region index below {k}")
    mine = regions.drawn_from >= 0
    if not regions.draws[np.flatnonzero(mine), regions.drawn_from[mine]].all():
        raise BadInputError("a reference answer drawn from a region must lie in it")


def _check_unit(value: float, name: str) -> float:
    if not 0 < value < 1:
        raise BadInputError(f"{name} must lie strictly between 0 and 1, got {value}", hint="e.g. 0.95 or 0.05")
    return float(value)


def _check_edges(edges: ArrayLike | None) -> NDArray[np.float64]:
    if edges is None:
        return np.zeros(0)
    array = np.asarray(edges, dtype=np.float64)
    if array.ndim != 1 or not np.all((array > 0) & (array < 1)) or np.any(np.diff(array) <= 0):
        raise BadInputError("strata_edges must be strictly increasing confidences inside (0, 1)",
                            hint="e.g. [0.9, 0.97, 0.99] for four strata")
    return array


def _strata(conf: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.searchsorted(edges, conf, side="right").astype(np.int64)
