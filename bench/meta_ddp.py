"""Data-parallel meta-training (issue 15): meta-updates a second with 1 and 2 workers, and a projection to N workers.

Shape: a meta-batch of 8 tasks, 5-way 1-shot, 15 queries per class, Conv-4 (64 channels) on 28x28 kanji
(the background split, 200 classes, 20 drawings each); ProtoNet and second-order MAML (1 inner step).

Each cell is a fresh Python process running ``metalabel.meta_train(..., workers=w)`` for ``steps``
meta-updates with a validation (10 episodes) half-way and at the end. The rate is taken between the two
validations from the run's own clock (``history.jsonl``'s ``elapsed_s``: the first worker's time inside
its steps, the all_reduce wait included), so process start, data loading and the first step's warm-up
are left out; the wall time of the whole cell (with the workers' start) is reported beside it.

* ``1 worker, 2 threads``: the run as it is without ``workers`` on this machine;
* ``1 worker, 1 thread``: one worker's own rate (each of two workers gets one of the two cores);
* ``2 workers``: ``workers=2``, torch.distributed with gloo, one thread each.

``all_reduce`` of a flat float32 buffer the size of the learner's gradient between two processes on
this machine (gloo over loopback) is timed apart (median of 50).

The projection to N workers is a model, not a measurement: a step takes the time one worker needs
for its share of the meta-batch (8/N tasks at the measured one-worker rate) plus one all_reduce, whose
time is the measured loopback time plus 2(N-1)/N times the gradient's bytes over a stated bandwidth
(ring all-reduce); validation (rank 0 alone) is left out.

    nice -n 10 python bench/meta_ddp.py --note "what else ran"      # writes bench/results/meta_ddp.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
META_BATCH = 8
SHAPE = dict(backbone="conv4", ways=5, shots=1, queries=15, meta_batch=META_BATCH, val_episodes=10,
             task_parallel="loop", seed=0)
STEPS = {"protonet": 12, "maml": 6}
BANDWIDTH_GBPS = 10.0  # the projection's network: 10 Gb/s Ethernet between workers


@dataclass(frozen=True)
class Cell:
    algo: str
    workers: int
    threads: int  # per worker
    steps: int
    seconds_per_step: float  # between the two validations, the first worker's clock
    wall_s: float  # the whole meta_train call, workers' start included


def run_cell(algo: str, workers: int, threads: int) -> Cell:
    """One cell, in this process (called in a fresh one by ``main``)."""
    import torch

    import metalabel as ml

    torch.set_num_threads(threads * workers)  # a data-parallel run gives each worker its share of these
    source = ml.datasets.load("kanji", max_classes=200, samples_per_class=20, progress=False)
    steps = STEPS[algo]
    with tempfile.TemporaryDirectory() as run:
        started = time.perf_counter()
        ml.meta_train(source, out=run, algo=algo, steps=steps, val_every=steps // 2, workers=workers,
                      progress=False, **SHAPE)
        wall = time.perf_counter() - started
        history = [json.loads(line) for line in (Path(run) / "history.jsonl").read_text().splitlines()]
    half, end = history[0]["elapsed_s"], history[-1]["elapsed_s"]
    return Cell(algo, workers, threads, steps, (end - half) / (steps - steps // 2), wall)


def _all_reduce_worker(rank: int, rendezvous: str, numel: int, rounds: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    buffer, times = torch.ones(numel), []
    for _ in range(rounds + 5):  # the first few connect and warm up
        started = time.perf_counter()
        dist.all_reduce(buffer)
        times.append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps(statistics.median(times[5:])))
    dist.destroy_process_group()


def time_all_reduce(numel: int, rounds: int = 50) -> float:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "median.json"
        mp.start_processes(_all_reduce_worker, args=(str(Path(scratch) / "rendezvous"), numel, rounds, str(out)),
                           nprocs=2, start_method="spawn")
        return float(json.loads(out.read_text()))


def gradient_size() -> int:
    """Parameters of the benchmark's learner (MAML's head adds 5 x 64 + 5 to ProtoNet's Conv-4)."""
    from metalabel.meta.train import TrainConfig, build_learner

    learner = build_learner(TrainConfig(algo="maml", **SHAPE).resolved())
    return sum(p.numel() for p in learner.parameters() if p.requires_grad)


