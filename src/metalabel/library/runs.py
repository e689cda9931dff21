"""What past projects' runs tell the next one: the query strategy that paid, and when certification came.

A finished project's rounds say which query strategy asked each round's questions
(``RunOptions.strategy``, kept in the round's config) and how much of the pool was certified
before and after those answers came back. What a strategy bought is the certified coverage
gained over the rounds it asked for, per answer; the library keeps that per project
(``StrategyRecord``) and suggests, for a new project of the same modality whose user chose no
strategy, the one that bought most across the projects that used it. It is a starting default,
shown as such: projects differ in difficulty, so a strategy tried on easier projects looks
better than it is, and a suggestion needs at least two strategies each tried on enough answers.

The library also keeps when each project's labels were first certified (``CertificationRecord``:
the confidence threshold its reference sample certified at the target precision, after how
many reference answers). Across past projects that is a prior to plan a budget by, shown as
such; it is never evidence: a new project's labels are accepted only on its own reference
answers (``metalabel.label.certify``), whatever past projects did.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from metalabel.store import Round

MIN_ANSWERS = 20
"""Answers a strategy must have been tried on (over the library's projects) to be compared at all."""


@dataclass(frozen=True)
class StrategyRecord:
    """One project's answers to one query strategy and the certified coverage they bought."""

    strategy: str
    rounds: int
    answers: int
    coverage_gain: float
    """Coverage after the next round minus coverage of the round that asked, summed over those rounds."""


def strategy_records(rounds: Sequence[Round]) -> tuple[StrategyRecord, ...]:
    """Per query strategy, the answers a project's finished rounds asked with it and the coverage gained after.

    A round's questions are answered after its model was fitted, so their worth shows in the
    next finished round's coverage; a project's last round has no next one and counts nothing.
    """
    finished = [r for r in rounds if r.status == "finished" and r.metrics and "coverage" in r.metrics
                and "strategy" in r.config]
    totals: dict[str, tuple[int, int, float]] = {}
    for asked, after in zip(finished, finished[1:], strict=False):
        assert asked.metrics is not None and after.metrics is not None
        questions = int(asked.metrics["questions"])
        if questions == 0:
            continue
        strategy = str(asked.config["strategy"])
        count, answers, gain = totals.get(strategy, (0, 0, 0.0))
        totals[strategy] = (count + 1, answers + questions,
                            gain + float(after.metrics["coverage"]) - float(asked.metrics["coverage"]))
    return tuple(StrategyRecord(s, r, a, g) for s, (r, a, g) in sorted(totals.items()))


@dataclass(frozen=True)
class StrategySuggestion:
    """The query strategy that bought the most certified coverage per answer on past projects of a modality."""

    strategy: str
    points_per_100_answers: float
    answers: int
    projects: tuple[str, ...]
    others: tuple[tuple[str, float, int], ...]
    """The other strategies compared: (name, coverage points per 100 answers, answers)."""

    def summary(self) -> str:
        others = ", ".join(f"{name} {points:+.1f} over {answers}" for name, points, answers in self.others)
        return (f"query strategy {self.strategy}, suggested by the library: {self.points_per_100_answers:+.1f} "
                f"certified coverage points per 100 answers over {self.answers} answers in "
                f"{len(self.projects)} past project(s) ({others})")


def suggest_strategy(records: Iterable[tuple[str, Sequence[StrategyRecord]]]) -> StrategySuggestion | None:
    """The best-paying strategy over ``(project name, its records)``; None unless two strategies each saw
    ``MIN_ANSWERS`` answers (one strategy alone is no comparison: the loop's default stays)."""
    pooled: dict[str, tuple[int, float, list[str]]] = {}
    for project, kept in records:
        for record in kept:
            answers, gain, projects = pooled.get(record.strategy, (0, 0.0, []))
            pooled[record.strategy] = (answers + record.answers, gain + record.coverage_gain, [*projects, project])
    compared = sorted(((100 * 100 * gain / answers, name, answers, tuple(projects))
                       for name, (answers, gain, projects) in pooled.items() if answers >= MIN_ANSWERS), reverse=True)
    if len(compared) < 2:
        return None
    (points, name, answers, used_by), *rest = compared
    return StrategySuggestion(name, points, answers, used_by, tuple((n, p, a) for p, n, a, _ in rest))


@dataclass(frozen=True)
class CertificationRecord:
    """A project's first certified round: its target, the threshold certified, and the evidence it took."""

    target_precision: float
    threshold: float
    certified_precision: float
    reference_answers: int
    coverage: float


def certification_record(rounds: Sequence[Round]) -> CertificationRecord | None:
    """The first finished round whose reference sample certified a threshold; None if none did."""
    for r in rounds:
        m = r.metrics
        if (r.status == "finished" and m and m.get("certified_precision") is not None
                and m.get("threshold") is not None and "target_precision" in r.config):
            return CertificationRecord(float(r.config["target_precision"]), float(m["threshold"]),
                                       float(m["certified_precision"]), int(m["reference_answers"]),
                                       float(m["coverage"]))
    return None


@dataclass(frozen=True)
class CertificationPrior:
    """How past projects at one target precision got certified: a starting expectation, not evidence."""

    target_precision: float
    thresholds: tuple[float, ...]
    reference_answers: tuple[int, ...]

    def summary(self) -> str:
        return (f"past projects certified {100 * self.target_precision:g}% precision at confidence thresholds "
                f"{min(self.thresholds):.2f}-{max(self.thresholds):.2f} after a median of "
                f"{statistics.median(self.reference_answers):g} reference answers ({len(self.thresholds)} "
                "project(s); a prior to plan by, not evidence: this project's labels are accepted only on its own "
                "reference answers)")


def certification_prior(records: Iterable[CertificationRecord | None], *,
                        target_precision: float) -> CertificationPrior | None:
    """The past projects certified at ``target_precision``; None if none was."""
    kept = [r for r in records if r is not None and r.target_precision == target_precision]
    if not kept:
        return None
    return CertificationPrior(target_precision, tuple(r.threshold for r in kept),
                              tuple(r.reference_answers for r in kept))
