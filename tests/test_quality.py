"""Label quality: accuracy with a Wilson interval, confusion, and label issues found by cleanlab."""

import dataclasses
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.evaluate import LabelIssues, accuracy_with_ci, confusion, label_issues, per_class_accuracy
from metalabel.evaluate.records import Downstream, Interval, LabelQuality, Scorecard, Similarity


def test_accuracy_with_ci_matches_the_known_wilson_interval() -> None:
    result = accuracy_with_ci(np.array([True] * 8 + [False] * 2))
    # Wilson 95% interval for 8 of 10 (Newcombe 1998, method 3): 0.4902 to 0.9433.
    assert result["accuracy"] == 0.8 and result["count"] == 10
    assert result["low"] == pytest.approx(0.4902, abs=1e-4)
    assert result["high"] == pytest.approx(0.9433, abs=1e-4)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.97, 1.0])
def test_the_interval_contains_the_accuracy_and_narrows_with_more_checks(rate: float) -> None:
    widths = []
    for count in (20, 200, 2000):
        correct = np.arange(count) < round(rate * count)
        result = accuracy_with_ci(correct, confidence=0.9)
        assert 0 <= result["low"] <= result["accuracy"] <= result["high"] <= 1
        widths.append(result["high"] - result["low"])
    assert widths[0] > widths[1] > widths[2]


def test_accuracy_with_ci_refuses_no_checks() -> None:
    with pytest.raises(BadInputError, match="non-empty"):
        accuracy_with_ci(np.array([], dtype=bool))


def test_confusion_counts_true_by_row_and_predicted_by_column() -> None:
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 1])
    expected = np.array([[2, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion(true, predicted, classes=4), expected)
    np.testing.assert_allclose(per_class_accuracy(expected), [2 / 3, 1 / 2, 0.0, np.nan])


def test_confusion_and_per_class_accuracy_refuse_bad_input() -> None:
    with pytest.raises(BadInputError, match="outside 0..2"):
        confusion(np.array([0, 3]), np.array([0, 1]), classes=3)
    with pytest.raises(BadInputError, match=r"one class id per true label \(2\)"):
        confusion(np.array([0, 1]), np.array([0]), classes=3)
    with pytest.raises(BadInputError, match="square"):
        per_class_accuracy(np.zeros((2, 3), dtype=int))


CENTERS = np.array([[0.0, 0.0], [8.0, 0.0], [4.0, 7.0], [0.0, 8.0]])


def noisy_blobs(classes: list[int], *, per_class: int = 200, flip_share: float = 0.05, seed: int = 0):
    """Well-separated blobs of ``classes`` with a share of labels flipped to another of them, and out-of-fold
    probabilities over all 4 columns of CENTERS. Returns (noisy labels, probs, flipped indices, true labels)."""
    rng = np.random.default_rng(seed)
    true = np.repeat(classes, per_class)
    x = CENTERS[true] + rng.normal(size=(len(true), 2))
    flipped = rng.choice(len(true), size=int(flip_share * len(true)), replace=False)
    noisy = true.copy()
    others = np.array([[c for c in classes if c != t] for t in true[flipped]])
    noisy[flipped] = others[np.arange(len(flipped)), rng.integers(0, len(classes) - 1, size=len(flipped))]
    present_probs = cross_val_predict(LogisticRegression(), x, noisy, cv=5, method="predict_proba")
    probs = np.zeros((len(true), len(CENTERS)))
    probs[:, classes] = present_probs  # columns follow the sorted classes, as cross_val_predict orders them
    return noisy, probs, flipped, true


def test_label_issues_finds_flipped_labels_and_ranks_them() -> None:
    labels, probs, flipped, true = noisy_blobs([0, 1, 2, 3])
    issues = label_issues(labels, probs)
    found = set(issues.indices.tolist())
    caught = found & set(flipped.tolist())
    assert len(caught) / len(flipped) >= 0.9  # recall
    assert len(caught) / len(found) >= 0.7  # precision
    assert np.all(np.diff(issues.self_confidence) >= 0)  # most likely wrong first
    np.testing.assert_array_equal(issues.given, labels[issues.indices])
    np.testing.assert_array_equal(issues.suggested, probs[issues.indices].argmax(axis=1))
    np.testing.assert_allclose(issues.self_confidence, probs[issues.indices, issues.given])
    caught_rows = np.isin(issues.indices, flipped)
    assert np.mean(issues.suggested[caught_rows] == true[issues.indices[caught_rows]]) > 0.9

    top = label_issues(labels, probs, max_issues=5)
    assert isinstance(top, LabelIssues) and len(top) == 5
    np.testing.assert_array_equal(top.indices, issues.indices[:5])


def test_label_issues_with_a_class_no_label_uses() -> None:
    labels, probs, flipped, _ = noisy_blobs([0, 1, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the absent class is expected, not warned about
        issues = label_issues(labels, probs)
    assert len(set(issues.indices.tolist()) & set(flipped.tolist())) / len(flipped) >= 0.9
    assert not np.isin(issues.given, [2]).any()


@pytest.mark.parametrize("only_class", [0, 2])
def test_label_issues_with_fewer_than_two_classes_present_finds_none(only_class: int) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
    issues = label_issues(np.full(20, only_class), probs)
    assert len(issues) == 0 and issues.indices.dtype == np.int64


def test_label_issues_refuses_logits_and_mismatched_labels() -> None:
    with pytest.raises(BadInputError, match="out_of_fold_probs"):
        label_issues(np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 3.0]]))
    with pytest.raises(BadInputError, match=r"one class id per row of probs \(2\)"):
        label_issues(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))


