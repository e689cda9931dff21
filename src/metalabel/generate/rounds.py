"""The generators in a labeling round: resumed from the policies the last finished round kept, run in the round
model's embedding space, their rows used by the round's model only where held-out accuracy says so, and what
they made kept in the project (an ``.npz`` artifact with its rows' provenance in the store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metalabel.data.dataset import LabeledDataset
from metalabel.files import write_atomically
from metalabel.generate.augment import AugmentationPolicy
from metalabel.generate.engine import (
    NO_JUDGE,
    AcceptedRows,
    DataGenerator,
    GenerationStep,
    GeneratorOptions,
    ImageInputs,
)
from metalabel.label.fitting import RETIRE_AFTER, Calibration, LabelSnapshot, calibrate
from metalabel.label.positions import PoolIndex
from metalabel.label.round_model import RoundModel, in_chunks, reads_images
from metalabel.meta.protonet import ProtoNet
from metalabel.store import ProjectStore

GENERATED_FOLDER = "generated"
"""Where a round's generated content is kept, under the project folder: ``round-N.npz``."""
GENERATED_ARTIFACT = "generated"
"""Artifact kind: a round's generated and augmented content (an .npz under ``GENERATED_FOLDER``)."""


def resume_generator(policy: Mapping[str, Any] | None, image_policy: Mapping[str, Any] | None, *, learn: bool,
                     gan: bool, generated_weight: float) -> DataGenerator:
    """The generators (with ``gan``, the feature GAN too), continuing from the augmentation policies the last
    round kept (``AugmentationPolicy.to_dict``'s; None: searched from the start)."""
    return DataGenerator(GeneratorOptions(learn=learn, gan=gan, generated_weight=generated_weight),
                         policy=None if policy is None else AugmentationPolicy.from_dict(policy),
                         image_policy=None if image_policy is None else AugmentationPolicy.from_dict(image_policy))


