import numpy as np
import pytest

from metalabel.data.arrays import check_class_ids, check_matrix, check_weights
from metalabel.errors import BadInputError


def test_a_good_matrix_comes_back_as_floats():
    floats = np.ones((3, 2), np.float32)
    assert check_matrix(floats, name="x") is floats  # a float array the caller owns is not copied
    assert check_matrix([[1, 2], [3, 4]], name="x").dtype == np.float64
    assert check_matrix(floats, name="x", dtype=np.float64).dtype == np.float64
    assert check_matrix(np.zeros((0, 4)), name="x", min_rows=0).shape == (0, 4)


@pytest.mark.parametrize(
    ("values", "options", "message"),
    [
        (np.zeros(5), {}, r"x must be a numeric 2-D array \[items, features\].*shape \(5,\)"),
        (np.array([["a", "b"]]), {}, "numeric.*dtype <U1"),
        (np.zeros((1, 3)), {"min_rows": 2}, r"at least 2 row\(s\).*shape \(1, 3\)"),
        (np.zeros((4, 1)), {"columns": "classes", "min_columns": 2}, r"\[items, classes\].*at least 1 row\(s\) and 2"),
        ([[1.0, 2.0], [3.0]], {}, "x is not an array"),
    ],
)
def test_a_wrong_shape_or_kind_is_named(values, options, message):
    with pytest.raises(BadInputError, match=message):
        check_matrix(values, name="x", **options)


def test_the_first_non_finite_row_is_named_with_the_count_and_the_hint():
    values = np.zeros((6, 3))
    values[4, 0], values[2, 2] = np.inf, np.nan
    with pytest.raises(BadInputError) as raised:
        check_matrix(values, name="embeddings", hint="re-encode those items")
    assert raised.value.row == 2
    assert str(raised.value) == "row 2: NaN or infinity in embeddings (2 row(s) like this) -> re-encode those items"


def test_class_ids_and_weights_come_back_typed_or_name_the_row():
    assert check_class_ids([2, 0, 1], name="y", rows=3, classes=3).dtype == np.int64
    assert check_class_ids(np.array([0, -1], np.int8), name="y", unlabeled=True).tolist() == [0, -1]
    assert check_weights(None, name="w", rows=2).tolist() == [1.0, 1.0]
    for call, message in [
        (lambda: check_class_ids([0, 3], name="y", classes=3), "row 1: y holds 3, outside 0..2"),
        (lambda: check_class_ids([0, -1], name="y"), "row 1: y holds -1, outside 0 or more"),
        (lambda: check_class_ids([0.5], name="y"), "integer class ids"),
        (lambda: check_class_ids([0, 1], name="y", rows=3, row_name="image"), r"one class id per image \(3\)"),
        (lambda: check_weights([1.0, np.nan], name="w", rows=2), "row 1: w holds nan"),
        (lambda: check_weights([1.0], name="w", rows=2), r"one weight per row \(2\)"),
    ]:
        with pytest.raises(BadInputError, match=message):
            call()
