"""The one in-memory shape every data source returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from metalabel.data.mapped import MappedTexts
from metalabel.errors import BadInputError

Modality = Literal["image", "text", "tabular"]

_MODALITIES = get_args(Modality)

UNLABELED = -1
"""Label value of an item that has no label yet (an unlabeled pool item)."""


@dataclass
class LabeledDataset:
    """Items with integer labels, class names and, where it exists, a group per class.

    ``items`` is a uint8 array ``[N, H, W]`` (grey) or ``[N, H, W, C]`` for images,
    a list of ``str`` for text, and a float32 array ``[N, D]`` for tabular rows. A pool read
    with ``mapped=True`` (a project's, reloaded for its run) keeps them in a file instead
    (``metalabel.data.mapped``): the arrays are ``np.memmap`` views of it, the texts a
    :class:`MappedTexts` sequence reading each text from it when indexed. Read items by
    index, slice or iteration; an array's fancy index and a text slice give copies in memory.
    ``labels[i]`` indexes ``class_names``; ``UNLABELED`` (-1) marks pool items.
    ``uris`` says where each item came from (a file, or ``source:split/index``).
    ``skipped`` lists ``(where, why)`` for items left out when the caller asked to skip bad ones.
    """

    name: str
    modality: Modality
    items: np.ndarray | list[str] | MappedTexts
    labels: np.ndarray
    class_names: list[str]
    uris: list[str]
    groups: list[str] | None = None
    feature_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reload_spec: dict | None = None
    """How to load this data set again (``metalabel.datasets.reload``); set by the registry's loaders."""

    def __post_init__(self) -> None:
        if self.modality not in _MODALITIES:
            raise BadInputError(
                f"{self.name}: modality must be one of {', '.join(_MODALITIES)}, not {self.modality!r}",
                hint="images are 'image', strings 'text', float rows 'tabular'",
            )
        try:
            labels = np.asarray(self.labels)
        except ValueError:  # ragged nested lists
            labels = np.asarray(self.labels, dtype=object)
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            # floats or strings: usually class names or scores where class indices belong
            raise BadInputError(
                f"{self.name}: labels must be whole numbers (class indices) in one dimension, "
                f"got {labels.dtype} values of shape {labels.shape}",
                hint=f"give labels[i] as an index into class_names, or {UNLABELED} for no label",
            )
        self.labels = labels.astype(np.int64)
        n = len(self.items)
        if len(self.labels) != n or len(self.uris) != n:
            raise BadInputError(
                f"{self.name}: {n} items but {len(self.labels)} labels and {len(self.uris)} uris",
                hint="give one label and one uri per item",
            )
        if len(set(self.class_names)) != len(self.class_names):
            twice = sorted({name for name in self.class_names if list(self.class_names).count(name) > 1})
            raise BadInputError(f"{self.name}: class_names lists {', '.join(map(repr, twice))} more than once",
                                hint="give each class once")
        if self.groups is not None and len(self.groups) != len(self.class_names):
            raise BadInputError(
                f"{self.name}: one group per class is needed; "
                f"{len(self.class_names)} classes but {len(self.groups)} groups",
                hint="give groups[i] for class_names[i], or groups=None",
            )
        outside = np.flatnonzero((self.labels < UNLABELED) | (self.labels >= len(self.class_names)))
        if outside.size:
            first = int(outside[0])
            raise BadInputError(
                f"{self.name}: item {first} ({self.uris[first]!r}) has label {self.labels[first]}, "
                f"outside {UNLABELED}..{len(self.class_names) - 1}",
                hint=f"labels index class_names; {UNLABELED} means unlabeled",
            )
        if self.modality == "tabular":
            self._check_finite()

    def _check_finite(self) -> None:
        # NaN or inf rows would only fail later, deep inside training, naming no item
        try:
            finite = np.isfinite(np.asarray(self.items, dtype=np.float32 if isinstance(self.items, list) else None))
        except (TypeError, ValueError):
            finite = None
        if finite is None or finite.ndim != 2:
            raise BadInputError(f"{self.name}: tabular items must be a numeric array [N, D]",
                                hint="give one row of float features per item, e.g. a float32 array")
        if finite.all():
            return
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        feature = self.feature_names[column] if self.feature_names else f"#{column}"
        raise BadInputError(
            f"{self.name}: item {row} ({self.uris[row]!r}) has feature {feature!r} = {self.items[row][column]}",
            hint="features must be finite numbers; fill in or drop the value before making the data set",
        )

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"LabeledDataset({self.name!r}, {self.modality}, {len(self)} items, "
            f"{self.num_classes} classes, {int((self.labels == UNLABELED).sum())} unlabeled)"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labeled_mask(self) -> np.ndarray:
        return self.labels != UNLABELED

    def class_indices(self) -> list[np.ndarray]:
        """Item indices of each class, in class order."""
        order = np.argsort(self.labels, kind="stable")
        sorted_labels = self.labels[order]
        starts = np.searchsorted(sorted_labels, np.arange(self.num_classes), side="left")
        ends = np.searchsorted(sorted_labels, np.arange(self.num_classes), side="right")
        return [order[s:e] for s, e in zip(starts, ends)]

    def class_counts(self) -> dict[str, int]:
        counts = Counter(int(label) for label in self.labels if label != UNLABELED)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def subset(self, indices: Sequence[int] | np.ndarray, *, name: str | None = None) -> LabeledDataset:
        """The same data set restricted to ``indices`` (classes are kept as they are)."""
        idx = np.asarray(indices, dtype=np.int64)
        items = self.items[idx] if isinstance(self.items, np.ndarray) else [self.items[i] for i in idx]
        return LabeledDataset(
            name=name or self.name,
            modality=self.modality,
            items=items,
            labels=self.labels[idx],
            class_names=list(self.class_names),
            uris=[self.uris[i] for i in idx],
            groups=None if self.groups is None else list(self.groups),
            feature_names=self.feature_names,
        )

    def summary(self) -> dict:
        """Counts a person wants to see first: items, classes, groups, per-class spread."""
        counts = np.array(list(self.class_counts().values()) or [0])
        out = {
            "name": self.name,
            "modality": self.modality,
            "items": len(self),
            "labeled": int(self.labeled_mask.sum()),
            "unlabeled": int((~self.labeled_mask).sum()),
            "classes": self.num_classes,
            "per_class_min": int(counts.min()),
            "per_class_max": int(counts.max()),
            "skipped": len(self.skipped),
        }
        if self.groups is not None:
            out["groups"] = len(set(self.groups))
        if isinstance(self.items, np.ndarray):
            out["item_shape"] = list(self.items.shape[1:])
        return out
