"""Data-parallel meta-training through Ray Train on a local Ray cluster (two worker CPUs, started here): a worker
killed mid-run is restarted by Ray Train, the run continues from its own last checkpoint, and it ends with the same
weights, bit for bit, as an uninterrupted run of the same two workers started as plain processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

import metalabel as ml
from metalabel.meta import load_learner
from metalabel.meta.train import meta_train

ray = pytest.importorskip("ray")
# Ray Data reads its own deprecated settings when Ray Train copies its context to the workers: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data")

OPTIONS = dict(algo="protonet", backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=2,
               meta_batch=2, task_parallel="loop", val_episodes=4, val_every=2, seed=3, progress=False)


@pytest.fixture(scope="module")
def kanji(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield ml.datasets.load("kanji", max_classes=40, samples_per_class=10)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def ray_train_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and "RayTrainWorker" in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):  # ended while we looked
            continue
    return pids


def test_a_worker_killed_on_ray_is_restarted_and_the_run_ends_as_an_uninterrupted_one(kanji, cluster,
                                                                                       tmp_path) -> None:
    run = tmp_path / "ray"
    killed: list[int] = []

    def saved_step() -> int | None:
        # a save replaces last/ whole, so for a moment there is none: read until a whole one is there
        try:
            return int(json.loads((run / "last" / "state.json").read_text())["step"])
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def kill_a_worker_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            step, workers = saved_step(), ray_train_workers()
            if step is not None and workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed.append(step)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_after_the_first_checkpoint)
    killer.start()
    meta_train(kanji, out=run, steps=40, workers=2, ray="local", **OPTIONS)
    killer.join()
    assert killed and killed[0] < 40, "the worker was not killed mid-run"
    # resumed from its checkpoint, not started over: each validation is in the history once
    history = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert history == list(range(2, 41, 2))
    assert sorted(p.name for p in run.iterdir()) == ["best", "history.jsonl", "last", "train.json"]  # Ray's removed

    meta_train(kanji, out=tmp_path / "processes", steps=40, workers=2, **OPTIONS)
    on_ray, on_processes = (load_learner(tmp_path / name / "last").state_dict() for name in ("ray", "processes"))
    assert on_ray.keys() == on_processes.keys()
    for name, tensor in on_ray.items():
        assert torch.equal(tensor, on_processes[name]), name
