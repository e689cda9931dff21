"""The labeling loop: adapt, predict and calibrate, accept with a certified precision, ask a person, repeat.

Every step is committed to the project store as it happens, so a run killed at any
point (SIGKILL included) continues where it stopped: a round left "running" is
closed as failed and redone, a question asked but not answered is asked again
first, and an answer, once given, is committed before the next question is shown.

A round, top to bottom (``LabelingRun._round``); each step is a call into the room that owns it:

1. read the labels once (``LabelSnapshot``);
2. fit: choose the learner and head that predict held-out human labels best
   (``metalabel.label.fitting``), continue the project's meta-learner where it won
   (``metalabel.label.learners``), run the generators where the set is thin and use their
   rows only on held-out evidence (``metalabel.generate.rounds``);
3. predict the pool, cross-fitted and calibrated (``metalabel.label.fitting``);
4. accept with a certificate: the confidence threshold whose precision over every
   label the export would write is at least the target with probability 1 - delta,
   judged on the random reference sample; every active model label the rule no longer
   admits is retracted (``metalabel.label.acceptance``); then read the labels the round
   leaves, once, for the scorecard and the gold figures;
5. keep what the generators made (``metalabel.generate.rounds``);
6. score (``metalabel.evaluate.assembly``);
7. plan and ask: reference questions drawn at random, the rest by the query strategy,
   each answer committed as it is given (``metalabel.label.questions``); an audit
   certifies the round's predictions again on its answers, and the final round's plain
   certificate competes with that one (``AuditCertificate``).

``plan`` and ``evaluate`` read the project through a ``ProjectView`` (what a round reads, with none of
the steps that write): they train nothing and write nothing but ``evaluate``'s scorecard.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.data.generated import GENERATED_WEIGHT
from metalabel.errors import BadInputError, check_whole_number
from metalabel.evaluate.assembly import (
    GeneratedData,
    ScoredLabels,
    figures_as_recorded,
    gold_classes,
    gold_metrics,
    label_quality,
    recorded_certificate,
    round_scorecard,
)
from metalabel.evaluate.records import (
    GenerationRecord,
    GeneratorOutcome,
    GoldMetrics,
    RoundCertificate,
    RoundReport,
    Scorecard,
    generators_earned,
    judged_scores,
    recorded_generation,
)
from metalabel.files import write_atomically
from metalabel.generate.engine import JUDGE_DIMS, DataGenerator, GenerationStep
from metalabel.generate.evidence import principal_components
from metalabel.generate.rounds import (
    GENERATED_ARTIFACT,
    generate,
    generators_resting,
    remove_unrecorded_generated,
    resume_generator,
    store_generated,
    use_generated,
)
from metalabel.label.acceptance import Acceptance, CertifiedFigures, ReferenceEvidence
from metalabel.label.active import STRATEGIES
from metalabel.label.ask import REFERENCE
from metalabel.label.certify import BudgetPlan, Certificate, Method
from metalabel.label.fitting import (
    Calibration,
    LabelSnapshot,
    ModelChoice,
    choose_model,
    pool_probabilities,
    retired_learners,
)
from metalabel.label.learners import (
    CHECKPOINT,
    GIVEN_LEARNER,
    PROJECT_LEARNER,
    ROUND_MODEL,
    Candidates,
    continue_meta_learning,
    keep_round_model,
    meta_learn_on_project,
    remove_unrecorded_checkpoints,
)
from metalabel.label.oracle import Oracle, OracleStopped
from metalabel.label.positions import PoolIndex
from metalabel.label.questions import Asking
from metalabel.label.round_model import RoundModel
from metalabel.meta.functional import TaskLearner
from metalabel.rules import RuleVotes
from metalabel.store import CERTIFICATE_METRIC, LabelSource, ProjectStore

PROJECT_META_STEPS = 500
"""Meta-training steps of the project's own learner where a user asks for it (``run --project-meta-learning``)."""


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
    answers) are certified again on that evidence at ``delta / 2``; a final round then
    learns from every answer, certifies its model as any round does (the audit's draws
    counted only inside their region) at ``delta / 2``, and the run keeps whichever
    certified more (``AuditCertificate`` says why that keeps the guarantee). Measured in
    bench/results/precision_guarantee_audit.md: it certifies more than the default loop on
    Fashion-MNIST and 20 Newsgroups and less on digits at 0.95, so it is off by default.
    A run stops when the budget is spent, after ``max_rounds``, or when a round raised
    coverage by less than ``min_gain`` twice in a row.
    Without a given learner, ``project_meta_steps`` > 0 (e.g. ``PROJECT_META_STEPS``) also
    meta-trains an embedding on pseudo-tasks from the project's own pool (CACTUs); each round
    keeps whichever of it and the plain encoder space predicts held-out human labels better,
    and with ``feedback`` continues it ``meta_continue_steps`` on the grown data set, kept only
    when it predicts better. Off by default: in bench/results/label_efficiency.md it won 1 of
    122 rounds on Fashion-MNIST, 20 Newsgroups and digits, and its training took 48% of a
    20 Newsgroups run (3k posts, py-spy). With ``generate``, each round runs the generators
    (``metalabel.generate.engine``); what they make counts ``generated_weight`` in the round's model, and only while it
    raises held-out accuracy; ``gan`` adds the conditional feature GAN to them (off by
    default: it did not raise accuracy where it could be judged, bench/results/generation.md).
    ``feedback=False`` turns every evidence-driven change off (fixed policy, generators
    unjudged): the baseline for measuring what feedback is worth.
    """

    target_precision: float = 0.95
    delta: float = 0.05
    certify: Method = "binomial"
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
    project_meta_steps: int = 0
    meta_continue_steps: int = 100
    generate: bool = True
    gan: bool = False
    generated_weight: float = GENERATED_WEIGHT
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
        for name in ("generate", "gan", "feedback", "audit"):
            if not isinstance(getattr(self, name), bool):
                raise BadInputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.audit and self.certify != "binomial":
            raise BadInputError(f"the audit needs the binomial certificate, not {self.certify!r}: only the binomial "
                                "test counts draws from the audit's confident region",
                                hint="drop audit (--audit) or certify with binomial (--certify binomial)")


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(f"{name} must be a finite number, got {value!r}")


@dataclass
class RunResult:
    """Every round's report, and why the run stopped."""

    rounds: list[RoundReport]
    stopped_because: str


