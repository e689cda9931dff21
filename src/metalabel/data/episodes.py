"""Few-shot episodes: N-way K-shot Q-query tasks over disjoint class splits."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Episode:
    """One task, or a batch of T tasks with a leading T axis on every tensor.

    Labels are episode-local: ``0..ways-1``. ``unlabeled_y`` holds the true
    episode-local label of each unlabeled item, or -1 for a distractor class; it is
    for evaluation only and never shown to a learner. ``classes`` maps episode-local
    labels back to the data set's class ids.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    unlabeled_x: Tensor | None = None
    unlabeled_y: Tensor | None = None
    classes: Tensor | None = None

    @property
    def batched(self) -> bool:
        return self.support_y.dim() == 2

    @property
    def ways(self) -> int:
        return int(self.support_y.max()) + 1

    def to(self, device) -> "Episode":
        def move(t):
            return None if t is None else t.to(device)

        return Episode(*(move(getattr(self, f)) for f in self.__dataclass_fields__))
