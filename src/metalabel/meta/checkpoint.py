"""Learner checkpoints: ``model.safetensors`` (weights and buffers) + ``config.json`` (how to rebuild). No pickle.

``config.json``::

    {"format": 1, "metalabel_version": "0.1.0", "algo": "maml",
     "backbone": {"name": "conv4", "kwargs": {...}},
     "learner": {<hyper-parameters: type(learner)(backbone, **learner)>}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from metalabel.errors import BadInputError, DataNotFoundError
from metalabel.files import IfExists, staged_folder
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


def save_learner(learner: TaskLearner, folder: str | Path, *,
                 extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``; returns the folder.

    The folder is written whole or not at all (:func:`metalabel.files.staged_folder`): it
    replaces a previous checkpoint ``folder``, never a folder holding other files.
    ``extra(staging)`` may add files (an optimizer's state) that must land together with the weights.
    """
    folder = Path(folder)
    config = learner_config(learner)
    # safetensors wants dense, row-major tensors; channels-last weights are re-laid out on load
    tensors = {name: t.detach().contiguous() for name, t in learner.state_dict().items()}

    with staged_folder(folder, if_exists=IfExists.REPLACE_OWN, what="a checkpoint") as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if extra is not None:
            extra(staging)
    return folder


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
