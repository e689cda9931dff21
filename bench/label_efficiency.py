"""Label efficiency of the labeling loop against plain baselines, on Fashion-MNIST and 20 Newsgroups (issue 4).

For each data set, seed-label count k (per class) and budget B of further oracle answers:

* metalabel, active learning (``strategy="auto"``: TypiClust cold start, then margin) and
  the same loop with ``strategy="random"`` questions, both through ``Project.create`` +
  ``project.run`` with the simulated oracle (noise 0), target precision 0.95;
* supervised-only: LogisticRegression on the k*C seeds + B random extra human labels;
* LabelSpreading (kNN kernel, 7 neighbours) and SelfTrainingClassifier(LogisticRegression)
  on the same labels and the same features.

Budgets are read off one run per (data set, seed, k, strategy): the run asks ``per_round``
questions a round until the largest budget is spent, and the round whose model has seen B
answers is exactly what a run with budget B reports (its last round asks nothing and its
model has every answer; earlier rounds do not depend on the budget). ``--check-prefix``
runs the B=50 cell on its own once and compares.

Every cell goes to the JSON as soon as it is done (one partial file per data set under
bench/logs/), so a run cut short still leaves its finished cells; ``--report`` rebuilds the
JSON and markdown table from those.

    python bench/label_efficiency.py --seeds 0 1 --jobs 2        # what made bench/results/label_efficiency.md
    python bench/label_efficiency.py --report                    # table from whatever finished
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _workers import add_pool_options, run_workers, save_part  # bench/ is on the path when a script here runs

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
PARTS = ROOT / "logs" / "label_efficiency"
DATASETS = {
    "fashion-mnist": ("metalabel.data.sources.fashion_mnist", "efficientnet-lite0"),
    "20newsgroups": ("metalabel.data.sources.newsgroups", "minilm"),
}
TARGET = 0.95
GOAL_ACCURACY = 0.90


# ----------------------------------------------------------------------------- data


def load_data(name: str, *, pool_limit: int | None = None, test_limit: int | None = None):
    import importlib

    from metalabel.data.encoders import embed_dataset

    module, encoder = DATASETS[name]
    source = importlib.import_module(module)
    pool, test = source.load(split="train"), source.load(split="test")
    pool, test = balanced_subset(pool, pool_limit), balanced_subset(test, test_limit)
    assert list(pool.class_names) == list(test.class_names)
    x_pool = embed_dataset(pool, encoder, progress=False)
    x_test = embed_dataset(test, encoder, progress=False)
    return pool, test, x_pool, x_test, encoder


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


def standardize(x_pool, x_test):
    mean, std = x_pool.mean(0), x_pool.std(0) + 1e-6
    return (x_pool - mean) / std, (x_test - mean) / std


def knn_graph(x, n_neighbors: int, cache: Path):
    """The graph LabelSpreading(kernel="knn") builds (kneighbors_graph of the pool on itself, self included),
    computed once per data set with a float32 matmul instead of once per fit."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    if cache.exists():
        return sp.load_npz(cache)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
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


def run_metalabel(pool, x_std, x_test_std, y_test, *, encoder, seed, k, strategy, budgets, per_round, args):
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
                before = {label.uri: label.class_name for label in labels}
                wrong = sum(before.get(q.uri, q.suggestion) != gold[q.uri] for q in oracle.queries)
                gold_metrics["label_accuracy_as_reported"] = gold_metrics["label_accuracy"]
                gold_metrics["label_accuracy"] -= wrong / len(pool)
            row = {"answered": answered, "human_labels": report.human_labels, "coverage": report.coverage,
                   "estimated_precision": report.estimated_precision,
                   "certified_precision": report.certified_precision, "reference_answers": report.reference_answers,
                   "temperature": report.temperature, "calibration_ece": report.calibration_ece,
                   "held_out_accuracy": report.held_out_accuracy, "model": report.model,
                   "model_labels_this_round": report.model_labels, **gold_metrics,
                   "round_seconds": round(time.perf_counter() - round_started[0], 1)}
            round_started[0] = time.perf_counter()
            positions = np.array([position[label.uri] for label in labels])
            classes = np.array([class_index[label.class_name] for label in labels])
            model = np.array([label.source == "model" for label in labels])
            truth = pool.labels[positions]
            row["built_size"] = int(len(positions))
            row["built_model_labels"] = int(model.sum())
            row["built_coverage"] = float(model.sum() / (len(pool) - (~model).sum()))
            row["built_model_precision"] = float((classes[model] == truth[model]).mean()) if model.any() else None
            if answered in wanted:
                rng = np.random.default_rng([seed, k, answered, 11])
                fitted = fit_predict_test(x_std[positions], classes, x_test_std, y_test, cap=args.downstream_cap,
                                          rng=rng, keep=~model)
                row["test_accuracy"], row["downstream_train_rows"] = fitted if fitted else (None, None)
                cells[answered] = row
            trajectory.append(row)

        result = project.run(oracle=oracle, encoder=encoder, budget=max(budgets), per_round=per_round,
                             max_rounds=max(budgets) // per_round + 2, min_gain=0.0, strategy=strategy,
                             gold=gold, progress=False, seed=seed, on_round=on_round)
        project.close()
    return {"cells": cells, "trajectory": trajectory, "stopped_because": result.stopped_because,
            "seconds": round(time.perf_counter() - started, 1)}


