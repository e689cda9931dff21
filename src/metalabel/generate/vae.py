"""A small class-conditional VAE (Kingma and Welling 2014; Sohn et al. 2015) for 28x28 grey images.

It lets a user see real synthetic images of their classes, e.g. Fashion-MNIST. Encoder and
decoder are one-hidden-layer MLPs; the class enters each layer as a one-hot vector concatenated
to its input, and each class has its own learned Gaussian prior over z; pixels in [0, 1] get a
Bernoulli likelihood. It trains to recognizable samples in well under a minute on two CPU cores
from a couple of thousand images.

A generated image has as its parents the training images of its class; the caller records that,
with ``TrainedVAE.version`` naming the exact weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from metalabel.data.arrays import check_class_ids, check_weights
from metalabel.errors import BadInputError, EmptyClassError, check_whole_number
from metalabel.generate.weights import content_version, seeded_linear, write_generator
from metalabel.meta.checkpoint import required_files

SIDE = 28
PIXELS = SIDE * SIDE
FORMAT_VERSION = 1
WEIGHTS_FILE = "vae.safetensors"
CONFIG_FILE = "vae.json"




def _conditioned(hidden: nn.Linear, out: nn.Linear, x: Tensor, one_hot: Tensor) -> Tensor:
    # The class enters both layers: at the output it acts as a per-class bias image, so the decoder
    # draws the class from the label rather than from where z happens to lie.
    return out(torch.cat([F.relu(hidden(torch.cat([x, one_hot], dim=1))), one_hot], dim=1))


class ConditionalVAE(nn.Module):
    """``q(z | image, class)`` and ``p(image | z, class)`` over flattened 28x28 pixels in [0, 1].

    ``seed`` fixes the initial weights.
    """

    def __init__(self, classes: int, *, latent: int = 16, hidden: int = 400, seed: int = 0) -> None:
        super().__init__()
        check_whole_number("classes", classes, minimum=1)
        check_whole_number("latent", latent, minimum=1)
        check_whole_number("hidden", hidden, minimum=1)
        check_whole_number("seed", seed, minimum=0)
        self.classes, self.latent, self.hidden, self.seed = int(classes), int(latent), int(hidden), int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.encoder_hidden = seeded_linear(PIXELS + self.classes, self.hidden, generator)
        self.encoder_out = seeded_linear(self.hidden + self.classes, 2 * self.latent, generator)
        self.decoder_hidden = seeded_linear(self.latent + self.classes, self.hidden, generator)
        self.decoder_out = seeded_linear(self.hidden + self.classes, PIXELS, generator)
        # A learned Gaussian prior per class: where the encoder puts a class in z, its prior follows, so
        # a prior draw for class c lands where the decoder draws c (a fixed N(0, I) mixes classes).
        self.prior_mean = nn.Parameter(torch.zeros(self.classes, self.latent))
        self.prior_log_var = nn.Parameter(torch.zeros(self.classes, self.latent))
        # Output layers start at zero: random output weights of hidden units that few images excite
        # survive training as speckle on the samples; from zero they only grow where the data says.
        for layer in (self.encoder_out, self.decoder_out):
            nn.init.zeros_(layer.weight)

    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Pixel logits ``[B, 784]`` for latents ``z [B, latent]`` of classes ``labels [B]``."""
        return _conditioned(self.decoder_hidden, self.decoder_out, z, self._one_hot(labels, like=z))

    def forward(self, pixels: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
        """Negative ELBO (nats) of each image ``[B, 784]``; ``noise [B, latent]`` is the reparameterization's draw."""
        one_hot = self._one_hot(labels, like=pixels)
        mean, log_var = _conditioned(self.encoder_hidden, self.encoder_out, pixels, one_hot).chunk(2, dim=1)
        z = mean + (0.5 * log_var).exp() * noise
        reconstruction = F.binary_cross_entropy_with_logits(self.decode(z, labels), pixels, reduction="none").sum(1)
        prior_mean, prior_log_var = self.prior_mean[labels], self.prior_log_var[labels]
        kl = 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean).pow(2)) / prior_log_var.exp() - 1)
        return reconstruction + kl.sum(1)

    def sample(self, labels: Tensor, noise: Tensor) -> Tensor:
        """Pixel probabilities ``[B, 784]``: decoder means at draws ``noise [B, latent]`` from each class's prior."""
        z = self.prior_mean[labels] + (0.5 * self.prior_log_var[labels]).exp() * noise
        return self.decode(z, labels).sigmoid()

    def config(self) -> dict:
        """The keyword arguments that rebuild this module: ``ConditionalVAE(**config)``."""
        return {"classes": self.classes, "latent": self.latent, "hidden": self.hidden, "seed": self.seed}

    def _one_hot(self, labels: Tensor, *, like: Tensor) -> Tensor:
        return F.one_hot(labels, self.classes).to(like.dtype)


