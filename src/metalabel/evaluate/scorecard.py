"""The scorecard of a built data set: its sections as records (``metalabel.evaluate.records``), and its rows
for a table.

Every section is computed from plain arrays the caller gathers (the pipeline each round,
``metalabel evaluate`` on demand), so the scorecard never reaches into a model:

- ``label_quality``: coverage and the certificate (``certified_precision``, the lower bound
  on precision at ``1 - delta``, and the point estimate ``estimated_precision``); the
  reference answers in the accepted region (``reference_in_accepted``: the random reference
  sample's items the certified threshold accepts, checked by a person, Wilson interval);
  accuracy against gold labels where the user has them; the model's accuracy on held-out
  human labels; calibration (ECE, reliability curve).
- ``confusion``: against gold where there is gold, else against held-out human labels.
- ``label_issues``: human and seed labels that confident learning (cleanlab's filter, or
  the built-in one without cleanlab) finds probably wrong, from out-of-fold probabilities.
- ``similarity``: each generator's output against the real labeled items, in the
  model's embedding space reduced to 64 principal components (MMD, Frechet distance,
  k-NN precision and recall).
- ``downstream``: a fresh logistic regression trained on the built set with and without
  the generated items, tested on held-out human labels (k-fold, the generators run again
  on each training fold), and trained on the generated items alone (TSTR).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from metalabel.data.generated import GENERATED_WEIGHT, Expander
from metalabel.evaluate.downstream import compare_with_generated
from metalabel.evaluate.quality import accuracy_with_ci, confusion, label_issues, per_class_accuracy
from metalabel.evaluate.records import (
    Confusion,
    Downstream,
    Interval,
    LabelQuality,
    Reliability,
    RoundCertificate,
    Scorecard,
    Similarity,
    SuspectLabel,
)
from metalabel.evaluate.similarity import similarity_report
from metalabel.label.calibrate import expected_calibration_error, reliability_curve

DOWNSTREAM_FOLDS = 5

REFERENCE_IN_ACCEPTED_NAME = "reference answers in the accepted region"


def label_quality(
    *,
    coverage: float,
    estimated_precision: float | None,
    held_out: tuple[np.ndarray, np.ndarray] | None,
    gold_correct: np.ndarray | None,
    certified_precision: float | None = None,
    delta: float | None = None,
    reference_in_accepted: np.ndarray | None = None,
) -> LabelQuality:
    """How good the labels are. ``held_out`` is (calibrated out-of-fold probs [N, C], human labels [N]).

    ``certified_precision`` is the certificate's lower bound at ``1 - delta`` (None: nothing
    certified), ``estimated_precision`` its point estimate; ``reference_in_accepted`` says, per
    reference answer the certified threshold accepts, whether the model was right.
    """
    checked = np.asarray([] if reference_in_accepted is None else reference_in_accepted, dtype=bool)
    held_out_accuracy = ece = reliability = None
    if held_out is not None and len(held_out[1]):
        probs, labels = held_out
        held_out_accuracy = Interval.of(accuracy_with_ci(probs.argmax(1) == labels))
        ece = float(expected_calibration_error(probs, labels, bins=10))
        curve = reliability_curve(probs, labels, bins=10)
        reliability = Reliability(*(tuple(_number(v) for v in np.asarray(curve[key], dtype=np.float64))
                                    for key in ("edges", "confidence", "accuracy", "count")))
    return LabelQuality(
        coverage=float(coverage), certified_precision=_number(certified_precision), delta=_number(delta),
        estimated_precision=_number(estimated_precision),
        reference_in_accepted=Interval.of(accuracy_with_ci(checked)) if len(checked) else None,
        gold=Interval.of(accuracy_with_ci(gold_correct)) if gold_correct is not None and len(gold_correct) else None,
        held_out=held_out_accuracy, ece=ece, reliability=reliability)


def confusion_section(true: np.ndarray, predicted: np.ndarray, *, classes: Sequence[str],
                      against: str) -> Confusion | None:
    """Counts of (true, predicted) class pairs; ``against`` says where the true labels come from."""
    if not len(true):
        return None
    matrix = confusion(true, predicted, classes=len(classes))
    return Confusion(against, tuple(classes), tuple(tuple(int(n) for n in row) for row in matrix),
                     tuple(_number(v) for v in per_class_accuracy(matrix)))


def issues_section(labels: np.ndarray, out_of_fold_probs: np.ndarray, *, uris: Sequence[str],
                   item_ids: Sequence[int], sources: Sequence[str], classes: Sequence[str],
                   max_issues: int = 20) -> tuple[SuspectLabel, ...]:
    """Trusted labels that confident learning finds probably wrong, most likely first.

    cleanlab's filter where it is installed (``pip install 'metalabel[evaluate]'``), else the
    built-in one: a core install gets a scorecard too.
    """
    if len(labels) < 2:
        return ()
    found = label_issues(labels, out_of_fold_probs, max_issues=max_issues, method="auto")
    return tuple(SuspectLabel(int(item_ids[i]), uris[i], sources[i], classes[given], classes[suggested],
                              float(confidence))
                 for i, given, suggested, confidence in zip(found.indices, found.given, found.suggested,
                                                             found.self_confidence))


def similarity_section(real_x: np.ndarray, generated: dict[str, np.ndarray], *,
                       seed: int = 0) -> dict[str, Similarity]:
    """Each generator's items against the real labeled items (both in one embedding space)."""
    return {name: Similarity.of(similarity_report(real_x, x, seed=seed)) for name, x in generated.items()
            if len(x) >= 2 and len(real_x) >= 2}


