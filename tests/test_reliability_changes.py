"""Reliability: a person who changes an answer in Label Studio is recorded as changing it.

One person gives one answer about an item: a later annotation by the same Label Studio user is her changed
answer, never a disagreement with herself, and an older one arriving late (a kept webhook replayed after an
export) does not undo her newer one. A person whose answer was not kept can change it too: his earlier
disagreement is replaced, or settled when he now agrees. Real SQLite projects and Label Studio's "JSON"
export and webhook payload shapes throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import label_studio_user
from metalabel import datasets
from metalabel.errors import BadInputError
from metalabel.export import export_project
from metalabel.label.oracle import LabelStudioQueue, Query, put_questions
from metalabel.project import Project
from metalabel.store import ItemRecord, ProjectStore, schema

CLASSES = ("cat", "dog", "bird")
ANN, BOB = "labelstudio:ann@x", "labelstudio:bob@x"


def make_project(folder: Path) -> tuple[ProjectStore, list[dict]]:
    """A project with one open question about item 0; the tasks Label Studio holds for it."""
    store = ProjectStore.create(folder / "p", name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(2))
    item = store.items()[0]
    query = Query(store.ask(item.id, strategy="margin"), item.id, item.uri, f"text {item.uri}", CLASSES)
    put_questions(store, LabelStudioQueue(folder / "queue"), [query])
    [tasks_file] = (folder / "queue").glob("tasks-*.json")
    return store, json.loads(tasks_file.read_text())


def annotation(who: str, choice: str, updated_at: str, annotation_id: int = 1) -> dict:
    """One annotation as Label Studio's "JSON" export and webhooks carry it."""
    return {"id": annotation_id, "completed_by": label_studio_user(who), "was_cancelled": False,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}],
            "created_at": "2026-12-05T09:00:00.000000Z", "updated_at": updated_at}


def export(folder: Path, name: str, tasks: list[dict], *annotations: dict, copies: int = 1) -> Path:
    """A Label Studio "JSON" export of the question's task (``copies`` tasks of it, annotations dealt in turn)."""
    exported = [{"id": n + 1, "project": 1, "data": tasks[0]["data"], "meta": tasks[0]["meta"], "predictions": [],
                 "annotations": [a for i, a in enumerate(annotations) if i % copies == n]} for n in range(copies)]
    path = folder / name
    path.write_text(json.dumps(exported))
    return path


def item_answers(store: ProjectStore) -> tuple[list[tuple[str, str | None, bool]], set[tuple[str, str | None]]]:
    """Item 0's label history (class, who, active) and its open disagreements (class, who)."""
    item = store.items()[0]
    history = [(label.class_name, label.oracle, label.active) for label in store.label_history(item.id)]
    return history, {(d.proposed_class, d.oracle) for d in store.disagreements() if d.item_id == item.id}


def test_a_later_export_with_her_changed_answer_is_her_change_not_a_disagreement_with_herself(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        monday = export(tmp_path, "monday.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"))
        queue.import_annotations(monday, store=store)
        recorded = queue.import_annotations(
            export(tmp_path, "tuesday.json", tasks, annotation("ann@x", "dog", "2026-12-06T10:00:00Z")), store=store)
        assert (recorded.changed, recorded.disagreements) == (1, 0)
        queue.import_annotations(monday, store=store)  # the older export again: her newer answer stands
        assert item_answers(store) == ([("cat", ANN, False), ("dog", ANN, True)], set())
        assert [question.answer for question in store.answered_questions()] == ["dog"]


def test_her_newest_annotation_in_one_export_is_her_answer_whatever_the_order(tmp_path):
    store, tasks = make_project(tmp_path)
    with store:  # the question's task was imported into Label Studio twice; she answered both, the later says bird
        two_tasks = export(tmp_path, "export.json", tasks, annotation("ann@x", "bird", "2026-12-05T11:00:00Z"),
                           annotation("ann@x", "dog", "2026-12-05T10:00:00Z"), copies=2)
        recorded = LabelStudioQueue(tmp_path / "queue").import_annotations(two_tasks, store=store)
        assert (recorded.answered, recorded.disagreements) == (1, 0)
        assert item_answers(store) == ([("bird", ANN, True)], set())


def test_a_kept_webhook_replayed_after_an_export_with_her_newer_answer_does_not_undo_it(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        # the ML backend kept her first annotation (a run held the project) as a one-task export
        kept = export(tmp_path, "kept-created.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"))
        # meanwhile an export with her changed annotation is imported; then the kept one is replayed
        queue.import_annotations(export(tmp_path, "later.json", tasks,
                                        annotation("ann@x", "dog", "2026-12-05T12:00:00Z")), store=store)
        recorded = queue.import_annotations(kept, store=store)
        assert (recorded.changed, recorded.disagreements) == (0, 0)
        assert item_answers(store) == ([("dog", ANN, True)], set())


