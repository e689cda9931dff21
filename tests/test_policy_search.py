"""Policy search: greedy mechanics on a scripted score, and real held-out feedback keeping what helps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalabel.errors import BadInputError
from metalabel.generate import (
    AugmentationPolicy,
    Operation,
    default_candidates,
    held_out_score,
    search_policy,
)
from metalabel.generate.evidence import assign_folds

ROTATE, NOISE, CROP, HFLIP = (Operation("rotate", 0.5, 0.5), Operation("noise", 0.5, 0.2),
                              Operation("crop", 0.5, 0.8), Operation("hflip", 0.5, 0.0))


def scripted(table: dict[frozenset[str], float], calls: list[str] | None = None):
    """A score that looks up the set of operation names (0.5 for sets not in the table)."""
    def score(policy: AugmentationPolicy) -> float:
        if calls is not None:
            calls.append(policy.version)
        return table.get(frozenset(op.name for op in policy.operations), 0.5)
    return score


def test_forward_adds_the_best_op_each_step_and_stops_when_nothing_gains():
    table = {
        frozenset(): 0.50,
        frozenset({"rotate"}): 0.53, frozenset({"noise"}): 0.52, frozenset({"crop"}): 0.49,
        frozenset({"rotate", "noise"}): 0.56, frozenset({"rotate", "crop"}): 0.55,
        frozenset({"rotate", "noise", "crop"}): 0.56,  # no gain: the third step adds nothing
    }
    calls: list[str] = []
    result = search_policy(scripted(table, calls), modality="image", candidates=[ROTATE, NOISE, CROP])
    assert [op.name for op in result.best.operations] == ["rotate", "noise"]
    assert result.best_score == pytest.approx(0.56) and result.baseline_score == pytest.approx(0.50)
    assert result.changes == ("added rotate m=0.5 (+3.0 pts held-out accuracy)",
                              "added noise m=0.2 (+3.0 pts held-out accuracy)")
    assert len(calls) == len(set(calls)) == len(result.trials)  # each policy scored once
    assert result.trials[0] == (AugmentationPolicy("image").to_dict(), 0.5)
    again = search_policy(scripted(table), modality="image", candidates=[ROTATE, NOISE, CROP])
    assert again == result


def test_max_operations_and_min_gain_limit_the_forward_pass():
    table = {frozenset({"rotate"}): 0.53, frozenset({"rotate", "noise"}): 0.56, frozenset({"noise"}): 0.51}
    one = search_policy(scripted(table), modality="image", candidates=[ROTATE, NOISE], max_operations=1)
    assert one.best.describe() == "rotate p=0.5 m=0.5"
    picky = search_policy(scripted(table), modality="image", candidates=[ROTATE, NOISE], min_gain=0.035)
    assert picky.best.describe() == "no augmentation" and picky.changes == ()
    none = search_policy(scripted(table), modality="image", candidates=[ROTATE, NOISE], max_operations=0)
    assert none.best.operations == () and len(none.trials) == 1


def test_backward_pass_drops_an_op_made_redundant_by_a_later_one():
    table = {
        frozenset({"rotate"}): 0.53, frozenset({"noise"}): 0.52,
        frozenset({"rotate", "noise"}): 0.55, frozenset({"rotate", "noise", "crop"}): 0.58,
        frozenset({"noise", "crop"}): 0.58,  # with crop in, rotate adds nothing
    }
    result = search_policy(scripted(table), modality="image", candidates=[ROTATE, NOISE, CROP])
    assert result.best.describe() == "noise p=0.5 m=0.2, crop p=0.5 m=0.8"
    assert result.changes[-1] == "dropped rotate m=0.5 (removing it left held-out accuracy unchanged)"


def test_backward_pass_drops_a_harmful_op_from_the_start_policy_and_says_so():
    start = AugmentationPolicy("image", (ROTATE, HFLIP))
    table = {frozenset({"rotate", "hflip"}): 0.60, frozenset({"rotate"}): 0.61, frozenset({"hflip"}): 0.52}
    result = search_policy(scripted(table), modality="image", candidates=[ROTATE, HFLIP], start=start)
    assert result.best.describe() == "rotate p=0.5 m=0.5"
    assert result.changes == ("dropped hflip from the starting policy (removing it raised held-out accuracy 1.0 pts)",)
    assert result.baseline_score == pytest.approx(0.5)


def test_searched_policies_keep_the_no_flip_classes():
    seen: list[frozenset[int]] = []

    def score(policy: AugmentationPolicy) -> float:
        seen.append(policy.no_flip_classes)
        return 0.5 + 0.1 * len(policy.operations)

    start = AugmentationPolicy("image", (), frozenset({1}))
    result = search_policy(score, modality="image", candidates=[HFLIP], start=start, no_flip_classes=frozenset({7}))
    assert set(seen) == {frozenset({1, 7})}
    assert result.best.no_flip_classes == {1, 7} and result.best.describe() == "hflip p=0.5 (no flips for classes 1, 7)"


def test_default_candidates_cover_every_operation_at_three_magnitudes_and_flips_once():
    image = default_candidates("image")
    assert sum(op.name == "rotate" for op in image) == 3 and sum(op.name == "hflip" for op in image) == 1
    assert {op.magnitude for op in image if op.name == "elastic"} == {0.2, 0.5, 0.8}
    assert {op.probability for op in image} == {0.5}
    assert len(default_candidates("embedding")) == 12


def test_search_refuses_bad_arguments():
    with pytest.raises(BadInputError, match="score returned nan"):
        search_policy(lambda policy: float("nan"), modality="embedding")
    with pytest.raises(BadInputError, match="not an embedding Operation"):
        search_policy(lambda policy: 0.5, modality="embedding", candidates=[ROTATE])
    with pytest.raises(BadInputError, match="start must be an embedding AugmentationPolicy"):
        search_policy(lambda policy: 0.5, modality="embedding", start=AugmentationPolicy("image"))
    with pytest.raises(BadInputError, match="min_gain"):
        search_policy(lambda policy: 0.5, modality="image", min_gain=-0.1)


# ---------------------------------------------------------------- real held-out feedback


def nuisance_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6 classes, 4 examples each; class means differ (by about half a unit) in 8 quiet dimensions,
    while 10 loud nuisance dimensions vary 17x more inside every class. Four examples cannot show a
    classifier, even a standardized one, that the loud dimensions carry nothing, so label-preserving
    spread helps it."""
    rng = np.random.default_rng(seed)
    means = np.zeros((6, 18))
    means[:, 10:] = rng.normal(size=(6, 8)) * 0.5
    spread = np.array([5.0] * 10 + [0.3] * 8)
    x = np.concatenate([means[cls] + rng.normal(size=(4, 18)) * spread for cls in range(6)])
    return x, np.repeat(np.arange(6), 4)


