"""Reliability: SIGTERM stops labeling at the terminal even when it lands while the prompt is being written.

Python's ``input(prompt)`` flushes stdout itself and discards any exception raised meanwhile, and a signal
handler runs exactly there when the write blocks (a terminal whose output is paused with Ctrl-S, a full
pipe): the stop the handler raised was lost, and labeling went on until the person's next answer or the end
of input. Here stdout is a pipe filled to the brim (nobody reads it until after the signal) and stdin stays
open, as a person who has not typed yet.
"""

from __future__ import annotations

import io
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from metalabel import datasets
from metalabel.label.oracle import OracleStopped, Query, TerminalOracle, put_questions
from metalabel.project import Project

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="needs POSIX")


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: the next write to it blocks until the other end reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}.get(platform.machine())


def main_thread_writing_to(fd: int) -> bool | None:
    """Whether the main thread is blocked in ``write(fd)`` (Linux's /proc: the syscall number, then its first
    argument); None where that cannot be seen."""
    try:
        fields = Path(f"/proc/self/task/{os.getpid()}/syscall").read_text().split()
    except OSError:
        return None
    if WRITE_SYSCALL is None or len(fields) < 2:
        return None
    return fields[0] == str(WRITE_SYSCALL) and int(fields[1], 16) == fd


def test_sigterm_while_the_prompt_cannot_be_written_stops_labeling(tmp_path, monkeypatch):
    pool_file = tmp_path / "reviews.csv"
    pool_file.write_text("text,label\ngreat phone,pos\nbroke in a day,neg\nbattery died,\n", encoding="utf-8")
    with Project.create(tmp_path / "reviews", pool=datasets.read_text(pool_file)) as project:
        store = project.store
        item = store.items()[2]
        query = Query(store.ask(item.id, strategy="margin"), item.id, item.uri, "battery died", ["pos", "neg"])

        terminal, stdout = full_pipe()
        typed, keyboard = os.pipe()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(io.FileIO(stdout, "w"))))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.FileIO(typed, "r"))))
        default = signal.getsignal(signal.SIGTERM)

        def outside_world() -> None:
            deadline = time.monotonic() + 60
            while signal.getsignal(signal.SIGTERM) == default and time.monotonic() < deadline:
                time.sleep(0.01)  # the stop is sent only once labeling handles it (else it would end pytest)
            # the stop lands while the prompt's write is blocked: seen where Linux shows it, else after a while
            while main_thread_writing_to(stdout) is False and time.monotonic() < deadline:
                time.sleep(0.01)
            blocked.append(main_thread_writing_to(stdout))
            if blocked[0] is None:
                time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
            os.read(terminal, 1 << 20)  # the terminal's output resumes (Ctrl-Q)
            stopped_by_signal.wait(10)
            os.close(keyboard)  # the person leaves: the end of input ends labeling in any case

        stopped_by_signal = threading.Event()
        blocked: list[bool | None] = []
        world = threading.Thread(target=outside_world, daemon=True)
        world.start()
        started = time.monotonic()
        try:
            with pytest.raises(OracleStopped) as stopped:
                put_questions(store, TerminalOracle(console=Console(file=io.StringIO())), [query])
        finally:
            stopped_by_signal.set()
            world.join(timeout=30)
            sys.stdout.close()
            os.close(terminal)
        assert blocked[0] is not False, "the prompt's write never blocked: the test did not reach its case"
        assert stopped.value.reason == "by SIGTERM", (stopped.value.reason, time.monotonic() - started)
        assert store.open_questions()[0].id == query.question_id  # nothing answered, the question still open
