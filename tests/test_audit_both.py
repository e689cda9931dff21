"""``--audit`` then a final round, on real kanji images: the audit's certificate and the final round's are each
made at delta / 2 and the larger is kept; the audit's region draws never count as uniform draws in the final
certificate; a run stopped between the audit and the final round ends as an uninterrupted one."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from helpers import kanji_project as small_kanji_project
from metalabel.errors import BadInputError
from metalabel.label.oracle import SimulatedOracle
from metalabel.pipeline import LabelingRun, RunOptions
from metalabel.store import LabelSource

kanji_project = functools.partial(small_kanji_project, samples_per_class=40)
OPTIONS = dict(budget=60, per_round=15, target_precision=0.8, reference_share=0.6, audit=True, generate=False,
               project_meta_steps=0)
FINAL_WINS, AUDIT_WINS = 15, 9
"""Seeds of this pool where the final round's certificate is the larger (122 labels against the audit's 84),
and where the audit's is (97 against 81). (0 and 6 were, until the graph's principal axes became exact ones.)"""


class WatchedRun(LabelingRun):
    """The real loop; it also keeps what each acceptance step was given and decided."""

    def _accept(self, round_id, fit, labels, raw, probs, model_hash, **options):
        judged = super()._accept(round_id, fit, labels, raw, probs, model_hash, **options)
        self.accepted = [*getattr(self, "accepted", []), (round_id, fit, judged)]
        return judged


class StoppedInTheFinalRound(WatchedRun):
    """Stopped (as by Ctrl-C) in the final round once its model is fitted, before it certifies or writes."""

    def _accept(self, round_id, fit, labels, raw, probs, model_hash, *, rival=None, **options):
        if rival is not None:
            raise KeyboardInterrupt
        return super()._accept(round_id, fit, labels, raw, probs, model_hash, rival=rival, **options)


def audited_run(project, gold, *, seed, run_class=WatchedRun, on_round=None):
    run = run_class(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold),
                    options=RunOptions(seed=seed, **OPTIONS), encoder="pixels", gold=gold, progress=False,
                    on_round=on_round)
    with project.writer_lock():
        return run, run.run()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted audited run per seed, its project left open."""
    folder = tmp_path_factory.mktemp("audit-both")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(folder / "cache"))
        done = {}
        for seed in (FINAL_WINS, AUDIT_WINS):
            project, gold = kanji_project(folder / f"seed-{seed}")
            done[seed] = (*audited_run(project, gold, seed=seed), project)
        yield done
        for _, _, project in done.values():
            project.close()


def model_labels(store):
    return [label for label in store.active_labels() if LabelSource(label.source) is LabelSource.MODEL]


@pytest.mark.parametrize("seed, kept", [(FINAL_WINS, "final"), (AUDIT_WINS, "audit")])
def test_both_certificates_are_made_at_half_delta_and_the_larger_is_exported(runs, seed, kept):
    run, result, project = runs[seed]
    audit, last = result.rounds[-2], result.rounds[-1]
    audited = [judged for round_id, _, judged in run.accepted if round_id == audit.round_id][-1]  # on its answers
    final = run.accepted[-1][2]
    assert result.stopped_because == "budget spent" and last.questions == 0 and audit.questions == 15
    assert audited.certificate.delta == final.certificate.delta == 0.025 == audit.delta == last.delta
    assert final.certificate.accepted != audited.certificate.accepted  # each seed is chosen so that one is larger
    winner, loser_round = (audited, last.round_id) if kept == "audit" else (final, audit.round_id)
    assert winner.certificate.accepted == max(final.certificate.accepted, audited.certificate.accepted)
    assert final.kept_audit == (kept == "audit")
    # what the export writes is the winner's set, item for item and class for class, and nothing of the other's
    exported = model_labels(project.store)
    assert len(exported) == last.model_labels == winner.certificate.accepted > 0
    positions = np.array([run.index.position_of_item[label.item_id] for label in exported])
    assert set(positions.tolist()) == set(winner.candidates[winner.certificate.mask].tolist())
    assert {label.round_id for label in exported} == {audit.round_id if kept == "audit" else last.round_id}
    assert not [label for label in exported if label.round_id == loser_round]
    if kept == "audit":  # the final round wrote nothing: no label of its round exists, active or retracted
        assert not [label for label in project.store.retracted_labels() if label.round_id == last.round_id]
    # the round log says which was kept and why; the project's status and the figures agree with the export
    (verdict,) = [line for line in last.feedback if line.startswith("final round against the audit")]
    assert ("the audit's labels are kept" if kept == "audit" else "this round's labels replace") in verdict
    assert project.status()["certified"]["model_labels"] == len(exported)
    assert last.gold is not None and last.gold.achieved_precision >= 0.8


