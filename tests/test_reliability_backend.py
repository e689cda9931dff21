"""Reliability: an annotation the Label Studio ML backend cannot record now is kept, said so where a person
sees it, and recorded later as what it was.

While a run holds the project, the backend refuses each webhook (409) and keeps the annotation in a file.
Label Studio shows no webhook failure to its annotators, so the backend's console is where the person who
started it learns of it; and the command it names must record the annotation with its meaning: a changed
annotation (``ANNOTATION_UPDATED``) is the annotator's changed answer, not a disagreement with themselves.
Real processes: ``metalabel ml-backend`` over HTTP on localhost, the run's lock held by another process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import pet_image_folder
from metalabel.cli import main
from metalabel.label.labelstudio import QuestionIdentity, choices_task
from metalabel.label.oracle import project_identity
from metalabel.store import ProjectStore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

PASSWORD = "s3cret-for-tests"
AUTH = "Basic " + base64.b64encode(f"metalabel:{PASSWORD}".encode()).decode()


@pytest.fixture
def project(tmp_path, capsys) -> Path:
    """An image project with one open question (item 3) that Label Studio's annotator 7 answers."""
    pet_image_folder(tmp_path / "pool", per_folder=4)
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--quiet"]) == 0
    capsys.readouterr()
    with ProjectStore.open(tmp_path / "p") as store:
        store.ask(unlabeled(store, "3").id, strategy="margin")
    return tmp_path / "p"


def unlabeled(store: ProjectStore, name: str):
    return next(i for i in store.items() if i.uri.endswith(f"unlabeled/{name}.png"))


def question_task(store: ProjectStore) -> dict:
    """The open question's task as Label Studio holds it (metalabel's task plus Label Studio's id and project)."""
    [question] = store.open_questions()
    shown = unlabeled(store, "3")
    identity = QuestionIdentity(question.id, shown.id, shown.uri, shown.content_hash, project_identity(store))
    return {"id": 21, "project": 1, **choices_task("image", "data:image/png;base64,AAAA", question=identity)}


def webhook(action: str, task: dict, choice: str) -> bytes:
    annotation = {"id": 11, "completed_by": 7, "task": task["id"], "project": 1, "was_cancelled": False,
                  "result": [{"id": "r1", "from_name": "label", "to_name": "image", "type": "choices",
                              "origin": "manual", "value": {"choices": [choice]}}],
                  "created_at": "2026-12-05T10:00:00.000000Z", "updated_at": "2026-12-05T10:05:00.000000Z"}
    return json.dumps({"action": action, "annotation": annotation, "task": task, "project": {"id": 1}}).encode()


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Authorization": AUTH,
                                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def every_row(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "project.db") as db:
        return list(db.iterdump())


