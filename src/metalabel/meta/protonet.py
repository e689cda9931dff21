"""Prototypical networks (Snell et al. 2017): classify by distance to class-mean embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from metalabel.meta.functional import (
    Params,
    TaskLearner,
    class_means,
    detached,
    evaluating,
    squared_distances,
    support_ways,
)


class ProtoNet(TaskLearner):
    """Logits are minus the squared Euclidean distance to each class prototype.

    A prototype is the (weighted) mean embedding of the class's support examples;
    adapting is computing prototypes, so it needs no gradient steps and any number
    of ways works. Support and query are embedded in separate forward passes, in
    meta-training as when adapting and predicting.
    """

    algo = "protonet"

    def _hyperparameters(self) -> dict[str, Any]:
        return {}

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        prototypes = class_means(self._embed(params, buffers, support_x), support_y, ways)
        logits = -squared_distances(self._embed(params, buffers, query_x), prototypes)
        return F.cross_entropy(logits, query_y)

    def embed(self, x: Tensor) -> Tensor:
        """The meta-learned embedding of ``x``, with BatchNorm as this learner is configured.

        Under ``batch_norm="transductive"`` the statistics are those of ``x`` itself, so
        embed a pool in large batches, not one item at a time.
        """
        with evaluating(self):
            return self._embed(detached(dict(self.named_parameters())), self._call_buffers(), x)

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> PrototypeClassifier:
        """Prototypes from the labeled ``x, y``; ``weights`` make an example count less (0 = absent)."""
        ways = support_ways(x, y, weights)
        params, buffers = detached(dict(self.named_parameters())), self._call_buffers()
        with evaluating(self):
            prototypes = class_means(self._embed(params, buffers, x), y, ways, weights)
        return PrototypeClassifier(self, params, buffers, prototypes)


class PrototypeClassifier:
    """A ProtoNet adapted to one task: its prototypes and the embedding network's weights.

    It shares (does not copy) the learner's weights; keep the learner fixed while using it.
    """

    def __init__(self, learner: ProtoNet, params: Params, buffers: Mapping[str, Tensor | None],
                 prototypes: Tensor) -> None:
        self.learner, self.params, self.buffers, self.prototypes = learner, params, buffers, prototypes

    def embed(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._embed(self.params, self.buffers, x)

    def logits(self, x: Tensor) -> Tensor:
        return -squared_distances(self.embed(x), self.prototypes)

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(-1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)
