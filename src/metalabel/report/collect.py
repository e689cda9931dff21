"""Gather a project's report from its store: rounds, the last scorecard, samples with provenance, generated items.

Only reads: the store, the pool (for pictures and texts; a pool that cannot be reloaded
leaves them out, nothing else) and the round artifacts holding generated content.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
import zlib
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from metalabel.errors import BadInputError, StoreError
from metalabel.evaluate.records import (
    EarlyRound,
    RoundCertificate,
    RoundReport,
    Scorecard,
    recorded_before_certification,
)
from metalabel.evaluate.scorecard import certificate_summary, scorecard_rows
from metalabel.report.data import LabelIssue, ReportData, RetractedLabel, RoundPoint, Sample, ScorecardRow
from metalabel.report.html import RETRACTED_SHOWN, write_report
from metalabel.store import Round

SAMPLES_PER_CLASS = 6
GENERATED_SHOWN = 24


def write_project_report(project, out: str | Path | None = None) -> Path:
    """Write ``project``'s HTML report (default ``PROJECT/report.html``) and record it as an artifact."""
    path = Path(out) if out is not None else project.folder / "report.html"
    written = write_report(collect(project), path)
    project.store.add_artifact("report", written)
    return written


def collect(project) -> ReportData:
    """Everything the report shows, from ``project`` (a ``metalabel.Project``), as of one moment of its store."""
    with project.store.reading():  # a run or a serve session may commit between two reads
        return _collect(project)


def _collect(project) -> ReportData:
    store = project.store
    meta = store.meta()
    summary = store.summary()
    pool, pool_problem = _pool_or_problem(project)
    content = _Content(pool)
    finished = [r for r in store.rounds() if r.status == "finished" and r.metrics]
    ended_early = _ended_early(store, finished)
    synthetic = store.synthetic_items()
    synthetic_by_round: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in synthetic:
        if item.kept:
            synthetic_by_round[item.round_id][item.kind] += 1
    rounds = tuple(_round_point(r.id, r.metrics, synthetic_by_round[r.id]) for r in finished)
    notes: dict[str, list[str]] = defaultdict(list)
    card = _latest_scorecard(project, finished, notes)
    quality = None if card is None else card.label_quality
    issues = tuple(LabelIssue(uri=issue.uri, given=issue.given, suggested=issue.suggested,
                              self_confidence=issue.self_confidence, **content.of(issue.uri))
                   for issue in (card.label_issues if card is not None else ()))
    counts = {"items": summary["items"], "labeled": summary["labeled_items"], **summary["labels_by_source"],
              "open_questions": summary["open_questions"], "disagreements": summary["open_disagreements"]}
    counts["generated"] = sum(1 for item in synthetic if item.kept and item.kind == "generated")
    counts["augmented"] = sum(1 for item in synthetic if item.kept and item.kind == "augmented")
    retracted_labels = store.retracted_labels()
    counts["retracted"] = len(retracted_labels)
    early = [r.id for r in finished if recorded_before_certification(r.metrics)]
    if early:
        notes["rounds"].append(f"{_plural(len(early), 'round')} ({', '.join(map(str, early))}) ran before "
                               "certified acceptance: their precision figures were estimates without a guarantee "
                               "and are not shown")
    generated, parent_images = _generated_samples(project, synthetic, content, notes)
    why_missing = {}
    if card is not None and not card.label_issues:
        why_missing["label_issues"] = "none found: confident learning flags no human or seed label"
    if pool_problem is not None:  # a note, not why the section is empty: the samples' labels are still shown
        notes["samples"].append(f"the pool could not be reloaded ({pool_problem}), so its items cannot be shown")
    if not finished:
        why_missing["rounds"] = "no round has finished yet: run `metalabel run`"
    return ReportData(
        project=project.name, pool=meta.get("pool", ""), modality=meta.get("modality", "image"),
        classes=tuple(store.classes()), created=datetime.now(UTC).isoformat(timespec="seconds"),
        counts=counts, rounds=rounds, reliability=None if quality is None else quality.reliability,
        ece=None if quality is None else quality.ece, confusion=None if card is None else card.confusion,
        samples=_samples(store, content), generated=generated, similarity={} if card is None else card.similarity,
        downstream=None if card is None else card.downstream, label_issues=issues,
        retracted=_retracted(retracted_labels, content),
        scorecard=() if card is None else tuple(ScorecardRow(*row) for row in scorecard_rows(card)),
        parent_images=parent_images,
        target_precision=(ended_early.config.get("target_precision") if ended_early is not None
                          else finished[-1].config.get("target_precision") if finished else None),
        why_missing=why_missing, notes={key: tuple(lines) for key, lines in notes.items()},
        ended_early=None if ended_early is None else _ended_early_sentence(ended_early),
    )


