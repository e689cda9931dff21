"""Soft k-means prototype refinement with the unlabeled pool (Ren et al. 2018)."""

import pytest
import torch

from metalabel.errors import BadInputError, EmptyClassError
from metalabel.label import prototype_logits, refine_prototypes, soft_assignments


def gaussian_task(seed: int, *, ways: int, dims: int, separation: float, unlabeled_per_class: int,
                  distractor_classes: int = 0, queries_per_class: int = 50):
    """One-shot task: unit-variance gaussians around random class means; the unlabeled pool
    can also hold ``distractor_classes`` clusters that belong to no class of the task."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(ways + distractor_classes, dims, generator=g) * separation
    support = means[:ways] + torch.randn(ways, dims, generator=g)
    unlabeled_y = torch.arange(ways + distractor_classes).repeat_interleave(unlabeled_per_class)
    unlabeled = means[unlabeled_y] + torch.randn(len(unlabeled_y), dims, generator=g)
    query_y = torch.arange(ways).repeat_interleave(queries_per_class)
    query = means[query_y] + torch.randn(len(query_y), dims, generator=g)
    return means, support, torch.arange(ways), unlabeled, unlabeled_y, query, query_y


def accuracy(query: torch.Tensor, query_y: torch.Tensor, prototypes: torch.Tensor) -> float:
    return prototype_logits(query, prototypes).argmax(1).eq(query_y).float().mean().item()


def test_refinement_beats_the_noisy_one_shot_prototypes_on_average() -> None:
    support_only, refined = [], []
    for seed in range(20):
        _, support, support_y, unlabeled, _, query, query_y = gaussian_task(
            seed, ways=5, dims=16, separation=1.0, unlabeled_per_class=50
        )
        support_only.append(accuracy(query, query_y, support))
        refined.append(accuracy(query, query_y, refine_prototypes(support, support_y, unlabeled, ways=5, steps=3)))
    mean_support_only, mean_refined = sum(support_only) / 20, sum(refined) / 20
    assert mean_refined > mean_support_only + 0.1  # measured: about 0.76 -> 0.97


def test_refinement_moves_prototypes_toward_the_true_means() -> None:
    means, support, support_y, unlabeled, _, _, _ = gaussian_task(
        0, ways=4, dims=8, separation=3.0, unlabeled_per_class=200
    )
    refined = refine_prototypes(support, support_y, unlabeled, ways=4, steps=2)
    assert (refined - means).norm(dim=1).max() < 0.5 * (support - means).norm(dim=1).min()


def test_the_distractor_cluster_absorbs_distractor_points() -> None:
    means, support, support_y, unlabeled, unlabeled_y, _, _ = gaussian_task(
        0, ways=3, dims=8, separation=3.0, unlabeled_per_class=100, distractor_classes=2
    )
    is_distractor = unlabeled_y >= 3
    with_cluster = refine_prototypes(support, support_y, unlabeled, ways=3, steps=3, distractor_cluster=True)
    without = refine_prototypes(support, support_y, unlabeled, ways=3, steps=3)

    assignments = soft_assignments(unlabeled, with_cluster, distractor_cluster=True)
    assert assignments.shape == (len(unlabeled), 4)
    torch.testing.assert_close(assignments.sum(1), torch.ones(len(unlabeled)))
    assert assignments[is_distractor, -1].mean() > 0.8
    assert assignments[~is_distractor, -1].mean() < 0.05
    error = lambda prototypes: (prototypes - means[:3]).norm(dim=1).mean()  # noqa: E731
    assert error(with_cluster) < 0.5 * error(without)


def test_support_weights_and_steps() -> None:
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    support_y = torch.tensor([0, 0, 1])
    unlabeled = torch.empty(0, 2)
    weighted = refine_prototypes(support, support_y, unlabeled, ways=2, support_weights=torch.tensor([1.0, 0.25, 1.0]))
    torch.testing.assert_close(weighted, torch.tensor([[0.4, 0.0], [10.0, 10.0]]))
    pool = torch.tensor([[1.0, 0.0], [9.0, 9.0]])
    unrefined = refine_prototypes(support, support_y, pool, ways=2, steps=0)
    torch.testing.assert_close(unrefined, torch.tensor([[1.0, 0.0], [10.0, 10.0]]))
    # One step: each pool point goes (almost) wholly to its nearest prototype.
    refined = refine_prototypes(support, support_y, pool, ways=2, steps=1)
    torch.testing.assert_close(refined, torch.tensor([[1.0, 0.0], [9.5, 9.5]]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("distractor_cluster", [False, True])
def test_excluded_rows_of_a_pool_count_as_if_they_were_left_out(distractor_cluster) -> None:
    # a round passes its whole pool and excludes the labeled rows, instead of copying the unlabeled ones
    _, support, support_y, unlabeled, _, _, _ = gaussian_task(2, ways=3, dims=5, separation=2.0,
                                                              unlabeled_per_class=40, distractor_classes=1)
    labeled = torch.tensor([3, 50, 51, 97, 159])
    kept = torch.ones(len(unlabeled), dtype=torch.bool)
    kept[labeled] = False
    options = dict(ways=3, steps=2, distractor_cluster=distractor_cluster)
    torch.testing.assert_close(refine_prototypes(support, support_y, unlabeled, exclude=labeled, **options),
                               refine_prototypes(support, support_y, unlabeled[kept], **options))
    everything = torch.arange(len(unlabeled))
    torch.testing.assert_close(refine_prototypes(support, support_y, unlabeled, exclude=everything, **options),
                               refine_prototypes(support, support_y, unlabeled, steps=0, ways=3))


def test_prototype_logits_are_minus_squared_distances() -> None:
    embeddings = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    prototypes = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    torch.testing.assert_close(prototype_logits(embeddings, prototypes), torch.tensor([[0.0, -16.0], [-25.0, -9.0]]))


def test_refinement_is_differentiable() -> None:
    _, support, support_y, unlabeled, _, _, _ = gaussian_task(1, ways=3, dims=4, separation=2.0, unlabeled_per_class=10)
    support.requires_grad_(True)
    refine_prototypes(support, support_y, unlabeled, ways=3, steps=2, distractor_cluster=True).sum().backward()
    assert support.grad is not None and torch.isfinite(support.grad).all()


def test_bad_inputs_get_typed_errors() -> None:
    support, support_y, pool = torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), torch.randn(5, 3)
    with pytest.raises(EmptyClassError, match="class '2'"):
        refine_prototypes(support, support_y, pool, ways=3)
    with pytest.raises(BadInputError, match="3 dims, but the embeddings it goes with have 2"):
        refine_prototypes(support[:, :2], support_y, pool, ways=2)
    with pytest.raises(BadInputError, match="one label per support embedding"):
        refine_prototypes(support, support_y[:3], pool, ways=2)
    with pytest.raises(BadInputError, match=r"0\.\.1"):
        refine_prototypes(support, torch.tensor([0, 1, 2, 1]), pool, ways=2)
    with pytest.raises(BadInputError, match="integer class indices"):
        refine_prototypes(support, support_y.float(), pool, ways=2)
    with pytest.raises(BadInputError, match="support_weights"):
        refine_prototypes(support, support_y, pool, ways=2, support_weights=torch.ones(3))
    with pytest.raises(BadInputError, match="temperature"):
        refine_prototypes(support, support_y, pool[:0], ways=2, temperature=0)
    with pytest.raises(BadInputError, match="1-D integer tensor"):
        refine_prototypes(support, support_y.numpy(), pool, ways=2)
    with pytest.raises(BadInputError, match="exclude must be a 1-D integer tensor"):
        refine_prototypes(support, support_y, pool, ways=2, exclude=torch.tensor([0.0]))
    with pytest.raises(BadInputError, match=r"exclude must lie in 0\.\.4"):
        refine_prototypes(support, support_y, pool, ways=2, exclude=torch.tensor([5]))
    with pytest.raises(BadInputError, match="2-D float tensor"):
        prototype_logits(pool.numpy(), support)
