"""Labeling: calibrate the model's confidence, accept pseudo-labels at a target precision,
refine prototypes with the unlabeled pool, and choose what to ask a person."""

from metalabel.label.accept import AcceptDecision, ClassAcceptance, accept_at_precision, wilson_accuracy
from metalabel.label.active import STRATEGIES, QueryPool, class_balanced, select
from metalabel.label.calibrate import (
    ClassTemperatureScaling,
    OutOfFoldLogits,
    TemperatureScaling,
    cross_validated_logits,
    expected_calibration_error,
    reliability_curve,
)
from metalabel.label.oracle import (
    Answer,
    LabelStudioQueue,
    Oracle,
    OracleStopped,
    Query,
    SimulatedOracle,
    TerminalOracle,
    put_questions,
    record_answers,
)
from metalabel.label.transductive import prototype_logits, refine_prototypes, soft_assignments

__all__ = [
    "STRATEGIES",
    "AcceptDecision",
    "Answer",
    "ClassAcceptance",
    "ClassTemperatureScaling",
    "LabelStudioQueue",
    "Oracle",
    "OracleStopped",
    "OutOfFoldLogits",
    "Query",
    "QueryPool",
    "SimulatedOracle",
    "TemperatureScaling",
    "TerminalOracle",
    "accept_at_precision",
    "wilson_accuracy",
    "class_balanced",
    "cross_validated_logits",
    "expected_calibration_error",
    "prototype_logits",
    "put_questions",
    "record_answers",
    "refine_prototypes",
    "reliability_curve",
    "select",
    "soft_assignments",
]
