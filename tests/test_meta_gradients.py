"""Meta-gradients of every learner, three ways: vmapped, per-task loop, and an independent reference.

The reference is central finite differences of ``meta_loss`` where the algorithm's
meta-gradient is a true gradient (ProtoNet, second-order MAML/ANIL), and a by-hand
computation with plain modules and ``torch.autograd.grad`` where it is defined by
a rule (FOMAML, first-order ANIL, Reptile). Everything in float64 on tiny models.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from metalabel.data.episodes import Episode
from metalabel.meta import MAML, ProtoNet, Reptile, build_backbone

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 3


def episodes(item_shape: tuple[int, ...], *, seed: int = 0, tasks: int = TASKS) -> Episode:
    gen = torch.Generator().manual_seed(seed)

    def part(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(tasks, WAYS * per_class, *item_shape, generator=gen, dtype=torch.float64)
        y = torch.arange(WAYS).repeat_interleave(per_class).expand(tasks, -1).clone()
        return x, y

    return Episode(*part(SHOTS), *part(QUERIES))


def mlp() -> torch.nn.Module:
    return build_backbone("mlp", in_features=3, hidden=[4], out_features=3)


def conv_bn() -> torch.nn.Module:
    return build_backbone("conv4", in_channels=1, hidden=2, depth=1, image_size=4)


MLP_BATCH = episodes((3,))
IMAGE_BATCH = episodes((1, 4, 4))


def make(cls, backbone, **options):
    """The same initial weights every time for the same (cls, backbone)."""
    torch.manual_seed(0)
    return cls(backbone(), **options).double()


def meta_gradient(learner, batch: Episode, mode: str) -> torch.Tensor:
    learner.runner.resolved = mode  # skip the one-time vmap check: here we want each path raw
    learner.zero_grad()
    learner.meta_loss(batch).backward()
    return torch.cat([p.grad.reshape(-1) for p in learner.parameters()])


def finite_differences(loss_fn, learner, step: float = 1e-5) -> torch.Tensor:
    """Central differences of ``loss_fn()`` in each of ``learner``'s parameters (nudged in place)."""
    estimates = []
    with torch.no_grad():
        for p in learner.parameters():
            flat = p.view(-1)
            for i in range(flat.numel()):
                flat[i] += step
                up = loss_fn()
                flat[i] -= 2 * step
                down = loss_fn()
                flat[i] += step
                estimates.append((up - down) / (2 * step))
    return torch.stack(estimates)


def numeric_meta_gradient(learner, batch: Episode) -> torch.Tensor:
    learner.runner.resolved = "loop"
    return finite_differences(lambda: learner.meta_loss(batch), learner)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


TRUE_GRADIENT_LEARNERS = {
    "protonet": (ProtoNet, {}),
    "maml": (MAML, dict(ways=WAYS, inner_lr=0.3)),
    "maml-2steps-learned-lr": (MAML, dict(ways=WAYS, inner_steps=2, inner_lr=0.3, learn_inner_lr=True)),
    "anil": (MAML, dict(ways=WAYS, inner_steps=2, inner_lr=0.5, anil=True)),
}


@pytest.mark.parametrize("name", TRUE_GRADIENT_LEARNERS)
def test_vmap_loop_and_finite_differences_agree(name):
    cls, options = TRUE_GRADIENT_LEARNERS[name]
    learner = make(cls, mlp, **options)
    vmapped = meta_gradient(learner, MLP_BATCH, "vmap")
    looped = meta_gradient(learner, MLP_BATCH, "loop")
    numeric = numeric_meta_gradient(learner, MLP_BATCH)
    assert looped.abs().max() > 1e-3  # the comparison is not vacuous
    assert max_diff(vmapped, looped) < 1e-12
    assert max_diff(looped, numeric) < 1e-8


