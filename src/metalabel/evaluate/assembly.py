"""The scorecard of a project's labels, assembled from what a round (or ``metalabel evaluate``) has at hand:
the active labels as the round leaves them (read once), its model's calibration and embeddings, its
certificate and reference evidence, what its generators made, and gold labels where the user has them.

The sections themselves are ``metalabel.evaluate.scorecard``'s; this module gathers their arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from metalabel.data.dataset import UNLABELED
from metalabel.data.generated import Expander
from metalabel.evaluate import scorecard as card
from metalabel.evaluate.records import GeneratorOutcome, GoldMetrics, LabelQuality, RoundCertificate, Scorecard
from metalabel.label.acceptance import CertifiedFigures, ReferenceEvidence
from metalabel.label.certify import Certificate
from metalabel.label.fitting import Calibration
from metalabel.label.positions import PoolIndex
from metalabel.store import CERTIFICATE_METRIC, Label, LabelSource, ProjectStore


@dataclass(frozen=True, eq=False)
class ScoredLabels:
    """The active labels of pool items, with their pool positions and class indices: what is judged."""

    labels: tuple[Label, ...]
    positions: np.ndarray  # [L]
    classes: np.ndarray  # [L]
    trusted: np.ndarray  # [L] a person's word (human or seed label)

    @classmethod
    def of(cls, active: Iterable[Label], index: PoolIndex, class_index: Mapping[str, int]) -> ScoredLabels:
        labels = tuple(label for label in active if label.item_id in index.position_of_item)
        return cls(labels, np.array([index.position_of_item[label.item_id] for label in labels], dtype=np.int64),
                   np.array([class_index[label.class_name] for label in labels], dtype=np.int64),
                   np.array([LabelSource(label.source).trusted for label in labels], dtype=bool))


@dataclass(frozen=True, eq=False)
class GeneratedData:
    """What a round's generators made, for the similarity, downstream and generator sections."""

    expand: Expander | None = None  # the kept generators, run again on each downstream training fold
    features: Mapping[str, np.ndarray] = field(default_factory=dict)  # generator -> its rows in the embedding space
    outcomes: Mapping[str, GeneratorOutcome] = field(default_factory=dict)


def gold_classes(gold: Mapping[str, str] | None, uris: Sequence[str], classes: Sequence[str]) -> np.ndarray | None:
    """The true class of every pool item (-1: unknown), where the user gave gold labels."""
    if not gold:
        return None
    class_index = {name: c for c, name in enumerate(classes)}
    return np.array([class_index.get(gold.get(uri, ""), UNLABELED) for uri in uris])


def gold_metrics(truth: np.ndarray | None, probs: np.ndarray, accepted: np.ndarray,
                 labels: ScoredLabels) -> GoldMetrics | None:
    """Against the true labels ``truth`` (``gold_classes``), where the user has them (simulations and benchmarks).

    After a round's retractions the accepted set is every active model label, so
    ``achieved_precision`` is the precision of what the export would write.
    """
    if truth is None:
        return None
    predicted = probs.argmax(1)
    known = truth != UNLABELED
    chosen = accepted[truth[accepted] != UNLABELED]
    current = predicted.copy()
    current[labels.positions] = labels.classes
    return GoldMetrics(
        pool_accuracy=float((predicted[known] == truth[known]).mean()),
        label_accuracy=float((current[known] == truth[known]).mean()),
        achieved_precision=float((predicted[chosen] == truth[chosen]).mean()) if len(chosen) else None)


def label_quality(calibration: Calibration, certified: CertifiedFigures, reference: ReferenceEvidence,
                  labels: ScoredLabels, truth: np.ndarray | None) -> LabelQuality:
    known = truth[labels.positions] >= 0 if truth is not None else np.zeros(len(labels.labels), dtype=bool)
    gold_correct = labels.classes[known] == truth[labels.positions][known] if truth is not None else None
    # the reference items the rule would have accepted: a random sample of the accepted region, checked by a person
    above = (reference.confidence >= certified.thresholds[reference.predicted] if certified.thresholds is not None
             else np.zeros(len(reference.correct), bool))
    return card.label_quality(
        coverage=certified.coverage, estimated_precision=certified.estimate,
        certified_precision=certified.bound, delta=certified.delta,
        reference_in_accepted=reference.correct[above],
        held_out=None if calibration.probs is None or calibration.labels is None
        else (calibration.probs, calibration.labels),
        gold_correct=gold_correct)


