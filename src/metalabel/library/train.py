"""Meta-training on a library: every finished project is a source of labeling tasks.

An episode's classes all come from one source: one project, or the projects that said
they share a label space (their classes meet by name). Classes of unrelated projects
never share an episode: "invoice vs receipt" from one project and "cat" from another
would make tasks no team ever labels. Whole sources are held out for validation, so the
checkpoint kept is the one that adapts best to projects it never saw, which is what a
new project is. The same held-out episodes are scored in the plain encoder space too
(nearest class mean), so the user sees whether the library helps before using it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalabel.data.episodes import Episode, EpisodeSampler, mean_confidence_interval
from metalabel.errors import BadInputError, NotEnoughDataError, check_whole_number
from metalabel.library.entries import TABLE_ENCODER, EncoderSpace, LibraryEntry
from metalabel.meta.backbones import build_backbone
from metalabel.meta.checkpoint import load_learner, save_learner
from metalabel.meta.functional import MetaLearner, TaskLearner
from metalabel.meta.protonet import ProtoNet
from metalabel.meta.train import ALGOS, TrainConfig, build_learner

MODEL_INFO = "library-model.json"


@dataclass(frozen=True, eq=False)
class TaskSource:
    """One source of tasks: a project's (or a shared label space's) labeled embeddings."""

    name: str
    projects: tuple[str, ...]
    x: Tensor
    y: np.ndarray
    class_names: tuple[str, ...]

    def eligible_classes(self, per_class: int) -> int:
        return int((np.bincount(self.y, minlength=len(self.class_names)) >= per_class).sum())


def task_sources(entries: list[LibraryEntry]) -> list[TaskSource]:
    """The library's entries grouped into sources of tasks (a project alone, or a shared label space)."""
    groups: dict[str, list[LibraryEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.manifest.group, []).append(entry)
    sources = []
    for group, members in sorted(groups.items()):
        names = sorted({name for entry in members for name in entry.manifest.class_names})
        index = {name: i for i, name in enumerate(names)}
        y = np.concatenate([np.array([index[entry.manifest.class_names[c]] for c in entry.labels], dtype=np.int64)
                            for entry in members])
        x = torch.from_numpy(np.concatenate([entry.embeddings for entry in members]).astype(np.float32))
        sources.append(TaskSource(group, tuple(entry.name for entry in members), x, y, tuple(names)))
    return sources


class ProjectEpisodes:
    """N-way K-shot episodes, each batch drawn from one source of tasks (picked at random, uniformly).

    Like ``EpisodeSampler``, batch ``start`` is a pure function of ``(seed, start)``.
    """

    def __init__(self, sources: list[TaskSource], *, ways: int, shots: int, queries: int, seed: int,
                 length: int | None = None) -> None:
        self.sources = sources
        self.ways, self.shots, self.queries = ways, shots, queries
        self.seed = seed
        self.samplers = [EpisodeSampler(source.x, source.y, ways=ways, shots=shots, queries=queries,
                                        seed=seed + i, length=length) for i, source in enumerate(sources)]
        self.length = length

    def _source_of(self, start: int) -> EpisodeSampler:
        return self.samplers[int(np.random.default_rng([self.seed, start]).integers(len(self.samplers)))]

    def batch(self, start: int, tasks: int) -> Episode:
        return self._source_of(start).batch(start, tasks)

    def episodes(self, count: int) -> list[Episode]:
        return [self._source_of(index)[index] for index in range(count)]


@dataclass(frozen=True)
class LibraryModel:
    """A learner meta-trained on a library, and what it was trained and judged on."""

    learner: TaskLearner
    encoder: EncoderSpace
    modality: str
    algo: str
    trained_on: tuple[str, ...]
    validated_on: tuple[str, ...]
    ways: int
    shots: int
    steps: int
    validation_accuracy: float
    validation_ci95: float
    encoder_space_accuracy: float
    """Nearest class mean in the plain encoder space on the same held-out episodes: the bar to beat."""

    @property
    def run_encoder(self) -> str | None:
        """The ``encoder`` option of ``Project.run`` that puts a pool in this model's space."""
        return None if self.encoder.name == TABLE_ENCODER else self.encoder.name

    def info(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "learner"} | {
            "encoder": asdict(self.encoder), "trained_on": list(self.trained_on),
            "validated_on": list(self.validated_on)}

    def summary(self) -> str:
        verdict = ("better than" if self.validation_accuracy > self.encoder_space_accuracy + self.validation_ci95
                   else "no better than")
        return (f"{self.algo} on {len(self.trained_on)} projects ({self.ways}-way {self.shots}-shot, {self.steps} "
                f"steps): {100 * self.validation_accuracy:.1f} ± {100 * self.validation_ci95:.1f}% on held-out "
                f"projects ({', '.join(self.validated_on)}), {verdict} the plain {self.encoder.name} space "
                f"({100 * self.encoder_space_accuracy:.1f}%)")


def train_on_library(entries: list[LibraryEntry], *, out: str | Path, algo: str = "protonet",
                     learner: TaskLearner | None = None, ways: int = 5, shots: int = 5, queries: int = 10,
                     steps: int = 1000, lr: float | None = None, hidden: int | None = None, out_features: int = 128,
                     validation: int | None = None, val_every: int = 100, val_episodes: int = 200,
                     seed: int = 0, progress: bool = False) -> LibraryModel:
    """Meta-train on the entries' projects and save the best learner (on held-out projects) to ``out``.

    ``learner``: any learner of ``metalabel.meta`` whose input is the encoder's embedding
    (default: ``algo`` over an MLP on the frozen embeddings that starts as the identity, so
    training starts from the plain encoder space; ``hidden``: a freshly initialized MLP
    ``hidden`` -> ``out_features`` instead). ``validation`` sources of tasks are held out (default: a fifth, at least
    one); ``ways`` is lowered to the fewest classes a training source has with
    ``shots + queries`` items. ``out`` is written whole or not at all.
    """
    for name, value, minimum in (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1),
                                 ("steps", steps, 1), ("val_every", val_every, 1), ("val_episodes", val_episodes, 1),
                                 ("seed", seed, 0)):
        check_whole_number(name, value, minimum=minimum)
    if hidden is not None:
        check_whole_number("hidden", hidden, minimum=1)
    check_whole_number("out_features", out_features, minimum=1)
    if learner is None and algo not in ALGOS:
        raise BadInputError(f"unknown algo {algo!r}", hint=f"choose one of {', '.join(ALGOS)}")
    if not entries:
        raise NotEnoughDataError("the library is empty", hint="add finished projects with `metalabel library add`")
    per_class = shots + queries
    sources = [s for s in task_sources(entries) if s.eligible_classes(per_class) >= 2]
    if len(sources) < 2:
        raise NotEnoughDataError(
            f"meta-training needs at least two projects (one to learn from, one held out to judge by) with two or "
            f"more classes of {per_class} labeled items (shots {shots} + queries {queries}); the library has "
            f"{len(sources)}", hint="add more finished projects, or lower --shots/--queries")
    rng = np.random.default_rng([seed, 4099])
    order = rng.permutation(len(sources))
    held = validation if validation is not None else max(1, round(len(sources) / 5))
    if not 1 <= held < len(sources):
        raise BadInputError(f"validation must hold out 1 to {len(sources) - 1} of the {len(sources)} projects, "
                            f"got {held}")
    val_sources = [sources[i] for i in order[:held]]
    train_sources = [sources[i] for i in order[held:]]
    train_ways = min(ways, *(s.eligible_classes(per_class) for s in train_sources))
    val_ways = min(ways, *(s.eligible_classes(per_class) for s in val_sources))
    training = ProjectEpisodes(train_sources, ways=train_ways, shots=shots, queries=queries, seed=seed)
    held_out = ProjectEpisodes(val_sources, ways=val_ways, shots=shots, queries=queries, seed=seed + 10_000,
                               length=val_episodes).episodes(val_episodes)

    dim = int(entries[0].embeddings.shape[1])
    width = [2 * dim] if hidden is None else [hidden]
    config = TrainConfig(algo=algo, backbone="mlp", ways=train_ways, shots=shots, queries=queries, steps=steps,
                         lr=lr, seed=seed, backbone_kwargs={"in_features": dim, "hidden": width,
                                                            "out_features": dim if hidden is None else out_features}
                         ).resolved()
    if learner is None:
        learner = build_learner(config)
        if hidden is None:
            _start_as_identity(learner.backbone, dim)
    elif not isinstance(learner, MetaLearner):
        raise BadInputError(f"{type(learner).__name__} has no meta_loss/adapt: it is not a metalabel.meta learner",
                            hint="pass a learner of metalabel.meta (ProtoNet, MAML, Reptile, ...) or an algo name")
    else:
        algo = learner.algo
    optimizer: torch.optim.Optimizer
    if algo == "reptile":  # as meta_train: outer SGD, step size annealed to zero (Nichol et al.)
        optimizer = torch.optim.SGD(learner.parameters(), lr=config.lr or 1.0)
    else:
        optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr or 1e-3)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
                 if algo == "reptile" else None)
    meta_batch = config.meta_batch or 1

    # the start is a candidate too: training that never helps held-out projects leaves the start in place
    best_accuracy, best_ci = _accuracy(learner, held_out)
    best_state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
    started = time.perf_counter()
    for step in range(1, steps + 1):
        learner.train()
        optimizer.zero_grad(set_to_none=True)
        learner.meta_loss(training.batch((step - 1) * meta_batch, meta_batch)).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % val_every == 0 or step == steps:
            accuracy, ci95 = _accuracy(learner, held_out)
            if accuracy > best_accuracy:
                best_accuracy, best_ci = accuracy, ci95
                best_state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
            if progress:
                print(f"step {step}/{steps}: held-out accuracy {100 * accuracy:.1f}% "
                      f"(best {100 * best_accuracy:.1f}%, {time.perf_counter() - started:.0f} s)", flush=True)
    learner.load_state_dict(best_state)
    learner.eval()
    plain, _ = _accuracy(ProtoNet(build_backbone("identity")), held_out)
    manifest = entries[0].manifest
    model = LibraryModel(learner, manifest.encoder, manifest.modality, algo,
                         tuple(p for s in train_sources for p in s.projects),
                         tuple(p for s in val_sources for p in s.projects), train_ways, shots, steps,
                         best_accuracy, best_ci, plain)

    def describe(staging: Path) -> None:
        (staging / MODEL_INFO).write_text(json.dumps(model.info(), indent=2) + "\n")

    save_learner(learner, out, extra=describe)
    return model


