"""The episode sampler: episode structure, class splits, determinism across processes, batching, CIs."""

from __future__ import annotations

import hashlib
import inspect
import math
import pickle
import subprocess
import sys
import textwrap
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from metalabel.data.dataset import LabeledDataset
from metalabel.data.episodes import (
    Episode,
    EpisodeSampler,
    collate_episodes,
    fixed_episodes,
    mean_confidence_interval,
)
from metalabel.errors import BadInputError, EmptyClassError

CLASS_SIZES = [12, 9, 15, 10, 3, 11, 8, 14, 10, 9]  # class 4 is too small for most episodes


def make_indexed_items() -> tuple[torch.Tensor, np.ndarray]:
    """Items whose single feature is their own index, so an episode shows exactly which items it used.

    Labels are shuffled, class sizes differ, and a few items are unlabeled (-1).
    """
    labels = np.concatenate([np.full(size, c) for c, size in enumerate(CLASS_SIZES)] + [np.full(6, -1)])
    labels = np.random.default_rng(0).permutation(labels)
    items = torch.arange(len(labels), dtype=torch.float64).unsqueeze(1)
    return items, labels


def make_grey_images(classes: int = 8, per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(1).integers(0, 256, size=(classes * per_class, 28, 28), dtype=np.uint8)
    return images, np.repeat(np.arange(classes), per_class)


def item_ids(x: torch.Tensor) -> np.ndarray:
    """Item indices back from the features of ``make_indexed_items``."""
    return x[..., 0].numpy().astype(np.int64)


def episode_digest(episode) -> str:
    digest = hashlib.sha256()
    for field in fields(episode):
        value = getattr(episode, field.name)
        digest.update(field.name.encode())
        if value is not None:
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def assert_same_episode(a: Episode, b: Episode) -> None:
    for field in fields(Episode):
        left, right = getattr(a, field.name), getattr(b, field.name)
        assert (left is None) == (right is None), field.name
        if left is not None:
            assert left.dtype == right.dtype and torch.equal(left, right), field.name


# --- episode structure -------------------------------------------------------------------------------------


def test_episode_shapes_labels_and_image_conversion():
    images, labels = make_grey_images()
    episode = EpisodeSampler(images, labels, ways=5, shots=2, queries=3)[0]

    assert episode.support_x.shape == (10, 1, 28, 28) and episode.query_x.shape == (15, 1, 28, 28)
    assert episode.support_x.dtype == torch.float32
    assert 0.0 <= float(episode.support_x.min()) and float(episode.support_x.max()) <= 1.0
    assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert episode.query_y.tolist() == [c for c in range(5) for _ in range(3)]
    assert episode.support_y.dtype == episode.query_y.dtype == torch.int64
    assert episode.unlabeled_x is None and episode.unlabeled_y is None
    assert len(set(episode.classes.tolist())) == 5 and not episode.batched and episode.ways == 5


def test_items_match_their_classes_and_never_repeat():
    items, labels = make_indexed_items()
    sampler = EpisodeSampler(items, labels, ways=3, shots=2, queries=2, unlabeled=2, distractors=2)
    for index in range(200):
        episode = sampler[index]
        support, query, unlabeled = (item_ids(t) for t in (episode.support_x, episode.query_x, episode.unlabeled_x))
        classes = episode.classes.numpy()

        np.testing.assert_array_equal(labels[support], classes[episode.support_y.numpy()])
        np.testing.assert_array_equal(labels[query], classes[episode.query_y.numpy()])
        local = episode.unlabeled_y.numpy()
        np.testing.assert_array_equal(labels[unlabeled[local >= 0]], classes[local[local >= 0]])

        used = np.concatenate([support, query, unlabeled])
        assert len(np.unique(used)) == len(used), "an item appears twice in one episode"
        assert (labels[used] != -1).all()

        distractor_classes = labels[unlabeled[local == -1]]
        assert len(distractor_classes) == 2 * 2 and len(set(distractor_classes)) == 2
        assert not set(distractor_classes) & set(classes.tolist())
        assert (np.bincount(local[local >= 0], minlength=3) == 2).all()


def test_class_order_is_random_and_every_class_is_used():
    items, labels = make_indexed_items()
    sampler = EpisodeSampler(items, labels, ways=4, shots=1, queries=1)
    drawn = np.stack([sampler[i].classes.numpy() for i in range(300)])
    assert set(np.unique(drawn)) == set(sampler.classes.tolist())
    assert not all((np.diff(row) > 0).all() for row in drawn), "classes always come sorted"


def test_small_classes_are_left_out_by_default():
    items, labels = make_indexed_items()
    sampler = EpisodeSampler(items, labels, ways=5, shots=2, queries=2)
    assert 4 not in sampler.classes.tolist() and len(sampler.classes) == 9


# --- class splits ------------------------------------------------------------------------------------------


def test_samplers_on_disjoint_class_splits_stay_inside_their_split():
    items, labels = make_indexed_items()
    splits = {"train": [0, 2, 5, 7, 9], "test": [1, 3, 6, 8]}
    for split, allowed in splits.items():
        sampler = EpisodeSampler(items, labels, ways=3, shots=1, queries=2, unlabeled=1, distractors=1, classes=allowed)
        assert sampler.classes.tolist() == sorted(allowed)
        for index in range(200):
            episode = sampler[index]
            used = [item_ids(t) for t in (episode.support_x, episode.query_x, episode.unlabeled_x)]
            seen = labels[np.concatenate(used)]
            assert set(seen.tolist()) <= set(allowed), split


def test_named_class_that_is_too_small_is_an_error_naming_it():
    items, labels = make_indexed_items()
    with pytest.raises(EmptyClassError, match=r"class '4'.*has 3 items.*needs 5"):
        EpisodeSampler(items, labels, ways=2, shots=2, queries=3, classes=[0, 4, 2])
    with pytest.raises(EmptyClassError, match=r"class '42'.*has 0 items"):
        EpisodeSampler(items, labels, ways=2, shots=1, queries=1, classes=[0, 42])


def test_too_few_classes_for_the_ways_is_an_error():
    items, labels = make_indexed_items()
    with pytest.raises(BadInputError, match=r"only 2 classes.*needs 3"):
        EpisodeSampler(items, labels, ways=3, shots=1, queries=1, classes=[0, 1])
    with pytest.raises(BadInputError, match=r"only 9 classes.*needs 8 \+ 2 distractor"):
        EpisodeSampler(items, labels, ways=8, shots=2, queries=2, unlabeled=1, distractors=2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ways": 0}, "ways must be a whole number >= 1"),
        ({"shots": 0}, "shots must be"),
        ({"queries": 1.5}, "queries must be"),
        ({"distractors": 1}, "distractors=1 but unlabeled=0"),
        ({"length": 0}, "length must be"),
    ],
)
def test_bad_options_are_typed_errors(options, message):
    items, labels = make_indexed_items()
    with pytest.raises(BadInputError, match=message):
        EpisodeSampler(items, labels, **{"ways": 2, "shots": 1, "queries": 1, **options})


