"""Meta-training: episodes in, a checkpointed learner out; periodic validation, best checkpoint, resume.

A run folder holds::

    train.json          the training configuration (a resumed run must match it)
    best/               the learner with the best validation accuracy (save_learner format)
    last/               the latest learner + optimizer.safetensors + state.json, for resuming
    history.jsonl       one line per validation: step, loss, accuracy, CI, seconds
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from metalabel.data.dataset import LabeledDataset
from metalabel.data.episodes import EpisodeSampler
from metalabel.errors import BadInputError, check_whole_number
from metalabel.files import remove_stale_staging, write_atomically
from metalabel.meta.backbones import build_backbone
from metalabel.meta.bayes import BayesProtoNet
from metalabel.meta.checkpoint import load_learner, save_learner
from metalabel.meta.evaluation import EvalResult, meta_evaluate
from metalabel.meta.functional import BatchNormMode, TaskLearner, TaskParallel
from metalabel.meta.gnn import GraphLearner
from metalabel.meta.maml import MAML
from metalabel.meta.protonet import ProtoNet
from metalabel.meta.recurrent import RecurrentLearner
from metalabel.meta.reptile import Reptile

if TYPE_CHECKING:  # torch.distributed is imported only by a data-parallel run
    from metalabel.meta.distributed import Collective

ALGOS = ("protonet", "maml", "fomaml", "anil", "reptile", "gnn", "recurrent", "bayes")

_T = TypeVar("_T")


@dataclass
class TrainConfig:
    """Everything that decides a meta-training run; stored in ``train.json``.

    Defaults follow the papers' Omniglot settings where they fit a CPU
    (MAML: meta-batch 32, inner lr 0.4, 1 step; Reptile: Adam inner loop, outer SGD
    with lr annealed linearly to 0). ``train_ways`` lets ProtoNet train with more
    classes per episode than it is tested on, as Snell et al. do.
    """

    algo: str = "protonet"
    backbone: str = "conv4"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    ways: int = 5
    shots: int = 1
    queries: int = 15
    train_ways: int | None = None
    meta_batch: int | None = None
    steps: int = 2000
    lr: float | None = None
    inner_lr: float | None = None
    inner_steps: int | None = None
    adapt_steps: int | None = None
    batch_norm: BatchNormMode = "transductive"
    task_parallel: TaskParallel = "loop"  # "auto" picks by timing, so two runs could differ in rounding
    val_every: int = 200
    val_episodes: int = 200
    val_fraction: float = 0.1
    time_budget_s: float | None = None
    seed: int = 0

    def resolved(self) -> TrainConfig:
        """Fill algorithm-specific defaults."""
        if self.algo not in ALGOS:
            raise BadInputError(f"unknown algo {self.algo!r}", hint=f"choose one of {', '.join(ALGOS)}")
        gradient_based = self.algo in ("maml", "fomaml", "anil")
        defaults = {
            "train_ways": self.ways,
            "meta_batch": (1 if self.algo in ("protonet", "gnn", "recurrent", "bayes") else 5 if self.algo == "reptile"
                           else 32 if self.ways <= 5 else 16),
            "lr": 1.0 if self.algo == "reptile" else 1e-3,
            "inner_lr": ((0.4 if self.ways <= 5 else 0.1) if gradient_based
                         else 1e-3 if self.algo == "reptile" else None),
            "inner_steps": (1 if self.ways <= 5 else 5) if gradient_based else 5 if self.algo == "reptile" else None,
            "adapt_steps": (3 if self.ways <= 5 else 5) if gradient_based else 50 if self.algo == "reptile" else None,
        }
        values = {key: getattr(self, key) if getattr(self, key) is not None else default
                  for key, default in defaults.items()}
        return TrainConfig(**{**asdict(self), **values})


def _resolved(value: _T | None, name: str) -> _T:
    """A field ``TrainConfig.resolved()`` fills in; unset, the caller skipped ``resolved()``."""
    if value is None:
        raise BadInputError(f"the training configuration has no {name}", hint="pass config.resolved()")
    return value


def build_learner(config: TrainConfig, *, in_channels: int = 1) -> TaskLearner:
    """A fresh learner for ``config`` (already resolved); weights drawn from ``config.seed``."""
    kwargs = dict(config.backbone_kwargs)
    if config.backbone in ("conv4", "resnet12"):
        kwargs.setdefault("in_channels", in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = build_backbone(config.backbone, **kwargs)
        batch_norm, task_parallel = config.batch_norm, config.task_parallel
        if config.algo == "protonet":
            return ProtoNet(backbone, batch_norm=batch_norm, task_parallel=task_parallel)
        if config.algo == "bayes":
            return BayesProtoNet(backbone, batch_norm=batch_norm, task_parallel=task_parallel)
        head_ways = max(config.ways, _resolved(config.train_ways, "train_ways"))
        if config.algo == "gnn":
            return GraphLearner(backbone, ways=head_ways, batch_norm=batch_norm, task_parallel=task_parallel)
        if config.algo == "recurrent":
            return RecurrentLearner(backbone, ways=head_ways, seed=config.seed, batch_norm=batch_norm,
                                    task_parallel=task_parallel)
        inner_steps = _resolved(config.inner_steps, "inner_steps")
        inner_lr = _resolved(config.inner_lr, "inner_lr")
        if config.algo == "reptile":
            return Reptile(backbone, ways=head_ways, inner_steps=inner_steps, inner_lr=inner_lr,
                           adapt_steps=config.adapt_steps, batch_norm=batch_norm, task_parallel=task_parallel)
        return MAML(backbone, ways=head_ways, inner_steps=inner_steps, inner_lr=inner_lr,
                    adapt_steps=config.adapt_steps, first_order=config.algo == "fomaml",
                    anil=config.algo == "anil", batch_norm=batch_norm, task_parallel=task_parallel)


def split_validation_classes(dataset: LabeledDataset, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, validation) class ids; whole groups (alphabets) go to validation when there are groups."""
    rng = np.random.default_rng([seed, 7919])
    classes = np.arange(dataset.num_classes)
    if dataset.groups is not None and len(set(dataset.groups)) >= 5:
        groups = np.array(dataset.groups)
        names = sorted(set(dataset.groups))
        rng.shuffle(names)
        val_groups, count = set(), 0
        for name in names:
            if count >= fraction * len(classes):
                break
            val_groups.add(name)
            count += int((groups == name).sum())
        is_val = np.isin(groups, list(val_groups))
    else:
        is_val = np.zeros(len(classes), dtype=bool)
        is_val[rng.permutation(len(classes))[: max(1, round(fraction * len(classes)))]] = True
    return classes[~is_val], classes[is_val]


