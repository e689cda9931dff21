"""Checkpoint folders are written whole or not at all: a kill mid-save never leaves half a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from metalabel.errors import BadInputError
from metalabel.files import remove_stale_staging
from metalabel.generate.weights import write_generator
from metalabel.meta.backbones import build_backbone
from metalabel.meta.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checkpoint_is_complete,
    load_learner,
    save_learner,
)
from metalabel.meta.protonet import ProtoNet


def tiny_learner(seed: int = 0) -> ProtoNet:
    torch.manual_seed(seed)
    return ProtoNet(build_backbone("mlp", in_features=4, hidden=[8], out_features=4))


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    return int(finished.stdout)


def staging_left(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if ".staging-" in path.name)


def test_a_kill_during_save_leaves_no_half_checkpoint_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "models" / "abc"
    # the process dies (no cleanup runs) after the weights are written, while it writes the config
    script = textwrap.dedent(f"""
        import json, os, torch
        from metalabel.meta.backbones import build_backbone
        from metalabel.meta.checkpoint import save_learner
        from metalabel.meta.protonet import ProtoNet
        learner = ProtoNet(build_backbone("mlp", in_features=4, hidden=[8], out_features=4))
        json.dumps = lambda *args, **kwargs: os._exit(9)
        save_learner(learner, {str(target)!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    assert not target.exists()  # complete or absent: never weights without a config
    assert not checkpoint_is_complete(target)
    assert len(staging_left(target.parent)) == 1  # what the killed save had written

    learner = tiny_learner()
    save_learner(learner, target)
    assert checkpoint_is_complete(target)
    assert sorted(p.name for p in target.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert staging_left(target.parent) == []
    restored = load_learner(target)
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), learner.state_dict().values()))


def test_remove_stale_staging_cleans_or_restores_what_a_killed_save_left(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    save_learner(tiny_learner(), target)
    pid = dead_pid()
    # killed between moving the previous checkpoint aside and renaming the new one in
    os.rename(target, tmp_path / f".ckpt.staging-{pid}-old")
    (tmp_path / f".ckpt.staging-{pid}-new").mkdir()
    (tmp_path / f".ckpt.staging-{pid}-new" / WEIGHTS_FILE).write_bytes(b"half")
    assert not checkpoint_is_complete(target)
    removed = remove_stale_staging(target)
    assert [p.name for p in removed] == [f".ckpt.staging-{pid}-new"]
    assert checkpoint_is_complete(target) and staging_left(tmp_path) == []
    load_learner(target)
    # a save still running in another process is left alone
    live = tmp_path / f".ckpt.staging-{os.getppid()}-new"
    live.mkdir()
    assert remove_stale_staging(target) == [] and live.exists()


def test_a_failed_save_keeps_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_learner(tiny_learner(0), tmp_path / "best")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("metalabel.meta.checkpoint.save_file", disk_full)
    with pytest.raises(OSError, match="disk full"):
        save_learner(tiny_learner(1), target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert staging_left(tmp_path) == []
    monkeypatch.undo()
    replaced = save_learner(tiny_learner(1), target)  # a later save replaces it whole
    assert (replaced / WEIGHTS_FILE).read_bytes() != before[WEIGHTS_FILE]


def test_a_save_never_deletes_files_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="notes.txt.*would delete"):
        save_learner(tiny_learner(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / WEIGHTS_FILE).exists() and staging_left(tmp_path.parent) == []


def test_checkpoint_is_complete_names_the_files_of_other_writers(tmp_path: Path) -> None:
    folder = write_generator(tmp_path / "vae", weights_file="vae.safetensors", tensors={"w": torch.ones(2)},
                             config_file="vae.json", record={"format": 1})
    assert checkpoint_is_complete(folder, ("vae.json", "vae.safetensors"))
    assert not checkpoint_is_complete(folder)  # not a learner's files
    assert not checkpoint_is_complete(tmp_path / "missing", ("vae.json",))


def test_a_generator_writer_that_fails_midway_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(TypeError):  # the weights are written, then the record cannot be
        write_generator(tmp_path / "hallucinator", weights_file="h.safetensors", tensors={"w": torch.ones(2)},
                        config_file="h.json", record={"not json": object()})
    assert not (tmp_path / "hallucinator").exists() and staging_left(tmp_path) == []
    folder = write_generator(tmp_path / "hallucinator", weights_file="h.safetensors", tensors={"w": torch.ones(2)},
                             config_file="h.json", record={"format": 1})
    assert json.loads((folder / "h.json").read_text()) == {"format": 1}