@dataclass(frozen=True, eq=False)
class RoundFit:
    """The round's model: the learner that won (by name), its head, calibration, and what the generators made."""

    name: str
    model: RoundModel
    calibration: Calibration
    generation: GenerationStep | None
    scores: Mapping[str, float | None]  # each candidate learner's best held-out score (ModelChoice.scores)
    generators_earned: bool | None = None  # whether the generated rows earned a place (GeneratedUse.earned)


@dataclass(frozen=True, eq=False)
class Judged:
    """A round's acceptance and what was measured of the labels it left: ``left`` read once, after it.

    ``certificate`` is the round's own; ``recorded`` and ``figures`` describe the labels it left, which are
    the audit's when the final round kept those (``kept_audit``).
    """

    candidates: np.ndarray
    reference: ReferenceEvidence
    certificate: Certificate
    recorded: RoundCertificate
    figures: CertifiedFigures
    retracted: int
    left: ScoredLabels
    gold: GoldMetrics | None
    kept_audit: bool = False


@dataclass(frozen=True)
class AuditCertificate:
    """What an audit round certified on its own answers: the rival of the final round's plain certificate.

    Why keeping the larger of the two keeps the guarantee. The audit certifies the predictions
    its round made before the answers (region draws, ``certify_acceptance(regions=...)``); the
    final round certifies a model that learned from every answer, as any round does. The audit's
    draws are no uniform sample of the final model's candidates (the audit's model chose their
    region), so they never count as uniform draws: each question keeps its ``reference_region``
    in the store, ``ReferenceEvidence.region`` carries it, and the certificate counts those draws
    only inside that region, every accepted item outside it counted as an error (``RegionDesign``),
    as in any round after an audit. Every reference item is scored out of fold
    (``pool_probabilities``: a fold model that did not learn its answer), the audit's included.
    Each certificate is issued at ``delta / 2``, a split fixed before any answer is seen, so by the
    union bound both hold at once with probability >= 1 - delta; on that event whichever set is
    kept is at least ``target`` precise, so choosing after seeing both costs nothing more.

    Found from the store, not from memory (``LabelingRun._audit_to_beat``), so a run killed between
    the audit and the final round ends as an uninterrupted one: the last finished round asked
    region draws and recorded its certificate at half the run's delta. An audit whose answers came
    after its round (an asynchronous oracle) was never certified again, and its round keeps the
    full-delta certificate it made first: the final round then certifies alone, at the full delta.
    """

    round_id: int
    recorded: RoundCertificate


