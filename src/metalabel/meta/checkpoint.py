"""Learner checkpoints: ``model.safetensors`` (weights and buffers) + ``config.json`` (how to rebuild). No pickle.

``config.json``::

    {"format": 1, "metalabel_version": "0.1.0", "algo": "maml",
     "backbone": {"name": "conv4", "kwargs": {...}},
     "learner": {<hyper-parameters: type(learner)(backbone, **learner)>}}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metalabel.errors import BadInputError, DataNotFoundError
from metalabel.files import fsync
from metalabel.meta.backbones import backbone_spec, build_backbone
from metalabel.meta.bayes import BayesProtoNet
from metalabel.meta.functional import TaskLearner
from metalabel.meta.gnn import GraphLearner
from metalabel.meta.maml import MAML
from metalabel.meta.protonet import ProtoNet
from metalabel.meta.recurrent import RecurrentLearner
from metalabel.meta.reptile import Reptile

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LEARNERS: dict[str, type[TaskLearner]] = {
    cls.algo: cls for cls in (ProtoNet, MAML, Reptile, GraphLearner, RecurrentLearner, BayesProtoNet)
}


def _metalabel_version() -> str:
    try:
        return version("metalabel")
    except PackageNotFoundError:
        return "unknown"


def learner_config(learner: TaskLearner) -> dict[str, Any]:
    """The JSON that :func:`load_learner` rebuilds ``learner`` from (weights aside)."""
    return {
        "format": FORMAT_VERSION,
        "metalabel_version": _metalabel_version(),
        "algo": learner.algo,
        "backbone": backbone_spec(learner.backbone),
        "learner": learner.config(),
    }


STAGING_MARK = ".staging-"
"""Folders named ``.NAME.staging-PID`` beside ``NAME`` hold a save in progress (or a killed one)."""


def _staging_prefix(folder: Path) -> str:
    return f".{folder.name}{STAGING_MARK}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a pid we can ask about): leave its folder alone
    return True


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Clean up after a save of ``folder`` that was killed; returns the staging folders removed.

    A killed save leaves ``folder`` as it was and its work in a staging folder, which is
    deleted. Killed in the one moment between moving the previous ``folder`` aside and
    renaming the new one in, it leaves no ``folder``: the previous one is put back. A staging
    folder whose writer (the pid in its name) still runs is left alone.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        return []
    removed = []
    for candidate in sorted(folder.parent.glob(_staging_prefix(folder) + "*")):
        pid, _, role = candidate.name[len(_staging_prefix(folder)):].partition("-")
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        if role == "old" and not folder.exists():
            os.rename(candidate, folder)  # the previous version, whole: it was the checkpoint until moved aside
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _check_replaceable(folder: Path, written: set[str]) -> None:
    if not folder.is_dir():
        raise BadInputError("is a file, not a checkpoint folder", path=folder, hint="save to a folder name")
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in written or not entry.is_file())
    if foreign:
        raise BadInputError(f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which a checkpoint "
                            "save would delete", path=folder,
                            hint="save into a new folder (or a checkpoint folder written by metalabel)")


def write_folder_atomically(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a staging folder beside ``folder``, then rename it into place; returns ``folder``.

    ``folder`` is either the whole previous version or the whole new one, never half of
    either: a kill during ``write`` leaves only the staging folder (removed by the next save
    of ``folder`` or by :func:`remove_stale_staging`). A previous ``folder`` is moved aside
    before the rename and deleted after it, so a kill in between leaves no ``folder`` at all
    (and a complete copy in a staging folder), never a mixed one.

    Only a previous ``folder`` that holds nothing but files of the names ``write`` writes
    is replaced; anything else there raises BadInputError, so a save never deletes what it
    did not write.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)
    staging = folder.with_name(f"{_staging_prefix(folder)}{os.getpid()}-new")
    retired = folder.with_name(f"{_staging_prefix(folder)}{os.getpid()}-old")
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        for path in staging.iterdir():  # on disk before the rename makes them the checkpoint
            if path.is_file():
                fsync(path)
        if folder.exists():
            _check_replaceable(folder, {path.name for path in staging.iterdir()})
            os.rename(folder, retired)
        os.rename(staging, folder)
        fsync(folder.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return folder


def save_learner(learner: TaskLearner, folder: str | Path, *,
                 extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``; returns the folder.

    The folder is written whole or not at all (:func:`write_folder_atomically`): it replaces
    any previous ``folder``. ``extra(staging)`` may add files (an optimizer's state) that must
    land together with the weights.
    """
    folder = Path(folder)
    config = learner_config(learner)
    # safetensors wants dense, row-major tensors; channels-last weights are re-laid out on load
    tensors = {name: t.detach().contiguous() for name, t in learner.state_dict().items()}

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if extra is not None:
            extra(staging)

    return write_folder_atomically(folder, write)


