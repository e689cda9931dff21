"""Data-parallel meta-training (torch.distributed, gloo, two worker processes on this machine): each update is the
one-process update up to float rounding, its checkpoints resume on one worker bit for bit, and a killed worker stops
the run with a clear error and leaves the last checkpoint whole."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import metalabel as ml
from metalabel.cli import main
from metalabel.data.episodes import EpisodeSampler
from metalabel.errors import BadInputError
from metalabel.meta import load_learner
from metalabel.meta.distributed import Collective, WorkerFailedError, _process_worker, _train_on_processes
from metalabel.meta.train import (
    TrainingJob,
    _load_optimizer,
    meta_train,
    prepare_training,
    split_validation_classes,
    training_config,
)

KANJI = dict(max_classes=40, samples_per_class=10)
TINY = dict(backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=2, task_parallel="loop",
            val_episodes=4, val_every=2, seed=3, progress=False)
# W=2 against W=1: float32 rounding of differently ordered sums (measured: 4e-8 after 4 MAML steps)
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def kanji(cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(cache))
        yield ml.datasets.load("kanji", **KANJI)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_learner(folder).state_dict()


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_shares_cover_the_meta_batch_once() -> None:
    for tasks, world in ((4, 2), (5, 2), (7, 3), (3, 3)):
        shares = [Collective(rank, world).share(10, tasks) for rank in range(world)]
        episodes = [i for first, count in shares for i in range(first, first + count)]
        assert episodes == list(range(10, 10 + tasks)) and min(count for _, count in shares) >= tasks // world


def test_two_workers_update_as_one_and_their_checkpoint_resumes_on_one_worker_bit_for_bit(kanji, tmp_path) -> None:
    # 5 tasks a step: shares of 3 and 2. Running batch norm: its statistics are averaged across the workers as
    # one process averages them across its tasks
    options = TINY | {"algo": "maml", "meta_batch": 5, "adapt_steps": 2, "batch_norm": "running"}
    meta_train(kanji, out=tmp_path / "two", steps=2, workers=2, **options)
    meta_train(kanji, out=tmp_path / "one", steps=2, **options)
    assert largest_difference(weights(tmp_path / "one" / "last"), weights(tmp_path / "two" / "last")) < TOLERANCE
    # the same files: either run folder resumes with any number of workers
    assert (tmp_path / "one" / "train.json").read_text() == (tmp_path / "two" / "train.json").read_text()
    assert sorted(p.name for p in (tmp_path / "two" / "last").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "last").iterdir())
    history = [json.loads(line) for line in (tmp_path / "two" / "history.jsonl").read_text().splitlines()]
    assert [record["step"] for record in history] == [2]  # written once, by rank 0
    assert history[0]["loss"] == pytest.approx(json.loads((tmp_path / "one" / "history.jsonl").read_text())["loss"],
                                               abs=1e-6)  # the whole meta-batch's loss, not rank 0's share

    shutil.copytree(tmp_path / "two" / "last", tmp_path / "checkpoint")
    meta_train(kanji, out=tmp_path / "two", steps=4, **options)  # resumed on one worker
    # what one worker continuing from that checkpoint does: two more steps on episodes 10..19, by hand
    learner = load_learner(tmp_path / "checkpoint")
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    assert _load_optimizer(optimizer, None, tmp_path / "checkpoint")["step"] == 2
    train_classes, _ = split_validation_classes(kanji, fraction=0.1, seed=3)
    sampler = EpisodeSampler.from_dataset(kanji, ways=3, shots=1, queries=2, classes=train_classes, seed=3)
    learner.train()
    for step in (2, 3):
        optimizer.zero_grad(set_to_none=True)
        learner.meta_loss(sampler.batch(step * 5, 5)).backward()
        optimizer.step()
    resumed = weights(tmp_path / "two" / "last")
    assert resumed.keys() == learner.state_dict().keys()
    for name, tensor in learner.state_dict().items():
        assert torch.equal(resumed[name], tensor), name


def aborts_after_its_share(rank: int, world: int, scratch: str, job: TrainingJob, threads: int) -> None:
    """A worker whose process dies as torch.distributed shuts down (gloo was seen to abort so in CI)."""
    _process_worker(rank, world, scratch, job, threads)
    if rank == 1:
        os.abort()


def aborts_before_training(rank: int, world: int, scratch: str, job: TrainingJob, threads: int) -> None:
    if rank == 1:
        os.abort()
    _process_worker(rank, world, scratch, job, threads)


def test_a_worker_dying_after_the_run_finished_loses_nothing_one_dying_before_stops_the_run(kanji, tmp_path) -> None:
    options = {k: v for k, v in TINY.items() if k != "progress"} | {"algo": "protonet", "meta_batch": 2, "steps": 2}

    def job(name: str) -> TrainingJob:
        return prepare_training(kanji, training_config(options), out=tmp_path / name, resume=False, device="cpu",
                                progress=False, init=None)

    _train_on_processes(job("whole"), workers=2)
    _train_on_processes(job("aborted"), workers=2, worker=aborts_after_its_share)
    assert largest_difference(weights(tmp_path / "whole" / "last"), weights(tmp_path / "aborted" / "last")) == 0

    with pytest.raises(WorkerFailedError, match="worker 1 of 2 was killed by SIGABRT.*no checkpoint was written"):
        _train_on_processes(job("never"), workers=2, worker=aborts_before_training)


def test_a_meta_batch_that_cannot_be_split_is_refused_before_any_worker_starts(kanji, tmp_path) -> None:
    with pytest.raises(BadInputError, match="meta-batch of 1 tasks cannot be split over 2 workers"):
        meta_train(kanji, out=tmp_path / "run", steps=2, workers=2, **(TINY | {"algo": "protonet"}))
    with pytest.raises(BadInputError, match="recurrent"):
        meta_train(kanji, out=tmp_path / "run", steps=2, workers=2, **(TINY | {"algo": "recurrent", "meta_batch": 2}))
    with pytest.raises(BadInputError, match="workers must be a whole number >= 1"):
        meta_train(kanji, steps=2, workers=0, **TINY)


def spawned_workers(parent: int) -> list[int]:
    """The pids of ``parent``'s multiprocessing children (not its resource tracker), oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):  # ended while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and "--multiprocessing-fork" in cmdline:
            found.append((int(fields[19]), int(entry.name)))  # (start time, pid)
    return [pid for _, pid in sorted(found)]