def test_bad_items_and_labels_are_typed_errors():
    items, labels = make_indexed_items()
    with pytest.raises(BadInputError, match="embed texts first"):
        EpisodeSampler(["a text"] * len(labels), labels, ways=2, shots=1, queries=1)
    with pytest.raises(BadInputError, match="one integer per item"):
        EpisodeSampler(items, labels[:-1], ways=2, shots=1, queries=1)
    with pytest.raises(BadInputError, match="must be integers"):
        EpisodeSampler(items, labels.astype(float), ways=2, shots=1, queries=1)


def test_index_outside_the_length_raises_index_error():
    items, labels = make_indexed_items()
    sampler = EpisodeSampler(items, labels, ways=2, shots=1, queries=1, length=5)
    with pytest.raises(IndexError):
        sampler[5]
    with pytest.raises(IndexError):
        sampler[-1]
    with pytest.raises(IndexError):
        sampler.batch(3, 3)
    assert len(EpisodeSampler(items, labels, ways=2, shots=1, queries=1)) == 2**31 - 1


# --- determinism -------------------------------------------------------------------------------------------


def test_episode_depends_only_on_seed_and_index():
    items, labels = make_indexed_items()
    options = dict(ways=3, shots=2, queries=2, unlabeled=1, distractors=1)
    sampler = EpisodeSampler(items, labels, seed=3, **options)
    in_order = [sampler[i] for i in range(6)]
    torch.manual_seed(123)  # global random state must not matter
    np.random.seed(123)
    backwards = [sampler[i] for i in reversed(range(6))][::-1]
    for a, b in zip(in_order, backwards):
        assert_same_episode(a, b)
    assert_same_episode(in_order[4], EpisodeSampler(items, labels, seed=3, **options)[4])

    assert episode_digest(sampler[0]) != episode_digest(sampler[1])
    other_seed = EpisodeSampler(items, labels, seed=4, **options)
    assert sum(episode_digest(sampler[i]) == episode_digest(other_seed[i]) for i in range(20)) < 3


