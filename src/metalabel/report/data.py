"""What a report shows: plain frozen records that ``collect`` fills from a project store.

The HTML renderer reads only these records, so a report can be built (and tested)
without a store. Fractions are in 0..1; ``None`` means "not measured".
Records holding arrays or dicts compare by identity (``eq=False``): comparing
numpy images field by field has no single truth value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metalabel.errors import BadInputError
from metalabel.evaluate.records import Confusion, Downstream, Reliability, Similarity

SOURCES = ("human", "imported", "model", "generated", "augmented")
"""Where a label or item came from, as the store records it."""

MODALITIES = ("image", "text", "tabular")

SECTION_KEYS = (
    "scorecard", "rounds", "log", "reliability", "confusion",
    "samples", "retracted", "generated", "similarity", "downstream", "label_issues",
)
"""Keys of ``ReportData.why_missing``: one per section that can be empty."""


def _check_fraction(name: str, value: float | None, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) <= 1.0:
        raise BadInputError(
            f"{where}: {name} must be a fraction between 0 and 1, got {value!r}",
            hint="pass fractions (0.95), not percentages (95)",
        )


def _check_interval(name: str, interval: tuple[float, float] | None, where: str) -> None:
    if interval is None:
        return
    if len(interval) != 2:
        raise BadInputError(f"{where}: {name} must be a (low, high) pair, got {interval!r}")
    low, high = interval
    _check_fraction(f"{name} low", low, where)
    _check_fraction(f"{name} high", high, where)
    if low > high:
        raise BadInputError(f"{where}: {name} has low {low} above high {high}", hint="give (low, high)")


def _lines(name: str, value: Any, where: str) -> tuple[str, ...]:
    # a bare string would otherwise be split into one "line" per character
    if isinstance(value, str):
        raise BadInputError(f"{where}: {name} must be a sequence of lines, got one string",
                            hint=f"wrap it: {name}=({value!r},)")
    return tuple(str(line) for line in value)


def _check_image(image: np.ndarray | None, where: str, cls: str | None = None) -> None:
    if image is None:
        return
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ) or 0 in image.shape:
        described = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise BadInputError(
            f"{where}: image must be a non-empty uint8 array [H, W] or [H, W, 3], got {described}",
            cls=cls,
            hint="convert with numpy.clip(x * 255, 0, 255).astype(numpy.uint8) for 0..1 floats",
        )


def _check_count(name: str, value: object, where: str, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise BadInputError(f"{where}: {name} must be a whole number >= 0, got {value!r}")


@dataclass(frozen=True)
class RoundPoint:
    """One labeling round as it ended: how many labels of each kind, and what the evidence proves about them.

    ``certified_precision`` is the lower confidence bound on the precision of every model
    label active after the round, holding with probability ``1 - delta`` over the random
    reference sample; None when nothing was certified, and then ``reference_needed`` says
    how many more reference answers would (None: more answers alone will not, a better
    model will). ``estimated_precision`` is the point estimate of the same set, shown only
    beside a certificate. ``reference_in_accepted``: the share of the reference answers above
    the certified threshold the model got right (a random sample of the accepted region,
    checked by a person), with its interval and count. ``before_certification`` marks a
    round run by a metalabel that did not certify: its figures are not shown as precision.
    """

    round_id: int
    human_labels: int
    model_labels: int
    generated_items: int
    augmented_items: int
    coverage: float
    certified_precision: float | None = None
    delta: float | None = None
    estimated_precision: float | None = None
    threshold: float | None = None
    reference_answers: int = 0
    reference_needed: int | None = None
    retracted: int = 0
    """Model labels this round retracted (the certificate no longer covered them)."""
    reference_in_accepted: float | None = None
    reference_in_accepted_ci: tuple[float, float] | None = None
    reference_in_accepted_count: int = 0
    held_out_accuracy: float | None = None
    gold_label_accuracy: float | None = None
    achieved_precision: float | None = None
    """Precision of the model labels active after the round, against gold labels (simulations)."""
    downstream_real: float | None = None
    downstream_with_generated: float | None = None
    model: str = ""
    certificate: str = ""
    """The certificate's reason, one line."""
    feedback: tuple[str, ...] = ()
    """What this round changed and why, one line each."""
    before_certification: bool = False

    def __post_init__(self) -> None:
        where = f"round {self.round_id}"
        for name in ("human_labels", "model_labels", "generated_items", "augmented_items", "reference_answers",
                     "retracted", "reference_in_accepted_count"):
            _check_count(name, getattr(self, name), where)
        _check_count("reference_needed", self.reference_needed, where, optional=True)
        for name in ("coverage", "certified_precision", "delta", "estimated_precision", "threshold",
                     "reference_in_accepted", "held_out_accuracy", "gold_label_accuracy", "achieved_precision",
                     "downstream_real", "downstream_with_generated"):
            _check_fraction(name, getattr(self, name), where)
        _check_interval("reference_in_accepted_ci", self.reference_in_accepted_ci, where)
        if self.estimated_precision is not None and self.certified_precision is None:
            raise BadInputError(f"{where}: a point estimate of precision needs a certificate beside it",
                                hint="give certified_precision (the lower bound), or leave estimated_precision None")
        if self.delta is not None and not 0 < self.delta < 1:
            raise BadInputError(f"{where}: delta must lie in (0, 1), got {self.delta!r}")
        object.__setattr__(self, "feedback", _lines("feedback", self.feedback, where))


