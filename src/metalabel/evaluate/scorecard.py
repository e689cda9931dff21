"""The scorecard of a built data set: one JSON-ready dict per round, and its rows for a table.

Every section is computed from plain arrays the caller gathers (the pipeline each round,
``metalabel evaluate`` on demand), so the scorecard never reaches into a model:

- ``label_quality``: accuracy against gold labels where the user has them; otherwise the
  audits a person answered (a random sample of accepted labels, Wilson interval); the
  model's accuracy on held-out human labels; calibration (ECE, reliability curve);
  coverage and the acceptance estimate.
- ``confusion``: against gold, else audited labels, else held-out human labels.
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

from metalabel.evaluate.downstream import compare_with_generated
from metalabel.evaluate.quality import accuracy_with_ci, confusion, label_issues, per_class_accuracy
from metalabel.evaluate.similarity import similarity_report
from metalabel.generate.evidence import Expander
from metalabel.label.calibrate import expected_calibration_error, reliability_curve

DOWNSTREAM_FOLDS = 5


def label_quality(
    *,
    coverage: float,
    estimated_precision: float | None,
    precision_ci: Sequence[float] | None,
    audit_correct: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray] | None,
    gold_correct: np.ndarray | None,
) -> dict[str, Any]:
    """How good the labels are. ``held_out`` is (calibrated out-of-fold probs [N, C], human labels [N])."""
    section: dict[str, Any] = {
        "coverage": float(coverage),
        "estimated_precision": _number(estimated_precision),
        "precision_ci": None if precision_ci is None or any(map(_missing, precision_ci)) else
        [float(v) for v in precision_ci],
        "gold": accuracy_with_ci(gold_correct) if gold_correct is not None and len(gold_correct) else None,
        "audit": accuracy_with_ci(audit_correct) if len(audit_correct) else None,
        "held_out": None, "ece": None, "reliability": None,
    }
    if held_out is not None and len(held_out[1]):
        probs, labels = held_out
        section["held_out"] = accuracy_with_ci(probs.argmax(1) == labels)
        section["ece"] = float(expected_calibration_error(probs, labels, bins=10))
        curve = reliability_curve(probs, labels, bins=10)
        section["reliability"] = {key: [_number(v) for v in np.asarray(values, dtype=np.float64)]
                                  for key, values in curve.items()}
    return section


def confusion_section(true: np.ndarray, predicted: np.ndarray, *, classes: Sequence[str],
                      against: str) -> dict[str, Any] | None:
    """Counts of (true, predicted) class pairs; ``against`` says where the true labels come from."""
    if not len(true):
        return None
    matrix = confusion(true, predicted, classes=len(classes))
    return {"against": against, "classes": list(classes), "matrix": matrix.tolist(),
            "per_class_accuracy": [_number(v) for v in per_class_accuracy(matrix)]}


def issues_section(labels: np.ndarray, out_of_fold_probs: np.ndarray, *, uris: Sequence[str],
                   item_ids: Sequence[int], sources: Sequence[str], classes: Sequence[str],
                   max_issues: int = 20) -> list[dict[str, Any]]:
    """Trusted labels that confident learning finds probably wrong, most likely first.

    cleanlab's filter where it is installed (``pip install 'metalabel[evaluate]'``), else the
    built-in one: a core install gets a scorecard too.
    """
    if len(labels) < 2:
        return []
    found = label_issues(labels, out_of_fold_probs, max_issues=max_issues, method="auto")
    return [{"item_id": int(item_ids[i]), "uri": uris[i], "source": sources[i], "given": classes[given],
             "suggested": classes[suggested], "self_confidence": float(confidence)}
            for i, given, suggested, confidence in zip(found.indices, found.given, found.suggested,
                                                        found.self_confidence)]


def similarity_section(real_x: np.ndarray, generated: dict[str, np.ndarray], *, seed: int = 0) -> dict[str, Any]:
    """Each generator's items against the real labeled items (both in one embedding space)."""
    return {name: similarity_report(real_x, x, seed=seed) for name, x in generated.items()
            if len(x) >= 2 and len(real_x) >= 2}


