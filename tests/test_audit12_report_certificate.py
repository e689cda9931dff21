"""audit12: the report states the certificate that admitted the model labels it counts.

A round that accepted labels and was then stopped while it asked (the page's stop button, Ctrl-C, SIGTERM) ends
failed with its answers and its labels kept, and its certificate on record: ``status`` and every export name it.
``metalabel report`` read only finished rounds, so its verdict stated the round before's certificate beside the
stopped round's labels. Found on a real run (kanji, 200 items, target 0.8: round 3 accepted 161 labels, certified
>= 80%, and was stopped at its questions; the report said "161 by the model. Nothing certified yet"). Run at a lower
target after a higher one, the same path states a bound the labels never had. Fixed: the report reads that round's
certificate (``ReportData.ended_early``) and its verdict states it.
"""

from __future__ import annotations

import functools

from helpers import kanji_project as small_kanji_project
from metalabel.label.oracle import OracleStopped, SimulatedOracle
from metalabel.report.collect import collect
from metalabel.report.html import verdict

kanji_project = functools.partial(small_kanji_project, samples_per_class=40)
OPTIONS = dict(encoder="pixels", progress=False, generate=False, project_meta_steps=0, budget=45, per_round=15,
               reference_share=0.6, seed=0, target_precision=0.8)


class StopsAtTheThirdRound(SimulatedOracle):
    """Answers two rounds' questions, then the person presses stop."""

    def __init__(self, gold):
        super().__init__(gold)
        self.calls = 0

    def answer(self, questions):
        self.calls += 1
        if self.calls == 3:
            raise OracleStopped([])
        return super().answer(questions)


def test_the_report_names_the_certificate_of_a_round_stopped_while_it_asked(cache, tmp_path):
    project, gold = kanji_project(tmp_path / "p")
    with project:
        result = project.run(oracle=StopsAtTheThirdRound(gold), gold=gold, **OPTIONS)
        assert result.stopped_because.startswith("stopped by the oracle")
        certified = project.status()["certified"]
        model = [label for label in project.store.active_labels() if label.source == "model"]
        assert model and {label.round_id for label in model} == {certified["round"]}, "sized so round 3 accepts"
        said = verdict(collect(project))
    assert certified["summary"] in said
    assert "Nothing certified" not in said