def hold_the_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the project's writer lock, as `metalabel run` does, until its stdin closes."""
    script = textwrap.dedent(f"""
        import sys
        from metalabel.store.lock import WriterLock
        lock = WriterLock({str(folder)!r})
        lock.acquire(command="metalabel run (another process)")
        print("held", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


class Backend:
    """`metalabel ml-backend` in its own process, and its URL; ``stop`` returns what it wrote on its console."""

    def __init__(self, project: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metalabel.cli", "ml-backend", str(project), "--port", "0"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "METALABEL_ML_BACKEND_PASSWORD": PASSWORD})
        assert self.process.stdout is not None
        self.url = next((found.group(0) for line in self.process.stdout
                         if (found := re.search(r"http://127\.0\.0\.1:\d+", line))), "")
        assert self.url, self.stop()

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.communicate(timeout=30)[1] or ""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def backend(project):
    started = Backend(project)
    yield started
    started.stop()


def refused_while_a_run_holds_the_project(project: Path, url: str, body: bytes) -> dict:
    holder = hold_the_lock(project)
    try:
        status, refused = post(url + "/webhook", body)
    finally:
        holder.communicate(input="", timeout=30)
    assert status == 409 and "metalabel run (another process)" in refused["error"]
    return refused


def test_a_changed_annotation_refused_during_a_run_is_told_on_the_console_and_recorded_later_as_a_change(
        project, backend):
    url = backend.url
    with ProjectStore.open(project) as store:
        task = question_task(store)
    assert post(url + "/webhook", webhook("ANNOTATION_CREATED", task, "dog"))[0] == 201
    refused = refused_while_a_run_holds_the_project(project, url, webhook("ANNOTATION_UPDATED", task, "cat"))
    [command] = re.findall(r"`(metalabel import-answers [^`]+)`", refused["error"])
    # the person who started the backend is told, on its console, what was not recorded and how to record it
    console = backend.stop()
    assert command in console and "not recorded" in console, console
    with ProjectStore.open(project) as store:
        [label] = [label for label in store.active_labels() if label.item_id == unlabeled(store, "3").id]
        assert (label.class_name, label.oracle) == ("dog", "labelstudio:7")  # nothing written while refused

    assert main(shlex.split(command)[1:]) == 0  # the command as named
    with ProjectStore.open(project) as store:
        history = store.label_history(unlabeled(store, "3").id)
        # the annotator's changed answer is the label; the first stays in the history; no disagreement with herself
        assert [(label.class_name, label.oracle, label.active) for label in history] == [
            ("dog", "labelstudio:7", False), ("cat", "labelstudio:7", True)]
        assert store.disagreements() == []


def test_status_names_every_annotation_the_backend_kept_but_did_not_record_until_it_is(project, backend, capsys):
    url = backend.url
    with ProjectStore.open(project) as store:
        task = question_task(store)
    refused_while_a_run_holds_the_project(project, url, webhook("ANNOTATION_CREATED", task, "dog"))
    [kept] = (project / "labelstudio" / "webhook").glob("*.json")
    capsys.readouterr()
    assert main(["status", str(project)]) == 0
    warning = capsys.readouterr().err
    assert "1 Label Studio annotations the ML backend kept are not recorded" in warning and kept.name in warning
    assert main(["status", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unrecorded_annotations"] == [str(kept)]

    assert main(["import-answers", str(project), str(kept)]) == 0
    # recorded now, and an annotation the backend records at once is never listed
    assert post(url + "/webhook", webhook("ANNOTATION_UPDATED", task, "cat"))[0] == 201
    capsys.readouterr()
    assert main(["status", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unrecorded_annotations"] == []
    assert len(list((project / "labelstudio" / "webhook").glob("*.json"))) == 2  # both files are still kept


def test_an_import_while_another_process_writes_is_refused_whole_and_the_same_command_records_it_after(
        project, capsys):
    with ProjectStore.open(project) as store:
        task = question_task(store)
    export = project.parent / "export.json"
    export.write_text(json.dumps([{**task, "annotations": [json.loads(webhook("ANNOTATION_CREATED", task, "dog"))
                                                           ["annotation"]]}]))
    before = every_row(project)
    holder = hold_the_lock(project)
    try:
        assert main(["import-answers", str(project), str(export)]) == 2
    finally:
        holder.communicate(input="", timeout=30)
    refused = capsys.readouterr().err
    assert "metalabel run (another process)" in refused and "wait for it to finish" in refused
    assert every_row(project) == before
    assert main(["import-answers", str(project), str(export)]) == 0
    with ProjectStore.open(project) as store:
        [label] = [label for label in store.active_labels() if label.item_id == unlabeled(store, "3").id]
        assert (label.class_name, label.source, label.oracle) == ("dog", "human", "labelstudio:7")


def test_what_a_run_made_the_backend_keep_is_recorded_in_order_before_the_next_annotation(project, backend):
    with ProjectStore.open(project) as store:
        task = question_task(store)
        other = store.ask(unlabeled(store, "2").id, strategy="margin")
        shown = unlabeled(store, "2")
        identity = QuestionIdentity(other, shown.id, shown.uri, shown.content_hash, project_identity(store))
        later_task = {"id": 22, "project": 1, **choices_task("image", "data:image/png;base64,AAAA",
                                                             question=identity)}
    holder = hold_the_lock(project)
    try:  # the annotator answers, then changes her mind, while a run holds the project
        assert post(backend.url + "/webhook", webhook("ANNOTATION_CREATED", task, "dog"))[0] == 409
        assert post(backend.url + "/webhook", webhook("ANNOTATION_UPDATED", task, "cat"))[0] == 409
    finally:
        holder.communicate(input="", timeout=30)
    assert len(list((project / "labelstudio" / "webhook").glob("*.json"))) == 2
    # the run is over; the next annotation arrives, and what was kept is recorded first, in order
    status, recorded = post(backend.url + "/webhook", webhook("ANNOTATION_CREATED", later_task, "dog"))
    assert status == 201 and recorded["answered"] == 1, recorded
    with ProjectStore.open(project) as store:
        history = store.label_history(unlabeled(store, "3").id)
        assert [(label.class_name, label.oracle, label.active) for label in history] == [
            ("dog", "labelstudio:7", False), ("cat", "labelstudio:7", True)]  # her answer, then her change
        assert store.disagreements() == []
        assert [label.class_name for label in store.active_labels() if label.item_id == shown.id] == ["dog"]


def test_import_answers_kept_records_every_kept_annotation_and_names_one_it_cannot(project, capsys):
    with ProjectStore.open(project) as store:
        task = question_task(store)
    with Backend(project) as backend:  # the backend stops (the annotations stay kept) before the import
        holder = hold_the_lock(project)
        try:
            assert post(backend.url + "/webhook", webhook("ANNOTATION_CREATED", task, "dog"))[0] == 409
            assert post(backend.url + "/webhook", webhook("ANNOTATION_UPDATED", task, "cat"))[0] == 409
            # another annotator's, with a class the project lacks: kept too, and refused when it is recorded
            assert post(backend.url + "/webhook", webhook("ANNOTATION_CREATED", task, "fox"))[0] == 409
        finally:
            holder.communicate(input="", timeout=30)
    capsys.readouterr()
    assert main(["import-answers", str(project), "--kept"]) == 2  # one is refused: said, and it stays kept
    out, err = capsys.readouterr()
    assert "2 kept annotations recorded" in out and "'fox' is not one of the project's classes" in err
    with ProjectStore.open(project) as store:
        [label] = [label for label in store.active_labels() if label.item_id == unlabeled(store, "3").id]
        assert (label.class_name, label.oracle) == ("cat", "labelstudio:7")
    assert main(["status", str(project), "--json"]) == 0
    [left] = json.loads(capsys.readouterr().out)["unrecorded_annotations"]
    assert "-created-" in left
    assert main(["import-answers", str(project), "x.json", "--kept"]) == 2  # a file or --kept, not both


def test_an_annotation_deleted_in_label_studio_is_said_on_the_console_and_its_answer_kept(project, backend):
    with ProjectStore.open(project) as store:
        task = question_task(store)
    assert post(backend.url + "/webhook", webhook("ANNOTATION_CREATED", task, "dog"))[0] == 201
    deleted = json.dumps({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 11}], "project": {"id": 1}})
    status, reply = post(backend.url + "/webhook", deleted.encode())
    assert status == 200 and reply["status"] == "ignored"
    console = backend.stop()
    assert "deleted an annotation (ANNOTATIONS_DELETED)" in console and "stays in the project" in console, console
    with ProjectStore.open(project) as store:  # the person's answer is not withdrawn by it
        [label] = [label for label in store.active_labels() if label.item_id == unlabeled(store, "3").id]
        assert (label.class_name, label.source) == ("dog", "human")