def test_fresh_interpreter_draws_identical_episodes(tmp_path):
    images, labels = make_grey_images()
    np.savez(tmp_path / "data.npz", x=images, y=labels)
    options = dict(ways=4, shots=1, queries=2, unlabeled=1, distractors=2, seed=7)
    script = "\n".join(
        [
            "import hashlib, sys",
            "from dataclasses import fields",
            "import numpy as np",
            "from metalabel.data.episodes import EpisodeSampler",
            textwrap.dedent(inspect.getsource(episode_digest)),
            "data = np.load(sys.argv[1])",
            f"sampler = EpisodeSampler(data['x'], data['y'], **{options!r})",
            "print(*(episode_digest(sampler[i]) for i in (0, 5, 123456)), episode_digest(sampler.batch(2, 3)))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data.npz")], capture_output=True, text=True, check=True
    )
    sampler = EpisodeSampler(images, labels, **options)
    expected = [episode_digest(sampler[i]) for i in (0, 5, 123456)] + [episode_digest(sampler.batch(2, 3))]
    assert result.stdout.split() == expected


def test_dataloader_with_two_workers_gives_the_same_episodes():
    images, labels = make_grey_images()
    sampler = EpisodeSampler(images, labels, ways=3, shots=1, queries=2, unlabeled=1, length=8)
    loader = DataLoader(sampler, batch_size=4, num_workers=2, collate_fn=collate_episodes)
    batches = list(loader)
    assert len(batches) == 2
    for number, batch in enumerate(batches):
        assert_same_episode(batch, sampler.batch(4 * number, 4))


def test_pickle_round_trip_draws_identical_episodes():
    images, labels = make_grey_images()
    sampler = EpisodeSampler(images, labels, ways=3, shots=2, queries=1, unlabeled=1, distractors=1, seed=5)
    restored = pickle.loads(pickle.dumps(sampler))
    for index in (0, 1, 999):
        assert_same_episode(sampler[index], restored[index])
    assert_same_episode(sampler.batch(10, 3), restored.batch(10, 3))


def test_fixed_episodes_are_the_same_tasks_every_time():
    items, labels = make_indexed_items()
    options = dict(ways=5, shots=1, queries=2)
    first = fixed_episodes(items, labels, **options, seed=0)
    again = fixed_episodes(items, labels, **options, seed=0)
    other = fixed_episodes(items, labels, **options, seed=1)
    assert len(first) == 600

    digests = [episode_digest(episode) for episode in first.batches(100)]
    assert digests == [episode_digest(episode) for episode in again.batches(100)]
    other_digests = [episode_digest(other[i]) for i in range(600)]
    assert sum(a == b for a, b in zip((episode_digest(first[i]) for i in range(600)), other_digests)) < 30


# --- batching ----------------------------------------------------------------------------------------------


def test_batch_equals_stacking_single_episodes():
    images, labels = make_grey_images(per_class=8)
    sampler = EpisodeSampler(images, labels, ways=3, shots=2, queries=4, unlabeled=1, distractors=1)
    batch = sampler.batch(3, 5)
    assert batch.batched
    assert batch.support_x.shape == (5, 6, 1, 28, 28) and batch.support_y.shape == (5, 6)
    assert batch.query_x.shape == (5, 12, 1, 28, 28) and batch.query_y.shape == (5, 12)
    assert batch.unlabeled_x.shape == (5, 4, 1, 28, 28) and batch.unlabeled_y.shape == (5, 4)
    assert batch.classes.shape == (5, 3)
    assert_same_episode(batch, collate_episodes([sampler[i] for i in range(3, 8)]))