def downstream_section(
    built_x: np.ndarray,
    built_y: np.ndarray,
    built_weight: np.ndarray,
    human: np.ndarray,
    *,
    expand: Expander | None,
    generated_weight: float = 0.5,
    seed: int = 0,
    featurize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any] | None:
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
        totals["real_only"] += result["real_only"] * fold_size
        totals["with_generated"] += result["with_generated"] * fold_size
        if result["tstr"] is not None:  # train on synthetic, test on real
            tstr_correct += result["tstr"] * fold_size
            tstr_tested += fold_size
    tested = len(human_rows)
    real_only, with_generated = totals["real_only"] / tested, totals["with_generated"] / tested
    return {"real_only": real_only, "with_generated": with_generated, "gain": with_generated - real_only,
            "tstr": tstr_correct / tstr_tested if tstr_tested else None, "test_size": tested,
            "generated": int(generated // (fold_of.max() + 1)),
            "test": f"held-out human labels ({fold_of.max() + 1}-fold)"}


def scorecard_rows(scorecard: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, metric, value, detail) rows of a scorecard, formatted for a table."""
    rows: list[tuple[str, str, str, str]] = []
    quality = scorecard.get("label_quality") or {}

    def interval(result: dict[str, Any] | None, section: str, metric: str, what: str) -> None:
        if result:
            rows.append((section, metric, f"{result['accuracy']:.1%}",
                         f"95% CI {result['low']:.1%}-{result['high']:.1%} over {result['count']} {what}"))

    interval(quality.get("gold"), "labels", "accuracy vs gold", "labels")
    interval(quality.get("audit"), "labels", "audited accuracy", "audited labels")
    if quality.get("estimated_precision") is not None:
        ci = quality.get("precision_ci")
        rows.append(("labels", "estimated precision", f"{quality['estimated_precision']:.1%}",
                     f"95% CI {ci[0]:.1%}-{ci[1]:.1%}, from calibrated confidence" if ci else "uncalibrated"))
    if "coverage" in quality:
        rows.append(("labels", "coverage", f"{quality['coverage']:.1%}", "share of unlabeled items accepted"))
    interval(quality.get("held_out"), "model", "held-out accuracy", "human labels, out of fold")
    if quality.get("ece") is not None:
        rows.append(("model", "calibration error (ECE)", f"{quality['ece']:.3f}", "10 bins, held-out human labels"))
    issues = scorecard.get("label_issues")
    if issues is not None:
        rows.append(("labels", "label issues", str(len(issues)), "human or seed labels confident learning finds suspect"))
    for name, metrics in (scorecard.get("similarity") or {}).items():
        rows.append(("generated", f"{name}: MMD / Frechet", f"{metrics['mmd']:.4f} / {metrics['frechet']:.2f}",
                     f"{metrics['generated']} items against {metrics['real']} real, in the model's space (64 principal components)"))
        rows.append(("generated", f"{name}: k-NN precision / recall",
                     f"{metrics['precision']:.2f} / {metrics['recall']:.2f}", "fidelity / diversity"))
    downstream = scorecard.get("downstream")
    if downstream:
        rows.append(("downstream", "classifier on built set", f"{downstream['real_only']:.1%}", downstream["test"]))
        if downstream["generated"]:
            rows.append(("downstream", "... with generated items", f"{downstream['with_generated']:.1%}",
                         f"{downstream['gain'] * 100:+.1f} pts, {int(downstream['generated'])} generated items"))
        if downstream.get("tstr") is not None:
            rows.append(("downstream", "train on generated only (TSTR)", f"{downstream['tstr']:.1%}", "tested on real"))
    for name, batch in (scorecard.get("generators") or {}).items():
        rows.append(("generator", name, "kept" if batch["kept"] else "dropped", batch["evidence"]))
    return rows


def _number(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
