"""Learn an augmentation policy from held-out feedback instead of setting one by hand.

``search_policy`` adds, greedily, the operation that raises the caller's held-out score
most, then drops every operation whose removal does not lower it: what does not help
goes. ``held_out_score`` is the score most callers want: cross-validated accuracy of a
classifier trained on the training folds expanded by the policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import numpy as np

from metalabel.data.arrays import check_matrix
from metalabel.errors import BadInputError, check_whole_number
from metalabel.generate.augment import (
    FLIP_OPERATIONS,
    OPERATIONS_BY_MODALITY,
    AugmentationPolicy,
    Operation,
    expand,
)
from metalabel.generate.evidence import CLASSIFIERS, held_out_accuracy

DEFAULT_MAGNITUDES = (0.2, 0.5, 0.8)
DEFAULT_PROBABILITY = 0.5


@dataclass(frozen=True)
class PolicySearch:
    """What the search chose and why.

    ``best_score`` is the score of ``best`` (after the backward pass it can sit up to
    ``min_gain`` below the best score seen); ``trials`` holds every distinct policy scored,
    as ``(policy.to_dict(), score)`` in the order they were tried.
    """

    best: AugmentationPolicy
    best_score: float
    baseline_score: float
    trials: tuple[tuple[dict[str, Any], float], ...]
    changes: tuple[str, ...]


def default_candidates(modality: str) -> tuple[Operation, ...]:
    """Every operation of ``modality`` at magnitudes 0.2, 0.5 and 0.8 with probability 0.5 (flips once)."""
    if modality not in OPERATIONS_BY_MODALITY:
        raise BadInputError(
            f"unknown augmentation modality {modality!r}", hint=f"use one of: {', '.join(OPERATIONS_BY_MODALITY)}"
        )
    candidates: list[Operation] = []
    for name in OPERATIONS_BY_MODALITY[modality]:
        magnitudes = (DEFAULT_MAGNITUDES[1],) if name in FLIP_OPERATIONS else DEFAULT_MAGNITUDES
        candidates.extend(Operation(name, DEFAULT_PROBABILITY, magnitude) for magnitude in magnitudes)
    return tuple(candidates)


def search_policy(
    score: Callable[[AugmentationPolicy], float],
    *,
    modality: str,
    candidates: Sequence[Operation] | None = None,
    max_operations: int = 3,
    min_gain: float = 0.0,
    start: AugmentationPolicy | None = None,
    no_flip_classes: frozenset[int] = frozenset(),
) -> PolicySearch:
    """A backward pass over ``start``, greedy forward selection, then a backward pass again.

    ``score(policy)`` returns held-out accuracy in ``[0, 1]`` (higher is better), e.g.
    ``lambda p: held_out_score(x, y, p, copies=4, seed=0)``. Forward: while the policy has
    fewer than ``max_operations`` operations, add the candidate (of a name not yet used)
    that scores best, if it beats the current score by more than ``min_gain``. Backward:
    while some operation's removal lowers the score by no more than ``min_gain``, remove the
    one whose removal scores best. ``start`` (last round's policy) gets a backward pass
    before anything is added, so a new operation cannot prop up one that now harms. Each policy
    is scored once, so a deterministic ``score`` makes the search deterministic. Searched
    policies keep ``start``'s no-flip classes plus ``no_flip_classes``.
    """
    if start is not None and (not isinstance(start, AugmentationPolicy) or start.modality != modality):
        raise BadInputError(
            f"start must be an {modality} AugmentationPolicy, got {start!r}",
            hint="start from a policy of the modality searched, or leave start out",
        )
    empty = AugmentationPolicy(modality, (), no_flip_classes)  # also checks modality and no_flip_classes
    if start is not None:
        empty = replace(empty, no_flip_classes=empty.no_flip_classes | start.no_flip_classes)
    candidates = default_candidates(modality) if candidates is None else tuple(candidates)
    for candidate in candidates:
        if not isinstance(candidate, Operation) or candidate.name not in OPERATIONS_BY_MODALITY[modality]:
            raise BadInputError(
                f"candidate {candidate!r} is not an {modality} Operation",
                hint=f"{modality} operations: {', '.join(OPERATIONS_BY_MODALITY[modality])}",
            )
    check_whole_number("max_operations", max_operations, minimum=0)
    if isinstance(min_gain, bool) or not isinstance(min_gain, Real) or not min_gain >= 0:
        raise BadInputError(
            f"min_gain must be a number >= 0, got {min_gain!r}", hint="use 0.0, or e.g. 0.005 for half a point"
        )

    scored: dict[str, float] = {}
    trials: list[tuple[dict[str, Any], float]] = []

    def evaluate(policy: AugmentationPolicy) -> float:
        if policy.version not in scored:
            value = score(policy)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise BadInputError(
                    f"score returned {value!r} for policy '{policy.describe()}'",
                    hint="score must return a finite number, such as held-out accuracy",
                )
            scored[policy.version] = float(value)
            trials.append((policy.to_dict(), float(value)))
        return scored[policy.version]

    baseline_score = evaluate(empty)
    current = empty if start is None else replace(start, no_flip_classes=empty.no_flip_classes)
    current_score = evaluate(current)
    changes: list[str] = []

    started_with = set() if start is None else {operation.name for operation in start.operations}

    def drop_what_does_not_help() -> None:
        nonlocal current, current_score
        while current.operations:
            tries = [current.without(operation.name) for operation in current.operations]
            scores = [evaluate(policy) for policy in tries]
            best = int(np.argmax(scores))
            loss = current_score - scores[best]
            if loss > min_gain:
                break
            dropped = current.operations[best]
            origin = " from the starting policy" if dropped.name in started_with else ""
            changes.append(f"dropped {dropped.describe(probability=False)}{origin} ({_removal_effect(loss)})")
            current, current_score = tries[best], scores[best]

    # the starting policy (last round's) is judged again first, so new operations cannot prop up a harmful one
    drop_what_does_not_help()

    while len(current.operations) < max_operations:
        used = {operation.name for operation in current.operations}
        tries = [current.with_operation(c) for c in candidates if c.name not in used]
        if not tries:
            break
        scores = [evaluate(policy) for policy in tries]
        best = int(np.argmax(scores))  # the first of equal scores, so candidate order breaks ties
        if scores[best] - current_score <= min_gain:
            break
        gain = scores[best] - current_score
        added = tries[best].operations[-1]
        changes.append(f"added {added.describe(probability=False)} ({100 * gain:+.1f} pts held-out accuracy)")
        current, current_score = tries[best], scores[best]


    drop_what_does_not_help()
    return PolicySearch(
        best=current,
        best_score=current_score,
        baseline_score=baseline_score,
        trials=tuple(trials),
        changes=tuple(changes),
    )


def _removal_effect(loss: float) -> str:
    if loss < 0:
        return f"removing it raised held-out accuracy {100 * -loss:.1f} pts"
    if loss == 0:
        return "removing it left held-out accuracy unchanged"
    return f"removing it lowered held-out accuracy only {100 * loss:.1f} pts, within min_gain"


def held_out_score(
    x: Any,
    y: Any,
    policy: AugmentationPolicy,
    *,
    copies: int,
    folds: int = 5,
    seed: int,
    classifier: str = "logistic",
    featurize: Callable[[Any], np.ndarray] | None = None,
) -> float:
    """Cross-validated accuracy of a classifier trained on training folds expanded by ``policy``.

    Folds are stratified and depend only on ``y`` and ``seed``, so every policy is judged
    on the same splits. Only classes with at least 2 examples are ever held out, one fold
    never taking a class's last training example; a class with a single example always
    trains (it still competes as a wrong answer). So at least 2 classes, one with 2 or more
    examples, are needed. At most ``folds`` folds, fewer when the largest class is smaller.
    The result is the fraction of held-out items predicted right.

    ``x`` is what ``expand`` takes. For an image policy pass ``featurize``, which maps
    images (the kind ``x`` is) to features ``[M, D]``; the classifier works on those.
    ``classifier`` is ``"logistic"`` (scikit-learn's LogisticRegression) or ``"prototype"``
    (nearest class mean). An empty policy or ``copies=0`` scores the classifier unaugmented.
    """
    check_whole_number("copies", copies, minimum=0)
    check_whole_number("folds", folds, minimum=2)
    check_whole_number("seed", seed, minimum=0)
    if classifier not in CLASSIFIERS:
        raise BadInputError(f"unknown classifier {classifier!r}", hint=f"use one of: {', '.join(CLASSIFIERS)}")
    if not isinstance(policy, AugmentationPolicy):
        raise BadInputError(f"expected an AugmentationPolicy, got {type(policy).__name__}")
    if policy.modality == "image" and featurize is None:
        raise BadInputError(
            "scoring an image policy needs featurize, which turns images into features",
            hint="pass featurize=lambda images: encoder(images) returning an array [N, D]",
        )
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
        raise BadInputError(
            f"expected one integer label per item ({len(x)}), got shape {labels.shape} and dtype {labels.dtype}",
            hint="pass a 1-D array of class indices",
        )
    features = _features(x, featurize, expected_rows=len(labels))
    row_of = {row.tobytes(): i for i, row in enumerate(features)}

    def policy_rows(train_features: np.ndarray, train_labels: np.ndarray, fold_seed: int):
        # the judge hands over feature rows; the items behind them (images, for an image policy) are found by value
        rows = np.array([row_of[row.tobytes()] for row in train_features], dtype=np.int64)
        augmented = expand(_rows(x, rows), train_labels, policy, copies=copies, seed=fold_seed)
        return _features(augmented.x, featurize, expected_rows=len(augmented.y)), augmented.y

    augmenting = bool(policy.operations) and copies > 0
    return held_out_accuracy(features, labels, expand=policy_rows if augmenting else None, folds=folds, seed=seed,
                             classifier=classifier)


def _rows(x: Any, indices: np.ndarray) -> Any:
    if hasattr(x, "index_select"):  # a torch tensor; it takes a tensor index
        import torch

        return x.index_select(0, torch.from_numpy(indices).to(x.device))
    return np.asarray(x)[indices]


def _features(x: Any, featurize: Callable[[Any], np.ndarray] | None, *, expected_rows: int) -> np.ndarray:
    made = x if featurize is None else featurize(x)
    if hasattr(made, "detach"):
        made = made.detach().cpu().numpy()
    source = "x" if featurize is None else "featurize's output"
    features = check_matrix(made, name=source, min_rows=0, hint="check the encoder's output there",
                            shape_hint="features are one row per item")
    if len(features) != expected_rows:
        raise BadInputError(f"{source} has {len(features)} rows for {expected_rows} items",
                            hint="features are one row per item")
    return features
