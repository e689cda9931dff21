"""Fitting a scikit-learn classifier on class ids: the one place that says they are classes."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

Model = TypeVar("Model")


def fit_classifier(model: Model, x: Any, y: Any, **fit_params: Any) -> Model:
    """``model.fit(x, y, **fit_params)``, returning the fitted model.

    ``y`` holds class ids. At one or two labels a class (what metalabel is for) scikit-learn
    notes that a label vector with more distinct values than half its length might be a
    regression target; here it never is, so that note is not shown. Other warnings are.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%",
                                category=UserWarning)
        return model.fit(x, y, **fit_params)  # type: ignore[attr-defined]