def downstream_section(
    built_x: np.ndarray,
    built_y: np.ndarray,
    built_weight: np.ndarray,
    human: np.ndarray,
    *,
    expand: Expander | None,
    generated_weight: float = GENERATED_WEIGHT,
    seed: int = 0,
    featurize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Downstream | None:
    """A plain classifier trained on the built set, with and without generated items, tested on held-out humans.

    The human-labeled rows (``human``, a mask over the built set) are split into folds;
    each fold is tested by a model trained on every other row of the built set. The
    generators (``expand``: the round's kept ones) are run again in each fold on the
    training fold's human rows only, so no test label reaches the training data, not
    even through an item generated from it. Needs at least 2 classes among the human labels.
    ``featurize`` maps rows to what the classifier sees (the generators work on ``built_x``).
    """
    featurize = featurize or (lambda rows: rows)
    human_rows = np.flatnonzero(human)
    if np.unique(built_y[human_rows]).size < 2 or len(human_rows) < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of = np.full(len(built_y), -1)
    fold_of[rng.permutation(human_rows)] = np.arange(len(human_rows)) % min(DOWNSTREAM_FOLDS, len(human_rows))
    totals = {"real_only": 0.0, "with_generated": 0.0}
    tstr_correct, tstr_tested, generated = 0.0, 0, 0
    for fold in range(fold_of.max() + 1):
        test, train = fold_of == fold, fold_of != fold
        train_humans = train & human
        new_x, new_y = (expand(built_x[train_humans], built_y[train_humans], seed + fold) if expand is not None
                        else (built_x[:0], built_y[:0]))
        generated += len(new_y)
        fold_size = int(test.sum())
        train_features = featurize(built_x[train])
        new_features = featurize(new_x) if len(new_y) else train_features[:0]  # a projection wants rows
        result = compare_with_generated(train_features, built_y[train], new_features, new_y, featurize(built_x[test]),
                                        built_y[test], real_weight=built_weight[train],
                                        generated_weight=generated_weight, parents=human[train], seed=seed)
        real_only, with_generated, tstr = result["real_only"], result["with_generated"], result["tstr"]
        assert real_only is not None and with_generated is not None  # always measured; only TSTR may not be
        totals["real_only"] += real_only * fold_size
        totals["with_generated"] += with_generated * fold_size
        if tstr is not None:  # train on synthetic, test on real
            tstr_correct += tstr * fold_size
            tstr_tested += fold_size
    tested = len(human_rows)
    real_only, with_generated = totals["real_only"] / tested, totals["with_generated"] / tested
    return Downstream(real_only=real_only, with_generated=with_generated, gain=with_generated - real_only,
                      tstr=tstr_correct / tstr_tested if tstr_tested else None, test_size=tested,
                      generated=int(generated // (fold_of.max() + 1)),
                      test=f"held-out human labels ({fold_of.max() + 1}-fold)")


def scorecard_rows(scorecard: Scorecard) -> list[tuple[str, str, str, str]]:
    """(section, metric, value, detail) rows of a scorecard, formatted for a table."""
    rows: list[tuple[str, str, str, str]] = []
    quality = scorecard.label_quality

    def interval(result: Interval | None, section: str, metric: str, what: str) -> None:
        if result is not None and not any(_missing(v) for v in (result.accuracy, result.low, result.high)):
            rows.append((section, metric, percent(result.accuracy),
                         f"95% CI {result.low:.1%}-{result.high:.1%} over {result.count} {what}"))

    bound, delta = _number(quality.certified_precision), _number(quality.delta)
    if bound is not None:
        rows.append(("labels", "certified precision", at_least(bound, delta),
                     "lower confidence bound on the precision of every model label the export writes"
                     + ("" if delta is None else f", holding with probability {1 - delta:g}")))
    else:
        rows.append(("labels", "certified precision", "nothing certified",
                     "no model label is accepted until the random reference sample certifies the target"))
    estimate = _number(quality.estimated_precision)
    if estimate is not None:
        rows.append(("labels", "estimated precision", percent(estimate),
                     "point estimate of the accepted labels' precision, not a guarantee"))
    if _number(quality.coverage) is not None:
        rows.append(("labels", "coverage", percent(quality.coverage), "share of unlabeled items accepted"))
    interval(quality.reference_in_accepted, "labels", REFERENCE_IN_ACCEPTED_NAME,
             "random reference items above the certified threshold, checked by a person")
    interval(quality.gold, "labels", "accuracy vs gold", "labels")
    interval(quality.held_out, "model", "held-out accuracy", "human labels, out of fold")
    ece = _number(quality.ece)
    if ece is not None:
        rows.append(("model", "calibration error (ECE)", f"{ece:.3f}", "10 bins, held-out human labels"))
    rows.append(("labels", "label issues", str(len(scorecard.label_issues)),
                 "human or seed labels confident learning finds suspect"))
    for name, metrics in scorecard.similarity.items():
        rows.append(("generated", f"{name}: MMD / Frechet",
                     f"{_fixed(metrics.mmd, 4)} / {_fixed(metrics.frechet, 2)}",
                     f"{metrics.generated} items against {metrics.real} real, "
                     "in the model's space (64 principal components)"))
        rows.append(("generated", f"{name}: k-NN precision / recall",
                     f"{_fixed(metrics.precision, 2)} / {_fixed(metrics.recall, 2)}", "fidelity / diversity"))
    downstream = scorecard.downstream
    if downstream is not None and _number(downstream.real_only) is not None:
        rows.append(("downstream", "classifier on built set", percent(downstream.real_only), downstream.test))
        if downstream.generated and _number(downstream.gain) is not None:
            rows.append(("downstream", "... with generated items", percent(downstream.with_generated),
                         f"{downstream.gain * 100:+.1f} pts, {downstream.generated} generated items"))
        if _number(downstream.tstr) is not None:
            rows.append(("downstream", "train on generated only (TSTR)", percent(downstream.tstr),
                         "tested on real"))
    for name, batch in scorecard.generators.items():
        rows.append(("generator", name, "kept" if batch.kept else "dropped", batch.evidence))
    return rows


def percent(value: float | None) -> str:
    """A fraction as ``95.0%``; ``–`` where nothing was measured (never ``nan%``)."""
    value = _number(value)
    return "–" if value is None else f"{100 * value:.1f}%"


def at_least(bound: float, delta: float | None) -> str:
    """A certified lower bound as ``>= 95.0% (delta 0.05)``."""
    return f">= {percent(bound)}" + ("" if delta is None else f" (delta {delta:g})")


def not_certified(reference_needed: int | None, *, known: bool = True) -> str:
    """What it would take where nothing is certified; never a figure the evidence lacks.

    ``known=False`` where the round recorded no planner figure at all (a round run before
    certified acceptance).
    """
    if not known:
        return "nothing certified"
    if reference_needed is None:
        return ("nothing certified yet: at the error rate the reference sample shows, more reference answers "
                "alone will not certify the target; a better model will")
    return f"nothing certified yet: ~{reference_needed:,} more reference answers"


def precision_summary(*, certified_precision: float | None, delta: float | None,
                      estimated_precision: float | None, coverage: float | None, reference_answers: int | None,
                      reference_needed: int | None, target: float | None = None) -> str:
    """The certified figures of a round in one plain sentence (the CLI's ``status`` and the report say it alike)."""
    bound = _number(certified_precision)
    if bound is None:
        text = not_certified(reference_needed)
        if reference_answers is not None:
            text += f"; {reference_answers:,} reference answers so far"
        return text[0].upper() + text[1:] + "."
    sentence = f"Certified precision {at_least(bound, delta)}"
    if delta is not None or reference_answers is not None:
        sentence += ": holds" + ("" if delta is None else f" with probability {1 - delta:g}")
        if reference_answers is not None:
            sentence += f" over the {reference_answers:,} reference answers"
    if target is not None:
        sentence += f", {'meeting' if bound >= target else 'below'} the {percent(target)} target"
    if _number(estimated_precision) is not None:
        sentence += f"; point estimate {percent(estimated_precision)}"
    if _number(coverage) is not None:
        sentence += f"; coverage {percent(coverage)} of the unlabeled pool"
    return sentence + "."


def certificate_summary(certificate: RoundCertificate, *, target: float | None) -> str:
    """``precision_summary`` of a round's recorded certificate (status, the dataset card and the report)."""
    return precision_summary(
        certified_precision=certificate.certified_precision, delta=certificate.delta,
        estimated_precision=certificate.estimated_precision, coverage=certificate.coverage,
        reference_answers=certificate.reference_answers, reference_needed=certificate.reference_needed,
        target=target)


def _fixed(value: Any, digits: int) -> str:
    value = _number(value)
    return "–" if value is None else f"{value:.{digits}f}"


def _number(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
