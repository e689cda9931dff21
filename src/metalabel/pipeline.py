"""The labeling loop: adapt, predict and calibrate, accept with a certified precision, ask a person, repeat.

Every step is committed to the project store as it happens, so a run killed at any
point (SIGKILL included) continues where it stopped: a round left "running" is
closed as failed and redone, a question asked but not answered is asked again
first, and an answer, once given, is committed before the next question is shown.

A round, top to bottom (``LabelingRun._round``):

1. read the labels once (``LabelSnapshot``);
2. continue the project's meta-learner and choose the learner and head that predict
   held-out human labels best (``metalabel.label.fitting``);
3. generate data where the set is thin, kept only on held-out evidence
   (``metalabel.generate.engine``);
4. predict the pool, cross-fitted and calibrated;
5. accept with a certificate: the confidence threshold whose precision over every
   label the export would write is at least the target with probability 1 - delta,
   judged on the random reference sample (``metalabel.label.certify``); every active
   model label the rule no longer admits is retracted;
6. score (``metalabel.evaluate.scorecard``);
7. plan and ask: reference questions drawn at random, the rest by the query strategy
   (``metalabel.label.ask``), each answer committed as it is given.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import BadInputError, NotEnoughDataError, check_whole_number
from metalabel.evaluate.records import (
    GeneratorOutcome,
    GoldMetrics,
    LabelQuality,
    RoundCertificate,
    RoundReport,
    Scorecard,
    SuspectLabel,
)
from metalabel.files import write_atomically
from metalabel.label.active import STRATEGIES
from metalabel.label.ask import REFERENCE, REGION_MARGIN, choose_questions, confident_region
from metalabel.label.certify import BudgetPlan, Certificate, RegionDesign, certify_acceptance, plan_budget
from metalabel.label.fitting import Calibration, LabelSnapshot, choose_model
from metalabel.label.graph import PoolGraph
from metalabel.label.oracle import Oracle, OracleStopped, Query, put_questions
from metalabel.label.round_model import (
    RoundModel,
    default_learner,
    feature_space,
    in_chunks,
    learner_hash,
    pool_inputs,
    reads_images,
)
from metalabel.meta.functional import TaskLearner
from metalabel.rules import RuleVotes, record_rule_votes
from metalabel.store import CERTIFICATE_METRIC, Item, Label, LabelSource, ProjectStore, Question

if TYPE_CHECKING:  # the generators load on first use
    from metalabel.generate.engine import DataGenerator, GenerationStep

LEARNER_HASH = re.compile(r"[0-9a-f]{16}")
"""How ``learner_hash`` names the checkpoint folders the loop writes under ``PROJECT/models/``."""
MIN_REFERENCE_SHARE = 0.25
"""Of a round's questions, what goes to the reference sample when no coverage looks reachable yet."""
ROUND_MODEL = "round-model"
"""Artifact kind: what a model label's ``model_hash`` names (learner checkpoint, head, feature space)."""
PROJECT_LEARNER = "project meta-learned"
GIVEN_LEARNER = "given"
ENCODER_SPACE = "encoder space"


