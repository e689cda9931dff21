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
from safetensors.torch import save_file
from torch import Tensor, nn

from metalabel.meta.checkpoint import write_folder_atomically


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

    Staged beside ``folder`` and renamed into place (:func:`~metalabel.meta.checkpoint.write_folder_atomically`),
    replacing a previous ``folder``.
    """

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / weights_file), metadata={"format": "pt"})
        (staging / config_file).write_text(json.dumps(record, indent=2) + "\n")

    return write_folder_atomically(folder, write)
