"""Reliability: an answer the labeling page sends again (a retry after its reply was lost, a second tab) is
recognised as the one already saved, never refused as "not saved" and never written twice.

A browser that loses the reply to an answer (a timeout, a dropped connection) cannot know the answer was
committed; the page says "not saved", and the person sends it again. The server must then say it is saved,
not refuse it as if it were lost, and an answer that contradicts the saved one must be refused with what
was saved and how to change it. Real processes: `metalabel serve` over HTTP on localhost, read back from
project.db with a plain SQLite connection.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import pet_image_folder
from metalabel.cli import main
from metalabel.store import ProjectStore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


@pytest.fixture
def project(tmp_path, capsys) -> Path:
    """Three open questions about unlabeled images; classes cat and dog."""
    pet_image_folder(tmp_path / "pool", per_folder=3)
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--quiet"]) == 0
    capsys.readouterr()
    with ProjectStore.open(tmp_path / "p") as store:
        for item in store.items():
            if "/unlabeled/" in item.uri:
                store.ask(item.id, strategy="margin")
    return tmp_path / "p"


@pytest.fixture
def page(project):
    """`metalabel serve` in its own process; yields the page's URL (with its token)."""
    server = subprocess.Popen([sys.executable, "-m", "metalabel.cli", "serve", str(project), "--annotator", "ann",
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert server.stdout is not None
    url = next((found.group(0) for line in server.stdout if (found := re.search(r"http://\S+token=\S+", line))), "")
    try:
        assert url, server.communicate(timeout=30)
        yield url
    finally:
        server.kill()
        server.communicate(timeout=30)


def call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    base, token = url.split("/?token=")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}?token={token}", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answers(project: Path) -> list[tuple[int, str, str]]:
    """(question, class, annotator) of every human label, and of every human disagreement, as stored."""
    with sqlite3.connect(project / "project.db") as db:
        return db.execute("SELECT l.question_id, c.name, l.oracle FROM labels l JOIN classes c ON c.id = l.class_id "
                          "WHERE l.source = 'human' UNION ALL SELECT NULL, c.name, d.oracle FROM disagreements d "
                          "JOIN classes c ON c.id = d.class_id ORDER BY 1").fetchall()


def test_an_answer_sent_again_is_saved_once_and_the_page_hears_it_is_saved(project, page):
    status, state = call(page, "/api/state")
    first = state["task"]["id"]
    assert status == 200 and state["progress"]["done"] == 0
    assert call(page, "/api/answer", {"task": first, "label": "dog"})[0] == 200
    # the reply was lost: the browser sends the same answer again
    status, again = call(page, "/api/answer", {"task": first, "label": "dog"})
    assert status == 200, again
    assert again["progress"]["done"] == 1 and again["task"]["id"] != first  # the page moves on, as after a save
    assert answers(project) == [(first, "dog", "web:ann")]

    # a stale tab sends another class for the saved answer: refused, naming what is saved and how to change it
    status, refused = call(page, "/api/answer", {"task": first, "label": "cat"})
    assert status == 400, refused
    assert "already saved" in refused["error"] and "'dog'" in refused["error"] and "undo" in refused["error"]
    assert answers(project) == [(first, "dog", "web:ann")]
    # the next question is answered as usual
    status, state = call(page, "/api/answer", {"task": again["task"]["id"], "label": "cat"})
    assert status == 200 and state["progress"]["done"] == 2
    assert answers(project) == [(first, "dog", "web:ann"), (again["task"]["id"], "cat", "web:ann")]


def test_a_skip_after_undo_is_refused_not_taken_as_saved_while_the_answer_stays(project, page):
    first = call(page, "/api/state")[1]["task"]["id"]
    assert call(page, "/api/answer", {"task": first, "label": "dog"})[0] == 200
    status, state = call(page, "/api/undo", {})
    assert status == 200 and state["task"]["id"] == first and state["task"]["earlier"] == {"label": "dog"}
    # "can't tell" now: the saved answer cannot be withdrawn (only changed), so the page must not say "saved"
    status, refused = call(page, "/api/answer", {"task": first, "label": None})
    assert status == 400, refused
    assert "'dog'" in refused["error"] and "withdrawn" in refused["error"]
    assert call(page, "/api/state")[1]["task"]["id"] == first  # still on the page, to be answered
    assert answers(project) == [(first, "dog", "web:ann")]
    status, state = call(page, "/api/answer", {"task": first, "label": "dog"})  # kept, as the person chooses
    assert status == 200 and state["progress"]["done"] == 1
    assert answers(project) == [(first, "dog", "web:ann")]


def test_a_busy_store_is_told_to_the_page_and_labeling_goes_on(project, page):
    """Another process (not metalabel: a sqlite3 shell, a backup tool) holds a write transaction past the
    store's busy timeout while an answer is given: the page hears why it was not saved, the session stays up,
    and the same answer given again is saved."""
    first = call(page, "/api/state")[1]["task"]["id"]
    other = sqlite3.connect(project / "project.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        status, refused = call(page, "/api/answer", {"task": first, "label": "dog"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status == 409 and "busy" in refused["error"], refused
    assert answers(project) == []
    status, state = call(page, "/api/state")
    assert status == 200 and state["task"]["id"] == first  # the server is up, and the item still waits
    status, state = call(page, "/api/answer", {"task": first, "label": "dog"})
    assert status == 200 and state["progress"]["done"] == 1
    assert answers(project) == [(first, "dog", "web:ann")]


def test_an_answer_to_a_question_someone_else_answered_meanwhile_is_kept_and_the_page_hears_it(project, page):
    """Another process (the ML backend recording a Label Studio annotation) answers the question on the page
    before the person does: her other class is kept as a disagreement, never dropped, and the page says so
    instead of "saved" (review11: it said saved, and wrote nothing)."""
    first = call(page, "/api/state")[1]["task"]["id"]
    with ProjectStore.open(project) as other:
        other.answer(first, "cat", oracle="labelstudio:bob")
    status, state = call(page, "/api/answer", {"task": first, "label": "dog"})
    assert status == 200 and state["progress"]["done"] == 1, state
    assert "labelstudio:bob" in state["notice"] and "disagreement" in state["notice"]
    assert answers(project) == [(None, "dog", "web:ann"), (first, "cat", "labelstudio:bob")]
    status, state = call(page, "/api/answer", {"task": state["task"]["id"], "label": "cat"})
    assert status == 200 and state["notice"] is None  # her own question: just saved


def test_a_run_on_the_page_that_ends_tells_the_page_labeling_stopped(tmp_path, capsys):
    # before, the page went on saying "waiting for the next questions" until the process was gone
    pet_image_folder(tmp_path / "pool", per_folder=3)
    (tmp_path / "seed.csv").write_text("uri,label\ncat/0.png,cat\ndog/1.png,dog\n")
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--labels",
                 str(tmp_path / "seed.csv"), "--quiet"]) == 0
    capsys.readouterr()
    run = subprocess.Popen([sys.executable, "-m", "metalabel.cli", "run", str(tmp_path / "p"), "--oracle", "web",
                            "--annotator", "ann", "--encoder", "pixels", "--budget", "2", "--per-round", "2",
                            "--no-generate", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.stdout is not None
    try:
        url = next((found.group(0) for line in run.stdout if (found := re.search(r"http://\S+token=\S+", line))), "")
        assert url, run.communicate(timeout=60)
        states = []
        while True:  # answer what is asked; once the budget is spent the page must hear that labeling stopped
            try:
                status, state = call(url, "/api/state")
            except OSError:  # refused or reset: the run is over and its page gone
                break
            states.append(state)
            if state["task"] is not None:
                assert call(url, "/api/answer", {"task": state["task"]["id"], "label": "cat"})[0] == 200
            time.sleep(0.05)
    finally:
        run.kill()
        run.communicate(timeout=60)
    assert sum(state["task"] is not None for state in states) >= 2
    assert states[-1]["stopped"] and states[-1]["task"] is None


def test_an_answer_whose_task_is_not_a_whole_number_is_refused_and_nothing_is_written(project, page):
    first = call(page, "/api/state")[1]["task"]["id"]
    for task in (True, 1.0, str(first), None):  # JSON true would be Python's 1, a task id
        status, reply = call(page, "/api/answer", {"task": task, "label": "cat"})
        assert status == 400 and "an answer is" in reply["error"], (task, reply)
    assert answers(project) == []
    assert call(page, "/api/answer", {"task": first, "label": "cat"})[0] == 200
