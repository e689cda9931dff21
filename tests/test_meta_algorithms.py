"""Behaviour of the meta-learners: adapt is pure, weights act as fractional examples,
probabilities are probabilities, training helps, checkpoints round-trip."""

from __future__ import annotations

import json

import pytest
import torch

from metalabel.data.episodes import Episode
from metalabel.errors import BadInputError, DataNotFoundError, EmptyClassError
from metalabel.meta import (
    MAML,
    MLP,
    Conv4,
    ProtoNet,
    Reptile,
    ResNet12,
    build_backbone,
    load_learner,
    save_learner,
)

DIM, WAYS, SHOTS, QUERIES = 8, 5, 5, 5


def synthetic_tasks(tasks: int, gen: torch.Generator, *, ways: int = WAYS) -> Episode:
    """Classes are Gaussian blobs in the first 2 of DIM dims; the other dims are louder noise.

    Learning to ignore the noise dims is what meta-training has to find.
    """
    centers = 2.0 * torch.randn(tasks, ways, 1, 2, generator=gen)

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        signal = centers + 0.5 * torch.randn(tasks, ways, per_class, 2, generator=gen)
        noise = 3.0 * torch.randn(tasks, ways, per_class, DIM - 2, generator=gen)
        x = torch.cat([signal, noise], -1).reshape(tasks, ways * per_class, DIM)
        return x, torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1).clone()

    return Episode(*draw(SHOTS), *draw(QUERIES))


def mlp() -> torch.nn.Module:
    return build_backbone("mlp", in_features=DIM, hidden=[32], out_features=16)


def conv_bn() -> torch.nn.Module:
    return build_backbone("conv4", in_channels=1, hidden=4, depth=2, image_size=8)


LEARNERS = {
    "protonet": lambda backbone, **kw: ProtoNet(backbone, **kw),
    "maml": lambda backbone, **kw: MAML(backbone, ways=WAYS, inner_lr=0.5, **kw),
    "fomaml": lambda backbone, **kw: MAML(backbone, ways=WAYS, inner_lr=0.3, inner_steps=5, first_order=True, **kw),
    "anil": lambda backbone, **kw: MAML(backbone, ways=WAYS, inner_lr=0.5, inner_steps=3, anil=True, **kw),
    "reptile": lambda backbone, **kw: Reptile(backbone, ways=WAYS, inner_lr=1e-2, inner_steps=5, adapt_steps=10, **kw),
}


def image_batch(seed: int = 0) -> Episode:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(WAYS).repeat_interleave(2)
    return Episode(torch.randn(WAYS * 2, 1, 8, 8, generator=gen), y, torch.randn(WAYS * 2, 1, 8, 8, generator=gen), y)


# ----------------------------------------------------------------------------- backbones


def test_backbone_output_sizes():
    assert Conv4()(torch.zeros(2, 1, 28, 28)).shape == (2, 64) and Conv4().out_features == 64
    assert Conv4(in_channels=3, image_size=84).out_features == 1600
    resnet = ResNet12(channels=[4, 4, 4, 8])
    assert resnet(torch.zeros(2, 3, 32, 32)).shape == (2, 8) == (2, resnet.out_features)
    assert MLP(in_features=5, hidden=[7], out_features=3)(torch.zeros(2, 5)).shape == (2, 3)
    with pytest.raises(BadInputError):
        build_backbone("no-such-net")


