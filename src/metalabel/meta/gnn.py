"""Few-shot learning with a graph neural network (Garcia and Bruna 2018), transductive over the query set.

Every support and query item of a task is a node. A node starts as its embedding
concatenated with its label: one-hot for a support item, uniform over the task's
classes for a query item (the label is what the graph has to fill in). Each
graph-convolution layer learns its own adjacency from the node features (an MLP on
``|x_i - x_j|``, normalised over each node's neighbours by a softmax), aggregates the
neighbours' features with it, and appends the result to the node's features (the
paper's dense connections). A last layer of the same kind reads out class logits; a
query's prediction is its node's logits. All queries sit in one graph, so each query
also learns from the others (transduction), as in the paper's semi-supervised setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

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
)


def label_nodes(support_y: Tensor, queries: int, ways: int, slots: int, dtype: torch.dtype) -> Tensor:
    """``[n_support + queries, slots]``: one-hot rows for the support, uniform over the task's ``ways`` for queries."""
    support = F.one_hot(support_y, slots).to(dtype)
    unknown = torch.zeros(queries, slots, dtype=dtype, device=support_y.device)
    unknown[:, :ways] = 1.0 / ways
    return torch.cat([support, unknown])


class EdgeWeights(nn.Module):
    """A learned adjacency: ``softmax_j(mlp(|x_i - x_j|) + log w_j)`` over every node ``j != i``.

    ``log w_j`` makes a node of weight ``w`` send its messages as ``w`` copies of it
    would, so a weight-0 node sends nothing (it is the same as absent).
    """

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, 1))

    def forward(self, nodes: Tensor, log_weights: Tensor) -> Tensor:
        scores = self.score((nodes.unsqueeze(1) - nodes.unsqueeze(0)).abs()).squeeze(-1) + log_weights
        # a node's own features enter through the concatenation, not through the adjacency
        self_loops = torch.eye(nodes.shape[0], dtype=torch.bool, device=nodes.device)
        return scores.masked_fill(self_loops, float("-inf")).softmax(-1)


class GraphConv(nn.Module):
    """One layer: learn the adjacency, aggregate the neighbours, mix ``[x, A x]`` linearly."""

    def __init__(self, in_features: int, out_features: int, edge_hidden: int) -> None:
        super().__init__()
        self.edges = EdgeWeights(in_features, edge_hidden)
        self.mix = nn.Linear(2 * in_features, out_features)

    def forward(self, nodes: Tensor, log_weights: Tensor) -> Tensor:
        return self.mix(torch.cat([nodes, self.edges(nodes, log_weights) @ nodes], -1))


