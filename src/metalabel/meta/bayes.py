"""Bayesian prototypes: each class prototype a Gaussian, predictions integrated over it.

In the embedding space, an item of class ``c`` is modelled as ``z ~ N(mu_c, diag(noise))``
and the prototype itself as unknown, with prior ``mu_c ~ N(m, diag(prior))``. Both
variance vectors are meta-learned (one value per embedding dimension) and ``m`` is
the mean of the task's class means. Given the support set (``n_c`` examples, or their
total weight, with mean ``zbar_c``) the prototype's posterior is Gaussian::

    precision_c = 1 / prior + n_c / noise
    mean_c      = (m / prior + n_c * zbar_c / noise) / precision_c

and the predictive density of a new item integrates over it: ``N(z; mean_c, noise +
1 / precision_c)``. The class probabilities are those densities normalised (equal class
priors). A class with fewer examples has a wider predictive, so its scores are less
sure; the meta-learned variances set how sharp the probabilities are, the temperature
a ProtoNet has to get from calibration afterwards. With equal shots and a vague prior
this is ProtoNet with a learned diagonal metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalabel.errors import BadInputError
from metalabel.meta.backbones import output_width
from metalabel.meta.functional import (
    BatchNormMode,
    Params,
    TaskLearner,
    TaskParallel,
    detached,
    evaluating,
    support_ways,
)


def gaussian_prototypes(embeddings: Tensor, y: Tensor, ways: int, noise: Tensor, prior: Tensor,
                        weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(mean, predictive variance)``, each ``[ways, d]``: the prototype posterior; its variance plus ``noise``."""
    membership = F.one_hot(y, ways).to(embeddings.dtype)
    if weights is not None:
        membership = membership * weights.to(embeddings.dtype).unsqueeze(1)
    counts = membership.sum(0).unsqueeze(1)  # [ways, 1]
    sums = membership.T @ embeddings  # [ways, d]
    prior_mean = (sums / counts).mean(0)  # the mean of the class means
    precision = 1 / prior + counts / noise
    mean = (prior_mean / prior + sums / noise) / precision
    return mean, noise + 1 / precision


def predictive_log_density(z: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """``[n, ways]`` log N(z; mean_c, diag(variance_c)), expanded so memory is n*ways, not n*ways*d."""
    inverse = 1 / variance
    squared = (z * z) @ inverse.T - 2 * z @ (mean * inverse).T + (mean * mean * inverse).sum(1)
    return -0.5 * (squared + variance.log().sum(1) + z.shape[1] * math.log(2 * math.pi))


class BayesProtoNet(TaskLearner):
    """A ProtoNet whose prototypes are Gaussians with meta-learned variances; see the module note.

    ``noise`` and ``prior`` are the initial within-class and prototype-prior variances
    (the same in every dimension); meta-training learns one of each per dimension, so
    the embedding's size must be known (``feature_dim``, read from the backbone's
    ``out_features`` when it has one). Any number of ways works.
    """

    algo = "bayes"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_dim: int | None = None,
        noise: float = 0.5,
        prior: float = 100.0,
        batch_norm: BatchNormMode = "transductive",
        task_parallel: TaskParallel = "loop",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(backbone, batch_norm=batch_norm, task_parallel=task_parallel, chunk_size=chunk_size)
        feature_dim = output_width(backbone, feature_dim)
        if noise <= 0 or prior <= 0:
            raise BadInputError(f"noise and prior are variances and must be positive, not {noise} and {prior}")
        self.feature_dim, self.noise, self.prior = int(feature_dim), noise, prior
        # log-variances: any real value is a valid variance
        self.log_noise = nn.Parameter(torch.full((self.feature_dim,), math.log(noise)))
        self.log_prior = nn.Parameter(torch.full((self.feature_dim,), math.log(prior)))

    def _hyperparameters(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "noise": self.noise, "prior": self.prior}

    def _task_objective(
        self, params: Params, buffers: Mapping[str, Tensor | None],
        support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int,
    ) -> Tensor:
        mean, variance = gaussian_prototypes(self._embed(params, buffers, support_x), support_y, ways,
                                             params["log_noise"].exp(), params["log_prior"].exp())
        return F.cross_entropy(predictive_log_density(self._embed(params, buffers, query_x), mean, variance), query_y)

    def adapt(self, x: Tensor, y: Tensor, *, weights: Tensor | None = None) -> GaussianPrototypeClassifier:
        """Prototype posteriors from the labeled ``x, y``; ``weights`` count an example fractionally (0 = absent)."""
        ways = support_ways(x, y, weights)
        params, buffers = detached(dict(self.named_parameters())), self._call_buffers()
        with evaluating(self):
            mean, variance = gaussian_prototypes(self._embed(params, buffers, x), y, ways, params["log_noise"].exp(),
                                                 params["log_prior"].exp(), weights)
        return GaussianPrototypeClassifier(self, params, buffers, mean, variance)


class GaussianPrototypeClassifier:
    """A Bayesian ProtoNet adapted to one task: each class's predictive Gaussian, and the learner's weights (shared)."""

    def __init__(self, learner: BayesProtoNet, params: Params, buffers: Mapping[str, Tensor | None],
                 mean: Tensor, variance: Tensor) -> None:
        self.learner, self.params, self.buffers = learner, params, buffers
        self.mean, self.variance = mean, variance  # [ways, d]: the predictive of an item of each class

    def embed(self, x: Tensor) -> Tensor:
        with evaluating(self.learner):
            return self.learner._embed(self.params, self.buffers, x)

    def logits(self, x: Tensor) -> Tensor:
        """Log predictive density of each item under each class (the prototype integrated out)."""
        return predictive_log_density(self.embed(x), self.mean, self.variance)

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(-1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)