def compact_kanji() -> tuple[np.ndarray, np.ndarray]:
    """Real data: 4 labeled kanji of each of 6 characters in an 8-d PCA embedding of their pixels, so compact
    that full-strength noise reaches across the classes."""
    from sklearn.decomposition import PCA

    import metalabel as ml

    pool = ml.datasets.load("kanji", split="evaluation", max_classes=6, samples_per_class=30)
    features = PCA(8, random_state=0).fit_transform(np.asarray(pool.items).reshape(len(pool.labels), -1) / 255)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(pool.labels == c), 4, replace=False) for c in range(6)])
    return features[rows], pool.labels[rows]


def test_search_adds_an_op_that_raises_held_out_accuracy():
    x, y = nuisance_blobs()
    result = search_policy(lambda policy: held_out_score(x, y, policy, copies=4, seed=0), modality="embedding",
                           max_operations=2)
    assert result.best.operations
    assert result.best_score >= result.baseline_score + 0.05
    assert result.changes[0].startswith("added ")
    assert result.best_score == held_out_score(x, y, result.best, copies=4, seed=0)


def test_harmful_noise_is_never_kept_and_is_dropped_from_a_start_policy():
    x, y = compact_kanji()
    score = lambda policy: held_out_score(x, y, policy, copies=4, seed=0)  # noqa: E731
    harmful = Operation("gaussian_noise", 0.5, 1.0)
    assert score(AugmentationPolicy("embedding", (harmful,))) <= score(AugmentationPolicy("embedding")) - 0.05

    searched = search_policy(score, modality="embedding")
    assert harmful not in searched.best.operations and searched.best_score >= searched.baseline_score

    corrected = search_policy(score, modality="embedding", start=AugmentationPolicy("embedding", (harmful,)))
    assert harmful not in corrected.best.operations
    assert any(line.startswith("dropped gaussian_noise m=1 from the starting policy (removing it raised")
               for line in corrected.changes)


