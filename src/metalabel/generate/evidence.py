"""Held-out evidence for a generator: does adding what it makes raise accuracy on data it never saw?

A generator here is an ``Expander``: given training rows ``(x, y)`` and a seed it returns
new rows ``(x_new, y_new)``. Two judges:

- ``held_out_accuracy``: stratified k-fold over labeled rows (the project's human labels);
  only the training folds are expanded, the held-out fold is real.
- ``episode_accuracy``: few-shot episodes over many classes (pseudo-classes of a pool, say),
  for when there are too few labels per class to hold any out: each episode's support is
  expanded and its real queries are classified. This is the meta-learning view: a
  generator is good if it helps on new tasks.

Both fix their folds or episodes by ``seed``, so every candidate is judged on the same data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metalabel.data.classifier import fit_classifier
from metalabel.data.generated import Expander, shared_weights
from metalabel.errors import BadInputError, NotEnoughDataError, check_whole_number

__all__ = ["Expander", "assign_folds", "episode_accuracy", "fit_predict", "held_out_accuracy",
           "principal_components", "shared_weights"]

CLASSIFIERS = ("logistic", "prototype")


def assign_folds(labels: np.ndarray, *, folds: int, seed: int) -> tuple[np.ndarray, int]:
    """A fold number per item (-1: never held out) and the number of folds.

    Only classes with at least 2 examples are held out, and a class never gives its
    last training example to a fold, so every class trains in every fold.
    """
    classes, class_of, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise NotEnoughDataError(f"held-out scoring needs at least 2 classes, got {len(classes)}",
                            hint="label examples of a second class")
    if sizes.max() < 2:
        raise NotEnoughDataError("every class has a single example, so none can be held out while its class "
                                 "still trains",
                                 hint="label a second example of at least one class, or score on episodes instead")
    fold_count = min(folds, int(sizes.max()))
    rng = np.random.default_rng(seed)
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    for class_number in np.flatnonzero(sizes >= 2):
        members = rng.permutation(np.flatnonzero(class_of == class_number))
        # consecutive folds from a random start: a class smaller than the fold count gives at most one
        # item to each fold (so it keeps a training example), and small classes spread over all folds
        fold_of[members] = (rng.integers(fold_count) + np.arange(len(members))) % fold_count
    return fold_of, fold_count


def fit_predict(classifier: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                train_weights: np.ndarray | None = None) -> np.ndarray:
    """Predicted classes of ``test_x`` from a fresh ``classifier`` ("logistic" or "prototype": nearest class mean)."""
    if classifier not in CLASSIFIERS:
        raise BadInputError(f"unknown classifier {classifier!r}", hint=f"use one of: {', '.join(CLASSIFIERS)}")
    if classifier == "logistic" and np.unique(train_y).size >= 2:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # standardized, as the scorecard's downstream classifier is: one judge, one classifier
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        fit_classifier(model, train_x, train_y, standardscaler__sample_weight=train_weights,
                       logisticregression__sample_weight=train_weights)
        return model.predict(test_x)
    classes = np.unique(train_y)
    weights = np.ones(len(train_y)) if train_weights is None else train_weights
    means = np.stack([np.average(train_x[train_y == c], axis=0, weights=weights[train_y == c]) for c in classes])
    distances = ((test_x[:, None, :] - means[None]) ** 2).sum(-1)
    return classes[distances.argmin(1)]


def held_out_accuracy(x: np.ndarray, y: np.ndarray, *, expand: Expander | None, folds: int = 5, seed: int = 0,
                      classifier: str = "logistic", generated_weight: float = 1.0, repeats: int = 1,
                      featurize: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
    """Cross-validated accuracy of ``classifier`` trained on training folds plus ``expand``'s rows for them.

    ``repeats`` runs the whole cross-validation again on other fold splits and averages:
    with a handful of labels per class one held-out item is several points, and a single
    split decides more by which items it holds out than by the generator. ``featurize``
    maps rows (real and generated) to what the classifier sees, e.g. a few principal
    components, so judging many candidates stays quick; generators still work on ``x``.
    """
    featurize = featurize or _identity
    check_whole_number("folds", folds, minimum=2)
    check_whole_number("repeats", repeats, minimum=1)
    labels = np.asarray(y)
    correct = tested = 0
    for repeat in range(repeats):
        fold_of, fold_count = assign_folds(labels, folds=folds, seed=seed + repeat)
        for fold in range(fold_count):
            held_out = fold_of == fold
            # one seed per fold, the same for every generator: differences come from the generator, not the draw
            train_x, train_y, weights = _grown(x[~held_out], labels[~held_out], expand, generated_weight,
                                               int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0]))
            predicted = fit_predict(classifier, featurize(train_x), train_y, featurize(x[held_out]), weights)
            correct += int((predicted == labels[held_out]).sum())
        tested += int((fold_of >= 0).sum())
    return correct / tested


def episode_accuracy(x: np.ndarray, y: np.ndarray, *, expand: Expander | None, ways: int, shots: int,
                     queries: int = 5, episodes: int = 50, seed: int = 0, classifier: str = "prototype",
                     generated_weight: float = 1.0, featurize: Callable[[np.ndarray], np.ndarray] | None = None
                     ) -> float:
    """Mean query accuracy over fixed few-shot episodes of ``(x, y)`` whose support ``expand`` grows.

    ``featurize`` as for ``held_out_accuracy``.
    """
    featurize = featurize or _identity
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries), ("episodes", episodes)):
        check_whole_number(name, value, minimum=1)
    labels = np.asarray(y)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    usable = classes[counts >= shots + queries]
    if len(usable) < max(ways, 2):
        raise NotEnoughDataError(f"episodes need {ways} classes with {shots + queries} examples each; "
                            f"{len(usable)} have that many", hint="lower ways, shots or queries")
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in usable}
    accuracies = []
    for episode in range(episodes):
        chosen = rng.choice(usable, ways, replace=False)
        picks = [rng.choice(members[c], shots + queries, replace=False) for c in chosen]
        support = np.concatenate([p[:shots] for p in picks])
        query = np.concatenate([p[shots:] for p in picks])
        support_y = np.repeat(np.arange(ways), shots)
        query_y = np.repeat(np.arange(ways), queries)
        train_x, train_y, weights = _grown(x[support], support_y, expand, generated_weight,
                                           int(np.random.SeedSequence([seed, episode]).generate_state(1)[0]))
        predicted = fit_predict(classifier, featurize(train_x), train_y, featurize(x[query]), weights)
        accuracies.append(float((predicted == query_y).mean()))
    return float(np.mean(accuracies))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def principal_components(x: np.ndarray, *, dims: int = 64, seed: int = 0,
                         max_rows: int = 5000) -> Callable[[np.ndarray], np.ndarray]:
    """A projection onto the top ``dims`` principal components of ``x`` (fitted on at most ``max_rows`` rows).

    Judges fit hundreds of small classifiers a round; in 64 dimensions instead of an
    encoder's 384-1280 each is several times quicker, and class structure survives.
    """
    from sklearn.decomposition import PCA

    rows = x if len(x) <= max_rows else x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    dims = min(dims, x.shape[1], len(rows))
    if dims == x.shape[1]:
        return _identity
    pca = PCA(dims, random_state=seed).fit(rows)
    return lambda values: pca.transform(np.asarray(values, dtype=np.float64)).astype(np.float32)


def _grown(x: np.ndarray, y: np.ndarray, expand: Expander | None, generated_weight: float,
           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows plus the generated ones, weighted by ``shared_weights``."""
    if expand is None:
        return x, y, np.ones(len(y))
    new_x, new_y = expand(x, y, seed)
    real, generated = shared_weights(len(y), len(new_y), generated_weight)
    weights = np.concatenate([np.full(len(y), real), np.full(len(new_y), generated)])
    return np.concatenate([x, np.asarray(new_x).astype(x.dtype, copy=False)]), np.concatenate([y, new_y]), weights