def test_another_persons_answer_in_a_later_export_is_still_a_disagreement(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        queue.import_annotations(export(tmp_path, "a.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z")),
                                 store=store)
        queue.import_annotations(export(tmp_path, "b.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"),
                                        annotation("bob@x", "dog", "2026-12-05T11:00:00Z", 2)), store=store)
        assert item_answers(store) == ([("cat", ANN, True)], {("dog", BOB)})


def test_a_person_whose_answer_was_not_kept_can_change_it_and_agreeing_settles_it(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        queue.import_annotations(export(tmp_path, "a.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"),
                                        annotation("bob@x", "dog", "2026-12-05T10:30:00Z", 2)), store=store)
        assert item_answers(store) == ([("cat", ANN, True)], {("dog", BOB)})
        # bob changes his answer: his new one replaces his old disagreement
        queue.import_annotations(export(tmp_path, "b.json", tasks, annotation("bob@x", "bird", "2026-12-05T11:00:00Z",
                                                                              2)), store=store)
        assert item_answers(store) == ([("cat", ANN, True)], {("bird", BOB)})
        # and changes it to ann's class: he agrees now, nothing is left open
        queue.import_annotations(export(tmp_path, "c.json", tasks, annotation("bob@x", "cat", "2026-12-05T12:00:00Z",
                                                                              2)), store=store)
        assert item_answers(store) == ([("cat", ANN, True)], set())
        [label] = store.active_labels()
        settled = store.disagreements(include_resolved=True)
        assert [(d.proposed_class, d.oracle, d.resolved_by_label_id) for d in settled] == [
            ("dog", BOB, label.id), ("bird", BOB, label.id)]  # his answers stay on record, settled by the label kept


def test_a_person_whose_answer_was_not_kept_changes_it_on_the_store(tmp_path):
    store, _ = make_project(tmp_path)
    with store:
        [question] = store.open_questions()
        store.answer(question.id, "cat", oracle=ANN)
        store.add_human_disagreement(question.id, "dog", oracle=BOB)
        store.add_human_disagreement(question.id, "bird", oracle=BOB)
        store.add_human_disagreement(question.id, "bird", oracle="labelstudio:cid@x")  # another person's stays
        assert item_answers(store)[1] == {("bird", BOB), ("bird", "labelstudio:cid@x")}
        store.add_human_disagreement(question.id, "cat", oracle=BOB)
        assert item_answers(store)[1] == {("bird", "labelstudio:cid@x")}


def review_project(tmp_path: Path) -> tuple[Project, int, dict]:
    """A project whose model label of 'works fine' (pos) was exported for review: the project, the item, its task."""
    (tmp_path / "reviews.csv").write_text("text,label\ngreat phone,pos\nbroke in a day,neg\nworks fine,\n")
    pool = datasets.read_text(tmp_path / "reviews.csv")
    project = Project.create(tmp_path / "p", pool=pool)
    store = project.store
    [item_id] = store.item_ids([pool.uris[2]])
    store.add_label(item_id, "pos", source="model", calibrated_confidence=0.9, round_id=store.start_round({}))
    [task] = [task for task in json.loads((export_project(store, tmp_path / "review", format="labelstudio").path
                                           / "tasks.json").read_text()) if task["data"]["uri"] == pool.uris[2]]
    return project, item_id, task


def reviewed(path: Path, task: dict, *verdicts: tuple[str, str, str]) -> Path:
    """A "JSON" export of the reviewed task with each (reviewer, verdict, updated_at)."""
    path.write_text(json.dumps([{**task, "id": 1, "project": 3, "annotations": [
        {**annotation(who, verdict, updated_at, n), "completed_by": label_studio_user(who)}
        for n, (who, verdict, updated_at) in enumerate(verdicts, start=1)]}]))
    return path


def test_a_reviewer_who_changes_her_verdict_in_a_later_export_changes_her_answer(tmp_path):
    project, item_id, task = review_project(tmp_path)
    with project:
        store = project.store
        first = reviewed(tmp_path / "monday.json", task, ("rev@x", "neg", "2026-12-05T10:00:00Z"))
        project.import_answers(first)
        assert project.import_answers(reviewed(tmp_path / "tuesday.json", task,
                                               ("rev@x", "pos", "2026-12-06T10:00:00Z"))).changed == 1
        project.import_answers(first)  # the older export again: her newer verdict stands
        history = [(label.class_name, label.source, label.oracle) for label in store.label_history(item_id)]
        assert history == [("pos", "model", None), ("neg", "human", "labelstudio:rev@x"),
                           ("pos", "human", "labelstudio:rev@x")]
        assert store.disagreements() == []


