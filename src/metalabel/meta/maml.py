"""MAML (Finn et al. 2017), its first-order variant FOMAML, and ANIL (Raghu et al. 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalabel.errors import BadInputError
from metalabel.meta.functional import (
    SGD,
    BatchNormMode,
    FastWeightLearner,
    Params,
    StepRule,
    TaskParallel,
)


class MAML(FastWeightLearner):
    """Learns an initialisation from which a few SGD steps on the support set fit the task.

    The outer objective is the query loss of the fast weights after ``inner_steps``
    SGD steps (lr ``inner_lr``) on the support set. By default its gradient is the
    exact second-order one, differentiated through the inner steps.
    ``first_order=True`` (FOMAML) treats the inner update as the identity: the
    meta-gradient is the query-loss gradient at the fast weights.
    ``anil=True`` adapts only the linear head in the inner loop (the backbone
    still gets meta-gradients). ``learn_inner_lr=True`` makes the inner lr a
    meta-learned parameter. ``adapt_steps`` (default ``inner_steps``) is the
    number of steps :meth:`adapt` takes.
    """

    algo = "maml"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        ways: int = 5,
        feature_dim: int | None = None,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        learn_inner_lr: bool = False,
        first_order: bool = False,
        anil: bool = False,
        adapt_steps: int | None = None,
        zero_init_head: bool = False,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(
            backbone, ways=ways, feature_dim=feature_dim, zero_init_head=zero_init_head,
            inner_steps=inner_steps, adapt_steps=adapt_steps, adapt_head_only=anil,
            batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size,
        )
        if inner_lr <= 0:
            raise BadInputError(f"inner_lr must be positive, not {inner_lr}")
        self.inner_lr: float | nn.Parameter = inner_lr
        if learn_inner_lr:
            self.inner_lr = nn.Parameter(torch.tensor(float(inner_lr)))
        self.learn_inner_lr, self.first_order, self.anil = learn_inner_lr, first_order, anil

    def _hyperparameters(self) -> dict[str, Any]:
        inner_lr = self.inner_lr.detach().item() if isinstance(self.inner_lr, Tensor) else self.inner_lr
        return {**super()._hyperparameters(), "inner_lr": inner_lr,
                "learn_inner_lr": self.learn_inner_lr, "first_order": self.first_order, "anil": self.anil}

    def _inner_rule(self, params: Params) -> StepRule:
        # read a learnable lr from params, the dict being differentiated, not from self
        return SGD(params.get("inner_lr", self.inner_lr))

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        fast = self._fit(params, buffers, support_x, support_y, None, ways,
                         steps=self.inner_steps, first_order=self.first_order)
        return F.cross_entropy(self._logits(fast, buffers, query_x, ways), query_y)
