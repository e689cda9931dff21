"""An audited run resumed with other options: the audit's certificate competes with the final round only where
it certifies what the resumed run asks for (real kanji images, 5 classes x 40)."""

from __future__ import annotations

import pytest

from helpers import kanji_project
from metalabel.label.oracle import SimulatedOracle
from metalabel.pipeline import LabelingRun, RunOptions
from metalabel.store import LabelSource

OPTIONS = dict(budget=60, per_round=15, reference_share=0.6, audit=True, generate=False, project_meta_steps=0,
               seed=3)  # a seed where the audit's certificate beats the final round's (tests/test_audit_both.py)


def run_to_the_end(project, gold, *, target, on_round=None):
    run = LabelingRun(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold),
                      options=RunOptions(target_precision=target, **OPTIONS), encoder="pixels", gold=gold,
                      progress=False, on_round=on_round)
    with project.writer_lock():
        return run.run()


def test_a_run_resumed_at_a_higher_target_never_keeps_the_audits_labels_certified_at_the_lower_one(cache, tmp_path):
    def stop_after_the_audit(report):
        if report.questions and report.delta < 0.05:  # the audit round, its certificate made at delta / 2
            raise KeyboardInterrupt

    project, gold = kanji_project(tmp_path / "p", samples_per_class=40)
    with project:
        with pytest.raises(KeyboardInterrupt):
            run_to_the_end(project, gold, target=0.8, on_round=stop_after_the_audit)
        audit = project.store.rounds()[-1]
        assert audit.metrics["certified_precision"] == 0.8 and audit.metrics["model_labels"] > 0
        resumed = run_to_the_end(project, gold, target=0.9)
        assert [r.questions for r in resumed.rounds] == [0]  # only the final round was left
        # every label the export writes is certified at the target this run asked for
        final = resumed.rounds[-1]
        assert final.certified_precision is None or final.certified_precision >= 0.9
        exported = [label for label in project.store.active_labels() if LabelSource(label.source) is LabelSource.MODEL]
        assert len(exported) == final.model_labels
        assert all(label.certified_precision >= 0.9 for label in exported)
