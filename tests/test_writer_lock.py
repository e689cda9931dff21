"""One writer per project: the lock file, stale-lock recovery, and two real processes on one project."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from metalabel.cli import main
from metalabel.errors import ProjectLockedError
from metalabel.project import Project
from metalabel.store.lock import LOCK_FILENAME, WriterLock


@pytest.fixture
def project_folder(tmp_path):
    """A 12-image project (cat, dog seeded; the pool's folders are the simulated oracle's answers)."""
    rng = np.random.default_rng(0)
    for folder, shade in (("cat", 40), ("dog", 200)):
        (tmp_path / "pool" / folder).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(shade, 20, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pool" / folder / f"{i}.png")
    seed = tmp_path / "seed.csv"
    seed.write_text("uri,label\ncat/0.png,cat\ndog/0.png,dog\n")
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--labels", str(seed), "--quiet"]) == 0
    return tmp_path / "p"


HOLDER = textwrap.dedent("""
    import sys, time
    from metalabel.project import Project

    project = Project.open(sys.argv[1])
    with project.writer_lock(command="metalabel run (held by the test)"):
        round_id = project.store.start_round({"held": True})   # a live round, as a run has
        print(round_id, flush=True)
        time.sleep(300)
""")

SLOW_RUN = textwrap.dedent("""
    import os, sys, time
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    class SlowOracle(SimulatedOracle):
        given = 0

        def answer(self, questions):
            answers = []
            for query in questions:       # a person answering one question after the other
                time.sleep(0.4)
                self.given += 1
                # the second round's first answer waits for the test to have tried a second run
                deadline = time.monotonic() + 120
                while self.given == 3 and not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                answers.append(super().answer([query])[0])
            return answers

    with Project.open(sys.argv[1]) as project:
        pool = project.load_pool()
        gold = {uri: pool.class_names[label] for uri, label in zip(pool.uris, pool.labels)}
        result = project.run(oracle=SlowOracle(gold), encoder="pixels", budget=6, per_round=2, max_rounds=4,
                             project_meta_steps=0, progress=False, seed=0, generate=False)
        print("stopped:", result.stopped_because, flush=True)
""")


def cli_run(folder, *extra):
    command = [sys.executable, "-m", "metalabel.cli", "run", str(folder), "--oracle", "simulated", "--encoder",
               "pixels", "--budget", "2", "--per-round", "2", "--max-rounds", "2", "--no-generate", "--quiet", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def round_statuses(folder):
    with sqlite3.connect(folder / "project.db") as db:
        return [row[0] for row in db.execute("SELECT status FROM rounds ORDER BY id")]


def answered(folder):
    with sqlite3.connect(folder / "project.db") as db:
        return db.execute("SELECT count(*) FROM questions WHERE answered_at IS NOT NULL").fetchone()[0]


def test_a_second_writer_is_refused_by_name_and_a_released_lock_is_free(tmp_path):
    first, second = WriterLock(tmp_path), WriterLock(tmp_path)
    first.acquire(command="metalabel run p")
    first.acquire()  # re-entrant for its holder
    with pytest.raises(ProjectLockedError, match=rf"process {os.getpid()} `metalabel run p` since .*one writer"):
        second.acquire()
    first.release()
    assert first.held  # still held once
    with pytest.raises(ProjectLockedError):
        second.acquire()
    first.release()
    assert not first.held
    with second:  # free again
        assert (tmp_path / LOCK_FILENAME).read_text()
    assert (tmp_path / LOCK_FILENAME).read_text() == ""  # a released lock names nobody


def test_a_killed_holders_lock_is_free_again(project_folder):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project_folder)], stdout=subprocess.PIPE, text=True)
    try:
        live_round = int(holder.stdout.readline())
        with Project.open(project_folder) as project:
            with pytest.raises(ProjectLockedError, match=rf"process {holder.pid} `metalabel run \(held by the test\)`"):
                project.add_new_items()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The lock file still names the dead holder, but the kernel dropped its flock: no cleanup needed.
    assert str(holder.pid) in (project_folder / LOCK_FILENAME).read_text()
    with Project.open(project_folder) as project, project.writer_lock():
        assert [r.status for r in project.store.rounds() if r.id == live_round] == ["running"]


def test_the_cli_run_is_refused_while_another_process_writes_and_changes_nothing(project_folder):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project_folder)], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        db_before = (project_folder / "project.db").read_bytes()
        refused = cli_run(project_folder)
        assert refused.returncode == 2, refused.stderr
        message = " ".join(refused.stderr.split())
        assert f"process {holder.pid}" in message and "held by the test" in message and "one writer" in message
        assert "Traceback" not in refused.stderr
        # The holder's live round was not marked failed, and nothing was asked or written.
        assert round_statuses(project_folder) == ["running"]
        assert (project_folder / "project.db").read_bytes() == db_before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    ran = cli_run(project_folder)  # the holder is dead: its lock is free
    assert ran.returncode == 0, ran.stderr
    assert round_statuses(project_folder)[0] == "failed"  # the dead run's round, now closed by the new run


def test_two_runs_at_once_the_second_fails_clearly_and_the_first_finishes_untouched(project_folder, tmp_path):
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    release = tmp_path / "release"  # the first run's second round waits for it: the two surely overlap
    first = subprocess.Popen([sys.executable, str(script), str(project_folder), str(release)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while answered(project_folder) < 1 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second = cli_run(project_folder)
        assert first.poll() is None  # the test really ran the two at once
        release.touch()
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 2
    message = " ".join(second.stderr.split())
    assert f"process {first.pid}" in message and "slow_run.py" in message and "one writer" in message
    assert first.returncode == 0, err
    assert "stopped:" in out
    statuses = round_statuses(project_folder)
    assert statuses and set(statuses) == {"finished"}  # no round of the first run was marked failed
    with sqlite3.connect(project_folder / "project.db") as db:
        asked = [row[0] for row in db.execute("SELECT item_id FROM questions")]
    assert len(asked) == len(set(asked)) == answered(project_folder) == 6


def test_the_holders_name_is_shown_with_control_codes_escaped(tmp_path):
    (tmp_path / LOCK_FILENAME).write_text('{"pid": 1, "command": "run \\u001b[2J evil", "since": "x"}')
    from metalabel.store.lock import read_holder

    assert read_holder(tmp_path / LOCK_FILENAME).command == "run \\x1b[2J evil"
