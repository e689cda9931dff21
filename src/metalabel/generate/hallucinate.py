"""Feature hallucination (Wang, Girshick, Hebert and Hariharan 2018, "Low-shot learning from imaginary data").

A generator ``G(seed feature, noise) -> new feature of the seed's class`` is meta-trained end to end
through a prototypical classifier's query loss: the imagined examples are whatever makes few-shot
classification better, not necessarily realistic ones. The feature space stays fixed (a frozen
encoder or a meta-learned embedding); only ``G`` learns.

Training also measures episode accuracy with and without hallucination on validation episodes,
so the caller can keep or drop the generator on evidence rather than hope.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import Tensor, nn

from metalabel.data.arrays import check_class_ids, check_matrix
from metalabel.data.dataset import UNLABELED
from metalabel.data.episodes import EpisodeSampler
from metalabel.errors import BadInputError, NotEnoughDataError, check_whole_number
from metalabel.generate.weights import content_version, read_generator_weights, seeded_linear, write_generator
from metalabel.label.transductive import prototype_logits
from metalabel.meta.checkpoint import required_files

GENERATOR_NAME = "hallucinator"
FORMAT_VERSION = 1
WEIGHTS_FILE = "hallucinator.safetensors"
CONFIG_FILE = "hallucinator.json"
_VALIDATION_STREAM = 1  # keeps validation episodes and noise apart from the training ones drawn from the same seed




class Hallucinator(nn.Module):
    """``G(seeds [B, dim], noise [B, noise_dim]) = seeds + MLP([seeds, noise])``: new features ``[B, dim]``.

    The last layer starts at zero, so an untrained ``G`` returns its seeds unchanged: hallucination
    starts out neither helping nor hurting, and training moves it only where the query loss says so.
    ``seed`` fixes the initial weights.
    """

    def __init__(self, dim: int, *, noise_dim: int = 32, hidden: int = 256, seed: int = 0) -> None:
        super().__init__()
        check_whole_number("dim", dim, minimum=1)
        check_whole_number("noise_dim", noise_dim, minimum=1)
        check_whole_number("hidden", hidden, minimum=1)
        check_whole_number("seed", seed, minimum=0)
        self.dim, self.noise_dim, self.hidden, self.seed = int(dim), int(noise_dim), int(hidden), int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        # built in this order so the generator's draws (and so the weights) stay those of a seed
        first = seeded_linear(self.dim + self.noise_dim, self.hidden, generator, negative_slope=0.2)
        second = seeded_linear(self.hidden, self.hidden, generator, negative_slope=0.2)
        last = seeded_linear(self.hidden, self.dim, generator, negative_slope=0.2)
        nn.init.zeros_(last.weight)
        self.delta = nn.Sequential(first, nn.LeakyReLU(0.2), second, nn.LeakyReLU(0.2), last)

    def forward(self, seeds: Tensor, noise: Tensor) -> Tensor:
        return seeds + self.delta(torch.cat([seeds, noise], dim=1))

    def config(self) -> dict:
        """The keyword arguments that rebuild this module: ``Hallucinator(**config)``."""
        return {"dim": self.dim, "noise_dim": self.noise_dim, "hidden": self.hidden, "seed": self.seed}


@dataclass(frozen=True)
class HallucinatorConfig:
    """How a hallucinator was trained (see :func:`train_hallucinator`)."""

    ways: int = 5
    shots: int = 1
    queries: int = 10
    extra_per_class: int = 5
    steps: int = 500
    lr: float = 1e-3
    seed: int = 0
    normalize: bool = True
    noise_dim: int = 32
    hidden: int = 256
    val_episodes: int = 100
    val_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries", "extra_per_class", "steps", "noise_dim", "hidden", "val_episodes"):
            check_whole_number(name, getattr(self, name), minimum=1)
        check_whole_number("seed", self.seed, minimum=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise BadInputError(f"lr must be a finite number > 0, got {self.lr!r}", hint="e.g. 1e-3")
        if self.val_classes is not None:
            # a tuple, so the frozen config stays hashable and round-trips through JSON lists
            object.__setattr__(self, "val_classes", tuple(int(c) for c in self.val_classes))


@dataclass(frozen=True, eq=False)
class TrainedHallucinator:
    """A trained generator, the normalization it works in, and the evidence for or against using it.

    Features are fed to ``model`` as ``(x - mean) / scale``. ``version`` is a short sha256 of the
    model's config, weights and normalization: the provenance of every item it generates.
    """

    model: Hallucinator
    mean: np.ndarray  # [D] float32
    scale: float
    losses: np.ndarray  # [steps] float32, the training episodes' query loss
    val_accuracy_with: float
    val_accuracy_without: float
    version: str
    config: HallucinatorConfig


@dataclass(frozen=True, eq=False)
class Generated:
    """New items and where each came from. ``parents[i]`` indexes the support row that seeded ``x[i]``."""

    x: np.ndarray  # [M, D] float32, in the caller's (unnormalized) feature space
    y: np.ndarray  # [M] int64, the parent's class
    parents: np.ndarray  # [M] int64
    generator: str
    version: str


def train_hallucinator(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 10,
    extra_per_class: int = 5,
    steps: int = 500,
    lr: float = 1e-3,
    seed: int = 0,
    normalize: bool = True,
    noise_dim: int = 32,
    hidden: int = 256,
    val_episodes: int = 100,
    val_classes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TrainedHallucinator:
    """Meta-train a :class:`Hallucinator` on ``features [N, D]`` with integer ``labels [N]`` (-1: unlabeled, unused).

    Each step draws a ``ways``-way ``shots``-shot episode (a pure function of ``(seed, step)``),
    imagines ``extra_per_class`` features per class from random support seeds and Gaussian noise,
    averages real and imagined features into prototypes and takes an Adam step on the query
    cross-entropy under negative squared Euclidean distance.

    Validation runs ``val_episodes`` fixed episodes under a separate seed: over ``val_classes``,
    which are then kept out of training (evidence on unseen classes), or by default over the
    training classes themselves. ``normalize`` centres the features and divides by one global
    scale, which leaves nearest-prototype decisions unchanged.
    """
    config = HallucinatorConfig(ways=ways, shots=shots, queries=queries, extra_per_class=extra_per_class,
                                steps=steps, lr=lr, seed=seed, normalize=bool(normalize), noise_dim=noise_dim,
                                hidden=hidden, val_episodes=val_episodes,
                                val_classes=None if val_classes is None else tuple(val_classes))
    x, y = _checked_features(features, labels, names=("features", "labels"))
    train_classes, validation_classes = _episode_classes(y, config)
    mean, scale = _normalization(x, normalize=config.normalize)
    normalized = (x - mean) / scale
    episode_options = {"ways": config.ways, "shots": config.shots, "queries": config.queries}
    training = EpisodeSampler(normalized, y, classes=train_classes, seed=config.seed, **episode_options)
    validation_seed = _stream_seed(config.seed, _VALIDATION_STREAM)
    validation = EpisodeSampler(normalized, y, classes=validation_classes, seed=validation_seed,
                                length=config.val_episodes, **episode_options)

    model = Hallucinator(x.shape[1], noise_dim=config.noise_dim, hidden=config.hidden, seed=config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    noise_source = torch.Generator().manual_seed(config.seed)
    losses = np.empty(config.steps, dtype=np.float32)
    for step in track(range(config.steps), description="hallucinator", disable=not progress, transient=True):
        episode = training[step].to(device)
        support = episode.support_x.view(config.ways, config.shots, -1)
        prototypes = _prototypes(model, support, extra=config.extra_per_class, generator=noise_source)
        loss = F.cross_entropy(prototype_logits(episode.query_x, prototypes), episode.query_y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.item()

    with_hallucination, without = _validation_accuracy(model, validation, config=config, device=device,
                                                       seed=validation_seed)
    return TrainedHallucinator(model=model, mean=mean, scale=scale, losses=losses,
                               val_accuracy_with=with_hallucination, val_accuracy_without=without,
                               version=content_version(model.config(), _tensors(model, mean, scale)), config=config)


def hallucinate(
    trained: TrainedHallucinator, x_support: np.ndarray, y_support: np.ndarray, *, per_class: int, seed: int
) -> Generated:
    """``per_class`` new features for every class in ``y_support``, each from a random support row of that class.

    Classes come out in ascending order, ``per_class`` rows each; the same ``seed`` gives the same rows.
    """
    check_whole_number("per_class", per_class, minimum=1)
    check_whole_number("seed", seed, minimum=0)
    x, y = _checked_features(x_support, y_support, names=("x_support", "y_support"), dim=trained.model.dim)
    unlabeled = np.flatnonzero(y == UNLABELED)
    if unlabeled.size:
        raise BadInputError("y_support holds -1 (unlabeled)", row=int(unlabeled[0]),
                            hint="pass only labeled support rows")
    generator = torch.Generator().manual_seed(seed)
    parents = np.concatenate([
        members[torch.randint(len(members), (per_class,), generator=generator).numpy()]
        for members in (np.flatnonzero(y == label) for label in np.unique(y))
    ])
    device = next(trained.model.parameters()).device
    seeds = torch.from_numpy((x[parents] - trained.mean) / trained.scale).to(device)
    with torch.no_grad():
        imagined = _imagine(trained.model, seeds, generator).cpu().numpy()
    return Generated(x=imagined * np.float32(trained.scale) + trained.mean, y=y[parents], parents=parents,
                     generator=GENERATOR_NAME, version=trained.version)


def save_hallucinator(trained: TrainedHallucinator, folder: str | Path) -> Path:
    """Write ``hallucinator.safetensors`` and ``hallucinator.json`` as ``folder``, whole or not at all.

    A previous save there is replaced.
    """
    folder = Path(folder)
    tensors = _tensors(trained.model, trained.mean, trained.scale)
    record = {
        "format": FORMAT_VERSION,
        "generator": GENERATOR_NAME,
        "version": trained.version,
        "model": trained.model.config(),
        "training": asdict(trained.config),
        "losses": trained.losses.tolist(),
        "val_accuracy_with": trained.val_accuracy_with,
        "val_accuracy_without": trained.val_accuracy_without,
    }
    return write_generator(folder, weights_file=WEIGHTS_FILE, tensors=tensors, config_file=CONFIG_FILE, record=record)


def load_hallucinator(folder: str | Path, *, device: str | torch.device = "cpu") -> TrainedHallucinator:
    """Rebuild what :func:`save_hallucinator` wrote; the weights must still match the recorded version."""
    config_path, weights_path = required_files(folder, CONFIG_FILE, WEIGHTS_FILE, what="hallucinator",
                                               writer="save_hallucinator")
    try:
        record = json.loads(config_path.read_text())
        if record.get("format", 0) > FORMAT_VERSION:
            raise BadInputError(f"format {record['format']} is newer than this metalabel reads", path=config_path,
                                hint="upgrade metalabel")
        model = Hallucinator(**record["model"])
        training = HallucinatorConfig(**record["training"])
        losses = np.asarray(record["losses"], dtype=np.float32)
        accuracies = float(record["val_accuracy_with"]), float(record["val_accuracy_without"])
        version = record["version"]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
        raise BadInputError(f"not a hallucinator record ({error})", path=config_path,
                            hint="point at a folder written by save_hallucinator") from error
    tensors = read_generator_weights(weights_path, model, config=model.config(), version=version,
                                     what="hallucinator")
    return TrainedHallucinator(model=model.to(device), mean=tensors["normalization.mean"].numpy(),
                               scale=float(tensors["normalization.scale"]), losses=losses,
                               val_accuracy_with=accuracies[0], val_accuracy_without=accuracies[1],
                               version=version, config=training)


def _imagine(model: Hallucinator, seeds: Tensor, generator: torch.Generator) -> Tensor:
    # noise is drawn on the CPU, so a seed gives the same noise on every device
    noise = torch.randn(len(seeds), model.noise_dim, generator=generator).to(seeds.device)
    return model(seeds, noise)


def _prototypes(model: Hallucinator, support: Tensor, *, extra: int, generator: torch.Generator) -> Tensor:
    """``[ways, D]`` means of the real support ``[ways, shots, D]`` and ``extra`` imagined features per class."""
    ways, shots, dim = support.shape
    picks = torch.randint(shots, (ways, extra, 1), generator=generator).to(support.device)
    seeds = support.gather(1, picks.expand(-1, -1, dim))
    imagined = _imagine(model, seeds.reshape(-1, dim), generator).view(ways, extra, dim)
    return torch.cat([support, imagined], dim=1).mean(dim=1)


@torch.no_grad()
def _validation_accuracy(
    model: Hallucinator, episodes: EpisodeSampler, *, config: HallucinatorConfig, device, seed: int
) -> tuple[float, float]:
    """Mean query accuracy over ``episodes``: (with hallucinated examples, real support only)."""
    generator = torch.Generator().manual_seed(seed)
    with_hallucination: list[float] = []
    without: list[float] = []
    for index in range(len(episodes)):
        episode = episodes[index].to(device)
        support = episode.support_x.view(config.ways, config.shots, -1)
        imagined = _prototypes(model, support, extra=config.extra_per_class, generator=generator)
        for prototypes, scores in ((imagined, with_hallucination), (support.mean(dim=1), without)):
            predicted = prototype_logits(episode.query_x, prototypes).argmax(dim=1)
            scores.append((predicted == episode.query_y).float().mean().item())
    return float(np.mean(with_hallucination)), float(np.mean(without))


def _checked_features(
    features: np.ndarray, labels: np.ndarray, *, names: tuple[str, str], dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The caller's arrays as float32 ``[N, D]`` and int64 ``[N]``, or a BadInputError saying what is wrong."""
    x_name, y_name = names
    x = check_matrix(features, name=x_name, columns="dims", min_rows=0, dtype=np.float32,
                     hint="drop or repair that row",
                     shape_hint="pass one feature vector per row, e.g. an encoder's output")
    if dim is not None and x.shape[1] != dim:
        raise BadInputError(f"{x_name} has {x.shape[1]} dims, but the hallucinator was trained on {dim}",
                            hint="embed the items with the encoder the hallucinator was trained on")
    y = check_class_ids(labels, name=y_name, rows=len(x), row_name=f"row of {x_name}", unlabeled=True)
    if not (y != UNLABELED).any():
        raise BadInputError(f"{y_name} holds no labeled rows", hint="label some examples first")
    return x, y


