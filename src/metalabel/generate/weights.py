"""What the learned generators share: seeded layers, a content version, and files written whole.

A generator's ``version`` is a hash of its config and weights, so every item it makes can
name exactly the generator that made it; its files are safetensors plus JSON, written
into a staging folder that is renamed into place whole, as learner checkpoints are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metalabel.errors import BadInputError
from metalabel.files import IfExists, staged_folder


def seeded_linear(fan_in: int, fan_out: int, generator: torch.Generator, *, negative_slope: float = 0.0) -> nn.Linear:
    """A Linear layer initialized from ``generator`` (Kaiming uniform, zero bias), leaving the global RNG alone."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    nn.init.kaiming_uniform_(layer.weight, a=negative_slope, nonlinearity="leaky_relu" if negative_slope else "relu",
                             generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


def content_version(config: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    """A short sha256 of ``config`` and every tensor: the provenance of what a generator makes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8"))
    for name in sorted(tensors):
        digest.update(name.encode("utf-8"))
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def write_generator(folder: Path, *, weights_file: str, tensors: dict[str, Tensor], config_file: str,
                    record: dict[str, Any]) -> Path:
    """Write ``tensors`` (safetensors) and ``record`` (JSON) as ``folder``: the whole folder or none of it.

    Staged beside ``folder`` and renamed into place (:func:`metalabel.files.staged_folder`),
    replacing a previous save of the same files, never a folder holding others.
    """
    with staged_folder(folder, if_exists=IfExists.REPLACE_OWN, what="the generator's weights") as staging:
        save_file(tensors, str(staging / weights_file), metadata={"format": "pt"})
        (staging / config_file).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def read_generator_weights(weights_path: Path, model: nn.Module, *, config: dict[str, Any], version: str,
                           what: str) -> dict[str, Tensor]:
    """Load ``write_generator``'s tensors into ``model`` (those named ``model.*``) after checking ``version``.

    Returns every tensor read (a generator keeps e.g. its normalization beside the model's).
    Unreadable weights, weights of another save and weights that do not fit ``model`` are
    each refused with a BadInputError naming the file; ``what`` names the generator in the hint.
    """
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as error:
        raise BadInputError(f"unreadable weights ({error})", path=weights_path) from error
    if content_version(config, tensors) != version:
        raise BadInputError(f"weights do not match the recorded version {version}", path=weights_path,
                            hint=f"the files come from different saves or were changed; save the {what} again")
    prefix = "model."
    try:
        model.load_state_dict({name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})
    except RuntimeError as error:
        raise BadInputError(f"weights that do not fit the recorded model ({error})", path=weights_path) from error
    return tensors