def test_held_out_score_is_seeded_and_an_empty_policy_is_the_plain_classifier():
    x, y = nuisance_blobs(1)
    noisy = AugmentationPolicy("embedding", (Operation("gaussian_noise", 1.0, 0.5),))
    first = held_out_score(x, y, noisy, copies=3, seed=4)
    assert held_out_score(x, y, noisy, copies=3, seed=4) == first
    assert {held_out_score(x, y, noisy, copies=3, seed=s) for s in range(5, 10)} != {first}
    plain = held_out_score(x, y, AugmentationPolicy("embedding"), copies=3, seed=4)
    assert held_out_score(x, y, noisy, copies=0, seed=4) == plain
    prototype = held_out_score(x, y, AugmentationPolicy("embedding"), copies=0, seed=4, classifier="prototype")
    assert 0 <= prototype <= 1 and 0 < plain <= 1


def test_copies_add_variety_not_weight():
    """Exact copies (noise at magnitude 0) must score as the plain classifier: the copies of an item
    share its weight, or extra rows alone would weaken the classifier's regularization and look like gain."""
    rng = np.random.default_rng(0)
    centres, sizes = ([0, 0], [1, 0], [6, 0]), [12, 3, 6]
    x = np.concatenate([rng.normal(centre, 0.1, size=(size, 2)) for centre, size in zip(centres, sizes)])
    y = np.repeat([0, 1, 2], sizes)
    plain = held_out_score(x, y, AugmentationPolicy("embedding"), copies=10, seed=0)
    copied = AugmentationPolicy("embedding", (Operation("gaussian_noise", 1.0, 0.0),))
    assert plain < 1.0  # regularization costs the small class here, so a weaker one would show
    assert held_out_score(x, y, copied, copies=10, seed=0) == plain


def test_folds_never_hold_out_a_classs_last_training_example():
    labels = np.array([0] * 7 + [1] * 2 + [2] + [3] * 3)
    fold_of, fold_count = assign_folds(labels, folds=5, seed=0)
    assert fold_count == 5
    assert fold_of[9] == -1  # the only example of class 2 always trains
    for fold in range(fold_count):
        held_out = fold_of == fold
        assert held_out.any()
        for cls in np.unique(labels):
            assert ((labels == cls) & ~held_out).any()
    assert (fold_of[labels != 2] >= 0).all()  # everything else is held out exactly once
    assert assign_folds(np.array([0, 0, 1, 1, 2]), folds=5, seed=0)[1] == 2
    # ten 2-example classes beside one of 5: the small classes spread over all 5 folds
    fold_of, _ = assign_folds(np.array([0] * 5 + [c for c in range(1, 11) for _ in range(2)]), folds=5, seed=0)
    assert np.bincount(fold_of).max() <= 8


def test_held_out_score_refuses_sets_it_cannot_split():
    policy = AugmentationPolicy("embedding")
    with pytest.raises(BadInputError, match="every class has a single example.*second example"):
        held_out_score(np.eye(3), [0, 1, 2], policy, copies=1, seed=0)
    with pytest.raises(BadInputError, match="at least 2 classes"):
        held_out_score(np.eye(3), [0, 0, 0], policy, copies=1, seed=0)
    with pytest.raises(BadInputError, match="unknown classifier 'svm'"):
        held_out_score(np.eye(4), [0, 0, 1, 1], policy, copies=1, seed=0, classifier="svm")
    with pytest.raises(BadInputError, match="needs featurize"):
        held_out_score(np.zeros((4, 1, 4, 4)), [0, 0, 1, 1], AugmentationPolicy("image"), copies=1, seed=0)


def test_image_policies_are_scored_through_featurize():
    rng = np.random.default_rng(0)
    images = np.zeros((12, 9, 9), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 4)
    for row, cls in enumerate(labels):  # a bright stroke whose side says the class
        images[row, :, [1, 4, 7][cls]] = 200 + rng.integers(0, 50)
    seen_shapes = []

    def featurize(batch: np.ndarray) -> torch.Tensor:
        seen_shapes.append(batch.shape[1:])
        return torch.from_numpy(batch.reshape(len(batch), -1).astype(np.float32) / 255)

    policy = AugmentationPolicy("image", (Operation("translate", 0.5, 0.3),))
    score = held_out_score(images, labels, policy, copies=2, seed=0, featurize=featurize)
    assert 0.5 < score <= 1.0
    assert set(seen_shapes) == {(9, 9)}  # uint8 images in, uint8 images to featurize
    assert len(seen_shapes) == 1 + 4  # once for the originals, once per fold for the new rows