# ----------------------------------------------------------------------------- the project as it stands


class ProjectView:
    """The project as it stands, read: its labels (one snapshot a call), the pool's positions and classes,
    the learners a round's judge chooses from, and what ``plan`` and ``evaluate`` report from them.

    Nothing here writes to the store or trains a learner: ``plan_project`` and ``evaluate_project`` are
    made of it alone, and ``LabelingRun`` adds the steps that do. It works on the project's store and
    its pool, loaded and checked against the stored hashes (``metalabel.store.pool``).
    """

    def __init__(self, store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None, *,
                 options: RunOptions, encoder: str | None = None, gold: dict[str, str] | None = None,
                 progress: bool = True, rules: RuleVotes | None = None) -> None:
        self.store, self.pool, self.options = store, pool, options
        self.rules = rules  # the labeling functions' votes on the pool (metalabel.rules), evidence beside the model
        self.candidates = Candidates(store, pool, learner, encoder=encoder, progress=progress)
        self.encoder = encoder
        self.classes = self.store.classes()
        self.class_index = {name: c for c, name in enumerate(self.classes)}
        self.index = PoolIndex(self.pool, self.store)
        self.gold = gold

    @property
    def ways(self) -> int:
        return len(self.classes)

    def snapshot(self) -> LabelSnapshot:
        """The project's active labels, read once, by pool position."""
        return LabelSnapshot.of(self.store.active_labels(), position_of_item=self.index.position_of_item,
                                class_index=self.class_index, pseudo_weight=self.options.pseudo_weight)

    def unlabeled(self, labels: LabelSnapshot) -> np.ndarray:
        """Pool positions a model may label: known to the store and without a person's label."""
        return np.setdiff1d(self.index.registered, labels.human_positions)

    def choose_model(self, labels: LabelSnapshot, feedback: list[str] | None = None) -> ModelChoice:
        """The judge's choice among the candidates it has not retired (``retired_learners``: those that kept
        losing are no longer computed); a newly retired one is named in ``feedback``."""
        history = [judged_scores(past.metrics or {}) for past in self.store.rounds() if past.status == "finished"]
        retired = retired_learners(history, keep=next(iter(self.candidates.learners)))
        for name, why in retired.items():
            if feedback is not None and why != "retired in an earlier round":
                feedback.append(f"the judge retires {name} in this project from now on: {why}; its cost is skipped")
        variants = self.candidates.variants(refine_steps=self.options.refine_steps, seed=self.options.seed,
                                            rule_votes=None if self.rules is None else self.rules.matrix,
                                            leave_out=retired)
        return choose_model(variants, labels, ways=self.ways, folds=self.options.calibration_folds,
                            seed=self.options.seed)

    def plan(self, *, coverage: float | None = None) -> BudgetPlan:
        """The planner's figures from the evidence as it stands: nothing is written, nothing asked."""
        labels = self.snapshot()
        self._require_a_label_per_class(labels)
        choice = self.choose_model(labels)
        _, probs = pool_probabilities(choice.model, choice.calibration, labels, ways=self.ways)
        candidates = self.unlabeled(labels)
        return self._asking(None).plan(probs[candidates],
                                       self.acceptance.reference_evidence(choice.calibration, probs, candidates),
                                       questions=self._per_round, coverage=coverage)

    def scorecard(self) -> Scorecard:
        """The scorecard of the labels as they stand now: nothing is written, nothing asked."""
        labels = self.snapshot()
        choice = self.choose_model(labels)
        _, probs = pool_probabilities(choice.model, choice.calibration, labels, ways=self.ways)
        candidates = self.unlabeled(labels)
        reference = self.acceptance.reference_evidence(choice.calibration, probs, candidates)
        # the labels as they stand were admitted by the certificate the last round recorded with them
        figures = figures_as_recorded(self.store, coverage=len(labels.pseudo.positions) / max(len(candidates), 1),
                                      delta=self.options.delta, ways=self.ways)
        return self._scorecard(RoundFit(choice.name, choice.model, choice.calibration, None, choice.scores),
                               ScoredLabels.of(labels.active, self.index, self.class_index), figures, reference, [])

    def _scorecard(self, fit: RoundFit, labels: ScoredLabels, certified: CertifiedFigures,
                   reference: ReferenceEvidence, feedback: list[str]) -> Scorecard:
        embeddings = fit.model.embeddings()
        quality = label_quality(fit.calibration, certified, reference, labels, self.truth)
        # the classifiers and distances work in the space's top principal components: a round stays quick
        project = principal_components(embeddings, dims=JUDGE_DIMS, seed=self.options.seed)
        return round_scorecard(labels, quality, fit.calibration, embeddings, index=self.index, classes=self.classes,
                               truth=self.truth, pseudo_weight=self.options.pseudo_weight,
                               generated_weight=self.options.generated_weight, seed=self.options.seed,
                               featurize=project, generated=_generated_data(fit.generation), feedback=feedback)

    def _require_a_label_per_class(self, labels: LabelSnapshot) -> None:
        missing = sorted(set(range(self.ways)) - set(labels.human_classes.tolist()))
        if missing:
            raise BadInputError(f"class {self.classes[missing[0]]!r} has no human or seed label",
                                hint="label at least one example of every class before running")

    @cached_property
    def acceptance(self) -> Acceptance:
        return Acceptance(self.store, self.index, self.classes, target=self.options.target_precision,
                          delta=self.options.delta, method=self.options.certify)

    def _asking(self, oracle: Oracle | None) -> Asking:
        options = self.options
        return Asking(self.store, self.pool, self.index, self.classes, oracle, target=options.target_precision,
                      delta=options.delta, coverage_goal=options.coverage_goal,
                      reference_share=options.reference_share, strategy=options.strategy, seed=options.seed)

    @cached_property
    def truth(self) -> np.ndarray | None:
        """The true class of every pool item (-1: unknown), where the user gave gold labels."""
        return gold_classes(self.gold, self.pool.uris, self.classes)

    @property
    def _per_round(self) -> int:
        return self.options.per_round or max(self.ways, self.options.budget // 5, 1)


# ----------------------------------------------------------------------------- the loop


class LabelingRun(ProjectView):
    """One call of ``Project.run``: rounds until the budget or the gains run out, each written as it goes.

    What it reads of the project is its ``ProjectView``; the caller holds the writer lock.
    """

    def __init__(self, store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None, *,
                 oracle: Oracle | None, options: RunOptions,
                 encoder: str | None = None, gold: dict[str, str] | None = None, progress: bool = True,
                 on_round: Callable[[RoundReport], None] | None = None, rules: RuleVotes | None = None) -> None:
        undo_unasked_rounds(store)  # before the candidates are read: a round undone may have kept a learner
        super().__init__(store, pool, learner, options=options, encoder=encoder, gold=gold, progress=progress,
                         rules=rules)
        self.oracle = oracle
        self.on_round = on_round
        self.generator: DataGenerator | None = None

    # -- the loop
    def run(self) -> RunResult:
        self._recover()
        self._prepare()
        options = self.options
        per_round = self._per_round
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
            # ... unless the round that spends the budget audits what it exports (the final round then competes
            # with it)
            audit = options.audit and 0 < ask == remaining
            labels = self.snapshot()  # what the round learns from: nothing writes a label before it accepts
            if not len(self.unlabeled(labels)):
                return RunResult(reports, "every pool item has a person's label: nothing is left for a model")
            number = self._round_number()
            round_id = self.store.start_round({**asdict(options), "models": self.candidates.hashes, "ask": ask})
            try:
                report = self._round(round_id, number, labels, ask=ask, audit=audit,
                                     rival=None if ask else self._audit_to_beat())
            except OracleStopped as stopped:
                self.store.finish_round(round_id, {"stopped_by_oracle": True}, status="failed")
                lost = "" if stopped.not_saved is None else f"; {stopped.not_saved} (the next run asks it again)"
                return RunResult(reports, "stopped by the oracle" + lost)
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
            # while nothing is certified, more answers are what it takes: only certified coverage can stall
            stalled = len(reports) > 1 and report.certified_precision is not None and gain < options.min_gain
            small_gains = small_gains + 1 if stalled else 0
            if small_gains >= 2:
                stop_reason = "another round no longer pays (coverage gain below min_gain twice)"

    def _recover(self) -> None:
        """Clean what a killed or interrupted run left (its rounds were closed or undone when this run began):
        unrecorded files, unanswered questions."""
        remove_unrecorded_generated(self.store)  # their work is redone
        remove_unrecorded_checkpoints(self.store)
        self.asking.put_open_questions(None)  # questions a killed run asked but never got answers for

    def _prepare(self) -> None:
        """The project's own meta-learner (trained once, then kept as a checkpoint) and the generators."""
        learners = self.candidates.learners
        if GIVEN_LEARNER not in learners and PROJECT_LEARNER not in learners and self.options.project_meta_steps > 0:
            learned = meta_learn_on_project(self.candidates.x, self.snapshot(), steps=self.options.project_meta_steps,
                                            seed=self.options.seed)
            if learned is not None:
                self.candidates.keep(self.store, PROJECT_LEARNER, learned, round_id=None)
        self.candidates.save(self.store)
        if self.options.generate:  # the policies continue from the last round whose generators ran
            history = (recorded_generation(past.metrics or {}, f"round {past.id}'s metrics")
                       for past in reversed(self.store.rounds()) if past.status == "finished")
            last = next((record for record in history if record is not None), None)
            self.generator = resume_generator(None if last is None else last.policy,
                                              None if last is None else last.image_policy, learn=self.options.feedback,
                                              gan=self.options.gan, generated_weight=self.options.generated_weight)

    # -- one round
    def _round(self, round_id: int, number: int, labels: LabelSnapshot, *, ask: int,
               audit: bool = False, rival: AuditCertificate | None = None) -> RoundReport:
        """One round on ``labels`` (read by ``run`` just before): fit, predict, accept, keep what was generated,
        score, ask; with ``audit``, certify the same predictions again on the audit's answers (at delta / 2);
        with ``rival``, certify the plain way at delta / 2 and keep whichever of the two certified more."""
        started = time.perf_counter()
        self._require_a_label_per_class(labels)
        feedback: list[str] = []
        fit = self._fit(round_id, number, labels, feedback)
        raw, probs = pool_probabilities(fit.model, fit.calibration, labels, ways=self.ways)
        model_hash = keep_round_model(self.store, fit.name, self.candidates.hashes[fit.name],
                                      feature_space=self.candidates.space_of_learner(fit.name),
                                      head=fit.model.head if fit.model.prototype_space else None, round_id=round_id)
        judged = self._accept(round_id, fit, labels, raw, probs, model_hash, rival=rival)
        feedback.append(judged.certificate.reason)
        if rival is not None:
            feedback.append(_verdict(judged, rival))
        if fit.generation is not None:
            store_generated(self.store, self.index, self.classes, round_id, fit.generation, labels.human_positions)
        scorecard = self._scorecard(fit, judged.left, judged.figures, judged.reference, feedback)
        suspects = [issue.item_id for issue in scorecard.label_issues if issue.source == LabelSource.IMPORTED]
        reference_questions, asked = self.asking.ask(
            round_id, number, ask, probs, fit.model.embeddings(), judged.candidates, judged.reference, suspects,
            audit=audit) if ask else (0, 0)
        if audit and not self.store.open_questions():
            # the same predictions, certified again with the audit's answers: they were made before them
            # at half the run's delta: the final round's plain certificate competes with it (AuditCertificate)
            before = judged.retracted
            judged = self._accept(round_id, fit, self.snapshot(), raw, probs, model_hash,
                                  delta=self.options.delta / 2)
            judged = replace(judged, retracted=before + judged.retracted)
            feedback.append(f"after the audit: {judged.certificate.reason}")
            # the rest of the scorecard stays as measured on the labels the round's generators were judged on
            scorecard = replace(scorecard, feedback=tuple(feedback), label_quality=label_quality(
                fit.calibration, judged.figures, judged.reference, judged.left, self.truth))
        return RoundReport(
            **replace(judged.recorded, retracted=judged.retracted).to_json(),
            round_id=round_id, human_labels=len(labels.human_positions), temperature=_temperature(fit.calibration),
            calibration_ece=fit.calibration.ece, questions=asked, reference_questions=reference_questions,
            answered_total=self._answered_total(), seconds=round(time.perf_counter() - started, 2),
            model=f"{fit.name} + {fit.model.head}" if fit.model.prototype_space else fit.name,
            held_out_accuracy=fit.calibration.accuracy, disagreements=len(self.store.disagreements()),
            gold=judged.gold, feedback=tuple(feedback), scorecard=scorecard,
            generation=generation_record(fit.generation) if fit.generation is not None else None, judged=fit.scores,
            generators_earned=fit.generators_earned)

    def _fit(self, round_id: int, number: int, labels: LabelSnapshot, feedback: list[str]) -> RoundFit:
        """The learner and head that predict held-out labels best, the project's meta-learner continued where it
        won, and the generators' rows where they help; what was measured goes to ``feedback``."""
        choice = self.choose_model(labels, feedback)
        name, model, calibration = choice.name, choice.model, choice.calibration
        if name == PROJECT_LEARNER:  # it earns more training by winning the round; otherwise the run skips the cost
            self._continue_meta_learning(round_id, number, labels, feedback)
        generation, earned = None, None
        resting = generators_resting([generators_earned(past.metrics or {}) for past in self.store.rounds()
                                      if past.status == "finished"])
        feedback.extend([resting] if self.generator is not None and resting else [])
        if self.generator is not None and not resting:
            generation = generate(self.generator, model, labels, self.pool,
                                  encoder=self.candidates.space_of.get(name, self.encoder),
                                  seed=self.options.seed + number)
        if generation is not None:
            feedback.extend(generation.feedback)
            used = use_generated(generation, model, calibration, labels, ways=self.ways,
                                 folds=self.options.calibration_folds, seed=self.options.seed,
                                 generated_weight=self.options.generated_weight, judged=self.options.feedback)
            model, calibration, earned = used.model, used.calibration, used.earned
            feedback.extend([used.measured] if used.measured else [])
        return RoundFit(name, model, calibration, generation, choice.scores, earned)

    def _accept(self, round_id: int, fit: RoundFit, labels: LabelSnapshot, raw: np.ndarray, probs: np.ndarray,
                model_hash: str, *, delta: float | None = None, rival: AuditCertificate | None = None) -> Judged:
        """Certify on the reference evidence (at ``delta``, default the run's), write what the certificate admits
        (retracting what it no longer does, from ``labels`` as read), then read the labels the round leaves, once,
        and measure them on gold.

        With ``rival`` (the audit's certificate, at half the run's delta), certify at that delta, and write only
        if this certificate admits at least as many labels as the audit's (a tie goes to this model, which
        learned from every answer); otherwise the audit's labels stay, and what the round records is the
        audit's certificate.
        """
        candidates = self.unlabeled(labels)
        acceptance = self.acceptance
        if rival is not None:
            acceptance = replace(acceptance, delta=rival.recorded.delta)
        elif delta is not None:
            acceptance = replace(acceptance, delta=delta)
        reference = acceptance.reference_evidence(fit.calibration, probs, candidates)
        certificate = acceptance.certify(candidates, probs[candidates], reference)
        audit_kept = (replace(rival.recorded, retracted=0)
                      if rival is not None and rival.recorded.model_labels > certificate.accepted else None)
        kept_audit = audit_kept is not None
        # one transaction, with the certificate on the round: the labels a round leaves active are exactly what
        # its certificate covers, whatever ends the round later
        with self.store.batch():
            if audit_kept is not None:
                retracted, recorded = 0, audit_kept
            else:
                retracted = acceptance.write(round_id, labels.active, candidates, certificate, raw, probs,
                                             model_hash, rules=self.rules if fit.model.uses_rules else None,
                                             head=fit.model.head)
                recorded = recorded_certificate(certificate, reference_answers=len(reference.positions),
                                                retracted=retracted)
            self.store.record_round_metrics(round_id, recorded.to_json())
        left = ScoredLabels.of(self.store.active_labels(), self.index, self.class_index)
        figures = (figures_as_recorded(self.store, coverage=recorded.coverage, delta=recorded.delta, ways=self.ways)
                   if kept_audit else CertifiedFigures.of(certificate))
        # before asking: this round's answers not counted
        gold = gold_metrics(self.truth, probs, candidates[certificate.mask] if not kept_audit else candidates[:0],
                            left)
        if gold is not None and kept_audit:  # the labels the export writes are the audit model's, not this one's
            gold = replace(gold, achieved_precision=_model_label_precision(self.truth, left))
        return Judged(candidates, reference, certificate, recorded, figures, retracted, left, gold, kept_audit)

    def _audit_to_beat(self) -> AuditCertificate | None:
        """The certificate the final round competes with: the last finished round's, where that round was an
        audit (it asked reference questions from a region) certified again on its answers at half the run's
        delta. Read from the store, so a resumed run finds what an uninterrupted one does."""
        finished = [r for r in self.store.rounds() if r.status == "finished"]
        if not finished or not finished[-1].metrics or CERTIFICATE_METRIC not in finished[-1].metrics:
            return None
        last = finished[-1]
        closed = self.store.answered_questions(strategy=REFERENCE) + self.store.dismissed_questions(strategy=REFERENCE)
        if not any(q.round_id == last.id and q.reference_region is not None for q in closed):
            return None
        recorded = RoundCertificate.from_json(last.metrics, f"round {last.id}'s metrics")
        # an audit for a lower target (a run resumed with a higher one) certified less than this run asks: no rival
        lower_target = float(last.config["target_precision"]) < self.options.target_precision
        if recorded.delta > self.options.delta / 2 or lower_target:
            return None
        return AuditCertificate(last.id, recorded)

    # -- the project's own meta-learner
    def _continue_meta_learning(self, round_id: int, number: int, labels: LabelSnapshot,
                                feedback: list[str]) -> None:
        """Continue the project's meta-learner on tasks from the grown data set; keep it only if it predicts better."""
        current = self.candidates.learners.get(PROJECT_LEARNER)
        if current is None or not self.options.meta_continue_steps or not self.options.feedback:
            return
        continued, measured = continue_meta_learning(
            current, self.candidates.x, labels, steps=self.options.meta_continue_steps, seed=self.options.seed + number,
            ways=self.ways, folds=self.options.calibration_folds, calibration_seed=self.options.seed)
        feedback.extend([measured] if measured else [])
        if continued is not None:
            self.candidates.keep(self.store, PROJECT_LEARNER, continued, round_id=round_id)

    # -- the run's own state
    @cached_property
    def asking(self) -> Asking:
        return self._asking(self.oracle)

    def _answered_total(self) -> int:
        return int(self.store.summary()["answered_questions"])

    def _round_number(self) -> int:
        """1 + the rounds whose questions were asked: what seeds a round's random choices.

        A round killed after asking is redone on the answers it asked for, as the next
        round of an uninterrupted run would be, so it takes that round's number: a resumed
        run asks what an uninterrupted one asks, question for question. A skipped question
        was asked too: after a round whose every question was skipped, nothing was learned,
        and the same number would draw the same items again.
        """
        asked = self.store.open_questions() + self.store.answered_questions() + self.store.dismissed_questions()
        return 1 + len({q.round_id for q in asked if q.round_id is not None})

def _verdict(judged: Judged, rival: AuditCertificate) -> str:
    """The round log's line on which of the final round's and the audit's certificates was kept, and why."""
    audit = rival.recorded
    reference = judged.reference
    mine = (f"this round's model (every answer learned; {len(reference.positions)} reference answers, "
            f"{int((reference.region >= 0).sum())} of them drawn from a region and counted only inside it) "
            f"certifies {judged.certificate.accepted} labels ({judged.certificate.coverage:.1%} of the candidates)")
    theirs = f"the audit's (round {rival.round_id}) {audit.model_labels} ({audit.coverage:.1%})"
    if not judged.certificate.accepted and not audit.model_labels:
        outcome = "neither certifies anything, so nothing is exported"
    elif judged.kept_audit:
        outcome = "the audit's labels are kept, the larger certified set, and this round writes none"
    elif judged.certificate.accepted == audit.model_labels:
        outcome = "this round's labels replace the audit's: as many, from the model that learned from every answer"
    else:
        outcome = "this round's labels replace the audit's, the larger certified set"
    return (f"final round against the audit, each certified at delta {audit.delta:g} (so both hold with "
            f"probability >= {1 - 2 * audit.delta:g}): {mine}, {theirs}; {outcome}")


def _model_label_precision(truth: np.ndarray | None, labels: ScoredLabels) -> float | None:
    """Against the true labels, the precision of the active model labels (what the export writes)."""
    if truth is None:
        return None
    model = np.array([LabelSource(label.source) is LabelSource.MODEL for label in labels.labels], dtype=bool)
    known = model & (truth[labels.positions] >= 0)
    return float((labels.classes[known] == truth[labels.positions][known]).mean()) if known.any() else None


def _temperature(calibration: Calibration) -> float:
    temperature = calibration.calibrator.temperature if calibration.calibrator is not None else None
    return 1.0 if temperature is None else float(temperature)


def _generated_data(generation: GenerationStep | None) -> GeneratedData:
    """What the scorecard reads of the round's generators."""
    if generation is None:
        return GeneratedData()
    return GeneratedData(generation.expand if generation.expanders else None,
                         {b.generator: b.x for b in generation.batches}, _outcomes(generation))


def generation_record(generation: GenerationStep) -> GenerationRecord:
    """What a round's generators did, as its report keeps it."""
    return GenerationRecord(
        judge=generation.judge, policy=None if generation.policy is None else generation.policy.to_dict(),
        image_policy=None if generation.image_policy is None else generation.image_policy.to_dict(),
        generators=_outcomes(generation))


def _outcomes(generation: GenerationStep) -> dict[str, GeneratorOutcome]:
    return {b.generator: GeneratorOutcome(b.kept, int(len(b.y)), b.version, b.evidence) for b in generation.batches}


UNDONE_ARTIFACTS = (CHECKPOINT, ROUND_MODEL, GENERATED_ARTIFACT)
"""What an undone round recorded of its files: the project learner it continued, its round model, its generated
content (the files, then unrecorded, are removed as a killed run's are)."""


def undo_unasked_rounds(store: ProjectStore) -> None:
    """Close the rounds a killed run left running, and undo the last failed rounds back to the first that asked.

    A round killed or interrupted after it accepted labels and before it asked anything is redone by the next
    run on the same answers, with the same round number (``LabelingRun._round_number``): undone, it starts from
    the project as the round found it, so the resumed run labels, retracts and asks exactly what an
    uninterrupted one does. A failed round that asked keeps everything: its questions were chosen from its
    labels (and rounds before it that failed are left as they are, for the same reason).
    """
    for stale in (r for r in store.rounds() if r.status == "running"):
        store.finish_round(stale.id, {"interrupted": True}, status="failed")
    for past in reversed(store.rounds()):
        if past.status == "finished" or store.undo_round(past.id, artifact_kinds=UNDONE_ARTIFACTS) is None:
            break


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
    view = ProjectView(store, pool, learner, options=RunOptions(**{"generate": False, **options}), encoder=encoder,
                       progress=progress, rules=rules)
    return view.plan(coverage=coverage)


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
    view = ProjectView(store, pool, learner, options=RunOptions(**{"generate": False, **options}), encoder=encoder,
                       gold=gold, progress=progress, rules=rules)
    scorecard = view.scorecard()
    path = store.folder / "scorecard.json"
    write_atomically(path, json.dumps(scorecard.to_json(), indent=2, default=float))
    store.add_artifact("scorecard", path, meta={"labels": store.summary()["labeled_items"]})
    return scorecard