def round_scorecard(labels: ScoredLabels, quality: LabelQuality, calibration: Calibration, embeddings: np.ndarray, *,
                    index: PoolIndex, classes: Sequence[str], truth: np.ndarray | None, pseudo_weight: float,
                    generated_weight: float, seed: int, featurize: Callable[[np.ndarray], np.ndarray],
                    generated: GeneratedData, feedback: Sequence[str]) -> Scorecard:
    """Every section from the labels as they stand; ``featurize`` maps the round model's ``embeddings`` to what
    the downstream classifiers and the similarity measures see (a few principal components keep a round quick)."""
    known = truth[labels.positions] >= 0 if truth is not None else np.zeros(len(labels.labels), dtype=bool)
    if truth is not None:
        confusion = card.confusion_section(truth[labels.positions][known], labels.classes[known],
                                           classes=classes, against="gold labels")
    elif calibration.probs is not None and calibration.labels is not None:
        confusion = card.confusion_section(calibration.labels, calibration.probs.argmax(1), classes=classes,
                                           against="held-out human labels")
    else:
        confusion = None
    issues: tuple = ()
    if calibration.probs is not None and calibration.labels is not None and calibration.positions is not None:
        trusted_by_position = {index.position_of_item[label.item_id]: label for label in labels.labels
                               if LabelSource(label.source).trusted}
        rows = [trusted_by_position[p] for p in calibration.positions]
        issues = card.issues_section(calibration.labels, calibration.probs, uris=[r.uri for r in rows],
                                     item_ids=[r.item_id for r in rows], sources=[r.source for r in rows],
                                     classes=classes)
    weights = np.where(labels.trusted, 1.0, pseudo_weight)
    downstream = card.downstream_section(embeddings[labels.positions], labels.classes, weights, labels.trusted,
                                         expand=generated.expand, generated_weight=generated_weight,
                                         seed=seed, featurize=featurize) if len(labels.labels) else None
    similarity = card.similarity_section(featurize(embeddings[labels.positions[labels.trusted]]),
                                         {name: featurize(x) for name, x in generated.features.items()}, seed=seed)
    return Scorecard(label_quality=quality, confusion=confusion, label_issues=issues, similarity=similarity,
                     downstream=downstream, generators=dict(generated.outcomes), feedback=tuple(feedback))


def recorded_certificate(certificate: Certificate, *, reference_answers: int, retracted: int) -> RoundCertificate:
    """What the round records of its certificate, with the labels it admits."""
    return RoundCertificate(
        certified_precision=certificate.lower_bound, estimated_precision=certificate.estimate,
        delta=certificate.delta, threshold=certificate.threshold if certificate.certified else None,
        coverage=certificate.coverage, model_labels=certificate.accepted, reference_answers=reference_answers,
        reference_needed=certificate.reference_needed, retracted=retracted, certificate=certificate.reason)


def figures_as_recorded(store: ProjectStore, *, coverage: float, delta: float, ways: int) -> CertifiedFigures:
    """The certificate the labels as they stand were admitted by: the last one a round recorded with them."""
    last = next((r for r in reversed(store.rounds())
                 if r.metrics and CERTIFICATE_METRIC in r.metrics and not r.undone), None)
    if last is None:  # no round has certified anything yet
        return CertifiedFigures(None, None, coverage, delta, None)
    recorded = RoundCertificate.from_json(last.metrics, f"round {last.id}'s metrics")
    return CertifiedFigures(recorded.certified_precision, recorded.estimated_precision, coverage, recorded.delta,
                            None if recorded.threshold is None else np.full(ways, recorded.threshold))