def generate(generator: DataGenerator, model: RoundModel, labels: LabelSnapshot, pool: LabeledDataset, *,
             encoder: str | None, seed: int) -> GenerationStep | None:
    """Run the generators in the round model's embedding space, from the human-labeled items.

    None when the model has no embedding space (a prototype learner's), or the pool is too small to make
    the pseudo-classes the generators learn and are judged on.
    """
    from metalabel.meta.unsupervised import cluster_pseudo_labels

    learner = model.learner
    if not isinstance(learner, ProtoNet):
        return None
    embeddings = model.embeddings()
    # the pool's own clusters are the many tasks a generator is meta-trained and judged on
    clusters = min(int(np.clip(len(embeddings) // 50, 10, 200)), len(embeddings) // 6)  # ~6+ items each
    if clusters < 2:
        return None
    pseudo = cluster_pseudo_labels(embeddings, clusters=clusters, seed=seed)
    images = None
    items = pool.items
    accepted = labels.pseudo  # the VAE, GAN and network learn from accepted labels; human ones stay the evidence
    if pool.modality == "image" and isinstance(items, np.ndarray) and items.ndim == 3:
        images = ImageInputs(labeled=items[labels.human_positions],
                             featurize=_image_featurizer(learner, pool, encoder=encoder),
                             train_images=items[accepted.positions], train_labels=accepted.classes,
                             train_weights=None, search_policy=reads_images(learner))
    # the Bayesian network models a table's own columns, not an embedding learned from them
    table = pool.modality == "tabular" and isinstance(learner.backbone, torch.nn.Identity)
    return generator.step(embeddings[labels.human_positions], labels.human_classes, pool_x=embeddings,
                          pool_y=pseudo, images=images, accepted=AcceptedRows(accepted.positions, accepted.classes),
                          table=table, seed=seed)


def _image_featurizer(learner: ProtoNet, pool: LabeledDataset, *,
                      encoder: str | None) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images -> the round model's embedding, the way pool items get there."""
    def featurize(images: np.ndarray) -> np.ndarray:
        if reads_images(learner):
            inputs = torch.from_numpy(np.asarray(images)).float().div_(255).unsqueeze(1)
        else:
            from metalabel.data.encoders import default_encoder, get_encoder

            name = encoder or default_encoder(pool.modality)
            inputs = torch.from_numpy(get_encoder(name).encode(np.asarray(images), progress=False))
        with torch.no_grad():
            return in_chunks(learner.embed, inputs).numpy()
    return featurize


@dataclass(frozen=True, eq=False)
class GeneratedUse:
    """The round's model with or without the generated rows, and what decided it."""

    model: RoundModel
    calibration: Calibration
    measured: str | None  # the held-out comparison, for the round log
    earned: bool | None  # whether the rows earned their place; None where nothing judged them


def use_generated(generation: GenerationStep, model: RoundModel, calibration: Calibration, labels: LabelSnapshot, *,
                  ways: int, folds: int, seed: int, generated_weight: float, judged: bool) -> GeneratedUse:
    """The round model trains on the kept generated rows too, unless that lowers held-out accuracy (``judged``;
    without it they are used whatever it says)."""
    if not generation.expanders:  # every generator dropped by its own judge: nothing earned, where one could judge
        return GeneratedUse(model, calibration, None, None if generation.judge == NO_JUDGE or not judged else False)
    grown = model.with_generated(generation.expand, weight=generated_weight)
    grown_calibration = calibrate(grown, labels, ways=ways, folds=folds, seed=seed)
    if calibration.accuracy is None or grown_calibration.accuracy is None:
        return GeneratedUse(grown, grown_calibration, None, None)  # nothing to judge by: the generators' own evidence
    if not judged:
        return GeneratedUse(grown, grown_calibration, None, None)
    comparison = f"held-out accuracy {grown_calibration.accuracy:.1%} with vs {calibration.accuracy:.1%} without"
    if grown_calibration.accuracy > calibration.accuracy:
        return GeneratedUse(grown, grown_calibration, f"the round's model trains on the kept generated data: "
                                                      f"{comparison}", True)
    return GeneratedUse(model, calibration, f"generated data left out of the round's model: {comparison}", False)


def generators_resting(history: Sequence[bool | None]) -> str | None:
    """Why the generators no longer run in this project (None: they do), from its rounds' ``generators_earned``.

    Their rows must earn a place in the round's model (``use_generated``) in one of the last
    ``RETIRE_AFTER`` rounds that judged them; they cost most of a round where they run (the
    hallucinator's training, the policy searches), so the project stops paying for them once they did not
    (a resumed or later run reads the same recorded rounds).
    """
    judged = [earned for earned in history if earned is not None]
    if len(judged) >= RETIRE_AFTER and not any(judged[-RETIRE_AFTER:]):
        return (f"the generators rest in this project from now on: their rows earned no place in the round's model "
                f"in the last {RETIRE_AFTER} rounds that judged them")
    return None


def store_generated(store: ProjectStore, index: PoolIndex, classes: Sequence[str], round_id: int,
                    generation: GenerationStep, human_positions: np.ndarray) -> None:
    """Keep what each generator made this round: content in an .npz artifact, provenance in the store.

    The file is written under a staging name and renamed; its rows and artifact are
    recorded in one transaction after. A kill in between leaves an unrecorded file that
    the next run removes (``remove_unrecorded_generated``), and the round is redone.
    """
    if not generation.batches:
        return
    from metalabel.store import SyntheticRecord, content_hash

    folder = store.folder / GENERATED_FOLDER
    folder.mkdir(exist_ok=True)
    path = folder / f"round-{round_id}.npz"
    arrays: dict[str, Any] = {}
    for batch in generation.batches:
        key = batch.generator.replace(" ", "_")
        arrays[f"{key}.content"], arrays[f"{key}.features"], arrays[f"{key}.y"] = batch.content, batch.x, batch.y
    write_atomically(path, lambda file: np.savez_compressed(file, **arrays))
    with store.batch():
        artifact = store.add_artifact(GENERATED_ARTIFACT, path, round_id=round_id,
                                      meta={"generators": [b.generator for b in generation.batches]})
        for batch in generation.batches:
            key = batch.generator.replace(" ", "_")
            records = [SyntheticRecord(
                uri=f"generated/round-{round_id}/{key}/{row:05d}", content_hash=content_hash(batch.content[row]),
                kind=batch.kind, class_name=classes[int(batch.y[row])], generator=batch.generator,
                generator_version=batch.version, row_in_artifact=row,
                parents=() if batch.parents[row] < 0 else (index.item_id(human_positions[batch.parents[row]]),))
                for row in range(len(batch.y))]
            store.add_synthetic_items(records, round_id=round_id, artifact_id=artifact)
            if not batch.kept:
                store.drop_synthetic_items(round_id=round_id, generator=batch.generator)


def remove_unrecorded_generated(store: ProjectStore) -> None:
    """Generated arrays a killed run wrote but never recorded (``generated/*.npz`` and their staging files)."""
    generated = store.folder / GENERATED_FOLDER
    if not generated.is_dir():
        return
    recorded = {a.path.resolve() for a in store.artifacts()}
    for path in generated.glob("*.npz"):  # staging files (".round-N.partial.npz") included
        if path.resolve() not in recorded:
            path.unlink()