@dataclass(frozen=True, eq=False)
class RetractedLabel:
    """A model label a round retracted: the certificate of that round no longer covered it."""

    uri: str
    class_name: str
    retracted_round: int | None
    reason: str
    round_id: int | None = None
    """The round that admitted it."""
    confidence: float | None = None
    """Its calibrated confidence when admitted."""
    certified_precision: float | None = None
    """The bound of the certificate that admitted it."""
    retracted_at: str = ""
    image: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        where = f"retracted label {self.uri}"
        for name in ("confidence", "certified_precision"):
            _check_fraction(name, getattr(self, name), where)
        _check_image(self.image, where, self.class_name)


@dataclass(frozen=True, eq=False)
class Sample:
    """One item shown in the report, with where its label came from."""

    class_name: str
    uri: str
    source: str
    image: np.ndarray | None = None
    text: str | None = None
    confidence: float | None = None
    round_id: int | None = None
    generator: str | None = None
    """Name and version of the generator or augmentation that made the item."""
    parents: tuple[str, ...] = ()
    """URIs of the real items a generated item was made from."""

    def __post_init__(self) -> None:
        where = f"sample {self.uri}"
        if self.source not in SOURCES:
            raise BadInputError(f"{where}: unknown source {self.source!r}", cls=self.class_name,
                                hint=f"use one of {', '.join(SOURCES)}")
        _check_image(self.image, where, self.class_name)
        _check_fraction("confidence", self.confidence, where)
        object.__setattr__(self, "parents", _lines("parents", self.parents, where))


@dataclass(frozen=True, eq=False)
class LabelIssue:
    """A label that looks wrong: the given class, the class the evidence suggests."""

    uri: str
    given: str
    suggested: str
    self_confidence: float
    """The model's probability for the given label; low means likely wrong."""
    image: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        where = f"label issue {self.uri}"
        _check_fraction("self_confidence", self.self_confidence, where)
        _check_image(self.image, where, self.given)