def test_label_issues_without_cleanlab_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalabel\[evaluate\]'"):
        label_issues(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))


def test_builtin_confident_learning_finds_flipped_labels_like_cleanlab() -> None:
    labels, probs, flipped, true = noisy_blobs([0, 1, 2, 3])
    builtin = label_issues(labels, probs, method="builtin")
    found = set(builtin.indices.tolist())
    caught = found & set(flipped.tolist())
    assert len(caught) / len(flipped) >= 0.9 and len(caught) / len(found) >= 0.7
    assert np.all(np.diff(builtin.self_confidence) >= 0)
    np.testing.assert_allclose(builtin.self_confidence, probs[builtin.indices, builtin.given])
    by_cleanlab = set(label_issues(labels, probs).indices.tolist())
    assert len(found & by_cleanlab) / len(found | by_cleanlab) >= 0.8  # mostly the same items
    assert len(label_issues(labels, probs, method="builtin", max_issues=3)) == 3


def test_builtin_confident_learning_keeps_a_class_last_label_and_ignores_absent_classes() -> None:
    labels, probs, flipped, _ = noisy_blobs([0, 1, 3])
    issues = label_issues(labels, probs, method="builtin")
    # the plain filter misses a few that cleanlab's noise-rate pruning finds here (26 of 30)
    assert len(set(issues.indices.tolist()) & set(flipped.tolist())) / len(flipped) >= 0.8
    assert not np.isin(issues.given, [2]).any()
    # one item given class 2, which the model is sure is class 0: one label allows no noise estimate
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    probs = np.array([[.9, .05, .05]] * 3 + [[.05, .9, .05]] * 3 + [[.9, .05, .05]])
    assert len(label_issues(labels, probs, method="builtin")) == 0
    # both labels of class 1 look like class 0: the more self-confident one stays
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[.6, .4]] * 3 + [[.8, .2], [.7, .3]])
    assert label_issues(labels, probs, method="builtin").indices.tolist() == [3]
    with pytest.raises(BadInputError, match="no label-issue method named 'magic'"):
        label_issues(labels, probs, method="magic")


