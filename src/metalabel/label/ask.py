"""Which items a round asks a person about, and why.

Three kinds of question, in this order:

1. ``label-issue``: seed labels that confident learning flags as likely wrong, asked again.
2. ``reference``: items drawn uniformly at random from the items a model could label,
   part of them from a region of the most confident ones (``confident_region``), where a
   certificate needs its evidence. They are the only evidence about precision
   (``metalabel.label.certify``): never chosen by what a model says of the item itself,
   so a model's mistakes cannot hide from them.
3. The query strategy's picks (``margin``, ``typiclust``, ...): the most useful items
   to learn from. They train the model but say nothing about its precision.

Everything here is a pure function of its arguments and the ``rng``: a resumed run,
seeded the same, asks the same questions as one that was never interrupted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from metalabel.label.active import QueryPool, select
from metalabel.store.records import Question

REFERENCE = "reference"
LABEL_ISSUE = "label-issue"
DRAWN_AT_RANDOM = frozenset({REFERENCE, "random"})
"""Question strategies whose items are a uniform sample of the pool: their answers judge models without bias."""
REGION_MARGIN = 1.5
"""How much wider than where a certificate is expected a reference region is: later rounds' models,
trained on more answers, are confident on more items, and a draw is evidence only for sets inside its region."""


@dataclass(frozen=True)
class Ask:
    """One question to put: a pool position and why it is asked (``reference``, ``label-issue`` or a strategy)."""

    position: int
    why: str
    from_region: bool = False  # a reference draw from the round's confident region, not from all candidates


def confident_region(confidence: np.ndarray, target: float, *, margin: float = REGION_MARGIN) -> np.ndarray:
    """Indices into ``confidence`` of the ``margin`` x n most confident items, n being the longest most-confident
    run whose mean confidence reaches halfway from ``target`` to 1 (where a calibrated model expects its
    certificate: a set certified from a few dozen draws has few errors); empty when no such run exists."""
    confidence = np.asarray(confidence, dtype=np.float64)
    order = np.argsort(-confidence, kind="stable")
    running_mean = np.cumsum(confidence[order]) / np.arange(1, order.size + 1)
    reaching = np.flatnonzero(running_mean >= 1 - (1 - target) / 2)
    if not reaching.size:
        return np.array([], dtype=np.int64)
    return np.sort(order[:min(math.ceil(margin * (reaching[-1] + 1)), order.size)])


def choose_questions(probs: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray, *, reference: int,
                     active: int, strategy: str, human_positions: np.ndarray, suspect_seeds: np.ndarray,
                     rng: np.random.Generator, region: np.ndarray | None = None, from_region: int = 0) -> list[Ask]:
    """Up to ``reference + active`` questions about ``candidates`` (pool positions free to ask: no person's
    label and no open question); ``suspect_seeds`` are seed-labeled positions, asked again before the rest.
    ``from_region`` of the reference questions are drawn uniformly from ``region`` (positions within
    ``candidates``), the rest uniformly from all ``candidates``.

    ``strategy="auto"`` is TypiClust (typical items of unlabeled clusters, for when the
    model's uncertainty means little) while there are fewer than two human labels per
    class, then margin. Suspect seed labels take at most a tenth of the questions, asked
    first; the reference sample keeps its share of the rest.
    """
    total = reference + active
    issues = [Ask(int(p), LABEL_ISSUE) for p in suspect_seeds[:max(total // 10, 1) if total else 0]]
    pool = np.asarray(candidates, dtype=np.int64)
    reference = min(reference, total - len(issues), len(pool))
    inside = np.array([], dtype=np.int64)
    if region is not None and from_region > 0:
        inside = rng.permutation(np.asarray(region, dtype=np.int64))[:min(from_region, reference)]
    uniform = rng.permutation(pool[~np.isin(pool, inside)])[:reference - len(inside)]
    picks = np.concatenate([inside, uniform])
    questions = issues + [Ask(int(p), REFERENCE, from_region=True) for p in inside]
    questions += [Ask(int(p), REFERENCE) for p in uniform]
    remaining = np.setdiff1d(pool, picks)
    wanted = min(total - len(questions), len(remaining))
    if wanted > 0:
        if strategy == "auto":
            ways = probs.shape[1]
            strategy = "typiclust" if len(human_positions) < 2 * ways else "margin"
        labeled = embeddings[human_positions] if len(human_positions) else None
        chosen = select(strategy, QueryPool(probs[remaining], embeddings[remaining], labeled), budget=wanted, rng=rng)
        questions += [Ask(int(p), strategy) for p in remaining[chosen]]
    return questions


def awaiting_reference(open_questions: Iterable[Question]) -> frozenset[int]:
    """Items whose reference question is still open: no one may be shown a model's guess for them until answered,
    since a reference answer is evidence only if the person did not see it."""
    return frozenset(question.item_id for question in open_questions if question.strategy == REFERENCE)
