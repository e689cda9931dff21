"""The learners a project's rounds choose from (``Candidates``: each with the feature space it reads), kept in
the project: its own meta-learner (meta-trained on the pool's pseudo-tasks, continued on the grown data set),
a checkpoint of every learner, and the ``round-model`` record a model label's ``model_hash`` names.

Everything lands under ``PROJECT/models/``, one folder per learner named by ``learner_hash``; a save
is atomic and recorded after it, so a kill in between leaves a complete folder that the next call
records, and ``remove_unrecorded_checkpoints`` clears what a killed run left half-way.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Collection

import numpy as np
import torch

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import NotEnoughDataError
from metalabel.label.fitting import LabelSnapshot, calibrate
from metalabel.label.graph import PoolGraph
from metalabel.label.round_model import (
    RoundModel,
    default_learner,
    feature_space,
    learner_hash,
    pool_inputs,
    reads_images,
    rival_spaces,
)
from metalabel.meta.functional import TaskLearner
from metalabel.store import ProjectStore

PROJECT_LEARNER = "project meta-learned"
GIVEN_LEARNER = "given"
ENCODER_SPACE = "encoder space"
CHECKPOINT = "checkpoint"
"""Artifact kind: a learner's saved weights (a folder under ``PROJECT/models/``)."""
ROUND_MODEL = "round-model"
"""Artifact kind: what a model label's ``model_hash`` names (learner checkpoint, head, feature space)."""
LEARNER_HASH = re.compile(r"[0-9a-f]{16}")
"""How ``learner_hash`` names the checkpoint folders the loop writes under ``PROJECT/models/``."""


class Candidates:
    """The learners a round's judge chooses from, each with the pool's inputs in the feature space it reads.

    A given ``learner`` reads the main space (``feature_space``); on encoder features the plain space
    competes with it (a library's learner, say: the judge keeps the given one only where it predicts
    held-out labels better; first while none can be held out); the rival spaces' plain learners read
    raw pixels of small images; without a given learner, the project's own meta-learner continues
    where the last run left it. The pool is embedded here, once per space.
    """

    def __init__(self, store: ProjectStore, pool: LabeledDataset, learner: TaskLearner | None, *,
                 encoder: str | None, progress: bool) -> None:
        self.x = pool_inputs(pool, learner, encoder=encoder, progress=progress)
        self.space = feature_space(pool, learner, encoder=encoder)
        self.learners: dict[str, TaskLearner] = {GIVEN_LEARNER: learner} if learner is not None else {}
        if learner is None or not reads_images(learner):
            self.learners[ENCODER_SPACE] = default_learner()
        # every learner reads the main space except the rival spaces' plain learners (raw pixels of small images)
        self.inputs: dict[str, torch.Tensor] = {self.space: self.x}
        self.space_of: dict[str, str] = {}
        for space in rival_spaces(pool, learner, encoder=encoder):
            self.inputs[space] = pool_inputs(pool, None, encoder=space, progress=progress)
            self.learners[f"{space} space"] = default_learner()
            self.space_of[f"{space} space"] = space
        saved = saved_project_learner(store) if learner is None else None
        if saved is not None:  # a resumed or re-opened project continues with the meta-learner it made last
            self.learners[PROJECT_LEARNER] = saved
        self.hashes = {name: learner_hash(model) for name, model in self.learners.items()}
        # by learner hash and space: each embedding's graph, built once
        self.pool_graphs: dict[tuple[str, str], list[PoolGraph]] = {}

    def space_of_learner(self, name: str) -> str:
        """The feature space the named learner reads."""
        return self.space_of.get(name, self.space)

    def variants(self, *, refine_steps: int, seed: int, rule_votes: np.ndarray | None,
                 leave_out: Collection[str] = ()) -> list[tuple[str, RoundModel]]:
        """Every learner's round models (but ``leave_out``'s), one per head, by learner name."""
        return [(name, variant) for name, learner in self.learners.items() if name not in leave_out
                for variant in RoundModel(learner, self.inputs[self.space_of_learner(name)], refine_steps=refine_steps,
                                          seed=seed, graph_holder=self.pool_graphs.setdefault(
                                              (self.hashes[name], self.space_of_learner(name)), []),
                                          rule_votes=rule_votes).variants()]

    def keep(self, store: ProjectStore, name: str, learner: TaskLearner, *, round_id: int | None) -> None:
        """``learner`` is the named candidate from now on, saved in the project under its hash."""
        self.learners[name] = learner
        self.hashes[name] = learner_hash(learner)
        save_checkpoint(store, name, learner, self.hashes[name], round_id=round_id)

    def save(self, store: ProjectStore) -> None:
        """Every candidate in the project, so every model label's model_hash resolves to a checkpoint."""
        for name, learner in self.learners.items():
            save_checkpoint(store, name, learner, self.hashes[name], round_id=None)


