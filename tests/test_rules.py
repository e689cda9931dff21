"""Rule-based labeling: labeling functions, rules files, the Dawid-Skene label model, the rules heads, LF analysis."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import metalabel as ml
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.errors import BadInputError
from metalabel.label.oracle import SimulatedOracle
from metalabel.label.round_model import RoundModel, default_learner
from metalabel.project import Project
from metalabel.rules import (
    ABSTAIN,
    LabelModel,
    RuleSet,
    analyze_rules,
    column,
    filename_contains,
    keywords,
    label_rule_votes,
    labeling_function,
    load_rules,
    model_prediction,
    regex,
    wilson_interval,
)


def synthetic_votes(accuracy, coverage, *, items=4000, classes=4, seed=0):
    """Votes of rules with known accuracies: each fires at its coverage, right at its accuracy, else a random class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(classes, size=items)
    votes = np.full((items, len(accuracy)), -1, dtype=np.int64)
    for rule, (right_share, share) in enumerate(zip(accuracy, coverage)):
        fires = rng.random(items) < share
        wrong = (truth + rng.integers(1, classes, size=items)) % classes
        votes[fires, rule] = np.where(rng.random(items) < right_share, truth, wrong)[fires]
    return votes, truth


def majority_vote(votes, classes):
    counts = np.stack([(votes == c).sum(1) for c in range(classes)], 1)
    return counts.argmax(1)


# ----------------------------------------------------------------------------- the label model


def test_em_recovers_known_rule_accuracies():
    accuracy = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5])
    votes, truth = synthetic_votes(accuracy, [0.3, 0.5, 0.7, 0.4, 0.6, 0.5, 0.3, 0.6])
    model = LabelModel(4).fit(votes)
    assert model.converged_
    empirical = np.array([(votes[votes[:, j] >= 0, j] == truth[votes[:, j] >= 0]).mean()
                          for j in range(len(accuracy))])
    assert np.abs(model.accuracy_ - empirical).max() < 0.03
    # weighting by accuracy beats counting votes where rules fired
    fired = (votes >= 0).any(1)
    weighted = (model.predict_proba(votes).argmax(1) == truth)[fired].mean()
    counted = (majority_vote(votes, 4) == truth)[fired].mean()
    assert weighted > counted + 0.01


def test_one_class_rules_are_told_apart_by_how_often_they_fire_off_their_class():
    # keyword-like rules: each votes one class only; the noisy ones also fire on other classes
    rng = np.random.default_rng(1)
    items, classes = 6000, 3
    truth = rng.integers(classes, size=items)
    off_class_rate = [0.02, 0.02, 0.02, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1]
    votes = np.full((items, len(off_class_rate)), -1, dtype=np.int64)
    for rule, off in enumerate(off_class_rate):
        target = rule % classes
        votes[np.where(truth == target, rng.random(items) < 0.5, rng.random(items) < off), rule] = target
    model = LabelModel(classes).fit(votes)
    empirical = np.array([(truth[votes[:, j] >= 0] == j % classes).mean() for j in range(len(off_class_rate))])
    assert np.abs(model.accuracy_ - empirical).max() < 0.06
    assert model.accuracy_[:3].min() > model.accuracy_[3:6].max()  # the precise rules rank above the noisy ones


def test_human_labels_anchor_the_label_model():
    # rules that agree with each other but are all off by one class: only people's labels can show it
    votes, truth = synthetic_votes([0.9, 0.85, 0.8], [0.6, 0.6, 0.6], items=2000, classes=3)
    shifted = np.where(votes >= 0, (votes + 1) % 3, -1)
    fired = (shifted >= 0).any(1)
    alone = LabelModel(3).fit(shifted)
    assert (alone.predict_proba(shifted).argmax(1) == truth)[fired].mean() < 0.2
    anchors = np.arange(60)
    anchored = LabelModel(3).fit(shifted, anchors=anchors, anchor_classes=truth[anchors])
    recovered = (anchored.predict_proba(shifted).argmax(1) == truth)[fired].mean()
    honest = (LabelModel(3).fit(votes).predict_proba(votes).argmax(1) == truth)[fired].mean()
    assert recovered > 0.85 and recovered > honest - 0.02  # as good as if the rules had named the right class
    assert anchored.accuracy_.max() < 0.2  # it knows the rules name the wrong class
    with pytest.raises(BadInputError, match="votes must be class indices"):
        LabelModel(3).fit(np.full((4, 2), 7))


# ----------------------------------------------------------------------------- labeling functions on real data


