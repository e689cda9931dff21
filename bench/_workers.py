"""The worker pool the benchmark scripts share: one process per data set, a few at a time.

A script runs itself again as ``python SCRIPT ARGS --worker NAME`` for each data set, at most
``jobs`` at once, each limited to ``threads`` BLAS / OpenMP threads, and rebuilds its report
between polls so a run cut short still leaves a table of what finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def add_pool_options(parser: argparse.ArgumentParser) -> None:
    """The options of a script with a worker pool: threads and jobs, resuming, and rebuilding the report."""
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="data sets run in parallel processes")
    parser.add_argument("--resume", action="store_true", help="keep finished cells of the partial files")
    parser.add_argument("--report", action="store_true", help="only rebuild the JSON and table from partial files")
    parser.add_argument("--notes", type=Path, help="with --report: a markdown file whose text ends the table")
    parser.add_argument("--command", help="with --report: the command(s) that made the partial files")
    parser.add_argument("--run-time", help="with --report: the wall time those commands took")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def run_workers(script: str, argv: Sequence[str], names: Sequence[str], *, jobs: int, threads: int,
                poll_seconds: float, on_poll: Callable[[str], None]) -> None:
    """Run ``script argv --worker NAME`` for every name, ``jobs`` at a time.

    Calls ``on_poll(run_time)`` after each poll.

    ``run_time`` is the wall time so far, e.g. ``"3.2 min wall (data sets in 2 processes)"``. A worker
    that fails is reported and the others go on.
    """
    started = time.perf_counter()
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    base = [sys.executable, script, *argv]
    pending = list(names)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            running.append((name, subprocess.Popen([*base, "--worker", name], env=env)))
        time.sleep(poll_seconds)
        for name, process in list(running):
            if process.poll() is not None:
                running.remove((name, process))
                if process.returncode:
                    print(f"[{name}] worker failed with {process.returncode}", flush=True)
        on_poll(f"{(time.perf_counter() - started) / 60:.1f} min wall (data sets in {jobs} processes)")


def save_part(path: Path, part: dict) -> None:
    """A worker's partial results, replaced atomically: a run killed mid-write keeps the previous part."""
    from metalabel.files import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(part, indent=1, default=float))


def package_sha256() -> str:
    """Short sha256 of every source file of the metalabel package this process imports (paths and bytes).

    A result records it so it says which code made it: a change anywhere in the package changes it, not
    only in the loop's module (a snapshot run from ``git archive`` hashes the same as its commit's tree).
    """
    import metalabel

    root = Path(metalabel.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]