def test_her_change_to_a_class_someone_listed_before_her_also_chose_is_her_change(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        queue.import_annotations(export(tmp_path, "a.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"),
                                        annotation("bob@x", "dog", "2026-12-05T10:30:00Z", 2)), store=store)
        # she changes to bob's class; bob's annotation comes first in the later export
        recorded = queue.import_annotations(
            export(tmp_path, "b.json", tasks, annotation("bob@x", "dog", "2026-12-05T10:30:00Z", 2),
                   annotation("ann@x", "dog", "2026-12-05T12:00:00Z")), store=store)
        assert recorded.changed == 1
        assert item_answers(store) == ([("cat", ANN, False), ("dog", ANN, True)], set())


def test_a_reviewers_change_to_a_class_another_reviewer_listed_before_her_chose_is_her_change(tmp_path):
    project, item_id, task = review_project(tmp_path)
    with project:
        store = project.store

        project.import_answers(reviewed(tmp_path / "monday.json", task, ("rev@x", "neg", "2026-12-05T10:00:00Z")))
        later = reviewed(tmp_path / "tuesday.json", task, ("oth@x", "pos", "2026-12-05T11:00:00Z"),
                         ("rev@x", "pos", "2026-12-06T10:00:00Z"))
        assert project.import_answers(later).changed == 1
        history = [(label.class_name, label.source, label.oracle) for label in store.label_history(item_id)]
        assert history == [("pos", "model", None), ("neg", "human", "labelstudio:rev@x"),
                           ("pos", "human", "labelstudio:rev@x")]
        assert store.disagreements() == []


def by_user_id(annotation: dict) -> dict:
    """The annotation as a webhook (and Label Studio's plain "JSON" export) names its annotator: the user id."""
    return {**annotation, "completed_by": annotation["completed_by"]["id"]}


ANN_BY_ID = f"labelstudio:{label_studio_user('ann@x')['id']}"


def test_her_change_under_her_user_id_and_under_her_email_is_her_change_in_either_order(tmp_path):
    for first_by_id in (True, False):
        folder = tmp_path / str(first_by_id)
        folder.mkdir()
        store, tasks = make_project(folder)
        queue = LabelStudioQueue(folder / "queue")
        cat = annotation("ann@x", "cat", "2026-12-05T10:00:00Z")
        dog = annotation("ann@x", "dog", "2026-12-05T12:00:00Z")
        with store:
            queue.import_annotations(export(folder, "first.json", tasks, by_user_id(cat) if first_by_id else cat),
                                     store=store)
            recorded = queue.import_annotations(
                export(folder, "second.json", tasks, dog if first_by_id else by_user_id(dog)), store=store)
            assert (recorded.changed, recorded.disagreements) == (1, 0)
            # her first answer keeps the name it was recorded under; later ones get the name a person reads
            assert item_answers(store) == ([("cat", ANN_BY_ID if first_by_id else ANN, False), ("dog", ANN, True)],
                                           set())
            assert store.people().same(ANN_BY_ID, ANN) and not store.people().same(ANN_BY_ID, BOB)


