"""The scorecard and a round's metrics as typed records: the loop writes them, the CLI, the report and the
benchmarks read them.

The store keeps them as JSON (``to_json``; the keys are the ones projects have always stored) and gives
them back through ``from_json``, which raises ``StoreError`` naming the record and the field when a field
is missing: a renamed or misspelled field is an error, never a silent default. Standard library only, so
the report can import these without loading the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from metalabel.errors import StoreError

Json = dict[str, Any]


def _object(data: object, what: str, keys: Iterable[str]) -> Mapping[str, Any]:
    """``data`` as a JSON object holding every one of ``keys``; StoreError naming ``what`` otherwise."""
    if not isinstance(data, Mapping):
        raise StoreError(f"{what} is a JSON {type(data).__name__}, not an object")
    missing = [key for key in keys if key not in data]
    if missing:
        present = ", ".join(map(repr, data)) or "nothing"
        raise StoreError(f"{what} lacks {', '.join(map(repr, missing))} (it has {present})")
    return data


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- scorecard sections


@dataclass(frozen=True)
class Interval:
    """An accuracy with its 95% Wilson interval over ``count`` checks (``metalabel.evaluate.accuracy_with_ci``)."""

    accuracy: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> Interval:
        return cls(float(result["accuracy"]), float(result["low"]), float(result["high"]), int(result["count"]))

    def to_json(self) -> Json:
        return {"accuracy": self.accuracy, "low": self.low, "high": self.high, "count": self.count}

    @classmethod
    def from_json(cls, data: object, what: str) -> Interval:
        return cls.of(_object(data, what, _names(cls)))


@dataclass(frozen=True)
class Reliability:
    """Accuracy against confidence per confidence bin; None where a bin is empty."""

    edges: tuple[float | None, ...]
    confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    count: tuple[float | None, ...]

    def to_json(self) -> Json:
        return {name: list(getattr(self, name)) for name in _names(Reliability)}

    @classmethod
    def from_json(cls, data: object, what: str) -> Reliability:
        data = _object(data, what, _names(cls))
        return cls(*(tuple(_optional_float(v) for v in data[name]) for name in _names(cls)))


@dataclass(frozen=True)
class LabelQuality:
    """Coverage, the certificate, the reference answers in the accepted region, gold, held-out accuracy, ECE.

    ``certified_precision`` is the lower bound at ``1 - delta`` (None: nothing certified),
    ``estimated_precision`` its point estimate.
    """

    coverage: float
    certified_precision: float | None
    delta: float | None
    estimated_precision: float | None
    reference_in_accepted: Interval | None
    gold: Interval | None
    held_out: Interval | None
    ece: float | None
    reliability: Reliability | None

    def to_json(self) -> Json:
        def optional(record: Interval | Reliability | None) -> Json | None:
            return None if record is None else record.to_json()

        return {"coverage": self.coverage, "certified_precision": self.certified_precision, "delta": self.delta,
                "estimated_precision": self.estimated_precision,
                "reference_in_accepted": optional(self.reference_in_accepted), "gold": optional(self.gold),
                "held_out": optional(self.held_out), "ece": self.ece, "reliability": optional(self.reliability)}

    @classmethod
    def from_json(cls, data: object, what: str) -> LabelQuality:
        data = _object(data, what, _names(cls))

        def interval(key: str) -> Interval | None:
            return None if data[key] is None else Interval.from_json(data[key], f"{what}, {key}")

        return cls(
            coverage=float(data["coverage"]), certified_precision=_optional_float(data["certified_precision"]),
            delta=_optional_float(data["delta"]), estimated_precision=_optional_float(data["estimated_precision"]),
            reference_in_accepted=interval("reference_in_accepted"), gold=interval("gold"),
            held_out=interval("held_out"), ece=_optional_float(data["ece"]),
            reliability=None if data["reliability"] is None
            else Reliability.from_json(data["reliability"], f"{what}, reliability"))


@dataclass(frozen=True)
class Confusion:
    """Counts of (true, predicted) class pairs; ``against`` says where the true labels come from."""

    against: str
    classes: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]
    """Rows: the true labels, columns: metalabel's."""
    per_class_accuracy: tuple[float | None, ...]

    def to_json(self) -> Json:
        return {"against": self.against, "classes": list(self.classes), "matrix": [list(row) for row in self.matrix],
                "per_class_accuracy": list(self.per_class_accuracy)}

    @classmethod
    def from_json(cls, data: object, what: str) -> Confusion:
        data = _object(data, what, _names(cls))
        return cls(str(data["against"]), tuple(map(str, data["classes"])),
                   tuple(tuple(int(n) for n in row) for row in data["matrix"]),
                   tuple(_optional_float(v) for v in data["per_class_accuracy"]))


