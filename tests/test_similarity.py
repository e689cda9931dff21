"""Similarity of generated to real data: MMD, Fréchet distance, k-NN precision and recall."""

import warnings

import numpy as np
import pytest
from scipy.stats import ortho_group

from metalabel.errors import BadInputError
from metalabel.evaluate import frechet_distance, knn_precision_recall, mmd, similarity_report

DIMS = 5


def gaussian(items: int, *, shift: float = 0.0, seed: int) -> np.ndarray:
    """Standard normal in DIMS dimensions, moved by ``shift`` in total length along the diagonal."""
    return np.random.default_rng(seed).normal(size=(items, DIMS)) + shift / np.sqrt(DIMS)


def test_mmd_is_near_zero_for_one_distribution_and_clearly_positive_for_a_shifted_one() -> None:
    real = gaussian(1500, seed=0)
    assert abs(mmd(real, gaussian(1500, seed=1))) < 0.003
    assert mmd(real, gaussian(1500, shift=1.0, seed=1)) > 0.03


def test_mmd_grows_with_the_shift() -> None:
    real = gaussian(1000, seed=0)
    values = [mmd(real, gaussian(1000, shift=shift, seed=1)) for shift in (0.5, 1.0, 2.0, 4.0)]
    assert np.all(np.diff(values) > 0), values


def test_mmd_matches_the_unbiased_estimator_written_out() -> None:
    rng = np.random.default_rng(0)
    x, y, bandwidth = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)) + 0.5, 1.3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2)))

    xx = sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (6 * 5)
    yy = sum(k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (7 * 6)
    xy = sum(k(a, b) for a in x for b in y) / (6 * 7)
    assert mmd(x, y, bandwidth=bandwidth) == pytest.approx(xx + yy - 2 * xy, abs=1e-12)


def test_mmd_subsamples_with_its_seed() -> None:
    real, generated = gaussian(300, seed=0), gaussian(300, shift=1.0, seed=1)
    assert mmd(real, generated, max_items=100, seed=3) == mmd(real, generated, max_items=100, seed=3)
    assert mmd(real, generated, max_items=100, seed=3) != mmd(real, generated, max_items=100, seed=4)
    # Under the cap nothing is dropped, so the seed cannot matter.
    assert mmd(real, generated, seed=3) == mmd(real, generated, seed=4)


def test_mmd_of_identical_points_is_zero() -> None:
    points = np.ones((4, DIMS))
    assert mmd(points, points) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mean_gap = np.array([1.0, 0.5, 0.0, -0.5])
    var_real, var_generated = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 0.5, 0.5, 4.0])
    real = rng.normal(size=(40_000, 4)) * np.sqrt(var_real)
    generated = rng.normal(size=(40_000, 4)) * np.sqrt(var_generated) + mean_gap
    expected = np.sum(mean_gap**2) + np.sum(var_real + var_generated - 2 * np.sqrt(var_real * var_generated))
    assert frechet_distance(real, generated) == pytest.approx(expected, rel=0.03)


def test_frechet_distance_ignores_a_rotation_and_is_zero_against_itself() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))  # correlated features
    generated = rng.normal(size=(400, 6)) * 2.0 + 1.0
    rotation = ortho_group.rvs(6, random_state=1)
    assert frechet_distance(real @ rotation, generated @ rotation) == pytest.approx(
        frechet_distance(real, generated), rel=1e-8
    )
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_with_fewer_items_than_features_still_returns_a_number() -> None:
    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(5, 10)), rng.normal(size=(6, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the singular covariances are handled, not warned about
        distance = frechet_distance(real, generated)
        assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(distance) and distance > 0


def test_knn_precision_is_high_and_recall_low_under_mode_collapse() -> None:
    real = gaussian(1000, seed=0)
    rng = np.random.default_rng(1)
    # The generator emits 5 real items over and over, with a little noise.
    collapsed = real[rng.integers(0, 5, size=500)] + 1e-3 * rng.normal(size=(500, DIMS))
    precision, recall = knn_precision_recall(real, collapsed)
    assert precision > 0.95
    assert recall < 0.05


def test_knn_precision_and_recall_are_zero_far_away_and_high_for_one_distribution() -> None:
    real = gaussian(800, seed=0)
    assert knn_precision_recall(real, gaussian(800, shift=50.0, seed=1)) == (0.0, 0.0)
    precision, recall = knn_precision_recall(real, gaussian(800, seed=1))
    assert precision > 0.8 and recall > 0.8


def test_similarity_report_holds_every_measure_and_the_counts() -> None:
    report = similarity_report(gaussian(300, seed=0), gaussian(200, shift=1.0, seed=1))
    assert set(report) == {"mmd", "frechet", "precision", "recall", "real", "generated"}
    assert (report["real"], report["generated"]) == (300, 200)
    assert report["mmd"] > 0 and report["frechet"] > 0 and 0 <= report["precision"] <= 1


@pytest.mark.parametrize(
    ("real", "generated", "message"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2 row"),
        (np.zeros((5, 3)), np.zeros(5), "2-D array"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "generated has 4"),
    ],
)
def test_bad_shapes_are_named(real: np.ndarray, generated: np.ndarray, message: str) -> None:
    for measure in (mmd, frechet_distance, knn_precision_recall):
        with pytest.raises(BadInputError, match=message):
            measure(real, generated)


def test_non_finite_features_name_the_row_and_bad_options_are_refused() -> None:
    generated = np.zeros((5, 3))
    generated[3, 1] = np.nan
    with pytest.raises(BadInputError, match="row 3"):
        frechet_distance(np.zeros((5, 3)), generated)
    with pytest.raises(BadInputError, match="k=5"):
        knn_precision_recall(gaussian(5, seed=0), gaussian(9, seed=1), k=5)
    with pytest.raises(BadInputError, match="bandwidth"):
        mmd(gaussian(5, seed=0), gaussian(5, seed=1), bandwidth=0.0)
