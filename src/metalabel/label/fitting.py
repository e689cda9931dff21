"""Fit a round's model to the labels: which learner and head, its calibration, cross-fitted pool predictions.

Human labels are the held-out evidence everything here is judged by. Every pool item
is dealt to one of K folds (human labels stratified by class, all other items at
random); fold f's model learns from the labels of the items outside f and predicts the
items inside it. So every prediction, of a human-labeled item or of a candidate, with
or without a pseudo-label, comes from a model that never saw that item's label, and
from the same K models. That is what lets the random reference sample speak for the
exported labels: a reference answer's prediction is made exactly as a candidate's is
(a model trained on all labels would be sharper on the candidates than on the held-out
reference items, and the certificate would then be about another model). Calibration
is fitted on the human labels' out-of-fold logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metalabel.errors import NotEnoughDataError
from metalabel.label.ask import DRAWN_AT_RANDOM
from metalabel.label.calibrate import TemperatureScaling, expected_calibration_error, stratified_folds
from metalabel.label.round_model import RoundModel
from metalabel.store import Label, LabelSource


@dataclass(frozen=True, eq=False)
class LabelSnapshot:
    """The labels a round learns from, read once from the store, as arrays over pool positions.

    ``trusted`` marks human and seed labels (weight 1); accepted model labels weigh
    ``pseudo_weight``; generated and augmented labels are not pool items and do not appear.
    ``chosen`` marks answers to questions picked for what the model found hard (active
    learning, suspected label issues): not a fair sample of the pool. ``active`` holds
    every active label as read (of pool items or not): what acceptance re-judges.
    """

    positions: np.ndarray  # [L] pool positions
    classes: np.ndarray  # [L] class indices
    weights: np.ndarray  # [L]
    trusted: np.ndarray  # [L] bool
    chosen: np.ndarray | None = None  # [L] bool; None: none
    active: tuple[Label, ...] = ()

    @classmethod
    def of(cls, labels: Iterable[Label], *, position_of_item: Mapping[int, int], class_index: Mapping[str, int],
           pseudo_weight: float) -> LabelSnapshot:
        read = tuple(labels)
        positions, classes, weights, trusted, chosen = [], [], [], [], []
        for label in read:
            source = LabelSource(label.source)
            weight = 1.0 if source.trusted else pseudo_weight if source is LabelSource.MODEL else 0.0
            if weight > 0 and label.item_id in position_of_item:
                positions.append(position_of_item[label.item_id])
                classes.append(class_index[label.class_name])
                weights.append(weight)
                trusted.append(source.trusted)
                chosen.append(source is LabelSource.HUMAN and label.query_strategy is not None
                              and label.query_strategy not in DRAWN_AT_RANDOM)
        return cls(np.array(positions, dtype=np.int64), np.array(classes, dtype=np.int64),
                   np.array(weights, dtype=np.float64), np.array(trusted, dtype=bool), np.array(chosen, dtype=bool),
                   read)

    @property
    def human_positions(self) -> np.ndarray:
        return self.positions[self.trusted]

    @property
    def human_classes(self) -> np.ndarray:
        return self.classes[self.trusted]

    @property
    def human_chosen(self) -> np.ndarray:
        """[H] bool: which human labels answer questions picked for being hard (``chosen``)."""
        return np.zeros(int(self.trusted.sum()), dtype=bool) if self.chosen is None else self.chosen[self.trusted]

    @property
    def pseudo(self) -> LabelSnapshot:
        """Only the accepted model labels."""
        keep = ~self.trusted
        return LabelSnapshot(self.positions[keep], self.classes[keep], self.weights[keep], self.trusted[keep])


@dataclass(frozen=True, eq=False)
class Calibration:
    """A round model's calibration on out-of-fold human labels; empty while no label can be held out."""

    calibrator: TemperatureScaling | None = None
    ece: float | None = None
    accuracy: float | None = None  # out-of-fold accuracy on the human labels
    # ... on those not picked for being hard (seeds, reference and random questions), with their number
    fair_accuracy: float | None = None
    fair_count: int = 0
    probs: np.ndarray | None = None  # calibrated out-of-fold probabilities [H, C]
    labels: np.ndarray | None = None  # [H] the human labels they predict
    positions: np.ndarray | None = None  # [H] pool positions of those items
    pool_logits: np.ndarray | None = None  # [N, C] every pool item's, from the fold model that did not see it

    def judging_accuracy(self, ways: int) -> float | None:
        """The accuracy candidates are compared by: on the fair held-out labels once there are enough."""
        enough = self.fair_count >= max(FAIR_LABELS_TO_JUDGE, ways)
        return self.fair_accuracy if enough else self.accuracy


FAIR_LABELS_TO_JUDGE = 20