@dataclass(frozen=True)
class SuspectLabel:
    """A trusted label confident learning finds probably wrong; ``self_confidence`` is the model's p(given)."""

    item_id: int
    uri: str
    source: str
    given: str
    suggested: str
    self_confidence: float

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(SuspectLabel)}

    @classmethod
    def from_json(cls, data: object, what: str) -> SuspectLabel:
        data = _object(data, what, _names(cls))
        return cls(int(data["item_id"]), str(data["uri"]), str(data["source"]), str(data["given"]),
                   str(data["suggested"]), float(data["self_confidence"]))


@dataclass(frozen=True)
class Similarity:
    """One generator's items against the real labeled items (``metalabel.evaluate.similarity_report``)."""

    mmd: float
    frechet: float
    precision: float
    recall: float
    real: int
    generated: int

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> Similarity:
        return cls(float(report["mmd"]), float(report["frechet"]), float(report["precision"]),
                   float(report["recall"]), int(report["real"]), int(report["generated"]))

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(Similarity)}

    @classmethod
    def from_json(cls, data: object, what: str) -> Similarity:
        return cls.of(_object(data, what, _names(cls)))


@dataclass(frozen=True)
class Downstream:
    """A plain classifier trained on the built set, with and without generated items, tested on held-out humans."""

    real_only: float
    with_generated: float
    gain: float
    tstr: float | None
    """Trained on the generated items only, tested on real ones; None when nothing was generated."""
    test_size: int
    generated: int
    test: str

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(Downstream)}

    @classmethod
    def from_json(cls, data: object, what: str) -> Downstream:
        data = _object(data, what, _names(cls))
        return cls(float(data["real_only"]), float(data["with_generated"]), float(data["gain"]),
                   _optional_float(data["tstr"]), int(data["test_size"]), int(data["generated"]), str(data["test"]))


@dataclass(frozen=True)
class GeneratorOutcome:
    """What one generator made in a round, whether it was kept, and the evidence that decided."""

    kept: bool
    count: int
    version: str
    evidence: str

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(GeneratorOutcome)}

    @classmethod
    def from_json(cls, data: object, what: str) -> GeneratorOutcome:
        data = _object(data, what, _names(cls))
        return cls(bool(data["kept"]), int(data["count"]), str(data["version"]), str(data["evidence"]))


@dataclass(frozen=True)
class GenerationRecord:
    """What the generators did in a round (``RoundReport.generation``): the judge that kept or dropped each
    one's rows, the augmentation policies the round ended with (as ``AugmentationPolicy.to_dict`` writes
    them; the next run's generators start from them), and each generator's outcome."""

    judge: str
    policy: Mapping[str, Any] | None
    generators: Mapping[str, GeneratorOutcome]
    image_policy: Mapping[str, Any] | None = None

    def to_json(self) -> Json:
        return {"judge": self.judge, "policy": None if self.policy is None else dict(self.policy),
                "image_policy": None if self.image_policy is None else dict(self.image_policy),
                "generators": {name: outcome.to_json() for name, outcome in self.generators.items()}}

    @classmethod
    def from_json(cls, data: object, what: str) -> GenerationRecord | None:
        """The record, or None for the empty object a round stores when no generator ran."""
        if isinstance(data, Mapping) and not data:
            return None
        # rounds recorded before image policies were kept lack image_policy: read as none
        data = _object(data, what, [name for name in _names(cls) if name != "image_policy"])
        return cls(judge=str(data["judge"]), policy=_optional_object(data["policy"], f"{what}, policy"),
                   image_policy=_optional_object(data.get("image_policy"), f"{what}, image_policy"),
                   generators={str(name): GeneratorOutcome.from_json(outcome, f"{what}, generator {name}")
                               for name, outcome in _object(data["generators"], f"{what}, generators", ()).items()})


def _optional_object(data: object, what: str) -> Mapping[str, Any] | None:
    return None if data is None else dict(_object(data, what, ()))


