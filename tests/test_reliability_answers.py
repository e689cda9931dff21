"""Reliability: when two people's answers about one item differ, both stay on record with who gave each.

The kept answer is a label (``Label.oracle`` names its annotator); the other is a disagreement, and a
disagreement between people must name its person too, or "every label remembers where it came from"
fails exactly where a reviewer needs it: to ask the two people. Real SQLite projects throughout.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import label_studio_user
from metalabel.label.oracle import QUESTION_KEY, LabelStudioQueue, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore
from metalabel.store import schema as store_schema

CLASSES = ("cat", "dog", "bird")


def make_store(folder: Path) -> ProjectStore:
    store = ProjectStore.create(folder, name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(4))
    return store


def label_studio_export(store: ProjectStore, queue: Path, votes: dict[int, list[tuple[str, str]]]) -> Path:
    """Put a question about every item to a Label Studio queue; the "JSON" export with ``votes``
    (item position -> [(annotator email, class)]) as Label Studio writes it."""
    queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, f"text {item.uri}", CLASSES)
               for item in store.items()]
    put_questions(store, LabelStudioQueue(queue), queries)
    [tasks_file] = queue.glob("tasks-*.json")
    tasks = json.loads(tasks_file.read_text())
    position = {query.question_id: n for n, query in enumerate(queries)}
    export = [{"id": n + 1, "project": 1, "data": task["data"], "meta": task["meta"], "predictions": [],
               "annotations": [{"completed_by": label_studio_user(who), "was_cancelled": False,
                                "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                            "value": {"choices": [choice]}}]}
                               for who, choice in votes.get(position[task["meta"][QUESTION_KEY]], [])]}
              for n, task in enumerate(tasks)]
    path = queue / "export.json"
    path.write_text(json.dumps(export))
    return path


def test_each_person_who_disagreed_in_a_label_studio_export_is_named(tmp_path):
    with make_store(tmp_path / "p") as store:
        export = label_studio_export(store, tmp_path / "queue", {
            0: [("ann@x", "dog"), ("bob@x", "cat")],                   # a tie: the first is the label
            1: [("ann@x", "bird"), ("cid@x", "cat"), ("bob@x", "cat")],  # the majority is the label
        })
        recorded = LabelStudioQueue(tmp_path / "queue").import_annotations(export, store=store)
        assert (recorded.answered, recorded.disagreements) == (2, 2)
        labels = {label.uri: (label.class_name, label.oracle) for label in store.active_labels()}
        assert labels == {"pool/0.txt": ("dog", "labelstudio:ann@x"), "pool/1.txt": ("cat", "labelstudio:cid@x")}
        found = {(d.uri, d.kept_class, d.proposed_class, d.source, d.oracle) for d in store.disagreements()}
        assert found == {("pool/0.txt", "dog", "cat", "human", "labelstudio:bob@x"),
                         ("pool/1.txt", "cat", "bird", "human", "labelstudio:ann@x")}


def test_a_second_persons_answer_and_a_changed_one_are_disagreements_that_name_who_gave_them(tmp_path):
    with make_store(tmp_path / "p") as store:
        [first, second, _, _] = store.items()
        asked = store.ask(first.id, strategy="margin")
        store.answer(asked, "cat", oracle="web:ann")
        skipped = store.ask(second.id, strategy="margin")
        store.dismiss(skipped, oracle="web:bob")
        store.answer(store.ask(second.id, strategy="audit"), "dog", oracle="web:cid")
        # bob's late answer to the question he skipped: cid answered the item meanwhile, so it is kept beside hers
        assert store.answer(skipped, "cat", oracle="web:bob").disagreement_id is not None
        # bob changes that answer (undo on the page, another class): still beside cid's, still his; it replaces
        # his earlier one (tests/test_reliability_changes.py)
        assert store.correct(skipped, "bird", oracle="web:bob").disagreement_id is not None
        # another annotator on an answered question (a Label Studio import names who)
        assert store.add_human_disagreement(asked, "dog", oracle="labelstudio:eve") is not None
        found = {(d.uri, d.kept_class, d.proposed_class, d.oracle) for d in store.disagreements()}
        assert found == {("pool/1.txt", "dog", "bird", "web:bob"), ("pool/0.txt", "cat", "dog", "labelstudio:eve")}


def test_a_version_5_project_gains_who_disagreed_and_keeps_its_disagreements(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    connection = sqlite3.connect(folder / "project.db", isolation_level=None)
    for version, migration in enumerate(store_schema.MIGRATIONS[:5]):
        connection.execute("BEGIN")
        migration(connection)
        connection.execute(f"PRAGMA user_version = {version + 1}")
        connection.execute("COMMIT")
    connection.executescript(
        "INSERT INTO classes (name, position) VALUES ('cat', 0), ('dog', 1);"
        "INSERT INTO items (uri, content_hash, modality) VALUES ('a.txt', 'h', 'text');"
        "INSERT INTO labels (item_id, class_id, source, oracle) VALUES (1, 1, 'human', 'web:ann');"
        "INSERT INTO disagreements (item_id, kept_label_id, class_id, source) VALUES (1, 1, 2, 'human');")
    connection.close()
    with ProjectStore.open(folder) as store:
        [old] = store.disagreements()
        assert (old.kept_class, old.proposed_class, old.oracle) == ("cat", "dog", None)  # nobody recorded then
        assert store_schema.user_version(store._connection) == store_schema.current_version()


def test_a_disagreement_between_two_people_stays_open_until_their_answers_agree(tmp_path):
    with make_store(tmp_path / "p") as store:
        item = store.items()[0]
        asked = store.ask(item.id, strategy="margin")
        store.answer(asked, "cat", oracle="web:ann")
        # bob, a second annotator of the same Label Studio task, says otherwise: on record beside ann's
        store.add_human_disagreement(asked, "dog", oracle="labelstudio:bob")
        # ann changes her answer to a third class: bob's answer still contradicts the label, so it stays open
        store.correct(asked, "bird", oracle="web:ann")
        [open_one] = store.disagreements()
        assert (open_one.kept_class, open_one.kept_source, open_one.proposed_class, open_one.oracle) == (
            "bird", "human", "dog", "labelstudio:bob")  # about the label the item has now
        # ann (her annotation updated) comes round to bob's answer: now they agree, and that settles it
        store.correct(asked, "dog", oracle="web:ann")
        assert store.disagreements() == []
        [settled] = store.disagreements(include_resolved=True)
        assert settled.resolved_by_label_id == store.active_labels()[0].id


def test_a_persons_answer_still_settles_what_a_model_said_against_the_item(tmp_path):
    with make_store(tmp_path / "p") as store:
        item = store.items()[0]
        asked = store.ask(item.id, strategy="margin")
        store.answer(asked, "cat", oracle="web:ann")
        store.add_label(item.id, "dog", source="model", calibrated_confidence=0.9)  # a model disagrees
        assert len(store.disagreements()) == 1
        store.correct(asked, "bird", oracle="web:ann")  # the person looked again
        assert store.disagreements() == []