def projection(cells: list[Cell], all_reduce_s: float, numel: int) -> list[tuple[str, int, float, float]]:
    """(algo, N, projected seconds a step, speed-up over one worker) from the one-thread one-worker rate."""
    rows = []
    for cell in cells:
        if cell.workers != 1 or cell.threads != 1:
            continue
        per_task = cell.seconds_per_step / META_BATCH
        for n in (1, 2, 4, 8):
            network = 0.0 if n == 1 else all_reduce_s + 2 * (n - 1) / n * numel * 4 * 8 / (BANDWIDTH_GBPS * 1e9)
            step = per_task * META_BATCH / n + network
            rows.append((cell.algo, n, step, cell.seconds_per_step / step))
    return rows


def markdown(cells: list[Cell], all_reduce_s: float, numel: int, command: str, note: str) -> str:
    lines = [
        "# Data-parallel meta-training (bench/meta_ddp.py)", "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {__import__('torch').__version__} (CPU), gloo  ",
        f"Shape: meta-batch {META_BATCH}, 5-way 1-shot, 15 queries, Conv-4 (64 channels), 28x28 kanji "
        f"(200 classes x 20); second-order MAML with 1 inner step  ",
        f"What else ran: {note}", "",
        "| learner | workers | threads each | s / meta-update | meta-updates / s | wall of the run (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        lines.append(f"| {cell.algo} | {cell.workers} | {cell.threads} | {cell.seconds_per_step:.3f} | "
                     f"{1 / cell.seconds_per_step:.2f} | {cell.wall_s:.1f} |")
    lines += ["", f"all_reduce of the gradient ({numel:,} floats, {numel * 4 / 1e6:.2f} MB) between two processes "
              f"here: {1e3 * all_reduce_s:.2f} ms (median of 50).", "",
              f"**Projection** (a model, not measured): N workers, each with a core of its own, on a "
              f"{BANDWIDTH_GBPS:g} Gb/s network; a step = 8/N tasks at the one-worker one-thread rate above + one "
              "ring all_reduce (the loopback time above + 2(N-1)/N x the gradient's bytes over the network).", "",
              "| learner | N | projected s / meta-update | speed-up over one worker |", "|---|---:|---:|---:|"]
    for algo, n, step, gain in projection(cells, all_reduce_s, numel):
        lines.append(f"| {algo} | {n} | {step:.3f} | {gain:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", nargs=3, metavar=("ALGO", "WORKERS", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--algos", default="protonet,maml")
    parser.add_argument("--note", default="not stated", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=RESULTS / "meta_ddp.json")
    args = parser.parse_args()
    if args.cell:
        algo, workers, threads = args.cell
        print(json.dumps(asdict(run_cell(algo, int(workers), int(threads)))))
        return
    cells = []
    for algo in args.algos.split(","):
        for workers, threads in ((1, 2), (1, 1), (2, 1)):
            done = subprocess.run([sys.executable, __file__, "--cell", algo, str(workers), str(threads)],
                                  capture_output=True, text=True, check=True)
            cells.append(Cell(**json.loads(done.stdout.strip().splitlines()[-1])))
            print(cells[-1], flush=True)
    numel = gradient_size()
    all_reduce_s = time_all_reduce(numel)
    command = "python " + shlex.join(["bench/meta_ddp.py", *sys.argv[1:]])
    args.out.write_text(json.dumps({"cells": [asdict(c) for c in cells], "all_reduce_s": all_reduce_s,
                                    "gradient_numel": numel, "command": command, "note": args.note}, indent=2))
    table = markdown(cells, all_reduce_s, numel, command, args.note)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