@dataclass(frozen=True)
class Scorecard:
    """The scorecard of a built data set (``metalabel.evaluate.scorecard``).

    ``confusion`` and ``downstream`` are None where there was nothing to measure them on;
    ``similarity`` and ``generators`` are keyed by generator name.
    """

    label_quality: LabelQuality
    confusion: Confusion | None
    label_issues: tuple[SuspectLabel, ...]
    similarity: Mapping[str, Similarity]
    downstream: Downstream | None
    generators: Mapping[str, GeneratorOutcome]
    feedback: tuple[str, ...]

    def to_json(self) -> Json:
        return {"label_quality": self.label_quality.to_json(),
                "confusion": None if self.confusion is None else self.confusion.to_json(),
                "label_issues": [issue.to_json() for issue in self.label_issues],
                "similarity": {name: s.to_json() for name, s in self.similarity.items()},
                "downstream": None if self.downstream is None else self.downstream.to_json(),
                "generators": {name: g.to_json() for name, g in self.generators.items()},
                "feedback": list(self.feedback)}

    @classmethod
    def from_json(cls, data: object, what: str = "the scorecard") -> Scorecard:
        data = _object(data, what, _names(cls))
        return cls(
            label_quality=LabelQuality.from_json(data["label_quality"], f"{what}, label_quality"),
            confusion=None if data["confusion"] is None else Confusion.from_json(data["confusion"],
                                                                                 f"{what}, confusion"),
            label_issues=tuple(SuspectLabel.from_json(issue, f"{what}, label issue {i}")
                               for i, issue in enumerate(data["label_issues"])),
            similarity={name: Similarity.from_json(s, f"{what}, similarity of {name}")
                        for name, s in data["similarity"].items()},
            downstream=None if data["downstream"] is None else Downstream.from_json(data["downstream"],
                                                                                    f"{what}, downstream"),
            generators={name: GeneratorOutcome.from_json(g, f"{what}, generator {name}")
                        for name, g in data["generators"].items()},
            feedback=tuple(map(str, data["feedback"])))


# ----------------------------------------------------------------------------- a round's metrics


@dataclass(frozen=True)
class GoldMetrics:
    """A round's labels against the true ones, where the user has them (simulations and benchmarks).

    ``pool_accuracy``: the round model's prediction on every pool item with a gold label;
    ``label_accuracy``: the labels as they stand (a person's or the model's label, else the
    prediction); ``achieved_precision``: the active model labels, the ones the export would write
    (None when none of them has a gold label).
    """

    pool_accuracy: float
    label_accuracy: float
    achieved_precision: float | None

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(GoldMetrics)}

    @classmethod
    def from_json(cls, data: object, what: str) -> GoldMetrics:
        data = _object(data, what, ("pool_accuracy", "label_accuracy"))
        # rounds recorded before this record left the key out when no active model label had a gold label
        achieved = data["achieved_precision"] if "achieved_precision" in data else None
        return cls(float(data["pool_accuracy"]), float(data["label_accuracy"]), _optional_float(achieved))


@dataclass(frozen=True)
class RoundCertificate:
    """What a round's certificate says, recorded with the labels it admits (so a round that fails later keeps it).

    ``certified_precision`` is the lower confidence bound (at ``1 - delta``) on the precision of
    every model label active after the round; None when nothing could be certified, and then
    ``reference_needed`` says how many more reference answers would (None: more answers alone will
    not, a better model will). ``estimated_precision`` is the point estimate; ``certificate`` the
    certificate's reason in one line.
    """

    certified_precision: float | None
    estimated_precision: float | None
    delta: float
    threshold: float | None
    coverage: float
    model_labels: int
    reference_answers: int
    reference_needed: int | None
    retracted: int
    certificate: str

    def to_json(self) -> Json:
        return {name: getattr(self, name) for name in _names(RoundCertificate)}

    @classmethod
    def from_json(cls, data: object, what: str) -> RoundCertificate:
        """The certificate's fields from a round's metrics (which hold more than these)."""
        data = _object(data, what, _names(cls))
        return cls(
            certified_precision=_optional_float(data["certified_precision"]),
            estimated_precision=_optional_float(data["estimated_precision"]), delta=float(data["delta"]),
            threshold=_optional_float(data["threshold"]), coverage=float(data["coverage"]),
            model_labels=int(data["model_labels"]), reference_answers=int(data["reference_answers"]),
            reference_needed=_optional_int(data["reference_needed"]), retracted=int(data["retracted"]),
            certificate=str(data["certificate"]))


