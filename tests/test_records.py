"""A round's metrics and the scorecard are typed records that read back what the store holds, or fail loudly."""

from __future__ import annotations

import copy
import json

import pytest

from metalabel.errors import StoreError
from metalabel.evaluate.records import (
    EarlyRound,
    GenerationRecord,
    GeneratorOutcome,
    GoldMetrics,
    RoundCertificate,
    RoundReport,
    Scorecard,
    recorded_before_certification,
    recorded_generation,
)

# a finished round's metrics exactly as the store holds them for projects made before the records (asdict of the
# loop's RoundReport then): the keys on disk must keep reading
STORED_ROUND = {
    "round_id": 3, "human_labels": 40, "model_labels": 120, "coverage": 0.4, "certified_precision": 0.951,
    "estimated_precision": 0.975, "delta": 0.05, "threshold": 0.93, "reference_answers": 30, "reference_needed": 0,
    "retracted": 2, "temperature": 1.3, "calibration_ece": 0.04, "questions": 10, "reference_questions": 4,
    "answered_total": 30, "seconds": 1.5, "model": "encoder space + prototypes", "held_out_accuracy": 0.9,
    "disagreements": 0, "gold": {"pool_accuracy": 0.91, "achieved_precision": 0.97, "label_accuracy": 0.93},
    "certificate": "certified at 0.93", "feedback": ["kept the VAE"],
    "scorecard": {
        "label_quality": {
            "coverage": 0.4, "certified_precision": 0.951, "delta": 0.05, "estimated_precision": 0.975,
            "reference_in_accepted": {"accuracy": 0.95, "low": 0.76, "high": 0.99, "count": 20},
            "gold": None, "held_out": {"accuracy": 0.9, "low": 0.77, "high": 0.96, "count": 40}, "ece": 0.04,
            "reliability": {"edges": [0.0, 0.5, 1.0], "confidence": [None, 0.8], "accuracy": [None, 0.9],
                            "count": [0.0, 40.0]}},
        "confusion": {"against": "held-out human labels", "classes": ["a", "b"], "matrix": [[19, 1], [3, 17]],
                      "per_class_accuracy": [0.95, 0.85]},
        "label_issues": [{"item_id": 7, "uri": "x/7.png", "source": "imported", "given": "a", "suggested": "b",
                          "self_confidence": 0.1}],
        "similarity": {"vae": {"mmd": 0.01, "frechet": 4.2, "precision": 0.9, "recall": 0.6, "real": 40,
                               "generated": 80}},
        "downstream": {"real_only": 0.88, "with_generated": 0.9, "gain": 0.02, "tstr": 0.7, "test_size": 40,
                       "generated": 80, "test": "held-out human labels (5-fold)"},
        "generators": {"vae": {"kept": True, "count": 80, "version": "1", "evidence": "held-out accuracy up"}},
        "feedback": ["kept the VAE"]},
    "generation": {"judge": "held-out",
                   "policy": {"modality": "embedding", "no_flip_classes": [],
                              "operations": [{"name": "gaussian_noise", "probability": 0.5, "magnitude": 0.5}]},
                   "generators": {"hallucinator": {"kept": False, "count": 10, "version": "ab12",
                                                   "evidence": "held-out 80.0% vs 81.0% without it"}}},
    "judged": {"encoder space": 0.88, "project meta-learned": None},
    "generators_earned": False,
}


def test_a_stored_round_reads_back_as_a_record_and_writes_the_same_json() -> None:
    report = RoundReport.from_json(STORED_ROUND, "round 3's metrics")
    assert report.gold == GoldMetrics(pool_accuracy=0.91, label_accuracy=0.93, achieved_precision=0.97)
    assert report.scorecard.label_issues[0].suggested == "b" and report.scorecard.generators["vae"].kept
    assert report.scorecard.label_quality.reference_in_accepted is not None
    assert report.scorecard.label_quality.reference_in_accepted.count == 20
    # rounds now keep the image augmentation policy too; an older round's reads as none
    assert report.generation is not None and report.generation.image_policy is None
    assert json.loads(json.dumps(report.to_json())) == {
        **STORED_ROUND, "generation": {**STORED_ROUND["generation"], "image_policy": None}}
    certificate = RoundCertificate.from_json(STORED_ROUND, "round 3's metrics")
    assert (certificate.certified_precision, certificate.threshold, certificate.retracted) == (0.951, 0.93, 2)
    # a round recorded before the judge kept each learner's score reads back with none
    older = RoundReport.from_json({key: value for key, value in STORED_ROUND.items()
                                   if key not in ("judged", "generators_earned")}, "round 3's metrics")
    assert (older.judged, older.generators_earned) == ({}, None)
    assert report.judged == {"encoder space": 0.88, "project meta-learned": None}
    assert report.generators_earned is False