def test_channels_last_gives_the_same_features():
    plain, fast = Conv4(hidden=8), Conv4(hidden=8, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- adapt


@pytest.mark.parametrize("batch_norm", ["transductive", "running"])
@pytest.mark.parametrize("name", LEARNERS)
def test_adapt_leaves_the_learner_untouched(name, batch_norm):
    torch.manual_seed(0)
    learner = LEARNERS[name](conv_bn(), batch_norm=batch_norm)
    learner.train()  # the learner's mode must not matter to, nor be changed by, adapt
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    batch = image_batch()
    adapted = learner.adapt(batch.support_x, batch.support_y)
    adapted.predict_proba(batch.query_x), adapted.embed(batch.query_x)
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(module.training for module in learner.modules())
    assert all(p.grad is None for p in learner.parameters())


@pytest.mark.parametrize("name", LEARNERS)
def test_predict_proba_is_a_distribution_over_the_task_classes(name):
    torch.manual_seed(0)
    learner = LEARNERS[name](mlp())
    task = synthetic_tasks(1, torch.Generator().manual_seed(0), ways=3)  # fewer classes than the head
    adapted = learner.adapt(task.support_x[0], task.support_y[0])
    proba = adapted.predict_proba(task.query_x[0])
    assert proba.shape == (task.query_x.shape[1], 3)
    assert bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(-1), torch.ones(proba.shape[0]))
    assert adapted.embed(task.query_x[0]).shape == (task.query_x.shape[1], 16)