def _ended_early(store, finished) -> Round | None:
    """The round whose labels are active where it is no finished one: a later round that recorded its certificate
    with the labels it accepted and then ended early (failed, and not undone), or is still running."""
    after = finished[-1].id if finished else 0
    early = [r for r in store.rounds() if r.id > after and r.status != "finished" and r.may_hold_active_labels]
    return early[-1] if early else None


def _ended_early_sentence(early: Round) -> str:
    what = f"round {early.id}'s metrics"
    ended = "is still running" if early.status == "running" else "ended early"
    try:
        certificate = RoundCertificate.from_json(early.metrics, what)
    except StoreError as error:  # a damaged record: say so rather than fail the report
        return (f"Round {early.id} {ended} after it accepted the model labels; its certificate cannot be read "
                f"({error}).")
    return (f"Round {early.id} {ended} after it accepted the model labels, which are its: "
            + certificate_summary(certificate, target=early.config.get("target_precision")))


def _pool_or_problem(project):
    """The pool, or None and why not: the report shows everything else without it."""
    try:
        return project.load_pool(), None
    except BadInputError as error:  # gone, moved or changed since init: the store still has the labels
        return None, str(error)


class _Content:
    """Pictures and texts of pool items by uri (nothing when the pool is not at hand)."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.index = {} if pool is None else {uri: i for i, uri in enumerate(pool.uris)}

    def of(self, uri: str) -> dict[str, Any]:
        if uri not in self.index:
            return {}
        item = self.pool.items[self.index[uri]]
        if self.pool.modality == "image":
            return {"image": np.asarray(item, dtype=np.uint8)}
        if self.pool.modality == "text":
            return {"text": str(item)}
        return {"text": ", ".join(f"{value:.3g}" for value in np.asarray(item).ravel()[:8])}


def _fraction(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _round_point(round_id: int, metrics: dict[str, Any], synthetic: dict[str, int]) -> RoundPoint:
    """A finished round's metrics (the loop's ``RoundReport``) as the report's record."""
    what = f"round {round_id}'s metrics"
    if recorded_before_certification(metrics):
        return _early_round_point(round_id, EarlyRound.from_json(metrics, what), synthetic)
    report = RoundReport.from_json(metrics, what)
    certified = _fraction(report.certified_precision)
    reference = report.scorecard.label_quality.reference_in_accepted
    in_accepted = None if reference is None else _fraction(reference.accuracy)
    downstream = report.scorecard.downstream
    return RoundPoint(
        round_id=round_id, human_labels=report.human_labels, model_labels=report.model_labels,
        generated_items=synthetic.get("generated", 0), augmented_items=synthetic.get("augmented", 0),
        coverage=_fraction(report.coverage) or 0.0, certified_precision=certified, delta=_fraction(report.delta),
        estimated_precision=None if certified is None else _fraction(report.estimated_precision),
        threshold=_fraction(report.threshold) if certified is not None else None,
        reference_answers=report.reference_answers, reference_needed=report.reference_needed,
        retracted=report.retracted, reference_in_accepted=in_accepted,
        reference_in_accepted_ci=None if reference is None or in_accepted is None
        or _fraction(reference.low) is None or _fraction(reference.high) is None else (reference.low, reference.high),
        reference_in_accepted_count=reference.count if reference is not None and in_accepted is not None else 0,
        held_out_accuracy=_fraction(report.held_out_accuracy),
        gold_label_accuracy=None if report.gold is None else _fraction(report.gold.label_accuracy),
        achieved_precision=None if report.gold is None else _fraction(report.gold.achieved_precision),
        downstream_real=None if downstream is None else _fraction(downstream.real_only),
        downstream_with_generated=None if downstream is None else _fraction(downstream.with_generated),
        model=report.model, certificate=report.certificate, feedback=report.feedback,
    )


