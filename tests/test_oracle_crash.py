"""Killing a real `metalabel` process loses no answer given: the terminal and Label Studio oracles.

Mirrors the SIGKILL test of the simulated oracle in test_pipeline.py, on real processes:
`metalabel run --oracle terminal` fed answers through a pipe and killed (SIGKILL) or told
to stop (SIGTERM, SIGHUP) after 5 of 6 answers; `metalabel import-answers` killed while
it writes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from helpers import answered, pet_image_folder
from metalabel.cli import main

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture
def project(tmp_path, capsys):
    pet_image_folder(tmp_path / "pool", per_folder=4)
    (tmp_path / "seed.csv").write_text("uri,label\ncat/0.png,cat\ndog/1.png,dog\n")
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--labels", str(tmp_path / "seed.csv"),
                 "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path / "p"


def wait_for(condition, *, process, seconds=180.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    return condition()


def run_terminal(folder, **popen):
    command = [sys.executable, "-m", "metalabel.cli", "run", str(folder), "--oracle", "terminal", "--encoder",
               "pixels", "--budget", "6", "--per-round", "6", "--no-generate", "--no-feedback", "--quiet"]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


class Screen:
    """What a running process has written to stdout and stderr so far, read as it comes (the pipes never fill)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.parts: dict[str, list[str]] = {"out": [], "err": []}
        self.readers = [threading.Thread(target=self._read, args=(stream, self.parts[name]), daemon=True)
                        for name, stream in (("out", process.stdout), ("err", process.stderr))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
            into.append(chunk.decode(errors="replace"))

    @property
    def out(self) -> str:
        return "".join(self.parts["out"])

    @property
    def err(self) -> str:
        return "".join(self.parts["err"])

    def finish(self, timeout: float = 60) -> tuple[str, str]:
        """Close stdin (the person walks away), wait for the process, and return all it wrote."""
        self.process.stdin.close()
        self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        return self.out, self.err


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM", "SIGHUP"])
def test_terminal_answers_survive_a_kill_after_five_of_six(project, signame):
    person = run_terminal(project)
    screen = Screen(person)
    person.stdin.write("1\n" * 5)  # five answers typed; the sixth question waits for the person
    person.stdin.flush()

    def sixth_question_waits() -> bool:  # its prompt is out: the process is blocked reading the answer
        out = screen.out
        return "question 6 of 6" in out and "label>" in out.rsplit("question 6 of 6", 1)[1]

    # not a fixed sleep: on a loaded machine the sixth question may not be on screen yet, and a signal
    # that lands while it is drawn tests something else (and can print "Exception ignored" tracebacks)
    waited = wait_for(lambda: len(answered(project)) >= 5 and sixth_question_waits(), process=person)
    assert waited, (person.poll(), screen.out[-2000:], screen.err[-2000:])
    person.send_signal(getattr(signal, signame))
    out, err = screen.finish()
    seen = (person.returncode, out[-2000:], err[-2000:])  # every check below says what the process said
    given = answered(project)
    assert len(given) == 5, seen  # every answer typed is on disk, none more
    with sqlite3.connect(project / "project.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        open_questions = db.execute("SELECT count(*) FROM questions WHERE answered_at IS NULL").fetchone()[0]
        statuses = [row[0] for row in db.execute("SELECT status FROM rounds")]
    assert open_questions == 1, seen  # the sixth, still to be asked
    if signame == "SIGKILL":
        assert person.returncode == -signal.SIGKILL, seen
    else:  # a clean stop: the loop ends, says so, and records the round as stopped
        assert person.returncode == 0, seen
        assert "Traceback" not in err and "stopped" in out, seen
        assert statuses and statuses[-1] == "failed", (statuses, seen)

    # the next run asks the open question first, and nothing twice
    rerun = run_terminal(project)
    out, err = rerun.communicate("1\n", timeout=300)
    assert rerun.returncode in (0, 2), err[-2000:]
    after = answered(project)
    assert len(after) == 6 and all(after[qid] == label for qid, label in given.items())
    with sqlite3.connect(project / "project.db") as db:
        asked = [row[0] for row in db.execute("SELECT item_id FROM questions")]
    assert len(asked) == len(set(asked))


IMPORTER = textwrap.dedent("""
    import sys, time
    from metalabel.store import ProjectStore
    from metalabel.label.oracle import LabelStudioQueue

    slow_answer = ProjectStore.answer
    def answer(self, *args, **kwargs):   # a big import: the kill lands while it writes
        write = slow_answer(self, *args, **kwargs)
        print("wrote", flush=True)
        time.sleep(0.2)
        return write
    ProjectStore.answer = answer

    with ProjectStore.open(sys.argv[1]) as store:
        LabelStudioQueue(store.folder / "labelstudio").import_annotations(sys.argv[2], store=store)
""")


def test_a_label_studio_import_killed_while_it_writes_leaves_nothing_half_done(project, tmp_path, capsys):
    assert main(["run", str(project), "--oracle", "labelstudio", "--encoder", "pixels", "--budget", "6",
                 "--per-round", "6", "--no-generate", "--no-feedback", "--quiet"]) == 0
    capsys.readouterr()
    [tasks_file] = (project / "labelstudio").glob("tasks-*.json")
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 6
    export = [{**task, "id": i, "annotations": [{"was_cancelled": False, "completed_by": {"email": "a@b.c"},
               "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                           "value": {"choices": ["cat"]}}]}]} for i, task in enumerate(tasks)]
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(export))
    script = tmp_path / "importer.py"
    script.write_text(IMPORTER)

    importer = subprocess.Popen([sys.executable, str(script), str(project), str(export_file)],
                                stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # three answers written inside the import's transaction
        assert importer.stdout.readline().strip() == "wrote"
    importer.send_signal(signal.SIGKILL)
    importer.wait()
    assert answered(project) == {}  # all or nothing: nothing
    with sqlite3.connect(project / "project.db") as db:
        assert db.execute("SELECT count(*) FROM questions WHERE answered_at IS NULL").fetchone()[0] == 6

    assert main(["import-answers", str(project), str(export_file)]) == 0  # the same file again: all of it
    assert "6 answers recorded" in capsys.readouterr().out
    assert len(answered(project)) == 6