@pytest.mark.parametrize("path", [("coverage",), ("gold", "label_accuracy"), ("scorecard", "label_quality", "ece"),
                                  ("generation", "judge"), ("generation", "generators", "hallucinator", "kept"),
                                  ("scorecard", "downstream", "real_only"), ("scorecard", "label_issues", 0, "uri")])
def test_a_missing_or_misspelled_field_fails_loudly_naming_it(path: tuple) -> None:
    for misspell in (False, True):
        damaged = copy.deepcopy(STORED_ROUND)
        holder = damaged
        for key in path[:-1]:
            holder = holder[key]
        value = holder.pop(path[-1])
        if misspell:
            holder[f"{path[-1]}s"] = value  # a renamed field is not read as if it were absent
        with pytest.raises(StoreError, match=f"lacks '{path[-1]}'"):
            RoundReport.from_json(damaged, "round 3's metrics")


def test_a_certificate_needs_every_one_of_its_fields() -> None:
    recorded = {key: STORED_ROUND[key] for key in ("certified_precision", "estimated_precision", "delta", "threshold",
                                                   "coverage", "model_labels", "reference_answers",
                                                   "reference_needed", "retracted", "certificate")}
    assert RoundCertificate.from_json(recorded, "round 3").to_json() == recorded
    del recorded["reference_needed"]
    with pytest.raises(StoreError, match="round 3 lacks 'reference_needed'"):
        RoundCertificate.from_json(recorded, "round 3")
    with pytest.raises(StoreError, match="not an object"):
        Scorecard.from_json([1, 2], "scorecard.json")


def test_no_gold_labels_is_stored_as_before_and_older_gold_without_achieved_precision_reads() -> None:
    without_gold = {**STORED_ROUND, "gold": {}}
    report = RoundReport.from_json(without_gold, "round 3")
    assert report.gold is None and report.to_json()["gold"] == {}
    older = {"pool_accuracy": 0.9, "label_accuracy": 0.92}  # no model label had a gold label that round
    assert GoldMetrics.from_json(older, "gold").achieved_precision is None


def test_a_round_from_before_certified_acceptance_reads_what_it_recorded() -> None:
    early_metrics = {"round_id": 1, "human_labels": 20, "model_labels": 50, "coverage": 0.3,
                     "estimated_precision": 0.96, "precision_ci": [0.9, 0.98], "temperature": 1.0,
                     "calibration_ece": None, "questions": 5, "answered_total": 5, "seconds": 1.0, "disagreements": 0,
                     "gold": {}}
    assert recorded_before_certification(early_metrics)
    assert not recorded_before_certification(STORED_ROUND)
    early = EarlyRound.from_json(early_metrics, "round 1")
    assert (early.human_labels, early.model_labels, early.coverage, early.model, early.feedback) == (20, 50, 0.3, "",
                                                                                                       ())
    with pytest.raises(StoreError, match="lacks 'coverage'"):
        EarlyRound.from_json({k: v for k, v in early_metrics.items() if k != "coverage"}, "round 1")


def test_what_the_generators_did_is_a_typed_record_and_none_ran_is_stored_as_before() -> None:
    report = RoundReport.from_json(STORED_ROUND, "round 3's metrics")
    assert report.generation == GenerationRecord(
        judge="held-out", policy=STORED_ROUND["generation"]["policy"], image_policy=None,
        generators={"hallucinator": GeneratorOutcome(False, 10, "ab12", "held-out 80.0% vs 81.0% without it")})
    nothing_ran = RoundReport.from_json({**STORED_ROUND, "generation": {}}, "round 3")
    assert nothing_ran.generation is None and nothing_ran.to_json()["generation"] == {}
    assert recorded_generation({**STORED_ROUND, "generation": {}}) is None
    assert recorded_generation({"round_id": 1}) is None  # a round from before generation was kept
    with pytest.raises(StoreError, match="generation, generators is a JSON list"):
        RoundReport.from_json({**STORED_ROUND, "generation": {**STORED_ROUND["generation"], "generators": []}}, "r")


def test_the_next_run_starts_from_the_policies_an_old_round_recorded_and_from_the_image_policy_now_kept() -> None:
    from metalabel.generate.augment import AugmentationPolicy, Operation
    from metalabel.generate.rounds import resume_generator

    old = recorded_generation(STORED_ROUND, "round 3's metrics")
    assert old is not None
    generator = resume_generator(old.policy, old.image_policy, learn=True, gan=False, generated_weight=0.5)
    assert generator.policy == AugmentationPolicy("embedding", (Operation("gaussian_noise", 0.5, 0.5),))
    assert generator.image_policy is None
    image_policy = AugmentationPolicy("image", (Operation("rotate", 0.5, 0.3),))
    stored = GenerationRecord("held-out", None, {}, image_policy.to_dict()).to_json()
    new = recorded_generation({"generation": json.loads(json.dumps(stored))})
    assert new is not None
    assert resume_generator(new.policy, new.image_policy, learn=True, gan=False,
                            generated_weight=0.5).image_policy == image_policy
