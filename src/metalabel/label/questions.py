"""A round's questions as a whole: the planner's split between the reference sample and the query strategy,
the questions recorded in the store (with why each was asked), and every open question put to the oracle.

Which items to ask is ``metalabel.label.ask``'s pure choice; this module reads its inputs from the store
and writes its outcome back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.label.acceptance import ReferenceEvidence
from metalabel.label.ask import LABEL_ISSUE, REFERENCE, REGION_MARGIN, choose_questions, confident_region
from metalabel.label.certify import BudgetPlan, plan_budget
from metalabel.label.oracle import Oracle, Query, put_questions
from metalabel.label.positions import PoolIndex
from metalabel.store import LabelSource, ProjectStore

MIN_REFERENCE_SHARE = 0.25
"""Of a round's questions, what goes to the reference sample when no coverage looks reachable yet."""


@dataclass(frozen=True, eq=False)
class Asking:
    """How a project's rounds ask: ``reference_share`` of the questions for the reference sample (None: as
    the planner splits them to reach ``coverage_goal`` at ``target`` with probability ``1 - delta``), the
    rest by ``strategy``; every open question goes to ``oracle`` (None: nobody to ask, as in ``plan``)."""

    store: ProjectStore
    pool: LabeledDataset
    index: PoolIndex
    classes: Sequence[str]
    oracle: Oracle | None
    target: float
    delta: float
    coverage_goal: float
    reference_share: float | None
    strategy: str
    seed: int

    def plan(self, candidate_probs: np.ndarray, reference: ReferenceEvidence, *, questions: int,
             coverage: float | None = None) -> BudgetPlan:
        """How many more reference and active answers reach ``coverage`` at the target, and the next round's split."""
        counts = self.store.label_counts()
        return plan_budget(candidate_probs.max(1), reference_confidence=reference.confidence,
                           reference_correct=reference.correct, target=self.target,
                           coverage=self.coverage_goal if coverage is None else coverage,
                           trained_on=int(counts[LabelSource.HUMAN] + counts[LabelSource.IMPORTED]),
                           questions_per_round=max(questions, 1), delta=self.delta)

    def ask(self, round_id: int, number: int, count: int, probs: np.ndarray, embeddings: np.ndarray,
            candidates: np.ndarray, reference: ReferenceEvidence, suspect_seed_items: Sequence[int], *,
            audit: bool = False) -> tuple[int, int]:
        """Split ``count`` questions between the reference sample and the query strategy, ask, and put them.

        ``number`` (the round's, ``LabelingRun._round_number``) seeds the choice. ``suspect_seed_items``: seed
        labels that look wrong, asked again unless they were before. An audit asks only reference questions,
        drawn from the confident region (all candidates if it is empty), besides those seed labels.
        Returns the reference questions and all questions asked.
        """
        open_items = {q.item_id for q in self.store.open_questions()}
        free = np.array([p for p in candidates if self.index.item_id(p) not in open_items], dtype=np.int64)
        if audit:
            reference_count = count
        elif self.reference_share is None:
            reference_count = self._reference_questions(probs[candidates], reference, questions=count)
        else:
            reference_count = round(count * self.reference_share)
        reference_count = min(reference_count, len(free))
        asked_before = {q.item_id for q in self.store.answered_questions(strategy=LABEL_ISSUE)}
        suspects = np.array([self.index.position_of_item[item] for item in suspect_seed_items
                             if item not in asked_before and item not in open_items], dtype=np.int64)
        human = np.setdiff1d(self.index.registered, candidates)
        region = free[confident_region(probs[free].max(1), self.target)] if audit else free[:0]
        questions = choose_questions(probs, embeddings, free, reference=reference_count,
                                     active=count - reference_count, strategy=self.strategy,
                                     human_positions=human, suspect_seeds=suspects,
                                     rng=np.random.default_rng([self.seed, number, 1]),
                                     region=region, from_region=reference_count if audit else 0)
        with self.store.batch():
            region_id = None
            if any(q.from_region for q in questions):
                region_id = self.store.add_reference_region(
                    (self.index.item_id(p) for p in region), round_id=round_id,
                    rule=f"the {len(region)} most confident of {len(free)} free candidates ({REGION_MARGIN} x the "
                         f"longest run whose mean calibrated confidence reaches {self.target})")
            for question in questions:
                self.store.ask(self.index.item_id(question.position), strategy=question.why, round_id=round_id,
                               score=float(probs[question.position].max()),
                               reference_region=region_id if question.from_region else None)
        self.put_open_questions(probs)
        return sum(q.why == REFERENCE for q in questions), len(questions)

    def put_open_questions(self, probs: np.ndarray | None) -> None:
        """Give every open question to the oracle; each answer is committed the moment it is given.

        ``probs`` (the round's calibrated pool probabilities) suggest an answer, except to a reference
        question; None puts them unscored (questions a killed run asked).
        """
        questions = self.store.open_questions()
        if not questions or self.oracle is None:
            return
        queries = []
        for question in questions:
            position = self.index.position_of_item[question.item_id]
            item = self.pool.items[position]
            suggestion = confidence = None
            # a reference answer is evidence only if the person was not shown the model's guess
            if probs is not None and question.strategy != REFERENCE:
                suggestion = self.classes[int(probs[position].argmax())]
                confidence = float(probs[position].max())
            queries.append(Query(question.id, question.item_id, question.uri,
                                 item if self.pool.modality != "image" or isinstance(item, np.ndarray) else None,
                                 self.classes, suggestion, confidence))
        put_questions(self.store, self.oracle, queries)

    def _reference_questions(self, candidate_probs: np.ndarray, reference: ReferenceEvidence, *,
                             questions: int) -> int:
        """The planner's share of ``questions`` for the reference sample.

        When ``coverage_goal`` looks out of reach, the split is planned for the largest
        smaller coverage that is not; when none is, a floor of ``MIN_REFERENCE_SHARE`` still
        goes to the reference sample: without one, no certificate can ever be issued
        (measured: runs that never asked one exported nothing).
        """
        goal = self.coverage_goal
        for coverage in (goal, goal / 2, goal / 4, goal / 8):
            plan = self.plan(candidate_probs, reference, questions=questions, coverage=coverage)
            if plan.reachable:
                return plan.next_reference
        return math.ceil(MIN_REFERENCE_SHARE * questions)
