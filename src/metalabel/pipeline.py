"""The labeling loop: adapt, predict and calibrate, accept at a target precision, ask a person, repeat.

Every step is committed to the project store as it happens, so a run killed at any
point (SIGKILL included) continues where it stopped: a round left "running" is
closed as failed and redone, a question asked but not answered is asked again
first, and an answer, once given, is never lost or asked for twice.

A round adapts the model (``metalabel.label.round_model``), generates data
(``metalabel.generate.engine``), accepts labels, scores the result
(``metalabel.evaluate.scorecard``) and feeds the scores back: the acceptance target,
the generators and the project's meta-learner all move on held-out evidence.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from metalabel.data.dataset import UNLABELED
from metalabel.errors import BadInputError
from metalabel.label.accept import TargetAdjustment, accept_at_precision, adjust_target
from metalabel.label.active import select
from metalabel.label.calibrate import TemperatureScaling, cross_validated_logits, expected_calibration_error
from metalabel.label.oracle import Oracle, OracleStopped, Query, record_answers
from metalabel.label.round_model import (
    RoundModel,
    in_chunks,
    reads_images,
    default_learner,
    learner_hash,
    pool_inputs,
)
from metalabel.meta.functional import TaskLearner
from metalabel.project import Project

if TYPE_CHECKING:  # the generators load on first use
    from metalabel.generate.engine import DataGenerator, GenerationStep

TRUSTED_SOURCES = ("human", "imported")


@dataclass(frozen=True)
class RunOptions:
    """How a labeling run behaves; recorded with every round.

    ``budget`` counts the oracle's answers over the whole project, so a resumed run
    asks only what is left. ``per_round`` defaults to a fifth of the budget (at
    least one question per class). ``strategy="auto"`` starts with TypiClust
    (typical items of unlabeled clusters, for when the model's uncertainty means
    little) while there are fewer than two human labels per class, then margin.
    A run stops when the budget is spent, after ``max_rounds``, when the accepted
    coverage and estimated precision meet the target on the whole pool, or when a
    round raised coverage by less than ``min_gain`` twice in a row.
    Without a given learner, ``project_meta_steps`` > 0 also meta-trains an embedding on
    pseudo-tasks from the project's own pool (CACTUs) and labeled classes; each round
    keeps whichever of it and the plain encoder space predicts held-out human labels better.
    ``audit_fraction`` of each round's questions audit a random sample of the labels the
    round accepted; with ``feedback`` the audits raise the acceptance target when they
    show the model overclaiming (``metalabel.label.accept.adjust_target``), and the
    project's meta-learner continues ``meta_continue_steps`` on tasks from the grown
    data set each round, kept only when it predicts held-out human labels better.
    With ``generate``, each round runs the generators (``metalabel.generate.engine``:
    a searched augmentation policy, a meta-trained feature hallucinator, a VAE for
    28x28 grayscale images); what they make counts ``generated_weight`` in the round's
    model, and only while it raises held-out accuracy. ``feedback=False`` turns every
    evidence-driven change off (fixed target, fixed policy, generators unjudged): the
    baseline for measuring what feedback is worth.
    """

    target_precision: float = 0.95
    budget: int = 100
    per_round: int | None = None
    max_rounds: int = 10
    strategy: str = "auto"
    pseudo_weight: float = 0.5
    refine_steps: int = 1
    calibration_folds: int = 5
    min_gain: float = 0.002
    project_meta_steps: int = 500
    audit_fraction: float = 0.2
    meta_continue_steps: int = 100
    generate: bool = True
    generated_weight: float = 0.5
    feedback: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.target_precision < 1:
            raise BadInputError(f"target_precision must lie in (0, 1), got {self.target_precision}")
        if self.budget < 0 or (self.per_round is not None and self.per_round < 1):
            raise BadInputError("budget must be >= 0 and per_round >= 1")
        if not 0 <= self.pseudo_weight <= 1:
            raise BadInputError(f"pseudo_weight must lie in [0, 1], got {self.pseudo_weight}")
        if not 0 <= self.audit_fraction < 1:
            raise BadInputError(f"audit_fraction must lie in [0, 1), got {self.audit_fraction}")


@dataclass
class RoundReport:
    """What one round did, as stored in the round's metrics."""

    round_id: int
    human_labels: int
    model_labels: int
    coverage: float
    estimated_precision: float
    precision_ci: tuple[float, float]
    temperature: float
    calibration_ece: float | None
    questions: int
    answered_total: int
    seconds: float
    model: str = ""
    held_out_accuracy: float | None = None
    disagreements: int = 0
    gold: dict[str, float] = field(default_factory=dict)
    acceptance_target: float = float("nan")
    audits: int = 0
    audit_precision: float | None = None
    audit_ci: tuple[float, float] | None = None
    feedback: list[str] = field(default_factory=list)
    scorecard: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Calibration:
    """A round model's calibration on out-of-fold human labels; empty while no label can be held out."""

    calibrator: TemperatureScaling | None = None
    ece: float | None = None
    accuracy: float | None = None  # out-of-fold accuracy on the human labels
    probs: np.ndarray | None = None  # calibrated out-of-fold probabilities [H, C]
    labels: np.ndarray | None = None  # [H] the human labels they predict
    positions: np.ndarray | None = None  # [H] pool positions of those items


