"""The one check for a matrix the caller hands in (features, embeddings, logits, probabilities).

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
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise BadInputError(
            f"NaN or infinity in {name} ({bad_rows.size} row(s) like this)", row=int(bad_rows[0]), hint=hint
        )
    return array
