"""A core install (no optional extras) labels a project: cleanlab is optional, not needed by every round."""

from __future__ import annotations

import sys

import pytest

import metalabel as ml
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.label.oracle import SimulatedOracle
from metalabel.project import Project


def test_a_calibrated_round_and_its_scorecard_need_no_cleanlab(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    for module in [name for name in sys.modules if name == "cleanlab" or name.startswith("cleanlab.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # `import cleanlab` now fails, as on a core install
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    pool = ml.datasets.load("kanji", split="evaluation", max_classes=4, samples_per_class=16, progress=False)
    gold = gold_labels(pool)
    with Project.create(tmp_path / "p", pool=pool, labels=seed_labels_from_pool(pool, per_class=3, seed=0)) as project:
        result = project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=4, per_round=4, progress=False,
                             project_meta_steps=0, generate=False)
    assert result.rounds
    card = result.rounds[0].scorecard
    assert card.label_quality.held_out is not None  # calibrated: out-of-fold probabilities existed
    assert isinstance(card.label_issues, tuple)  # searched by the built-in filter