@pytest.fixture(scope="module")
def news():
    return ml.datasets.load("20newsgroups", split="test")


def test_keyword_and_regex_rules_on_20_newsgroups(news):
    classes = news.class_names
    hockey = keywords("rec.sport.hockey", ["nhl", "hockey", "goalie"])
    space = regex("sci.space", r"\borbit(al|s)?\b")
    votes = RuleSet.of([hockey, space]).votes(news, classes)
    assert votes.matrix.shape == (len(news), 2)
    for rule, topic in ((0, "rec.sport.hockey"), (1, "sci.space")):
        fired = votes.matrix[:, rule] >= 0
        assert 0.01 < fired.mean() < 0.2
        assert (news.labels[fired] == classes.index(topic)).mean() > 0.6  # they mostly fire on their topic
    first = int(np.flatnonzero(votes.matrix[:, 0] >= 0)[0])
    assert votes.of_item(first)["keywords:rec.sport.hockey:nhl"] == "rec.sport.hockey"


def test_column_filename_and_model_rules(tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    table = ml.LabeledDataset("iris", "tabular", iris.data.astype(np.float32), iris.target, list(iris.target_names),
                              [f"flowers/{iris.target_names[t]}_{i}.png" for i, t in enumerate(iris.target)],
                              feature_names=list(iris.feature_names))
    classes = list(iris.target_names)
    small_petals = column("setosa", "petal length (cm)", "<", 2.5)
    named = filename_contains("virginica", "VIRGINICA")
    def predict(rows):  # a "pretrained model": confident only about wide petals
        wide = np.asarray(rows)[:, 3] > 1.8
        return np.stack([np.zeros(len(rows)), np.where(wide, 0.1, 0.5), np.where(wide, 0.9, 0.5)], 1)
    model = model_prediction("petal model", predict, classes, min_confidence=0.8)
    votes = RuleSet.of([small_petals, named, model]).votes(table, classes).matrix
    assert (votes[:, 0] >= 0).sum() == 50 and (votes[iris.target == 0, 0] == 0).all()
    assert (votes[:, 1] == 2).sum() == 50 and (votes[iris.target != 2, 1] == -1).all()
    assert set(np.unique(votes[:, 2])) == {-1, 2}
    with pytest.raises(BadInputError, match="no column 'petal size'"):
        RuleSet.of([column("setosa", "petal size", "<", 2.5)]).votes(table, classes)


def test_a_plain_function_and_its_checks(news):
    @labeling_function
    def mentions_jpeg(text: str) -> str | None:
        return "comp.graphics" if "jpeg" in text else ABSTAIN

    @labeling_function
    def says_cats(text: str) -> str | None:
        return "cats" if "cat" in text else ABSTAIN

    votes = RuleSet.of([mentions_jpeg]).votes(news, news.class_names)
    assert (votes.matrix[:, 0] >= 0).any()
    with pytest.raises(BadInputError, match="'says_cats' votes for a class the project does not have") as error:
        RuleSet.of([says_cats]).votes(news, news.class_names)
    assert error.value.cls == "cats"
    with pytest.raises(BadInputError, match="two rules are named"):
        RuleSet.of([mentions_jpeg, mentions_jpeg])


# ----------------------------------------------------------------------------- rules files


def test_rules_files_load_and_bad_ones_are_named(tmp_path):
    classes = ["sci.space", "rec.sport.hockey"]
    toml = tmp_path / "rules.toml"
    toml.write_text('[[keywords]]\nclass = "sci.space"\nwords = ["orbit", "nasa"]\n\n'
                    '[[regex]]\nname = "hockey words"\nclass = "rec.sport.hockey"\npattern = "\\\\bnhl\\\\b"\n')
    assert load_rules(toml, classes=classes).names == ["keywords:sci.space:orbit", "hockey words"]
    python = tmp_path / "rules.py"
    python.write_text("from metalabel.rules import ABSTAIN, keywords, labeling_function\n"
                      "space = keywords('sci.space', ['orbit'])\n\n"
                      "@labeling_function\ndef goalie(text):\n"
                      "    return 'rec.sport.hockey' if 'goalie' in text else ABSTAIN\n")
    assert load_rules(python, classes=classes).names == ["keywords:sci.space:orbit", "goalie"]

    bad_class = tmp_path / "bad_class.toml"
    bad_class.write_text('[[keywords]]\nname = "planets"\nclass = "sci.astro"\nwords = ["mars"]\n')
    with pytest.raises(BadInputError) as error:
        load_rules(bad_class, classes=classes)
    assert str(bad_class) in str(error.value) and "'planets'" in str(error.value) and error.value.cls == "sci.astro"
    cases = {
        "kind.toml": ('[[wordlist]]\nclass = "sci.space"\n', "unknown rule kind"),
        "empty.toml": ('[[keywords]]\nclass = "sci.space"\nwords = []\n', "non-empty list of words"),
        "regex.toml": ('[[regex]]\nclass = "sci.space"\npattern = "("\n', "not a regular expression"),
        "noclass.toml": ('[[keywords]]\nwords = ["x"]\n', "has no class"),
        "syntax.py": ("def broken(:\n", r"\(line 1\)"),
        "raises.py": ("x = 1\nraise RuntimeError('boom')\n", r"\(line 2\): RuntimeError: boom"),
        "nothing.py": ("x = 1\n", "defines no labeling functions"),
    }
    crashes = tmp_path / "crashes.py"
    crashes.write_text("from metalabel.rules import labeling_function\n\n"
                       "@labeling_function\ndef first_word(text):\n"
                       "    return {'orbit': 'sci.space'}[text.split()[0]]\n")
    posts = ml.LabeledDataset("posts", "text", ["orbit high", "puck low"], np.array([-1, -1]), classes, ["a", "b"])
    with pytest.raises(BadInputError, match=r"'first_word' failed on 'b': KeyError") as error:
        load_rules(crashes, classes=classes).votes(posts, classes)
    assert str(crashes) in str(error.value)
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(BadInputError, match=message) as error:
            load_rules(path, classes=classes)
        assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- analysis


def test_wilson_interval_matches_the_formula():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_rule_analysis_counts_coverage_overlap_conflict_and_accuracy():
    from metalabel.rules import RuleVotes

    #         rule a  b   c
    matrix = np.array([[0, 0, -1],    # a and b agree
                       [0, 1, -1],    # a and b conflict
                       [1, -1, 1],    # a and c agree
                       [-1, -1, 1],   # c alone
                       [-1, -1, -1]])
    votes = RuleVotes(("a", "b", "c"), matrix, ["x", "y"], "f", "python")
    analysis = analyze_rules(votes, np.array([0, 1, 2]), np.array([0, 0, 0]))
    a, b, c = analysis.rules
    assert (a.coverage, a.overlap, a.conflict) == (0.6, 0.6, 0.2)
    assert (b.coverage, b.overlap, b.conflict) == (0.4, 0.4, 0.2)
    assert (c.coverage, c.overlap, c.conflict) == (0.4, 0.2, 0.0)
    assert (a.human_labeled, a.correct, b.correct, c.human_labeled) == (3, 2, 1, 1)
    assert analysis.covered == 0.8 and analysis.conflicted == 0.2
    # each is wrong once against people: the least accurate first
    assert [r.name for r in analysis.most_disagreeing()] == ["c", "b", "a"]
    assert analysis.to_json()["rules"][0]["name"] == "a"


# ----------------------------------------------------------------------------- the loop


def table_pool(tmp_path, bunch, name):
    """A scikit-learn bundled table as a CSV pool (read_table), classes named ``{name}{k}``."""
    path = tmp_path / f"{name}.csv"
    columns = [column.replace("/", "_") for column in bunch.feature_names]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "label"])
        writer.writerows([*map(float, row), f"{name}{t}"] for row, t in zip(bunch.data, bunch.target))
    return ml.datasets.read_table(path)


