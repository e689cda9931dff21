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
import signal
import sys
import threading
import time

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
            time.sleep(0.3)  # the prompt's write is blocked by now
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
            os.read(terminal, 1 << 20)  # the terminal's output resumes (Ctrl-Q)
            stopped_by_signal.wait(10)
            os.close(keyboard)  # the person leaves: the end of input ends labeling in any case

        stopped_by_signal = threading.Event()
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
        assert stopped.value.reason == "by SIGTERM", (stopped.value.reason, time.monotonic() - started)
        assert store.open_questions()[0].id == query.question_id  # nothing answered, the question still open
