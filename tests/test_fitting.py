"""Cross-fitting over the whole pool: no prediction comes from a model that saw the item's label."""

from __future__ import annotations

import numpy as np
import torch

from metalabel.label.fitting import (
    FAIR_LABELS_TO_JUDGE,
    LabelSnapshot,
    calibrate,
    choose_model,
    retired_learners,
)
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


class FixedModel(RoundModel):
    """A head whose logits are given: it is right exactly where ``right`` says."""

    def __init__(self, x, truth, right, ways):
        super().__init__(default_learner(), torch.from_numpy(x))
        self.table = np.eye(ways)[np.where(right, truth, (truth + 1) % ways)] * 5

    def logits(self, support, y, weights, ways, targets=None):
        return self.table if targets is None else self.table[targets]


def test_the_judge_trusts_fair_labels_over_answers_picked_for_being_hard():
    ways, items = 3, 90
    truth = np.arange(items) % ways
    x = np.zeros((items, 2), dtype=np.float32)
    chosen = np.arange(items) >= 30  # 30 seed or reference answers, then 60 answers to active questions
    labels = LabelSnapshot(np.arange(items), truth, np.ones(items), np.ones(items, bool), chosen)
    right_on_fair = FixedModel(x, truth, ~chosen, ways)  # right on the pool's fair sample
    right_on_chosen = FixedModel(x, truth, chosen, ways)  # right more often, but only where the last model was unsure
    choice = choose_model([("chosen", right_on_chosen), ("fair", right_on_fair)], labels, ways=ways, folds=3, seed=0)
    calibration = choice.calibration
    assert choice.name == "fair" and calibration.fair_count == 30 and calibration.fair_accuracy == 1.0
    assert calibration.accuracy is not None and calibration.accuracy < 0.5
    assert choice.scores == {"chosen": 0.0, "fair": 1.0}  # each learner's judging accuracy, kept for later rounds
    # with fewer fair labels than FAIR_LABELS_TO_JUDGE every held-out label judges
    few = LabelSnapshot(np.arange(items), truth, np.ones(items), np.ones(items, bool), np.arange(items) >= 10)
    choice = choose_model([("fair", FixedModel(x, truth, ~few.chosen, ways)),
                           ("chosen", FixedModel(x, truth, few.chosen, ways))], few, ways=ways, folds=3, seed=0)
    assert choice.name == "chosen" and FAIR_LABELS_TO_JUDGE > 10


def test_a_snapshot_marks_the_answers_to_questions_picked_for_being_hard():
    from metalabel.store import Label

    def label(item, source, strategy):
        return Label(id=item, item_id=item, uri=f"u{item}", class_name="a", source=source, raw_confidence=None,
                     calibrated_confidence=None, threshold=None, round_id=None, model_hash=None,
                     query_strategy=strategy, question_id=None, created_at="", superseded_by=None,
                     certified_precision=None, retracted_at=None, retracted_round=None, retraction_reason=None)

    read = [label(0, "imported", None), label(1, "human", "reference"), label(2, "human", "random"),
            label(3, "human", "margin"), label(4, "human", "label-issue"), label(5, "model", None)]
    snapshot = LabelSnapshot.of(read, position_of_item={i: i for i in range(6)}, class_index={"a": 0},
                                pseudo_weight=0.5)
    assert snapshot.chosen is not None and snapshot.chosen.tolist() == [False, False, False, True, True, False]
    assert snapshot.human_chosen.tolist() == [False, False, False, True, True]


def test_a_learner_that_lost_two_judged_rounds_in_a_row_is_retired_the_first_never():
    history = [{"plain": 0.70, "meta": 0.60, "pixels": 0.71},  # pixels best: plain, the first candidate, lost
               {"plain": 0.80, "meta": 0.75, "pixels": 0.795}]  # pixels 0.5 points behind: within noise
    retired = retired_learners(history, keep="plain")
    assert list(retired) == ["meta"] and "11.0 and 5.0 points" in retired["meta"]
    assert retired_learners(history[:1], keep="plain") == {}  # one round is not enough evidence
    # rounds with nothing held out to judge by are skipped, not counted as losses or wins
    assert retired_learners([history[0], {"plain": None, "meta": None}, history[1]], keep="plain") == retired
    assert retired_learners([{"plain": None, "meta": None}] * 3, keep="plain") == {}
    # a retired learner is no longer scored; a resumed run reads that from the rounds it recorded
    later = [*history, {"plain": 0.82, "pixels": 0.80}]
    assert retired_learners(later, keep="plain") == {"meta": "retired in an earlier round"}
    # a learner that wins in between is not retired
    assert retired_learners([history[0], {"plain": 0.7, "meta": 0.9}, history[1]], keep="plain") == {}
