"""Few-shot evaluation: mean accuracy with a 95% confidence interval over fixed episodes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from metalabel.data.episodes import EpisodeSampler, mean_confidence_interval
from metalabel.meta.functional import MetaLearner


@dataclass(frozen=True)
class EvalResult:
    """Accuracy over ``episodes`` fixed test tasks: mean and the half-width of its 95% CI.

    How far the probabilities can be taken at their word: ``log_loss`` is the mean
    -log probability of the true class, ``confidence`` the mean top probability (above
    ``accuracy``: overconfident; below: underconfident), both over every query.
    """

    accuracy: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    log_loss: float = float("nan")
    confidence: float = float("nan")

    def __str__(self) -> str:
        return (f"{self.ways}-way {self.shots}-shot: {100 * self.accuracy:.2f} ± {100 * self.ci95:.2f}% "
                f"({self.episodes} episodes)")

    def as_dict(self) -> dict:
        return asdict(self)


def episode_scores(learner: MetaLearner, sampler: EpisodeSampler, *, episodes: int,
                   device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """``[episodes, 3]``: query accuracy, log loss and mean top probability of ``learner`` on each task."""
    was_training = getattr(learner, "training", False)
    if hasattr(learner, "eval"):
        learner.eval()
    scores = np.empty((episodes, 3))
    try:
        for index in range(episodes):
            episode = sampler[index].to(device)
            adapted = learner.adapt(episode.support_x, episode.support_y)
            with torch.no_grad():
                proba = adapted.predict_proba(episode.query_x)
            top, predicted = proba.max(-1)
            true_class = proba.gather(1, episode.query_y.unsqueeze(1)).squeeze(1)
            scores[index] = ((predicted == episode.query_y).float().mean().item(),
                             -true_class.double().clamp_min(1e-12).log().mean().item(), top.mean().item())
            if progress is not None:
                progress()
    finally:
        if was_training and hasattr(learner, "train"):
            learner.train()
    return scores


def episode_accuracies(learner: MetaLearner, sampler: EpisodeSampler, *, episodes: int,
                       device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """Query accuracy of ``learner`` adapted to each of the first ``episodes`` tasks of ``sampler``."""
    return episode_scores(learner, sampler, episodes=episodes, device=device, progress=progress)[:, 0]


def meta_evaluate(learner: MetaLearner, sampler: EpisodeSampler, *, episodes: int | None = None,
                  device: str | torch.device = "cpu", progress=None) -> EvalResult:
    """Mean accuracy and 95% CI over the sampler's fixed episodes (all of them unless ``episodes``)."""
    count = episodes if episodes is not None else len(sampler)
    scores = episode_scores(learner, sampler, episodes=count, device=device, progress=progress)
    mean, half_width = mean_confidence_interval(scores[:, 0])
    return EvalResult(accuracy=float(mean), ci95=float(half_width), episodes=count,
                      ways=sampler.ways, shots=sampler.shots, queries=sampler.queries,
                      log_loss=float(scores[:, 1].mean()), confidence=float(scores[:, 2].mean()))
