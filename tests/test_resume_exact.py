"""A run interrupted after its round accepted labels, and before that round asked anything, resumes as if
never interrupted: the round's writes are taken back (``ProjectStore.undo_round``) and the round is redone
from the project as it found it."""

from __future__ import annotations

import functools
import sqlite3

import pytest

from helpers import kanji_project as small_kanji_project
from metalabel.errors import StoreError
from metalabel.label.oracle import SimulatedOracle
from metalabel.pipeline import LabelingRun
from metalabel.project import Project
from metalabel.store import ItemRecord, ProjectStore, SyntheticRecord, content_hash

kanji_project = functools.partial(small_kanji_project, samples_per_class=40)
# seed 0: a round accepts, then asks (seed 1 did until the graph's principal axes became exact ones)
OPTIONS = dict(encoder="pixels", progress=False, generate=False, project_meta_steps=0, budget=45, per_round=15,
               reference_share=0.6, target_precision=0.8, seed=0)


def outcome(folder):
    """What a run leaves, without row ids, round ids and times (a resumed run has one more round row)."""
    with sqlite3.connect(folder / "project.db") as db:
        labels = db.execute(
            "SELECT items.uri, classes.name, source, raw_confidence, calibrated_confidence, threshold, "
            "certified_precision, model_hash, query_strategy, superseded_by IS NULL, retracted_at IS NULL, "
            "retraction_reason FROM labels JOIN items ON items.id = labels.item_id "
            "JOIN classes ON classes.id = labels.class_id ORDER BY items.uri, labels.id").fetchall()
        questions = db.execute(
            "SELECT items.uri, strategy, score, answer_class_id FROM questions JOIN items ON items.id = "
            "questions.item_id ORDER BY questions.id").fetchall()
        disagreements = db.execute("SELECT item_id, class_id, source FROM disagreements ORDER BY id").fetchall()
    return labels, questions, disagreements


def finished_reports(result_rounds):
    return [{k: v for k, v in report.to_json().items() if k not in {"round_id", "seconds"}}
            for report in result_rounds]


def test_a_run_interrupted_after_its_round_accepted_resumes_as_an_uninterrupted_one(cache, tmp_path, monkeypatch):
    project, gold = kanji_project(tmp_path / "straight")
    with project:
        straight = project.run(oracle=SimulatedOracle(gold), gold=gold, **OPTIONS)
    assert any(r.model_labels for r in straight.rounds[:-1]), "sized so a round accepts labels, then asks"

    # Ctrl-C after the first round that accepted labels wrote them, before it asked anything
    scorecard = LabelingRun._scorecard

    def interrupted(run, *args, **kwargs):
        if any(label.source == "model" for label in run.store.active_labels()):
            raise KeyboardInterrupt
        return scorecard(run, *args, **kwargs)

    project, gold = kanji_project(tmp_path / "killed")
    with project, monkeypatch.context() as patch:
        patch.setattr(LabelingRun, "_scorecard", interrupted)
        with pytest.raises(KeyboardInterrupt):
            project.run(oracle=SimulatedOracle(gold), gold=gold, **OPTIONS)
        assert any(label.source == "model" for label in project.store.active_labels())
    with Project.open(tmp_path / "killed") as project:
        resumed = project.run(oracle=SimulatedOracle(gold), gold=gold, **OPTIONS)
        undone = [r for r in project.store.rounds() if r.status == "failed"]
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "straight")
    done_before = len(straight.rounds) - len(resumed.rounds)
    assert finished_reports(resumed.rounds) == finished_reports(straight.rounds[done_before:])
    (failed,) = undone
    assert failed.metrics is not None and failed.metrics["undone"]["labels"] > 0


def test_undo_round_splices_the_label_history_and_refuses_a_round_that_asked(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(["a", "b"])
        items = store.add_items(ItemRecord(f"pool/{i}.txt", content_hash(f"text {i}"), "text") for i in range(4))
        first = store.start_round()
        store.add_label(items[0], "a", source="model", round_id=first, calibrated_confidence=0.9)
        store.add_label(items[1], "a", source="model", round_id=first, calibrated_confidence=0.9)
        store.add_label(items[2], "b", source="imported")
        store.finish_round(first, {})
        second = store.start_round()
        before = {label.item_id: label for label in store.active_labels()}
        store.add_label(items[0], "b", source="model", round_id=second, calibrated_confidence=0.95)  # supersedes
        store.retract_label(before[items[1]].id, round_id=second, reason="no longer certified")
        store.add_label(items[2], "a", source="model", round_id=second)  # disagrees with the seed
        store.add_label(items[3], "a", source="model", round_id=second)  # a first label
        store.add_label(items[0], "a", source="human")  # a person's answer after the kill, on the round's label
        for name in ("generated.npz", "votes.json"):
            (tmp_path / name).write_bytes(b"content")
        generated = store.add_artifact("generated", tmp_path / "generated.npz", round_id=second)
        store.add_artifact("rule-votes", tmp_path / "votes.json", round_id=second)
        store.add_synthetic_items([SyntheticRecord(uri=f"generated/round-{second}/augment/00000", content_hash="0" * 64,
                                                   kind="augmented", class_name="a", generator="augment",
                                                   generator_version="v", row_in_artifact=0, parents=(items[0],))],
                                  round_id=second, artifact_id=generated)
        store.finish_round(second, {"interrupted": True}, status="failed")
        undone = store.undo_round(second, artifact_kinds=("checkpoint", "generated"))
        assert undone is not None and (undone.labels, undone.retractions, undone.disagreements) == (2, 1, 1)
        assert (undone.synthetic_items, undone.artifacts) == (1, 1) and not store.synthetic_items()
        assert [a.kind for a in store.artifacts()] == ["rule-votes"]  # kinds not asked for stay
        after = {label.item_id: (label.class_name, label.source) for label in store.active_labels()}
        assert after == {items[0]: ("a", "human"), items[1]: ("a", "model"), items[2]: ("b", "imported")}
        assert [label.source for label in store.label_history(items[0])] == ["model", "human"]
        assert not store.disagreements() and not store.retracted_labels()
        assert store.rounds()[1].metrics["undone"]["labels"] == 2
        assert store.undo_round(second, artifact_kinds=("checkpoint",)).labels == 0  # nothing left: no change
        with pytest.raises(StoreError):
            store.undo_round(first, artifact_kinds=("checkpoint",))  # a finished round stays as it is
        third = store.start_round()
        store.ask(items[3], strategy="reference", round_id=third)
        store.add_label(items[3], "b", source="model", round_id=third)
        with pytest.raises(StoreError):
            store.undo_round(third, artifact_kinds=("checkpoint",))  # running: close it first
        store.finish_round(third, {}, status="failed")
        assert store.undo_round(third, artifact_kinds=("checkpoint",)) is None  # it asked: its answers count
        assert [label.round_id for label in store.active_labels() if label.item_id == items[3]] == [third]
        # an export made before an undo names the deleted labels by id: no later label takes one of their ids
        fourth = store.start_round()
        newest = store.add_label(items[1], "b", source="model", round_id=fourth).label_id
        store.finish_round(fourth, {}, status="failed")
        assert store.undo_round(fourth, artifact_kinds=()).labels == 1
        assert store.add_label(items[1], "b", source="model", round_id=third).label_id == newest + 1