def meta_learn_on_project(x: torch.Tensor, labels: LabelSnapshot, *, steps: int, seed: int,
                          init: TaskLearner | None = None) -> TaskLearner | None:
    """A ProtoNet embedding meta-trained on the clusters of the pool's features ``x`` and the accepted labels'
    classes (CACTUs).

    Accepted pseudo-labels join as classes, so a later call (``init`` = the current
    learner) continues on tasks from the grown data set; human labels never do: they
    are the held-out evidence every learner is judged and calibrated on. None when the
    pool is too small to make enough pseudo-classes for episodes.
    """
    from metalabel.meta.train import meta_train
    from metalabel.meta.unsupervised import pseudo_task_dataset

    shots, queries, ways = 1, 5, 10
    features = x.flatten(1).numpy()
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


def continue_meta_learning(current: TaskLearner, x: torch.Tensor, labels: LabelSnapshot, *, steps: int, seed: int,
                           ways: int, folds: int, calibration_seed: int) -> tuple[TaskLearner | None, str | None]:
    """Continue the project's meta-learner ``steps`` on tasks from the grown data set.

    Returns the continued learner where it predicts held-out human labels at least as well
    (else None), and a line saying what was measured (None when nothing was: no held-out
    labels yet, or a pool too small for the tasks).
    """
    def held_out_accuracy(learner: TaskLearner) -> float | None:
        return calibrate(RoundModel(learner, x, seed=calibration_seed), labels, ways=ways, folds=folds,
                         seed=calibration_seed, pool=False).accuracy

    before = held_out_accuracy(current)
    if before is None:
        return None, None  # no held-out human labels yet: no evidence to keep or drop a change by
    continued = meta_learn_on_project(x, labels, steps=steps, init=current, seed=seed)
    if continued is None:
        return None, None
    after = held_out_accuracy(continued)
    assert after is not None
    verdict = "kept" if after >= before else "dropped, the previous one stays"
    message = (f"meta-learner continued {steps} steps on tasks from the grown data set: held-out accuracy "
               f"{before:.1%} -> {after:.1%}, {verdict}")
    return (continued if after >= before else None), message


def saved_project_learner(store: ProjectStore) -> TaskLearner | None:
    """The project meta-learner a previous run kept (the latest complete checkpoint), if any."""
    from metalabel.meta.checkpoint import checkpoint_is_complete, load_learner

    saved = [a for a in store.artifacts(kind=CHECKPOINT) if a.meta.get("learner") == PROJECT_LEARNER]
    complete = [a for a in saved if checkpoint_is_complete(a.path)]
    return load_learner(complete[-1].path) if complete else None


def save_checkpoint(store: ProjectStore, name: str, learner: TaskLearner, model_hash: str, *,
                    round_id: int | None) -> None:
    """Keep a learner in the project, so every model label's model_hash resolves to a checkpoint.

    The save is atomic (a folder is complete or absent) and the artifact row is written
    after it, so a kill in between leaves a complete folder that the next call records.
    """
    from metalabel.files import remove_stale_staging
    from metalabel.meta.checkpoint import checkpoint_is_complete, save_learner

    folder = store.folder / "models" / model_hash
    remove_stale_staging(folder)
    if not checkpoint_is_complete(folder):
        shutil.rmtree(folder, ignore_errors=True)  # left by an older metalabel killed mid-save
        save_learner(learner, folder)
    recorded = {a.path.resolve() for a in store.artifacts(kind=CHECKPOINT)}
    if folder.resolve() not in recorded:
        store.add_artifact(CHECKPOINT, folder, round_id=round_id, meta={"learner": name, "model_hash": model_hash})


def keep_round_model(store: ProjectStore, name: str, checkpoint: str, *, head: str | None, feature_space: str,
                     round_id: int) -> str:
    """The hash a model label names: the learner's checkpoint, the head and the feature space it read.

    Recorded once as a ``round-model`` artifact pointing at the checkpoint folder, so a
    label's ``model_hash`` says which model made it, not only which learner (the identity
    learner is one and the same for pixels, tables and every encoder).
    """
    description = {"learner": name, "checkpoint": checkpoint, "head": head, "feature_space": feature_space}
    model_hash = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]
    if not any(a.meta.get("model_hash") == model_hash for a in store.artifacts(kind=ROUND_MODEL)):
        store.add_artifact(ROUND_MODEL, store.folder / "models" / checkpoint, round_id=round_id,
                           meta={**description, "model_hash": model_hash})
    return model_hash


def remove_unrecorded_checkpoints(store: ProjectStore) -> None:
    """Checkpoint folders a killed run wrote but never recorded (their work is redone).

    Only folders under ``models/`` named by a learner hash, as the loop names them, are touched;
    a folder a person put there under another name is left alone.
    """
    from metalabel.files import STAGING_MARK, remove_stale_staging
    from metalabel.meta.checkpoint import checkpoint_is_complete

    models = store.folder / "models"
    if not models.is_dir():
        return
    recorded = {a.path.resolve() for a in store.artifacts()}
    # a save killed before its first rename left only a staging folder: clean it by its target's name
    targets = {models / (p.name[1:].split(STAGING_MARK)[0] if STAGING_MARK in p.name else p.name)
               for p in models.iterdir() if p.is_dir()}
    for folder in sorted(targets):
        remove_stale_staging(folder)
    for folder in [p for p in models.iterdir() if p.is_dir() and LEARNER_HASH.fullmatch(p.name)]:
        if folder.resolve() not in recorded and (checkpoint_is_complete(folder) or not any(folder.iterdir())):
            shutil.rmtree(folder)
