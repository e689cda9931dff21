"""Generated rows beside real ones: the generator contract and the one rule for weighing them.

These sit in ``data`` because every room above uses them: the round's model (``label``)
trains on generated rows, the generators (``generate``) make and judge them, and the
scorecard (``evaluate``) scores them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Expander = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(train_x [N, D], train_y [N], seed) -> (new_x [M, D], new_y [M])."""


GENERATED_WEIGHT = 0.5
"""How much the generated rows count next to the real rows they came from, unless a caller says otherwise:
the loop's, the generators' and the scorecard's default."""


def shared_weights(real_rows: float, generated_rows: int, generated_weight: float) -> tuple[float, float]:
    """(scale of each real row's weight, weight of each generated row): the one rule for mixing them.

    ``real_rows`` is the real rows' count, or their total weight where they are weighted.

    The real rows and the rows generated from them share the real rows' weight, the
    generated part counting ``generated_weight`` times the real part. So the total weight,
    and with it a classifier's regularization, stays what the real rows alone had; how
    much generated data counts does not depend on how many rows a generator makes; and
    exact copies change nothing. Used by the judges, the round's model and the scorecard.
    """
    if not generated_rows:
        return 1.0, 0.0
    return 1.0 / (1.0 + generated_weight), generated_weight / (1.0 + generated_weight) * real_rows / generated_rows
