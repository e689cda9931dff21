"""A conditional feature-generating WGAN-GP (Xian, Lorenz, Schiele and Akata 2018; Gulrajani et al. 2017).

A generator ``G(noise, class) -> feature`` and a critic ``D(feature, class) -> score`` are small
MLPs in a model's embedding space; the class enters each as a one-hot vector concatenated to its
input. The critic is trained to separate real from generated features of a class under the
Wasserstein loss, kept close to 1-Lipschitz by a penalty on its input-gradient norm at random
points between real and generated features (``gradient_penalty``); the generator is trained to
raise the critic's score of what it makes. Without the classifier loss of Xian et al.: the labeling
loop's judge, not a training loss, decides whether the features help a classifier.

Features are learned as ``(x - mean) / scale`` (per-dimension mean, one global RMS scale, as the
hallucinator learns them). It learns from accepted (model) labels, never from the human ones: those
are the held-out evidence the judge keeps or drops it by. Flattened 28x28 grey images are features
too (``train_image_gan`` / ``sample_gan_images``): an MLP image GAN, CPU-friendly, for looking at.

A generated row has as its parents its class's training rows; ``TrainedGAN.version`` names the weights.
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
from torch import Tensor, nn

from metalabel.data.arrays import check_class_ids, check_matrix, check_weights
from metalabel.errors import BadInputError, EmptyClassError, check_whole_number
from metalabel.generate.hallucinate import _normalization
from metalabel.generate.weights import content_version, read_generator_weights, seeded_linear, write_generator
from metalabel.meta.checkpoint import required_files

GENERATOR_NAME = "gan"
FORMAT_VERSION = 1
WEIGHTS_FILE = "gan.safetensors"
CONFIG_FILE = "gan.json"
SIDE = 28
_SLOPE = 0.2  # LeakyReLU slope of both nets, as in the WGAN-GP papers


def _conditioned(hidden: nn.Linear, out: nn.Linear, x: Tensor, one_hot: Tensor) -> Tensor:
    # The class enters both layers, as in the VAE: at the generator's output it is a per-class bias, so
    # a class's mean is learned at once rather than through the noise layer (measured: on three digit
    # classes, 150 steps drew the class asked for 36-42% of the time with the class at the input only).
    return out(torch.cat([F.leaky_relu(hidden(torch.cat([x, one_hot], dim=1)), _SLOPE), one_hot], dim=1))


class FeatureGenerator(nn.Module):
    """``G(noise [B, noise_dim], one_hot [B, classes]) -> features [B, dim]`` (normalized space)."""

    def __init__(self, dim: int, classes: int, *, noise_dim: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = seeded_linear(noise_dim + classes, hidden, generator, negative_slope=_SLOPE)
        self.out = seeded_linear(hidden + classes, dim, generator, negative_slope=_SLOPE)

    def forward(self, noise: Tensor, one_hot: Tensor) -> Tensor:
        return _conditioned(self.hidden, self.out, noise, one_hot)


class FeatureCritic(nn.Module):
    """``D(features [B, dim], one_hot [B, classes]) -> scores [B]``: higher for what looks real for the class."""

    def __init__(self, dim: int, classes: int, *, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = seeded_linear(dim + classes, hidden, generator, negative_slope=_SLOPE)
        self.out = seeded_linear(hidden + classes, 1, generator, negative_slope=_SLOPE)

    def forward(self, x: Tensor, one_hot: Tensor) -> Tensor:
        return _conditioned(self.hidden, self.out, x, one_hot).squeeze(1)


class ConditionalWGAN(nn.Module):
    """A generator and its critic for ``classes`` classes of ``dim``-d features. ``seed`` fixes the weights."""

    def __init__(self, dim: int, classes: int, *, noise_dim: int = 64, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("classes", classes), ("noise_dim", noise_dim), ("hidden", hidden)):
            check_whole_number(name, value, minimum=1)
        check_whole_number("seed", seed, minimum=0)
        self.dim, self.classes, self.noise_dim, self.hidden_size, self.seed = (
            int(dim), int(classes), int(noise_dim), int(hidden), int(seed))
        weights = torch.Generator().manual_seed(self.seed)
        self.generator = FeatureGenerator(self.dim, self.classes, noise_dim=self.noise_dim, hidden=self.hidden_size,
                                          generator=weights)
        self.critic = FeatureCritic(self.dim, self.classes, hidden=self.hidden_size, generator=weights)

    def one_hot(self, labels: Tensor) -> Tensor:
        return F.one_hot(labels, self.classes).float()

    def config(self) -> dict:
        """The keyword arguments that rebuild this module: ``ConditionalWGAN(**config)``."""
        return {"dim": self.dim, "classes": self.classes, "noise_dim": self.noise_dim, "hidden": self.hidden_size,
                "seed": self.seed}


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, one_hot: Tensor, mix: Tensor) -> Tensor:
    """Mean of ``(||grad_x D(x_hat, class)||_2 - 1)^2`` at ``x_hat = mix * real + (1 - mix) * fake``.

    ``mix [B, 1]`` is uniform in [0, 1] (Gulrajani et al. 2017, eq. 3). The gradient is built with
    ``create_graph``, so the penalty itself trains the critic.
    """
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    scores = critic(between, one_hot)
    (gradient,) = torch.autograd.grad(scores.sum(), between, create_graph=True)
    return (gradient.norm(2, dim=1) - 1).pow(2).mean()


@dataclass(frozen=True)
class GANConfig:
    """How a GAN was trained (see :func:`train_feature_gan`)."""

    classes: int
    steps: int = 300  # generator steps
    critic_steps: int = 5  # critic steps per generator step
    batch_size: int = 64
    lr: float = 1e-3
    penalty: float = 10.0  # lambda of the gradient penalty
    noise_dim: int = 64
    hidden: int = 256
    seed: int = 0
    normalize: bool = True
    weighted: bool = False  # whether a sample_weight shaped the minibatches

    def __post_init__(self) -> None:
        for name in ("classes", "steps", "critic_steps", "batch_size", "noise_dim", "hidden"):
            check_whole_number(name, getattr(self, name), minimum=1)
        check_whole_number("seed", self.seed, minimum=0)
        for name in ("lr", "penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise BadInputError(f"{name} must be a finite number > 0, got {value!r}",
                                    hint="e.g. lr=1e-3, penalty=10")


@dataclass(frozen=True, eq=False)
class TrainedGAN:
    """A trained GAN, the normalization it works in, its losses, and ``version``: a short sha256 of it all."""

    model: ConditionalWGAN
    mean: np.ndarray  # [D] float32
    scale: float
    critic_losses: np.ndarray  # [steps] float32: the last critic step's loss (negative Wasserstein estimate + penalty)
    generator_losses: np.ndarray  # [steps] float32
    version: str
    config: GANConfig


def train_feature_gan(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    classes: int,
    steps: int = 300,
    critic_steps: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    penalty: float = 10.0,
    noise_dim: int = 64,
    hidden: int = 256,
    seed: int = 0,
    normalize: bool = True,
    sample_weight: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TrainedGAN:
    """Fit a :class:`ConditionalWGAN` to ``features [N, D]`` with ``labels [N]`` in ``0..classes-1``.

    Every class needs a row. Each generator step follows ``critic_steps`` critic steps; minibatches
    are drawn with replacement, each row with probability proportional to ``sample_weight``
    (default equal). Adam with betas (0.5, 0.9), as Gulrajani et al. train WGAN-GP. The defaults are
    short for a GAN, so a labeling round can afford one: on three digit classes 300 steps at 1e-3 drew
    the class asked for every time, where 150 steps (at 1e-3 or 3e-4) did so 35-69% of the time.
    """
    config = GANConfig(classes=classes, steps=steps, critic_steps=critic_steps, batch_size=batch_size, lr=lr,
                       penalty=penalty, noise_dim=noise_dim, hidden=hidden, seed=seed, normalize=bool(normalize),
                       weighted=sample_weight is not None)
    x = check_matrix(features, name="features", columns="dims", dtype=np.float32,
                     shape_hint="pass one feature vector per row, e.g. an encoder's output")
    y = check_class_ids(labels, name="labels", rows=len(x), classes=config.classes)
    weights = _checked_weights(sample_weight, y, classes=config.classes)
    mean, scale = _normalization(x, normalize=config.normalize)
    rows = torch.from_numpy((x - mean) / scale).to(device)
    targets = torch.from_numpy(y).to(device)
    model = ConditionalWGAN(x.shape[1], config.classes, noise_dim=config.noise_dim, hidden=config.hidden,
                            seed=config.seed).to(device)
    betas = (0.5, 0.9)
    critic_optimizer = torch.optim.Adam(model.critic.parameters(), lr=config.lr, betas=betas)
    generator_optimizer = torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=betas)
    draws = torch.Generator().manual_seed(config.seed)  # on the CPU: the same run on every device
    draw_weights = torch.from_numpy(weights)
    critic_losses = np.empty(config.steps, dtype=np.float32)
    generator_losses = np.empty(config.steps, dtype=np.float32)

    def noise(count: int) -> Tensor:
        return torch.randn(count, config.noise_dim, generator=draws).to(device)

    for step in track(range(config.steps), description="gan", disable=not progress, transient=True):
        for _ in range(config.critic_steps):
            batch = torch.multinomial(draw_weights, config.batch_size, replacement=True, generator=draws).to(device)
            one_hot = model.one_hot(targets[batch])
            with torch.no_grad():
                fake = model.generator(noise(config.batch_size), one_hot)
            real = rows[batch]
            mix = torch.rand(config.batch_size, 1, generator=draws).to(device)
            critic_loss = (model.critic(fake, one_hot).mean() - model.critic(real, one_hot).mean()
                           + config.penalty * gradient_penalty(model.critic, real, fake, one_hot, mix))
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_optimizer.step()
        batch = torch.multinomial(draw_weights, config.batch_size, replacement=True, generator=draws).to(device)
        one_hot = model.one_hot(targets[batch])
        generator_loss = -model.critic(model.generator(noise(config.batch_size), one_hot), one_hot).mean()
        generator_optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        generator_optimizer.step()
        critic_losses[step], generator_losses[step] = critic_loss.item(), generator_loss.item()
    model.zero_grad(set_to_none=True)
    return TrainedGAN(model=model, mean=mean, scale=scale, critic_losses=critic_losses,
                      generator_losses=generator_losses, version=content_version(model.config(),
                                                                                 _tensors(model, mean, scale)),
                      config=config)


def generate_features(trained: TrainedGAN, labels: np.ndarray, *, seed: int) -> np.ndarray:
    """float32 features ``[M, D]`` in the caller's space, one of class ``labels[i]`` each; a seed fixes them."""
    check_whole_number("seed", seed, minimum=0)
    model = trained.model
    targets = check_class_ids(labels, name="labels", classes=model.classes)
    device = next(model.parameters()).device
    noise = torch.randn(len(targets), model.noise_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        made = model.generator(noise, model.one_hot(torch.from_numpy(targets).to(device))).cpu().numpy()
    return made * np.float32(trained.scale) + trained.mean


def train_image_gan(images: np.ndarray, labels: np.ndarray, *, classes: int, steps: int = 300, seed: int = 0,
                    sample_weight: np.ndarray | None = None, progress: bool = False) -> TrainedGAN:
    """:func:`train_feature_gan` on uint8 28x28 grey ``images [N, 28, 28]``, as 784 pixel values in [0, 1]."""
    return train_feature_gan(_pixels(images), labels, classes=classes, steps=steps, seed=seed,
                             sample_weight=sample_weight, progress=progress)


def sample_gan_images(trained: TrainedGAN, labels: np.ndarray, *, seed: int) -> np.ndarray:
    """uint8 images ``[M, 28, 28]`` from a GAN of :func:`train_image_gan`, one of class ``labels[i]`` each."""
    if trained.model.dim != SIDE * SIDE:
        raise BadInputError(f"this GAN makes {trained.model.dim}-d features, not 28x28 images",
                            hint="train it with train_image_gan")
    pixels = generate_features(trained, labels, seed=seed).clip(0, 1)
    return (pixels * 255).round().astype(np.uint8).reshape(-1, SIDE, SIDE)


def save_gan(trained: TrainedGAN, folder: str | Path) -> Path:
    """Write ``gan.safetensors`` and ``gan.json`` as ``folder``, whole or not at all (a previous save is replaced)."""
    record = {"format": FORMAT_VERSION, "generator": "conditional-wgan-gp", "version": trained.version,
              "model": trained.model.config(), "training": asdict(trained.config),
              "critic_losses": trained.critic_losses.tolist(), "generator_losses": trained.generator_losses.tolist()}
    return write_generator(Path(folder), weights_file=WEIGHTS_FILE,
                           tensors=_tensors(trained.model, trained.mean, trained.scale), config_file=CONFIG_FILE,
                           record=record)


def load_gan(folder: str | Path, *, device: str | torch.device = "cpu") -> TrainedGAN:
    """Rebuild what :func:`save_gan` wrote; the weights must still match the recorded version."""
    config_path, weights_path = required_files(folder, CONFIG_FILE, WEIGHTS_FILE, what="GAN", writer="save_gan")
    try:
        record = json.loads(config_path.read_text())
        if record.get("format", 0) > FORMAT_VERSION:
            raise BadInputError(f"format {record['format']} is newer than this metalabel reads", path=config_path,
                                hint="upgrade metalabel")
        model = ConditionalWGAN(**record["model"])
        training = GANConfig(**record["training"])
        losses = [np.asarray(record[key], dtype=np.float32) for key in ("critic_losses", "generator_losses")]
        version = record["version"]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
        raise BadInputError(f"not a GAN record ({error})", path=config_path,
                            hint="point at a folder written by save_gan") from error
    tensors = read_generator_weights(weights_path, model, config=model.config(), version=version, what="GAN")
    return TrainedGAN(model=model.to(device), mean=tensors["normalization.mean"].numpy(),
                      scale=float(tensors["normalization.scale"]), critic_losses=losses[0],
                      generator_losses=losses[1], version=version, config=training)


def _pixels(images: np.ndarray) -> np.ndarray:
    if not (isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[1:] == (SIDE, SIDE)):
        shape = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise BadInputError(f"the image GAN is for 28x28 grayscale images [N, 28, 28], got {shape}",
                            hint="resize to 28x28 and convert to grey, or train a feature GAN on encoder features")
    if images.dtype != np.uint8:
        raise BadInputError(f"images must be uint8 (0-255), got dtype {images.dtype}",
                            hint="for floats in [0, 1]: (images * 255).round().astype(np.uint8)")
    return images.reshape(len(images), SIDE * SIDE).astype(np.float32) / 255


def _checked_weights(sample_weight: np.ndarray | None, labels: np.ndarray, *, classes: int) -> np.ndarray:
    """float64 sampling weights (the caller's, or ones); every class must have a row of positive weight."""
    weights = check_weights(sample_weight, name="sample_weight", rows=len(labels))
    weight_per_class = np.bincount(labels, weights=weights, minlength=classes)
    for cls in np.flatnonzero(~(weight_per_class > 0)):
        raise EmptyClassError("has no training row of positive weight, so the GAN cannot learn it", cls=str(cls),
                              hint="add rows of it, or number the classes present 0..k-1 and pass classes=k")
    return weights


def _tensors(model: ConditionalWGAN, mean: np.ndarray, scale: float) -> dict[str, Tensor]:
    """Everything that decides the generator's output, as the tensors saved to disk."""
    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    tensors["normalization.mean"] = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32))
    tensors["normalization.scale"] = torch.tensor(scale, dtype=torch.float32)
    return tensors