def by_hand_first_order(learner: MAML, batch: Episode, *, head_only: bool) -> torch.Tensor:
    """FOMAML / first-order ANIL: the query gradient at the fast weights, inner update taken as identity."""
    total = [torch.zeros_like(p) for p in learner.parameters()]
    for t in range(batch.support_x.shape[0]):
        model = copy.deepcopy(learner)
        network = lambda x, model=model: model.head(model.backbone(x))  # noqa: E731
        adapted = list(model.head.parameters()) if head_only else list(model.parameters())
        for _ in range(learner.inner_steps):
            grads = torch.autograd.grad(F.cross_entropy(network(batch.support_x[t]), batch.support_y[t]), adapted)
            with torch.no_grad():
                for p, g in zip(adapted, grads):
                    p -= learner.inner_lr * g
        query_grads = torch.autograd.grad(
            F.cross_entropy(network(batch.query_x[t]), batch.query_y[t]), list(model.parameters()), allow_unused=True
        )
        total = [acc + (0 if g is None else g) for acc, g in zip(total, query_grads)]
    return torch.cat([g.reshape(-1) for g in total]) / batch.support_x.shape[0]


@pytest.mark.parametrize("head_only", [False, True], ids=["fomaml", "first-order-anil"])
def test_first_order_matches_its_definition(head_only):
    learner = make(MAML, mlp, ways=WAYS, inner_steps=2, inner_lr=0.3, first_order=True, anil=head_only)
    reference = by_hand_first_order(learner, MLP_BATCH, head_only=head_only)
    assert max_diff(meta_gradient(learner, MLP_BATCH, "vmap"), reference) < 1e-12
    assert max_diff(meta_gradient(learner, MLP_BATCH, "loop"), reference) < 1e-12
    # and it is not the second-order gradient
    second_order = make(MAML, mlp, ways=WAYS, inner_steps=2, inner_lr=0.3, anil=head_only)
    assert max_diff(meta_gradient(second_order, MLP_BATCH, "loop"), reference) > 1e-4


def by_hand_reptile(learner: Reptile, batch: Episode) -> torch.Tensor:
    """theta - mean(phi), phi from torch.optim on each task's support + query."""
    theta = torch.cat([p.detach().reshape(-1) for p in learner.parameters()])
    trained = []
    for t in range(batch.support_x.shape[0]):
        model = copy.deepcopy(learner)
        x = torch.cat([batch.support_x[t], batch.query_x[t]])
        y = torch.cat([batch.support_y[t], batch.query_y[t]])
        optimizer = (torch.optim.Adam(model.parameters(), lr=learner.inner_lr, betas=learner.adam_betas)
                     if learner.inner_optimizer == "adam" else torch.optim.SGD(model.parameters(), lr=learner.inner_lr))
        for _ in range(learner.inner_steps):
            optimizer.zero_grad()
            F.cross_entropy(model.head(model.backbone(x)), y).backward()
            optimizer.step()
        trained.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return theta - torch.stack(trained).mean(0)


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_reptile_gradient_is_theta_minus_mean_phi(inner_optimizer):
    learner = make(Reptile, mlp, ways=WAYS, inner_steps=3, inner_lr=0.1, inner_optimizer=inner_optimizer)
    reference = by_hand_reptile(learner, MLP_BATCH)
    assert reference.abs().max() > 1e-3
    assert max_diff(meta_gradient(learner, MLP_BATCH, "vmap"), reference) < 1e-12
    assert max_diff(meta_gradient(learner, MLP_BATCH, "loop"), reference) < 1e-12
    learner.runner.resolved = None
    exposed = torch.cat([g.reshape(-1) for g in learner.meta_gradient(MLP_BATCH).values()])
    assert max_diff(exposed, reference) < 1e-12


def test_one_step_sgd_reptile_is_lr_times_the_task_gradient():
    # with one SGD step, theta - phi = lr * grad(task loss); the task's data is support + query
    learner = make(Reptile, mlp, ways=WAYS, inner_steps=1, inner_lr=0.1, inner_optimizer="sgd")
    x = torch.cat([MLP_BATCH.support_x, MLP_BATCH.query_x], 1)
    y = torch.cat([MLP_BATCH.support_y, MLP_BATCH.query_y], 1)

    def mean_task_loss():
        return sum(F.cross_entropy(learner.head(learner.backbone(x[t])), y[t]) for t in range(TASKS)) / TASKS

    numeric = finite_differences(mean_task_loss, learner)
    assert max_diff(meta_gradient(learner, MLP_BATCH, "vmap"), 0.1 * numeric) < 1e-8


