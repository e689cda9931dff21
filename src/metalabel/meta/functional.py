"""The functional core every meta-learner shares, built on ``torch.func``.

A learner never changes its own parameters while adapting: it reads them into a
``{name: tensor}`` dict, runs the wrapped module with ``functional_call`` on
whatever weights it needs (the meta-parameters, or fast weights derived from them),
and returns new tensors. That keeps ``adapt`` side-effect free, lets second-order
MAML differentiate through the inner loop with ordinary autograd, and lets the T
tasks of a meta-batch run either one by one or under ``torch.func.vmap``.

Two known traps are handled here rather than in each algorithm:

* ``vmap`` over tasks computes wrong *second-order* gradients through affine
  normalisation with batch statistics (BatchNorm in training/transductive use,
  LayerNorm, InstanceNorm; functorch issue 534; still so in torch 2.13). Forward
  values are right. :class:`TaskRunner` therefore checks vmap against the per-task
  loop on the first batch that needs gradients, and falls back to the loop where
  they disagree. Learners default to the loop: on CPU, at 15 queries, vmap was slower
  in every configuration of bench/meta_speed.py, and the check of ``"auto"`` holds
  both graphs at once (7.3 GB peak for 32 Conv-4 tasks, against 2.4 GB).
* BatchNorm statistics. ``batch_norm="transductive"`` (default, the MAML
  convention) always normalises with the statistics of the batch at hand, in
  meta-training and when adapting/predicting, and never reads or writes running
  statistics: a prediction depends on the other items predicted with it.
  ``batch_norm="running"`` normalises with batch statistics during meta-training,
  accumulates running statistics (each task updates its own copy, the copies are
  averaged into the module's buffers), and uses those running statistics when the
  learner is in eval mode and always in ``adapt``/``predict_proba``, so each item
  is predicted on its own.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError, EmptyClassError
from metalabel.meta.backbones import linear_head, output_width

log = logging.getLogger(__name__)

Params = dict[str, Tensor]
Buffers = Mapping[str, Tensor | None]  # None: BN running statistics left out (batch statistics are used)
TaskParallel = Literal["vmap", "loop", "auto"]
TaskMode = Literal["vmap", "loop"]  # how one batch's tasks actually run
BatchNormMode = Literal["transductive", "running"]
RUNNING_STAT_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@runtime_checkable
class Adapted(Protocol):
    """A model adapted to one task; the learner it came from is untouched."""

    def predict_proba(self, x: Tensor) -> Tensor: ...

    def embed(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class MetaLearner(Protocol):
    def meta_loss(self, batch: Episode) -> Tensor: ...

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> Adapted: ...


# ----------------------------------------------------------------------------- dict helpers


def subtree(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries under ``prefix`` ("head.") with the prefix stripped, for ``functional_call`` on a submodule."""
    return {name[len(prefix):]: value for name, value in tree.items() if name.startswith(prefix)}