def test_a_killed_worker_stops_the_run_with_a_clear_error_and_the_checkpoint_stays_whole(kanji, cache, tmp_path,
                                                                                           monkeypatch) -> None:
    run = tmp_path / "run"
    command = ["meta-train", "--source", "kanji", "--ways", "3", "--queries", "2", "--meta-batch", "2", "--seed", "3",
               "--val-every", "2", "--val-episodes", "4", "--out", str(run), "--quiet"]
    script = textwrap.dedent(f"""
        import sys
        import metalabel as ml
        from metalabel.cli import main
        if __name__ == "__main__":
            kanji = ml.datasets.load("kanji", **{KANJI!r})
            ml.datasets.from_spec = lambda spec, **options: kanji  # --source kanji, a few of its classes
            sys.exit(main({command!r} + ["--workers", "2", "--steps", "1000000"]))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=os.environ | {"METALABEL_CACHE": str(cache)})
    try:
        deadline = time.monotonic() + 90
        while not (run / "last" / "state.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = spawned_workers(process.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)  # the later one: rank 1
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, stderr
    assert "error: meta-training worker 1 of 2 was killed by SIGKILL" in stderr
    assert "is whole" in stderr and "run the same command again to resume" in stderr
    step = json.loads((run / "last" / "state.json").read_text())["step"]
    assert step >= 2 and f"step {step})" in stderr
    # the checkpoint is whole, and one worker carries on from it
    monkeypatch.setattr("metalabel.datasets.from_spec", lambda spec, **options: kanji)
    assert main(command + ["--steps", str(step + 2)]) == 0
    assert json.loads((run / "last" / "state.json").read_text())["step"] == step + 2
    assert not [p for p in run.iterdir() if ".staging-" in p.name]


def test_a_one_worker_run_imports_nothing_of_the_data_parallel_code_or_ray(cache) -> None:
    script = textwrap.dedent(f"""
        import sys
        import metalabel as ml
        import metalabel.cli
        kanji = ml.datasets.load("kanji", **{KANJI!r})
        ml.meta_train(kanji, steps=1, **{(TINY | {"algo": "protonet"})!r})
        print(sorted(name for name in sys.modules
                     if name == "metalabel.meta.distributed" or name == "ray" or name.startswith("ray.")))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"METALABEL_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