def test_an_older_export_naming_her_by_email_does_not_undo_her_change_by_webhook(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    cat, dog = annotation("ann@x", "cat", "2026-12-05T10:00:00Z"), annotation("ann@x", "dog", "2026-12-05T12:00:00Z")
    with store:
        queue.import_annotations(export(tmp_path, "created.json", tasks, by_user_id(cat)), store=store)
        queue.import_annotations(export(tmp_path, "updated.json", tasks, by_user_id(dog)), store=store, changed=True)
        # an export taken before her change, with user objects, imported afterwards
        recorded = queue.import_annotations(export(tmp_path, "old.json", tasks, cat), store=store)
        assert (recorded.changed, recorded.disagreements) == (0, 0)
        assert item_answers(store) == ([("cat", ANN_BY_ID, False), ("dog", ANN_BY_ID, True)], set())


def test_her_disagreement_under_her_user_id_is_settled_when_she_agrees_under_her_email(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    with store:
        queue.import_annotations(export(tmp_path, "bob.json", tasks, annotation("bob@x", "cat", "2026-12-05T10:00:00Z",
                                                                                2)), store=store)
        queue.import_annotations(export(tmp_path, "ann.json", tasks,
                                        by_user_id(annotation("ann@x", "dog", "2026-12-05T11:00:00Z"))), store=store)
        assert item_answers(store) == ([("cat", BOB, True)], {("dog", ANN_BY_ID)})
        # she now agrees with bob, in an export that names her by email: her disagreement is settled, not kept
        # beside a second one of hers
        queue.import_annotations(export(tmp_path, "both.json", tasks, annotation("bob@x", "cat", "2026-12-05T10:00:00Z",
                                                                                 2),
                                        annotation("ann@x", "cat", "2026-12-05T12:00:00Z")), store=store)
        assert item_answers(store) == ([("cat", BOB, True)], set())


def test_two_people_label_studio_gave_one_user_id_stay_two_people(tmp_path):
    # two Label Studio servers (or a reset one) gave ann and bob the same user id: the id names no one for sure
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    ann = {**annotation("ann@x", "cat", "2026-12-05T10:00:00Z"), "completed_by": {"id": 3, "email": "ann@x"}}
    bob = {**annotation("bob@x", "dog", "2026-12-05T12:00:00Z", 2), "completed_by": {"id": 3, "email": "bob@x"}}
    with store:
        queue.import_annotations(export(tmp_path, "server-a.json", tasks, ann), store=store)
        recorded = queue.import_annotations(export(tmp_path, "server-b.json", tasks, bob), store=store)
        # bob's later answer is his, disputing hers; it never takes her answer's place
        assert (recorded.changed, recorded.disagreements) == (0, 1)
        assert item_answers(store) == ([("cat", ANN, True)], {("dog", BOB)})
        assert not store.people().same(ANN, BOB)


def unnamed(annotation_id: int, choice: str, updated_at: str) -> dict:
    """An annotation that names nobody (made through Label Studio's API, or written by hand)."""
    return {key: value for key, value in annotation("nobody@x", choice, updated_at, annotation_id).items()
            if key != "completed_by"}


def test_two_annotations_that_name_nobody_stay_two_answers_and_each_keeps_its_changes(tmp_path):
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    first, second = "labelstudio:annotation-1", "labelstudio:annotation-2"
    with store:  # both unnamed: before, they were one person, the newer "her change", the other answer lost
        both = export(tmp_path, "both.json", tasks, unnamed(1, "cat", "2026-12-05T10:00:00Z"),
                      unnamed(2, "dog", "2026-12-05T11:00:00Z"))
        recorded = queue.import_annotations(both, store=store)
        assert (recorded.answered, recorded.disagreements) == (1, 1)
        assert item_answers(store) == ([("cat", first, True)], {("dog", second)})
        # annotation 2, edited later, agrees: its disagreement is settled as the change of that annotation
        queue.import_annotations(export(tmp_path, "later.json", tasks, unnamed(1, "cat", "2026-12-05T10:00:00Z"),
                                        unnamed(2, "cat", "2026-12-06T09:00:00Z")), store=store)
        assert item_answers(store) == ([("cat", first, True)], set())


def test_two_answers_to_one_question_that_name_nobody_and_carry_no_id_are_refused_not_merged(tmp_path):
    # written by hand: neither says whose it is, so they cannot be told apart as one person's or two; taken as one
    # person's, the older was silently dropped
    store, tasks = make_project(tmp_path)
    queue = LabelStudioQueue(tmp_path / "queue")
    cat, dog = ({key: value for key, value in unnamed(n, choice, when).items() if key != "id"}
                for n, choice, when in ((1, "cat", "2026-12-05T10:00:00Z"), (2, "dog", "2026-12-05T11:00:00Z")))
    with store:
        with pytest.raises(BadInputError, match="task 0.*name nobody and carry no id.*nothing was imported"):
            queue.import_annotations(export(tmp_path, "both.json", tasks, cat, dog), store=store)
        assert item_answers(store) == ([], set())
        queue.import_annotations(export(tmp_path, "one.json", tasks, cat), store=store)  # one alone is its answer
        assert item_answers(store) == ([("cat", "labelstudio", True)], set())


def test_answer_times_an_earlier_release_kept_in_the_import_record_still_keep_her_newer_answer(tmp_path,
                                                                                               monkeypatch):
    # schema 7 kept each import's answer times in its record's JSON; schema 8 moves them to a table
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:7])
    store, tasks = make_project(tmp_path)
    with store:
        [question] = store.open_questions()
        store.answer(question.id, "dog", oracle=ANN)  # her changed annotation, recorded as schema 7 did
        later = export(tmp_path, "later.json", tasks, annotation("ann@x", "dog", "2026-12-05T12:00:00Z"))
        store.add_artifact("answers-import", later, meta={"changed": False, "answer_times": {
            str(question.id): {ANN: "2026-12-05T12:00:00+00:00"}}})
    monkeypatch.undo()
    with ProjectStore.open(tmp_path / "p") as store:
        assert [artifact.meta for artifact in store.artifacts(kind="answers-import")] == [{"changed": False}]
        # a kept webhook with her first annotation, replayed after the upgrade: her newer answer stands
        kept = export(tmp_path, "kept-created.json", tasks, annotation("ann@x", "cat", "2026-12-05T10:00:00Z"))
        recorded = LabelStudioQueue(tmp_path / "queue").import_annotations(kept, store=store)
        assert (recorded.changed, recorded.disagreements) == (0, 0)
        assert item_answers(store) == ([("dog", ANN, True)], set())
