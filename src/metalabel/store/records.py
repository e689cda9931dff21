"""The plain records the project store takes and returns (no database handles inside)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

CERTIFICATE_METRIC = "certificate"
"""A round's metrics hold its certificate's one-line reason under this key once it accepted labels; the loop
records it with the labels, so it survives whatever ends the round later."""

UNDONE_METRIC = "undone"
"""A failed round's metrics hold what ``ProjectStore.undo_round`` took back of it (``UndoneRound``) under this key."""


class LabelSource(StrEnum):
    """Where a label came from, and how far it is trusted (``trust``: higher wins)."""

    HUMAN = "human"
    """A person's answer to a question."""
    IMPORTED = "imported"
    """A seed label the user brought."""
    GENERATED = "generated"
    AUGMENTED = "augmented"
    MODEL = "model"
    """A pseudo-label the round model's certified acceptance rule admitted."""

    @property
    def trust(self) -> int:
        return _TRUST[self]

    @property
    def trusted(self) -> bool:
        """A person's word (an answer or a seed label): evidence a model is judged on, never overwritten by one."""
        return self in (LabelSource.HUMAN, LabelSource.IMPORTED)


_TRUST = {LabelSource.HUMAN: 3, LabelSource.IMPORTED: 2, LabelSource.GENERATED: 1, LabelSource.AUGMENTED: 1,
          LabelSource.MODEL: 0}


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """An item to add: where it came from, its content hash and its kind."""

    uri: str
    content_hash: str
    modality: str
    split: str = "pool"


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    uri: str
    content_hash: str
    split: str
    modality: str
    created_at: str


class Outcome(StrEnum):
    """What a label write did."""

    WRITTEN = "written"
    """The label is now the item's active label (an older one, if any, is superseded, not deleted)."""
    DISAGREEMENT = "disagreement"
    """A more trusted label (human, imported) says otherwise: recorded as a disagreement, not applied."""
    UNCHANGED = "unchanged"
    """A more trusted label already says the same; nothing was written."""


@dataclass(frozen=True, slots=True)
class LabelWrite:
    """The result of one label write."""

    outcome: Outcome
    label_id: int
    """The item's active label after the write: the new one if written, else the one kept."""
    superseded_label_id: int | None = None
    disagreement_id: int | None = None

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.WRITTEN


@dataclass(frozen=True, slots=True)
class UndoneRound:
    """What ``ProjectStore.undo_round`` took back of a round that failed before it asked anything."""

    labels: int
    """Model labels it wrote, deleted: each label one of them had replaced is back where it was."""
    retractions: int
    """Labels it retracted, active again."""
    disagreements: int
    """Disagreements its model labels recorded against a person's or a seed's, deleted."""
    synthetic_items: int
    artifacts: int
    """Its records of files of the kinds asked for (their files are then unrecorded, for the caller to remove)."""

    @property
    def anything(self) -> bool:
        return any((self.labels, self.retractions, self.disagreements, self.synthetic_items, self.artifacts))

    def to_json(self) -> dict[str, int]:
        return {"labels": self.labels, "retractions": self.retractions, "disagreements": self.disagreements,
                "synthetic_items": self.synthetic_items, "artifacts": self.artifacts}


@dataclass(frozen=True, slots=True)
class Label:
    """One label row with its full provenance."""

    id: int
    item_id: int
    uri: str
    class_name: str
    source: str
    raw_confidence: float | None
    calibrated_confidence: float | None
    threshold: float | None
    round_id: int | None
    model_hash: str | None
    query_strategy: str | None
    question_id: int | None
    created_at: str
    superseded_by: int | None
    certified_precision: float | None
    """The lower confidence bound on precision of the certificate that admitted a model label."""
    retracted_at: str | None
    retracted_round: int | None
    retraction_reason: str | None
    oracle: str | None = None
    """Who gave a human label's answer (``terminal:ann``, ``web:ann``, ``labelstudio:7``); None for other labels
    and for answers recorded before schema version 5 without a question."""

    @property
    def active(self) -> bool:
        return self.superseded_by is None and self.retracted_at is None