def _start_as_identity(backbone: torch.nn.Module, dim: int) -> None:
    """Set an MLP ``dim -> 2 dim -> dim`` to compute x = relu(x) - relu(-x) exactly.

    Meta-training then starts from the pretrained encoder's own geometry (nearest class
    mean, measured strong) instead of a random projection of it: a fresh 512 -> 128 MLP
    trained on three 20 Newsgroups projects lost 26 points on a held-out one.
    """
    layers = backbone.layers
    assert isinstance(layers, torch.nn.Sequential)
    first, last = layers[0], layers[-1]
    assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
    eye = torch.eye(dim)
    with torch.no_grad():
        first.weight.copy_(torch.cat([eye, -eye]))
        last.weight.copy_(torch.cat([eye, -eye], dim=1))
        first.bias.zero_()
        last.bias.zero_()


def _accuracy(learner: MetaLearner, episodes: list[Episode]) -> tuple[float, float]:
    """Mean query accuracy over fixed held-out episodes, and its 95% CI half-width."""
    accuracies = np.empty(len(episodes))
    for i, episode in enumerate(episodes):
        adapted = learner.adapt(episode.support_x, episode.support_y)
        with torch.no_grad():
            accuracies[i] = (adapted.predict_proba(episode.query_x).argmax(-1) == episode.query_y).float().mean()
    mean, half_width = mean_confidence_interval(accuracies)
    return float(mean), float(half_width)


def load_library_model(folder: str | Path) -> LibraryModel:
    """The model ``train_on_library`` saved in ``folder``."""
    from metalabel.meta.checkpoint import required_files

    (info_path,) = required_files(folder, MODEL_INFO, what="library model",
                                  writer="`metalabel library train`")
    learner = load_learner(folder)
    try:
        info = json.loads(info_path.read_text())
        encoder = EncoderSpace(**info["encoder"])
        return LibraryModel(learner, encoder, str(info["modality"]), str(info["algo"]), tuple(info["trained_on"]),
                            tuple(info["validated_on"]), int(info["ways"]), int(info["shots"]), int(info["steps"]),
                            float(info["validation_accuracy"]), float(info["validation_ci95"]),
                            float(info["encoder_space_accuracy"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise BadInputError(f"not a library model description ({error})", path=info_path,
                            hint="train it again with `metalabel library train`") from error

