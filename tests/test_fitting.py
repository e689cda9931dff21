"""Cross-fitting over the whole pool: no prediction comes from a model that saw the item's label."""

from __future__ import annotations

import numpy as np
import torch

from metalabel.label.fitting import LabelSnapshot, calibrate
from metalabel.label.round_model import RoundModel, default_learner


class RecordingModel(RoundModel):
    """A prototype head that records which items each call learned from and predicted."""

    calls: list[tuple[np.ndarray, np.ndarray]]

    def logits(self, support, y, weights, ways, targets=None):
        self.calls.append((np.asarray(support), np.arange(len(self.x)) if targets is None else np.asarray(targets)))
        return super().logits(support, y, weights, ways, targets)


def snapshot(rng: np.random.Generator, items: int, ways: int) -> tuple[np.ndarray, LabelSnapshot, np.ndarray]:
    y = rng.integers(0, ways, items)
    x = (np.eye(ways)[y] * 3 + rng.normal(size=(items, ways))).astype(np.float32)
    humans = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(ways)])
    pseudo = rng.choice(np.setdiff1d(np.arange(items), humans), 30, replace=False)
    positions = np.concatenate([humans, pseudo])
    labels = LabelSnapshot(positions, y[positions], np.r_[np.ones(len(humans)), np.full(len(pseudo), 0.5)],
                           np.r_[np.ones(len(humans), bool), np.zeros(len(pseudo), bool)])
    return x, labels, y


def test_every_pool_item_is_predicted_once_by_a_model_that_never_saw_its_label():
    x, labels, y = snapshot(np.random.default_rng(0), 200, 3)
    model = RecordingModel(default_learner(), torch.from_numpy(x))
    model.calls = []
    calibration = calibrate(model, labels, ways=3, folds=4, seed=0)
    assert calibration.pool_logits is not None and len(model.calls) == 4
    predicted = np.concatenate([targets for _, targets in model.calls])
    assert np.array_equal(np.sort(predicted), np.arange(len(x)))  # each item once
    for support, targets in model.calls:
        assert not np.intersect1d(support, targets).size  # neither a human nor a pseudo-label of its own
    # the human labels' calibration rests on exactly those predictions
    assert calibration.positions is not None and calibration.probs is not None
    held = calibration.pool_logits[calibration.positions]
    assert np.allclose(calibration.calibrator.predict_proba(held), calibration.probs)
    assert (calibration.pool_logits.argmax(1) == y).mean() > 0.9


def test_held_out_accuracy_alone_predicts_only_the_held_out_human_labels():
    x, labels, _ = snapshot(np.random.default_rng(1), 120, 3)
    model = RecordingModel(default_learner(), torch.from_numpy(x))
    model.calls = []
    calibration = calibrate(model, labels, ways=3, folds=3, seed=0, pool=False)
    assert calibration.pool_logits is None and calibration.accuracy is not None
    predicted = np.concatenate([targets for _, targets in model.calls])
    assert np.array_equal(np.sort(predicted), np.sort(labels.human_positions))


def test_one_label_per_class_leaves_nothing_to_hold_out():
    x = np.random.default_rng(2).normal(size=(10, 2)).astype(np.float32)
    labels = LabelSnapshot(np.array([0, 1]), np.array([0, 1]), np.ones(2), np.ones(2, bool))
    calibration = calibrate(RoundModel(default_learner(), torch.from_numpy(x)), labels, ways=2, folds=3, seed=0)
    assert calibration.calibrator is None and calibration.pool_logits is None
