"""A round's acceptance: the reference evidence, the certificate over the population it speaks for, and the
labels that certificate admits (written, with every stale model label retracted).

The statistics live in ``metalabel.label.certify``; this module gathers their inputs from the
store (which reference questions a person closed, from which region each was drawn) and writes
their outcome back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from metalabel.label.ask import REFERENCE
from metalabel.label.certify import Certificate, Method, RegionDesign, certify_acceptance
from metalabel.label.fitting import Calibration
from metalabel.label.positions import PoolIndex
from metalabel.rules import RuleVotes, record_rule_votes
from metalabel.store import Label, LabelSource, ProjectStore, Question


@dataclass(frozen=True, eq=False)
class ReferenceEvidence:
    """The reference questions a person closed: the evidence about precision.

    An answered item is predicted out of fold (by a model that never saw its answer); a
    dismissed one ("can't tell") counts as an error, since hard items are the ones people
    skip and dropping them would flatter the model. ``answered`` tells them apart.
    """

    positions: np.ndarray
    confidence: np.ndarray
    predicted: np.ndarray
    correct: np.ndarray
    answered: np.ndarray
    region: np.ndarray  # the store's reference region the item was drawn from; -1: from all candidates
    round_id: np.ndarray  # the round that asked

    @classmethod
    def empty(cls) -> ReferenceEvidence:
        dtypes = (np.int64, float, np.int64, bool, bool, np.int64, np.int64)
        return cls(*(np.array([], dtype=dtype) for dtype in dtypes))

    def subset(self, keep: np.ndarray) -> ReferenceEvidence:
        return ReferenceEvidence(*(getattr(self, f.name)[keep] for f in fields(ReferenceEvidence)))


@dataclass(frozen=True, eq=False)
class CertifiedFigures:
    """What the scorecard says of a certificate: the bound, the estimate, coverage and the thresholds [C]."""

    bound: float | None
    estimate: float | None
    coverage: float
    delta: float
    thresholds: np.ndarray | None  # None when nothing is certified

    @classmethod
    def of(cls, certificate: Certificate) -> CertifiedFigures:
        return cls(certificate.lower_bound, certificate.estimate, certificate.coverage, certificate.delta,
                   certificate.thresholds if certificate.certified else None)


@dataclass(frozen=True, eq=False)
class Acceptance:
    """The project's acceptance rule: certify at ``target`` with probability ``1 - delta`` by ``method``
    (``binomial`` or ``ppi``, as ``certify_acceptance``) on the reference sample, and write what it admits."""

    store: ProjectStore
    index: PoolIndex
    classes: Sequence[str]
    target: float
    delta: float
    method: Method

    def reference_evidence(self, calibration: Calibration, probs: np.ndarray,
                           candidates: np.ndarray) -> ReferenceEvidence:
        """Each closed reference question: was the model right where it never saw the answer?"""
        if calibration.probs is None or calibration.positions is None or calibration.labels is None:
            return ReferenceEvidence.empty()  # nothing held out yet, so no out-of-fold prediction to judge
        position = self.index.position_of_item
        class_index = {name: c for c, name in enumerate(self.classes)}
        candidate_set = set(candidates.tolist())
        held_row = {int(p): i for i, p in enumerate(calibration.positions)}
        draws: dict[int, Question] = {}  # pool position -> its reference question (the first, if several)
        answers: dict[int, str] = {}
        for question in self._closed_reference_questions():
            p = position.get(question.item_id)
            if p is not None and p not in draws:
                draws[p] = question
            if p is not None and question.answer is not None:
                answers.setdefault(p, question.answer)
        rows: list[tuple[int, float, int, bool, bool]] = []
        for p in sorted(draws):
            if p in candidate_set:  # dismissed, no person's label since: scored like a candidate, counted wrong
                rows.append((p, float(probs[p].max()), int(probs[p].argmax()), False, False))
            elif p in held_row:  # answered, or dismissed and labeled later through another question
                held = calibration.probs[held_row[p]]
                rows.append((p, float(held.max()), int(held.argmax()), bool(held.argmax() == calibration.labels[
                    held_row[p]]), True))
            elif p in answers:  # answered after ``probs`` were made (an audit): they never saw the answer
                rows.append((p, float(probs[p].max()), int(probs[p].argmax()),
                             bool(probs[p].argmax() == class_index[answers[p]]), True))
        kept = [draws[row[0]] for row in rows]
        columns: list[Sequence[float]] = list(zip(*rows)) if rows else [[]] * 5
        return ReferenceEvidence(
            np.array(columns[0], dtype=np.int64), np.array(columns[1], dtype=float),
            np.array(columns[2], dtype=np.int64), np.array(columns[3], dtype=bool), np.array(columns[4], dtype=bool),
            np.array([-1 if q.reference_region is None else q.reference_region for q in kept], dtype=np.int64),
            np.array([q.round_id or 0 for q in kept], dtype=np.int64))

    def certify(self, candidates: np.ndarray, candidate_probs: np.ndarray,
                reference: ReferenceEvidence) -> Certificate:
        """The certificate over the population the reference sample was drawn from, restricted to the candidates.

        Answered reference items left the candidates when a person labeled them, but they
        were drawn from them: they stay in the tested population (with their out-of-fold
        scores) so it is the one the sample represents. Only candidates get model labels.

        The p-value is the exact binomial conditional on how many draws land above each
        threshold. The reference sample was drawn over several rounds, each uniformly from
        that round's candidates (which hold every candidate of today), so a draw that lands
        above a threshold is uniform over what lies there: that is all the conditional test
        needs. The design-calibrated p-value assumes every draw was uniform over exactly
        today's population, which rounds of active answers in between break. Draws from a
        round's confident region are declared as such (``RegionDesign``); ``ppi`` has no
        test for them, so it leaves them out.
        """
        if self.method != "binomial":
            reference = reference.subset(reference.region < 0)
        answered = reference.answered
        population = certify_acceptance(
            np.concatenate([candidate_probs.max(1), reference.confidence[answered]]),
            np.concatenate([candidate_probs.argmax(1), reference.predicted[answered]]),
            reference_confidence=reference.confidence, reference_predicted=reference.predicted,
            reference_correct=reference.correct, target=self.target, delta=self.delta,
            method=self.method, classes=len(self.classes), condition_on_counts=True,
            regions=self._region_design(candidates, reference))
        mask = population.mask[:len(candidate_probs)]
        reason = population.reason
        if population.certified:
            reason += (f"; {int(mask.sum())} of them get a model label, the rest are reference items a person "
                       "already labeled")
        return replace(population, mask=mask, accepted=int(mask.sum()), coverage=float(mask.mean()), reason=reason)

    def write(self, round_id: int, active: Sequence[Label], candidates: np.ndarray, certificate: Certificate,
              raw: np.ndarray, probs: np.ndarray, model_hash: str, *, rules: RuleVotes | None = None,
              head: str = "") -> int:
        """Write the certified labels and retract every model label in ``active`` (the project's active labels,
        as the round read them) that the rule no longer admits; with ``rules``, the votes behind the labels.

        One transaction: a rule-derived label and the rule votes behind it are on record together.
        Returns how many labels were retracted.
        """
        accepted = {int(p) for p in candidates[certificate.mask]}
        retracted = 0
        with self.store.batch():
            for label in active:
                position = self.index.position_of_item.get(label.item_id)
                if LabelSource(label.source) is LabelSource.MODEL and position not in accepted:
                    self.store.retract_label(label.id, round_id=round_id,
                                             reason=_retraction_reason(certificate, probs, position))
                    retracted += 1
            for position in sorted(accepted):
                predicted = int(probs[position].argmax())
                self.store.add_label(
                    self.index.item_id(position), self.classes[predicted], source="model",
                    raw_confidence=float(raw[position, predicted]),
                    calibrated_confidence=float(probs[position, predicted]),
                    threshold=float(certificate.thresholds[predicted]), certified_precision=certificate.lower_bound,
                    round_id=round_id, model_hash=model_hash)
            if rules is not None:
                record_rule_votes(self.store, rules, round_id=round_id, head=head,
                                  item_ids={p: self.index.item_id(p) for p in candidates[certificate.mask]})
        return retracted

    def _closed_reference_questions(self) -> list[Question]:
        return (self.store.answered_questions(strategy=REFERENCE)
                + self.store.dismissed_questions(strategy=REFERENCE))

    def _region_design(self, candidates: np.ndarray, reference: ReferenceEvidence) -> RegionDesign | None:
        """Where the reference draws came from, over the certified population (candidates, then answered draws).

        An item counts as inside a region also when it was no candidate when the region was drawn from
        (a person had labeled it already), so no draw from the region could have missed it.
        """
        region_ids = sorted({int(r) for r in reference.region if r >= 0})
        if not region_ids:
            return None
        rounds = {q.reference_region: q.round_id or 0 for q in self._closed_reference_questions()
                  if q.reference_region is not None}
        population = np.concatenate([candidates, reference.positions[reference.answered]])
        item_ids = np.array([self.index.item_id(int(p)) for p in population], dtype=np.int64)
        answered_round = np.concatenate([np.full(len(candidates), np.iinfo(np.int64).max),
                                         reference.round_id[reference.answered]])
        inside = np.zeros((len(population), len(region_ids)), dtype=bool)
        for k, region_id in enumerate(region_ids):
            inside[:, k] = np.isin(item_ids, self.store.reference_region(region_id)) | (
                answered_round < rounds[region_id])
        row_of = {int(p): i for i, p in enumerate(population)}
        draws = inside[[row_of[int(p)] for p in reference.positions]]
        drawn_from = np.array([region_ids.index(int(r)) if r >= 0 else -1 for r in reference.region], dtype=np.int64)
        return RegionDesign(inside, draws, drawn_from)


def _retraction_reason(certificate: Certificate, probs: np.ndarray, position: int | None) -> str:
    if position is None:
        return "the item is no longer in the pool"
    confidence = float(probs[position].max())
    if not certificate.certified:
        return f"no certificate this round ({certificate.reason}); calibrated confidence {confidence:.3f}"
    threshold = float(certificate.thresholds[int(probs[position].argmax())])
    return f"calibrated confidence {confidence:.3f} below the certified threshold {threshold:.3f}"