def _early_round_point(round_id: int, early: EarlyRound, synthetic: dict[str, int]) -> RoundPoint:
    """A round run before certified acceptance: its old estimate was no guarantee, so no precision figure is shown."""
    return RoundPoint(
        round_id=round_id, human_labels=early.human_labels, model_labels=early.model_labels,
        generated_items=synthetic.get("generated", 0), augmented_items=synthetic.get("augmented", 0),
        coverage=_fraction(early.coverage) or 0.0, held_out_accuracy=_fraction(early.held_out_accuracy),
        gold_label_accuracy=None if early.gold is None else _fraction(early.gold.label_accuracy),
        achieved_precision=None if early.gold is None else _fraction(early.gold.achieved_precision),
        downstream_real=None if early.downstream is None else _fraction(early.downstream.real_only),
        downstream_with_generated=None if early.downstream is None else _fraction(early.downstream.with_generated),
        model=early.model, feedback=early.feedback, before_certification=True,
    )


def _retracted(labels, content: _Content) -> tuple[RetractedLabel, ...]:
    """Retracted model labels, the latest retraction first; pictures only for the rows the page shows."""
    ordered = sorted(labels, key=lambda label: (label.retracted_at or "", label.id), reverse=True)
    return tuple(RetractedLabel(uri=label.uri, class_name=label.class_name, retracted_round=label.retracted_round,
                                reason=label.retraction_reason or "", round_id=label.round_id,
                                confidence=_fraction(label.calibrated_confidence),
                                certified_precision=_fraction(label.certified_precision),
                                retracted_at=label.retracted_at or "",
                                **(content.of(label.uri) if index < RETRACTED_SHOWN else {}))
                 for index, label in enumerate(ordered))


def _latest_scorecard(project, finished, notes: dict[str, list[str]]) -> Scorecard | None:
    """The last round's scorecard, updated by a newer one made on demand (``metalabel evaluate``).

    An on-demand scorecard runs no generators, so the generators' figures stay the round's: a
    section it left empty keeps the round's. One that cannot be read is left out, and a note says
    so. None when there is neither (or the last round ran before certified acceptance, when the
    scorecard had another shape).
    """
    on_demand = project.store.artifacts(kind="scorecard")
    last = finished[-1] if finished else None
    card = None
    if last is not None and not recorded_before_certification(last.metrics):
        card = RoundReport.from_json(last.metrics, f"round {last.id}'s metrics").scorecard
    if on_demand and on_demand[-1].path.is_file() and (
            last is None or on_demand[-1].created_at > (last.finished_at or "")):
        path = on_demand[-1].path
        try:
            newer = Scorecard.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError, StoreError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            notes["scorecard"].append(f"{path} cannot be read ({error}), so the last round's scorecard is shown; "
                                      "run `metalabel evaluate` again to replace it")
            return card
        if card is None:
            return newer
        card = dataclasses.replace(card, **{f.name: getattr(newer, f.name) for f in dataclasses.fields(newer)
                                            if getattr(newer, f.name)})
    return card


