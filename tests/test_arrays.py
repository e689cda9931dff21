import numpy as np
import pytest

from metalabel.data.arrays import check_matrix
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