def wine_pool(tmp_path):
    from sklearn.datasets import load_wine

    return table_pool(tmp_path, load_wine(), "cultivar")


def test_rules_head_adds_the_label_model_where_rules_fire(tmp_path):
    pool = wine_pool(tmp_path)
    import torch

    x = torch.from_numpy(np.asarray(pool.items, dtype=np.float32))
    x = (x - x.mean(0)) / x.std(0)
    votes = np.full((len(pool), 1), -1, dtype=np.int64)
    fires = np.flatnonzero(pool.labels == 2)[:20]
    votes[fires, 0] = 2  # one rule, right on twenty items of class 2
    model = RoundModel(default_learner(), x, rule_votes=votes)
    heads = [variant.head for variant in model.variants()]
    assert heads[-6:] == ["rules + label propagation", "rules/2 + label propagation", "rules/4 + label propagation",
                          "rules + ensemble", "rules/2 + ensemble", "rules/4 + ensemble"]
    support = np.array([int(np.flatnonzero(pool.labels == c)[0]) for c in range(3)] + [150])
    y, weights = pool.labels[support], np.ones(len(support))
    base = model._with_head("label propagation").logits(support, y, weights, 3)
    ruled = model._with_head("rules + label propagation").logits(support, y, weights, 3)
    halved = model._with_head("rules/2 + label propagation").logits(support, y, weights, 3)
    assert np.allclose(halved - base, (ruled - base) / 2)  # the weight scales the label model's term
    quiet = np.setdiff1d(np.arange(len(pool)), fires)
    assert np.array_equal(ruled[quiet], base[quiet])  # no rule fired: the head alone
    assert ((ruled - base)[fires].argmax(1) == 2).all()