class _Progress:
    """A rich progress bar, or nothing when quiet."""

    def __init__(self, enabled: bool, total: int, done: int, description: str) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.task = self.bar.add_task(description, total=total, completed=done, status="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def update(self, advance: int = 1, status: str | None = None) -> None:
        if self.bar and status:
            self.bar.update(self.task, advance=advance, status=status)
        elif self.bar:
            self.bar.update(self.task, advance=advance)


# Options that may change between a run and its resumption (train longer, validate more often).
_RESUMABLE_CHANGES = ("steps", "time_budget_s", "val_every")


def _identity(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in _RESUMABLE_CHANGES}


def _save_optimizer(optimizer: torch.optim.Optimizer, scheduler, folder: Path, state: dict) -> None:
    """Optimizer tensors to safetensors, the rest to JSON: resumable without pickle."""
    optimizer_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in optimizer_state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    payload = {**state, "param_groups": optimizer_state["param_groups"], "scalars": scalars,
               "scheduler": scheduler.state_dict() if scheduler else None}
    (folder / "state.json").write_text(json.dumps(payload, indent=2))


def _load_optimizer(optimizer: torch.optim.Optimizer, scheduler, folder: Path) -> dict:
    payload = json.loads((folder / "state.json").read_text())
    slots: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        index, key = name.split(".", 1)
        slots.setdefault(int(index), {})[key] = tensor
    for name, value in payload["scalars"].items():
        index, key = name.split(".", 1)
        slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": payload["param_groups"]})
    if scheduler and payload.get("scheduler"):
        scheduler.load_state_dict(payload["scheduler"])
    return payload


@dataclass(frozen=True)
class TrainingJob:
    """A meta-training run settled before its first step: the data, the options, the run folder.

    :func:`prepare_training` makes it in the calling process (options checked, run folder
    cleaned and its ``train.json`` written), so the processes of a data-parallel run only
    read the folder until rank 0 writes its first checkpoint.
    """

    source: LabeledDataset
    config: TrainConfig
    run: Path | None
    resuming: bool  # the run continues from ``run/last``
    device: str
    progress: bool
    init_state: dict[str, torch.Tensor] | None  # weights to start from instead of a fresh initialization


def training_config(options: dict[str, Any]) -> TrainConfig:
    """The resolved configuration of :func:`meta_train`'s ``options``; an unknown one is named."""
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise BadInputError(f"unknown training options {sorted(unknown)}",
                            hint=f"use {sorted(TrainConfig.__dataclass_fields__)}")
    return TrainConfig(**options).resolved()


def prepare_training(source: LabeledDataset | str, config: TrainConfig, *, out: str | Path | None, resume: bool,
                     device: str | torch.device, progress: bool, init: TaskLearner | None) -> TrainingJob:
    """Load a named source and prepare the run folder, as :func:`meta_train` describes."""
    if isinstance(source, str):
        from metalabel.datasets import from_spec

        source = from_spec(source, seed=config.seed)
    run = Path(out) if out is not None else None
    resuming = False
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        for saved in ("last", "best"):  # finish or undo a save a kill interrupted
            remove_stale_staging(run / saved)
        config_path = run / "train.json"
        resuming = config_path.exists() and resume and (run / "last" / "state.json").exists()
        if resuming and _identity(json.loads(config_path.read_text())) != _identity(asdict(config)):
            raise BadInputError("this run folder was trained with other options", path=config_path,
                                hint="use another --out folder, or the same options to resume")
        write_atomically(config_path, json.dumps(asdict(config), indent=2))
        if not resuming:
            (run / "history.jsonl").unlink(missing_ok=True)
    init_state = None if init is None else {k: v.detach().clone() for k, v in init.state_dict().items()}
    return TrainingJob(source, config, run, resuming, str(device), progress, init_state)


def meta_train(
    source: LabeledDataset | str,
    *,
    out: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    init: TaskLearner | None = None,
    workers: int = 1,
    ray: str | None = None,
    **options: Any,
) -> TaskLearner:
    """Meta-train a learner on episodes of ``source`` and return the best one by validation accuracy.

    ``source`` is a data set or a built-in name (``"kanji"`` uses its background
    split). ``options`` are :class:`TrainConfig` fields (``algo``, ``ways``,
    ``shots``, ``steps``, ``seed``, ...). With ``out``, checkpoints go there and a
    later call with the same options continues from the last one (saved at every
    validation and on Ctrl-C); ``steps`` may grow between calls, which for Reptile
    also stretches its learning-rate annealing. ``init`` starts from a learner's
    weights (same algorithm and backbone) instead of a fresh initialization, to
    continue meta-training on new tasks.

    ``workers`` > 1 splits each meta-batch over that many processes on this machine
    (torch.distributed, gloo), whose gradients are averaged, so each update is the
    one-process update up to float rounding; ``ray`` (``"local"`` or a cluster
    address) runs the workers through Ray Train instead. The checkpoints are the same
    files, written by the first worker, and any number of workers resumes them.
    """
    check_whole_number("workers", workers, minimum=1)
    config = training_config(options)

    def prepare(folder: str | Path | None) -> TrainingJob:
        return prepare_training(source, config, out=folder, resume=resume, device=device, progress=progress,
                                init=init)

    if workers == 1 and ray is None:
        return run_training(prepare(out))
    from metalabel.meta.distributed import check_data_parallel, train_data_parallel

    check_data_parallel(config, workers=workers, ray=ray)  # before the run folder is touched
    if out is not None:
        return train_data_parallel(prepare(out), workers=workers, ray=ray)
    # the first worker hands the learner back through its checkpoint
    with tempfile.TemporaryDirectory(prefix="metalabel-meta-train-") as scratch:
        return train_data_parallel(prepare(scratch), workers=workers, ray=ray)


def run_training(job: TrainingJob, collective: Collective | None = None) -> TaskLearner:
    """The training loop of one process: all of it alone, or one worker's share with ``collective``.

    In a data-parallel run every worker takes its share of each meta-batch's episodes,
    the gradients are averaged across workers before every worker takes the same
    optimizer step, and only the first worker validates and writes checkpoints.
    """
    source, config, run, device = job.source, job.config, job.run, job.device
    writes = collective is None or collective.rank == 0
    train_classes, val_classes = split_validation_classes(source, fraction=config.val_fraction, seed=config.seed)
    sampler = EpisodeSampler.from_dataset(source, ways=config.train_ways, shots=config.shots,
                                          queries=config.queries, classes=train_classes, seed=config.seed)
    validation = EpisodeSampler.from_dataset(source, ways=config.ways, shots=config.shots, queries=config.queries,
                                             classes=val_classes, seed=config.seed + 1,
                                             length=config.val_episodes)
    in_channels = sampler[0].support_x.shape[1]
    learner = build_learner(config, in_channels=in_channels).to(device)
    if job.init_state is not None:
        try:
            learner.load_state_dict(job.init_state)
        except RuntimeError as error:
            raise BadInputError(f"init's weights do not fit a {config.algo} learner with backbone "
                                f"{config.backbone!r} ({error})",
                                hint="continue with the same algo, backbone and backbone_kwargs") from error
    is_reptile = config.algo == "reptile"
    lr, meta_batch = _resolved(config.lr, "lr"), _resolved(config.meta_batch, "meta_batch")
    optimizer = (torch.optim.SGD(learner.parameters(), lr=lr) if is_reptile
                 else torch.optim.Adam(learner.parameters(), lr=lr))
    # Reptile anneals its outer step size linearly to zero (Nichol et al.); the others keep Adam's rate.
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / config.steps))
                 if is_reptile else None)

    step, best_accuracy, elapsed = 0, -1.0, 0.0
    if run is not None and job.resuming:
        learner.load_state_dict(load_learner(run / "last", device=device).state_dict())
        state = _load_optimizer(optimizer, scheduler, run / "last")
        step, best_accuracy, elapsed = state["step"], state["best_accuracy"], state["elapsed_s"]
        # "auto" picks vmap or the loop by timing; a resumed run keeps the first choice so it
        # continues bit for bit (the two agree only up to rounding)
        learner.runner.resolved = state.get("task_parallel") or learner.runner.resolved
    if run is not None and writes:  # resumed, or restarted by Ray Train before its first checkpoint (not resuming)
        _forget_validations_after(run / "history.jsonl", step)

    best_state: dict[str, torch.Tensor] = {}  # the best weights, kept in memory when there is no run folder

    def validate_and_checkpoint(loss_value: float) -> EvalResult:
        nonlocal best_accuracy
        result = meta_evaluate(learner, validation, device=device)
        record = {"step": step, "loss": loss_value, "val_accuracy": result.accuracy, "val_ci95": result.ci95,
                  "elapsed_s": round(elapsed, 1)}
        if run is not None:
            with open(run / "history.jsonl", "a") as history:
                history.write(json.dumps(record) + "\n")
        if result.accuracy > best_accuracy:
            best_accuracy = result.accuracy
            if run is not None:
                save_learner(learner, run / "best")
            else:
                best_state.update({k: v.detach().clone() for k, v in learner.state_dict().items()})
        if run is not None:
            save_last(run)
        return result

    def save_last(folder: Path) -> None:
        # the optimizer's state lands with the weights in one folder rename: a resume never mixes saves
        state = {"step": step, "best_accuracy": best_accuracy, "elapsed_s": elapsed,
                 "task_parallel": learner.runner.resolved}
        save_learner(learner, folder / "last",
                     extra=lambda staging: _save_optimizer(optimizer, scheduler, staging, state))

    def out_of_time() -> bool:
        late = config.time_budget_s is not None and elapsed >= config.time_budget_s
        # the first worker's clock decides for all, so every worker stops after the same step
        return late if collective is None or config.time_budget_s is None else collective.agree(late)

    learner.train()
    loss_value = float("nan")
    with _Progress(job.progress and writes, config.steps, step, f"{config.algo} {config.ways}w{config.shots}s") as bar:
        try:
            while step < config.steps:
                if out_of_time():
                    break
                started = time.perf_counter()
                first, tasks = step * meta_batch, meta_batch
                if collective is not None:
                    first, tasks = collective.share(first, tasks)
                batch = sampler.batch(first, tasks).to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = learner.meta_loss(batch)
                loss.backward()
                loss_value = (loss.item() if collective is None
                              else collective.average(learner, loss, weight=tasks / meta_batch))
                optimizer.step()
                if scheduler:
                    scheduler.step()
                step += 1
                elapsed += time.perf_counter() - started
                bar.update(status=f"loss {loss_value:.3f} best val {100 * max(best_accuracy, 0):.1f}%")
                if writes and (step % config.val_every == 0 or step == config.steps):
                    validate_and_checkpoint(loss_value)
                    learner.train()
        except KeyboardInterrupt:
            # keep every finished step: the next call with the same options resumes here
            if run is not None and writes:
                save_last(run)
            raise
    if writes and step % config.val_every and step < config.steps:  # stopped by the time budget between validations
        validate_and_checkpoint(loss_value)
    if run is not None and writes:
        return load_learner(run / "best", device=device)
    if best_state:
        learner.load_state_dict(best_state)
    return learner.eval()


def _forget_validations_after(history: Path, step: int) -> None:
    """Drop the history lines of validations after ``step``, the checkpoint a run resumes from: a kill between
    writing a validation's line and its checkpoint left a line the resumed run writes again (a torn last line
    goes too)."""
    if not history.exists():
        return
    lines = history.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if kept != lines:
        write_atomically(history, "".join(kept))


def evaluation_sampler(source: LabeledDataset | str, *, ways: int, shots: int, queries: int = 15,
                       episodes: int = 600, seed: int = 0) -> EpisodeSampler:
    """The fixed test episodes of a data set (``"kanji"`` means its held-out evaluation split)."""
    if isinstance(source, str):
        from metalabel.datasets import from_spec

        spec = "kanji:evaluation" if source == "kanji" else source
        source = from_spec(spec, seed=seed)
    return EpisodeSampler.from_dataset(source, ways=ways, shots=shots, queries=queries, seed=seed, length=episodes)
