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
from metalabel.label.calibrate import TemperatureScaling, expected_calibration_error, stratified_folds
from metalabel.label.round_model import RoundModel
from metalabel.store import Label, LabelSource


@dataclass(frozen=True, eq=False)
class LabelSnapshot:
    """The labels a round learns from, read once from the store, as arrays over pool positions.

    ``trusted`` marks human and seed labels (weight 1); accepted model labels weigh
    ``pseudo_weight``; generated and augmented labels are not pool items and do not appear.
    ``active`` holds every active label as read (of pool items or not): what acceptance re-judges.
    """

    positions: np.ndarray  # [L] pool positions
    classes: np.ndarray  # [L] class indices
    weights: np.ndarray  # [L]
    trusted: np.ndarray  # [L] bool
    active: tuple[Label, ...] = ()

    @classmethod
    def of(cls, labels: Iterable[Label], *, position_of_item: Mapping[int, int], class_index: Mapping[str, int],
           pseudo_weight: float) -> LabelSnapshot:
        read = tuple(labels)
        positions, classes, weights, trusted = [], [], [], []
        for label in read:
            source = LabelSource(label.source)
            weight = 1.0 if source.trusted else pseudo_weight if source is LabelSource.MODEL else 0.0
            if weight > 0 and label.item_id in position_of_item:
                positions.append(position_of_item[label.item_id])
                classes.append(class_index[label.class_name])
                weights.append(weight)
                trusted.append(source.trusted)
        return cls(np.array(positions, dtype=np.int64), np.array(classes, dtype=np.int64),
                   np.array(weights, dtype=np.float64), np.array(trusted, dtype=bool), read)

    @property
    def human_positions(self) -> np.ndarray:
        return self.positions[self.trusted]

    @property
    def human_classes(self) -> np.ndarray:
        return self.classes[self.trusted]

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
    probs: np.ndarray | None = None  # calibrated out-of-fold probabilities [H, C]
    labels: np.ndarray | None = None  # [H] the human labels they predict
    positions: np.ndarray | None = None  # [H] pool positions of those items
    pool_logits: np.ndarray | None = None  # [N, C] every pool item's, from the fold model that did not see it


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
    return Calibration(calibrator, float(expected_calibration_error(probs, truth)),
                       float((logits.argmax(1) == truth).mean()), probs, truth, human_positions[held], pool_logits)


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


def choose_model(candidates: Sequence[tuple[str, RoundModel]], labels: LabelSnapshot, *, ways: int, folds: int,
                 seed: int) -> tuple[str, RoundModel, Calibration]:
    """The learner and head that predict held-out human labels best.

    Ties and rounds without held-out labels keep the first candidate (the given or plain-encoder one).
    """
    if not candidates:
        raise ValueError("choose_model needs at least one candidate")  # a programming error, not user input
    best: tuple[str, RoundModel, Calibration] | None = None
    for name, model in candidates:
        calibration = calibrate(model, labels, ways=ways, folds=folds, seed=seed)
        if best is None or (calibration.accuracy is not None and best[2].accuracy is not None
                            and calibration.accuracy > best[2].accuracy):
            best = (name, model, calibration)
    assert best is not None
    return best
