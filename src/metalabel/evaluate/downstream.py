"""The effect of the built data on a model: train a fresh plain classifier on it, test on held-out real data.

The classifier is deliberately plain (logistic regression on standardized
features). A gain then comes from the data, not from a model tuned to it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from metalabel.data.arrays import check_class_ids, check_matrix, check_weights
from metalabel.data.classifier import fit_classifier
from metalabel.data.generated import shared_weights
from metalabel.errors import BadInputError, check_whole_number

FloatArray = NDArray[np.float64]


def downstream_accuracy(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    classes: int | None = None,
    seed: int = 0,
    max_iter: int = 500,
) -> float:
    """Accuracy on ``test_x, test_y`` of logistic regression fitted on ``train_x, train_y``.

    ``sample_weight`` [N] weights the training items (e.g. generated items less than
    real ones), in the standardization too. When ``classes`` is given, the labels must
    lie in ``0..classes-1``. A class absent from training is never predicted, so its
    test items count as wrong. Training on a single class predicts that class for
    every test item.
    """
    check_whole_number("max_iter", max_iter, minimum=1)
    if classes is not None:
        check_whole_number("classes", classes, minimum=1)
    x_train = _features(train_x, "train_x")
    y_train = check_class_ids(train_y, name="train_y", rows=len(x_train), classes=classes)
    x_test = _features(test_x, "test_x", features=x_train.shape[1])
    y_test = check_class_ids(test_y, name="test_y", rows=len(x_test), classes=classes)
    weights = None if sample_weight is None else _weights(sample_weight, len(x_train), "sample_weight")

    present = np.unique(y_train if weights is None else y_train[weights > 0])
    if present.size == 1:  # logistic regression needs two classes; one class leaves one possible answer
        return float((y_test == present[0]).mean())
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    fit_classifier(model, x_train, y_train, standardscaler__sample_weight=weights,
                   logisticregression__sample_weight=weights)
    return float((model.predict(x_test) == y_test).mean())


def compare_with_generated(
    real_x: ArrayLike,
    real_y: ArrayLike,
    generated_x: ArrayLike,
    generated_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    *,
    real_weight: ArrayLike | None = None,
    generated_weight: float = 1.0,
    parents: ArrayLike | None = None,
    seed: int = 0,
    max_iter: int = 500,
) -> dict[str, float | int | None]:
    """Does adding the generated items help a model trained on the real ones?

    Returns ``real_only`` and ``with_generated`` test accuracies, their difference
    ``gain``, and ``tstr``: the accuracy of a model trained on the generated items
    alone (train on synthetic, test on real). ``tstr`` shows whether the generated
    data carry the classes on their own. It is None when they cover fewer than 2
    classes. ``test_size`` is the number of test items. Real items weigh
    ``real_weight`` (default 1 each). The generated items share the weight of the real
    items they were made from (``parents``, a mask over the real items; default all),
    counting ``generated_weight`` times as much as those real items together
    (``metalabel.data.generated.shared_weights``, the rule every judge uses).
    Generated data may be empty, with 0 rows.
    """
    x_real = _features(real_x, "real_x")
    y_real = check_class_ids(real_y, name="real_y", rows=len(x_real))
    x_generated = _features(generated_x, "generated_x", features=x_real.shape[1], allow_empty=True)
    y_generated = check_class_ids(generated_y, name="generated_y", rows=len(x_generated))
    if not 0 <= generated_weight < np.inf:
        raise BadInputError(f"generated_weight must be a finite number >= 0, got {generated_weight}")
    weights_real = np.ones(len(x_real)) if real_weight is None else _weights(real_weight, len(x_real), "real_weight")
    sharing = np.ones(len(x_real), dtype=bool) if parents is None else np.asarray(parents, dtype=bool)
    if sharing.shape != (len(x_real),):
        raise BadInputError(f"parents must be one bool per real item ({len(x_real)}), got shape {sharing.shape}",
                            hint="mark the real items the generated ones were made from")

    def accuracy(x: FloatArray, y: NDArray[np.int64], weights: FloatArray | None) -> float:
        return downstream_accuracy(x, y, test_x, test_y, sample_weight=weights, seed=seed, max_iter=max_iter)

    real_only = accuracy(x_real, y_real, weights_real)
    real_scale, per_row = shared_weights(float(weights_real[sharing].sum()), len(x_generated), generated_weight)
    with_generated = accuracy(
        np.concatenate([x_real, x_generated]),
        np.concatenate([y_real, y_generated]),
        np.concatenate([np.where(sharing, weights_real * real_scale, weights_real),
                        np.full(len(x_generated), per_row)]),
    ) if len(x_generated) else real_only
    tstr = accuracy(x_generated, y_generated, None) if np.unique(y_generated).size >= 2 else None
    return {
        "real_only": real_only,
        "with_generated": with_generated,
        "gain": with_generated - real_only,
        "tstr": tstr,
        "test_size": int(np.asarray(test_y).shape[0]),
    }


def _features(values: ArrayLike, name: str, *, features: int | None = None, allow_empty: bool = False) -> FloatArray:
    array = check_matrix(values, name=name, min_rows=0 if allow_empty else 1, dtype=np.float64,
                         hint="drop those items")
    if features is not None and array.shape[1] != features:
        raise BadInputError(
            f"{name} has {array.shape[1]} features per item, not {features} like the training items",
            hint="embed every set with the same encoder",
        )
    return array


def _weights(values: ArrayLike, items: int, name: str) -> FloatArray:
    weights = check_weights(values, name=name, rows=items, row_name="training item")
    if not weights.any():
        raise BadInputError(f"{name} is 0 for every training item", hint="give some item a positive weight")
    return weights
