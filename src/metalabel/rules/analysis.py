"""How each labeling function behaves: coverage, overlaps, conflicts, accuracy against people's labels.

In the manner of Snorkel's LF analysis. ``empirical accuracy`` counts only items a
person labeled (human answers and seed labels), with a Wilson score interval; the
label model's estimate covers every item the rule fired on, judged by the other rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from metalabel.rules.functions import ABSTAIN_INDEX, RuleVotes
from metalabel.rules.label_model import LabelModel


@dataclass(frozen=True)
class RuleStats:
    """One rule's figures over the pool (shares of all pool items) and on the human-labeled items."""

    name: str
    votes_for: tuple[str, ...]  # the classes it voted for on this pool
    coverage: float  # share of items it votes on
    overlap: float  # share of items it votes on that another rule also votes on
    conflict: float  # share of items it votes on where another rule votes another class
    human_labeled: int  # items it voted on that a person labeled
    correct: int  # of those, how many it got right
    accuracy: float | None  # correct / human_labeled
    accuracy_low: float | None  # Wilson interval at ``level``
    accuracy_high: float | None
    estimated_accuracy: float  # the label model's estimate (anchored on the human labels)


@dataclass(frozen=True)
class RuleAnalysis:
    rules: tuple[RuleStats, ...]
    items: int
    covered: float  # share of items at least one rule votes on
    conflicted: float  # share of items with two rules voting different classes
    human_labels: int
    level: float

    def most_disagreeing(self, count: int = 3) -> list[RuleStats]:
        """The rules that most often vote against a person's label (by count, then accuracy)."""
        wrong = [r for r in self.rules if r.human_labeled > r.correct]
        wrong.sort(key=lambda r: (r.correct - r.human_labeled, r.accuracy or 0.0))
        return wrong[:count]

    def to_json(self) -> dict:
        return {**asdict(self), "most_disagreeing": [r.name for r in self.most_disagreeing()]}

    def lines(self) -> list[str]:
        """The analysis in plain words, one rule a line."""
        out = [f"rules: {len(self.rules)} over {self.items} items; at least one votes on {self.covered:.1%}, "
               f"rules conflict on {self.conflicted:.1%}; checked against {self.human_labels} human labels"]
        for r in self.rules:
            if r.accuracy is None:
                checked = "no human-labeled item it votes on"
            else:
                checked = (f"{r.accuracy:.0%} right on {r.human_labeled} human labels "
                           f"({self.level:.0%} interval {r.accuracy_low:.0%}-{r.accuracy_high:.0%})")
            out.append(f"  {r.name} -> {', '.join(r.votes_for) or '(never fires)'}: coverage {r.coverage:.1%}, "
                       f"overlap {r.overlap:.1%}, conflict {r.conflict:.1%}; {checked}; "
                       f"label model estimate {r.estimated_accuracy:.0%}")
        worst = self.most_disagreeing()
        if worst:
            out.append("  most often against people: " + ", ".join(
                f"{r.name} ({r.human_labeled - r.correct} of {r.human_labeled})" for r in worst))
        return out


def wilson_interval(correct: int, total: int, *, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (two-sided, at ``level``)."""
    if total == 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def analyze_rules(votes: RuleVotes, human_positions: np.ndarray, human_classes: np.ndarray, *,
                  level: float = 0.95) -> RuleAnalysis:
    """Every rule's coverage, overlap, conflict and accuracy; human labels at pool ``human_positions``."""
    matrix = votes.matrix
    fired = matrix != ABSTAIN_INDEX  # [N, m]
    n = len(matrix)
    others_fire = fired.sum(1, keepdims=True) - fired > 0
    # a conflict: some other rule votes a class other than this rule's vote
    low = np.where(fired, matrix, np.iinfo(np.int64).max).min(1, keepdims=True)
    high = np.where(fired, matrix, -1).max(1, keepdims=True)
    conflicted = fired & ((low != matrix) | (high != matrix)) & others_fire
    human_positions = np.asarray(human_positions, dtype=np.int64)
    human_classes = np.asarray(human_classes, dtype=np.int64)
    model = LabelModel(len(votes.classes)).fit(matrix, anchors=human_positions, anchor_classes=human_classes)
    stats = []
    for j, name in enumerate(votes.names):
        on_human = fired[human_positions, j]
        labeled = int(on_human.sum())
        correct = int((matrix[human_positions, j][on_human] == human_classes[on_human]).sum())
        interval = wilson_interval(correct, labeled, level=level) if labeled else (None, None)
        stats.append(RuleStats(
            name=name, votes_for=tuple(votes.classes[c] for c in np.unique(matrix[fired[:, j], j])),
            coverage=float(fired[:, j].mean()) if n else 0.0,
            overlap=float((fired[:, j] & others_fire[:, j]).mean()) if n else 0.0,
            conflict=float(conflicted[:, j].mean()) if n else 0.0,
            human_labeled=labeled, correct=correct, accuracy=correct / labeled if labeled else None,
            accuracy_low=interval[0], accuracy_high=interval[1], estimated_accuracy=float(model.accuracy_[j])))
    any_conflict = conflicted.any(1)
    return RuleAnalysis(tuple(stats), n, float(fired.any(1).mean()) if n else 0.0,
                        float(any_conflict.mean()) if n else 0.0, len(human_positions), level)