def test_without_cleanlab_auto_and_the_scorecard_use_the_builtin_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    from metalabel.evaluate.scorecard import issues_section

    labels, probs, flipped, _ = noisy_blobs([0, 1, 2, 3])
    builtin = label_issues(labels, probs, method="builtin")
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    np.testing.assert_array_equal(label_issues(labels, probs, method="auto").indices, builtin.indices)
    rows = issues_section(labels, probs, uris=[f"item-{i}" for i in range(len(labels))],
                          item_ids=list(range(len(labels))), sources=["imported"] * len(labels),
                          classes=["a", "b", "c", "d"], max_issues=50)
    assert [row.item_id for row in rows] == builtin.indices[:50].tolist()
    assert rows[0].given == "abcd"[labels[rows[0].item_id]]


def a_scorecard(quality: LabelQuality) -> Scorecard:
    """A scorecard holding ``quality`` and nothing else measured."""
    return Scorecard(label_quality=quality, confusion=None, label_issues=(), similarity={}, downstream=None,
                     generators={}, feedback=())


def test_the_scorecard_shows_the_certificate_and_names_the_reference_answers_in_the_accepted_region() -> None:
    from metalabel.evaluate.scorecard import label_quality, scorecard_rows

    checked = np.r_[np.ones(19, bool), np.zeros(1, bool)]
    quality = label_quality(coverage=0.42, estimated_precision=0.97, certified_precision=0.951, delta=0.05,
                            reference_in_accepted=checked, held_out=None, gold_correct=None)
    assert "audit" not in quality.to_json() and "precision_ci" not in quality.to_json()
    assert quality.reference_in_accepted is not None
    assert (quality.reference_in_accepted.count, quality.reference_in_accepted.accuracy) == (20, 0.95)
    rows = {metric: (value, detail) for _, metric, value, detail in scorecard_rows(a_scorecard(quality))}
    assert rows["certified precision"][0] == ">= 95.1% (delta 0.05)"
    assert "probability 0.95" in rows["certified precision"][1]
    assert rows["estimated precision"] == ("97.0%", "point estimate of the accepted labels' precision, not a guarantee")
    value, detail = rows["reference answers in the accepted region"]
    assert value == "95.0%" and "over 20 random reference items above the certified threshold" in detail


def test_scorecard_rows_never_show_nan_and_say_when_nothing_is_certified() -> None:
    from metalabel.evaluate.scorecard import label_quality, precision_summary, scorecard_rows

    nan = float("nan")
    quality = label_quality(coverage=0.0, estimated_precision=nan, certified_precision=nan, held_out=None,
                            gold_correct=None)
    card = dataclasses.replace(
        a_scorecard(dataclasses.replace(quality, gold=Interval(nan, nan, nan, 0))),
        downstream=Downstream(real_only=nan, with_generated=nan, gain=nan, tstr=nan, test_size=4, generated=3,
                              test="held-out"),
        similarity={"vae": Similarity(mmd=nan, frechet=nan, precision=nan, recall=nan, real=4, generated=4)})
    rows = scorecard_rows(card)
    assert rows and not any("nan" in cell.lower() for row in rows for cell in row)
    certified = [row for row in rows if row[1] == "certified precision"]
    assert certified == [("labels", "certified precision", "nothing certified",
                          "no model label is accepted until the random reference sample certifies the target")]
    assert not [row for row in rows if row[1] == "estimated precision"]
    assert precision_summary(certified_precision=None, delta=0.05, estimated_precision=None, coverage=0.0,
                             reference_answers=12, reference_needed=48) == \
        "Nothing certified yet: ~48 more reference answers; 12 reference answers so far."
    assert precision_summary(certified_precision=0.951, delta=0.05, estimated_precision=0.97, coverage=0.4,
                             reference_answers=60, reference_needed=0, target=0.95) == (
        "Certified precision >= 95.1% (delta 0.05): holds with probability 0.95 over the 60 reference answers, "
        "meeting the 95.0% target; point estimate 97.0%; coverage 40.0% of the unlabeled pool.")
