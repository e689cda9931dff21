"""audit12: after a failed round is undone, the project names the certificate that covers its active model labels.

A run at target 0.8 certifies and accepts labels in its last round (3). A run at 0.95 is killed after its round (4)
retracted them all (nothing certifies at 0.95 yet) and before it asked anything; the next run undoes round 4 at its
start (``undo_unasked_rounds``), which makes round 3's labels active again (right: the project is as round 3 left
it, each label still carrying round 3's threshold and bound), and that run is stopped again in its fit, before it
accepts. ``status``, the dataset card of an export and the scorecard's certified figures named round 4's certificate
("nothing certified yet", target 0.95) beside 161 exported model labels of round 3: the undone round's certificate
stayed in its metrics and every reader took the last round that recorded one. Fixed: they pass over a round undone
(``Round.undone``).
"""

from __future__ import annotations

import functools

import pytest

from helpers import kanji_project as small_kanji_project
from metalabel.evaluate.assembly import figures_as_recorded
from metalabel.export import export_project
from metalabel.label.oracle import SimulatedOracle
from metalabel.pipeline import LabelingRun
from metalabel.project import Project

kanji_project = functools.partial(small_kanji_project, samples_per_class=40)
OPTIONS = dict(encoder="pixels", progress=False, generate=False, project_meta_steps=0, budget=30, per_round=15,
               reference_share=0.6, seed=0)


def stop(*args, **kwargs):
    raise KeyboardInterrupt


def test_after_an_undo_the_certificate_named_is_the_one_that_admitted_the_active_labels(cache, tmp_path, monkeypatch):
    project, gold = kanji_project(tmp_path / "p")
    with project:
        first = project.run(oracle=SimulatedOracle(gold), gold=gold, target_precision=0.8, **OPTIONS)
    certifying = first.rounds[-1]
    assert certifying.model_labels > 0, "sized so the run at 0.8 ends with certified labels"
    with Project.open(tmp_path / "p") as project, monkeypatch.context() as patch:
        patch.setattr(LabelingRun, "_scorecard", stop)  # after round 4 accepted (and retracted), before it asks
        with pytest.raises(KeyboardInterrupt):
            project.run(oracle=SimulatedOracle(gold), gold=gold, target_precision=0.95, **OPTIONS)
        assert not [label for label in project.store.active_labels() if label.source == "model"]
        assert project.status()["certified"]["round"] == certifying.round_id + 1  # the killed round's, rightly
    with Project.open(tmp_path / "p") as project, monkeypatch.context() as patch:
        patch.setattr(LabelingRun, "_fit", stop)  # the resumed run undoes round 4, then stops before accepting
        with pytest.raises(KeyboardInterrupt):
            project.run(oracle=SimulatedOracle(gold), gold=gold, target_precision=0.95, **OPTIONS)
        model = [label for label in project.store.active_labels() if label.source == "model"]
        assert len(model) == certifying.model_labels
        assert {label.round_id for label in model} == {certifying.round_id}
        assert {label.certified_precision for label in model} == {certifying.certified_precision}
        certified = project.status()["certified"]
        export_project(project.store, tmp_path / "hf", format="hf")
        figures = figures_as_recorded(project.store, coverage=0.5, delta=0.05, ways=len(project.store.classes()))
    assert (certified["round"], certified["target_precision"], certified["model_labels"]) == (
        certifying.round_id, 0.8, certifying.model_labels)
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert f"last certificate from round {certifying.round_id}\n" in card and "target precision 0.8," in card
    assert "Nothing certified" not in card
    assert figures.bound == certifying.certified_precision
