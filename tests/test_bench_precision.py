"""Smoke test of bench/precision_guarantee.py's helpers (the oracle coverage and the side rules), on tiny arrays."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
pg = pytest.importorskip("precision_guarantee")


def test_oracle_count_is_the_largest_prefix_that_meets_the_target():
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.90])
    correct = np.array([True, True, False, True, True, False])
    # prefixes: 1/1, 2/2, 2/3, 3/4, 4/5, 4/6
    assert pg.oracle_count(confidence, correct, 0.8) == 5
    assert pg.oracle_count(confidence, correct, 0.75) == 5
    assert pg.oracle_count(confidence, correct, 0.99) == 2
    assert pg.oracle_count(confidence, np.zeros(6, bool), 0.5) == 0


def test_oracle_count_does_not_split_ties():
    confidence = np.array([0.9, 0.8, 0.8])
    correct = np.array([True, True, False])
    # the prefix of two (precision 1) would cut through the tie at 0.8: only 1 or all 3 are thresholds
    assert pg.oracle_count(confidence, correct, 0.9) == 1


def test_rule_metrics_counts_an_empty_set_as_meeting_the_target():
    metrics = pg.rule_metrics(np.zeros(4, bool), np.ones(4, bool), 0.95)
    assert metrics == {"accepted": 0, "coverage": 0.0, "precision": None, "meets": True}
    metrics = pg.rule_metrics(np.array([True, True, False, False]), np.array([True, False, True, True]), 0.95)
    assert metrics["precision"] == 0.5 and not metrics["meets"] and metrics["coverage"] == 0.5


def test_side_rules_read_the_same_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(3, 0.3), size=200)
    truth = probs.argmax(1).copy()
    truth[:20] = (truth[:20] + 1) % 3
    rules = pg.side_rules(probs, truth, 0.9)
    top = probs.max(1) >= 0.9
    assert rules["top_prob"]["accepted"] == int(top.sum())
    assert 0 < rules["old_rule"]["accepted"] <= 200


def test_summarize_reports_shares_over_runs():
    def run(precision, accepted, oracle):
        rule = {"accepted": accepted, "coverage": accepted / 100, "precision": precision,
                "meets": precision is None or precision >= 0.95}
        return {"certified": {**rule, "reference_used": 10, "reference_needed": None if accepted else 40},
                "old_rule": rule, "top_prob": rule, "oracle_coverage": oracle, "reference_answers": 50,
                "answered": 100, "pool_accuracy": 0.9, "seconds": 1.0}

    cell = pg.summarize([run(0.97, 50, 0.5), run(0.90, 60, 0.5), run(None, 0, 0.0), {"error": "x"}], 0.95)
    assert cell["runs"] == 3 and cell["errors"] == 1
    assert cell["certified"]["meets"] == pytest.approx(2 / 3)
    assert cell["certified"]["nothing"] == pytest.approx(1 / 3)
    assert cell["certified"]["of_oracle"] == pytest.approx((1.0 + 1.2) / 2)  # the run with no oracle set is left out
    assert cell["certified"]["min_precision"] == 0.90
    assert cell["reference_needed"] == [40]
