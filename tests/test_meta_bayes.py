"""Bayesian prototypes: the conjugate posterior and predictive, fewer shots meaning less sure,
learning kanji, checkpoints, seeded runs and a finite-difference check of the meta-gradient."""

from __future__ import annotations

import math

import pytest
import torch

import metalabel as ml
from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError
from metalabel.meta import BayesProtoNet, build_backbone, load_learner, save_learner
from metalabel.meta.bayes import gaussian_prototypes, predictive_log_density
from metalabel.meta.evaluation import meta_evaluate
from metalabel.meta.train import evaluation_sampler, meta_train

TINY = dict(algo="bayes", backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=3,
            val_episodes=10, seed=0, progress=False)


@pytest.fixture(scope="module")
def kanji(tmp_path_factory):
    """Background characters to meta-train on, and evaluation-split characters never seen in training."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield (ml.datasets.load("kanji", max_classes=40, samples_per_class=10, progress=False),
               ml.datasets.load("kanji", split="evaluation", max_classes=20, samples_per_class=10, progress=False))


def tiny_learner() -> BayesProtoNet:
    torch.manual_seed(0)
    return BayesProtoNet(build_backbone("mlp", in_features=3, hidden=[4], out_features=3)).double()


def tiny_episode(seed: int = 0) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(2)
    return Episode(torch.randn(6, 3, generator=gen, dtype=torch.float64), y,
                   torch.randn(6, 3, generator=gen, dtype=torch.float64), y)


def test_posterior_and_predictive_are_the_conjugate_gaussian_ones():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    noise, prior = torch.tensor([0.5, 2.0], dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64)
    mean, variance = gaussian_prototypes(z, y, 2, noise, prior)
    prior_mean = (z[:3].mean(0) + z[3:].mean(0)) / 2
    for c, members in ((0, z[:3]), (1, z[3:])):
        n = len(members)
        posterior_variance = 1 / (1 / prior + n / noise)
        expected_mean = posterior_variance * (prior_mean / prior + members.sum(0) / noise)
        torch.testing.assert_close(mean[c], expected_mean)
        torch.testing.assert_close(variance[c], noise + posterior_variance)
    query = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    by_hand = torch.stack([
        torch.distributions.Normal(mean[c], variance[c].sqrt()).log_prob(query).sum(-1) for c in range(2)
    ], 1)
    torch.testing.assert_close(predictive_log_density(query, mean, variance), by_hand)


def test_fewer_shots_give_a_wider_predictive_and_weights_count_as_copies():
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise, prior = torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 4.0, dtype=torch.float64)
    _, variance = gaussian_prototypes(z, torch.tensor([0, 1, 1, 1, 1, 1]), 2, noise, prior)
    assert bool((variance[0] > variance[1]).all()) and bool((variance > noise).all())
    # weight 2 is the example twice; weight 0 is the example left out
    weighted = gaussian_prototypes(z[:4], torch.tensor([0, 0, 1, 1]), 2, noise, prior,
                                   torch.tensor([2.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    copied = gaussian_prototypes(z[[0, 0, 1, 3]], torch.tensor([0, 0, 0, 1]), 2, noise, prior)
    for a, b in zip(weighted, copied):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_adapted_model_is_a_distribution_and_the_learner_is_untouched():
    learner = tiny_learner()
    before = {name: value.clone() for name, value in learner.state_dict().items()}
    episode = tiny_episode()
    proba = learner.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
    assert proba.shape == (6, 3)
    torch.testing.assert_close(proba.sum(-1), torch.ones(6, dtype=torch.float64))
    assert all(torch.equal(before[name], value) for name, value in learner.state_dict().items())
    with pytest.raises(BadInputError, match="variances"):
        BayesProtoNet(build_backbone("mlp", in_features=3, hidden=[4], out_features=3), noise=0)


def test_meta_gradient_matches_finite_differences():
    learner = tiny_learner()
    episode = tiny_episode()
    names = [name for name, _ in learner.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in learner.parameters())

    def meta_loss(*weights: torch.Tensor) -> torch.Tensor:
        # params in, loss out: the functional core meta_loss runs for each task
        params = dict(zip(names, weights))
        return learner._task_objective(params, learner._call_buffers(), episode.support_x, episode.support_y,
                                       episode.query_x, episode.query_y, 3)

    assert torch.autograd.gradcheck(meta_loss, values, eps=1e-6, atol=1e-8)
    gradients = torch.autograd.grad(meta_loss(*values), values)
    assert all(g.abs().max() > 0 for g in gradients)
    torch.testing.assert_close(meta_loss(*values), learner.meta_loss(episode))


def test_meta_training_on_kanji_learns_well_above_chance_and_its_variances(kanji):
    background, evaluation = kanji
    learner = meta_train(background, steps=200, val_every=200, **TINY)
    result = meta_evaluate(learner, evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=60, seed=0))
    assert result.accuracy - result.ci95 > 0.5, result  # chance is 1/3; 73% here
    assert 0 < result.log_loss < math.log(3) and 1 / 3 < result.confidence <= 1  # better than a uniform guess
    assert not torch.allclose(learner.log_noise, torch.full_like(learner.log_noise, math.log(learner.noise)))


def test_checkpoint_round_trips_and_seeded_runs_reproduce(kanji, tmp_path):
    background, evaluation = kanji
    first, second, other = (meta_train(background, steps=4, val_every=4, **(TINY | {"seed": seed}))
                            for seed in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))
    loaded = load_learner(save_learner(first, tmp_path / "bayes"))
    assert isinstance(loaded, BayesProtoNet) and loaded.config() == first.config()
    for name, value in first.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    episode = evaluation_sampler(evaluation, ways=3, shots=1, queries=3, episodes=1, seed=0)[0]
    assert torch.equal(*(model.adapt(episode.support_x, episode.support_y).predict_proba(episode.query_x)
                         for model in (first, loaded)))
