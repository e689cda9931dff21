"""Each feedback path of a round acts in the right direction on a small case built to need it."""

from __future__ import annotations

import metalabel as ml
from helpers import kanji_project
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.label.learners import PROJECT_LEARNER
from metalabel.label.oracle import SimulatedOracle
from metalabel.pipeline import LabelingRun, RunOptions
from metalabel.project import Project


def test_the_meta_learner_continues_only_when_it_wins_and_is_kept_only_when_better(cache, tmp_path):
    # pseudo-tasks need a pool of a few hundred items (enough k-means clusters for episodes)
    project, gold = kanji_project(tmp_path / "p", per_class=3, max_classes=8, samples_per_class=40)
    with project:
        options = RunOptions(budget=10, per_round=5, max_rounds=3, project_meta_steps=60,
                             meta_continue_steps=30, generate=False)
        run = LabelingRun(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold), options=options,
                          encoder="pixels", progress=False)
        result = run.run()
        won = [report for report in result.rounds if report.model.startswith(PROJECT_LEARNER)]
        lines = [line for report in result.rounds for line in report.feedback if line.startswith("meta-learner")]
        assert len(result.rounds) == 3 and len(lines) == len(won)  # trained further only in the rounds it won

        # where it is trained further, the continuation is kept exactly when held-out accuracy did not drop,
        # and every kept one is saved in the project under its hash
        def saved() -> list:
            return [a for a in project.store.artifacts(kind="checkpoint") if a.meta["learner"] == PROJECT_LEARNER]

        saved_before, feedback = len(saved()), []
        for number in (4, 5):
            run._continue_meta_learning(None, number, run.snapshot(), feedback)
        saved_after = saved()
    assert len(feedback) == 2
    kept = 0
    for line in feedback:
        before, after = (float(v.rstrip("%")) for v in line.split("held-out accuracy ")[1].split(",")[0].split(" -> "))
        kept += "kept" in line
        assert ("kept" in line) == (after >= before)
    assert len(saved_after) == saved_before + kept
    assert all((artifact.path / "config.json").exists() for artifact in saved_after)


def test_a_wrong_seed_label_is_found_asked_again_and_corrected(cache, tmp_path):
    pool = ml.datasets.load("kanji", split="evaluation", max_classes=5, samples_per_class=24)
    gold = gold_labels(pool)
    seeds = seed_labels_from_pool(pool, per_class=6, seed=0)
    flipped = sorted(seeds)[0]
    seeds[flipped] = next(name for name in pool.class_names if name != seeds[flipped])
    with Project.create(tmp_path / "p", pool=pool, labels=seeds) as project:
        result = project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=10, per_round=10, max_rounds=2,
                             progress=False, generate=False, project_meta_steps=0)
        issues = result.rounds[0].scorecard.label_issues
        asked = project.store.answered_questions(strategy="label-issue")
        label = next(label for label in project.store.active_labels() if label.uri == pool.uris[flipped])
    assert issues[0].uri == pool.uris[flipped] and issues[0].given == seeds[flipped]  # the most suspect
    assert pool.uris[flipped] in {question.uri for question in asked}
    assert (label.source, label.class_name) == ("human", gold[pool.uris[flipped]])  # the person fixed it


def test_a_learner_that_keeps_losing_is_retired_and_stays_retired_when_the_run_resumes(cache, tmp_path):
    from metalabel.label.fitting import retired_learners

    # a project meta-learner trained one step is a poor embedding: it loses every judged round to the pixels
    project, gold = kanji_project(tmp_path / "p", per_class=3, max_classes=8, samples_per_class=40)
    with project:
        options = RunOptions(budget=10, per_round=5, max_rounds=3, project_meta_steps=1, generate=False)
        run = LabelingRun(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold), options=options,
                          encoder="pixels", progress=False)
        rounds = run.run().rounds
        scored = [set(report.judged) for report in rounds]
        assert scored[0] == scored[1] == {"encoder space", PROJECT_LEARNER}
        assert scored[2] == {"encoder space"}  # lost rounds 1 and 2: not computed in round 3
        retiring = [line for line in rounds[2].feedback if line.startswith("the judge retires")]
        assert len(retiring) == 1 and PROJECT_LEARNER in retiring[0]
        assert retired_learners([report.judged for report in rounds], keep="encoder space") == {
            PROJECT_LEARNER: "retired in an earlier round"}
        # a later run on the project reads the retirement from the rounds it recorded
        more = LabelingRun(project.store, project.load_pool(), None, oracle=SimulatedOracle(gold),
                           options=RunOptions(budget=5, per_round=5, max_rounds=1, project_meta_steps=1,
                                              generate=False), encoder="pixels", progress=False).run()
        assert set(more.rounds[0].judged) == {"encoder space"}
        assert not any(line.startswith("the judge retires") for line in more.rounds[0].feedback)


def test_generators_rest_once_their_rows_earned_no_place_in_two_judged_rounds():
    from metalabel.generate.rounds import generators_resting

    assert generators_resting([]) is None
    assert generators_resting([False]) is None  # one round is not enough evidence
    assert "rest in this project from now on" in generators_resting([False, None, False])  # unjudged rounds skipped
    assert generators_resting([False, True]) is None and generators_resting([True, False]) is None
    # once resting they record nothing (None), so a resumed or later run keeps them resting
    assert generators_resting([True, False, False, None, None]) is not None


def test_the_round_log_says_whether_generated_rows_earned_their_place_and_rests_them_by_it(cache, tmp_path):
    from metalabel.generate.rounds import generators_resting

    project, gold = kanji_project(tmp_path / "p", per_class=3, max_classes=6, samples_per_class=20)
    with project:
        rounds = project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=15, per_round=5, max_rounds=4,
                             progress=False, project_meta_steps=0).rounds
    judged = [report for report in rounds if report.generators_earned is not None]
    assert judged  # the generators ran and were judged on held-out labels at least once
    for number, report in enumerate(rounds):
        resting = generators_resting([past.generators_earned for past in rounds[:number]])
        log = " | ".join(report.feedback)
        assert (resting is not None) == ("generators rest" in log)
        if resting:
            assert report.generators_earned is None and not report.generation
        elif report.generators_earned is True:
            assert "the round's model trains on the kept generated data" in log
        elif report.generators_earned is False:
            assert "left out of the round's model" in log or "dropped" in log