def test_vmap_is_wrong_for_batchnorm_second_order_and_the_learner_falls_back():
    learner = make(MAML, conv_bn, ways=WAYS, inner_lr=0.5)
    looped = meta_gradient(learner, IMAGE_BATCH, "loop")
    vmapped = meta_gradient(learner, IMAGE_BATCH, "vmap")
    numeric = numeric_meta_gradient(learner, IMAGE_BATCH)
    assert max_diff(looped, numeric) < 1e-8
    assert max_diff(vmapped, numeric) > 1e-4  # functorch issue 534: still wrong in this torch

    for mode in ("vmap", "auto"):
        checked = make(MAML, conv_bn, ways=WAYS, inner_lr=0.5, task_parallel=mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checked.meta_loss(IMAGE_BATCH).backward()
        # asking for vmap explicitly warns about the fallback; auto falls back quietly
        assert [w.category for w in caught] == ([RuntimeWarning] if mode == "vmap" else [])
        assert checked.runner.resolved == "loop"
        assert checked.runner.verification["relative_difference"] > checked.runner.verification["tolerance"]
        assert max_diff(torch.cat([p.grad.reshape(-1) for p in checked.parameters()]), looped) < 1e-12


@pytest.mark.parametrize("name", ["protonet", "fomaml"])
def test_vmap_is_right_for_batchnorm_first_order_and_is_kept(name):
    cls, options = {"protonet": (ProtoNet, {}), "fomaml": (MAML, dict(ways=WAYS, first_order=True))}[name]
    learner = make(cls, conv_bn, task_parallel="vmap", **options)
    learner.meta_loss(IMAGE_BATCH).backward()
    assert learner.runner.resolved == "vmap"
    assert learner.runner.verification["relative_difference"] < 1e-12


@pytest.mark.parametrize("cls, options", [(ProtoNet, {}), (MAML, dict(ways=WAYS, first_order=True))])
def test_running_batchnorm_statistics_are_the_same_vmapped_or_looped(cls, options):
    results = {}
    for mode in ("vmap", "loop"):
        learner = make(cls, conv_bn, batch_norm="running", **options)
        results[mode] = (meta_gradient(learner, IMAGE_BATCH, mode), {k: b.clone() for k, b in learner.named_buffers()})
    (g_vmap, stats_vmap), (g_loop, stats_loop) = results["vmap"], results["loop"]
    assert max_diff(g_vmap, g_loop) < 1e-12
    assert stats_vmap["backbone.features.1.running_mean"].abs().max() > 0  # statistics did move
    assert stats_vmap.keys() == stats_loop.keys()
    for name in stats_loop:
        assert torch.equal(stats_vmap[name], stats_loop[name]), name


def test_chunked_vmap_matches_the_loop():
    learner = make(MAML, mlp, ways=WAYS, inner_steps=2, chunk_size=2)
    batch = episodes((3,), tasks=5)
    assert max_diff(meta_gradient(learner, batch, "vmap"), meta_gradient(learner, batch, "loop")) < 1e-12


class DataDependentBranch(torch.nn.Module):
    """A backbone vmap cannot run: Python control flow on a tensor's value."""

    out_features = 3

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        return h if bool(h.sum() > 0) else -h


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_a_backbone_vmap_cannot_run_falls_back_to_the_loop(grad_enabled):
    learner = make(MAML, DataDependentBranch, ways=WAYS, task_parallel="vmap")
    with pytest.warns(RuntimeWarning, match="vmap over tasks failed"), torch.set_grad_enabled(grad_enabled):
        loss = learner.meta_loss(MLP_BATCH)
    assert learner.runner.resolved == "loop" and torch.isfinite(loss)
