"""Which items a round asks a person about, and why.

Three kinds of question, in this order:

1. ``label-issue``: seed labels that confident learning flags as likely wrong, asked again.
2. ``reference``: items drawn uniformly at random from the items a model could label.
   They are the only evidence about precision (``metalabel.label.certify``): never chosen
   by a model, so a model's mistakes cannot hide from them.
3. The query strategy's picks (``margin``, ``typiclust``, ...): the most useful items
   to learn from. They train the model but say nothing about its precision.

Everything here is a pure function of its arguments and the ``rng``: a resumed run,
seeded the same, asks the same questions as one that was never interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metalabel.label.active import select

REFERENCE = "reference"
LABEL_ISSUE = "label-issue"


@dataclass(frozen=True)
class Ask:
    """One question to put: a pool position and why it is asked (``reference``, ``label-issue`` or a strategy)."""

    position: int
    why: str


def choose_questions(probs: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray, *, reference: int,
                     active: int, strategy: str, human_positions: np.ndarray, suspect_seeds: np.ndarray,
                     rng: np.random.Generator) -> list[Ask]:
    """Up to ``reference + active`` questions about ``candidates`` (pool positions free to ask: no person's
    label and no open question); ``suspect_seeds`` are seed-labeled positions, asked again before the rest.

    ``strategy="auto"`` is TypiClust (typical items of unlabeled clusters, for when the
    model's uncertainty means little) while there are fewer than two human labels per
    class, then margin. Suspect seed labels take at most a tenth of the questions, asked
    first; the reference sample keeps its share of the rest.
    """
    total = reference + active
    issues = [Ask(int(p), LABEL_ISSUE) for p in suspect_seeds[:max(total // 10, 1) if total else 0]]
    pool = np.asarray(candidates, dtype=np.int64)
    picks = rng.permutation(pool)[:min(reference, total - len(issues), len(pool))]
    questions = issues + [Ask(int(p), REFERENCE) for p in picks]
    remaining = np.setdiff1d(pool, picks)
    wanted = min(total - len(questions), len(remaining))
    if wanted > 0:
        if strategy == "auto":
            ways = probs.shape[1]
            strategy = "typiclust" if len(human_positions) < 2 * ways else "margin"
        chosen = select(strategy, probs[remaining], embeddings[remaining], budget=wanted,
                        labeled_embeddings=embeddings[human_positions] if len(human_positions) else None, rng=rng)
        questions += [Ask(int(p), strategy) for p in remaining[chosen]]
    return questions
