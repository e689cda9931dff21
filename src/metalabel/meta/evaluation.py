"""Few-shot evaluation: mean accuracy with a 95% confidence interval over fixed episodes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from metalabel.data.episodes import EpisodeSampler, mean_confidence_interval
from metalabel.meta.functional import MetaLearner


@dataclass(frozen=True)
class EvalResult:
    """Accuracy over ``episodes`` fixed test tasks: mean and the half-width of its 95% CI."""

    accuracy: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int

    def __str__(self) -> str:
        return (f"{self.ways}-way {self.shots}-shot: {100 * self.accuracy:.2f} ± {100 * self.ci95:.2f}% "
                f"({self.episodes} episodes)")

    def as_dict(self) -> dict:
        return asdict(self)


def episode_accuracies(learner: MetaLearner, sampler: EpisodeSampler, *, episodes: int,
                       device: str | torch.device = "cpu", progress=None) -> np.ndarray:
    """Query accuracy of ``learner`` adapted to each of the first ``episodes`` tasks of ``sampler``."""
    was_training = getattr(learner, "training", False)
    if hasattr(learner, "eval"):
        learner.eval()
    accuracies = np.empty(episodes)
    try:
        for index in range(episodes):
            episode = sampler[index].to(device)
            adapted = learner.adapt(episode.support_x, episode.support_y)
            with torch.no_grad():
                predicted = adapted.predict_proba(episode.query_x).argmax(-1)
            accuracies[index] = (predicted == episode.query_y).float().mean().item()
            if progress is not None:
                progress()
    finally:
        if was_training and hasattr(learner, "train"):
            learner.train()
    return accuracies


def meta_evaluate(learner: MetaLearner, sampler: EpisodeSampler, *, episodes: int | None = None,
                  device: str | torch.device = "cpu", progress=None) -> EvalResult:
    """Mean accuracy and 95% CI over the sampler's fixed episodes (all of them unless ``episodes``)."""
    count = episodes if episodes is not None else len(sampler)
    accuracies = episode_accuracies(learner, sampler, episodes=count, device=device, progress=progress)
    mean, half_width = mean_confidence_interval(accuracies)
    return EvalResult(accuracy=float(mean), ci95=float(half_width), episodes=count,
                      ways=sampler.ways, shots=sampler.shots, queries=sampler.queries)