@dataclass
class RunResult:
    """Every round's report, and why the run stopped."""

    rounds: list[RoundReport]
    stopped_because: str


# ----------------------------------------------------------------------------- the loop


class LabelingRun:
    """One call of ``Project.run``: rounds until the budget, the target or the gains run out."""

    def __init__(self, project: Project, learner: TaskLearner | None, *, oracle: Oracle, options: RunOptions,
                 encoder: str | None = None, gold: dict[str, str] | None = None, progress: bool = True,
                 on_round: Callable[[RoundReport], None] | None = None) -> None:
        self.project, self.store, self.oracle, self.options = project, project.store, oracle, options
        self.pool = project.load_pool()
        self.x = pool_inputs(self.pool, learner, encoder=encoder, progress=progress)
        self.learners = {"given": learner} if learner is not None else {"encoder space": default_learner()}
        self.classes = self.store.classes()
        self.class_index = {name: c for c, name in enumerate(self.classes)}
        self.position = {uri: i for i, uri in enumerate(self.pool.uris)}
        items = self.store.items()
        self.item_ids = np.full(len(self.pool), -1, dtype=np.int64)
        for item in items:
            self.item_ids[self.position[item.uri]] = item.id
        self.position_of_item = {item.id: self.position[item.uri] for item in items}
        self.gold = gold
        self.on_round = on_round
        self.rng = np.random.default_rng(options.seed)
        if learner is None and options.project_meta_steps > 0:
            # a resumed or re-opened project continues with the meta-learner it made last
            meta_learned = self._saved_project_learner() or self._meta_learn_on_project()
            if meta_learned is not None:
                self.learners["project meta-learned"] = meta_learned
        self.hashes = {name: learner_hash(model) for name, model in self.learners.items()}
        self.encoder = encoder or ("minilm" if self.pool.modality == "text" else "efficientnet-lite0")
        self.generator = self._resume_generator() if options.generate else None
        if "project meta-learned" in self.learners:
            self._save_checkpoint("project meta-learned", None)

    def _meta_learn_on_project(self, *, steps: int | None = None, init: TaskLearner | None = None,
                               seed: int | None = None) -> TaskLearner | None:
        """A ProtoNet embedding meta-trained on the pool's clusters and the labeled classes (CACTUs).

        Accepted pseudo-labels join as classes, so a later call (``init`` = the current
        learner) continues on tasks from the grown data set. None when the pool is too
        small to make enough pseudo-classes for episodes.
        """
        from metalabel.meta.train import meta_train
        from metalabel.meta.unsupervised import pseudo_task_dataset

        shots, queries, ways = 1, 5, 10
        steps = self.options.project_meta_steps if steps is None else steps
        seed = self.options.seed if seed is None else seed
        # accepted labels join as classes; human labels never do: they are the held-out evidence every
        # learner is judged and calibrated on, and a learner trained on them would be judged on its own lessons
        positions, classes, _, trusted = self._labels()
        features = self.x.flatten(1).numpy()
        if len(features) < 4 * ways * (shots + queries):
            return None
        tasks = pseudo_task_dataset(features, clusters=int(np.clip(len(features) // 50, ways * 2, 200)),
                                    min_per_cluster=shots + queries, labeled=(positions[~trusted], classes[~trusted]),
                                    seed=seed)
        if tasks.num_classes < 2 * 4:  # training and validation classes need a few ways each
            return None
        try:
            return meta_train(tasks, algo="protonet", backbone="mlp",
                              backbone_kwargs={"in_features": features.shape[1], "hidden": [512], "out_features": 128},
                              ways=min(ways, tasks.num_classes // 4), val_fraction=0.25, shots=shots, queries=queries,
                              steps=steps, val_every=steps, val_episodes=50, seed=seed, progress=False, init=init)
        except BadInputError:  # too few pseudo-classes of the needed size for episodes
            return None

    def _saved_project_learner(self) -> TaskLearner | None:
        from metalabel.meta.checkpoint import load_learner

        saved = [a for a in self.store.artifacts(kind="checkpoint") if a.meta.get("learner") == "project meta-learned"]
        return load_learner(saved[-1].path) if saved and saved[-1].path.is_dir() else None

    def _continue_meta_learning(self, round_id: int, labels: tuple[np.ndarray, ...], feedback: list[str]) -> None:
        """Continue the project's meta-learner on tasks from the grown data set; keep it only if it predicts better."""
        name = "project meta-learned"
        current = self.learners.get(name)
        if current is None or not self.options.meta_continue_steps or not self.options.feedback:
            return
        before = self._calibrate(RoundModel(current, self.x, seed=self.options.seed), *labels).accuracy
        if before is None:
            return  # no held-out human labels yet: no evidence to keep or drop a change by
        continued = self._meta_learn_on_project(steps=self.options.meta_continue_steps, init=current,
                                                seed=self.options.seed + round_id)
        if continued is None:
            return
        after = self._calibrate(RoundModel(continued, self.x, seed=self.options.seed), *labels).accuracy
        verdict = "kept" if after >= before else "dropped, the previous one stays"
        feedback.append(f"meta-learner continued {self.options.meta_continue_steps} steps on tasks from the grown "
                        f"data set: held-out accuracy {before:.1%} -> {after:.1%}, {verdict}")
        if after >= before:
            self.learners[name] = continued
            self.hashes[name] = learner_hash(continued)
            self._save_checkpoint(name, round_id)

    def _save_checkpoint(self, name: str, round_id: int | None) -> None:
        """Keep a learner the project made, in its folder, so every model label's model_hash can be reloaded."""
        from metalabel.meta.checkpoint import save_learner

        folder = self.project.folder / "models" / self.hashes[name]
        if not folder.exists():
            save_learner(self.learners[name], folder)
            self.store.add_artifact("checkpoint", folder, round_id=round_id,
                                    meta={"learner": name, "model_hash": self.hashes[name]})

    # -- state read from the store
    def _answered_total(self) -> int:
        return int(self.store.summary()["answered_questions"])

    def _labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pool positions, class indices, weights and trust (human or seed) of the labels the model learns from."""
        positions, classes, weights, trusted = [], [], [], []
        for label in self.store.active_labels():
            is_trusted = label.source in TRUSTED_SOURCES
            weight = 1.0 if is_trusted else self.options.pseudo_weight if label.source == "model" else 0.0
            if weight > 0:
                positions.append(self.position_of_item[label.item_id])
                classes.append(self.class_index[label.class_name])
                weights.append(weight)
                trusted.append(is_trusted)
        return (np.array(positions, dtype=np.int64), np.array(classes, dtype=np.int64), np.array(weights),
                np.array(trusted, dtype=bool))

    def _human_positions(self) -> set[int]:
        return {self.position_of_item[label.item_id] for label in self.store.active_labels()
                if label.source in TRUSTED_SOURCES}

    # -- one round
    def _calibrate(self, model: RoundModel, positions, classes, weights, trusted) -> Calibration:
        """Temperature from out-of-fold logits of the human labels (each predicted by a model that never saw it)."""
        human_positions, human_classes = positions[trusted], classes[trusted]
        pseudo = ~trusted
        ways = len(self.classes)

        def fit_predict(train):
            support = np.concatenate([human_positions[train], positions[pseudo]])
            y = np.concatenate([human_classes[train], classes[pseudo]])
            w = np.concatenate([np.ones(len(train)), weights[pseudo]])
            return lambda test: model.logits(support, y, w, ways, targets=human_positions[test])

        try:
            folds = cross_validated_logits(fit_predict, human_classes, folds=self.options.calibration_folds,
                                           seed=self.options.seed)
        except BadInputError:
            return Calibration()  # one label per class: nothing to hold out yet
        held = folds.held_out
        calibrator = TemperatureScaling().fit(folds.logits[held], human_classes[held])
        probs = calibrator.predict_proba(folds.logits[held])
        return Calibration(calibrator, float(expected_calibration_error(probs, human_classes[held])),
                           float((folds.logits[held].argmax(1) == human_classes[held]).mean()),
                           probs, human_classes[held], human_positions[held])

    def _round(self, round_id: int, *, ask: int) -> RoundReport:
        started = time.perf_counter()
        positions, classes, weights, trusted = self._labels()
        missing = sorted(set(range(len(self.classes))) - set(classes[trusted].tolist()))
        if missing:
            raise BadInputError(f"class {self.classes[missing[0]]!r} has no human or seed label",
                                hint="label at least one example of every class before running")
        feedback: list[str] = []
        self._continue_meta_learning(round_id, (positions, classes, weights, trusted), feedback)
        name, model, calibration = self._best_model(positions, classes, weights, trusted)
        generation = None
        if self.generator is not None and model.prototype_space:
            generation = self._generate(round_id, model, positions, classes, weights, trusted)
            feedback.extend(generation.feedback)
            model, calibration = self._use_generated(generation, model, calibration,
                                                     (positions, classes, weights, trusted), feedback)
        calibrator = calibration.calibrator
        model_hash = self.hashes[name]
        logits = self._cross_fitted_logits(model, positions, classes, weights, trusted, round_id)
        raw = torch.softmax(torch.from_numpy(logits), 1).numpy()
        # Without held-out labels to calibrate on, a meta-learned model's own probabilities are the
        # best estimate there is (it was trained on episodes to make them right), accepted item by
        # item at the target; distances in a plain encoder space mean nothing yet, so nothing is accepted.
        probs = calibrator.predict_proba(logits) if calibrator is not None else raw
        may_accept = calibrator is not None or name != "encoder space"

        human = self._human_positions()
        candidates = np.array([i for i in range(len(self.pool)) if i not in human], dtype=np.int64)
        adjustment = self._acceptance_target()
        if adjustment.audited:
            feedback.insert(0, adjustment.reason)
        decision = accept_at_precision(probs[candidates], target_precision=adjustment.target,
                                       calibrated=calibrator is not None)
        accepted = np.flatnonzero(decision.mask) if may_accept else np.array([], dtype=np.int64)
        with self.store.batch():  # a round's pseudo-labels land together or not at all
            for k in accepted:
                position = candidates[k]
                predicted = int(decision.predicted[k])
                self.store.add_label(
                    int(self.item_ids[position]), self.classes[predicted], source="model",
                    raw_confidence=float(raw[position, predicted]),
                    calibrated_confidence=float(probs[position, predicted]),
                    threshold=float(decision.thresholds[predicted]), round_id=round_id, model_hash=model_hash)

        if generation is not None:
            self._store_generated(round_id, generation, positions[trusted])
        gold = self._gold_metrics(probs, candidates[accepted])  # before asking: this round's answers not counted
        scorecard = self._scorecard(model, calibration, decision if may_accept else None,
                                    coverage=float(len(accepted) / max(len(candidates), 1)), generation=generation,
                                    feedback=feedback)
        issues = [self.position_of_item[issue["item_id"]] for issue in scorecard["label_issues"]
                  if issue["source"] == "imported"]
        asked = self._ask(round_id, probs, model.embeddings(), candidates, count=ask,
                          accepted=candidates[accepted], issues=issues) if ask else 0
        report = RoundReport(
            round_id=round_id, human_labels=len(human), model_labels=len(accepted),
            coverage=float(len(accepted) / max(len(candidates), 1)),
            estimated_precision=float(decision.estimated_precision) if may_accept else float("nan"),
            precision_ci=tuple(float(v) for v in decision.precision_ci) if may_accept else (float("nan"),) * 2,
            temperature=float(calibrator.temperature) if calibrator is not None else 1.0,
            calibration_ece=calibration.ece, questions=asked,
            answered_total=self._answered_total(), seconds=round(time.perf_counter() - started, 2),
            model=f"{name} + {model.head}" if model.prototype_space else name,
            held_out_accuracy=calibration.accuracy,
            disagreements=len(self.store.disagreements()),
            gold=gold,
            acceptance_target=adjustment.target,
            audits=adjustment.audited,
            audit_precision=adjustment.audit_precision if adjustment.audited else None,
            audit_ci=adjustment.audit_ci if adjustment.audited else None,
            feedback=feedback,
            scorecard=scorecard,
            generation=generation.summary() if generation is not None else {},
        )
        return report

    def _cross_fitted_logits(self, model: RoundModel, positions, classes, weights, trusted,
                             round_id: int) -> np.ndarray:
        """Logits of every pool item, each pseudo-labeled item's from a model that did not train on its label.

        The calibration is fitted on human labels predicted out of fold; a pseudo-labeled item
        predicted by a model that trained on its own label would look surer than the
        calibration allows for (measured: 97.5% claimed, 87% right), so pseudo-labels are
        dealt into folds and each fold is predicted by a model trained without it.
        """
        logits = model.logits(positions, classes, weights, len(self.classes))
        pseudo = np.flatnonzero(~trusted)
        if not len(pseudo):
            return logits
        folds = max(self.options.calibration_folds, 2)
        fold_of = np.random.default_rng([self.options.seed, round_id]).permutation(len(pseudo)) % folds
        for fold in range(folds):
            held = pseudo[fold_of == fold]
            keep = np.setdiff1d(np.arange(len(positions)), held)
            logits[positions[held]] = model.logits(positions[keep], classes[keep], weights[keep], len(self.classes),
                                                   targets=positions[held])
        return logits

    def _best_model(self, positions, classes, weights, trusted) -> tuple[str, RoundModel, Calibration]:
        """Feedback on the model itself: the learner and head that predict held-out human labels best.

        Ties and rounds without held-out labels keep the first: the given or plain-encoder one.
        """
        best = None
        for name, learner in self.learners.items():
            for candidate in RoundModel(learner, self.x, refine_steps=self.options.refine_steps,
                                        seed=self.options.seed).variants():
                calibration = self._calibrate(candidate, positions, classes, weights, trusted)
                if best is None or (calibration.accuracy is not None and best[2].accuracy is not None
                                    and calibration.accuracy > best[2].accuracy):
                    best = (name, candidate, calibration)
        return best

    def scorecard(self) -> dict[str, Any]:
        """The scorecard of the labels as they stand now: nothing is written, nothing asked."""
        positions, classes, weights, trusted = self._labels()
        _, model, calibration = self._best_model(positions, classes, weights, trusted)
        human = self._human_positions()
        candidates = np.array([i for i in range(len(self.pool)) if i not in human], dtype=np.int64)
        model_labeled = sum(label.source == "model" for label in self.store.active_labels())
        return self._scorecard(model, calibration, None, coverage=model_labeled / max(len(candidates), 1),
                               generation=None, feedback=[])

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

    def _generate(self, round_id: int, model: RoundModel, positions, classes, weights, trusted) -> GenerationStep:
        """Run the generators in the round model's embedding space, from the human-labeled items."""
        from metalabel.generate.engine import ImageInputs
        from metalabel.meta.unsupervised import cluster_pseudo_labels

        embeddings = model.embeddings()
        # the pool's own clusters are the many tasks a generator is meta-trained and judged on
        clusters = min(int(np.clip(len(embeddings) // 50, 10, 200)), len(embeddings) // 6)  # ~6+ items each
        pseudo = (cluster_pseudo_labels(embeddings, clusters=clusters, seed=self.options.seed + round_id)
                  if clusters >= 2 else np.full(len(embeddings), UNLABELED))
        images = None
        items = self.pool.items
        if self.pool.modality == "image" and _is_array(items) and items.ndim == 3:
            accepted = ~trusted  # the VAE learns from accepted labels; the human ones stay held-out evidence
            images = ImageInputs(labeled=items[positions[trusted]], featurize=self._image_featurizer(model),
                                 train_images=items[positions[accepted]], train_labels=classes[accepted],
                                 train_weights=None, search_policy=reads_images(model.learner))
        return self.generator.step(embeddings[positions[trusted]], classes[trusted], pool_x=embeddings,
                                   pool_y=pseudo, images=images, seed=self.options.seed + round_id)

    def _image_featurizer(self, model: RoundModel) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 images -> the round model's embedding, the way pool items get there."""
        def featurize(images: np.ndarray) -> np.ndarray:
            if reads_images(model.learner):
                inputs = torch.from_numpy(np.asarray(images)).float().div_(255).unsqueeze(1)
            else:
                from metalabel.data.encoders import get_encoder

                inputs = torch.from_numpy(get_encoder(self.encoder).encode(np.asarray(images), progress=False))
            with torch.no_grad():
                return in_chunks(model.learner.embed, inputs).numpy()
        return featurize

    def _use_generated(self, generation: GenerationStep, model: RoundModel, calibration: Calibration,
                       labels: tuple[np.ndarray, ...], feedback: list[str]) -> tuple[RoundModel, Calibration]:
        """The round model trains on the kept generated rows too, unless that lowers held-out accuracy."""
        if not generation.expanders:
            return model, calibration
        grown = model.with_generated(generation.expand, weight=self.options.generated_weight)
        grown_calibration = self._calibrate(grown, *labels)
        if calibration.accuracy is None or grown_calibration.accuracy is None:
            return grown, grown_calibration  # nothing to judge by yet: the generators' own evidence stands
        if grown_calibration.accuracy > calibration.accuracy or not self.options.feedback:
            feedback.append(f"the round's model trains on the kept generated data: held-out accuracy "
                            f"{grown_calibration.accuracy:.1%} vs {calibration.accuracy:.1%} without")
            return grown, grown_calibration
        feedback.append(f"generated data left out of the round's model: held-out accuracy "
                        f"{grown_calibration.accuracy:.1%} with vs {calibration.accuracy:.1%} without")
        return model, calibration

    def _store_generated(self, round_id: int, generation: GenerationStep, labeled_positions: np.ndarray) -> None:
        """Keep what each generator made this round: content in an .npz artifact, provenance in the store."""
        if not generation.batches:
            return
        from metalabel.store import SyntheticRecord, content_hash

        folder = self.project.folder / "generated"
        folder.mkdir(exist_ok=True)
        path = folder / f"round-{round_id}.npz"
        arrays = {}
        for batch in generation.batches:
            key = batch.generator.replace(" ", "_")
            arrays[f"{key}.content"], arrays[f"{key}.features"], arrays[f"{key}.y"] = batch.content, batch.x, batch.y
        staging = path.with_suffix(".partial.npz")
        np.savez_compressed(staging, **arrays)
        staging.replace(path)  # a killed run never leaves a half-written file under the real name
        with self.store.batch():
            artifact = self.store.add_artifact("generated", path, round_id=round_id,
                                               meta={"generators": [b.generator for b in generation.batches]})
            for batch in generation.batches:
                key = batch.generator.replace(" ", "_")
                records = [SyntheticRecord(
                    uri=f"generated/round-{round_id}/{key}/{row:05d}", content_hash=content_hash(batch.content[row]),
                    kind=batch.kind, class_name=self.classes[int(batch.y[row])], generator=batch.generator,
                    generator_version=batch.version, row_in_artifact=row,
                    parents=() if batch.parents[row] < 0 else (int(self.item_ids[labeled_positions[batch.parents[row]]]),))
                    for row in range(len(batch.y))]
                self.store.add_synthetic_items(records, round_id=round_id, artifact_id=artifact)
                if not batch.kept:
                    self.store.drop_synthetic_items(round_id=round_id, generator=batch.generator)

    # -- the scorecard
    def _scorecard(self, model: RoundModel, calibration: Calibration, decision, *,
                   coverage: float, generation: GenerationStep | None, feedback: list[str]) -> dict[str, Any]:
        from metalabel.evaluate import scorecard as card
        from metalabel.generate.engine import JUDGE_DIMS
        from metalabel.generate.evidence import principal_components

        labels = self.store.active_labels()
        _, audit_correct = self._audit_results()
        truth = self._gold_classes()
        gold_correct = None
        label_positions = np.array([self.position_of_item[label.item_id] for label in labels], dtype=np.int64)
        label_classes = np.array([self.class_index[label.class_name] for label in labels], dtype=np.int64)
        if truth is not None:
            known = truth[label_positions] >= 0
            gold_correct = label_classes[known] == truth[label_positions][known]
        held_out = None if calibration.probs is None else (calibration.probs, calibration.labels)
        quality = card.label_quality(
            coverage=coverage,
            estimated_precision=None if decision is None else decision.estimated_precision,
            precision_ci=None if decision is None else decision.precision_ci,
            audit_correct=audit_correct, held_out=held_out, gold_correct=gold_correct)
        if truth is not None:
            known = truth[label_positions] >= 0
            confusion = card.confusion_section(truth[label_positions][known], label_classes[known],
                                               classes=self.classes, against="gold labels")
        elif calibration.probs is not None:
            confusion = card.confusion_section(calibration.labels, calibration.probs.argmax(1), classes=self.classes,
                                               against="held-out human labels")
        else:
            confusion = None
        issues = []
        if calibration.probs is not None:
            trusted_by_position = {self.position_of_item[label.item_id]: label for label in labels
                                   if label.source in TRUSTED_SOURCES}
            rows = [trusted_by_position[p] for p in calibration.positions]
            issues = card.issues_section(calibration.labels, calibration.probs, uris=[r.uri for r in rows],
                                         item_ids=[r.item_id for r in rows], sources=[r.source for r in rows],
                                         classes=self.classes)
        embeddings = model.embeddings()
        trusted = np.array([label.source in TRUSTED_SOURCES for label in labels], dtype=bool)
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
        return {"label_quality": quality, "confusion": confusion, "label_issues": issues,
                "similarity": similarity, "downstream": downstream,
                "generators": generation.summary()["generators"] if generation else {}, "feedback": list(feedback)}

    def _gold_classes(self) -> np.ndarray | None:
        """The true class of every pool item (-1: unknown), where the user gave gold labels."""
        if not self.gold:
            return None
        return np.array([self.class_index.get(self.gold.get(uri, ""), UNLABELED) for uri in self.pool.uris])

    def _acceptance_target(self) -> TargetAdjustment:
        """The round's acceptance target: as asked, or raised where audits caught the model overclaiming."""
        claimed, correct = self._audit_results()
        adjustment = adjust_target(self.options.target_precision, claimed, correct)
        if self.options.feedback or adjustment.target == self.options.target_precision:
            return adjustment
        return replace(adjustment, target=self.options.target_precision,
                       reason=f"feedback off, target kept at {self.options.target_precision}; "
                              f"{adjustment.reason.split(': ')[0]}")

    def _audit_results(self) -> tuple[np.ndarray, np.ndarray]:
        """Claimed confidence and the person's verdict for every answered audit of an accepted model label."""
        claimed, correct = [], []
        for question in self.store.answered_questions(strategy="audit"):
            audited = next((label for label in self.store.label_history(question.item_id)
                            if label.source == "model" and label.round_id == question.round_id), None)
            if audited is not None and question.score is not None:
                claimed.append(question.score)
                correct.append(audited.class_name == question.answer)
        return np.array(claimed, dtype=np.float64), np.array(correct, dtype=bool)

    def _gold_metrics(self, probs: np.ndarray, accepted: np.ndarray) -> dict[str, float]:
        """Against the true labels, where the user has them (simulations and benchmarks)."""
        truth = self._gold_classes()
        if truth is None:
            return {}
        predicted = probs.argmax(1)
        known = truth != UNLABELED
        out = {"pool_accuracy": float((predicted[known] == truth[known]).mean())}
        chosen = accepted[truth[accepted] != UNLABELED]
        if len(chosen):
            out["achieved_precision"] = float((predicted[chosen] == truth[chosen]).mean())
        labels = predicted.copy()
        for label in self.store.active_labels():
            labels[self.position_of_item[label.item_id]] = self.class_index[label.class_name]
        out["label_accuracy"] = float((labels[known] == truth[known]).mean())
        return out

    def _ask(self, round_id: int, probs: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray,
             *, count: int, accepted: np.ndarray, issues: list[int]) -> int:
        """Ask about seed labels that look wrong, audit a random sample of this round's accepted labels,
        then ask the most useful unlabeled items."""
        open_items = {question.item_id for question in self.store.open_questions()}
        asked_before = {question.item_id for question in self.store.answered_questions(strategy="label-issue")}
        issues = [p for p in issues if self.item_ids[p] not in open_items | asked_before][:max(count // 10, 1)]
        questions = [(int(position), "label-issue") for position in issues[:count]]
        accepted = np.array([a for a in accepted if self.item_ids[a] not in open_items], dtype=np.int64)
        audit_count = min(round(count * self.options.audit_fraction), len(accepted), count - len(questions))
        audits = self.rng.permutation(accepted)[:audit_count]
        questions += [(int(position), "audit") for position in audits]
        asked_now = open_items | {int(self.item_ids[p]) for p, _ in questions}
        candidates = np.array([c for c in candidates if self.item_ids[c] not in asked_now], dtype=np.int64)
        if len(candidates) and count > len(questions):
            human = sorted(self._human_positions())
            strategy = self.options.strategy
            if strategy == "auto":
                strategy = "typiclust" if len(human) < 2 * len(self.classes) else "margin"
            chosen = select(strategy, probs[candidates], embeddings[candidates],
                            budget=min(count - len(questions), len(candidates)),
                            labeled_embeddings=embeddings[human] if human else None, rng=self.rng)
            questions += [(int(position), strategy) for position in candidates[chosen]]
        with self.store.batch():
            for position, strategy in questions:
                # an audit's score is the calibrated confidence the label was accepted with: what the model claimed
                self.store.ask(int(self.item_ids[position]), strategy=strategy, round_id=round_id,
                               score=float(probs[position].max()))
        self._put_open_questions(probs)
        return len(questions)

    def _put_open_questions(self, probs: np.ndarray | None) -> None:
        """Give every open question to the oracle and commit each answer as it comes."""
        questions = self.store.open_questions()
        if not questions:
            return
        queries = []
        for question in questions:
            position = self.position_of_item[question.item_id]
            item = self.pool.items[position]
            suggestion = confidence = None
            if probs is not None:
                suggestion = self.classes[int(probs[position].argmax())]
                confidence = float(probs[position].max())
            queries.append(Query(question.id, question.item_id, question.uri,
                                 item if self.pool.modality != "image" or _is_array(item) else None,
                                 self.classes, suggestion, confidence))
        try:
            answers = self.oracle.answer(queries)
        except OracleStopped as stop:
            record_answers(self.store, stop.answers)
            raise
        record_answers(self.store, answers)  # one transaction per answer: none is lost if we die mid-way

    # -- the loop
    def run(self) -> RunResult:
        for stale in (r for r in self.store.rounds() if r.status == "running"):
            self.store.finish_round(stale.id, {"interrupted": True}, status="failed")
        self._put_open_questions(None)  # questions a killed run asked but never got answers for
        options = self.options
        per_round = options.per_round or max(len(self.classes), options.budget // 5, 1)
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
            round_id = self.store.start_round({**asdict(options), "models": self.hashes, "ask": ask})
            try:
                report = self._round(round_id, ask=ask)
            except OracleStopped:
                self.store.finish_round(round_id, {"stopped_by_oracle": True}, status="failed")
                return RunResult(reports, "stopped by the oracle")
            except BaseException:
                self.store.finish_round(round_id, {"error": True}, status="failed")
                raise
            self.store.finish_round(round_id, asdict(report))
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
            small_gains = small_gains + 1 if len(reports) > 1 and gain < options.min_gain else 0
            if small_gains >= 2:
                stop_reason = "another round no longer pays (coverage gain below min_gain twice)"


def _is_array(item: Any) -> bool:
    return isinstance(item, np.ndarray)


def run_labeling(project: Project, learner: TaskLearner | None = None, *, oracle: Oracle,
                 encoder: str | None = None, gold: dict[str, str] | None = None, progress: bool = True,
                 on_round: Callable[[RoundReport], None] | None = None, **options: Any) -> RunResult:
    """Label ``project``'s pool with ``learner`` (default: nearest class mean in an encoder's space)."""
    run = LabelingRun(project, learner, oracle=oracle, options=RunOptions(**options), encoder=encoder, gold=gold,
                      progress=progress, on_round=on_round)
    return run.run()


def evaluate_project(project: Project, learner: TaskLearner | None = None, *, encoder: str | None = None,
                     gold: dict[str, str] | None = None, progress: bool = True, **options: Any) -> dict[str, Any]:
    """The scorecard of ``project``'s labels as they stand, saved as ``scorecard.json`` in the project.

    Label quality (gold, audits, held-out human labels, calibration), confusion, label
    issues and the downstream classifier; generation is a part of runs, so its similarity
    figures come from the rounds (``metalabel report``).
    """
    run = LabelingRun(project, learner, oracle=None, options=RunOptions(**{"generate": False, **options}),
                      encoder=encoder, gold=gold, progress=progress)
    scorecard = run.scorecard()
    path = project.folder / "scorecard.json"
    staging = path.with_suffix(".partial")
    staging.write_text(json.dumps(scorecard, indent=2, default=float))
    staging.replace(path)
    project.store.add_artifact("scorecard", path, meta={"labels": project.store.summary()["labeled_items"]})
    return scorecard