@dataclass(frozen=True, slots=True)
class Question:
    id: int
    item_id: int
    uri: str
    round_id: int | None
    strategy: str
    score: float | None
    asked_at: str
    answered_at: str | None
    answer: str | None
    """The class the oracle gave; None while open or when the question was dismissed."""
    oracle: str | None
    reference_region: int | None = None
    """A reference question drawn from a region of its round's candidates (``reference_region``); None: from all."""


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A label from a less trusted source that contradicts the item's trusted label."""

    id: int
    item_id: int
    uri: str
    kept_label_id: int
    kept_class: str
    kept_source: str
    proposed_class: str
    source: str
    raw_confidence: float | None
    calibrated_confidence: float | None
    threshold: float | None
    round_id: int | None
    model_hash: str | None
    query_strategy: str | None
    created_at: str
    resolved_by_label_id: int | None
    """The later human label that settled it: any, for what a model or seed said; for another person's answer,
    one of the same class (until then ``kept_label_id`` follows the item's human label)."""
    oracle: str | None = None
    """Who gave the answer that was not kept, where a person did (``web:bob``, ``labelstudio:bob@x``); None for
    a model's label and for disagreements recorded before schema version 6."""


@dataclass(frozen=True, slots=True)
class Round:
    id: int
    started_at: str
    finished_at: str | None
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None

    @property
    def undone(self) -> bool:
        """Whether ``ProjectStore.undo_round`` took back what this failed round wrote: the certificate it recorded
        then admits no active label, and the labels it had replaced are back under their own rounds' certificates."""
        return self.metrics is not None and UNDONE_METRIC in self.metrics

    @property
    def may_hold_active_labels(self) -> bool:
        """Whether the active model labels can be this round's: a finished round, or one that recorded its
        certificate with the labels it accepted and then ended early (or is still running); never one undone.
        The last such round is the one whose certificate status, exports, reports and the ML backend state."""
        return not self.undone and (self.status == "finished" or CERTIFICATE_METRIC in (self.metrics or {}))


@dataclass(frozen=True, slots=True)
class Artifact:
    id: int
    kind: str
    path: Path
    """Absolute: resolved against the project folder when stored relative to it."""
    sha256: str
    round_id: int | None
    created_at: str
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerTime:
    """When a person gave an answer, as the file an import recorded it from says (Label Studio's ``updated_at``)."""

    question_id: int
    person: str
    """The name the import gave the answerer (``People.canonical`` finds her one name)."""
    answered_at: str
    """ISO 8601, with its time zone."""


@dataclass(frozen=True, slots=True)
class SyntheticRecord:
    """A generated or augmented item to add; its content is row ``row_in_artifact`` of an artifact file."""

    uri: str
    content_hash: str
    kind: str  # "generated" (a generator made it) or "augmented" (a policy transformed a real item)
    class_name: str
    generator: str
    generator_version: str
    row_in_artifact: int
    parents: tuple[int, ...] = ()  # item ids of the pool items it was made from


@dataclass(frozen=True, slots=True)
class SyntheticItem:
    id: int
    uri: str
    content_hash: str
    kind: str
    class_name: str
    generator: str
    generator_version: str
    round_id: int | None
    artifact_id: int | None
    row_in_artifact: int
    parents: tuple[int, ...]
    kept: bool
    created_at: str


@dataclass(frozen=True)
class People:
    """Which names of answerers are one person (``ProjectStore.people``): a Label Studio user is
    ``labelstudio:<id>`` in webhooks and ``labelstudio:<email>`` in exports that carry a user object."""

    groups: Mapping[str, frozenset[str]]
    """Each name that has another, with every name of its person (itself included)."""

    def names(self, name: str) -> frozenset[str]:
        """Every name of the person who answered as ``name``."""
        return self.groups.get(name, frozenset((name,)))

    def same(self, name: str, other: str | None) -> bool:
        return other is not None and other in self.names(name)

    def canonical(self, name: str) -> str:
        """The one name new records give the person: an email-based one where known (a person reads it), the
        first in order otherwise, so every import names her the same way."""
        names = sorted(self.names(name))
        return next((candidate for candidate in names if "@" in candidate), names[0])
