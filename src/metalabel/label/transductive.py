"""Transductive prototype refinement with the unlabeled pool (Ren et al. 2018, soft k-means).

These functions take and return torch tensors: embeddings come out of torch models
and stay on their device. The functions are differentiable, so they can also sit
inside a meta-training objective.

One refinement step works like this. Each unlabeled embedding is softly assigned
to the prototypes by ``softmax(-||x - p_c||^2 / temperature)``. Each prototype
becomes the weighted mean of its class's support embeddings (hard-assigned, and
weighted by ``support_weights``) and of the unlabeled embeddings (weighted by
their assignments). With one noisy support example per class, the many unlabeled
points pull each prototype toward its cluster's real centre.

The distractor cluster handles pools that hold items of no known class. Ren et
al. add an extra cluster for them, centred at the origin, whose radius is learned
together with the embedding. Here the embedding was not trained with that
cluster, so the origin means nothing. This module uses the cluster's broad-radius
limit instead, a noise cluster (Dave 1991). It is equally near every point, at
squared distance ``distractor_scale`` times the pool's median squared distance to
its nearest prototype. A point much farther than typical from every prototype
goes mostly to the noise cluster and barely moves any prototype. This assumes
that most of the pool belongs to the known classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metalabel.errors import BadInputError, EmptyClassError, check_whole_number
from metalabel.meta.functional import squared_distances

# Embeddings a block: the distances' [rows, d] temporaries stay small whatever the pool. Small enough for glibc to
# reuse them: blocks of 8,192 rows (25 MB at 784-d) each stayed in a round's heap until the refinement ended.
LOGIT_ROWS = 1024


def prototype_logits(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """``[n, k]`` logits: minus the squared Euclidean distance of each embedding to each prototype.

    By blocks of ``LOGIT_ROWS`` embeddings or more, so a big pool's ``[n, d]`` squared copy never exists
    (soft k-means over the unlabeled pool). The last block takes the rows left over: a product of a few
    rows is computed another way, in other last bits, while blocks this big give the bits of the whole
    (tests/test_round_memory.py checks it).
    """
    _check_matrix(embeddings, "embeddings", allow_empty=True)
    _check_matrix(prototypes, "prototypes", dims=embeddings.shape[1])
    bounds = [*range(0, len(embeddings) - LOGIT_ROWS + 1, LOGIT_ROWS), len(embeddings)]
    if len(bounds) <= 2:
        return -squared_distances(embeddings, prototypes)
    return -torch.cat([squared_distances(embeddings[start:end], prototypes) for start, end in zip(bounds, bounds[1:])])


def soft_assignments(
    embeddings: Tensor,
    prototypes: Tensor,
    *,
    temperature: float = 1.0,
    distractor_cluster: bool = False,
    distractor_scale: float = 2.0,
) -> Tensor:
    """``[n, k]`` soft assignment of each embedding to the ``k`` prototypes; rows sum to 1.

    With ``distractor_cluster``, the result has one more column, ``[n, k + 1]``.
    The last column is the share taken by the noise cluster (module doc). It can
    also flag pool items that belong to no known class.
    """
    _check_positive(temperature, "temperature")
    _check_positive(distractor_scale, "distractor_scale")
    return _assignments(prototype_logits(embeddings, prototypes) / temperature, distractor_cluster, distractor_scale)


def _assignments(logits: Tensor, distractor_cluster: bool, distractor_scale: float,
                 counted: Tensor | None = None) -> Tensor:
    """``soft_assignments`` from the logits; the noise cluster's distance is the median over the ``counted`` rows
    (a bool mask; all rows when None)."""
    if distractor_cluster:
        nearest = (-logits).amin(dim=1).clamp_min(0)
        nearest = nearest if counted is None else nearest[counted]
        # The median is a heuristic statistic of the pool, not something to learn through: keep it out of the graph.
        noise_logit = -distractor_scale * nearest.median().detach() if len(nearest) else logits.new_zeros(())
        logits = torch.cat([logits, noise_logit.expand(len(logits), 1)], dim=1)
    return logits.softmax(dim=1)


def refine_prototypes(
    support_emb: Tensor,
    support_y: Tensor,
    unlabeled_emb: Tensor,
    *,
    ways: int,
    steps: int = 1,
    support_weights: Tensor | None = None,
    temperature: float = 1.0,
    distractor_cluster: bool = False,
    distractor_scale: float = 2.0,
    exclude: Tensor | None = None,
) -> Tensor:
    """``[ways, d]`` prototypes after ``steps`` rounds of soft k-means over the unlabeled embeddings.

    The starting prototypes are the weighted class means of the support set, as in
    a ProtoNet. ``support_weights`` [S] make an example count less; use them for
    accepted pseudo-labels, and give human labels weight 1. Every class needs
    support weight above 0. ``temperature`` divides the squared distances before
    the softmax. Pass the ``TemperatureScaling.temperature`` fitted on these
    prototype logits, so the soft assignments are as confident as the calibrated
    predictions. With
    ``steps=0`` or an empty pool, the support means are returned unchanged.
    ``exclude`` holds positions of ``unlabeled_emb`` rows left out: a whole pool is passed with its labeled
    items' positions, and its unlabeled rows are never copied out of it.
    """
    _check_matrix(support_emb, "support_emb")
    dims = support_emb.shape[1]
    _check_matrix(unlabeled_emb, "unlabeled_emb", dims=dims, allow_empty=True)
    check_whole_number("ways", ways, minimum=1)
    check_whole_number("steps", steps, minimum=0)
    _check_positive(temperature, "temperature")
    _check_positive(distractor_scale, "distractor_scale")
    if not isinstance(support_y, Tensor):
        raise BadInputError(f"support_y must be a 1-D integer tensor, got {type(support_y).__name__}")
    if support_y.ndim != 1 or len(support_y) != len(support_emb):
        raise BadInputError(
            f"support_y must hold one label per support embedding: shape {tuple(support_y.shape)} "
            f"for {len(support_emb)} embeddings"
        )
    if support_y.is_floating_point() or support_y.is_complex():
        raise BadInputError(f"support_y must hold integer class indices, got {support_y.dtype}", hint="use .long()")
    if len(support_y) and (support_y.min() < 0 or support_y.max() >= ways):
        raise BadInputError(f"support_y must lie in 0..{ways - 1}, got values {support_y.min()}..{support_y.max()}")
    weights = _support_weights(support_weights, len(support_emb), support_emb)
    counted = None
    if exclude is not None:
        if not isinstance(exclude, Tensor) or exclude.ndim != 1 or exclude.is_floating_point():
            raise BadInputError("exclude must be a 1-D integer tensor of row positions in unlabeled_emb")
        if len(exclude) and (exclude.min() < 0 or exclude.max() >= len(unlabeled_emb)):
            raise BadInputError(f"exclude must lie in 0..{len(unlabeled_emb) - 1}, got values "
                                f"{exclude.min()}..{exclude.max()}")
        counted = torch.ones(len(unlabeled_emb), dtype=torch.bool, device=unlabeled_emb.device)
        counted[exclude] = False

    membership = F.one_hot(support_y.long(), ways).to(support_emb.dtype) * weights.unsqueeze(1)  # [S, ways]
    support_sums = membership.T @ support_emb
    support_mass = membership.sum(dim=0)
    empty = torch.nonzero(support_mass <= 0).flatten()
    if len(empty):
        raise EmptyClassError(
            "has no support example with weight above 0, so it has no prototype",
            cls=str(int(empty[0])),
            hint="give every class at least one labeled example",
        )

    prototypes = support_sums / support_mass.unsqueeze(1)
    if len(unlabeled_emb) == 0 or (counted is not None and not counted.any()):
        return prototypes
    for _ in range(steps):
        logits = prototype_logits(unlabeled_emb, prototypes) / temperature
        # the noise column has no centre to update
        assignments = _assignments(logits, distractor_cluster, distractor_scale, counted)[:, :ways]
        if counted is not None:  # an excluded row weighs 0 in the sums below
            assignments = assignments * counted.unsqueeze(1)
        prototypes = (support_sums + assignments.T @ unlabeled_emb) / (support_mass + assignments.sum(0)).unsqueeze(1)
    return prototypes


def _check_matrix(x: Tensor, name: str, *, dims: int | None = None, allow_empty: bool = False) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise BadInputError(f"{name} must be a 2-D float tensor [items, dims], got {shape}")
    if not allow_empty and len(x) == 0:
        raise BadInputError(f"{name} is empty; it needs at least one row")
    if dims is not None and x.shape[1] != dims:
        raise BadInputError(f"{name} has {x.shape[1]} dims, but the embeddings it goes with have {dims}")


def _support_weights(weights: Tensor | None, count: int, like: Tensor) -> Tensor:
    if weights is None:
        return torch.ones(count, dtype=like.dtype, device=like.device)
    if weights.shape != (count,):
        raise BadInputError(
            f"support_weights must have shape ({count},), one per support example, got {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise BadInputError("support_weights must be finite and >= 0")
    return weights.to(like.dtype)


def _check_positive(value: float, name: str) -> None:
    if not 0 < value < float("inf"):
        raise BadInputError(f"{name} must be a finite number > 0, got {value}")
