"""A recurrent meta-learner: a GRU reads the labeled support set as a sequence, then answers for each query.

The learner is a sequence model over ``(embedding, label)`` pairs, in the spirit of
SNAIL (Mishra et al. 2018) and the memory-based learners before it: a GRU steps
through the support items, each given with its one-hot label; a query is the next
step, given with no label, and its answer is read from the GRU's state plus an
attention read over the states the GRU had after each support item (SNAIL's
attention over its past; the read returns those states and their labels). Nothing is
adapted by gradient steps: learning the task *is* reading the sequence, so adapting
costs one pass over the support set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError
from metalabel.meta.backbones import output_width
from metalabel.meta.functional import (
    BatchNormMode,
    Params,
    TaskLearner,
    TaskParallel,
    detached,
    evaluating,
    subtree,
    support_ways,
    task_batch,
)

_TRAINING_STREAM, _ADAPT_STREAM = 0, 1  # separate random streams for meta-training and adapting orders


class SupportReader(nn.Module):
    """GRU over the support sequence; each query is one further step, answered with attention over the support."""

    def __init__(self, feature_dim: int, ways: int, *, hidden: int, attention: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(feature_dim + ways, hidden)
        self.query = nn.Linear(hidden + feature_dim, attention)
        self.key = nn.Linear(hidden + feature_dim, attention)
        self.value = nn.Linear(hidden, attention)
        self.out = nn.Linear(hidden + attention + ways, ways)
        # Start as a vote: logits = the labels read by attention, nothing else, so the gradient reaches the
        # attention from the first step (from a random output layer it trained far slower).
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.zero_()
            self.out.weight[:, hidden + attention:] = torch.eye(ways)

    def forward(self, support_emb: Tensor, support_labels: Tensor, support_log_weights: Tensor,
                query_emb: Tensor) -> Tensor:
        """Logits ``[R, m, ways]`` from ``R`` orderings ``[R, n, ...]`` of the support set and ``[m, d]`` queries."""
        orders, steps = support_labels.shape[:2]
        queries = query_emb.shape[0]
        state = support_emb.new_zeros(orders, self.cell.hidden_size)
        states = []
        for step in range(steps):
            state = self.cell(torch.cat([support_emb[:, step], support_labels[:, step]], -1), state)
            states.append(state)
        memory = torch.stack(states, 1)  # [R, n, hidden]
        # the query step: the item without a label, from the state after the whole support set
        query_in = torch.cat([query_emb, query_emb.new_zeros(queries, support_labels.shape[-1])], -1)
        answer = self.cell(query_in.repeat(orders, 1), state.repeat_interleave(queries, 0))
        answer = answer.reshape(orders, queries, -1)
        query_emb = query_emb.expand(orders, -1, -1)
        scores = (self.query(torch.cat([answer, query_emb], -1))
                  @ self.key(torch.cat([memory, support_emb], -1)).transpose(1, 2))
        attention = (scores / math.sqrt(self.key.out_features)
                     + support_log_weights.unsqueeze(1)).softmax(-1)  # [R, m, n]
        read = torch.cat([attention @ self.value(memory), attention @ support_labels], -1)
        return self.out(torch.cat([answer, read], -1))


class RecurrentLearner(TaskLearner):
    """Backbone embeddings read as a sequence by a meta-learned :class:`SupportReader`.

    Order. A GRU's state depends on the order it reads the support set in, and the
    episode sampler lists support items grouped by class (all of class 0, then all
    of class 1, ...). Trained on that order, the GRU could learn that position tells
    the label, or that the last items seen matter most, and fail on a support set
    listed any other way, as a labeling project's is. So :meth:`meta_loss` shuffles
    every task's support set: the only thing left to learn from order is that it
    carries nothing, and the GRU must keep every item it has read. The orders come
    from ``seed`` and a counter of meta-loss calls kept with the weights (buffer
    ``orders_drawn``), so a seeded run, and a resumed one, draws the same orders.
    :meth:`adapt` averages the predictions of ``adapt_orders`` fixed random orders of
    the support set, which makes them close to independent of the order given.

    ``ways`` is the largest number of classes a task may have (label slots; a task
    with fewer uses the first ones). ``weights`` in :meth:`adapt`: a weight-0 example
    is left out; a positive weight scales the example in the attention read, while the
    GRU reads it like any other. Queries are answered independently of each other.
    """

    algo = "recurrent"
    orders_drawn: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        *,
        ways: int = 5,
        feature_dim: int | None = None,
        hidden: int = 128,
        attention: int = 64,
        adapt_orders: int = 4,
        seed: int = 0,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(backbone, batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size)
        feature_dim = output_width(backbone, feature_dim)
        if min(ways, hidden, attention, adapt_orders) < 1 or seed < 0:
            raise BadInputError("ways, hidden, attention and adapt_orders must be >= 1 and seed >= 0")
        self.ways, self.feature_dim, self.hidden, self.attention = ways, int(feature_dim), hidden, attention
        self.adapt_orders, self.seed = adapt_orders, seed
        self.reader = SupportReader(self.feature_dim, ways, hidden=hidden, attention=attention)
        self.register_buffer("orders_drawn", torch.zeros((), dtype=torch.int64))

    def _hyperparameters(self) -> dict[str, Any]:
        return {"ways": self.ways, "feature_dim": self.feature_dim, "hidden": self.hidden,
                "attention": self.attention, "adapt_orders": self.adapt_orders, "seed": self.seed}

    def _check_ways(self, ways: int) -> None:
        if ways > self.ways:
            raise BadInputError(f"a task with {ways} classes needs more than the reader's {self.ways} label slots",
                                hint=f"build the learner with ways >= {ways}")

    def _logits(self, params: Params, support_emb: Tensor, support_y: Tensor, support_log_weights: Tensor,
                orders: Tensor, query_emb: Tensor, ways: int) -> Tensor:
        """``[R, m, ways]``: the support set read in each of the ``orders`` ``[R, n]``, then every query."""
        labels = F.one_hot(support_y, self.ways).to(support_emb.dtype)
        logits = functional_call(self.reader, subtree(params, "reader."),
                                 (support_emb[orders], labels[orders], support_log_weights[orders], query_emb))
        return logits[..., :ways]

    def meta_loss(self, batch: Episode) -> Tensor:
        """The mean query cross-entropy over the batch's tasks, each task's support set in a fresh random order."""
        support_x, support_y, query_x, query_y = task_batch(batch)
        rng = np.random.default_rng([self.seed, _TRAINING_STREAM, int(self.orders_drawn)])
        orders = torch.from_numpy(rng.random(tuple(support_y.shape)).argsort(-1)).to(support_y.device)
        self.orders_drawn += 1
        tasks = torch.arange(support_y.shape[0], device=support_y.device).unsqueeze(1)
        return super().meta_loss(Episode(support_x[tasks, orders], support_y[tasks, orders], query_x, query_y))

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        support_emb, query_emb = self._embed(params, buffers, support_x), self._embed(params, buffers, query_x)
        in_given_order = torch.arange(len(support_y), device=support_y.device).unsqueeze(0)  # shuffled by meta_loss
        log_weights = support_emb.new_zeros(len(support_y))
        return F.cross_entropy(self._logits(params, support_emb, support_y, log_weights, in_given_order,
                                            query_emb, ways)[0], query_y)

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> SequenceClassifier:
        """Embed the support set and fix ``adapt_orders`` orders to read it in; weight-0 examples are left out."""
        ways = support_ways(x, y, weights)
        self._check_ways(ways)
        if weights is not None:
            kept = weights > 0
            x, y, weights = x[kept], y[kept], weights[kept]
        params, buffers = detached(dict(self.named_parameters())), self._call_buffers()
        with evaluating(self):
            support_emb = self._embed(params, buffers, x)
        log_weights = support_emb.new_zeros(len(y)) if weights is None else weights.to(support_emb.dtype).log()
        rng = np.random.default_rng([self.seed, _ADAPT_STREAM])
        orders = torch.from_numpy(rng.random((self.adapt_orders, len(y))).argsort(-1)).to(y.device)
        return SequenceClassifier(self, params, buffers, support_emb, y, log_weights, orders, ways)


class SequenceClassifier:
    """A recurrent learner adapted to one task: its embedded support set and reading orders."""

    def __init__(self, learner: RecurrentLearner, params: Params, buffers: Mapping[str, Tensor | None],
                 support_emb: Tensor, support_y: Tensor, support_log_weights: Tensor, orders: Tensor,
                 ways: int) -> None:
        self.learner, self.params, self.buffers = learner, params, buffers
        self.support_emb, self.support_y, self.support_log_weights = support_emb, support_y, support_log_weights
        self.orders, self.ways = orders, ways

    def embed(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._embed(self.params, self.buffers, x)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities averaged over the reading orders."""
        query_emb = self.embed(x)
        with evaluating(self.learner):
            logits = self.learner._logits(self.params, self.support_emb, self.support_y, self.support_log_weights,
                                          self.orders, query_emb, self.ways)
        return logits.softmax(-1).mean(0)

    def predict(self, x: Tensor) -> Tensor:
        return self.predict_proba(x).argmax(-1)
