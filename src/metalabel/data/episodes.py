"""Few-shot episodes: N-way K-shot Q-query tasks over disjoint class splits."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import BadInputError, EmptyClassError, NotEnoughDataError, check_whole_number


@dataclass(frozen=True)
class Episode:
    """One task, or a batch of T tasks with a leading T axis on every tensor.

    Labels are episode-local: ``0..ways-1``. ``unlabeled_y`` holds the true
    episode-local label of each unlabeled item, or -1 for a distractor class; it is
    for evaluation only and never shown to a learner. ``classes`` maps episode-local
    labels back to the data set's class ids.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    unlabeled_x: Tensor | None = None
    unlabeled_y: Tensor | None = None
    classes: Tensor | None = None

    @property
    def batched(self) -> bool:
        return self.support_y.dim() == 2

    @property
    def ways(self) -> int:
        return int(self.support_y.max()) + 1

    def to(self, device) -> Episode:
        def move(t):
            return None if t is None else t.to(device)

        return Episode(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


UNBOUNDED_LENGTH = 2**31 - 1
"""Length of a sampler without a fixed ``length``: episodes are drawn by index, so training never runs out."""


class _EpisodeDraw(NamedTuple):
    """Which items make up one episode (or T episodes, with a leading T axis), before any tensor is gathered."""

    classes: np.ndarray  # [..., ways] original class ids, in episode-local label order
    support: np.ndarray  # [..., ways, shots] item indices, grouped by class
    query: np.ndarray  # [..., ways, queries]
    unlabeled: np.ndarray  # [..., (ways + distractors) * unlabeled], shuffled
    unlabeled_y: np.ndarray  # [..., (ways + distractors) * unlabeled], local label or -1 for a distractor


class EpisodeSampler(Dataset):
    """N-way K-shot Q-query episodes drawn from labeled items, as a map-style torch ``Dataset``.

    Episode ``index`` is a pure function of ``(seed, index)``: the same episode comes back in
    any process, in any order, through any ``DataLoader`` (use ``collate_fn=collate_episodes``
    and no shuffling, since every index is already a random task).

    ``x`` is a tensor or array ``[N, ...]`` of features or images. A uint8 array is treated as
    images: it is kept as uint8 (4x smaller, cheap to pickle into workers) and each episode gets
    float32 in [0, 1]; ``[N, H, W]`` gains a channel axis. ``y`` holds integer labels; items
    labeled -1 are never used. ``classes`` restricts the sampler to a split of class ids; by
    default every class with at least ``shots + queries + unlabeled`` items is used.

    ``unlabeled`` adds that many unlabeled items per episode class, disjoint from support and
    query; ``distractors`` adds that many further classes that appear only among the unlabeled
    items, ``unlabeled`` items each (Ren et al. 2018).
    """

    def __init__(
        self,
        x: Tensor | np.ndarray,
        y: Tensor | np.ndarray | Sequence[int],
        *,
        ways: int,
        shots: int,
        queries: int,
        classes: Sequence[int] | np.ndarray | Tensor | None = None,
        unlabeled: int = 0,
        distractors: int = 0,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        check_whole_number("ways", ways, minimum=1)
        check_whole_number("shots", shots, minimum=1)
        check_whole_number("queries", queries, minimum=0)
        check_whole_number("unlabeled", unlabeled, minimum=0)
        check_whole_number("distractors", distractors, minimum=0)
        check_whole_number("seed", seed, minimum=0)
        if length is not None:
            check_whole_number("length", length, minimum=1)
        if distractors and not unlabeled:
            raise BadInputError(
                f"distractors={distractors} but unlabeled=0: distractor classes only appear among unlabeled items",
                hint="set unlabeled > 0, or distractors=0",
            )
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.unlabeled, self.distractors = int(unlabeled), int(distractors)
        self.seed = int(seed)
        self.length = UNBOUNDED_LENGTH if length is None else int(length)

        self._items = _as_item_tensor(x)
        labels = _as_labels(y, expected=len(self._items))
        self.classes, self._members = self._eligible_classes(labels, classes)

    @classmethod
    def from_dataset(cls, dataset: LabeledDataset, **kwargs) -> EpisodeSampler:
        """A sampler over a ``LabeledDataset``'s labeled items; options as for ``EpisodeSampler``."""
        if dataset.modality == "text":
            raise BadInputError(
                f"data set {dataset.name!r} holds text, and episodes are built from tensors",
                hint="embed the texts first with a text encoder (metalabel.data.encoders) and pass the "
                "embeddings: EpisodeSampler(embeddings, dataset.labels, ...)",
            )
        items = np.asarray(dataset.items)  # an array: only text items come as a list
        if dataset.modality == "image" and items.ndim == 4:
            # LabeledDataset keeps images [N, H, W, C]; torch models expect [N, C, H, W].
            items = np.moveaxis(items, -1, 1)
        return cls(items, dataset.labels, **kwargs)

    def _eligible_classes(
        self, labels: np.ndarray, requested: Sequence[int] | np.ndarray | Tensor | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The class ids this sampler draws from and, aligned with them, each class's item indices."""
        labeled = np.flatnonzero(labels != UNLABELED)
        by_class = labeled[np.argsort(labels[labeled], kind="stable")]
        class_ids, starts = np.unique(labels[by_class], return_index=True)
        members = dict(zip(class_ids.tolist(), np.split(by_class, starts[1:])))

        needed = self.shots + self.queries + self.unlabeled
        if requested is None:
            chosen = [c for c, items in members.items() if len(items) >= needed]
        else:
            chosen = np.unique(np.asarray(requested, dtype=np.int64)).tolist()
            short = [c for c in chosen if len(members.get(c, ())) < needed]
            if short:
                others = f"; also short: {short[1:]}" if len(short) > 1 else ""
                raise EmptyClassError(
                    f"has {len(members.get(short[0], ()))} items but every episode class needs {needed} "
                    f"(shots {self.shots} + queries {self.queries} + unlabeled {self.unlabeled}){others}",
                    cls=str(short[0]),
                    hint="leave such classes out of `classes`, or lower shots/queries/unlabeled",
                )
        if len(chosen) < self.ways + self.distractors:
            distractor_note = f" + {self.distractors} distractor" if self.distractors else ""
            raise NotEnoughDataError(
                f"only {len(chosen)} classes have at least {needed} items (shots + queries + unlabeled), "
                f"but an episode needs {self.ways}{distractor_note} classes",
                hint="lower ways, shots, queries or unlabeled, or add classes",
            )
        return np.asarray(chosen, dtype=np.int64), [members[c] for c in chosen]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Episode:
        index = operator.index(index)
        self._check_range(index, 1)
        return self._assemble(self._draw(index))

    def batch(self, start: int, tasks: int) -> Episode:
        """Episodes ``start .. start + tasks - 1`` stacked with a leading T axis; equal to stacking them one by one."""
        start, tasks = operator.index(start), operator.index(tasks)
        self._check_range(start, tasks)
        draws = [self._draw(index) for index in range(start, start + tasks)]
        # Stack the index arrays and gather every item once, instead of stacking T gathered episodes.
        return self._assemble(_EpisodeDraw(*(np.stack(field) for field in zip(*draws))))

    def batches(self, tasks: int, *, start: int = 0) -> Iterator[Episode]:
        """Consecutive batches of ``tasks`` episodes from episode ``start`` on; the last one may be shorter.

        Training resumes where it stopped by passing the next unseen episode index as ``start``.
        """
        check_whole_number("tasks", tasks, minimum=1)
        for first in range(start, self.length, tasks):
            yield self.batch(first, min(tasks, self.length - first))

    def _check_range(self, start: int, tasks: int) -> None:
        if tasks < 1 or start < 0 or start + tasks > self.length:
            raise IndexError(f"episodes {start}..{start + tasks - 1} are outside 0..{self.length - 1}")

    def _draw(self, index: int) -> _EpisodeDraw:
        rng = np.random.default_rng([self.seed, index])
        picked = rng.choice(len(self.classes), size=self.ways + self.distractors, replace=False)
        episode_classes, distractor_classes = picked[: self.ways], picked[self.ways :]

        per_class = self.shots + self.queries + self.unlabeled
        items = np.stack([self._draw_members(rng, c, per_class) for c in episode_classes])
        support, query, unlabeled = np.split(items, [self.shots, self.shots + self.queries], axis=1)

        distractor_items = [self._draw_members(rng, c, self.unlabeled) for c in distractor_classes]
        unlabeled = np.concatenate([unlabeled.ravel(), *distractor_items])
        unlabeled_y = np.concatenate(
            [
                np.repeat(np.arange(self.ways, dtype=np.int64), self.unlabeled),
                np.full(self.distractors * self.unlabeled, -1, dtype=np.int64),
            ]
        )
        # Unlabeled items stand in for a pool, where position must not give away the class.
        order = rng.permutation(len(unlabeled))
        return _EpisodeDraw(self.classes[episode_classes], support, query, unlabeled[order], unlabeled_y[order])

    def _draw_members(self, rng: np.random.Generator, class_position: int, count: int) -> np.ndarray:
        members = self._members[class_position]
        # choice without replacement returns the picks in random order, so slicing them splits at random.
        return members[rng.choice(len(members), size=count, replace=False)]

    def _assemble(self, draw: _EpisodeDraw) -> Episode:
        leading = draw.classes.shape[:-1]  # () for one episode, (T,) for a batch

        def gather(indices: np.ndarray) -> Tensor:
            indices = indices.reshape(*leading, -1)
            items = self._items.index_select(0, torch.from_numpy(indices.ravel()))
            if items.dtype == torch.uint8:
                items = items.to(torch.float32).div_(255)
            return items.reshape(*indices.shape, *self._items.shape[1:])

        def local_labels(per_class: int) -> Tensor:
            labels = torch.arange(self.ways).repeat_interleave(per_class)
            return labels.expand(*leading, -1).clone()

        with_unlabeled = self.unlabeled > 0
        return Episode(
            support_x=gather(draw.support),
            support_y=local_labels(self.shots),
            query_x=gather(draw.query),
            query_y=local_labels(self.queries),
            unlabeled_x=gather(draw.unlabeled) if with_unlabeled else None,
            unlabeled_y=torch.from_numpy(draw.unlabeled_y) if with_unlabeled else None,
            classes=torch.from_numpy(draw.classes),
        )

    def __repr__(self) -> str:
        optional = {"unlabeled": self.unlabeled, "distractors": self.distractors}
        extras = "".join(f", {name}={value}" for name, value in optional.items() if value)
        length = "unbounded" if self.length == UNBOUNDED_LENGTH else self.length
        return (
            f"EpisodeSampler({self.ways}-way {self.shots}-shot {self.queries}-query{extras}, "
            f"{len(self.classes)} classes, {len(self._items)} items, seed={self.seed}, length={length})"
        )


def fixed_episodes(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray | Sequence[int],
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int = 600,
    seed: int = 0,
    **kwargs,
) -> EpisodeSampler:
    """The same ``episodes`` test tasks every time for a given seed (600 is the usual few-shot protocol)."""
    return EpisodeSampler(x, y, ways=ways, shots=shots, queries=queries, seed=seed, length=episodes, **kwargs)


def collate_episodes(episodes: Sequence[Episode]) -> Episode:
    """Stack single episodes into a batch with a leading T axis; works as a ``DataLoader`` ``collate_fn``."""
    if not episodes:
        raise BadInputError("collate_episodes got no episodes", hint="pass at least one Episode")
    if any(episode.batched for episode in episodes):
        raise BadInputError(
            "collate_episodes stacks single episodes, but got an already batched one",
            hint="concatenate batched episodes field by field with torch.cat",
        )

    def stack(name: str) -> Tensor:
        return torch.stack([getattr(episode, name) for episode in episodes])

    def stack_optional(name: str) -> Tensor | None:
        values = [getattr(episode, name) for episode in episodes]
        if all(value is None for value in values):
            return None
        if any(value is None for value in values):
            raise BadInputError(f"some episodes have {name} and others do not", hint="collate episodes of one sampler")
        return torch.stack(values)

    return Episode(
        stack("support_x"), stack("support_y"), stack("query_x"), stack("query_y"),
        unlabeled_x=stack_optional("unlabeled_x"), unlabeled_y=stack_optional("unlabeled_y"),
        classes=stack_optional("classes"),
    )


def mean_confidence_interval(
    values: Sequence[float] | np.ndarray | Tensor, *, confidence: float = 0.95
) -> tuple[float, float]:
    """``(mean, half-width)`` of the Student-t confidence interval of the mean, e.g. of per-episode accuracies.

    The t quantile is exact for every sample size; the usual ``1.96 * std / sqrt(n)`` is its
    large-sample limit (at 600 episodes t is 1.9640). A single value has no spread: half-width NaN.
    """
    if not 0 < confidence < 1:
        raise BadInputError(f"confidence must lie strictly between 0 and 1, got {confidence}", hint="e.g. 0.95")
    if isinstance(values, Tensor):
        values = values.detach().cpu()
    sample = np.asarray(values, dtype=np.float64)
    if sample.ndim != 1 or sample.size == 0:
        raise BadInputError(
            f"mean_confidence_interval needs a non-empty 1-D sequence of values, got shape {sample.shape}",
            hint="pass one value per episode",
        )
    mean = float(sample.mean())
    if sample.size == 1:
        return mean, math.nan
    standard_error = sample.std(ddof=1) / math.sqrt(sample.size)
    return mean, float(_student_t_critical_value(confidence, dof=sample.size - 1) * standard_error)


def _student_t_critical_value(confidence: float, *, dof: int) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` for Student's t with ``dof`` (integer) degrees of freedom.

    Inverts the closed-form coverage for integer dof (Abramowitz & Stegun 26.7.3-4) by bisection on
    ``theta = atan(t / sqrt(dof))``, which lies in [0, pi/2); this keeps SciPy out of the dependencies.
    """
    odd = dof % 2 == 1
    # Odd dof:  A = 2/pi * (theta + sin(theta) * sum_j c_j cos(theta)^(2j+1)),  c_j = c_{j-1} * 2j / (2j+1)
    # Even dof: A = sin(theta) * sum_j c_j cos(theta)^(2j),                       c_j = c_{j-1} * (2j-1) / (2j)
    j = np.arange(dof // 2)  # (dof - 1) / 2 terms when odd, dof / 2 when even
    ratios = (2 * j[1:]) / (2 * j[1:] + 1) if odd else (2 * j[1:] - 1) / (2 * j[1:])
    coefficients = np.cumprod(np.concatenate([[1.0], ratios]))[: len(j)]
    exponents = 2 * j + 1 if odd else 2 * j

    def coverage(theta: float) -> float:
        series = float(coefficients @ np.power(math.cos(theta), exponents))
        if odd:
            return 2 / math.pi * (theta + math.sin(theta) * series)
        return math.sin(theta) * series

    low, high = 0.0, math.pi / 2
    for _ in range(64):  # enough halvings to reach double precision
        middle = (low + high) / 2
        low, high = (middle, high) if coverage(middle) < confidence else (low, middle)
    return math.sqrt(dof) * math.tan((low + high) / 2)



def _as_item_tensor(x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, Tensor):
        items = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise BadInputError(
                f"items must be numeric, got an array of dtype {x.dtype}",
                hint="embed texts or decode images into a numeric array first",
            )
        items = torch.from_numpy(np.require(x, requirements=["C", "W"]))
    else:
        raise BadInputError(
            f"items must be a torch Tensor or numpy array [N, ...], got {type(x).__name__}",
            hint="embed texts first; stack images into one array",
        )
    if items.dim() == 0:
        raise BadInputError("items must have a leading item axis [N, ...], got a scalar")
    if items.dtype == torch.uint8 and items.dim() == 3:
        items = items.unsqueeze(1)  # grey images [N, H, W] -> [N, 1, H, W]
    return items


def _as_labels(y: Tensor | np.ndarray | Sequence[int], *, expected: int) -> np.ndarray:
    labels = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if labels.ndim != 1 or len(labels) != expected:
        raise BadInputError(f"labels must be one integer per item: {expected} items but labels of shape {labels.shape}")
    if labels.size and labels.dtype.kind not in "iu":
        raise BadInputError(f"labels must be integers, got dtype {labels.dtype}", hint="map class names to ids first")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < UNLABELED:
        raise BadInputError(
            f"label {labels.min()} is below {UNLABELED}", hint=f"use ids 0..C-1, and {UNLABELED} for unlabeled items"
        )
    return labels
