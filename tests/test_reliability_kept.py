"""Reliability: the annotations the Label Studio ML backend kept (a run held the project) are recorded in the
order they came, and what stops them is said.

A busy store stops the replay at the first file it cannot take (a later update must not go in before the
answer it changes); files kept within one tick of the file system's clock keep their order; a kept file that
is refused is said once on the backend's console, not never and not at every webhook. Real SQLite projects,
the backend's own webhook handling, and Label Studio's webhook payload shape.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from metalabel.cli import main
from metalabel.errors import ProjectLockedError
from metalabel.label.oracle import LabelStudioQueue, Query, put_questions, unrecorded_annotations
from metalabel.store import ItemRecord, ProjectStore, schema
from metalabel.store.lock import WriterLock

pytest.importorskip("starlette")
pytest.importorskip("httpx")  # starlette's TestClient
from starlette.testclient import TestClient  # noqa: E402

from metalabel.serve.ml_backend import create_backend_app, record_annotation  # noqa: E402

CLASSES = ("cat", "dog", "bird")
PASSWORD = "s3cret-for-tests"
AUTH = "Basic " + base64.b64encode(f"metalabel:{PASSWORD}".encode()).decode()


@pytest.fixture
def project(tmp_path) -> tuple[Path, list[dict]]:
    """A project with a question about each of two items, put to Label Studio: its folder and the tasks."""
    folder = tmp_path / "p"
    with ProjectStore.create(folder, name="pets") as store:
        store.set_classes(CLASSES)
        store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(2))
        queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, f"text {item.uri}", CLASSES)
                   for item in store.items()]
        put_questions(store, LabelStudioQueue(tmp_path / "queue"), queries)
    [tasks_file] = (tmp_path / "queue").glob("tasks-*.json")
    tasks = [{"id": 21 + n, "project": 1, **task} for n, task in enumerate(json.loads(tasks_file.read_text()))]
    return folder, tasks


def webhook(action: str, task: dict, who: int, choice: str, minute: int) -> dict:
    """Label Studio's webhook payload for one annotation (annotator ``who``'s, one a task and person)."""
    annotation = {"id": 100 * task["id"] + who, "completed_by": who, "task": task["id"], "project": 1,
                  "was_cancelled": False,
                  "result": [{"id": "r1", "from_name": "label", "to_name": "text", "type": "choices",
                              "origin": "manual", "value": {"choices": [choice]}}],
                  "created_at": "2026-12-05T10:00:00.000000Z", "updated_at": f"2026-12-05T10:{minute:02d}:00.000000Z"}
    return {"action": action, "annotation": annotation, "task": task, "project": {"id": 1}}


def kept_while_a_run_holds_the_project(folder: Path, payloads: list[dict]) -> list[Path]:
    """Send each to the backend while another writer holds the project: each is refused and kept. The kept files,
    in the order they came."""
    lock = WriterLock(folder)
    lock.acquire(command="metalabel run (another writer)")
    kept: list[Path] = []
    try:
        for payload in payloads:
            with ProjectStore.open(folder) as store, pytest.raises(ProjectLockedError):
                record_annotation(store, payload)
            [new] = set((folder / "labelstudio" / "webhook").glob("*.json")) - set(kept)
            kept.append(new)
    finally:
        lock.release()
    return kept


def history(folder: Path, position: int) -> list[tuple[str, str | None]]:
    with ProjectStore.open(folder) as store:
        return [(label.class_name, label.oracle) for label in store.label_history(store.items()[position].id)]


def test_updates_kept_in_one_tick_of_the_file_systems_clock_are_recorded_in_the_order_they_came(project):
    folder, tasks = project
    classes = ["cat", "dog", "bird", "cat", "dog", "bird", "cat", "dog"]
    kept = kept_while_a_run_holds_the_project(folder, [
        webhook("ANNOTATION_CREATED" if n == 0 else "ANNOTATION_UPDATED", tasks[0], 7, choice, n)
        for n, choice in enumerate(classes)])
    for path in kept:  # one timestamp for all (a coarse clock, or a copy that did not keep them)
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == kept
    assert main(["import-answers", str(folder), "--kept"]) == 0
    # each change applied after the one before it: her last is the label
    assert history(folder, 0) == [(choice, "labelstudio:7") for choice in classes]


def test_a_busy_store_stops_recording_kept_annotations_at_the_first_and_keeps_the_rest_in_order(
        project, monkeypatch, capsys):
    folder, tasks = project
    kept = kept_while_a_run_holds_the_project(folder, [
        webhook("ANNOTATION_CREATED", tasks[0], 7, "cat", 1),
        webhook("ANNOTATION_UPDATED", tasks[0], 7, "dog", 2),
        webhook("ANNOTATION_CREATED", tasks[1], 8, "bird", 3)])
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.3)  # a held write lock is "busy" after 0.3 s, not 10 s
    holder = sqlite3.connect(folder / "project.db", isolation_level=None)  # another process writing, past the timeout
    holder.execute("BEGIN IMMEDIATE")
    try:
        capsys.readouterr()
        assert main(["import-answers", str(folder), "--kept"]) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, err = capsys.readouterr()
    err = " ".join(err.split())
    assert "0 kept annotations recorded" in out
    # it stopped at the first: the update was not tried (nor waited for) before the answer it changes
    assert f"stopped at {kept[0]}" in err and "is busy" in err and "the 2 kept after it are left" in err, err
    assert kept[1].name not in err and kept[2].name not in err and "not recorded" not in err
    assert history(folder, 0) == []
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == kept

    assert main(["import-answers", str(folder), "--kept"]) == 0  # the store is free: all of them, in order
    assert history(folder, 0) == [("cat", "labelstudio:7"), ("dog", "labelstudio:7")]
    assert history(folder, 1) == [("bird", "labelstudio:8")]


def test_a_kept_annotation_that_is_refused_is_said_once_on_the_backends_console(project, caplog):
    folder, tasks = project
    [refused] = kept_while_a_run_holds_the_project(folder, [webhook("ANNOTATION_CREATED", tasks[0], 7, "fox", 1)])
    client = TestClient(create_backend_app(folder, password=PASSWORD),
                        headers={"Authorization": AUTH})
    with caplog.at_level(logging.WARNING, logger="metalabel.serve.ml_backend"):
        # two later annotations: each replays what was kept first; the refused one is told the first time
        assert client.post("/webhook", json=webhook("ANNOTATION_CREATED", tasks[1], 8, "bird", 2)).status_code == 201
        assert client.post("/webhook", json=webhook("ANNOTATION_UPDATED", tasks[1], 8, "dog", 3)).status_code == 201
    told = [record.getMessage() for record in caplog.records if "kept annotation is refused" in record.getMessage()]
    assert len(told) == 1 and "'fox' is not one of the project's classes" in told[0], caplog.text
    assert f"metalabel import-answers {folder} --kept" in told[0]
    assert history(folder, 1) == [("bird", "labelstudio:8"), ("dog", "labelstudio:8")]
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == [refused]


def test_a_kept_annotation_the_store_refuses_for_good_does_not_hold_back_the_ones_after_it(project, monkeypatch):
    # A refusal that would recur (here the store's own "already has a person's answer", which a reviewed task can
    # meet) is that file's; only a store that cannot be written just now (busy, full) stops the replay.
    from metalabel.errors import StoreError
    from metalabel.label.oracle import record_kept_annotations

    folder, tasks = project
    kept = kept_while_a_run_holds_the_project(folder, [webhook("ANNOTATION_CREATED", tasks[0], 7, "cat", 1),
                                                       webhook("ANNOTATION_CREATED", tasks[1], 8, "bird", 2)])
    real_import = LabelStudioQueue.import_annotations

    def import_annotations(self, path, **kwargs):
        if path == kept[0]:
            raise StoreError("item 1 ('pool/0.txt') already has a person's answer; a person is not asked twice")
        return real_import(self, path, **kwargs)

    monkeypatch.setattr(LabelStudioQueue, "import_annotations", import_annotations)
    with ProjectStore.open(folder) as store:
        result = record_kept_annotations(store)
        assert result.stopped is None and [path for path, _ in result.refused] == [kept[0]]
        assert [path for path, _ in result.recorded] == [kept[1]]
        assert unrecorded_annotations(store) == [kept[0]]  # still kept, and listed
    assert history(folder, 1) == [("bird", "labelstudio:8")]


def test_a_kept_file_that_is_a_link_is_recorded_once_and_then_no_longer_listed(project, tmp_path):
    # a kept annotation moved elsewhere (a fuller disk) and linked back: its record names the file it links to,
    # as every file's record names the file itself; once recorded it is neither listed nor replayed again
    folder, tasks = project
    [kept] = kept_while_a_run_holds_the_project(folder, [webhook("ANNOTATION_CREATED", tasks[0], 7, "cat", 1)])
    moved = tmp_path / "elsewhere" / kept.name
    moved.parent.mkdir()
    kept.rename(moved)
    kept.symlink_to(moved)
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == [kept]
    assert main(["import-answers", str(folder), "--kept"]) == 0
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == []
        assert len(store.artifacts(kind="answers-import")) == 1
    assert history(folder, 0) == [("cat", "labelstudio:7")]


def test_a_kept_file_still_being_written_is_not_taken_for_a_kept_annotation(project):
    # the backend writes each kept file under a temporary name beside it and renames it (write_atomically); a
    # replay or `metalabel status` in another process that lists the folder meanwhile must not take that half-
    # written file for an annotation (nor fail when the rename takes it away before its time is read)
    folder, tasks = project
    [kept] = kept_while_a_run_holds_the_project(folder, [webhook("ANNOTATION_CREATED", tasks[0], 7, "cat", 1)])
    being_written = kept.with_name(f".{kept.stem}.4242-0a1b2c3d.tmp.json")
    being_written.write_text(kept.read_text()[:20])
    with ProjectStore.open(folder) as store:
        assert unrecorded_annotations(store) == [kept]