@dataclass(frozen=True)
class VAEConfig:
    """How a VAE was trained (see :func:`train_vae`)."""

    classes: int
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    latent: int = 16
    hidden: int = 400
    seed: int = 0
    weighted: bool = False  # whether a sample_weight shaped the minibatches

    def __post_init__(self) -> None:
        for name in ("classes", "steps", "batch_size", "latent", "hidden"):
            check_whole_number(name, getattr(self, name), minimum=1)
        check_whole_number("seed", self.seed, minimum=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise BadInputError(f"lr must be a finite number > 0, got {self.lr!r}", hint="e.g. 1e-3")


@dataclass(frozen=True, eq=False)
class TrainedVAE:
    """A trained VAE, its per-step negative ELBO, and ``version``: a short sha256 of its config and weights."""

    model: ConditionalVAE
    losses: np.ndarray  # [steps] float32, mean negative ELBO (nats per image) of each minibatch
    version: str
    config: VAEConfig


def train_vae(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    classes: int,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    latent: int = 16,
    hidden: int = 400,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TrainedVAE:
    """Fit a :class:`ConditionalVAE` to uint8 ``images`` (``[N, 28, 28]``, ``[N, 1, 28, 28]`` or ``[N, 28, 28, 1]``).

    ``labels[i]`` is in ``0..classes-1`` and every class needs at least one image. Minibatches are
    drawn with replacement, each image with probability proportional to ``sample_weight`` (default
    equal), so pseudo-labeled images can count less than human-labeled ones.
    """
    config = VAEConfig(classes=classes, steps=steps, batch_size=batch_size, lr=lr, latent=latent, hidden=hidden,
                       seed=seed, weighted=sample_weight is not None)
    pixels = _checked_images(images)
    targets = check_class_ids(labels, name="labels", rows=len(pixels), row_name="image", classes=config.classes)
    weights = check_weights(sample_weight, name="sample_weight", rows=len(targets), row_name="image")
    _require_every_class(targets, weights, classes=config.classes)

    pixel_rows = torch.from_numpy(pixels.reshape(len(pixels), PIXELS)).to(device, torch.float32).div_(255)
    target_ids = torch.from_numpy(targets).to(device)
    model = ConditionalVAE(config.classes, latent=config.latent, hidden=config.hidden, seed=config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    draw_weights = torch.from_numpy(weights)
    losses = np.empty(config.steps, dtype=np.float32)
    for step in track(range(config.steps), description="vae", disable=not progress, transient=True):
        # drawn on the CPU, so a seed gives the same minibatches and noise on every device
        batch = torch.multinomial(draw_weights, config.batch_size, replacement=True, generator=generator).to(device)
        noise = torch.randn(config.batch_size, config.latent, generator=generator).to(device)
        loss = model(pixel_rows[batch], target_ids[batch], noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.item()
    return TrainedVAE(model=model, losses=losses, version=content_version(model.config(), _tensors(model)),
                      config=config)


def sample_images(trained: TrainedVAE, labels: np.ndarray, *, seed: int) -> np.ndarray:
    """uint8 images ``[M, 28, 28]``, one of class ``labels[i]`` each: the decoder's mean for a prior draw."""
    check_whole_number("seed", seed, minimum=0)
    model = trained.model
    targets = check_class_ids(labels, name="labels", classes=model.classes)
    device = next(model.parameters()).device
    noise = torch.randn(len(targets), model.latent, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        means = model.sample(torch.from_numpy(targets).to(device), noise)
    return means.mul(255).round().to(torch.uint8).cpu().numpy().reshape(len(targets), SIDE, SIDE)


def save_vae(trained: TrainedVAE, folder: str | Path) -> Path:
    """Write ``vae.safetensors`` and ``vae.json`` as ``folder``, whole or not at all (a previous save is replaced)."""
    folder = Path(folder)
    tensors = _tensors(trained.model)
    record = {
        "format": FORMAT_VERSION,
        "generator": "conditional-vae",
        "version": trained.version,
        "model": trained.model.config(),
        "training": asdict(trained.config),
        "losses": trained.losses.tolist(),
    }
    return write_generator(folder, weights_file=WEIGHTS_FILE, tensors=tensors, config_file=CONFIG_FILE, record=record)


def load_vae(folder: str | Path, *, device: str | torch.device = "cpu") -> TrainedVAE:
    """Rebuild what :func:`save_vae` wrote; the weights must still match the recorded version."""
    config_path, weights_path = required_files(folder, CONFIG_FILE, WEIGHTS_FILE, what="VAE", writer="save_vae")
    try:
        record = json.loads(config_path.read_text())
        if record.get("format", 0) > FORMAT_VERSION:
            raise BadInputError(f"format {record['format']} is newer than this metalabel reads", path=config_path,
                                hint="upgrade metalabel")
        model = ConditionalVAE(**record["model"])
        training = VAEConfig(**record["training"])
        losses = np.asarray(record["losses"], dtype=np.float32)
        version = record["version"]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
        raise BadInputError(f"not a VAE record ({error})", path=config_path,
                            hint="point at a folder written by save_vae") from error
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (SafetensorError, RuntimeError) as error:
        raise BadInputError(f"unreadable weights, or weights that do not fit the recorded model ({error})",
                            path=weights_path, hint="the files come from different saves; save the VAE again",
                            ) from error
    if content_version(model.config(), _tensors(model)) != version:
        raise BadInputError(f"weights do not match the recorded version {version}", path=weights_path,
                            hint="the files come from different saves or were changed; save the VAE again")
    return TrainedVAE(model=model.to(device), losses=losses, version=version, config=training)


def _checked_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` from any accepted layout, or a BadInputError saying what the VAE expects."""
    shape = images.shape if isinstance(images, np.ndarray) else type(images).__name__
    grey = isinstance(images, np.ndarray) and (
        (images.ndim == 3 and images.shape[1:] == (SIDE, SIDE))
        or (images.ndim == 4 and images.shape[1:] in ((1, SIDE, SIDE), (SIDE, SIDE, 1)))
    )
    if not grey:
        raise BadInputError(f"the conditional VAE is for 28x28 grayscale images [N, 28, 28], got {shape}",
                            hint="resize to 28x28 and convert to grey, or use another generator for larger images")
    if images.dtype != np.uint8:
        raise BadInputError(f"images must be uint8 (0-255), got dtype {images.dtype}",
                            hint="for floats in [0, 1]: (images * 255).round().astype(np.uint8)")
    if not len(images):
        raise BadInputError("images is empty", hint="pass at least one image of each class")
    return images.reshape(len(images), SIDE, SIDE)


def _require_every_class(labels: np.ndarray, weights: np.ndarray, *, classes: int) -> None:
    images_per_class = np.bincount(labels, minlength=classes)
    weight_per_class = np.bincount(labels, weights=weights, minlength=classes)
    for cls in range(classes):
        if not images_per_class[cls]:
            raise EmptyClassError("has no training image, so the VAE cannot learn to draw it", cls=str(cls),
                                  hint="add images of it, or number the classes present 0..k-1 and pass classes=k")
        if not weight_per_class[cls] > 0:
            raise EmptyClassError("has sample_weight 0 on every image, so the VAE would never see it", cls=str(cls),
                                  hint="give some of its images a positive weight")


def _tensors(model: ConditionalVAE) -> dict[str, Tensor]:
    return {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}

