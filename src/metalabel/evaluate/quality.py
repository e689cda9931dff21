"""How good the labels are: accuracy with an interval, confusion, and the labels most likely wrong.

NumPy in, NumPy out. ``label_issues`` uses cleanlab (``pip install 'metalabel[evaluate]'``),
imported only when it is called; ``method="builtin"`` (or ``"auto"`` without cleanlab) runs
the plain confident-learning filter here instead, so a core install can still search.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from metalabel.data.arrays import check_class_ids
from metalabel.errors import BadInputError, MissingDependencyError, check_whole_number
from metalabel.label.accept import wilson_accuracy
from metalabel.label.calibrate import validate_probabilities

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def accuracy_with_ci(correct: ArrayLike, *, confidence: float = 0.95) -> dict[str, float]:
    """Accuracy of ``correct`` (one bool per checked label) with its Wilson interval.

    Returns ``accuracy``, ``low``, ``high`` and ``count``. The Wilson interval stays
    inside [0, 1] and keeps its coverage for small counts and rates near 1.
    """
    # An audit of accepted labels is the same binomial question, so its checks and interval are reused.
    accuracy, low, high = wilson_accuracy(correct, confidence=confidence)
    return {"accuracy": accuracy, "low": low, "high": high, "count": int(np.asarray(correct).size)}


def confusion(true: ArrayLike, predicted: ArrayLike, *, classes: int) -> IntArray:
    """``[classes, classes]`` counts: row = true class, column = predicted class."""
    check_whole_number("classes", classes, minimum=1)
    truth = check_class_ids(true, name="true", classes=classes)
    guess = check_class_ids(predicted, name="predicted", rows=len(truth), row_name="true label", classes=classes)
    return np.bincount(truth * classes + guess, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(confusion: ArrayLike) -> FloatArray:
    """Share of each true class (row of ``confusion``) predicted right; NaN for a class with no items."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise BadInputError(
            f"confusion must be a square [classes, classes] matrix, got shape {counts.shape}",
            hint="build it with metalabel.evaluate.confusion",
        )
    if not np.issubdtype(counts.dtype, np.number) or (counts < 0).any() or not np.isfinite(counts).all():
        raise BadInputError("confusion must hold counts >= 0", hint="build it with metalabel.evaluate.confusion")
    totals = counts.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty classes become NaN on purpose
        return np.diagonal(counts) / totals


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """Labels that are probably wrong, most likely wrong first. All arrays are aligned."""

    indices: IntArray  # [K] items, ranked
    given: IntArray  # [K] the label each was given
    suggested: IntArray  # [K] the model's top class for it
    self_confidence: FloatArray  # [K] the model's probability of the given label (ascending)

    def __len__(self) -> int:
        return len(self.indices)


LABEL_ISSUE_METHODS = ("cleanlab", "builtin", "auto")


def cleanlab_installed() -> bool:
    """Whether ``label_issues(method="cleanlab")`` can run."""
    try:
        import cleanlab.filter  # noqa: F401
    except ImportError:
        return False
    return True


def label_issues(labels: ArrayLike, out_of_fold_probs: ArrayLike, *, max_issues: int | None = None,
                 method: str = "cleanlab") -> LabelIssues:
    """Labels that ``out_of_fold_probs`` [N, C] says are probably wrong, found by confident learning.

    ``method``: ``"cleanlab"`` (its default filter, pruning by estimated noise rates;
    needs ``pip install 'metalabel[evaluate]'``), ``"builtin"`` (the plain confident-learning
    filter of Northcutt et al. 2021: an item is flagged when it is confidently, i.e. above
    its class's average self-confidence, another class; the off-diagonals of the confident
    joint), or ``"auto"`` (cleanlab when installed, else builtin).

    The probabilities must come from a model that did not train on the item's own
    label (cross-validation); otherwise the model has learned the mistakes. Issues are
    ranked by self-confidence, lowest first, and cut to ``max_issues`` when given.

    Classes need not all appear in ``labels``; all C columns are passed to cleanlab as
    they are. cleanlab sets an absent class's threshold out of reach, so it counts no
    item as truly of that class. An item whose true class appears in no label is
    flagged only if the model confidently puts it in another class that does appear.
    Items given a class that only one item was given are never flagged: one label
    allows no noise estimate. ``suggested`` is the model's top class over all C
    columns. With fewer than two classes among the labels there is nothing to
    contrast, so no issues are returned. Both methods follow these rules.
    """
    if method not in LABEL_ISSUE_METHODS:
        raise BadInputError(f"no label-issue method named {method!r}",
                            hint=f"use one of {', '.join(LABEL_ISSUE_METHODS)}")
    probs = validate_probabilities(out_of_fold_probs, name="out_of_fold_probs")
    given_labels = check_class_ids(labels, name="labels", rows=len(probs), row_name="row of probs",
                                   classes=probs.shape[1])
    if max_issues is not None:
        check_whole_number("max_issues", max_issues, minimum=0)
    if method == "auto":
        method = "cleanlab" if cleanlab_installed() else "builtin"
    if method == "cleanlab":
        try:
            from cleanlab.filter import find_label_issues
        except ImportError:
            raise MissingDependencyError(
                "label_issues needs cleanlab: pip install 'metalabel[evaluate]' (or pass method='builtin')"
            ) from None

    if np.unique(given_labels).size < 2:
        ranked = np.empty(0, dtype=np.int64)
    elif method == "builtin":
        ranked = _confident_learning(given_labels, probs)
    else:
        with warnings.catch_warnings():
            # Raised for every class with at most one label; the docstring states what that means.
            warnings.filterwarnings("ignore", message="May not flag all label issues in class")
            ranked = find_label_issues(
                given_labels,
                probs,
                return_indices_ranked_by="self_confidence",
                n_jobs=1,  # its process pool costs more than it saves at labeling sizes, and forks a torch process
            ).astype(np.int64)
    ranked = ranked[:max_issues]
    given = given_labels[ranked]
    return LabelIssues(
        indices=ranked,
        given=given,
        suggested=probs[ranked].argmax(axis=1).astype(np.int64),
        self_confidence=probs[ranked, given],
    )


def _confident_learning(labels: IntArray, probs: FloatArray) -> IntArray:
    """Items whose confident class is not their label, ranked by self-confidence (lowest first).

    A class's threshold is the mean probability of that class over the items labeled with
    it; an item's confident class is its most probable class among those it reaches the
    threshold of (none: not counted). A class absent from ``labels`` has no threshold, so
    no item is confidently of it. As in cleanlab, a class keeps at least one label: an item
    given a class that only it was given is never flagged, nor is a class's last label.
    """
    classes = probs.shape[1]
    counts = np.bincount(labels, minlength=classes)
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=classes)
    thresholds = np.full(classes, np.inf)
    present = counts > 0
    thresholds[present] = sums[present] / counts[present]
    reached = probs >= thresholds
    confident = np.where(reached, probs, -np.inf).argmax(axis=1)
    flagged = reached.any(axis=1) & (confident != labels) & (counts[labels] >= 2)
    self_confidence = probs[np.arange(len(labels)), labels]
    for cls in np.unique(labels[flagged]):
        members = np.flatnonzero(labels == cls)
        if flagged[members].all():  # keep the class's most self-confident label
            flagged[members[np.argmax(self_confidence[members])]] = False
    candidates = np.flatnonzero(flagged)
    return candidates[np.argsort(self_confidence[candidates], kind="stable")].astype(np.int64)