@dataclass(frozen=True)
class RunOptions:
    """How a labeling run behaves; recorded with every round.

    ``budget`` counts the oracle's answers over the whole project, so a resumed run
    asks only what is left. ``per_round`` defaults to a fifth of the budget (at
    least one question per class). Labels are accepted only where the random reference
    sample certifies that everything the export would write is at least
    ``target_precision`` precise with probability ``1 - delta`` (``certify``: ``binomial``,
    an exact Clopper-Pearson bound on the reference items alone, or ``ppi``,
    prediction-powered: the calibrated confidences of the whole pool corrected by the
    reference sample). Each round the planner splits its questions between the
    reference sample and the query ``strategy`` (``auto``: TypiClust while there are
    fewer than two human labels per class, then margin) by what is expected to certify
    ``coverage_goal`` of the pool soonest (``metalabel.label.certify.plan_budget``);
    ``reference_share`` fixes that split instead. With ``audit``, the round that spends
    the rest of the budget is an audit: every question it asks is a reference draw from
    the round's confident region (``metalabel.label.ask.confident_region``), where the
    set it will export lies, and once answered its own predictions (made before the
    answers) are certified again on that evidence and the run ends. It certifies more
    where the model is middling (a uniform sample sends too few draws where the export
    lies) and less where a last round trained on every answer would be much better
    (measured in bench/results/precision_guarantee.md), so it is off by default.
    A run stops when the budget is spent, after ``max_rounds``, or when a round raised
    coverage by less than ``min_gain`` twice in a row.
    Without a given learner, ``project_meta_steps`` > 0 also meta-trains an embedding on
    pseudo-tasks from the project's own pool (CACTUs); each round keeps whichever of it and
    the plain encoder space predicts held-out human labels better, and with ``feedback``
    continues it ``meta_continue_steps`` on the grown data set, kept only when it predicts
    better. With ``generate``, each round runs the generators (``metalabel.generate.engine``);
    what they make counts ``generated_weight`` in the round's model, and only while it
    raises held-out accuracy. ``feedback=False`` turns every evidence-driven change off
    (fixed policy, generators unjudged): the baseline for measuring what feedback is worth.
    """

    target_precision: float = 0.95
    delta: float = 0.05
    certify: str = "binomial"
    budget: int = 100
    per_round: int | None = None
    reference_share: float | None = None
    audit: bool = False
    coverage_goal: float = 0.9
    max_rounds: int = 10
    strategy: str = "auto"
    pseudo_weight: float = 0.5
    refine_steps: int = 1
    calibration_folds: int = 5
    min_gain: float = 0.002
    project_meta_steps: int = 500
    meta_continue_steps: int = 100
    generate: bool = True
    generated_weight: float = 0.5
    feedback: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        # every option is checked here, before anything runs: an error inside a round would be
        # mistaken for "not enough data yet" or surface as a traceback from deep inside
        for name, minimum in (("budget", 0), ("max_rounds", 1), ("refine_steps", 0), ("calibration_folds", 2),
                              ("project_meta_steps", 0), ("meta_continue_steps", 0), ("seed", 0)):
            check_whole_number(name, getattr(self, name), minimum=minimum)
        if self.per_round is not None:
            check_whole_number("per_round", self.per_round, minimum=1)
        for name in ("target_precision", "delta", "pseudo_weight", "generated_weight", "min_gain"):
            _check_number(name, getattr(self, name))
        if not 0 < self.target_precision < 1:
            raise BadInputError(f"target_precision must lie in (0, 1), got {self.target_precision}")
        if not 0 < self.delta < 0.5:
            raise BadInputError(f"delta (the chance the guarantee may fail) must lie in (0, 0.5), got {self.delta}")
        _check_number("coverage_goal", self.coverage_goal)
        if not 0 < self.coverage_goal <= 1:
            raise BadInputError(f"coverage_goal must lie in (0, 1], got {self.coverage_goal}")
        if self.reference_share is not None:
            _check_number("reference_share", self.reference_share)
            if not 0 <= self.reference_share <= 1:
                raise BadInputError(f"reference_share must lie in [0, 1], got {self.reference_share}")
        for name in ("pseudo_weight", "generated_weight"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInputError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.min_gain < 0:
            raise BadInputError(f"min_gain must be >= 0, got {self.min_gain}")
        if self.certify not in ("binomial", "ppi"):
            raise BadInputError(f"no certification method named {self.certify!r}", hint="choose binomial or ppi")
        if self.strategy != "auto" and str(self.strategy).strip().lower().replace("-", "_") not in STRATEGIES:
            raise BadInputError(f"no query strategy named {self.strategy!r}",
                                hint=f"choose auto or one of {', '.join(STRATEGIES)}")
        for name in ("generate", "feedback", "audit"):
            if not isinstance(getattr(self, name), bool):
                raise BadInputError(f"{name} must be True or False, got {getattr(self, name)!r}")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(f"{name} must be a finite number, got {value!r}")


@dataclass
class RunResult:
    """Every round's report, and why the run stopped."""

    rounds: list[RoundReport]
    stopped_because: str


class PoolIndex:
    """Pool positions and store item ids, both ways. Pool items the store does not know yet have no id."""

    def __init__(self, pool: LabeledDataset, items: list[Item]) -> None:
        position = {uri: i for i, uri in enumerate(pool.uris)}
        self.item_ids = np.full(len(pool), -1, dtype=np.int64)
        for item in items:
            self.item_ids[position[item.uri]] = item.id
        self.position_of_item = {item.id: position[item.uri] for item in items}
        self.registered = np.flatnonzero(self.item_ids >= 0)

    def item_id(self, position: int) -> int:
        return int(self.item_ids[position])


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


# ----------------------------------------------------------------------------- the loop


class LabelingRun:
    """One call of ``Project.run`` (or ``evaluate``, ``plan``): rounds until the budget or the gains run out.

    It works on the project's store and its pool, loaded and checked against the stored
    hashes (``metalabel.store.pool``); the caller holds the writer lock.
    """

    def __init__(self, store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None, *,
                 oracle: Oracle | None, options: RunOptions,
                 encoder: str | None = None, gold: dict[str, str] | None = None, progress: bool = True,
                 on_round: Callable[[RoundReport], None] | None = None, rules: RuleVotes | None = None) -> None:
        self.store, self.pool, self.oracle, self.options = store, pool, oracle, options
        self.rules = rules  # the labeling functions' votes on the pool (metalabel.rules), evidence beside the model
        self.x = pool_inputs(self.pool, learner, encoder=encoder, progress=progress)
        self.space = feature_space(self.pool, learner, encoder=encoder)
        self.encoder = encoder
        self.learners: dict[str, TaskLearner] = {GIVEN_LEARNER: learner} if learner is not None else {}
        if learner is None or not reads_images(learner):
            # on encoder features the plain space competes with a given learner (a library's, say): the judge
            # keeps the given one only where it predicts held-out labels better; first while none can be held out
            self.learners[ENCODER_SPACE] = default_learner()
        self.classes = self.store.classes()
        self.class_index = {name: c for c, name in enumerate(self.classes)}
        self.index = PoolIndex(self.pool, self.store.items())
        self.gold = gold
        self.on_round = on_round
        self.generator: DataGenerator | None = None
        saved = self._saved_project_learner() if learner is None else None
        if saved is not None:  # a resumed or re-opened project continues with the meta-learner it made last
            self.learners[PROJECT_LEARNER] = saved
        self.hashes = {name: learner_hash(model) for name, model in self.learners.items()}
        self.pool_graphs: dict[str, list[PoolGraph]] = {}  # by learner hash: each embedding's graph, built once

    @property
    def ways(self) -> int:
        return len(self.classes)

    # -- the loop
    def run(self) -> RunResult:
        self._recover()
        self._prepare()
        options = self.options
        per_round = options.per_round or max(self.ways, options.budget // 5, 1)
        reports: list[RoundReport] = []
        stop_reason: str | None = None
        small_gains = 0
        while True:
            # questions still open count against the budget: they are asked, only not yet answered
            remaining = max(options.budget - self._answered_total() - len(self.store.open_questions()), 0)
            if remaining == 0 and stop_reason is None:
                stop_reason = "budget spent"
            if len(reports) + 1 >= options.max_rounds and stop_reason is None:
                stop_reason = "max_rounds"
            # the last round asks nothing: its model learns from every answer given before it
            ask = 0 if stop_reason else min(per_round, remaining)
            # ... unless the round that spends the budget audits what it exports (it ends the run); only the
            # binomial certificate has a test for draws from a region
            audit = options.audit and options.certify == "binomial" and 0 < ask == remaining
            if not len(self._candidates(self._snapshot())):
                return RunResult(reports, "every pool item has a person's label: nothing is left for a model")
            number = self._round_number()
            round_id = self.store.start_round({**asdict(options), "models": self.hashes, "ask": ask})
            try:
                report = self._round(round_id, number, ask=ask, audit=audit)
            except OracleStopped:
                self.store.finish_round(round_id, {"stopped_by_oracle": True}, status="failed")
                return RunResult(reports, "stopped by the oracle")
            except BaseException:
                self.store.finish_round(round_id, {"error": True}, status="failed")
                raise
            self.store.finish_round(round_id, report.to_json())
            gain = report.coverage - (reports[-1].coverage if reports else 0.0)
            reports.append(report)
            if self.on_round:
                self.on_round(report)
            if ask == 0:
                return RunResult(reports, stop_reason or "nothing left to ask")
            if report.questions == 0:
                stop_reason = "nothing left to ask"
            if self.store.open_questions():  # an asynchronous oracle (a Label Studio queue) answers later
                return RunResult(reports, "waiting for the oracle's answers (metalabel import-answers)")
            if audit:
                return RunResult(reports, "budget spent: the last round's questions audited the labels it exports")
            # while nothing is certified, more answers are what it takes: only certified coverage can stall
            stalled = len(reports) > 1 and report.certified_precision is not None and gain < options.min_gain
            small_gains = small_gains + 1 if stalled else 0
            if small_gains >= 2:
                stop_reason = "another round no longer pays (coverage gain below min_gain twice)"

    def _recover(self) -> None:
        """Close what a killed run left: rounds still 'running', unrecorded files, unanswered questions."""
        for stale in (r for r in self.store.rounds() if r.status == "running"):
            self.store.finish_round(stale.id, {"interrupted": True}, status="failed")
        self._clean_unrecorded_files()
        self._put_open_questions(None)  # questions a killed run asked but never got answers for

    def _prepare(self) -> None:
        """The project's own meta-learner (trained once, then kept as a checkpoint) and the generators."""
        if GIVEN_LEARNER not in self.learners and PROJECT_LEARNER not in self.learners \
                and self.options.project_meta_steps > 0:
            learned = self._meta_learn_on_project(self._snapshot())
            if learned is not None:
                self._keep_project_learner(learned, round_id=None)
        for name in self.learners:  # every model label's model_hash resolves (a round-model artifact) to a checkpoint
            self._save_checkpoint(name, None)
        if self.options.generate:
            self.generator = self._resume_generator()

    # -- one round
    def _round(self, round_id: int, number: int, *, ask: int, audit: bool = False) -> RoundReport:
        started = time.perf_counter()
        labels = self._snapshot()
        self._require_a_label_per_class(labels)
        feedback: list[str] = []
        name, model, calibration = self._choose_model(labels)
        if name == PROJECT_LEARNER:  # it earns more training by winning the round; otherwise the run skips the cost
            self._continue_meta_learning(round_id, number, labels, feedback)
        generation = None
        if self.generator is not None and model.prototype_space:
            generation = self._generate(number, model, labels)
        if generation is not None:
            feedback.extend(generation.feedback)
            model, calibration = self._use_generated(generation, model, calibration, labels, feedback)
        raw, probs = self._pool_probabilities(model, calibration, labels)
        candidates = self._candidates(labels)
        reference = self._reference_evidence(calibration, probs, candidates)
        certificate = self._certify(candidates, probs[candidates], reference)
        feedback.append(certificate.reason)
        model_hash = self._keep_round_model(name, model, round_id)
        retracted = self._accept(round_id, candidates, certificate, reference, raw, probs, model, model_hash)
        if generation is not None:
            self._store_generated(round_id, generation, labels.human_positions)
        accepted = candidates[certificate.mask]
        gold = self._gold_metrics(probs, accepted)  # before asking: this round's answers not counted
        scorecard = self._scorecard(model, calibration, CertifiedFigures.of(certificate), reference,
                                    generation=generation, feedback=feedback)
        reference_questions, asked = self._ask(round_id, number, ask, probs, model.embeddings(), candidates,
                                               certificate, reference, scorecard, audit=audit) if ask else (0, 0)
        if audit and not self.store.open_questions():
            # the same predictions, certified again with the audit's answers: they were made before them
            candidates = self._candidates(self._snapshot())
            reference = self._reference_evidence(calibration, probs, candidates)
            certificate = self._certify(candidates, probs[candidates], reference)
            feedback.append(f"after the audit: {certificate.reason}")
            retracted += self._accept(round_id, candidates, certificate, reference, raw, probs, model, model_hash)
            gold = self._gold_metrics(probs, candidates[certificate.mask])
            # the rest of the scorecard stays as measured on the labels the round's generators were judged on
            scorecard = replace(scorecard, feedback=tuple(feedback), label_quality=self._label_quality(
                calibration, CertifiedFigures.of(certificate), reference))
        return RoundReport(
            **_recorded_certificate(certificate, reference, retracted).to_json(),
            round_id=round_id, human_labels=len(labels.human_positions),
            temperature=float(calibration.calibrator.temperature) if calibration.calibrator is not None else 1.0,
            calibration_ece=calibration.ece, questions=asked, reference_questions=reference_questions,
            answered_total=self._answered_total(), seconds=round(time.perf_counter() - started, 2),
            model=f"{name} + {model.head}" if model.prototype_space else name,
            held_out_accuracy=calibration.accuracy, disagreements=len(self.store.disagreements()), gold=gold,
            feedback=tuple(feedback), scorecard=scorecard,
            generation=generation.summary() if generation is not None else {},
        )

    def _accept(self, round_id: int, candidates: np.ndarray, certificate: Certificate, reference: ReferenceEvidence,
                raw: np.ndarray, probs: np.ndarray, model: RoundModel, model_hash: str) -> int:
        """Write the certificate's labels; with the rule votes behind them where the rules took part."""
        with self.store.batch():  # a rule-derived label and the rule votes behind it are on record together
            retracted = self._write_acceptance(round_id, candidates, certificate, reference, raw, probs, model_hash)
            if self.rules is not None and model.uses_rules:
                record_rule_votes(self.store, self.rules, round_id=round_id, head=model.head,
                                  item_ids={p: self.index.item_id(p) for p in candidates[certificate.mask]})
        return retracted

    def _snapshot(self) -> LabelSnapshot:
        return LabelSnapshot.of(self.store.active_labels(), position_of_item=self.index.position_of_item,
                                class_index=self.class_index, pseudo_weight=self.options.pseudo_weight)

    def _require_a_label_per_class(self, labels: LabelSnapshot) -> None:
        missing = sorted(set(range(self.ways)) - set(labels.human_classes.tolist()))
        if missing:
            raise BadInputError(f"class {self.classes[missing[0]]!r} has no human or seed label",
                                hint="label at least one example of every class before running")

    def _choose_model(self, labels: LabelSnapshot) -> tuple[str, RoundModel, Calibration]:
        candidates = [(name, variant) for name, learner in self.learners.items()
                      for variant in RoundModel(learner, self.x, refine_steps=self.options.refine_steps,
                                                seed=self.options.seed,
                                                graph_holder=self.pool_graphs.setdefault(self.hashes[name], []),
                                                rule_votes=None if self.rules is None else self.rules.matrix
                                                ).variants()]
        return choose_model(candidates, labels, ways=self.ways, folds=self.options.calibration_folds,
                            seed=self.options.seed)

    def _pool_probabilities(self, model: RoundModel, calibration: Calibration,
                            labels: LabelSnapshot) -> tuple[np.ndarray, np.ndarray]:
        """Raw and calibrated probabilities of every pool item, each from a fold model that never saw its label.

        Before any label can be held out (one per class), from the model adapted to all of them: no reference
        answer exists yet, so nothing is certified from these.
        """
        logits = calibration.pool_logits
        if logits is None:
            logits = model.logits(labels.positions, labels.classes, labels.weights, self.ways)
        raw = torch.softmax(torch.from_numpy(logits), 1).numpy()
        return raw, (calibration.calibrator.predict_proba(logits) if calibration.calibrator is not None else raw)

    def _candidates(self, labels: LabelSnapshot) -> np.ndarray:
        """Pool positions a model may label: known to the store and without a person's label."""
        return np.setdiff1d(self.index.registered, labels.human_positions)

    def _reference_evidence(self, calibration: Calibration, probs: np.ndarray,
                            candidates: np.ndarray) -> ReferenceEvidence:
        """Each closed reference question: was the model right where it never saw the answer?"""
        if calibration.probs is None:  # nothing held out yet, so no out-of-fold prediction to judge
            return ReferenceEvidence(*(np.array([], dtype=dtype)
                                       for dtype in (np.int64, float, np.int64, bool, bool, np.int64, np.int64)))
        position = self.index.position_of_item
        candidate_set = set(candidates.tolist())
        held_row = {int(p): i for i, p in enumerate(calibration.positions)}
        draws: dict[int, Question] = {}  # pool position -> its reference question (the first, if several)
        answers: dict[int, str] = {}
        for question in (self.store.answered_questions(strategy=REFERENCE)
                         + self.store.dismissed_questions(strategy=REFERENCE)):
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
                             bool(probs[p].argmax() == self.class_index[answers[p]]), True))
        kept = [draws[row[0]] for row in rows]
        columns = list(zip(*rows)) if rows else [[]] * 5
        return ReferenceEvidence(
            np.array(columns[0], dtype=np.int64), np.array(columns[1], dtype=float),
            np.array(columns[2], dtype=np.int64), np.array(columns[3], dtype=bool), np.array(columns[4], dtype=bool),
            np.array([-1 if q.reference_region is None else q.reference_region for q in kept], dtype=np.int64),
            np.array([q.round_id or 0 for q in kept], dtype=np.int64))

    def _region_design(self, candidates: np.ndarray, reference: ReferenceEvidence) -> RegionDesign | None:
        """Where the reference draws came from, over the certified population (candidates, then answered draws).

        An item counts as inside a region also when it was no candidate when the region was drawn from
        (a person had labeled it already), so no draw from the region could have missed it.
        """
        region_ids = sorted({int(r) for r in reference.region if r >= 0})
        if not region_ids:
            return None
        rounds = {q.reference_region: q.round_id or 0 for q in self.store.answered_questions(strategy=REFERENCE)
                  + self.store.dismissed_questions(strategy=REFERENCE) if q.reference_region is not None}
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

    def _certify(self, candidates: np.ndarray, candidate_probs: np.ndarray,
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
        if self.options.certify != "binomial":
            reference = _subset(reference, reference.region < 0)
        answered = reference.answered
        population = certify_acceptance(
            np.concatenate([candidate_probs.max(1), reference.confidence[answered]]),
            np.concatenate([candidate_probs.argmax(1), reference.predicted[answered]]),
            reference_confidence=reference.confidence, reference_predicted=reference.predicted,
            reference_correct=reference.correct, target=self.options.target_precision, delta=self.options.delta,
            method=self.options.certify, classes=self.ways, condition_on_counts=True,
            regions=self._region_design(candidates, reference))
        mask = population.mask[:len(candidate_probs)]
        reason = population.reason
        if population.certified:
            reason += (f"; {int(mask.sum())} of them get a model label, the rest are reference items a person "
                       "already labeled")
        return replace(population, mask=mask, accepted=int(mask.sum()), coverage=float(mask.mean()), reason=reason)

    def _write_acceptance(self, round_id: int, candidates: np.ndarray, certificate: Certificate,
                          reference: ReferenceEvidence, raw: np.ndarray, probs: np.ndarray, model_hash: str) -> int:
        """Write the certified labels and retract every active model label the rule no longer admits.

        One transaction, which also records the certificate on the round: the labels a round
        leaves active are exactly what its certificate covers, whatever ends the round later.
        """
        accepted = {int(p) for p in candidates[certificate.mask]}
        retracted = 0
        with self.store.batch():
            for label in self.store.active_labels():
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
            self.store.record_round_metrics(round_id,
                                            _recorded_certificate(certificate, reference, retracted).to_json())
        return retracted

    # -- asking
    def _reference_questions(self, candidate_probs: np.ndarray, reference: ReferenceEvidence, *,
                             questions: int) -> int:
        """The planner's share of ``questions`` for the reference sample.

        When ``coverage_goal`` looks out of reach, the split is planned for the largest
        smaller coverage that is not; when none is, a floor of ``MIN_REFERENCE_SHARE`` still
        goes to the reference sample: without one, no certificate can ever be issued
        (measured: runs that never asked one exported nothing).
        """
        goal = self.options.coverage_goal
        for coverage in (goal, goal / 2, goal / 4, goal / 8):
            plan = self._plan(candidate_probs, reference, questions=questions, coverage=coverage)
            if plan.reachable:
                return plan.next_reference
        return math.ceil(MIN_REFERENCE_SHARE * questions)

    def _plan(self, candidate_probs: np.ndarray, reference: ReferenceEvidence, *, questions: int,
              coverage: float | None = None) -> BudgetPlan:
        """How many more reference and active answers reach ``coverage`` at the target, and the next round's split."""
        return plan_budget(candidate_probs.max(1), reference_confidence=reference.confidence,
                           reference_correct=reference.correct, target=self.options.target_precision,
                           coverage=self.options.coverage_goal if coverage is None else coverage,
                           trained_on=self._trusted_count(), questions_per_round=max(questions, 1),
                           delta=self.options.delta)

    def _ask(self, round_id: int, number: int, count: int, probs: np.ndarray, embeddings: np.ndarray,
             candidates: np.ndarray, certificate: Certificate, reference: ReferenceEvidence,
             scorecard: Scorecard, *, audit: bool = False) -> tuple[int, int]:
        """Split ``count`` questions between the reference sample and the query strategy, ask, and put them.

        An audit asks only reference questions, drawn from the confident region (all candidates if it is empty),
        besides the seed labels that look wrong.
        """
        open_items = {q.item_id for q in self.store.open_questions()}
        free = np.array([p for p in candidates if self.index.item_id(p) not in open_items], dtype=np.int64)
        if audit:
            reference_count = count
        elif self.options.reference_share is None:
            reference_count = self._reference_questions(probs[candidates], reference, questions=count)
        else:
            reference_count = round(count * self.options.reference_share)
        reference_count = min(reference_count, len(free))
        asked_before = {q.item_id for q in self.store.answered_questions(strategy="label-issue")}
        suspects = np.array([self.index.position_of_item[issue.item_id] for issue in scorecard.label_issues
                             if issue.source == LabelSource.IMPORTED and issue.item_id not in asked_before
                             and issue.item_id not in open_items], dtype=np.int64)
        human = np.setdiff1d(self.index.registered, candidates)
        region = free[confident_region(probs[free].max(1), self.options.target_precision)] if audit else free[:0]
        questions = choose_questions(probs, embeddings, free, reference=reference_count,
                                     active=count - reference_count, strategy=self.options.strategy,
                                     human_positions=human, suspect_seeds=suspects,
                                     rng=np.random.default_rng([self.options.seed, number, 1]),
                                     region=region, from_region=reference_count if audit else 0)
        with self.store.batch():
            region_id = None
            if any(q.from_region for q in questions):
                region_id = self.store.add_reference_region(
                    (self.index.item_id(p) for p in region), round_id=round_id,
                    rule=f"the {len(region)} most confident of {len(free)} free candidates ({REGION_MARGIN} x the "
                         f"longest run whose mean calibrated confidence reaches {self.options.target_precision})")
            for question in questions:
                self.store.ask(self.index.item_id(question.position), strategy=question.why, round_id=round_id,
                               score=float(probs[question.position].max()),
                               reference_region=region_id if question.from_region else None)
        self._put_open_questions(probs)
        return sum(q.why == REFERENCE for q in questions), len(questions)

    def _put_open_questions(self, probs: np.ndarray | None) -> None:
        """Give every open question to the oracle; each answer is committed the moment it is given."""
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

    # -- state read from the store
    def _trusted_count(self) -> int:
        counts = self.store.label_counts()
        return int(counts[LabelSource.HUMAN] + counts[LabelSource.IMPORTED])

    def _answered_total(self) -> int:
        return int(self.store.summary()["answered_questions"])

    def _round_number(self) -> int:
        """1 + the rounds whose questions were asked: what seeds a round's random choices.

        A round killed after asking is redone on the answers it asked for, as the next
        round of an uninterrupted run would be, so it takes that round's number: a resumed
        run asks what an uninterrupted one asks, question for question.
        """
        asked = self.store.open_questions() + self.store.answered_questions()
        return 1 + len({q.round_id for q in asked if q.round_id is not None})

    def plan(self, *, coverage: float | None = None) -> BudgetPlan:
        """The planner's figures from the evidence as it stands: nothing is written, nothing asked."""
        labels = self._snapshot()
        self._require_a_label_per_class(labels)
        _, model, calibration = self._choose_model(labels)
        _, probs = self._pool_probabilities(model, calibration, labels)
        per_round = self.options.per_round or max(self.ways, self.options.budget // 5, 1)
        candidates = self._candidates(labels)
        return self._plan(probs[candidates], self._reference_evidence(calibration, probs, candidates),
                          questions=per_round, coverage=coverage)

    def scorecard(self) -> Scorecard:
        """The scorecard of the labels as they stand now: nothing is written, nothing asked."""
        labels = self._snapshot()
        _, model, calibration = self._choose_model(labels)
        _, probs = self._pool_probabilities(model, calibration, labels)
        candidates = self._candidates(labels)
        reference = self._reference_evidence(calibration, probs, candidates)
        coverage = len(labels.pseudo.positions) / max(len(candidates), 1)
        # the labels as they stand were admitted by the certificate the last round recorded with them
        last = next((r for r in reversed(self.store.rounds()) if r.metrics and CERTIFICATE_METRIC in r.metrics), None)
        if last is None:  # no round has certified anything yet
            figures = CertifiedFigures(None, None, coverage, self.options.delta, None)
        else:
            recorded = RoundCertificate.from_json(last.metrics, f"round {last.id}'s metrics")
            figures = CertifiedFigures(recorded.certified_precision, recorded.estimated_precision, coverage,
                                       recorded.delta, None if recorded.threshold is None
                                       else np.full(self.ways, recorded.threshold))
        return self._scorecard(model, calibration, figures, reference, generation=None, feedback=[])

    # -- the project's own meta-learner
    def _meta_learn_on_project(self, labels: LabelSnapshot, *, steps: int | None = None,
                               init: TaskLearner | None = None, seed: int | None = None) -> TaskLearner | None:
        """A ProtoNet embedding meta-trained on the pool's clusters and the accepted labels' classes (CACTUs).

        Accepted pseudo-labels join as classes, so a later call (``init`` = the current
        learner) continues on tasks from the grown data set; human labels never do: they
        are the held-out evidence every learner is judged and calibrated on. None when the
        pool is too small to make enough pseudo-classes for episodes.
        """
        from metalabel.meta.train import meta_train
        from metalabel.meta.unsupervised import pseudo_task_dataset

        shots, queries, ways = 1, 5, 10
        steps = self.options.project_meta_steps if steps is None else steps
        seed = self.options.seed if seed is None else seed
        features = self.x.flatten(1).numpy()
        if len(features) < 4 * ways * (shots + queries):
            return None
        pseudo = labels.pseudo
        tasks = pseudo_task_dataset(features, clusters=int(np.clip(len(features) // 50, ways * 2, 200)),
                                    min_per_cluster=shots + queries, labeled=(pseudo.positions, pseudo.classes),
                                    seed=seed)
        if tasks.num_classes < 2 * 4:  # training and validation classes need a few ways each
            return None
        try:
            return meta_train(tasks, algo="protonet", backbone="mlp",
                              backbone_kwargs={"in_features": features.shape[1], "hidden": [512], "out_features": 128},
                              ways=min(ways, tasks.num_classes // 4), val_fraction=0.25, shots=shots, queries=queries,
                              steps=steps, val_every=steps, val_episodes=50, seed=seed, progress=False, init=init)
        except NotEnoughDataError:  # too few pseudo-classes of the needed size for episodes
            return None

    def _saved_project_learner(self) -> TaskLearner | None:
        from metalabel.meta.checkpoint import checkpoint_is_complete, load_learner

        saved = [a for a in self.store.artifacts(kind="checkpoint") if a.meta.get("learner") == PROJECT_LEARNER]
        complete = [a for a in saved if checkpoint_is_complete(a.path)]
        return load_learner(complete[-1].path) if complete else None

    def _continue_meta_learning(self, round_id: int, number: int, labels: LabelSnapshot,
                                feedback: list[str]) -> None:
        """Continue the project's meta-learner on tasks from the grown data set; keep it only if it predicts better."""
        current = self.learners.get(PROJECT_LEARNER)
        if current is None or not self.options.meta_continue_steps or not self.options.feedback:
            return
        before = self._held_out_accuracy(current, labels)
        if before is None:
            return  # no held-out human labels yet: no evidence to keep or drop a change by
        continued = self._meta_learn_on_project(labels, steps=self.options.meta_continue_steps, init=current,
                                                seed=self.options.seed + number)
        if continued is None:
            return
        after = self._held_out_accuracy(continued, labels)
        assert after is not None
        verdict = "kept" if after >= before else "dropped, the previous one stays"
        feedback.append(f"meta-learner continued {self.options.meta_continue_steps} steps on tasks from the grown "
                        f"data set: held-out accuracy {before:.1%} -> {after:.1%}, {verdict}")
        if after >= before:
            self._keep_project_learner(continued, round_id=round_id)

    def _held_out_accuracy(self, learner: TaskLearner, labels: LabelSnapshot) -> float | None:
        from metalabel.label.fitting import calibrate

        return calibrate(RoundModel(learner, self.x, seed=self.options.seed), labels, ways=self.ways,
                         folds=self.options.calibration_folds, seed=self.options.seed, pool=False).accuracy

    def _keep_project_learner(self, learner: TaskLearner, *, round_id: int | None) -> None:
        self.learners[PROJECT_LEARNER] = learner
        self.hashes[PROJECT_LEARNER] = learner_hash(learner)
        self._save_checkpoint(PROJECT_LEARNER, round_id)

    def _save_checkpoint(self, name: str, round_id: int | None) -> None:
        """Keep a learner in the project, so every model label's model_hash resolves to a checkpoint.

        The save is atomic (a folder is complete or absent) and the artifact row is written
        after it, so a kill in between leaves a complete folder that the next call records.
        """
        from metalabel.meta.checkpoint import checkpoint_is_complete, remove_stale_staging, save_learner

        folder = self.store.folder / "models" / self.hashes[name]
        remove_stale_staging(folder)
        if not checkpoint_is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)  # left by an older metalabel killed mid-save
            save_learner(self.learners[name], folder)
        recorded = {a.path.resolve() for a in self.store.artifacts(kind="checkpoint")}
        if folder.resolve() not in recorded:
            self.store.add_artifact("checkpoint", folder, round_id=round_id,
                                    meta={"learner": name, "model_hash": self.hashes[name]})

    def _keep_round_model(self, name: str, model: RoundModel, round_id: int) -> str:
        """The hash a model label names: the learner's checkpoint, the head and the feature space it read.

        Recorded once as a ``round-model`` artifact pointing at the checkpoint folder, so a
        label's ``model_hash`` says which model made it, not only which learner (the identity
        learner is one and the same for pixels, tables and every encoder).
        """
        head = model.head if model.prototype_space else None
        description = {"learner": name, "checkpoint": self.hashes[name], "head": head, "feature_space": self.space}
        model_hash = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
        if not any(a.meta.get("model_hash") == model_hash for a in self.store.artifacts(kind=ROUND_MODEL)):
            self.store.add_artifact(ROUND_MODEL, self.store.folder / "models" / self.hashes[name], round_id=round_id,
                                    meta={**description, "model_hash": model_hash})
        return model_hash

    def _clean_unrecorded_files(self) -> None:
        """Files a killed run wrote but never recorded: generated arrays and checkpoints (their work is redone).

        Only what the loop itself writes is touched: ``generated/*.npz`` (and its staging
        files) and checkpoint folders under ``models/`` named by a learner hash, as the loop
        names them; a folder a person put there under another name is left alone.
        """
        from metalabel.meta.checkpoint import STAGING_MARK, checkpoint_is_complete, remove_stale_staging

        recorded = {a.path.resolve() for a in self.store.artifacts()}
        generated = self.store.folder / "generated"
        if generated.is_dir():
            for path in generated.glob("*.npz"):  # staging files (".round-N.partial.npz") included
                if path.resolve() not in recorded:
                    path.unlink()
        models = self.store.folder / "models"
        if models.is_dir():
            # a save killed before its first rename left only a staging folder: clean it by its target's name
            targets = {models / (p.name[1:].split(STAGING_MARK)[0] if STAGING_MARK in p.name else p.name)
                       for p in models.iterdir() if p.is_dir()}
            for folder in sorted(targets):
                remove_stale_staging(folder)
            for folder in [p for p in models.iterdir() if p.is_dir() and LEARNER_HASH.fullmatch(p.name)]:
                if folder.resolve() not in recorded and (checkpoint_is_complete(folder) or not any(folder.iterdir())):
                    shutil.rmtree(folder)

    # -- generation
    def _resume_generator(self) -> DataGenerator:
        """The generators, continuing from the augmentation policies the last finished round kept."""
        from metalabel.generate.augment import AugmentationPolicy
        from metalabel.generate.engine import DataGenerator, GeneratorOptions

        policies: dict[str, AugmentationPolicy | None] = {"policy": None, "image_policy": None}
        for past in reversed(self.store.rounds()):
            summary = (past.metrics or {}).get("generation") if past.status == "finished" else None
            if summary:
                policies = {key: AugmentationPolicy.from_dict(summary[key]) if summary.get(key) else None
                            for key in policies}
                break
        return DataGenerator(GeneratorOptions(learn=self.options.feedback,
                                              generated_weight=self.options.generated_weight), **policies)

    def _generate(self, number: int, model: RoundModel, labels: LabelSnapshot) -> GenerationStep | None:
        """Run the generators in the round model's embedding space, from the human-labeled items.

        None when the pool is too small to make the pseudo-classes they learn and are judged on.
        """
        from metalabel.generate.engine import ImageInputs
        from metalabel.meta.unsupervised import cluster_pseudo_labels

        assert self.generator is not None
        embeddings = model.embeddings()
        seed = self.options.seed + number
        # the pool's own clusters are the many tasks a generator is meta-trained and judged on
        clusters = min(int(np.clip(len(embeddings) // 50, 10, 200)), len(embeddings) // 6)  # ~6+ items each
        if clusters < 2:
            return None
        pseudo = cluster_pseudo_labels(embeddings, clusters=clusters, seed=seed)
        images = None
        items = self.pool.items
        if self.pool.modality == "image" and isinstance(items, np.ndarray) and items.ndim == 3:
            accepted = labels.pseudo  # the VAE learns from accepted labels; the human ones stay held-out evidence
            images = ImageInputs(labeled=items[labels.human_positions], featurize=self._image_featurizer(model),
                                 train_images=items[accepted.positions], train_labels=accepted.classes,
                                 train_weights=None, search_policy=reads_images(model.learner))
        return self.generator.step(embeddings[labels.human_positions], labels.human_classes, pool_x=embeddings,
                                   pool_y=pseudo, images=images, seed=seed)

    def _image_featurizer(self, model: RoundModel) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 images -> the round model's embedding, the way pool items get there."""
        def featurize(images: np.ndarray) -> np.ndarray:
            if reads_images(model.learner):
                inputs = torch.from_numpy(np.asarray(images)).float().div_(255).unsqueeze(1)
            else:
                from metalabel.data.encoders import get_encoder

                encoder = self.encoder or ("minilm" if self.pool.modality == "text" else "efficientnet-lite0")
                inputs = torch.from_numpy(get_encoder(encoder).encode(np.asarray(images), progress=False))
            with torch.no_grad():
                return in_chunks(model.learner.embed, inputs).numpy()
        return featurize

    def _use_generated(self, generation: GenerationStep, model: RoundModel, calibration: Calibration,
                       labels: LabelSnapshot, feedback: list[str]) -> tuple[RoundModel, Calibration]:
        """The round model trains on the kept generated rows too, unless that lowers held-out accuracy."""
        from metalabel.label.fitting import calibrate

        if not generation.expanders:
            return model, calibration
        grown = model.with_generated(generation.expand, weight=self.options.generated_weight)
        grown_calibration = calibrate(grown, labels, ways=self.ways, folds=self.options.calibration_folds,
                                      seed=self.options.seed)
        if calibration.accuracy is None or grown_calibration.accuracy is None:
            return grown, grown_calibration  # nothing to judge by yet: the generators' own evidence stands
        if grown_calibration.accuracy > calibration.accuracy or not self.options.feedback:
            feedback.append(f"the round's model trains on the kept generated data: held-out accuracy "
                            f"{grown_calibration.accuracy:.1%} vs {calibration.accuracy:.1%} without")
            return grown, grown_calibration
        feedback.append(f"generated data left out of the round's model: held-out accuracy "
                        f"{grown_calibration.accuracy:.1%} with vs {calibration.accuracy:.1%} without")
        return model, calibration

    def _store_generated(self, round_id: int, generation: GenerationStep, human_positions: np.ndarray) -> None:
        """Keep what each generator made this round: content in an .npz artifact, provenance in the store.

        The file is written under a staging name and renamed; its rows and artifact are
        recorded in one transaction after. A kill in between leaves an unrecorded file that
        the next run removes (``_clean_unrecorded_files``), and the round is redone.
        """
        if not generation.batches:
            return
        from metalabel.store import SyntheticRecord, content_hash

        folder = self.store.folder / "generated"
        folder.mkdir(exist_ok=True)
        path = folder / f"round-{round_id}.npz"
        arrays = {}
        for batch in generation.batches:
            key = batch.generator.replace(" ", "_")
            arrays[f"{key}.content"], arrays[f"{key}.features"], arrays[f"{key}.y"] = batch.content, batch.x, batch.y
        write_atomically(path, lambda file: np.savez_compressed(file, **arrays))
        with self.store.batch():
            artifact = self.store.add_artifact("generated", path, round_id=round_id,
                                               meta={"generators": [b.generator for b in generation.batches]})
            for batch in generation.batches:
                key = batch.generator.replace(" ", "_")
                records = [SyntheticRecord(
                    uri=f"generated/round-{round_id}/{key}/{row:05d}", content_hash=content_hash(batch.content[row]),
                    kind=batch.kind, class_name=self.classes[int(batch.y[row])], generator=batch.generator,
                    generator_version=batch.version, row_in_artifact=row,
                    parents=() if batch.parents[row] < 0
                    else (self.index.item_id(human_positions[batch.parents[row]]),))
                    for row in range(len(batch.y))]
                self.store.add_synthetic_items(records, round_id=round_id, artifact_id=artifact)
                if not batch.kept:
                    self.store.drop_synthetic_items(round_id=round_id, generator=batch.generator)

    # -- the scorecard and the gold figures
    def _scorecard(self, model: RoundModel, calibration: Calibration, certified: CertifiedFigures,
                   reference: ReferenceEvidence, *, generation: GenerationStep | None,
                   feedback: list[str]) -> Scorecard:
        from metalabel.evaluate import scorecard as card
        from metalabel.generate.engine import JUDGE_DIMS
        from metalabel.generate.evidence import principal_components

        labels, label_positions, label_classes, truth, known = self._active_labels()
        quality = self._label_quality(calibration, certified, reference)
        if truth is not None:
            confusion = card.confusion_section(truth[label_positions][known], label_classes[known],
                                               classes=self.classes, against="gold labels")
        elif calibration.probs is not None:
            confusion = card.confusion_section(calibration.labels, calibration.probs.argmax(1), classes=self.classes,
                                               against="held-out human labels")
        else:
            confusion = None
        issues: tuple[SuspectLabel, ...] = ()
        if calibration.probs is not None:
            trusted_by_position = {self.index.position_of_item[label.item_id]: label for label in labels
                                   if LabelSource(label.source).trusted}
            rows = [trusted_by_position[p] for p in calibration.positions]
            issues = card.issues_section(calibration.labels, calibration.probs, uris=[r.uri for r in rows],
                                         item_ids=[r.item_id for r in rows], sources=[r.source for r in rows],
                                         classes=self.classes)
        embeddings = model.embeddings()
        trusted = np.array([LabelSource(label.source).trusted for label in labels], dtype=bool)
        weights = np.where(trusted, 1.0, self.options.pseudo_weight)
        expand = generation.expand if generation is not None and generation.expanders else None
        # the classifiers and distances work in the space's top principal components: a round stays quick
        project = principal_components(embeddings, dims=JUDGE_DIMS, seed=self.options.seed)
        downstream = card.downstream_section(embeddings[label_positions], label_classes, weights, trusted,
                                             expand=expand, generated_weight=self.options.generated_weight,
                                             seed=self.options.seed, featurize=project) if len(labels) else None
        similarity = card.similarity_section(
            project(embeddings[label_positions[trusted]]),
            {b.generator: project(b.x) for b in (generation.batches if generation else ())}, seed=self.options.seed)
        generators = {b.generator: GeneratorOutcome(b.kept, int(len(b.y)), b.version, b.evidence)
                      for b in (generation.batches if generation else ())}
        return Scorecard(label_quality=quality, confusion=confusion, label_issues=issues, similarity=similarity,
                         downstream=downstream, generators=generators, feedback=tuple(feedback))

    def _active_labels(self) -> tuple[list[Label], np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The active labels of pool items, their positions and classes, the gold classes and where gold is known."""
        labels = [label for label in self.store.active_labels() if label.item_id in self.index.position_of_item]
        positions = np.array([self.index.position_of_item[label.item_id] for label in labels], dtype=np.int64)
        classes = np.array([self.class_index[label.class_name] for label in labels], dtype=np.int64)
        truth = self._gold_classes()
        known = truth[positions] >= 0 if truth is not None else np.zeros(len(labels), dtype=bool)
        return labels, positions, classes, truth, known

    def _label_quality(self, calibration: Calibration, certified: CertifiedFigures,
                       reference: ReferenceEvidence) -> LabelQuality:
        from metalabel.evaluate import scorecard as card

        _, positions, classes, truth, known = self._active_labels()
        gold_correct = classes[known] == truth[positions][known] if truth is not None else None
        # the reference items the rule would have accepted: a random sample of the accepted region, checked by a person
        above = (reference.confidence >= certified.thresholds[reference.predicted] if certified.thresholds is not None
                 else np.zeros(len(reference.correct), bool))
        return card.label_quality(
            coverage=certified.coverage, estimated_precision=certified.estimate,
            certified_precision=certified.bound, delta=certified.delta,
            reference_in_accepted=reference.correct[above],
            held_out=None if calibration.probs is None else (calibration.probs, calibration.labels),
            gold_correct=gold_correct)

    def _gold_classes(self) -> np.ndarray | None:
        """The true class of every pool item (-1: unknown), where the user gave gold labels."""
        if not self.gold:
            return None
        return np.array([self.class_index.get(self.gold.get(uri, ""), UNLABELED) for uri in self.pool.uris])

    def _gold_metrics(self, probs: np.ndarray, accepted: np.ndarray) -> GoldMetrics | None:
        """Against the true labels, where the user has them (simulations and benchmarks).

        After a round's retractions the accepted set is every active model label, so
        ``achieved_precision`` is the precision of what the export would write.
        """
        truth = self._gold_classes()
        if truth is None:
            return None
        predicted = probs.argmax(1)
        known = truth != UNLABELED
        chosen = accepted[truth[accepted] != UNLABELED]
        labels = predicted.copy()
        for label in self.store.active_labels():
            position = self.index.position_of_item.get(label.item_id)
            if position is not None:
                labels[position] = self.class_index[label.class_name]
        return GoldMetrics(
            pool_accuracy=float((predicted[known] == truth[known]).mean()),
            label_accuracy=float((labels[known] == truth[known]).mean()),
            achieved_precision=float((predicted[chosen] == truth[chosen]).mean()) if len(chosen) else None)


def _subset(reference: ReferenceEvidence, keep: np.ndarray) -> ReferenceEvidence:
    return ReferenceEvidence(*(getattr(reference, f.name)[keep] for f in fields(ReferenceEvidence)))


def _recorded_certificate(certificate: Certificate, reference: ReferenceEvidence, retracted: int) -> RoundCertificate:
    """What the round records of its certificate, with the labels it admits."""
    return RoundCertificate(
        certified_precision=certificate.lower_bound, estimated_precision=certificate.estimate,
        delta=certificate.delta, threshold=certificate.threshold if certificate.certified else None,
        coverage=certificate.coverage, model_labels=certificate.accepted, reference_answers=len(reference.positions),
        reference_needed=certificate.reference_needed, retracted=retracted, certificate=certificate.reason)


def _retraction_reason(certificate: Certificate, probs: np.ndarray, position: int | None) -> str:
    if position is None:
        return "the item is no longer in the pool"
    confidence = float(probs[position].max())
    if not certificate.certified:
        return f"no certificate this round ({certificate.reason}); calibrated confidence {confidence:.3f}"
    threshold = float(certificate.thresholds[int(probs[position].argmax())])
    return f"calibrated confidence {confidence:.3f} below the certified threshold {threshold:.3f}"


def run_labeling(store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None = None, *, oracle: Oracle,
                 encoder: str | None = None, gold: dict[str, str] | None = None, progress: bool = True,
                 on_round: Callable[[RoundReport], None] | None = None, rules: RuleVotes | None = None,
                 **options: Any) -> RunResult:
    """Label ``project``'s pool with ``learner`` (default: nearest class mean in an encoder's space).

    ``rules``: the labeling functions' votes on the pool (``metalabel.rules``), evidence beside the model.
    """
    run = LabelingRun(store, pool, learner, oracle=oracle, options=RunOptions(**options), encoder=encoder, gold=gold,
                      progress=progress, on_round=on_round, rules=rules)
    return run.run()


def plan_project(store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None = None, *,
                 coverage: float | None = None, encoder: str | None = None, progress: bool = True,
                 rules: RuleVotes | None = None, **options: Any) -> BudgetPlan:
    """How many more reference and active answers are expected to certify ``coverage`` of the pool at the target.

    Reads the project as it stands and writes nothing; ``options`` as for ``run``
    (``target_precision``, ``delta``, ``per_round`` ...). See ``metalabel.label.certify.plan_budget``.
    """
    run = LabelingRun(store, pool, learner, oracle=None, options=RunOptions(**{"generate": False, **options}),
                      encoder=encoder, progress=progress, rules=rules)
    return run.plan(coverage=coverage)


def evaluate_project(store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None = None, *,
                     encoder: str | None = None,
                     gold: dict[str, str] | None = None, progress: bool = True, rules: RuleVotes | None = None,
                     **options: Any) -> Scorecard:
    """The scorecard of ``project``'s labels as they stand, saved as ``scorecard.json`` in the project.

    It trains nothing and writes nothing else: the project's saved meta-learner is used if
    there is one. Label quality (gold, reference answers, held-out human labels,
    calibration), confusion, label issues and the downstream classifier; generation is a
    part of runs, so its similarity figures come from the rounds (``metalabel report``).
    """
    run = LabelingRun(store, pool, learner, oracle=None, options=RunOptions(**{"generate": False, **options}),
                      encoder=encoder, gold=gold, progress=progress, rules=rules)
    scorecard = run.scorecard()
    path = store.folder / "scorecard.json"
    write_atomically(path, json.dumps(scorecard.to_json(), indent=2, default=float))
    store.add_artifact("scorecard", path, meta={"labels": store.summary()["labeled_items"]})
    return scorecard
