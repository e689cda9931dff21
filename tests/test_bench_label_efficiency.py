"""bench/label_efficiency.py end to end on a tiny pool: every method leaves a row with sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
le = pytest.importorskip("label_efficiency")

BASELINES = ("supervised", "label_spreading", "self_training")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    """``--quick`` on 200 digits rows: 1 seed, k=1, budgets 0 and 10, one round of 10 questions."""
    out = tmp_path_factory.mktemp("label-efficiency")
    done = subprocess.run([sys.executable, str(BENCH / "label_efficiency.py"), "--quick", "--datasets", "digits",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]  # what a person reads stays clean
    return json.loads((out / "label_efficiency.json").read_text()), (out / "label_efficiency.md").read_text()


def test_every_method_has_every_cell_with_sane_numbers(quick_run):
    results, _ = quick_run
    part = results["parts"]["digits@columns"]
    classes = part["classes"]
    assert part["pool"] == 200 and classes == 10 and part["budgets"] == [0, 10]
    run = part["runs"]["seed=0,k=1,strategy=auto"]
    assert "error" not in run, run.get("error")
    curve = part["baselines"]["seed=0,k=1"]
    for budget in (0, 10):
        cell = curve[str(budget)]
        assert cell["human_labels"] == classes + budget  # k*C seeds + B answers
        for method in BASELINES:
            metrics = cell[method]
            for field in ("label_accuracy", "pool_accuracy", "test_accuracy", "coverage_at_0.95_confidence"):
                assert 0 <= metrics[field] <= 1, (budget, method, field)
            assert metrics["label_accuracy"] >= metrics["pool_accuracy"] - 1e-9  # human labels only fix errors
            assert metrics["seconds"] >= 0
        ours = run["cells"][str(budget)]
        assert 0 <= ours["label_accuracy"] <= 1 and 0 <= ours["test_accuracy"] <= 1
        # the round's model learned from the seeds and `budget` answers; re-asked seeds count once
        assert classes <= ours["human_labels"] <= classes + budget
        assert ours["seconds"] > 0
    assert run["cells"]["10"]["seconds"] >= run["cells"]["0"]["seconds"]
    humans = [row["human_labels"] for row in run["trajectory"]]
    assert run["labels_to_90"] is None or run["labels_to_90"] in humans
    assert run["humans_scanned"] == max(humans)


def test_the_table_has_a_row_for_every_method_and_budget(quick_run):
    results, table = quick_run
    rows = [line for line in table.splitlines() if line.startswith("| 1 |")]
    methods = ["metalabel (active)", *(le.BASELINES[m] for m in BASELINES)]
    for budget in (0, 10):
        for method in methods:
            matching = [r for r in rows if r.startswith(f"| 1 | {budget} |") and method in r]
            assert len(matching) == 1, (budget, method)
            cells = [c.strip() for c in matching[0].strip("|").split("|")]
            assert len(cells) == 14 and cells[3] != "–" and cells[12] != "–"  # label acc and seconds


def test_humans_to_goal_reads_the_first_count_that_reaches_it():
    assert le.labels_to_goal([(10, 0.5), (20, 0.91), (30, 0.95)]) == 20
    assert le.labels_to_goal([(10, 0.5), (20, None)]) is None


def test_setfit_without_the_package_says_so_in_its_row(monkeypatch):
    monkeypatch.setitem(sys.modules, "setfit", None)  # as if not installed: importing it raises ImportError
    assert le.run_setfit(None, None, [], seed=0, args=None) == le.SETFIT_MISSING
    cell = {"human_labels": 20, "setfit": {"error": le.SETFIT_MISSING}}
    part = {"dataset": "20newsgroups", "features": "minilm", "budgets": [0], "runs": {},
            "baselines": {"seed=0,k=1": {"0": cell}}}
    row = next(r for r in le.collect({"20newsgroups@minilm": part}) if r["method"] == le.BASELINES["setfit"])
    assert row["seeds"] == 0 and row["note"] == le.SETFIT_MISSING


def test_limits_apply_to_every_data_set_or_to_the_one_named():
    assert le.limit_for(["200"], "kanji") == 200
    assert le.limit_for(["fashion-mnist=10000", "20newsgroups=3000"], "20newsgroups") == 3000
    assert le.limit_for(["fashion-mnist=10000"], "digits") is None
    assert le.limit_for(None, "digits") is None