@dataclass(frozen=True)
class ScorecardRow:
    """One line of the scorecard, already formatted for people."""

    section: str
    metric: str
    value: str
    detail: str = ""


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything one report shows. Empty tuples and ``None`` render as "not measured yet".

    ``counts`` keys the header understands: ``items`` (pool size), ``labeled``
    (items with a label), one per source in ``SOURCES``, ``open_questions``,
    ``disagreements`` and ``retracted`` (model labels retracted over the project);
    other keys are shown as they are.
    ``reliability``, ``ece``, ``confusion``, ``similarity`` (by generator) and
    ``downstream`` are the scorecard's records (``metalabel.evaluate.records``).
    ``why_missing``: section key (``SECTION_KEYS``) -> why it is empty, said better
    than the default. ``notes``: section key -> lines shown at the top of that section,
    e.g. a file the report could not read and therefore left out.
    """

    project: str
    pool: str
    modality: str
    classes: tuple[str, ...]
    created: str
    counts: dict[str, int] = field(default_factory=dict)
    rounds: tuple[RoundPoint, ...] = ()
    reliability: Reliability | None = None
    ece: float | None = None
    """Expected calibration error over the reliability bins."""
    confusion: Confusion | None = None
    samples: tuple[Sample, ...] = ()
    generated: tuple[Sample, ...] = ()
    similarity: Mapping[str, Similarity] = field(default_factory=dict)
    downstream: Downstream | None = None
    label_issues: tuple[LabelIssue, ...] = ()
    retracted: tuple[RetractedLabel, ...] = ()
    """Retracted model labels, the latest retraction first (``counts['retracted']`` may say more exist)."""
    scorecard: tuple[ScorecardRow, ...] = ()
    parent_images: dict[str, np.ndarray] = field(default_factory=dict)
    """uri -> image of the real items that generated items were made from."""
    parent_texts: dict[str, str] = field(default_factory=dict)
    """uri -> text of the real items that generated text was made from."""
    target_precision: float | None = None
    why_missing: dict[str, str] = field(default_factory=dict)
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ended_early: str | None = None
    """Where a round after the last finished one ended early (stopped while it asked, or killed before) or still
    runs, after it accepted: its certificate in one sentence. The model labels counted are that round's, so the
    verdict states this, not the last finished round's certificate."""

    def __post_init__(self) -> None:
        where = f"report for {self.project!r}"
        if self.modality not in MODALITIES:
            raise BadInputError(f"{where}: unknown modality {self.modality!r}",
                                hint=f"use one of {', '.join(MODALITIES)}")
        object.__setattr__(self, "classes", _lines("classes", self.classes, where))
        for name, kind in (("rounds", RoundPoint), ("samples", Sample), ("generated", Sample),
                           ("label_issues", LabelIssue), ("retracted", RetractedLabel),
                           ("scorecard", ScorecardRow)):
            entries = tuple(getattr(self, name))  # lists from collect become tuples, like the fields say
            for entry in entries:
                if not isinstance(entry, kind):
                    raise BadInputError(f"{where}: {name} holds a {type(entry).__name__}, not a {kind.__name__}",
                                        hint=f"build each entry with metalabel.report.{kind.__name__}(...)")
            object.__setattr__(self, name, entries)
        _check_fraction("target_precision", self.target_precision, where)
        for name, record in (("reliability", Reliability), ("confusion", Confusion), ("downstream", Downstream)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, record):
                raise BadInputError(f"{where}: {name} is a {type(value).__name__}, not a {record.__name__}",
                                    hint=f"build it with metalabel.evaluate.records.{record.__name__}(...)")
        for uri, image in self.parent_images.items():
            _check_image(image, f"{where}, parent image {uri}")
        for name in ("why_missing", "notes"):
            unknown = set(getattr(self, name)) - set(SECTION_KEYS)
            if unknown:
                raise BadInputError(f"{where}: {name} has unknown sections {sorted(unknown)}",
                                    hint=f"use {', '.join(SECTION_KEYS)}")
        object.__setattr__(self, "notes", {key: _lines(f"notes[{key!r}]", lines, where)
                                           for key, lines in self.notes.items()})
        self._check_reliability(where)
        self._check_confusion(where)

    def _check_reliability(self, where: str) -> None:
        if self.reliability is None:
            return
        curve = self.reliability
        lengths = {len(curve.confidence), len(curve.accuracy), len(curve.count)}
        if len(lengths) != 1:
            raise BadInputError(f"{where}: reliability lists have different lengths {sorted(lengths)}",
                                hint="give one confidence, accuracy and count per bin")
        for name, values in (("confidence", curve.confidence), ("accuracy", curve.accuracy)):
            for value in values:
                _check_fraction(f"reliability {name}", value, where)

    def _check_confusion(self, where: str) -> None:
        if self.confusion is None:
            return
        matrix = np.asarray(self.confusion.matrix)
        size = len(self.confusion.classes)
        if matrix.shape != (size, size) or (matrix.size and (not np.issubdtype(matrix.dtype, np.number)
                                                             or matrix.min() < 0)):
            raise BadInputError(
                f"{where}: confusion matrix must be {size} x {size} counts >= 0 "
                f"(one row and column per class), got shape {matrix.shape}",
                hint="rows are the reference labels, columns metalabel's labels",
            )