def checkpoint_is_complete(folder: str | Path, names: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)) -> bool:
    """Whether ``folder`` holds every file in ``names`` (default: a learner checkpoint's).

    With the atomic writers a folder is complete or absent; an incomplete one was left by
    an older metalabel killed mid-save, and should be removed and saved again.
    """
    try:
        required_files(folder, *names, what="checkpoint", writer="save_learner")
    except DataNotFoundError:
        return False
    return True


def required_files(folder: str | Path, *names: str, what: str, writer: str) -> list[Path]:
    """``folder / name`` for each name, or a DataNotFoundError naming the first missing file and its writer."""
    paths = [Path(folder) / name for name in names]
    for path in paths:
        if not path.is_file():
            raise DataNotFoundError(f"{what} file missing", path=path, hint=f"point at a folder written by {writer}")
    return paths


def load_learner(folder: str | Path, *, device: str | torch.device = "cpu") -> TaskLearner:
    """Rebuild a learner saved by :func:`save_learner`, with its weights' dtype, on ``device``."""
    config_path, weights_path = required_files(folder, CONFIG_FILE, WEIGHTS_FILE, what="checkpoint",
                                               writer="save_learner")
    try:
        config = json.loads(config_path.read_text())
        algo, spec, hyperparameters = config["algo"], config["backbone"], config["learner"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise BadInputError(f"not a learner config ({error})", path=config_path,
                            hint="point at a folder written by save_learner") from error
    if config.get("format", 0) > FORMAT_VERSION:
        raise BadInputError(f"checkpoint format {config['format']} is newer than this metalabel reads",
                            path=config_path, hint="upgrade metalabel")
    if algo not in LEARNERS:
        raise BadInputError(f"unknown algo {algo!r}", path=config_path, hint=f"expected one of {sorted(LEARNERS)}")
    try:
        state = load_file(str(weights_path), device=str(device))
    except SafetensorError as error:
        raise BadInputError(f"unreadable weights ({error})", path=weights_path) from error
    learner = LEARNERS[algo](build_backbone(spec["name"], **spec["kwargs"]), **hyperparameters)
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    learner.to(device=device, dtype=floating[0] if floating else None)
    try:
        learner.load_state_dict(state)
    except RuntimeError as error:
        raise BadInputError(f"weights do not fit the configured learner ({error})", path=weights_path,
                            hint="the config and weights come from different saves") from error
    return learner


def load_run(folder: str | Path, *, device: str | torch.device = "cpu") -> TaskLearner:
    """The learner of a meta-training run folder (its ``best/`` checkpoint) or of a checkpoint folder itself.

    ``metalabel.meta_train(..., out=folder)`` writes ``folder/best`` (the best validation
    step) beside ``folder/last``; a folder without ``best/`` is read as a checkpoint.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataNotFoundError("no such run or checkpoint folder", path=folder,
                                hint="point at a folder written by metalabel meta-train (or save_learner)")
    best = folder / "best"
    return load_learner(best if best.is_dir() else folder, device=device)