@pytest.mark.parametrize("name", ["protonet", "maml", "anil", "reptile"])
def test_zero_weight_is_the_same_as_leaving_the_example_out(name):
    torch.manual_seed(0)
    learner = LEARNERS[name](mlp()).double()
    task = synthetic_tasks(1, torch.Generator().manual_seed(0))
    x, y, query = task.support_x[0].double(), task.support_y[0], task.query_x[0].double()
    weights = torch.rand(len(y), generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    dropped = torch.tensor([1, 7, 12])
    weights[dropped] = 0
    kept = weights > 0
    with_zeros = learner.adapt(x, y, weights=weights).predict_proba(query)
    without = learner.adapt(x[kept], y[kept], weights=weights[kept]).predict_proba(query)
    torch.testing.assert_close(with_zeros, without, rtol=0, atol=1e-12)
    # and weights do something
    unweighted = learner.adapt(x[kept], y[kept]).predict_proba(query)
    assert (unweighted - without).abs().max() > 1e-6


def test_support_set_errors_name_the_problem():
    learner = ProtoNet(mlp())
    x = torch.randn(4, DIM)
    with pytest.raises(EmptyClassError, match="class '1'"):
        learner.adapt(x, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(EmptyClassError, match="class '0'"):
        learner.adapt(x, torch.tensor([0, 0, 1, 1]), weights=torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(BadInputError, match="rows"):
        learner.adapt(x, torch.tensor([0, 1]))
    with pytest.raises(BadInputError, match="head"):
        MAML(mlp(), ways=2).adapt(x, torch.tensor([0, 1, 2, 2]))
    with pytest.raises(BadInputError, match="query_y"):
        learner.meta_loss(Episode(x, torch.tensor([0, 0, 1, 1]), x, torch.tensor([0, 1])))
    with pytest.raises(BadInputError, match="task_parallel"):
        ProtoNet(mlp(), task_parallel="threads")
    with pytest.raises(BadInputError, match="batch_norm"):
        ProtoNet(mlp(), batch_norm="sometimes")


def test_one_episode_is_a_batch_of_one():
    torch.manual_seed(0)
    learner = LEARNERS["maml"](mlp())
    batch = synthetic_tasks(1, torch.Generator().manual_seed(0))
    single = Episode(batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0])
    torch.testing.assert_close(learner.meta_loss(single), learner.meta_loss(batch))


# ----------------------------------------------------------------------------- training


def accuracy(learner, tasks: Episode) -> float:
    hits = [
        (learner.adapt(tasks.support_x[t], tasks.support_y[t]).predict(tasks.query_x[t]) == tasks.query_y[t])
        .float()
        .mean()
        for t in range(tasks.support_x.shape[0])
    ]
    return float(torch.stack(hits).mean())


@pytest.mark.parametrize("name", LEARNERS)
def test_meta_training_learns_well_above_chance(name):
    torch.manual_seed(0)
    learner = LEARNERS[name](mlp(), task_parallel="vmap")
    # Reptile: outer SGD on its surrogate is the Reptile update, step size 0.5
    optimizer = (torch.optim.SGD(learner.parameters(), lr=0.5) if name == "reptile"
                 else torch.optim.Adam(learner.parameters(), lr=1e-2))
    held_out = synthetic_tasks(40, torch.Generator().manual_seed(123))
    before = accuracy(learner, held_out)
    gen = torch.Generator().manual_seed(1)
    for _ in range(250):
        loss = learner.meta_loss(synthetic_tasks(4, gen))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = accuracy(learner, held_out)
    print(f"{name}: held-out accuracy {before:.2f} -> {after:.2f}")
    assert after > 0.55 and after > before + 0.15, (before, after)  # chance is 0.2


def test_reptile_outer_sgd_step_of_one_lands_on_the_mean_trained_weights():
    torch.manual_seed(0)
    learner = Reptile(mlp(), ways=WAYS, inner_steps=3, inner_lr=0.05, inner_optimizer="sgd").double()
    batch = synthetic_tasks(3, torch.Generator().manual_seed(0))
    batch = Episode(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y)
    all_x, all_y = torch.cat([batch.support_x, batch.query_x], 1), torch.cat([batch.support_y, batch.query_y], 1)
    trained = [learner.adapt(all_x[t], all_y[t]).params for t in range(3)]
    optimizer = torch.optim.SGD(learner.parameters(), lr=1.0)
    learner.meta_loss(batch).backward()
    optimizer.step()
    for name, p in learner.named_parameters():
        torch.testing.assert_close(p.detach(), torch.stack([phi[name] for phi in trained]).mean(0))


def test_learned_inner_lr_is_meta_learned_and_saved(tmp_path):
    torch.manual_seed(0)
    learner = MAML(mlp(), ways=WAYS, inner_lr=0.3, learn_inner_lr=True)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)
    learner.meta_loss(synthetic_tasks(2, torch.Generator().manual_seed(0))).backward()
    assert learner.inner_lr.grad is not None and learner.inner_lr.grad != 0
    optimizer.step()
    assert learner.config()["inner_lr"] != 0.3
    restored = load_learner(save_learner(learner, tmp_path / "ckpt"))
    assert torch.equal(restored.inner_lr, learner.inner_lr)


# ----------------------------------------------------------------------------- checkpoints


CHECKPOINT_CASES = {  # name: (make learner, item shape)
    "protonet-conv4-channels-last": (
        lambda: ProtoNet(build_backbone("conv4", hidden=4, image_size=28, channels_last=True)), (1, 28, 28)),
    "maml-running-bn": (
        lambda: MAML(conv_bn(), ways=WAYS, batch_norm="running", zero_init_head=True), (1, 8, 8)),
    "anil-float64": (
        lambda: MAML(mlp(), ways=WAYS, anil=True, inner_steps=2).double(), (DIM,)),
    "reptile-resnet12": (
        lambda: Reptile(build_backbone("resnet12", channels=[4, 4, 4, 4]), ways=WAYS, inner_steps=1), (3, 16, 16)),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_checkpoint_round_trip_predicts_identically(case, tmp_path):
    make, item_shape = CHECKPOINT_CASES[case]
    torch.manual_seed(0)
    learner = make()
    if learner.batch_norm == "running":  # give the running statistics something to remember
        gen = torch.Generator().manual_seed(0)
        learner.meta_loss(Episode(torch.randn(2, 10, *item_shape, generator=gen), torch.arange(5).repeat(2, 2),
                                  torch.randn(2, 10, *item_shape, generator=gen), torch.arange(5).repeat(2, 2)))
    dtype = next(learner.parameters()).dtype
    x = torch.randn(10, *item_shape, dtype=dtype)
    y = torch.arange(5).repeat(2)

    folder = save_learner(learner, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["algo"] == learner.algo and config["learner"] == learner.config()
    assert config["backbone"]["name"] in ("conv4", "mlp", "resnet12") and "metalabel_version" in config

    restored = load_learner(folder)
    assert type(restored) is type(learner) and next(restored.parameters()).dtype == dtype
    assert torch.equal(restored.adapt(x, y).predict_proba(x), learner.adapt(x, y).predict_proba(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_learner(tmp_path / "nothing-here")
    with pytest.raises(BadInputError, match="rebuild"):
        save_learner(ProtoNet(torch.nn.Linear(3, 3)), tmp_path / "custom")
