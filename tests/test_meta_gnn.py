"""The graph few-shot learner (Garcia and Bruna 2018): it learns kanji, checkpoints, reproduces,
its meta-gradient matches finite differences, and its graph is transductive over the query set."""

from __future__ import annotations

import pytest
import torch

import metalabel as ml
from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError
from metalabel.meta import GraphLearner, build_backbone, load_learner, save_learner
from metalabel.meta.evaluation import meta_evaluate
from metalabel.meta.train import evaluation_sampler, meta_train

TINY = dict(algo="gnn", backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=3,
            val_episodes=10, seed=0, progress=False)


@pytest.fixture(scope="module")
def kanji(tmp_path_factory):
    """Background characters to meta-train on, and evaluation-split characters never seen in training."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield (ml.datasets.load("kanji", max_classes=40, samples_per_class=10, progress=False),
               ml.datasets.load("kanji", split="evaluation", max_classes=20, samples_per_class=10, progress=False))


def tiny_graph_learner(**options) -> GraphLearner:
    torch.manual_seed(0)
    backbone = build_backbone("mlp", in_features=3, hidden=[4], out_features=3)
    return GraphLearner(backbone, ways=3, hidden=4, layers=1, edge_hidden=4, **options).double()


def tiny_episode(seed: int = 0) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(2)
    return Episode(torch.randn(6, 3, generator=gen, dtype=torch.float64), y,
                   torch.randn(6, 3, generator=gen, dtype=torch.float64), y)


def test_meta_training_on_kanji_learns_well_above_chance(kanji):
    background, evaluation = kanji
    learner = meta_train(background, steps=200, val_every=200, **TINY)
    result = meta_evaluate(learner, evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=60, seed=0))
    # chance is 1/3; 200 episodes reached 78% here (unseen characters)
    assert result.accuracy - result.ci95 > 0.5, result


def test_checkpoint_round_trips_bit_for_bit(kanji, tmp_path):
    background, evaluation = kanji
    learner = meta_train(background, steps=3, val_every=3, **TINY)
    loaded = load_learner(save_learner(learner, tmp_path / "gnn"))
    assert isinstance(loaded, GraphLearner) and loaded.config() == learner.config()
    assert learner.state_dict().keys() == loaded.state_dict().keys()
    for name, value in learner.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    episode = evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=1, seed=0)[0]
    predictions = [model.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
                   for model in (learner, loaded)]
    assert torch.equal(*predictions)


def test_seeded_runs_reproduce(kanji):
    background, _ = kanji
    first, second, other = (meta_train(background, steps=5, val_every=5, **(TINY | {"seed": seed}))
                            for seed in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


class MetaLossOf(torch.nn.Module):
    """``forward()`` is the learner's meta-loss on one batch, so ``functional_call`` can swap its weights."""

    def __init__(self, learner: GraphLearner, batch: Episode) -> None:
        super().__init__()
        self.learner, self.batch = learner, batch

    def forward(self) -> torch.Tensor:
        return self.learner.meta_loss(self.batch)


def test_meta_gradient_matches_finite_differences():
    learner = tiny_graph_learner()
    wrapped = MetaLossOf(learner, tiny_episode())
    names = [name for name, _ in wrapped.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in wrapped.parameters())

    def meta_loss(*weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(wrapped, dict(zip(names, weights)), ())

    assert torch.autograd.gradcheck(meta_loss, values, eps=1e-6, atol=1e-8)
    # not vacuous: every part of the network gets a gradient
    gradients = torch.autograd.grad(meta_loss(*values), values)
    assert all(g.abs().max() > 0 for g in gradients)


def test_zero_weight_is_the_same_as_leaving_the_example_out():
    learner = tiny_graph_learner()
    episode = tiny_episode()
    weights = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
    kept = weights > 0
    with_zeros = learner.adapt(episode.support_x, episode.support_y, weights=weights).predict_proba(episode.query_x)
    without = learner.adapt(episode.support_x[kept], episode.support_y[kept],
                            weights=weights[kept]).predict_proba(episode.query_x)
    torch.testing.assert_close(with_zeros, without, rtol=0, atol=1e-12)
    unweighted = learner.adapt(episode.support_x[kept], episode.support_y[kept]).predict_proba(episode.query_x)
    assert (unweighted - without).abs().max() > 1e-6  # and the weights do something


def test_queries_share_one_graph_up_to_graph_queries():
    learner = tiny_graph_learner(graph_queries=4)
    episode = tiny_episode()
    queries = torch.cat([episode.query_x, tiny_episode(1).query_x])  # 12 items: graphs of 4, 4 and 4
    adapted = learner.adapt(episode.support_x, episode.support_y)
    together = adapted.predict_proba(queries)
    assert together.shape == (12, 3)
    torch.testing.assert_close(together.sum(-1), torch.ones(12, dtype=torch.float64))
    by_graph = torch.cat([adapted.predict_proba(queries[start:start + 4]) for start in (0, 4, 8)])
    torch.testing.assert_close(together, by_graph, rtol=0, atol=1e-12)
    # transductive: a query's prediction depends on the other queries in its graph
    alone = torch.cat([adapted.predict_proba(queries[i:i + 1]) for i in range(4)])
    assert (alone - together[:4]).abs().max() > 1e-6


def test_adapt_leaves_the_learner_untouched_and_errors_name_the_problem():
    learner = tiny_graph_learner()
    before = {name: value.clone() for name, value in learner.state_dict().items()}
    episode = tiny_episode()
    learner.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
    assert all(torch.equal(before[name], value) for name, value in learner.state_dict().items())
    assert all(p.grad is None for p in learner.parameters())
    with pytest.raises(BadInputError, match="label slots"):
        learner.adapt(episode.support_x, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(BadInputError, match="feature_dim"):
        GraphLearner(build_backbone("identity"))