@dataclass(frozen=True, kw_only=True)
class RoundReport(RoundCertificate):
    """What one round did, as stored in the round's metrics: its certificate and the rest of the round.

    ``gold`` is None where the user gave no gold labels; ``generation`` is what the generators
    did (None when none ran: stored as an empty object, as every release has);
    ``judged``, each candidate learner's best held-out score (``label.fitting.ModelChoice.scores``;
    empty in rounds recorded before it was kept), is what later rounds retire learners by;
    ``generators_earned``, whether the generators' rows earned a place in the round's model (None:
    nothing judged them, or they did not run), what later rounds rest the generators by.
    """

    round_id: int
    human_labels: int
    temperature: float
    calibration_ece: float | None
    questions: int
    reference_questions: int
    answered_total: int
    seconds: float
    model: str
    held_out_accuracy: float | None
    disagreements: int
    gold: GoldMetrics | None
    feedback: tuple[str, ...]
    scorecard: Scorecard
    generation: GenerationRecord | None
    judged: Mapping[str, float | None] = field(default_factory=dict)
    generators_earned: bool | None = None

    def to_json(self) -> Json:
        # the keys every release has stored: no gold labels is an empty object, as before
        return {**super().to_json(), **{name: getattr(self, name) for name in _names(RoundReport)
                                         if name not in _names(RoundCertificate)},
                "gold": {} if self.gold is None else self.gold.to_json(), "feedback": list(self.feedback),
                "scorecard": self.scorecard.to_json(),
                "generation": {} if self.generation is None else self.generation.to_json(),
                "judged": dict(self.judged), "generators_earned": self.generators_earned}

    @classmethod
    def from_json(cls, data: object, what: str) -> RoundReport:
        data = _object(data, what, [name for name in _names(cls) if name not in _FIELDS_ADDED_LATER])
        return cls(
            **RoundCertificate.from_json(data, what).to_json(),
            round_id=int(data["round_id"]), human_labels=int(data["human_labels"]),
            temperature=float(data["temperature"]), calibration_ece=_optional_float(data["calibration_ece"]),
            questions=int(data["questions"]), reference_questions=int(data["reference_questions"]),
            answered_total=int(data["answered_total"]), seconds=float(data["seconds"]), model=str(data["model"]),
            held_out_accuracy=_optional_float(data["held_out_accuracy"]), disagreements=int(data["disagreements"]),
            gold=GoldMetrics.from_json(data["gold"], f"{what}, gold") if data["gold"] else None,
            feedback=tuple(map(str, data["feedback"])),
            scorecard=Scorecard.from_json(data["scorecard"], f"{what}, scorecard"),
            generation=GenerationRecord.from_json(data["generation"], f"{what}, generation"),
            judged=judged_scores(data, what), generators_earned=generators_earned(data))


_FIELDS_ADDED_LATER = ("judged", "generators_earned")
"""RoundReport fields that rounds recorded by earlier releases lack: read as empty / None."""


def generators_earned(metrics: Mapping[str, Any]) -> bool | None:
    """A finished round's ``RoundReport.generators_earned`` (None for rounds recorded before it was kept)."""
    earned = metrics.get("generators_earned")
    return None if earned is None else bool(earned)


def recorded_generation(metrics: Mapping[str, Any], what: str = "a round's metrics") -> GenerationRecord | None:
    """A finished round's ``RoundReport.generation``: None where no generator ran (or before rounds kept it)."""
    return GenerationRecord.from_json(metrics.get("generation", {}), f"{what}, generation")


def judged_scores(metrics: Mapping[str, Any], what: str = "a round's metrics") -> dict[str, float | None]:
    """A finished round's ``RoundReport.judged`` (empty for rounds recorded before it was kept)."""
    judged = _object(metrics.get("judged", {}), f"{what}, judged", ())
    return {str(name): _optional_float(score) for name, score in judged.items()}


def recorded_before_certification(metrics: Mapping[str, Any]) -> bool:
    """Whether a round's metrics come from a metalabel that did not certify precision yet (before commit
    327b185): such a round recorded no ``certified_precision``, and its precision estimate was no guarantee."""
    return "certified_precision" not in metrics


@dataclass(frozen=True)
class EarlyRound:
    """What a round run before certified acceptance recorded that still means what it meant then.

    Its precision figures are left out (they were estimates without a guarantee), and so is its
    scorecard, whose label-quality section had another shape.
    """

    human_labels: int
    model_labels: int
    coverage: float
    held_out_accuracy: float | None
    model: str
    feedback: tuple[str, ...]
    gold: GoldMetrics | None
    downstream: Downstream | None

    @classmethod
    def from_json(cls, data: object, what: str) -> EarlyRound:
        data = _object(data, what, ("human_labels", "model_labels", "coverage", "gold"))
        # the first rounds recorded no held-out accuracy, model name, feedback or scorecard: those came later
        scorecard = _object(data["scorecard"], f"{what}, scorecard", ()) if "scorecard" in data else {}
        downstream = scorecard["downstream"] if "downstream" in scorecard else None
        return cls(
            human_labels=int(data["human_labels"]), model_labels=int(data["model_labels"]),
            coverage=float(data["coverage"]),
            held_out_accuracy=_optional_float(data["held_out_accuracy"]) if "held_out_accuracy" in data else None,
            model=str(data["model"]) if "model" in data else "",
            feedback=tuple(map(str, data["feedback"])) if "feedback" in data else (),
            gold=GoldMetrics.from_json(data["gold"], f"{what}, gold") if data["gold"] else None,
            downstream=None if downstream is None else Downstream.from_json(downstream, f"{what}, downstream"))
