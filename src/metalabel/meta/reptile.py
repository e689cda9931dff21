"""Reptile (Nichol et al. 2018): move the initialisation toward the weights each task trains to."""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError
from metalabel.meta.functional import (
    SGD,
    Adam,
    BatchNormMode,
    FastWeightLearner,
    Params,
    StepRule,
    TaskParallel,
    detached,
)


class Reptile(FastWeightLearner):
    """Reptile as an ordinary loss, so the usual ``backward(); optimizer.step()`` loop does its update.

    For each task, ``inner_steps`` full-batch steps of ``inner_optimizer`` train
    the weights ``theta`` to ``phi`` on all the task's labeled data (support and
    query together: Reptile has no train/test split inside a task). The Reptile
    update is ``theta += eps * mean_tasks(phi - theta)``. :meth:`meta_loss` returns
    the surrogate ``mean_tasks 0.5 * ||theta - stopgrad(phi)||^2`` whose gradient is
    exactly ``theta - mean(phi)``, so outer SGD with lr ``eps`` *is* Reptile (outer
    Adam gives the common Adam-on-Reptile-direction variant). The surrogate's value
    is half the squared distance the task moved the weights. :meth:`meta_gradient`
    returns that direction as a dict. :meth:`adapt` takes ``adapt_steps`` steps
    (default ``inner_steps``) on the given support set.
    """

    algo = "reptile"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        ways: int = 5,
        feature_dim: int | None = None,
        inner_steps: int = 5,
        inner_lr: float = 1e-3,
        inner_optimizer: Literal["adam", "sgd"] = "adam",
        adam_betas: Sequence[float] = (0.0, 0.999),
        adapt_steps: int | None = None,
        zero_init_head: bool = False,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(
            backbone, ways=ways, feature_dim=feature_dim, zero_init_head=zero_init_head,
            inner_steps=inner_steps, adapt_steps=adapt_steps, adapt_head_only=False,
            batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size,
        )
        if inner_optimizer not in ("adam", "sgd"):
            raise BadInputError(f"inner_optimizer must be 'adam' or 'sgd', not {inner_optimizer!r}")
        if inner_lr <= 0:
            raise BadInputError(f"inner_lr must be positive, not {inner_lr}")
        self.inner_lr, self.inner_optimizer = inner_lr, inner_optimizer
        self.adam_betas = (float(adam_betas[0]), float(adam_betas[1]))

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "inner_lr": self.inner_lr,
                "inner_optimizer": self.inner_optimizer, "adam_betas": list(self.adam_betas)}

    def _inner_rule(self, params: Params) -> StepRule:
        return Adam(self.inner_lr, self.adam_betas) if self.inner_optimizer == "adam" else SGD(self.inner_lr)

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        x, y = torch.cat([support_x, query_x]), torch.cat([support_y, query_y])
        # the inner run starts from detached weights: Reptile never differentiates through it
        trained = self._fit(detached(params), buffers, x, y, None, ways, steps=self.inner_steps, first_order=True)
        # reduce, not sum(): sum's start value 0 would make the result a Tensor | int
        return 0.5 * functools.reduce(operator.add, (((params[name] - trained[name]) ** 2).sum() for name in params))

    def meta_gradient(self, batch: Episode) -> Params:
        """``theta - mean_tasks(phi)`` per parameter: the gradient of :meth:`meta_loss`."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        directions = torch.autograd.grad(self.meta_loss(batch), list(params.values()))
        return dict(zip(params, directions))