def test_the_audit_s_draws_count_only_inside_their_region_and_every_draw_is_scored_out_of_fold(runs):
    run, _, project = runs[FINAL_WINS]
    position = run.index.position_of_item
    closed = project.store.answered_questions(strategy="reference") + project.store.dismissed_questions(
        strategy="reference")
    region_of = {position[q.item_id]: q.reference_region for q in closed if q.reference_region is not None}
    uniform = {position[q.item_id] for q in closed if q.reference_region is None}
    _, fit, final = run.accepted[-1]
    assert region_of and uniform and set(final.reference.positions.tolist()) == set(region_of) | uniform
    # each draw keeps where it was drawn from: the audit's as its region (counted only inside it), never as uniform
    drawn_from = dict(zip(final.reference.positions.tolist(), final.reference.region.tolist()))
    assert all(drawn_from[p] == region for p, region in region_of.items())
    assert all(drawn_from[p] == -1 for p in uniform)
    # and the certificate's population and design are the region's: the design names exactly the audit's draws
    design = run.acceptance._region_design(final.candidates, final.reference)
    assert design is not None and set(final.reference.positions[design.drawn_from >= 0].tolist()) == set(region_of)
    # every reference item is scored by the fold model that did not learn its answer (held out, calibrated)
    held_out = {int(p): row for p, row in zip(fit.calibration.positions, fit.calibration.probs)}
    assert set(region_of) | uniform <= set(held_out)
    for p, confidence, predicted in zip(final.reference.positions, final.reference.confidence,
                                        final.reference.predicted):
        assert confidence == pytest.approx(held_out[int(p)].max()) and predicted == held_out[int(p)].argmax()


def labels_and_certificate(project):
    labels = sorted((label.item_id, label.class_name, label.source, round(label.calibrated_confidence or 0, 9))
                    for label in project.store.active_labels())
    last = [r for r in project.store.rounds() if r.status == "finished"][-1]
    metrics = {key: last.metrics[key] for key in ("certificate", "model_labels", "coverage", "delta", "threshold",
                                                  "reference_answers")}
    return labels, metrics


@pytest.mark.parametrize("where", ["between the rounds", "in the final round"])
def test_a_run_stopped_after_the_audit_ends_as_an_uninterrupted_one(runs, cache, tmp_path, where):
    def stop_after_the_audit(report):
        if report.questions and report.delta < 0.05:  # the audit round, its certificate made at delta / 2
            raise KeyboardInterrupt

    project, gold = kanji_project(tmp_path / "p")
    with project:
        with pytest.raises(KeyboardInterrupt):
            if where == "between the rounds":
                audited_run(project, gold, seed=FINAL_WINS, on_round=stop_after_the_audit)
            else:
                audited_run(project, gold, seed=FINAL_WINS, run_class=StoppedInTheFinalRound)
        statuses = [r.status for r in project.store.rounds()]
        assert statuses == ["finished"] * 4 + ([] if where == "between the rounds" else ["failed"])
        _, resumed = audited_run(project, gold, seed=FINAL_WINS)
        assert [r.questions for r in resumed.rounds] == [0]  # nothing asked again: only the final round is left
        assert labels_and_certificate(project) == labels_and_certificate(runs[FINAL_WINS][2])


def test_an_audit_the_certificate_cannot_use_is_refused_before_anything_runs(runs):
    with pytest.raises(BadInputError, match="the audit needs the binomial certificate") as error:
        RunOptions(audit=True, certify="ppi")
    assert "--certify binomial" in str(error.value)
    with pytest.raises(BadInputError, match="audit must be True or False"):
        RunOptions(audit="yes")
    _, _, project = runs[AUDIT_WINS]
    before = project.store.rounds()
    with pytest.raises(BadInputError, match="binomial"):
        project.run(oracle=SimulatedOracle({}), encoder="pixels", progress=False, certify="ppi",
                    **{**OPTIONS, "budget": 90})
    assert project.store.rounds() == before