def labels_to_goal(trajectory, n_seed):
    for row in trajectory:
        if row.get("label_accuracy", 0) >= GOAL_ACCURACY:
            return row["human_labels"]
    return None


# ----------------------------------------------------------------------------- baselines


def run_baselines(pool, x_std, x_test_std, y_test, graph, *, seed, k, budgets, args):
    import numpy as np
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

    from metalabel.datasets import seed_labels_from_pool

    truth = pool.labels
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
        out[budget] = cell
    return out


# ----------------------------------------------------------------------------- driver


def part_path(name: str) -> Path:
    return PARTS / f"{name}.json"


def run_dataset(name: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pool, test, x_pool, x_test, encoder = load_data(name, pool_limit=args.pool_limit, test_limit=args.test_limit)
    x_std, x_test_std = standardize(x_pool, x_test)
    part = json.loads(part_path(name).read_text()) if args.resume and part_path(name).exists() else {
        "dataset": name, "encoder": encoder, "pool": len(pool), "test": len(test),
        "classes": len(pool.class_names), "runs": {}, "baselines": {}}
    import hashlib

    import metalabel.pipeline

    part.setdefault("pipeline_sha256", []).append(
        hashlib.sha256(Path(metalabel.pipeline.__file__).read_bytes()).hexdigest()[:12])
    t = time.perf_counter()
    graph = knn_graph(x_std, 7, PARTS / f"{name}-{len(pool)}-{encoder}-knn7.npz")
    if "knn_graph_seconds" not in part:  # a resumed run reads the graph from its cache
        part["knn_graph_seconds"] = round(time.perf_counter() - t, 1)
    print(f"[{name}] data + features + kNN graph ready in {time.perf_counter() - started:.0f}s", flush=True)
    for seed in args.seeds:
        for k in args.seed_per_class:
            key = f"seed={seed},k={k}"
            if key not in part["baselines"]:
                t = time.perf_counter()
                part["baselines"][key] = run_baselines(pool, x_std, x_test_std, test.labels, graph, seed=seed, k=k,
                                                       budgets=args.budgets, args=args)
                save_part(part_path(name), part)
                print(f"[{name}] baselines {key}: {time.perf_counter() - t:.0f}s", flush=True)
            for strategy in args.strategies:
                run_key = f"{key},strategy={strategy}"
                if run_key in part["runs"] and "error" not in part["runs"][run_key]:
                    continue
                t = time.perf_counter()
                try:
                    result = run_metalabel(pool, x_std, x_test_std, test.labels, encoder=encoder, seed=seed, k=k,
                                           strategy=strategy, budgets=args.budgets, per_round=args.per_round,
                                           args=args)
                except Exception as error:  # a library failure is a result too; the other cells go on
                    part["runs"][run_key] = {"error": f"{type(error).__name__}: {error}", "cells": {},
                                             "trajectory": [], "seconds": round(time.perf_counter() - t, 1)}
                    save_part(part_path(name), part)
                    print(f"[{name}] {run_key}: FAILED {type(error).__name__}: {error}", flush=True)
                    continue
                result["labels_to_90"] = labels_to_goal(result["trajectory"], k * len(pool.class_names))
                part["runs"][run_key] = result
                save_part(part_path(name), part)
                cells = ", ".join(f"B={b}: acc {c.get('label_accuracy', float('nan')):.3f} "
                                  f"prec {c.get('achieved_precision') or float('nan'):.3f} cov {c['coverage']:.3f}"
                                  for b, c in sorted(result["cells"].items()))
                print(f"[{name}] {run_key}: {result['seconds']:.0f}s; {cells}", flush=True)
    part["seconds"] = round(time.perf_counter() - started, 1)
    save_part(part_path(name), part)


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
    """One row per (data set, k, budget, method), averaged over seeds."""
    rows = []
    for name, part in parts.items():
        seeds = sorted({int(key.split(",")[0].split("=")[1]) for key in part["baselines"]})
        ks = sorted({int(key.split(",")[1].split("=")[1]) for key in part["baselines"]})
        budgets = sorted({int(b) for cells in part["baselines"].values() for b in cells})
        for k in ks:
            for budget in budgets:
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
                    goal = [part["runs"][f"seed={s},k={k},strategy={strategy}"].get("labels_to_90")
                            for s in seeds if f"seed={s},k={k},strategy={strategy}" in part["runs"]
                            and "error" not in part["runs"][f"seed={s},k={k},strategy={strategy}"]]
                    rows.append({"dataset": name, "k": k, "budget": budget, "method": label,
                                 "label_accuracy": mean_spread(pipeline(strategy, "label_accuracy")),
                                 "pool_accuracy": mean_spread(pipeline(strategy, "pool_accuracy")),
                                 "precision": mean_spread(pipeline(strategy, "achieved_precision")),
                                 "estimated_precision": mean_spread(pipeline(strategy, "estimated_precision")),
                                 "coverage": mean_spread(pipeline(strategy, "coverage")),
                                 "built_precision": mean_spread(pipeline(strategy, "built_model_precision")),
                                 "built_coverage": mean_spread(pipeline(strategy, "built_coverage")),
                                 "test_accuracy": mean_spread(pipeline(strategy, "test_accuracy")),
                                 "labels_to_90": goal, "seeds": len(pipeline(strategy, "label_accuracy"))})
                for method, label in (("supervised", "supervised only (LogReg)"),
                                      ("label_spreading", "LabelSpreading (kNN)"),
                                      ("self_training", "SelfTraining (LogReg)")):
                    cells = [part["baselines"][f"seed={s},k={k}"].get(str(budget)) for s in seeds
                             if f"seed={s},k={k}" in part["baselines"]]
                    cells = [c[method] for c in cells if c]
                    rows.append({"dataset": name, "k": k, "budget": budget, "method": label,
                                 "label_accuracy": mean_spread([c["label_accuracy"] for c in cells]),
                                 "pool_accuracy": mean_spread([c["pool_accuracy"] for c in cells]),
                                 "precision": mean_spread([c["precision_at_0.95_confidence"] for c in cells]),
                                 "estimated_precision": None,
                                 "coverage": mean_spread([c["coverage_at_0.95_confidence"] for c in cells]),
                                 "built_precision": None, "built_coverage": None,
                                 "test_accuracy": mean_spread([c["test_accuracy"] for c in cells]),
                                 "labels_to_90": None, "seeds": len(cells)})
    return rows


def markdown(parts: dict, meta: dict) -> str:
    rows = collect(parts)
    lines = [
        "# Label efficiency: metalabel's labeling loop against plain baselines (issue 4)",
        "",
        f"Command: `{meta.get('command', '?')}`",
        "",
        f"Machine: {meta.get('machine', '?')}. Run time: {meta.get('run_time', '?')}.",
        "",
        "Pool = the training split, held-out = the test split. Features: Fashion-MNIST through EfficientNet-Lite0 at "
        "64 px (1280-d), 20 Newsgroups through MiniLM (384-d, 256 word pieces), cached; every method uses the same "
        "features, the same seed labels (`seed_labels_from_pool`) and the same seeds. k = human seed labels per "
        "class, B = further human answers (simulated oracle, noise 0). metalabel: `Project.create` + `project.run` "
        f"with the default learner (nearest class mean, CACTUs project meta-learning on), target precision {TARGET}, "
        "per_round 50, min_gain stopping off so every budget is spent; `active` = strategy auto (TypiClust while "
        "under 2 labels per class, then margin), `random` = strategy random. Baselines get the k*C seeds plus B "
        "randomly chosen extra human labels (the same ones for all three).",
        "",
        "Columns (percent; mean over seeds ± half the range):",
        "",
        "* **label acc** — accuracy over the whole pool of the labels the set would carry: the human label where "
        "given, else the method's label (metalabel: `gold['label_accuracy']`, accepted model labels of every round "
        "so far, the round's prediction elsewhere). **pred acc**: the model's own prediction for every item "
        "(`gold['pool_accuracy']`).",
        "* **precision / coverage** — metalabel: the labels accepted at target 0.95 in that round "
        "(`gold['achieved_precision']`, coverage of the non-human pool), and *est.* the pipeline's own estimate. "
        "Baselines have no acceptance rule: their items with top probability ≥ 0.95 (raw, uncalibrated).",
        "* **built prec / cov** — metalabel: every active model label in the store (what `export` would write), "
        "including labels accepted in earlier rounds.",
        "* **test acc** — LogisticRegression trained on the built data set (human + accepted model labels; "
        "LabelSpreading: every pool item with its spread label; supervised / self-training: their own classifier), "
        f"tested on the held-out split. Training rows are capped at {meta.get('downstream_cap', '?')} "
        "(human labels always kept, the rest drawn at random).",
        "* **humans to 90%** — human labels (seeds + answers) when `label_accuracy` first reached 90%, scanning "
        "the rounds of the B=200 run (every 50 answers), per seed; `>N` = not reached.",
        "",
    ]
    for name in parts:
        lines += [f"## {name}", "",
                  "| k | B | method | label acc | pred acc | precision | est. prec | coverage | built prec | "
                  "built cov | test acc | humans to 90% |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        classes = parts[name]["classes"]
        for r in (r for r in rows if r["dataset"] == name):
            goal = "–"
            if r["labels_to_90"] is not None:
                limit = r["k"] * classes + 200
                goal = ", ".join(str(g) if g is not None else f">{limit}" for g in r["labels_to_90"])
            bold = r["method"].startswith("metalabel")
            lines.append(
                f"| {r['k']} | {r['budget']} | {'**' + r['method'] + '**' if bold else r['method']} | "
                f"{fmt(r['label_accuracy'])} | {fmt(r['pool_accuracy'])} | {fmt(r['precision'])} | "
                f"{fmt(r['estimated_precision'])} | {fmt(r['coverage'])} | {fmt(r['built_precision'])} | "
                f"{fmt(r['built_coverage'])} | {fmt(r['test_accuracy'])} | {goal} |")
        part = parts[name]
        failed = {key: run["error"] for key, run in part["runs"].items() if "error" in run}
        if failed:
            lines += ["", "metalabel runs that failed (no cells): " + "; ".join(f"`{key}`: {error}" for key, error
                                                                            in failed.items())]
        run_s = [r["seconds"] for r in part["runs"].values() if "error" not in r]
        lines += ["", f"Pool {part['pool']} items, test {part['test']}, {classes} classes. metalabel runs: "
                  f"{len(run_s)}, {min(run_s or [0]):.0f}–{max(run_s or [0]):.0f} s each "
                  f"(one run covers B = 0, 50, 200). kNN graph for LabelSpreading: {part.get('knn_graph_seconds')} s "
                  f"once (at most; may include loading). Worker time of the last invocation (a --resume skips "
                  f"finished cells): {part.get('seconds', 'unfinished')} s.", ""]
    if meta.get("notes"):
        lines += ["## Notes", "", *meta["notes"], ""]
    return "\n".join(lines)


def report(args: argparse.Namespace, meta: dict) -> None:
    parts = {name: json.loads(part_path(name).read_text()) for name in args.datasets if part_path(name).exists()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "label_efficiency.json"
    if previous.exists():
        meta = {**json.loads(previous.read_text()).get("meta", {}), **{k: v for k, v in meta.items() if v}}
    (RESULTS / "label_efficiency.json").write_text(json.dumps({"meta": meta, "datasets": parts}, indent=1))
    (RESULTS / "label_efficiency.md").write_text(markdown(parts, meta))


def machine() -> str:
    cores = os.cpu_count()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    return (f"{platform.machine()} {platform.system()}, {cores} cores, torch {torch_version} CPU, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--seed-per-class", nargs="+", type=int, default=[1, 5, 10])
    parser.add_argument("--budgets", nargs="+", type=int, default=[0, 50, 200])
    parser.add_argument("--strategies", nargs="+", default=["auto", "random"])
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--downstream-cap", type=int, default=10000)
    parser.add_argument("--self-training-pool", type=int, default=10000,
                        help="unlabeled items SelfTraining sees (a random subset; it predicts the whole pool)")
    parser.add_argument("--pool-limit", type=int, help="a class-balanced random subset of the training split as pool")
    parser.add_argument("--test-limit", type=int, help="a class-balanced random subset of the test split")
    add_pool_options(parser)
    args = parser.parse_args(argv)
    args.budgets = sorted(args.budgets)
    assert all(b % args.per_round == 0 for b in args.budgets), "budgets must be multiples of --per-round"
    if args.worker:
        run_dataset(args.worker, args)
        return
    command = "python bench/label_efficiency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "machine": machine(), "downstream_cap": args.downstream_cap,
            "self_training_pool": args.self_training_pool, "seeds": args.seeds}
    if args.report:
        extra = {"downstream_cap": args.downstream_cap, "command": args.command, "run_time": args.run_time,
                 "machine": machine()}
        if args.notes:
            extra["notes"] = args.notes.read_text().splitlines()
        report(args, extra)
        return
    run_workers(__file__, sys.argv[1:] if argv is None else argv, args.datasets, jobs=args.jobs, threads=args.threads,
                poll_seconds=5, on_poll=lambda run_time: report(args, {**meta, "run_time": run_time}))


if __name__ == "__main__":
    main()