class GraphNetwork(nn.Module):
    """Dense graph network: ``layers`` graph convolutions whose outputs are appended, then a logits layer."""

    def __init__(self, in_features: int, ways: int, *, hidden: int, layers: int, edge_hidden: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        width = in_features
        for _ in range(layers):
            self.convs.append(GraphConv(width, hidden, edge_hidden))
            width += hidden
        self.readout = GraphConv(width, ways, edge_hidden)
        # Start as a vote: logits = the neighbours' labels weighted by the learned adjacency, nothing else. The
        # gradient then reaches the adjacency from the first step; from a random readout it trained far slower.
        with torch.no_grad():
            self.readout.mix.weight.zero_()
            self.readout.mix.bias.zero_()
            label_slots = width + in_features - ways  # where the aggregated input labels sit in [x, A x]
            self.readout.mix.weight[:, label_slots:label_slots + ways] = torch.eye(ways)

    def forward(self, nodes: Tensor, log_weights: Tensor) -> Tensor:
        for conv in self.convs:
            nodes = torch.cat([nodes, F.leaky_relu(conv(nodes, log_weights), 0.1)], -1)
        return self.readout(nodes, log_weights)


class GraphLearner(TaskLearner):
    """Backbone embeddings + a meta-learned graph network that passes labels from support to query nodes.

    ``ways`` is the largest number of classes a task may have (label slots on every
    node; a task with fewer classes uses the first ones). Adapting stores the support
    set; :meth:`GraphClassifier.predict_proba` puts the items it is given into one
    graph with the support set, ``graph_queries`` at a time (a graph of n nodes costs
    n^2 edges), so a prediction depends on the other items predicted with it.
    Support and query are embedded in separate forward passes, as ProtoNet does.
    """

    algo = "gnn"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        ways: int = 5,
        feature_dim: int | None = None,
        hidden: int = 48,
        layers: int = 2,
        edge_hidden: int = 64,
        graph_queries: int = 128,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(backbone, batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size)
        feature_dim = output_width(backbone, feature_dim)
        if min(ways, hidden, edge_hidden, graph_queries) < 1 or layers < 0:
            raise BadInputError("ways, hidden, edge_hidden and graph_queries must be >= 1 and layers >= 0")
        self.ways, self.feature_dim, self.hidden, self.layers = ways, int(feature_dim), hidden, layers
        self.edge_hidden, self.graph_queries = edge_hidden, graph_queries
        self.graph = GraphNetwork(self.feature_dim + ways, ways, hidden=hidden, layers=layers,
                                  edge_hidden=edge_hidden)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"ways": self.ways, "feature_dim": self.feature_dim, "hidden": self.hidden, "layers": self.layers,
                "edge_hidden": self.edge_hidden, "graph_queries": self.graph_queries}

    def _check_ways(self, ways: int) -> None:
        if ways > self.ways:
            raise BadInputError(f"a task with {ways} classes needs more than the graph's {self.ways} label slots",
                                hint=f"build the learner with ways >= {ways}")

    def _query_logits(self, params: Params, support_emb: Tensor, support_y: Tensor, support_log_weights: Tensor,
                      query_emb: Tensor, ways: int) -> Tensor:
        """``[queries, ways]`` logits of the query nodes of one graph."""
        labels = label_nodes(support_y, query_emb.shape[0], ways, self.ways, support_emb.dtype)
        nodes = torch.cat([torch.cat([support_emb, query_emb]), labels], -1)
        log_weights = torch.cat([support_log_weights, query_emb.new_zeros(query_emb.shape[0])])
        logits = functional_call(self.graph, subtree(params, "graph."), (nodes, log_weights))
        return logits[support_emb.shape[0]:, :ways]

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        support_emb, query_emb = self._embed(params, buffers, support_x), self._embed(params, buffers, query_x)
        log_weights = support_emb.new_zeros(support_emb.shape[0])
        return F.cross_entropy(self._query_logits(params, support_emb, support_y, log_weights, query_emb, ways),
                               query_y)

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> GraphClassifier:
        """Remember the embedded support set; ``weights`` scale how much each example's messages count (0 = absent)."""
        ways = support_ways(x, y, weights)
        self._check_ways(ways)
        params, buffers = detached(dict(self.named_parameters())), self._call_buffers()
        with evaluating(self):
            support_emb = self._embed(params, buffers, x)
        log_weights = (support_emb.new_zeros(len(y)) if weights is None
                       else weights.to(support_emb.dtype).log())  # log 0 = -inf: the node sends nothing
        return GraphClassifier(self, params, buffers, support_emb, y, log_weights, ways)


class GraphClassifier:
    """A graph learner adapted to one task: the embedded support set and the learner's weights (shared, not copied)."""

    def __init__(self, learner: GraphLearner, params: Params, buffers: Mapping[str, Tensor | None],
                 support_emb: Tensor, support_y: Tensor, support_log_weights: Tensor, ways: int) -> None:
        self.learner, self.params, self.buffers = learner, params, buffers
        self.support_emb, self.support_y, self.support_log_weights = support_emb, support_y, support_log_weights
        self.ways = ways

    def embed(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._embed(self.params, self.buffers, x)

    def logits(self, x: Tensor) -> Tensor:
        """Logits of ``x``'s items, each graph holding the support set and up to ``graph_queries`` of them."""
        query_emb = self.embed(x)
        size = self.learner.graph_queries
        if len(query_emb) == 0:
            return query_emb.new_zeros(0, self.ways)
        with evaluating(self.learner):
            return torch.cat([
                self.learner._query_logits(self.params, self.support_emb, self.support_y, self.support_log_weights,
                                           query_emb[start:start + size], self.ways)
                for start in range(0, len(query_emb), size)
            ])

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(-1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)