def _episode_classes(labels: np.ndarray, config: HallucinatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training classes, validation classes), each with enough examples for an episode."""
    ids, counts = np.unique(labels[labels != UNLABELED], return_counts=True)
    held_out = np.asarray(config.val_classes or (), dtype=np.int64)
    unknown = np.setdiff1d(held_out, ids)
    if unknown.size:
        raise BadInputError("val_classes names a class with no labeled example", cls=str(unknown[0]),
                            hint="hold out only classes that appear in labels")
    trained_on = ~np.isin(ids, held_out)
    train_classes = _classes_with_enough(ids[trained_on], counts[trained_on], config, purpose="training")
    if config.val_classes is None:
        return train_classes, train_classes
    return train_classes, _classes_with_enough(ids[~trained_on], counts[~trained_on], config, purpose="validation")


def _classes_with_enough(
    ids: np.ndarray, counts: np.ndarray, config: HallucinatorConfig, *, purpose: str
) -> np.ndarray:
    needed = config.shots + config.queries
    enough = counts >= needed
    if enough.sum() >= config.ways:
        return ids[enough]
    if not ids.size:
        raise BadInputError(f"no classes are left for {purpose}", hint="hold fewer classes out in val_classes")
    shortest = int(np.argmin(counts))
    raise NotEnoughDataError(
        f"an episode needs {config.ways} classes with shots + queries = {needed} examples each, but only "
        f"{int(enough.sum())} of the {len(ids)} {purpose} classes have that many; the shortest has {counts[shortest]}",
        cls=str(ids[shortest]),
        hint="lower ways, shots or queries, or label more examples",
    )


def _normalization(x: np.ndarray, *, normalize: bool) -> tuple[np.ndarray, float]:
    """Per-dimension mean and one global scale (RMS): one scale keeps distances' ranking, so prototypes agree."""
    if not normalize:
        return np.zeros(x.shape[1], dtype=np.float32), 1.0
    mean = x.mean(axis=0, dtype=np.float64)
    rms = float(np.sqrt(np.mean((x - mean) ** 2)))
    # float32 values, so the saved tensors and the numbers used here are the same bits
    return mean.astype(np.float32), float(np.float32(rms)) if rms > 0 else 1.0


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _tensors(model: Hallucinator, mean: np.ndarray, scale: float) -> dict[str, Tensor]:
    """Everything that decides the generator's output, as the tensors saved to disk."""
    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    tensors["normalization.mean"] = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32))
    tensors["normalization.scale"] = torch.tensor(scale, dtype=torch.float32)
    return tensors

