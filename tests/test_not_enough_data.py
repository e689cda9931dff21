"""Too few labels yet (NotEnoughDataError: a step is skipped) is told apart from a wrong option (BadInputError)."""

from __future__ import annotations

import numpy as np
import pytest

from metalabel.errors import BadInputError, NotEnoughDataError
from metalabel.generate.evidence import assign_folds, episode_accuracy
from metalabel.generate.hallucinate import train_hallucinator
from metalabel.label.calibrate import cross_validated_logits
from metalabel.meta.train import meta_train


def constant_logits(train):
    return lambda test: np.zeros((len(test), 3))


def test_calibration_folds_of_one_is_a_configuration_error_not_too_few_labels() -> None:
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(BadInputError, match="folds must be a whole number >= 2, got 1") as raised:
        cross_validated_logits(constant_logits, labels, folds=1)
    assert not isinstance(raised.value, NotEnoughDataError)
    with pytest.raises(NotEnoughDataError, match="no class has two labels"):
        cross_validated_logits(constant_logits, np.arange(3), folds=5)  # one label per class: a genuinely small set
    assert cross_validated_logits(constant_logits, labels, folds=2).held_out.all()


def test_held_out_and_episode_scoring_say_not_enough_data_for_small_sets() -> None:
    with pytest.raises(NotEnoughDataError, match="at least 2 classes"):
        assign_folds(np.zeros(6, dtype=int), folds=3, seed=0)
    with pytest.raises(NotEnoughDataError, match="single example"):
        assign_folds(np.arange(4), folds=3, seed=0)
    x = np.random.default_rng(0).normal(size=(12, 4))
    with pytest.raises(NotEnoughDataError, match="episodes need 3 classes"):
        episode_accuracy(x, np.repeat(np.arange(3), 4), expand=None, ways=3, shots=2, queries=5)
    with pytest.raises(BadInputError, match="ways must be a whole number") as raised:
        episode_accuracy(x, np.repeat(np.arange(3), 4), expand=None, ways=0, shots=2, queries=5)
    assert not isinstance(raised.value, NotEnoughDataError)


def test_episode_learners_say_not_enough_data_when_too_few_classes_have_enough_examples() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), np.repeat(np.arange(4), 10)
    with pytest.raises(NotEnoughDataError, match="an episode needs 5 classes"):
        train_hallucinator(x, y, ways=5, shots=1, queries=5, steps=1, seed=0)
    with pytest.raises(BadInputError, match="lr must be a finite number") as raised:
        train_hallucinator(x, y, ways=2, shots=1, queries=5, steps=1, seed=0, lr=-1.0)
    assert not isinstance(raised.value, NotEnoughDataError)


def test_meta_train_on_too_few_classes_is_not_enough_data_and_a_wrong_option_is_not() -> None:
    from metalabel.data.dataset import LabeledDataset

    rng = np.random.default_rng(0)
    tasks = LabeledDataset("tasks", "tabular", rng.normal(size=(60, 6)).astype(np.float32), np.repeat(np.arange(6), 10),
                           [f"c{i}" for i in range(6)], [f"t/{i}" for i in range(60)])
    common = dict(algo="protonet", backbone="mlp", backbone_kwargs={"in_features": 6, "hidden": [8], "out_features": 4},
                  shots=1, queries=5, steps=1, val_every=1, val_episodes=2, seed=0, progress=False)
    with pytest.raises(NotEnoughDataError, match="classes"):
        meta_train(tasks, ways=5, val_fraction=0.25, **common)
    with pytest.raises(BadInputError) as raised:
        meta_train(tasks, ways=2, val_fraction=0.25, algo_typo=1, **common)
    assert not isinstance(raised.value, NotEnoughDataError)
