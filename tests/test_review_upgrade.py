"""Review: a project that took Label Studio answers before schema version 6 keeps them as they were.

Before version 6 the ML backend kept every annotation it received under ``labelstudio/webhook/`` (recorded or
not) without marking which it recorded, and a disagreement between people did not name its person. After the
upgrade neither may turn answers already on record into new ones: the backend's earlier files are not
"kept but unrecorded" annotations to replay (replaying an annotator's first answer that she later changed
made it a disagreement with her own current answer), and importing an export again adds no second,
named copy of a disagreement recorded unnamed. Real SQLite projects; the rows an earlier release wrote are
made by today's code, then stripped of what that release did not write.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpers import label_studio_user
from metalabel.label.oracle import (
    WEBHOOK_FOLDER,
    LabelStudioQueue,
    Query,
    put_questions,
    record_kept_annotations,
    unrecorded_annotations,
)
from metalabel.store import ItemRecord, ProjectStore

CLASSES = ("cat", "dog", "bird")


def make_store(folder: Path) -> ProjectStore:
    store = ProjectStore.create(folder, name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(2))
    return store


def tasks_put_to_label_studio(store: ProjectStore) -> list[dict]:
    """A question about every item, put to the project's own Label Studio queue; its tasks as written."""
    queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, f"text {item.uri}", CLASSES)
               for item in store.items()]
    queue = store.folder / "labelstudio"
    put_questions(store, LabelStudioQueue(queue), queries)
    [tasks_file] = queue.glob("tasks-*.json")
    return [{"id": n + 1, "project": 1, **task} for n, task in enumerate(json.loads(tasks_file.read_text()))]


def one_annotation(task: dict, who: str, choice: str) -> list[dict]:
    return [{**task, "annotations": [{"id": 11, "completed_by": label_studio_user(who), "was_cancelled": False,
                                      "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                  "value": {"choices": [choice]}}]}]}]


def forget_answers_imports(folder: Path) -> None:
    """What a release before schema 6 left: the answers recorded, but no record of which file held them."""
    with sqlite3.connect(folder / "project.db") as db:
        db.execute("DELETE FROM artifacts WHERE kind = 'answers-import'")


def test_annotations_an_earlier_backend_recorded_are_not_replayed_after_the_upgrade(tmp_path):
    with make_store(tmp_path / "p") as store:
        task = tasks_put_to_label_studio(store)[0]
        kept = store.folder / WEBHOOK_FOLDER
        kept.mkdir(parents=True)
        queue = LabelStudioQueue(store.folder / "labelstudio")
        # the earlier backend named its files without saying created or updated, and recorded each at once
        created = kept / "20261201T100000-task1-annotation11-a1b2c3.json"
        created.write_text(json.dumps(one_annotation(task, "ann@x", "cat")))
        queue.import_annotations(created, store=store)
        updated = kept / "20261201T100500-task1-annotation11-d4e5f6.json"
        updated.write_text(json.dumps(one_annotation(task, "ann@x", "dog")))
        assert queue.import_annotations(updated, store=store, changed=True).changed == 1
    forget_answers_imports(tmp_path / "p")

    with ProjectStore.open(tmp_path / "p") as store:
        assert unrecorded_annotations(store) == []  # `metalabel status` must not ask to record them again
        assert record_kept_annotations(store).recorded == []
        assert store.disagreements() == []  # ann's first answer is history, not a disagreement with herself
        [label] = [label for label in store.active_labels() if label.source == "human"]
        assert (label.class_name, label.oracle) == ("dog", "labelstudio:ann@x")


def test_importing_an_export_again_after_the_upgrade_adds_no_second_disagreement(tmp_path):
    with make_store(tmp_path / "p") as store:
        task = tasks_put_to_label_studio(store)[0]
        export = tmp_path / "export.json"
        two_people = one_annotation(task, "ann@x", "cat")
        two_people[0]["annotations"].append({**two_people[0]["annotations"][0], "id": 12,
                                             "completed_by": {"id": 8, "email": "bob@x"},
                                             "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                         "value": {"choices": ["dog"]}}]})
        export.write_text(json.dumps(two_people))
        LabelStudioQueue(store.folder / "labelstudio").import_annotations(export, store=store)
        assert [(d.proposed_class, d.oracle) for d in store.disagreements()] == [("dog", "labelstudio:bob@x")]
    with sqlite3.connect(tmp_path / "p" / "project.db") as db:  # recorded before disagreements named people
        db.execute("UPDATE disagreements SET oracle = NULL")
    forget_answers_imports(tmp_path / "p")

    with ProjectStore.open(tmp_path / "p") as store:
        again = LabelStudioQueue(store.folder / "labelstudio").import_annotations(export, store=store)
        assert again.disagreements == 0
        assert [(d.kept_class, d.proposed_class) for d in store.disagreements()] == [("cat", "dog")]
