"""The recurrent meta-learner: it learns kanji, checkpoints (with its order counter), reproduces,
its meta-gradient matches finite differences, and it reads each training support set in a fresh order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metalabel as ml
from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError
from metalabel.meta import RecurrentLearner, build_backbone, load_learner, save_learner
from metalabel.meta.evaluation import meta_evaluate
from metalabel.meta.train import evaluation_sampler, meta_train

TINY = dict(algo="recurrent", backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=3,
            val_episodes=10, seed=0, progress=False)


@pytest.fixture(scope="module")
def kanji(tmp_path_factory):
    """Background characters to meta-train on, and evaluation-split characters never seen in training."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield (ml.datasets.load("kanji", max_classes=40, samples_per_class=10, progress=False),
               ml.datasets.load("kanji", split="evaluation", max_classes=20, samples_per_class=10, progress=False))


def tiny_recurrent_learner(**options) -> RecurrentLearner:
    torch.manual_seed(0)
    backbone = build_backbone("mlp", in_features=3, hidden=[4], out_features=3)
    return RecurrentLearner(backbone, ways=3, hidden=4, attention=3, **options).double()


def tiny_episode(seed: int = 0) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(2)
    return Episode(torch.randn(6, 3, generator=gen, dtype=torch.float64), y,
                   torch.randn(6, 3, generator=gen, dtype=torch.float64), y)


def test_meta_training_on_kanji_learns_well_above_chance(kanji):
    background, evaluation = kanji
    learner = meta_train(background, steps=200, val_every=200, **TINY)
    result = meta_evaluate(learner, evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=60, seed=0))
    # chance is 1/3; 200 episodes reached 67% here (unseen characters)
    assert result.accuracy - result.ci95 > 0.5, result


def test_checkpoint_round_trips_bit_for_bit(kanji, tmp_path):
    background, evaluation = kanji
    learner = meta_train(background, steps=3, val_every=3, **TINY)
    loaded = load_learner(save_learner(learner, tmp_path / "recurrent"))
    assert isinstance(loaded, RecurrentLearner) and loaded.config() == learner.config()
    assert learner.state_dict().keys() == loaded.state_dict().keys()
    for name, value in learner.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert int(loaded.orders_drawn) == 3  # one batch of orders per meta-update
    episode = evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=1, seed=0)[0]
    predictions = [model.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
                   for model in (learner, loaded)]
    assert torch.equal(*predictions)
    # training goes on with the same support orders
    batch = evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=2, seed=1).batch(0, 2)
    assert torch.equal(learner.meta_loss(batch), loaded.meta_loss(batch))


def test_seeded_runs_reproduce(kanji):
    background, _ = kanji
    first, second, other = (meta_train(background, steps=5, val_every=5, **(TINY | {"seed": seed}))
                            for seed in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_each_meta_loss_reads_the_support_set_in_a_fresh_seeded_order():
    learner = tiny_recurrent_learner()
    episode = tiny_episode()
    losses = [learner.meta_loss(episode) for _ in range(3)]
    assert len({float(loss.detach()) for loss in losses}) == 3  # same task, other orders
    learner.orders_drawn.zero_()
    assert torch.equal(learner.meta_loss(episode), losses[0])
    # the order is all that changed: the task's loss in the order meta_loss drew for it
    learner.orders_drawn.zero_()
    params, buffers = dict(learner.named_parameters()), learner._call_buffers()
    order = torch.from_numpy(np.random.default_rng([learner.seed, 0, 0]).random((1, 6)).argsort(-1))[0]
    by_hand = learner._task_objective(params, buffers, episode.support_x[order], episode.support_y[order],
                                      episode.query_x, episode.query_y, 3)
    torch.testing.assert_close(by_hand, losses[0], rtol=0, atol=1e-12)


class MetaLossOf(torch.nn.Module):
    """``forward()`` is the learner's meta-loss on one batch (always the first order drawn), for ``functional_call``."""

    def __init__(self, learner: RecurrentLearner, batch: Episode) -> None:
        super().__init__()
        self.learner, self.batch = learner, batch

    def forward(self) -> torch.Tensor:
        self.learner.orders_drawn.zero_()  # the same support order in every evaluation
        return self.learner.meta_loss(self.batch)


def test_meta_gradient_matches_finite_differences():
    learner = tiny_recurrent_learner()
    # away from the vote initialisation, where the output layer reads only the labels (the rest gets no gradient yet)
    torch.nn.init.normal_(learner.reader.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    wrapped = MetaLossOf(learner, tiny_episode())
    names = [name for name, _ in wrapped.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in wrapped.parameters())

    def meta_loss(*weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(wrapped, dict(zip(names, weights)), ())

    assert torch.autograd.gradcheck(meta_loss, values, eps=1e-6, atol=1e-8)
    gradients = torch.autograd.grad(meta_loss(*values), values)
    assert all(g.abs().max() > 0 for g in gradients)  # not vacuous: every part of the network gets a gradient


def test_zero_weight_is_the_same_as_leaving_the_example_out():
    learner = tiny_recurrent_learner()
    episode = tiny_episode()
    weights = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
    kept = weights > 0
    with_zeros = learner.adapt(episode.support_x, episode.support_y, weights=weights).predict_proba(episode.query_x)
    without = learner.adapt(episode.support_x[kept], episode.support_y[kept],
                            weights=weights[kept]).predict_proba(episode.query_x)
    torch.testing.assert_close(with_zeros, without, rtol=0, atol=1e-12)
    unweighted = learner.adapt(episode.support_x[kept], episode.support_y[kept]).predict_proba(episode.query_x)
    assert (unweighted - without).abs().max() > 1e-6  # and the weights do something


def test_adapt_is_pure_deterministic_and_averages_its_orders():
    learner = tiny_recurrent_learner(adapt_orders=3)
    before = {name: value.clone() for name, value in learner.state_dict().items()}
    episode = tiny_episode()
    first = learner.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
    second = learner.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first.sum(-1), torch.ones(6, dtype=torch.float64))
    assert all(torch.equal(before[name], value) for name, value in learner.state_dict().items())
    assert all(p.grad is None for p in learner.parameters())
    one_order = tiny_recurrent_learner(adapt_orders=1)
    assert (one_order.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
            - first).abs().max() > 1e-6
    with pytest.raises(BadInputError, match="label slots"):
        learner.adapt(episode.support_x, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(BadInputError, match="adapt_orders"):
        RecurrentLearner(build_backbone("mlp", in_features=3, hidden=[4], out_features=3), adapt_orders=0)