def test_run_with_rules_keeps_them_records_votes_and_status_shows_them(tmp_path, capsys):
    from sklearn.datasets import load_digits

    pool = table_pool(tmp_path, load_digits(), "digit")
    gold = gold_labels(pool)
    # a ledger that knows 60% of the items' digits (by uri), and a pixel rule for a class that is there
    rules = tmp_path / "rules.py"
    known = {uri: gold[uri] for i, uri in enumerate(pool.uris) if i % 5 < 3}
    (tmp_path / "known.json").write_text(json.dumps(known))
    rules.write_text(
        "import json, pathlib\nfrom metalabel.rules import ABSTAIN, column, labeling_function\n"
        f"KNOWN = json.loads(pathlib.Path({str(tmp_path / 'known.json')!r}).read_text())\n\n"
        "@labeling_function(reads='uri')\ndef ledger(uri):\n    return KNOWN.get(uri, ABSTAIN)\n\n"
        "ink = column('digit0', 'pixel_4_4', '<', 1)\n")
    with Project.create(tmp_path / "p", pool=pool, labels=seed_labels_from_pool(pool, per_class=2, seed=0)) as project:
        # a rule for a class the project lacks: refused before anything changes
        bad = tmp_path / "bad.toml"
        bad.write_text('[[column]]\nclass = "digit10"\ncolumn = "pixel_0_0"\nabove = 1\n')
        with pytest.raises(BadInputError, match="digit10"):
            project.run(oracle=SimulatedOracle(gold), rules=bad, budget=6, progress=False)
        assert project.store.rounds() == [] and project.store.artifacts(kind="rules") == []
        result = project.run(oracle=SimulatedOracle(gold), rules=rules, budget=40, per_round=20, reference_share=1.0,
                             target_precision=0.8, gold=gold, progress=False, project_meta_steps=0, generate=False)
        last = result.rounds[-1]
        assert last.model.startswith("encoder space + rules") and last.model_labels > 0  # rules kept, labels certified
        assert project.store.artifacts(kind="rules")[-1].path.read_text() == rules.read_text()
        votes = label_rule_votes(project.store)
        model_labels = {label.id: label for label in project.store.active_labels() if label.source == "model"}
        assert votes and set(votes) <= set(model_labels)
        assert all(set(cast) <= {"ledger", "column:digit0:pixel_4_4<1"} for cast in votes.values())
        # where the (always right) ledger voted, the certified label follows it
        followed = [cast["ledger"] == model_labels[label_id].class_name for label_id, cast in votes.items()
                    if "ledger" in cast]
        assert len(followed) > 20 and np.mean(followed) > 0.95
        analysis = project.rule_analysis()
        assert analysis is not None and analysis.rules[0].name == "ledger"
        assert project.plan(coverage=0.5).target == 0.95  # plan (and evaluate) judge the rules heads too
        assert analysis.rules[0].accuracy == 1.0  # the ledger is the truth wherever a person checked it
    from metalabel.cli import main

    assert main(["status", str(tmp_path / "p")]) == 0
    shown = capsys.readouterr().out
    assert "ledger -> digit0, digit1" in shown and "coverage 60.0%" in shown


def test_cli_run_refuses_a_rules_file_naming_an_unknown_class(tmp_path, capsys):
    from metalabel.cli import main

    pool = wine_pool(tmp_path)
    Project.create(tmp_path / "p", pool=pool, labels=seed_labels_from_pool(pool, per_class=2, seed=0)).close()
    bad = tmp_path / "rules.toml"
    bad.write_text('[[column]]\nname = "rich"\nclass = "merlot"\ncolumn = "proline"\nabove = 1000\n')
    assert main(["run", str(tmp_path / "p"), "--rules", str(bad), "--oracle", "simulated", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error.replace("\n", "") and "'rich'" in error and "merlot" in error
    with Project.open(tmp_path / "p") as project:
        assert project.store.rounds() == []
