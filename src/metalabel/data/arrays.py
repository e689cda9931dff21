"""The checks for arrays the caller hands in: a matrix (features, embeddings, logits, probabilities),
class ids and weights.

It sits in the lowest room that has NumPy, so every room above uses this one and none keeps a copy.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from metalabel.errors import BadInputError

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a feature or a score can be


def check_matrix(
    values: ArrayLike,
    *,
    name: str,
    rows: str = "items",
    columns: str = "features",
    min_rows: int = 1,
    min_columns: int = 1,
    dtype: DTypeLike | None = None,
    hint: str = "drop or repair those rows",
    shape_hint: str | None = None,
) -> np.ndarray:
    """``values`` as a 2-D numeric array of finite numbers, or a BadInputError naming what is wrong.

    ``name`` is the argument as the caller knows it; ``rows`` and ``columns`` say what the axes hold, for the
    message. The result has ``dtype`` (float and the caller's float kept when None, anything else float64).
    A non-finite value is reported at the first row that holds one, with ``hint`` saying what to do.
    """
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:  # ragged rows, or objects NumPy cannot hold as an array
        raise BadInputError(f"{name} is not an array: {error}", hint=shape_hint) from None
    if array.ndim != 2 or array.dtype.kind not in _NUMERIC_KINDS or array.shape[0] < min_rows \
            or array.shape[1] < min_columns:
        raise BadInputError(
            f"{name} must be a numeric 2-D array [{rows}, {columns}] with at least {min_rows} row(s) and "
            f"{min_columns} column(s), got shape {array.shape} and dtype {array.dtype}",
            hint=shape_hint,
        )
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype.kind != "f":
        array = array.astype(np.float64)
    bad_rows = _rows_not_finite(array)
    if bad_rows.size:
        raise BadInputError(
            f"NaN or infinity in {name} ({bad_rows.size} row(s) like this)", row=int(bad_rows[0]), hint=hint
        )
    return array


FINITE_BLOCK_VALUES = 2**24  # values tested at a time: a whole pool's mask was a byte a value (784 MB at 1M x 784)


def _rows_not_finite(array: np.ndarray) -> np.ndarray:
    """Positions of the rows of a 2-D array that hold a NaN or an infinity, tested a block of rows at a time."""
    block = max(FINITE_BLOCK_VALUES // max(array.shape[1], 1), 1)
    found = [start + np.flatnonzero(~np.isfinite(array[start:start + block]).all(axis=1))
             for start in range(0, len(array), block)]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def check_class_ids(
    values: ArrayLike,
    *,
    name: str,
    rows: int | None = None,
    row_name: str = "row",
    classes: int | None = None,
    unlabeled: bool = False,
) -> np.ndarray:
    """``values`` as int64 class ids ``[N]``, or a BadInputError naming the first row that is not one.

    ``rows``: how many there must be (one per ``row_name``); ``classes``: ids lie in ``0..classes-1``;
    ``unlabeled``: -1 (an unlabeled row) is allowed too.
    """
    y = np.asarray(values)
    if y.ndim != 1 or (rows is not None and len(y) != rows):
        expected = "a 1-D array of class ids" if rows is None else f"one class id per {row_name} ({rows})"
        raise BadInputError(f"{name} must hold {expected}, got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        raise BadInputError(f"{name} must hold integer class ids, got dtype {y.dtype}",
                            hint="map class names to ids 0..C-1")
    y = y.astype(np.int64)
    too_high = np.zeros(len(y), dtype=bool) if classes is None else y >= classes
    outside = np.flatnonzero((y < (-1 if unlabeled else 0)) | too_high)
    if outside.size:
        valid = ("0 or more" if classes is None else f"0..{classes - 1}") + (" (or -1: unlabeled)" if unlabeled else "")
        raise BadInputError(f"{name} holds {y[outside[0]]}, outside {valid}", row=int(outside[0]),
                            hint="map class names to ids 0..C-1 in the order of the classes")
    return y


def check_weights(values: ArrayLike | None, *, name: str, rows: int, row_name: str = "row") -> np.ndarray:
    """float64 weights ``[rows]``, each finite and >= 0 (None: all ones), or a BadInputError naming the row."""
    if values is None:
        return np.ones(rows)
    weights = np.asarray(values, dtype=np.float64)
    if weights.shape != (rows,):
        raise BadInputError(f"{name} must hold one weight per {row_name} ({rows}), got shape {weights.shape}")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise BadInputError(f"{name} holds {weights[bad[0]]}; weights must be finite and >= 0", row=int(bad[0]))
    return weights