def with_prefix(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {prefix + name: value for name, value in tree.items()}


def detached(params: Params) -> Params:
    return {name: value.detach() for name, value in params.items()}


# ----------------------------------------------------------------------------- losses


def weighted_cross_entropy(logits: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cross-entropy averaged with per-example weights (normalised by their sum).

    Normalising by the weight sum, not the count, makes weight 0 the same as leaving
    the example out.
    """
    if weights is None:
        return F.cross_entropy(logits, y)
    per_example = F.cross_entropy(logits, y, reduction="none")
    return (weights * per_example).sum() / weights.sum()


def class_means(embeddings: Tensor, y: Tensor, ways: int, weights: Tensor | None = None) -> Tensor:
    """``[ways, d]`` weighted mean embedding of each class (one-hot matmul, so it vmaps)."""
    membership = F.one_hot(y, ways).to(embeddings.dtype)
    if weights is not None:
        membership = membership * weights.to(embeddings.dtype).unsqueeze(1)
    return (membership.T @ embeddings) / membership.sum(0).unsqueeze(1)


def squared_distances(x: Tensor, centers: Tensor) -> Tensor:
    """``[n, k]`` squared Euclidean distances, expanded so memory is n*k, not n*k*d."""
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ centers.T + centers.pow(2).sum(1)


# ----------------------------------------------------------------------------- inner loop


class SGD:
    """Plain gradient step; ``lr`` may be a learnable scalar tensor (meta-learned inner lr)."""

    def __init__(self, lr: float | Tensor) -> None:
        self.lr = lr

    def init(self, params: Params) -> None:
        return None

    def step(self, params: Params, grads: Params, state: None, step: int) -> tuple[Params, None]:
        return {name: value - self.lr * grads[name] for name, value in params.items()}, None


class Adam:
    """Adam as pure functions on dicts, so it can run inside ``vmap`` (Reptile's inner optimizer).

    Same update as ``torch.optim.Adam``; the default ``beta1 = 0`` follows the Reptile paper.
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps

    def init(self, params: Params) -> tuple[Params, Params]:
        zeros = {name: torch.zeros_like(value) for name, value in params.items()}
        return zeros, dict(zeros)

    def step(
        self, params: Params, grads: Params, state: tuple[Params, Params], step: int
    ) -> tuple[Params, tuple[Params, Params]]:
        beta1, beta2 = self.betas
        first, second = state
        first = {k: beta1 * first[k] + (1 - beta1) * g for k, g in grads.items()}
        second = {k: beta2 * second[k] + (1 - beta2) * g * g for k, g in grads.items()}
        first_correction, second_correction = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
        new = {
            k: v - self.lr * (first[k] / first_correction) / ((second[k] / second_correction).sqrt() + self.eps)
            for k, v in params.items()
        }
        return new, (first, second)


StateT = TypeVar("StateT")


class StepRule(Protocol[StateT]):
    """An inner-loop optimizer as pure functions: ``init`` its state, then ``step`` the weights (SGD, Adam)."""

    def init(self, params: Params) -> StateT: ...

    def step(self, params: Params, grads: Params, state: StateT, step: int) -> tuple[Params, StateT]: ...


def inner_loop(
    loss_fn: Callable[[Params, Buffers], Tensor],
    params: Params,
    buffers: Buffers,
    *,
    steps: int,
    rule: StepRule[Any],
    first_order: bool,
) -> Params:
    """``steps`` updates of ``params`` on ``loss_fn(params, buffers)``; returns the fast weights.

    Gradients come from ``torch.func.grad``, which composes with ``vmap`` and with
    the outer autograd graph: the result stays differentiable in the initial
    ``params`` (second-order MAML). ``first_order=True`` cuts the inner gradients
    out of that graph, so d(fast)/d(params) is the identity (FOMAML, Reptile).
    ``buffers`` go in as an argument, not a closure: BN may update running
    statistics in place, which ``grad`` allows only on its inputs.
    """
    gradient_of = grad(loss_fn)
    state = rule.init(params)
    for step in range(steps):
        grads = gradient_of(params, buffers)
        if first_order:
            grads = detached(grads)
        params, state = rule.step(params, grads, state, step)
    return params


# ----------------------------------------------------------------------------- task parallelism


def _task_slice(tree: Any, index: int) -> Any:
    if isinstance(tree, dict):
        return {name: value[index] for name, value in tree.items()}
    return tree[index]


def map_tasks(
    task_fn: Callable[..., Tensor], inputs: Sequence[Any], *, mode: TaskMode, chunk_size: int | None
) -> Tensor:
    """``[T]`` outputs of ``task_fn`` on each task; ``inputs`` are tensors or dicts with a leading T axis."""
    if mode == "vmap":
        # randomness="different": dropout draws its own mask per task, as the loop would
        return vmap(task_fn, randomness="different", chunk_size=chunk_size)(*inputs)
    tasks = next(x for x in inputs if isinstance(x, Tensor)).shape[0]
    return torch.stack([task_fn(*(_task_slice(x, t) for x in inputs)) for t in range(tasks)])


def _flat(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, like)])


class TaskRunner:
    """Chooses how the T tasks of a meta-batch run: ``vmap`` (optionally chunked) or a loop.

    ``"loop"`` always loops. ``"vmap"`` and ``"auto"`` first verify vmap on the first
    batch that needs gradients: both ways are run and their meta-gradients compared;
    if they disagree (relative max-difference above ``tolerance``; see the module
    note on normalisation layers) the loop is used from then on. ``"auto"`` also
    times both runs of that batch and keeps the faster. A stochastic backbone
    (dropout) makes the two runs differ too, so it falls back to the safe loop, as
    does a backbone vmap cannot run. The decision is in :attr:`resolved` (set it
    to ``None`` to decide again, e.g. after moving the learner to another device),
    the measurements in :attr:`verification`.
    """

    def __init__(self, mode: TaskParallel = "auto", *, chunk_size: int | None = None) -> None:
        if mode not in ("vmap", "loop", "auto"):
            raise BadInputError(f"task_parallel must be 'vmap', 'loop' or 'auto', not {mode!r}")
        if chunk_size is not None and chunk_size < 1:
            raise BadInputError(f"chunk_size must be a positive number of tasks, not {chunk_size}")
        self.mode = mode
        self.chunk_size = chunk_size
        self.resolved: TaskMode | None = "loop" if mode == "loop" else None
        self.verification: dict[str, float] | None = None

    def run(self, objective: Callable[[TaskMode], tuple[Tensor, Any]], wrt: Sequence[Tensor]) -> tuple[Tensor, Any]:
        """``objective(mode) -> (loss, extra)``; returns the chosen run's ``(loss, extra)``."""
        if self.resolved is not None:
            return objective(self.resolved)
        if not (torch.is_grad_enabled() and wrt):
            # forward values under vmap are right, only gradients can be wrong: the check waits
            return self._vmap_or_loop(objective)
        return self._verify(objective, wrt)

    def _vmap_or_loop(self, objective: Callable[[TaskMode], tuple[Tensor, Any]]) -> tuple[Tensor, Any]:
        try:
            return objective("vmap")
        except RuntimeError as error:  # an op without a batching rule, data-dependent control flow, ...
            self._fall_back(f"vmap over tasks failed ({error})")
            return objective("loop")

    def _fall_back(self, reason: str) -> None:
        self.resolved = "loop"
        message = f"{reason}; running the tasks one by one"
        if self.mode == "vmap":
            warnings.warn(message, RuntimeWarning, stacklevel=5)  # points at the caller of meta_loss
        else:
            log.info(message)

    def _verify(self, objective: Callable[[TaskMode], tuple[Tensor, Any]], wrt: Sequence[Tensor]) -> tuple[Tensor, Any]:
        runs: dict[TaskMode, tuple[Tensor, Any]] = {}
        grads: dict[TaskMode, Tensor] = {}
        seconds: dict[TaskMode, float] = {}
        modes: tuple[TaskMode, ...] = ("loop", "vmap")
        for mode in modes:
            start = time.perf_counter()
            try:
                runs[mode] = objective(mode)
            except RuntimeError as error:
                if mode == "loop":
                    raise
                self._fall_back(f"vmap over tasks failed ({error})")
                return runs["loop"]
            grads[mode] = _flat(torch.autograd.grad(runs[mode][0], wrt, retain_graph=True, allow_unused=True), wrt)
            seconds[mode] = time.perf_counter() - start
        scale = grads["loop"].abs().max().clamp_min(torch.finfo(grads["loop"].dtype).tiny)
        difference = float((grads["vmap"] - grads["loop"]).abs().max() / scale)
        tolerance = 1e4 * torch.finfo(grads["loop"].dtype).eps
        self.verification = {"relative_difference": difference, "tolerance": tolerance,
                             "loop_seconds": seconds["loop"], "vmap_seconds": seconds["vmap"]}
        if difference > tolerance:
            self._fall_back(f"vmap over tasks gave meta-gradients {difference:.2g} (relative) away from the "
                            "per-task loop (affine BatchNorm/LayerNorm with batch statistics do this)")
            return runs["loop"]
        chosen: TaskMode = "vmap"
        if self.mode == "auto":
            chosen = min(seconds, key=seconds.__getitem__)
            log.info("task_parallel=auto chose %s (loop %.3fs, vmap %.3fs)", chosen, seconds["loop"], seconds["vmap"])
        self.resolved = chosen
        return runs[chosen]


# ----------------------------------------------------------------------------- inputs


def task_batch(batch: Episode) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(support_x, support_y, query_x, query_y)`` with a leading task axis (added for one episode)."""
    tensors: tuple[Tensor, ...] = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if not batch.batched:
        tensors = tuple(t.unsqueeze(0) for t in tensors)
    support_x, support_y, query_x, query_y = tensors
    for part, x, y in (("support", support_x, support_y), ("query", query_x, query_y)):
        if y.dim() != 2 or x.shape[:2] != y.shape:
            raise BadInputError(
                f"episode {part}_x has shape {tuple(x.shape)} but {part}_y has {tuple(y.shape)}",
                hint="give [T, n, ...] inputs with [T, n] labels (or [n, ...] and [n] for one task)",
            )
    if support_x.shape[0] != query_x.shape[0] or support_x.shape[2:] != query_x.shape[2:]:
        raise BadInputError(
            f"support_x {tuple(support_x.shape)} and query_x {tuple(query_x.shape)} disagree on tasks or item shape",
            hint="sample support and query from the same tasks",
        )
    return support_x, support_y.long(), query_x, query_y.long()


def support_ways(x: Tensor, y: Tensor, weights: Tensor | None) -> int:
    """Check a support set for ``adapt`` and return its number of classes (labels ``0..ways-1``)."""
    if y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise BadInputError(f"x has {x.shape[0]} rows but y has shape {tuple(y.shape)}",
                            hint="give one integer label per row of x")
    if y.numel() == 0 or int(y.min()) < 0:
        raise BadInputError("labels must be non-negative integers 0..ways-1 and at least one is needed")
    ways = int(y.max()) + 1
    if weights is not None:
        if weights.shape != y.shape or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise BadInputError(f"weights must be {tuple(y.shape)} finite and >= 0, got shape {tuple(weights.shape)}")
    mass = torch.zeros(ways, dtype=torch.float64, device=y.device).index_add_(
        0, y, torch.ones_like(y, dtype=torch.float64) if weights is None else weights.to(torch.float64)
    )
    for label in range(ways):
        if mass[label] <= 0:
            raise EmptyClassError("no support example with positive weight", cls=str(label),
                                  hint=f"labels must be 0..{ways - 1} with every class present")
    return ways


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """No autograd and eval mode (no dropout; BN on running stats if it reads them), flags restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training


# ----------------------------------------------------------------------------- learner base


class TaskLearner(nn.Module):
    """Base of the meta-learners: a backbone, BN handling, and the task-parallel meta-loss.

    Subclasses implement ``_task_objective`` (the outer objective of one task,
    computed functionally from a params dict) and ``adapt``, and list their
    hyper-parameters in ``_hyperparameters`` so checkpoints can rebuild them.
    """

    algo: ClassVar[str]

    def __init__(
        self,
        backbone: nn.Module,
        *,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if batch_norm not in ("transductive", "running"):
            raise BadInputError(f"batch_norm must be 'transductive' or 'running', not {batch_norm!r}")
        self.backbone = backbone
        self.batch_norm = batch_norm
        self.runner = TaskRunner(task_parallel, chunk_size=chunk_size)

    # -- configuration
    def config(self) -> dict[str, Any]:
        """Hyper-parameters such that ``type(self)(backbone, **config)`` rebuilds this learner."""
        return {**self._hyperparameters(), "batch_norm": self.batch_norm,
                "task_parallel": self.runner.mode, "chunk_size": self.runner.chunk_size}

    def _hyperparameters(self) -> dict[str, Any]:
        return {}

    # -- functional pieces
    def _running_stat_names(self) -> list[str]:
        return [
            f"{prefix}.{name}" if prefix else name
            for prefix, module in self.named_modules()
            if getattr(module, "track_running_stats", False)
            for name in RUNNING_STAT_BUFFERS
            if getattr(module, name, None) is not None
        ]

    def _call_buffers(self) -> dict[str, Tensor | None]:
        """Buffers for ``functional_call``; transductive BN gets ``None`` stats, so it uses batch statistics."""
        buffers: dict[str, Tensor | None] = dict(self.named_buffers())
        if self.batch_norm == "transductive":
            buffers.update(dict.fromkeys(self._running_stat_names()))
        return buffers

    def _embed(self, params: Params, buffers: Buffers, x: Tensor) -> Tensor:
        return functional_call(self.backbone, (subtree(params, "backbone."), subtree(buffers, "backbone.")), (x,))

    def _task_objective(
        self, params: Params, buffers: Buffers,
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        raise NotImplementedError

    def _check_ways(self, ways: int) -> None:
        """Hook for learners with a fixed number of outputs."""

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> Adapted:
        """A model adapted to the task ``(x, y)`` (rows weighted by ``weights``); every learner implements it."""
        raise NotImplementedError

    # -- the outer objective
    def meta_loss(self, batch: Episode) -> Tensor:
        """Mean over the batch's tasks of the outer objective; ``backward()`` gives the meta-gradient.

        The episodes' ``unlabeled_x`` is not used. In ``batch_norm="running"`` mode
        and training mode this also updates the BN running statistics.
        """
        support_x, support_y, query_x, query_y = task_batch(batch)
        ways = int(support_y.max()) + 1
        self._check_ways(ways)
        tasks = support_x.shape[0]
        params: Params = dict(self.named_parameters())
        shared_buffers = self._call_buffers()
        updates_running_stats = self.batch_norm == "running" and self.training
        stat_names = self._running_stat_names() if updates_running_stats else []
        # in "running" mode these are the module's own buffers, the ones in shared_buffers too
        stat_buffers = {name: self.get_buffer(name) for name in stat_names}

        def objective(mode: TaskMode) -> tuple[Tensor, dict[str, Tensor]]:
            # each task updates its own copy of the running statistics (in place, in BN's forward)
            task_stats = {name: stat_buffers[name].expand(tasks, *stat_buffers[name].shape).clone()
                          for name in stat_names}

            def one_task(stats: dict[str, Tensor], sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
                return self._task_objective(params, {**shared_buffers, **stats}, sx, sy, qx, qy, ways)

            losses = map_tasks(one_task, (task_stats, support_x, support_y, query_x, query_y),
                               mode=mode, chunk_size=self.runner.chunk_size)
            return losses.mean(), task_stats

        loss, task_stats = self.runner.run(objective, [p for p in params.values() if p.requires_grad])
        with torch.no_grad():
            for name, copies in task_stats.items():
                # the BN update is linear in the batch statistics: averaging the copies
                # applies the task-averaged statistics
                buffer = stat_buffers[name]
                buffer.copy_(copies[0] if not copies.is_floating_point() else copies.mean(0))
        return loss


class FastWeightLearner(TaskLearner):
    """Base of MAML and Reptile: backbone + N-way linear head, adapted by gradient steps.

    The head has ``ways`` outputs; a task with fewer classes uses the first ones
    (labels ``0..k-1``), so one learner serves any task of up to ``ways`` classes.
    ``adapt_head_only`` (ANIL) keeps the backbone fixed in the inner loop, so its
    features are computed once per task instead of once per step.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        ways: int,
        feature_dim: int | None,
        zero_init_head: bool,
        inner_steps: int,
        adapt_steps: int | None,
        adapt_head_only: bool,
        batch_norm: BatchNormMode,
        task_parallel: TaskParallel,
        chunk_size: int | None,
    ) -> None:
        super().__init__(backbone, batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size)
        feature_dim = output_width(backbone, feature_dim)
        if inner_steps < 0 or (adapt_steps is not None and adapt_steps < 0):
            raise BadInputError("inner_steps and adapt_steps must be >= 0")
        self.head = linear_head(feature_dim, ways, zero_init=zero_init_head)
        self.ways, self.feature_dim, self.zero_init_head = ways, feature_dim, zero_init_head
        self.inner_steps = inner_steps
        self.adapt_steps = inner_steps if adapt_steps is None else adapt_steps
        self.adapt_head_only = adapt_head_only

    def _hyperparameters(self) -> dict[str, Any]:
        return {"ways": self.ways, "feature_dim": self.feature_dim, "zero_init_head": self.zero_init_head,
                "inner_steps": self.inner_steps, "adapt_steps": self.adapt_steps}

    def _inner_rule(self, params: Params) -> StepRule:
        raise NotImplementedError

    def _check_ways(self, ways: int) -> None:
        if ways > self.ways:
            raise BadInputError(f"a task with {ways} classes needs more than the head's {self.ways} outputs",
                                hint=f"build the learner with ways >= {ways}")

    def _classify(self, head_params: Params, features: Tensor, ways: int) -> Tensor:
        return functional_call(self.head, head_params, (features,))[:, :ways]

    def _logits(self, params: Params, buffers: Buffers, x: Tensor, ways: int) -> Tensor:
        return self._classify(subtree(params, "head."), self._embed(params, buffers, x), ways)

    def _fit(
        self, params: Params, buffers: Buffers, x: Tensor, y: Tensor,
        weights: Tensor | None, ways: int, *, steps: int, first_order: bool,
    ) -> Params:
        """Fast weights after ``steps`` inner updates on ``(x, y)``; all of ``params``, adapted ones replaced."""
        rule = self._inner_rule(params)
        if self.adapt_head_only:
            features = self._embed(params, buffers, x)
            head = inner_loop(
                lambda head, _: weighted_cross_entropy(self._classify(head, features, ways), y, weights),
                subtree(params, "head."), {}, steps=steps, rule=rule, first_order=first_order,
            )
            return {**params, **with_prefix(head, "head.")}
        network = {name: p for name, p in params.items() if name.startswith(("backbone.", "head."))}
        fast = inner_loop(
            lambda network, buffers: weighted_cross_entropy(self._logits(network, buffers, x, ways), y, weights),
            network, buffers, steps=steps, rule=rule, first_order=first_order,
        )
        return {**params, **fast}

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> FastWeightClassifier:
        """``adapt_steps`` inner updates on the labeled ``x, y``; ``weights`` scale each example's loss (0 = absent).

        With ``batch_norm="transductive"`` a zero-weight example still enters the
        batch statistics of the inner steps.
        """
        ways = support_ways(x, y, weights)
        self._check_ways(ways)
        buffers = self._call_buffers()
        with evaluating(self):
            fast = self._fit(detached(dict(self.named_parameters())), buffers, x, y, weights, ways,
                             steps=self.adapt_steps, first_order=True)
        return FastWeightClassifier(self, fast, buffers, ways)


class FastWeightClassifier:
    """A MAML/Reptile learner adapted to one task: its fast weights (the learner is untouched)."""

    def __init__(self, learner: FastWeightLearner, params: Params, buffers: Buffers,
                 ways: int) -> None:
        self.learner, self.params, self.buffers, self.ways = learner, params, buffers, ways

    def embed(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._embed(self.params, self.buffers, x)

    def logits(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._logits(self.params, self.buffers, x, self.ways)

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(-1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)
