"""Reliability: an answer the store cannot commit during a run (another process holds the write lock past the
busy timeout) ends neither the run nor the session: the person is told plainly that it was not saved and is
asked again, and every answer is saved exactly once.

The terminal oracle and the labeling page (``run --oracle web``), each in a real run; the write lock is held by
a second process (a plain sqlite3 connection in ``BEGIN IMMEDIATE``, as a shell or a backup tool would). The
store's busy timeout is shortened to half a second so the test does not wait ten.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from helpers import answered, pet_image_folder
from metalabel.cli import main
from metalabel.label.oracle import TerminalOracle
from metalabel.project import Project
from metalabel.store import schema

RUN = dict(encoder="pixels", budget=6, per_round=6, generate=False, feedback=False, progress=False)

HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@pytest.fixture
def project(tmp_path, capsys, monkeypatch) -> Path:
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.5)  # a held write lock is "busy" after 0.5 s, not 10 s
    pet_image_folder(tmp_path / "pool", per_folder=4)
    (tmp_path / "seed.csv").write_text("uri,label\ncat/0.png,cat\ndog/1.png,dog\n")
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--labels", str(tmp_path / "seed.csv"),
                 "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path / "p"


class WriteLockHolder:
    """Another process holding project.db's write lock until ``release``."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "project.db")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "holding"

    def release(self) -> None:
        self.process.communicate("\n", timeout=30)
        assert self.process.returncode == 0


def human_labels(folder: Path) -> list[tuple[int, str]]:
    """(question, annotator) of every human label row, superseded or not: an answer saved twice shows twice."""
    with sqlite3.connect(folder / "project.db") as db:
        return db.execute("SELECT question_id, oracle FROM labels WHERE source = 'human' ORDER BY id").fetchall()


def test_a_busy_store_at_the_terminal_asks_the_person_again_and_the_run_goes_on(project):
    holder: WriteLockHolder | None = None
    prompts = 0

    def person(prompt: str) -> str:
        nonlocal holder, prompts
        prompts += 1
        if prompts == 2:  # another process takes the write lock while the second answer is typed
            holder = WriteLockHolder(project)
        elif prompts == 3:  # told that it was not saved, the person answers again once the store is free
            assert holder is not None
            holder.release()
        return "1"

    screen = io.StringIO()
    oracle = TerminalOracle(input=person, console=Console(file=screen, width=300, color_system=None))
    with Project.open(project) as opened:
        result = opened.run(oracle=oracle, **RUN)
    assert result.stopped_because == "budget spent"
    shown = screen.getvalue()
    assert "not saved" in shown and "busy" in shown and "again" in shown, shown[-3000:]
    assert prompts == 7  # six questions, the second asked twice
    assert len(answered(project)) == 6
    labels = human_labels(project)
    assert len(labels) == 6 and len({question for question, _ in labels}) == 6  # each answer saved once


def test_a_busy_store_during_a_run_on_the_page_is_told_and_labeling_goes_on(project):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from metalabel.serve.web import WebOracle
    from test_reliability_page import call

    urls: queue.Queue[str] = queue.Queue()
    seen: list[tuple[int, dict]] = []
    failed: list[BaseException] = []

    def person() -> None:  # a failure on the page's side stops the run instead of leaving it waiting for answers
        url = urls.get(timeout=300)
        try:
            answer_six(url)
        except BaseException as error:
            failed.append(error)
            call(url, "/api/stop", {})

    def answer_six(url: str) -> None:  # the page's side: six answers, the second one while another process holds it
        for number in range(6):
            deadline = time.monotonic() + 120
            while (task := call(url, "/api/state")[1]["task"]) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert task is not None
            if number == 1:
                holder = WriteLockHolder(project)
                try:
                    seen.append(call(url, "/api/answer", {"task": task["id"], "label": "cat"}))
                finally:
                    holder.release()
                assert call(url, "/api/state")[1]["task"]["id"] == task["id"]  # the item still waits on the page
            seen.append(call(url, "/api/answer", {"task": task["id"], "label": "cat"}))

    page = threading.Thread(target=person, daemon=True)
    page.start()
    with Project.open(project) as opened, WebOracle(opened.store, annotator="ann", on_ready=urls.put) as oracle:
        result = opened.run(oracle=oracle, **RUN)
    page.join(timeout=60)
    if failed:
        raise failed[0]
    assert result.stopped_because == "budget spent"
    statuses = [status for status, _ in seen]
    assert statuses == [200, 409, 200, 200, 200, 200, 200], seen
    refused = seen[1][1]["error"]
    assert "not saved" in refused and "busy" in refused, refused
    assert len(answered(project)) == 6
    labels = human_labels(project)
    assert len(labels) == 6 and len({question for question, _ in labels}) == 6
    assert {oracle for _, oracle in labels} == {"web:ann"}


def test_a_stop_that_lands_while_an_answer_waits_on_a_busy_store_says_the_answer_was_not_saved(project, monkeypatch):
    # busy after 2 s: the signal lands well inside the answer's wait (0.3 s), the lock is freed well after that
    # answer was refused (2.6 s) and well before the run's own closing write gives up on it (about 4 s)
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 2.0)
    holder: WriteLockHolder | None = None
    prompts = 0

    def person(prompt: str) -> str:
        nonlocal holder, prompts
        prompts += 1
        if prompts == 2:  # another process holds the store, and SIGTERM comes while this answer waits on it
            holder = WriteLockHolder(project)
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            threading.Timer(2.6, holder.release).start()
        return "1"

    oracle = TerminalOracle(input=person, console=Console(file=io.StringIO(), width=300, color_system=None))
    with Project.open(project) as opened:
        result = opened.run(oracle=oracle, **RUN)
    assert prompts == 2
    assert len(answered(project)) == 1  # the first answer is kept; the second never reached the store
    assert result.stopped_because.startswith("stopped by the oracle; the answer")
    assert "was not saved" in result.stopped_because and "busy" in result.stopped_because
    assert "next run asks it again" in result.stopped_because