def test_batches_cover_the_episodes_in_order_and_resume_from_start():
    items, labels = make_indexed_items()
    sampler = EpisodeSampler(items, labels, ways=2, shots=1, queries=1, length=10)
    batches = list(sampler.batches(4))
    assert [len(batch.classes) for batch in batches] == [4, 4, 2]
    assert_same_episode(batches[2], sampler.batch(8, 2))
    resumed = list(sampler.batches(4, start=4))
    assert len(resumed) == 2
    for a, b in zip(batches[1:], resumed):
        assert_same_episode(a, b)


def test_collate_rejects_mixed_or_batched_episodes():
    items, labels = make_indexed_items()
    plain = EpisodeSampler(items, labels, ways=2, shots=1, queries=1)
    with_pool = EpisodeSampler(items, labels, ways=2, shots=1, queries=1, unlabeled=1)
    with pytest.raises(BadInputError, match="unlabeled_x"):
        collate_episodes([plain[0], with_pool[0]])
    with pytest.raises(BadInputError, match="already batched"):
        collate_episodes([plain.batch(0, 2)])
    with pytest.raises(BadInputError, match="no episodes"):
        collate_episodes([])


# --- from a LabeledDataset ---------------------------------------------------------------------------------


def make_dataset(modality: str, items) -> LabeledDataset:
    labels = np.repeat(np.arange(4), 3)
    return LabeledDataset(
        name="tiny", modality=modality, items=items, labels=labels,
        class_names=list("abcd"), uris=[f"tiny:{i}" for i in range(12)],
    )  # fmt: skip


def test_from_dataset_gives_float_images_channels_first():
    # Item i, channel c is a flat image of value 3 * i + c: the layout and the item are both readable back.
    values = 3 * np.arange(12)[:, None] + np.arange(3)
    colour = np.ascontiguousarray(np.broadcast_to(values[:, None, None, :], (12, 8, 6, 3)).astype(np.uint8))
    episode = EpisodeSampler.from_dataset(make_dataset("image", colour), ways=2, shots=1, queries=1)[0]
    assert episode.support_x.shape == (2, 3, 8, 6) and episode.support_x.dtype == torch.float32
    first = torch.round(episode.support_x[0] * 255)
    item = int(first[0, 0, 0]) // 3
    assert torch.equal(first, torch.tensor([3.0 * item, 3.0 * item + 1, 3.0 * item + 2])[:, None, None].expand(3, 8, 6))
    assert item // 3 == int(episode.classes[0])  # make_dataset labels three items per class

    grey = colour[..., 0]
    episode = EpisodeSampler.from_dataset(make_dataset("image", grey), ways=2, shots=1, queries=1)[0]
    assert episode.query_x.shape == (2, 1, 8, 6)


def test_from_text_dataset_asks_to_embed_first():
    with pytest.raises(BadInputError, match="embed the texts first"):
        EpisodeSampler.from_dataset(make_dataset("text", [f"text {i}" for i in range(12)]), ways=2, shots=1, queries=1)


# --- confidence intervals ----------------------------------------------------------------------------------


def test_confidence_interval_hand_computed():
    # mean 3, sample std sqrt(2.5), t(0.975, 4 dof) = 2.7764451052 -> half-width 2.7764451052 * sqrt(2.5) / sqrt(5)
    mean, half_width = mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half_width == pytest.approx(2.7764451052 * math.sqrt(0.5), rel=1e-9)


@pytest.mark.parametrize("count", [2, 3, 10, 30, 31, 600])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_confidence_interval_matches_scipy(count, confidence):
    stats = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(count).random(count)
    mean, half_width = mean_confidence_interval(torch.from_numpy(values), confidence=confidence)
    expected = stats.t.ppf((1 + confidence) / 2, count - 1) * stats.sem(values)
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert half_width == pytest.approx(expected, rel=1e-9)


def test_confidence_interval_edge_cases():
    mean, half_width = mean_confidence_interval([0.5])
    assert mean == 0.5 and math.isnan(half_width)
    assert mean_confidence_interval([0.7] * 4) == (pytest.approx(0.7), 0.0)
    with pytest.raises(BadInputError, match="non-empty 1-D"):
        mean_confidence_interval([])
    with pytest.raises(BadInputError, match="confidence"):
        mean_confidence_interval([1.0, 2.0], confidence=95)