def _samples(store, content: _Content) -> tuple[Sample, ...]:
    """A few labeled items per class: human and seed labels first, then the most confident model labels."""
    order = {"human": 0, "imported": 1, "model": 2}
    by_class: dict[str, list] = defaultdict(list)
    for label in store.active_labels():
        by_class[label.class_name].append(label)
    samples = []
    for class_name in store.classes():
        labels = sorted(by_class[class_name], key=lambda label: (order.get(label.source, 3),
                                                                  -(label.calibrated_confidence or 0), label.item_id))
        humans = [label for label in labels if label.source != "model"][:SAMPLES_PER_CLASS // 2]
        models = [label for label in labels if label.source == "model"][:SAMPLES_PER_CLASS - len(humans)]
        for label in humans + models:
            samples.append(Sample(class_name=class_name, uri=label.uri, source=label.source,
                                  confidence=label.calibrated_confidence, round_id=label.round_id,
                                  **content.of(label.uri)))
    return tuple(samples)


def read_artifact_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` at ``path``, read now and never unpickled.

    A missing, truncated or foreign file, or one holding object arrays, raises BadInputError naming it.
    """
    hint = "the file was damaged or replaced after the round wrote it; rerun the round or delete the file"
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise ValueError("holds a single array, not an .npz archive of arrays")
        with stored:
            return {key: stored[key] for key in stored.files}
    except FileNotFoundError as error:
        raise BadInputError("is missing", path=path, hint=hint) from error
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # object arrays need pickle to load: refused, never executed
        raise BadInputError(f"cannot be read ({type(error).__name__}: {error})", path=path, hint=hint) from error


def _generated_samples(project, synthetic, content: _Content, notes: dict[str, list[str]]
                       ) -> tuple[tuple[Sample, ...], dict[str, np.ndarray]]:
    """Kept synthetic items whose content is a picture (VAE samples, augmented images), beside their parents.

    An artifact that cannot be read (or holds rows that are no picture) is left out, with a note.
    """
    artifacts = {a.id: a for a in project.store.artifacts(kind="generated")}
    uri_of_item = {item.id: item.uri for item in project.store.each_item()}
    loaded: dict[int, dict[str, np.ndarray] | None] = {}
    shown: list[Sample] = []
    parents: dict[str, np.ndarray] = {}
    per_generator: dict[str, int] = defaultdict(int)

    def leave_out(artifact_id: int, problem: str) -> None:
        loaded[artifact_id] = None
        items = sum(1 for item in synthetic if item.kept and item.artifact_id == artifact_id)
        notes["generated"].append(f"{problem}; its {items} generated item(s) are left out of this report")

    for item in reversed(synthetic):  # the latest round first
        if not item.kept or item.artifact_id not in artifacts or per_generator[item.generator] >= GENERATED_SHOWN // 2:
            continue
        if item.artifact_id not in loaded:
            try:
                loaded[item.artifact_id] = read_artifact_arrays(artifacts[item.artifact_id].path)
            except BadInputError as error:
                leave_out(item.artifact_id, str(error))
        arrays = loaded[item.artifact_id]
        key = f"{item.generator.replace(' ', '_')}.content"
        if arrays is None or key not in arrays or arrays[key].ndim < 3:
            continue  # feature vectors (hallucinated, augmented embeddings) have no picture
        path = artifacts[item.artifact_id].path
        if not 0 <= item.row_in_artifact < len(arrays[key]) or arrays[key].dtype.kind not in "biuf":
            leave_out(item.artifact_id, f"{path}: {key} has no picture at row {item.row_in_artifact} "
                                        f"({arrays[key].dtype} {list(arrays[key].shape)})")
            continue
        parent_uris = tuple(uri_of_item[p] for p in item.parents if p in uri_of_item)
        try:
            sample = Sample(class_name=item.class_name, uri=item.uri, source=item.kind,
                            image=np.asarray(arrays[key][item.row_in_artifact], dtype=np.uint8),
                            round_id=item.round_id, generator=f"{item.generator} {item.generator_version}",
                            parents=parent_uris)
        except BadInputError as error:
            leave_out(item.artifact_id, f"{path}: {key} row {item.row_in_artifact} is no picture ({error})")
            continue
        for uri in parent_uris:
            image = content.of(uri).get("image")
            if image is not None:
                parents[uri] = image
        shown.append(sample)
        per_generator[item.generator] += 1
    return tuple(shown), parents