def calibrate(model: RoundModel, labels: LabelSnapshot, *, ways: int, folds: int, seed: int,
              pool: bool = True) -> Calibration:
    """Out-of-fold logits of the human labels and (``pool``) of every pool item; a temperature fitted on the first.

    Empty while no human label can be held out (one label per class).
    """
    human_positions, human_classes = labels.human_positions, labels.human_classes
    try:
        human_fold = stratified_folds(human_classes, folds=folds, seed=seed)
    except NotEnoughDataError:
        return Calibration()  # one label per class: nothing to hold out yet
    used = np.unique(human_fold[human_fold >= 0])
    fold_of = used[np.random.default_rng([seed, 1]).integers(len(used), size=len(model.x))]
    # a human label of a single-label class is never held out: its item is predicted by a model that saw it
    fold_of[human_positions] = np.where(human_fold >= 0, human_fold, used[0])
    pseudo = labels.pseudo
    pool_logits = np.zeros((len(model.x), ways)) if pool else None
    held_logits = np.zeros((len(human_positions), ways))
    for fold in used:
        train = human_fold != fold
        keep = fold_of[pseudo.positions] != fold
        support = np.concatenate([human_positions[train], pseudo.positions[keep]])
        y = np.concatenate([human_classes[train], pseudo.classes[keep]])
        weights = np.concatenate([np.ones(int(train.sum())), pseudo.weights[keep]])
        held = human_fold == fold
        if pool_logits is not None:
            targets = np.flatnonzero(fold_of == fold)
            pool_logits[targets] = model.logits(support, y, weights, ways, targets=targets)
            held_logits[held] = pool_logits[human_positions[held]]
        else:
            held_logits[held] = model.logits(support, y, weights, ways, targets=human_positions[held])
    held = human_fold >= 0
    logits, truth = held_logits[held], human_classes[held]
    calibrator = TemperatureScaling().fit(logits, truth)
    probs = calibrator.predict_proba(logits)
    right = logits.argmax(1) == truth
    fair = ~labels.human_chosen[held]
    return Calibration(calibrator, float(expected_calibration_error(probs, truth)), float(right.mean()),
                       float(right[fair].mean()) if fair.any() else None, int(fair.sum()),
                       probs, truth, human_positions[held], pool_logits)


def pool_probabilities(model: RoundModel, calibration: Calibration, labels: LabelSnapshot, *,
                       ways: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw and calibrated probabilities of every pool item, each from a fold model that never saw its label.

    Before any label can be held out (one per class), from the model adapted to all of them: no reference
    answer exists yet, so nothing is certified from these.
    """
    logits = calibration.pool_logits
    if logits is None:
        logits = model.logits(labels.positions, labels.classes, labels.weights, ways)
    raw = torch.softmax(torch.from_numpy(logits), 1).numpy()
    return raw, (calibration.calibrator.predict_proba(logits) if calibration.calibrator is not None else raw)


@dataclass(frozen=True, eq=False)
class ModelChoice:
    """The judge's verdict: the chosen learner, head and calibration, and each learner's best score."""

    name: str
    model: RoundModel
    calibration: Calibration
    scores: Mapping[str, float | None]
    """By learner name, the judging accuracy of its best head (None: nothing held out to judge by)."""


def choose_model(candidates: Sequence[tuple[str, RoundModel]], labels: LabelSnapshot, *, ways: int, folds: int,
                 seed: int) -> ModelChoice:
    """The learner and head that predict held-out human labels best.

    Once at least ``FAIR_LABELS_TO_JUDGE`` (or one per class, if more) held-out labels
    were not picked for being hard, only those judge: answers to active-learning questions
    sit where the last model was unsure, and a head that does well there can do worse on
    the pool. On Fashion-MNIST (10k images, 5 labels a class, 200 answers, seed 1) judging
    by every held-out label let the raw-pixel space win the last round and pool accuracy
    fell from 79.5% to 77.0%; judged on the fair ones the encoder space stayed, 82.9%. Ties
    and rounds without held-out labels keep the first candidate (the given or plain-encoder
    one).
    """
    if not candidates:
        raise ValueError("choose_model needs at least one candidate")  # a programming error, not user input
    best: tuple[str, RoundModel, Calibration] | None = None
    best_score: float | None = None
    scores: dict[str, float | None] = {}
    for name, model in candidates:
        calibration = calibrate(model, labels, ways=ways, folds=folds, seed=seed)
        score = calibration.judging_accuracy(ways)  # the same held-out labels (same folds) for every candidate
        if score is not None:
            scores[name] = max(score, scores.get(name) or score)
        else:
            scores.setdefault(name, None)
        if best is None or (score is not None and best_score is not None and score > best_score):
            best, best_score = (name, model, calibration), score
    assert best is not None
    return ModelChoice(*best, scores)


RETIRE_AFTER = 2
"""Rounds in a row a learner must lose before the judge retires it from the project's later rounds (resumed and
later runs included: the history is the project's rounds)."""
RETIRE_MARGIN = 0.01
"""How far below the round's best a learner's best head must score to count as a loss: closer is noise."""


def retired_learners(history: Sequence[Mapping[str, float | None]], *, keep: str) -> dict[str, str]:
    """Learners the judge stops computing, from the project's rounds' ``ModelChoice.scores`` (oldest first), with why.

    A learner (``keep``, the first candidate, aside) whose best head scored at least
    ``RETIRE_MARGIN`` below the round's best in each of the last ``RETIRE_AFTER`` judged
    rounds is retired, and so is one a recent round no longer scored (retired before: a
    resumed run keeps it so). In the label-efficiency benchmark the project's meta-learner
    won 1 of 122 rounds on Fashion-MNIST, 20 Newsgroups and digits while it doubled the
    judge's work; a retired learner costs nothing more.
    """
    judged = [scores for scores in history if any(score is not None for score in scores.values())]
    if not judged:
        return {}
    retired = {name: "retired in an earlier round" for name in judged[0] if name not in judged[-1] and name != keep}
    recent = judged[-RETIRE_AFTER:]
    if len(recent) < RETIRE_AFTER:
        return retired
    for name in recent[-1]:
        own = [scores.get(name) for scores in recent]
        if name == keep or None in own:
            continue
        gaps = [max(score for score in scores.values() if score is not None) - float(mine or 0.0)
                for scores, mine in zip(recent, own)]
        if min(gaps) >= RETIRE_MARGIN:
            retired[name] = (f"below the best head by {' and '.join(f'{gap * 100:.1f}' for gap in gaps)} points "
                             f"in the last {RETIRE_AFTER} rounds")
    return retired
