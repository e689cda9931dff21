"""Does generated data raise downstream accuracy? metalabel's generators on Fashion-MNIST and 20 Newsgroups.

For each data set, number k of labeled items per class (1, 5, 10) and seed: a pool of ``--pool`` items drawn
from the train split (the unlabeled data the generators may learn from, through k-means pseudo-classes as
``metalabel run`` makes them), k labeled items per class drawn from that pool (nested: the k=1 items are among
the k=5 ones), and a fixed test set of ``--test`` items from the test split. Each condition trains a fresh
``metalabel.evaluate.downstream_accuracy`` (standardized logistic regression) on the k*C real items plus the
condition's generated rows and scores it on the test set:

* ``none``                 real items only;
* ``fixed policy``         ``FIXED_POLICY`` (noise + within-class mixing), 4 copies: the engine with augment only,
                           ``learn=False``;
* ``learned policy``       the engine with augment only, ``learn=True`` (policy searched on held-out evidence);
* ``hallucinator``         the engine with the hallucinator only, ``learn=True``: rows only when the engine kept it
                           ("as judged"), and ``hallucinator (forced)``: its rows whatever the verdict;
* ``VAE`` / ``VAE (forced)``  Fashion-MNIST only: the class-conditional VAE, samples featurized with
                           EfficientNet-Lite0. As in the pipeline it learns from accepted model labels, never from
                           the human ones (they are the judge's held-out evidence). The benchmark has no accepted
                           labels, so it stands in for them: the ``ACCEPTED_SHARE`` of the pool (labeled items left
                           out) that a nearest-class-mean classifier of the labeled items is surest of (largest
                           margin between the nearest and second-nearest class mean), with that classifier's labels.
                           At k=1 the engine has no held-out human labels and does not train it (``learn=True``);
                           the forced row then comes from the same VAE trained with ``learn=False``;
* ``VAE, labeled images (forced)``  the VAE trained on the labeled images themselves (what the first version of this
                           benchmark did), kept unjudged: is it the training data or the judge that decides?
* ``all, feedback off``    everything on, ``learn=False`` (fixed policy, every generator kept unjudged);
* ``all (metalabel run)``  everything on, ``learn=True``: what ``metalabel run`` does.

Generated rows are weighted by ``metalabel.generate.evidence.shared_weights``, the one rule the engine's judge,
the round's model and the scorecard use: the real rows and the rows generated from them share the real rows'
weight, the generated part counting ``GeneratorOptions.generated_weight`` (0.5) times the real part (so the total
weight stays the number of real rows, and exact copies change nothing). The benchmark scores the data the way the
engine chose it.

At k = ``--similarity-k`` (5) each generator's output is compared with the real test features (MMD, Frechet,
k-NN precision / recall; ``similarity_report``), every side subsampled to k*C rows, next to the real labeled
items themselves as the reference a real sample of that size scores.

Every cell goes to a partial file under bench/logs/generation/ as soon as it is done; ``--resume`` keeps finished
cells and ``--report`` rebuilds bench/results/generation.{json,md} from them. ``--quick`` is a one-seed smoke run
that writes under bench/runs/generation-quick/ and leaves the results alone.

    python bench/generation.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2   # what made bench/results/generation.md
    python bench/generation.py --quick                              # smoke run, seed 0

``--designed`` runs the generators the design names, each alone and judged as the engine judges it, against the
same ``none`` baseline: the conditional feature WGAN-GP on Fashion-MNIST's EfficientNet-Lite0 features (learning
from the same stand-in for accepted labels as the VAE), and the class-conditional Bayesian network on
scikit-learn's bundled digits and breast-cancer tables (standardized columns, as the loop reads a table; a fixed
test draw and a per-seed pool from the rest). Its section of bench/results/generation.md is rebuilt from its own
partial files (bench/logs/generation-designed/) and leaves the rest of the page as it is:

    python bench/generation.py --designed --datasets fashion-mnist --seeds 0 1 2 3 4
    python bench/generation.py --designed --datasets digits breast-cancer --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

from _workers import add_pool_options, package_sha256, run_workers, save_part  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATASETS = {"fashion-mnist": "efficientnet-lite0", "20newsgroups": "minilm"}
TEST_SEED = 20240601  # the test subset is one fixed draw for every seed and condition
CONDITIONS = ("none", "fixed policy", "learned policy", "hallucinator", "hallucinator (forced)", "VAE",
              "VAE (forced)", "VAE, labeled images (forced)", "all, feedback off", "all (metalabel run)")
GOAL_K = (1, 5)
ACCEPTED_SHARE = 0.25  # the share of the pool standing in for accepted model labels (the VAE's training set)
JUDGED = (("hallucinator", "hallucinator", "hallucinator (forced)"), ("VAE", "VAE", "VAE (forced)"))
"""(generator, condition as judged, condition forced in): the judge's verdict against what forcing did on test."""
DESIGNED = {"fashion-mnist": "gan", "digits": "bayesnet", "breast-cancer": "bayesnet"}
"""--designed: the data set each generator the design names is measured on."""
DESIGNED_JUDGED = (("GAN", "GAN", "GAN (forced)"), ("Bayesian network", "Bayesian network",
                                                    "Bayesian network (forced)"))
DESIGNED_SECTION = "## Generators the design names: conditional WGAN-GP and Bayesian network"
TABLE_TEST = {"digits": 600, "breast-cancer": 200}  # test rows drawn once; the pool comes from the rest


# ----------------------------------------------------------------------------- data


def load_table(name: str) -> dict:
    """A bundled scikit-learn table as the loop reads one (standardized columns), split into pool rows and test."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_digits

    bunch = {"digits": load_digits, "breast-cancer": load_breast_cancer}[name]()
    x = bunch.data.astype(np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    test = np.zeros(len(x), dtype=bool)
    test[np.random.default_rng(TEST_SEED).choice(len(x), TABLE_TEST[name], replace=False)] = True
    return {"name": name, "encoder": "standardized columns", "class_names": [str(c) for c in bunch.target_names],
            "train_x": x[~test], "train_y": bunch.target[~test], "train_items": None, "test_x": x[test],
            "test_y": bunch.target[test], "modality": "tabular"}


def load_data(name: str, args: argparse.Namespace) -> dict:
    import numpy as np

    if name in TABLE_TEST:
        return load_table(name)

    import metalabel.datasets
    from metalabel.data.encoders import embed_dataset

    encoder = DATASETS[name]
    train = metalabel.datasets.load(name, split="train")
    test = metalabel.datasets.load(name, split="test")
    assert list(train.class_names) == list(test.class_names)
    x_train = embed_dataset(train, encoder, progress=False)  # cached on disk after the first run
    x_test = embed_dataset(test, encoder, progress=False)
    classes = list(range(train.num_classes))
    if name == "20newsgroups" and args.newsgroups_classes < train.num_classes:
        classes = classes[: args.newsgroups_classes]
    remap = np.full(train.num_classes, -1)
    remap[classes] = np.arange(len(classes))
    train_rows = np.flatnonzero(np.isin(train.labels, classes))
    test_rows = np.flatnonzero(np.isin(test.labels, classes))
    test_rows = np.sort(np.random.default_rng(TEST_SEED).choice(test_rows, min(args.test, len(test_rows)),
                                                                 replace=False))
    return {
        "name": name, "encoder": encoder, "class_names": [train.class_names[c] for c in classes],
        "train_x": x_train[train_rows], "train_y": remap[train.labels[train_rows]],
        "train_items": train.items[train_rows] if train.modality == "image" else None,
        "test_x": x_test[test_rows], "test_y": remap[test.labels[test_rows]],
        "modality": train.modality,
    }


def draw_seed(data: dict, seed: int, args: argparse.Namespace) -> dict:
    """The pool, its pseudo-classes (as ``metalabel run`` clusters them) and a per-class order of labeled picks."""
    import numpy as np

    from metalabel.meta.unsupervised import cluster_pseudo_labels

    rng = np.random.default_rng([seed, 101])
    pool = np.sort(rng.choice(len(data["train_y"]), min(args.pool, round(0.8 * len(data["train_y"]))),
                              replace=False))
    pool_x, pool_y = data["train_x"][pool], data["train_y"][pool]
    clusters = int(np.clip(len(pool) // 50, 10, 200))  # the pipeline's rule
    started = time.perf_counter()
    pseudo = cluster_pseudo_labels(pool_x, clusters=clusters, seed=seed)
    order = [rng.permutation(np.flatnonzero(pool_y == c)) for c in range(len(data["class_names"]))]
    return {"pool": pool, "pool_x": pool_x, "pool_y": pool_y, "pseudo": pseudo, "order": order,
            "clusters": clusters, "cluster_seconds": time.perf_counter() - started}


# ----------------------------------------------------------------------------- one cell


def weighted_accuracy(x, y, new_x, new_y, data, *, generated_weight: float) -> float:
    """Test accuracy with the generated rows weighted as the engine weighs them (``shared_weights``)."""
    import numpy as np

    from metalabel.evaluate import downstream_accuracy
    from metalabel.generate.evidence import shared_weights

    classes = len(data["class_names"])
    if new_y is None or len(new_y) == 0:
        return downstream_accuracy(x, y, data["test_x"], data["test_y"], classes=classes)
    real, generated = shared_weights(len(y), len(new_y), generated_weight)
    weights = np.concatenate([np.full(len(y), real), np.full(len(new_y), generated)])
    return downstream_accuracy(np.concatenate([x, new_x]), np.concatenate([y, new_y]), data["test_x"],
                               data["test_y"], sample_weight=weights, classes=classes)


def accepted_stand_in(x, y, drawn: dict, labeled_in_pool) -> tuple:
    """Pool rows and labels standing in for accepted model labels, and their precision against the true labels.

    The ``ACCEPTED_SHARE`` of the pool (the labeled items left out, as the pipeline leaves the human
    labels out of the VAE) that a nearest-class-mean classifier of ``(x, y)`` is surest of: the largest
    margin between the squared distances to the nearest and the second-nearest class mean.
    """
    import numpy as np

    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    others = np.setdiff1d(np.arange(len(drawn["pool_y"])), labeled_in_pool)
    distances = ((drawn["pool_x"][others, None, :] - means[None]) ** 2).sum(-1)
    nearest = np.sort(distances, axis=1)
    margin = nearest[:, 1] - nearest[:, 0]
    chosen = np.sort(np.argsort(-margin, kind="stable")[:round(ACCEPTED_SHARE * len(drawn["pool_y"]))])
    rows, labels = others[chosen], classes[distances[chosen].argmin(1)]
    return rows, labels, float((labels == drawn["pool_y"][rows]).mean())


def run_cell(data: dict, drawn: dict, *, seed: int, k: int, featurize, args: argparse.Namespace) -> dict:
    import numpy as np

    from metalabel.evaluate import similarity_report
    from metalabel.generate.engine import DataGenerator, GeneratorOptions, ImageInputs
    from metalabel.pipeline import generation_record

    labeled_in_pool = np.concatenate([order[:k] for order in drawn["order"]])
    x, y = drawn["pool_x"][labeled_in_pool], drawn["pool_y"][labeled_in_pool]
    images = own_images = None
    cell = {"seed": seed, "k": k, "labeled": int(len(y)), "conditions": {}, "steps": {}}
    if featurize is not None:
        labeled_images = data["train_items"][drawn["pool"][labeled_in_pool]]
        # as the pipeline does: the VAE learns from accepted labels (here their stand-in), never from the
        # human-labeled items, which the judge holds out
        rows, labels, precision = accepted_stand_in(x, y, drawn, labeled_in_pool)
        images = ImageInputs(labeled=labeled_images, featurize=featurize,
                             train_images=data["train_items"][drawn["pool"][rows]], train_labels=labels,
                             search_policy=False)
        own_images = ImageInputs(labeled=labeled_images, featurize=featurize, train_images=labeled_images,
                                 train_labels=y, search_policy=False)
        cell["vae_training"] = {"items": int(len(rows)), "precision": precision,
                                "classes": int(np.unique(labels).size)}
    gw = GeneratorOptions().generated_weight

    def record(condition, new_x, new_y, seconds, kept=None, note=None):
        accuracy = weighted_accuracy(x, y, new_x, new_y, data, generated_weight=gw)
        cell["conditions"][condition] = {"accuracy": accuracy, "generated": 0 if new_y is None else int(len(new_y)),
                                         "kept": kept, "seconds": round(seconds, 2), "note": note}

    def step(options, step_images):
        started = time.perf_counter()
        made = DataGenerator(options).step(x, y, pool_x=drawn["pool_x"], pool_y=drawn["pseudo"],
                                           images=step_images, seed=seed)
        return made, time.perf_counter() - started

    def batch_of(made, generator):
        return next((b for b in made.batches if b.generator == generator), None)

    def summarize(name, made, seconds):
        cell["steps"][name] = {**generation_record(made).to_json(), "feedback": list(made.feedback),
                               "seconds": round(seconds, 2)}

    record("none", None, None, 0.0)

    made, seconds = step(GeneratorOptions(hallucinate=False, synthesize=False, learn=False), None)
    fixed = batch_of(made, "augment")
    summarize("fixed policy", made, seconds)
    record("fixed policy", *made.expand(x, y, seed), seconds, kept=True)

    made, seconds = step(GeneratorOptions(hallucinate=False, synthesize=False, learn=True), None)
    learned = batch_of(made, "augment")
    summarize("learned policy", made, seconds)
    record("learned policy", *made.expand(x, y, seed), seconds, kept=learned is not None,
           note=made.policy.describe() if made.policy is not None else "no policy (nothing to judge by)")

    made, seconds = step(GeneratorOptions(augment=False, synthesize=False, learn=True), None)
    hallucinated = batch_of(made, "hallucinator")
    summarize("hallucinator", made, seconds)
    if hallucinated is None:
        record("hallucinator", None, None, seconds, kept=None, note="not trained: too few pseudo-classes")
    else:
        record("hallucinator", *made.expand(x, y, seed), seconds, kept=hallucinated.kept, note=hallucinated.evidence)
        record("hallucinator (forced)", hallucinated.x, hallucinated.y, seconds, kept=hallucinated.kept)

    vae = own_vae = None
    if images is not None:
        made, seconds = step(GeneratorOptions(augment=False, hallucinate=False, learn=True), images)
        vae = batch_of(made, "vae")
        summarize("VAE", made, seconds)
        if vae is not None:
            record("VAE", *made.expand(x, y, seed), seconds, kept=vae.kept, note=vae.evidence)
        else:  # k=1: no held-out human labels, so the engine does not train it; force the same VAE in unjudged
            record("VAE", None, None, seconds, kept=False, note="; ".join(made.feedback) or "not trained")
            made, seconds = step(GeneratorOptions(augment=False, hallucinate=False, learn=False), images)
            vae = batch_of(made, "vae")
            summarize("VAE (forced)", made, seconds)
        if vae is not None:
            record("VAE (forced)", vae.x, vae.y, seconds, kept=cell["conditions"]["VAE"]["kept"])
        made, seconds = step(GeneratorOptions(augment=False, hallucinate=False, learn=False), own_images)
        own_vae = batch_of(made, "vae")
        summarize("VAE, labeled images (forced)", made, seconds)
        if own_vae is not None:
            record("VAE, labeled images (forced)", own_vae.x, own_vae.y, seconds)

    made, seconds = step(GeneratorOptions(learn=False), images)
    summarize("all, feedback off", made, seconds)
    record("all, feedback off", *made.expand(x, y, seed), seconds,
           kept={b.generator: b.kept for b in made.batches})

    made, seconds = step(GeneratorOptions(learn=True), images)
    summarize("all (metalabel run)", made, seconds)
    record("all (metalabel run)", *made.expand(x, y, seed), seconds,
           kept={b.generator: b.kept for b in made.batches}, note=made.judge)

    if k == args.similarity_k:
        # every side at k*C rows: the statistics depend on the sample size, so equal counts keep rows comparable
        rng = np.random.default_rng([seed, k, 7])
        size = len(y)
        sources = {"real labeled items (reference)": x, "fixed policy": fixed and fixed.x,
                   "learned policy": learned and learned.x, "hallucinator": hallucinated and hallucinated.x,
                   "VAE": vae and vae.x, "VAE, labeled images": own_vae and own_vae.x}
        cell["similarity"] = {}
        for name, rows in sources.items():
            if rows is None or len(rows) < 4:
                continue
            rows = rows if len(rows) <= size else rows[np.sort(rng.choice(len(rows), size, replace=False))]
            cell["similarity"][name] = similarity_report(data["test_x"], rows, seed=seed)
    return cell


def run_designed_cell(data: dict, drawn: dict, *, seed: int, k: int, args: argparse.Namespace) -> dict:
    """One cell of --designed: none, the generator as the engine judges it, and its rows forced in."""
    import numpy as np

    from metalabel.evaluate import similarity_report
    from metalabel.generate.engine import AcceptedRows, DataGenerator, GeneratorOptions
    from metalabel.pipeline import generation_record

    labeled_in_pool = np.concatenate([order[:k] for order in drawn["order"]])
    x, y = drawn["pool_x"][labeled_in_pool], drawn["pool_y"][labeled_in_pool]
    rows, labels, precision = accepted_stand_in(x, y, drawn, labeled_in_pool)
    accepted = AcceptedRows(positions=rows, classes=labels)
    generator = DESIGNED[data["name"]]
    name = {"gan": "GAN", "bayesnet": "Bayesian network"}[generator]
    gw = GeneratorOptions().generated_weight
    cell = {"seed": seed, "k": k, "labeled": int(len(y)), "conditions": {}, "steps": {},
            "accepted": {"items": int(len(rows)), "precision": precision, "classes": int(np.unique(labels).size)}}

    def record(condition, new_x, new_y, seconds, kept=None, note=None):
        accuracy = weighted_accuracy(x, y, new_x, new_y, data, generated_weight=gw)
        cell["conditions"][condition] = {"accuracy": accuracy, "generated": 0 if new_y is None else int(len(new_y)),
                                         "kept": kept, "seconds": round(seconds, 2), "note": note}

    def step(learn, with_accepted=True):
        options = GeneratorOptions(augment=False, hallucinate=False, synthesize=False, gan=generator == "gan",
                                   bayesnet=generator == "bayesnet", learn=learn)
        started = time.perf_counter()
        made = DataGenerator(options).step(x, y, pool_x=drawn["pool_x"], pool_y=drawn["pseudo"],
                                           accepted=accepted if with_accepted else None,
                                           table=data["modality"] == "tabular", seed=seed)
        batch = next((b for b in made.batches if b.generator == generator), None)
        cell["steps"][f"{name}, learn={learn}, accepted={with_accepted}"] = {
            **generation_record(made).to_json(), "feedback": list(made.feedback),
            "seconds": round(time.perf_counter() - started, 2)}
        return made, batch, time.perf_counter() - started

    record("none", None, None, 0.0)
    made, batch, seconds = step(True)
    if batch is not None:
        record(name, *made.expand(x, y, seed), seconds, kept=batch.kept, note=batch.evidence)
    else:  # k=1: no held-out human labels, so the engine does not train it; force it in unjudged
        record(name, None, None, seconds, kept=False, note="; ".join(made.feedback) or "not trained")
        made, batch, seconds = step(False)
    record(f"{name} (forced)", batch.x, batch.y, seconds, kept=cell["conditions"][name]["kept"])
    if generator == "bayesnet":
        _, own, seconds = step(False, with_accepted=False)
        record(f"{name}, labeled rows only (forced)", own.x, own.y, seconds)
    # what learning from the accepted rows is worth without a generator: the rows themselves, weighted alike
    record("accepted rows themselves", drawn["pool_x"][rows], labels, 0.0)
    if k == args.similarity_k:
        rng = np.random.default_rng([seed, k, 7])
        made_rows = batch.x if len(batch.x) <= len(y) else batch.x[np.sort(rng.choice(len(batch.x), len(y),
                                                                                          replace=False))]
        cell["similarity"] = {"real labeled items (reference)": similarity_report(data["test_x"], x, seed=seed),
                              name: similarity_report(data["test_x"], made_rows, seed=seed)}
    return cell


# ----------------------------------------------------------------------------- driver


def parts_dir(args) -> Path:
    if args.designed:
        return ROOT / "logs" / "generation-designed"
    return ROOT / "runs" / "generation-quick" / "parts" if args.quick else ROOT / "logs" / "generation"


def part_path(args, name: str) -> Path:
    return parts_dir(args) / f"{name}.json"


def source_hashes() -> dict[str, str]:
    """Short sha256 of the whole package, and of the engine's and the judge's source, so a partial file says which
    code made it (the engine's alone tells the notes which judge setting the cells saw)."""
    import hashlib

    import metalabel.generate.engine
    import metalabel.generate.evidence

    modules = {f"{module.__name__.rsplit('.', 1)[1]}_sha256": Path(module.__file__)
               for module in (metalabel.generate.engine, metalabel.generate.evidence)}
    return {"package_sha256": package_sha256(),
            **{key: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for key, path in modules.items()}}


def engine_options() -> dict:
    """The engine's defaults and judge settings this run used: the report describes these, not today's library."""
    from dataclasses import asdict

    import metalabel.generate.engine as engine

    return {**asdict(engine.GeneratorOptions()),
            **{name.lower(): getattr(engine, name) for name in ("JUDGE_DIMS", "JUDGE_REPEATS", "MIN_GAIN")
               if hasattr(engine, name)}}


def run_dataset(name: str, args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_data(name, args)
    path = part_path(args, name)
    part = json.loads(path.read_text()) if args.resume and path.exists() else {
        "dataset": name, "encoder": data["encoder"], "classes": data["class_names"], "pool": args.pool,
        "test": int(len(data["test_y"])), "cells": {}}
    for key, digest in source_hashes().items():
        part.setdefault(key, []).append(digest)
    part["options"] = engine_options()
    if args.designed:
        worker = sys.argv.index("--worker")  # the command as typed: without the worker's own two arguments
        part["command"] = "python bench/generation.py " + shlex.join(sys.argv[1:worker] + sys.argv[worker + 2:])
        part["machine"] = machine()
    featurize = None
    if data["modality"] == "image" and not args.no_vae and not args.designed:
        from metalabel.data.encoders import get_encoder

        encoder = get_encoder(data["encoder"])

        def embed_images(images):  # uint8 images -> the same EfficientNet-Lite0 features the pool has
            return encoder.encode(np.asarray(images), progress=False)

        featurize = embed_images
    print(f"[{name}] data ready in {time.perf_counter() - started:.0f}s: {len(data['class_names'])} classes, "
          f"pool {args.pool} of {len(data['train_y'])}, test {len(data['test_y'])}", flush=True)
    for seed in args.seeds:
        todo = [k for k in args.k if f"seed={seed},k={k}" not in part["cells"]]
        if not todo:
            continue
        drawn = draw_seed(data, seed, args)
        for k in todo:
            t = time.perf_counter()
            cell = (run_designed_cell(data, drawn, seed=seed, k=k, args=args) if args.designed
                    else run_cell(data, drawn, seed=seed, k=k, featurize=featurize, args=args))
            cell["seconds"] = round(time.perf_counter() - t, 1)
            cell["clusters"] = drawn["clusters"]
            part["cells"][f"seed={seed},k={k}"] = cell
            save_part(path, part)
            accs = " ".join(f"{c.split(' (')[0][:12]}{'*' if '(forced)' in c else ''}="
                            f"{100 * v['accuracy']:.1f}" for c, v in cell["conditions"].items())
            print(f"[{name}] seed {seed} k={k} ({cell['seconds']:.0f}s): {accs}", flush=True)
    part["seconds"] = round(time.perf_counter() - started, 1)
    save_part(path, part)


# ----------------------------------------------------------------------------- report


def ci(values):
    """(mean, 95% t half-width, n) or None."""
    from metalabel.data.episodes import mean_confidence_interval

    values = [v for v in values if v is not None]
    if not values:
        return None
    mean, half = mean_confidence_interval(values)
    return mean, half, len(values)


def fmt(stat, *, signed=False, scale=100.0, digits=1):
    if stat is None:
        return "–"
    mean, half, n = stat
    text = f"{scale * mean:+.{digits}f}" if signed else f"{scale * mean:.{digits}f}"
    return text + ("" if n < 2 or math.isnan(half) else f" ± {scale * half:.{digits}f}")


def verdict(stat) -> str:
    if stat is None:
        return "–"
    mean, half, n = stat
    if n < 2 or math.isnan(half):
        return "one seed: no interval"
    if mean - half > 0:
        return "**yes**"
    return "no (worse)" if mean + half < 0 else "no (interval includes 0)"


def kept_share(cells, condition):
    """How often the condition's generators were kept, e.g. ``4/5`` or ``augment 5/5, hallucinator 2/5``."""
    values = [c["conditions"][condition]["kept"] for c in cells if condition in c["conditions"]]
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if isinstance(values[0], dict):
        names = sorted({n for v in values for n in v}, key=lambda n: ["augment", "hallucinator", "vae"].index(n)
                       if n in ("augment", "hallucinator", "vae") else 9)
        return ", ".join(f"{n} {sum(bool(v.get(n)) for v in values)}/{len(values)}" for n in names)
    return f"{sum(bool(v) for v in values)}/{len(values)}"


def table_rows(part):
    cells = list(part["cells"].values())
    rows = []
    for k in sorted({c["k"] for c in cells}):
        at_k = sorted((c for c in cells if c["k"] == k), key=lambda c: c["seed"])
        for condition in CONDITIONS:
            paired = [c for c in at_k if condition in c["conditions"]]
            if not paired:
                continue
            accuracy = [c["conditions"][condition]["accuracy"] for c in paired]
            gain_none = [c["conditions"][condition]["accuracy"] - c["conditions"]["none"]["accuracy"] for c in paired]
            gain_fixed = [c["conditions"][condition]["accuracy"] - c["conditions"]["fixed policy"]["accuracy"]
                          for c in paired]
            rows.append({"k": k, "condition": condition, "seeds": len(paired), "accuracy": ci(accuracy),
                         "gain_vs_none": ci(gain_none), "gain_vs_fixed": ci(gain_fixed),
                         "generated": ci([c["conditions"][condition]["generated"] for c in paired]),
                         "kept": kept_share(paired, condition),
                         "seconds": ci([c["conditions"][condition]["seconds"] for c in paired])})
    return rows


def judge_rows(part, judged_conditions=JUDGED):
    """Per k and generator: how often the judge kept it, how often forcing it in helped on test, and agreement."""
    cells = list(part["cells"].values())
    rows = []
    for k in sorted({c["k"] for c in cells}):
        for generator, judged, forced in judged_conditions:
            paired = sorted((c for c in cells if c["k"] == k and judged in c["conditions"]
                             and forced in c["conditions"]), key=lambda c: c["seed"])
            if not paired:
                continue
            kept = [bool(c["conditions"][judged]["kept"]) for c in paired]
            gain_forced = [c["conditions"][forced]["accuracy"] - c["conditions"]["none"]["accuracy"] for c in paired]
            gain_judged = [c["conditions"][judged]["accuracy"] - c["conditions"]["none"]["accuracy"] for c in paired]
            helped = [g > 0 for g in gain_forced]
            estimates = [re.search(r"held-out ([\d.]+)% vs ([\d.]+)%", c["conditions"][judged]["note"] or "")
                         for c in paired]
            rows.append({"k": k, "generator": generator, "seeds": len(paired), "kept": sum(kept),
                         "helped": sum(helped), "right": sum(a == b for a, b in zip(kept, helped)),
                         "estimate": ci([(float(m[1]) - float(m[2])) / 100 if m else None for m in estimates]),
                         "gain_judged": ci(gain_judged), "gain_forced": ci(gain_forced)})
    return rows


def similarity_rows(part):
    cells = [c for c in part["cells"].values() if "similarity" in c]
    names = [n for n in ("real labeled items (reference)", "fixed policy", "learned policy", "hallucinator", "VAE",
                         "VAE, labeled images", "GAN", "Bayesian network") if any(n in c["similarity"] for c in cells)]
    rows = []
    for name in names:
        reports = [c["similarity"][name] for c in cells if name in c["similarity"]]
        rows.append({"source": name, "seeds": len(reports), "k": cells[0]["k"],
                     **{m: ci([r[m] for r in reports]) for m in ("mmd", "frechet", "precision", "recall")},
                     "rows": reports[0]["generated"]})
    return rows


def judge_spaces(o: dict, parts: dict) -> str:
    """Where the run's judges classify. Read from the engine's source when the partial files were made by it."""
    import inspect

    import metalabel.generate.engine as engine

    pca = f"in the pool's top {o['judge_dims']} principal components" if o.get("judge_dims") else None
    if pca is None:
        return "both classify in the full feature space"
    made_by = {part.get("engine_sha256", ["?"])[-1] for part in parts.values()}
    current = made_by == {source_hashes()["engine_sha256"]}
    if current and "featurize=None" in inspect.getsource(engine.DataGenerator.step):
        return (f"the augmentation-policy searches classify {pca}; the keep-or-drop verdicts on the hallucinator "
                "and the VAE classify in the full feature space")
    return f"both classify {pca}"


def markdown(parts: dict, meta: dict) -> str:
    o = next((part["options"] for part in parts.values() if "options" in part), {})
    judge_space = judge_spaces(o, parts)
    lines = [
        "# Generated data and downstream accuracy: augmentation, hallucinator, VAE, with and without feedback",
        "",
        f"Command: `{meta.get('command', '?')}`",
        "",
        f"Machine: {meta.get('machine', '?')}. Time: {meta.get('run_time', '?')}.",
        "",
        "Setup. Features: Fashion-MNIST through EfficientNet-Lite0 at 64 px (1280-d); 20 Newsgroups "
        f"({meta.get('newsgroups_classes', 20)} newsgroups) through MiniLM (384-d), from the on-disk embedding "
        f"cache. Per seed: a pool of {meta.get('pool', '?')} items drawn from the train split, its k-means "
        "pseudo-classes made as `metalabel run` makes them (`cluster_pseudo_labels`, pool/50 clusters), and k "
        "labeled items per class drawn from the pool (nested over k). Test: one fixed draw of "
        f"{meta.get('test', '?')} items of the test split, the same for every seed and condition. Each condition "
        "trains a fresh `downstream_accuracy` (standardized logistic regression) on the k*C labeled items plus the "
        "condition's generated rows, weighted by `shared_weights` as the engine weighs them: the real rows and the "
        "rows generated from them share the real rows' weight, the generated part counting `generated_weight` = 0.5 "
        "times the real part (total weight unchanged, exact copies change nothing). The engine "
        f"(`DataGenerator.step`) runs with its defaults ({o.get('copies', '?')} augmented copies, "
        f"{o.get('per_class', '?')} hallucinated / synthesized items per class, {o.get('hallucinator_steps', '?')} "
        f"hallucinator steps, {o.get('vae_steps', '?')} VAE steps) and the run's seed; rows come from "
        "`GenerationStep.expand`, "
        "so a dropped generator adds nothing. Nothing was tuned on the test set: every option is the library "
        "default.",
        "",
        "Conditions: **none** = labeled items only. **fixed policy** = `FIXED_POLICY` (gaussian noise + "
        "within-class mixing, p 0.5, m 0.5), 4 copies, engine with augment only and `learn=False`. **learned "
        "policy** = engine with augment only, `learn=True` (greedy policy search judged on held-out human labels, "
        "or before two labels per class on episodes of the pool's pseudo-classes). **hallucinator** = engine with "
        "the hallucinator only (`learn=True`), as judged; *(forced)* = its rows whatever the verdict. **VAE** "
        "(Fashion-MNIST) = engine with the VAE only, samples through EfficientNet-Lite0. As in the pipeline it "
        "learns from accepted model labels, never from the human ones (the judge's held-out evidence); standing in "
        f"for accepted labels: the {ACCEPTED_SHARE:.0%} of the pool (labeled items left out) that a nearest-class-mean "
        "classifier of the labeled items is surest of, with its labels. At k=1 the engine has no held-out human "
        "labels and does not train it; *(forced)* = the same VAE's rows whatever the verdict (at k=1 trained with "
        "`learn=False`). **VAE, labeled images (forced)** = the VAE trained on the labeled images themselves, kept "
        "unjudged. **all, feedback off** = everything with `learn=False` (fixed policy, "
        "every generator kept unjudged). **all (metalabel run)** = everything with `learn=True`, what "
        "`metalabel run` does. The judge (`learn=True`): with two or more labels per class, held-out accuracy of a "
        f"standardized logistic regression over 5 folds of the labeled items, repeated on {o.get('judge_repeats', 1)} "
        "fold splits; at k=1, few-shot episodes over the third of the pool's pseudo-classes set aside for judging "
        f"(the hallucinator trains on the other two thirds); {judge_space}.",
        "",
        "Columns: test accuracy in %, mean ± 95% t-interval over seeds; gains are paired differences (same seed, "
        "same labeled items) in points, mean ± 95% t-interval; *rows* = generated rows added (mean); *kept* = how "
        "often the engine kept the generator (forced rows are added anyway; the fraction shows the engine's "
        "verdict).",
        "",
    ]
    goal_lines, sections = [], []
    for name, part in parts.items():
        rows = table_rows(part)
        seeds = sorted({c["seed"] for c in part["cells"].values()})
        sections += [f"## {name} ({len(part['classes'])} classes, {len(seeds)} seeds: "
                     f"{', '.join(map(str, seeds))})", "",
                     "| k | condition | test accuracy | gain vs none | gain vs fixed | rows | kept | engine s |",
                     "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            bold = r["condition"] in ("learned policy", "all (metalabel run)")
            label = f"**{r['condition']}**" if bold else r["condition"]
            sections.append(f"| {r['k']} | {label} | {fmt(r['accuracy'])} | "
                            f"{'' if r['condition'] == 'none' else fmt(r['gain_vs_none'], signed=True)} | "
                            f"{'' if r['condition'] == 'fixed policy' else fmt(r['gain_vs_fixed'], signed=True)} | "
                            f"{fmt(r['generated'], scale=1, digits=0).split(' ±')[0]} | {r['kept']} | "
                            f"{fmt(r['seconds'], scale=1).split(' ±')[0]} |")
        sims = similarity_rows(part)
        if sims:
            sections += ["", f"Similarity to the real test features at k={sims[0]['k']} (every side subsampled to "
                         f"{sims[0]['rows']} rows = k*C, mean ± 95% t over seeds; lower MMD / Frechet and higher "
                         "precision / recall (%) are closer to real; the first row is a real sample of the same "
                         "size, what a perfect generator would score at that count):", "",
                         "| generated by | seeds | MMD | Frechet | precision | recall |", "|---|---|---|---|---|---|"]
            for sim in sims:
                frechet_digits = 1 if sim["frechet"] and abs(sim["frechet"][0]) >= 10 else 3
                sections.append(f"| {sim['source']} | {sim['seeds']} | {fmt(sim['mmd'], scale=1, digits=4)} | "
                                f"{fmt(sim['frechet'], scale=1, digits=frechet_digits)} | {fmt(sim['precision'])} | "
                                f"{fmt(sim['recall'])} |")
        verdicts = judge_rows(part)
        if verdicts:
            sections += ["", "The judge against the test set: *kept* = seeds where the engine kept the generator "
                         "(run alone, `learn=True`); *forcing helped* = seeds where its rows, forced in, raised test "
                         "accuracy over none; *judge right* = kept and helped, or dropped and did not help; "
                         "*judge's estimate* = its held-out accuracy with minus without the generator (seeds where "
                         "it judged); *test gain* = paired gain over none on the test set, with the engine's verdict "
                         "and forced in.", "",
                         "| k | generator | kept | forcing helped | judge right | judge's estimate | "
                         "test gain as judged | test gain forced |", "|---|---|---|---|---|---|---|---|"]
            sections += [f"| {v['k']} | {v['generator']} | {v['kept']}/{v['seeds']} | {v['helped']}/{v['seeds']} | "
                         f"{v['right']}/{v['seeds']} | {fmt(v['estimate'], signed=True)} | "
                         f"{fmt(v['gain_judged'], signed=True)} | {fmt(v['gain_forced'], signed=True)} |"
                         for v in verdicts]
        training = [(c["k"], c["vae_training"]) for c in part["cells"].values() if "vae_training" in c]
        if training:
            sections += ["", "The VAE's stand-in for accepted labels (pool items, precision of their labels, classes "
                         "covered; mean over seeds): " + "; ".join(
                             f"k={k}: {sum(t['items'] for kk, t in training if kk == k) / n:.0f} items, "
                             f"{100 * sum(t['precision'] for kk, t in training if kk == k) / n:.1f}% right, "
                             f"{sum(t['classes'] for kk, t in training if kk == k) / n:.1f} classes"
                             for k in sorted({k for k, _ in training})
                             for n in [sum(kk == k for kk, _ in training)]) + "."]
        by = {(r["k"], r["condition"]): r for r in rows}
        for k in GOAL_K:
            for condition in ("learned policy", "all (metalabel run)", "all, feedback off"):
                r = by.get((k, condition))
                if r is None:
                    continue
                goal_lines.append(f"| {name} | {k} | {condition} | {fmt(r['gain_vs_none'], signed=True)} | "
                                  f"{verdict(r['gain_vs_none'])} | {fmt(r['gain_vs_fixed'], signed=True)} | "
                                  f"{verdict(r['gain_vs_fixed'])} |")
        cell_s = [c["seconds"] for c in part["cells"].values()]
        sections += ["", f"Pool {part['pool']} items, test {part['test']}; {len(cell_s)} cells, "
                     f"{min(cell_s or [0]):.0f}–{max(cell_s or [0]):.0f} s each; worker time of the last invocation: "
                     f"{part.get('seconds', 'unfinished')} s.", ""]
    if goal_lines:
        lines += ["## The goal: does the learned generator beat no generation and the fixed policy at k = 1 and 5?",
                  "", "*yes* = the paired gain's 95% interval lies above 0. *all, feedback off* is there for "
                  "reference: it learns nothing from feedback.", "",
                  "| data set | k | condition | gain vs none | above none? | gain vs fixed | above fixed? |",
                  "|---|---|---|---|---|---|---|", *goal_lines, ""]
    lines += sections
    if meta.get("notes"):
        lines += ["## Notes", "", *meta["notes"], ""]
    return "\n".join(lines)


def designed_markdown(designed: dict, notes: list[str] | None = None) -> str:
    """The --designed section: per data set, the generator judged and forced against none, similarity, verdicts."""
    import numpy as np

    lines = [DESIGNED_SECTION, "",
             "Each generator alone, run by the engine (`DataGenerator.step`) with its defaults and the run's seed; the "
             "same protocol, baseline and columns as above (test accuracy in %, paired gains over none in points, mean "
             "± 95% t over seeds). The GAN learns from the stand-in for accepted labels the VAE uses (the 25% of the "
             "pool a nearest-class-mean classifier of the labeled items is surest of, with its labels). The network "
             "is refitted on each judging fold's labeled rows plus those accepted rows; *labeled rows only* = fitted "
             "on the labeled rows alone, forced in. *accepted rows themselves* = the stand-in's rows added as they "
             "are, weighted as generated rows (`shared_weights`): what the accepted labels give without a generator. "
             "At k=1 the engine has no held-out human labels and trains "
             "neither; *(forced)* rows then come from `learn=False`. Tables: scikit-learn's bundled digits (64 "
             "columns, 10 classes) and breast cancer (30 columns, 2 classes), standardized, a fixed test draw "
             f"({TABLE_TEST['digits']} / {TABLE_TEST['breast-cancer']} rows) and per seed a pool of 80% of the rest.",
             ""]
    for name, part in designed.items():
        cells = list(part["cells"].values())
        seeds = sorted({c["seed"] for c in cells})
        lines += [f"### {name}: {DESIGNED[name]} ({len(part['classes'])} classes, {len(seeds)} seeds)", "",
                  f"Command: `{part.get('command', '?')}`", "",
                  "| k | condition | test accuracy | gain vs none | rows | kept | engine s |",
                  "|---|---|---|---|---|---|---|"]
        for k in sorted({c["k"] for c in cells}):
            at_k = [c for c in cells if c["k"] == k]
            for condition in dict.fromkeys(n for c in at_k for n in c["conditions"]):
                paired = [c for c in at_k if condition in c["conditions"]]
                values = [c["conditions"][condition] for c in paired]
                gain = ci([v["accuracy"] - c["conditions"]["none"]["accuracy"] for v, c in zip(values, paired)])
                lines.append(f"| {k} | {condition} | {fmt(ci([v['accuracy'] for v in values]))} | "
                             f"{'' if condition == 'none' else fmt(gain, signed=True)} | "
                             f"{fmt(ci([v['generated'] for v in values]), scale=1, digits=0).split(' ±')[0]} | "
                             f"{kept_share(paired, condition)} | "
                             f"{fmt(ci([v['seconds'] for v in values]), scale=1).split(' ±')[0]} |")
        sims = similarity_rows(part)
        if sims:
            lines += ["", f"Similarity to the real test rows at k={sims[0]['k']} ({sims[0]['rows']} rows a side):", "",
                      "| generated by | seeds | MMD | Frechet | precision | recall |", "|---|---|---|---|---|---|"]
            lines += [f"| {sim['source']} | {sim['seeds']} | {fmt(sim['mmd'], scale=1, digits=4)} | "
                      f"{fmt(sim['frechet'], scale=1, digits=1 if abs(sim['frechet'][0]) >= 10 else 3)}"
                      f" | {fmt(sim['precision'])} | {fmt(sim['recall'])} |" for sim in sims]
        verdicts = judge_rows(part, DESIGNED_JUDGED)
        if verdicts:
            lines += ["", "| k | generator | kept | forcing helped | judge right | judge's estimate | "
                      "test gain as judged | test gain forced |", "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {v['k']} | {v['generator']} | {v['kept']}/{v['seeds']} | {v['helped']}/{v['seeds']} | "
                      f"{v['right']}/{v['seeds']} | {fmt(v['estimate'], signed=True)} | "
                      f"{fmt(v['gain_judged'], signed=True)} | {fmt(v['gain_forced'], signed=True)} |"
                      for v in verdicts]
        accepted = [(c["k"], c["accepted"]) for c in cells]
        lines += ["", "Accepted-label stand-in (mean over seeds): " + "; ".join(
            f"k={k}: {np.mean([a['items'] for kk, a in accepted if kk == k]):.0f} rows, "
            f"{100 * np.mean([a['precision'] for kk, a in accepted if kk == k]):.1f}% right"
            for k in sorted({k for k, _ in accepted})) +
            f". Worker time: {part.get('seconds', 'unfinished')} s on {part.get('machine', '?')}.", ""]
    return "\n".join(lines + (["#### Notes", "", *notes, ""] if notes else []))


def report(args: argparse.Namespace, meta: dict) -> None:
    out = ROOT / "runs" / "generation-quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "generation.json"
    before = json.loads(previous.read_text()) if previous.exists() else {}
    if args.designed:  # only its own section and key: the rest of the page stays as the last full run left it
        designed = {**before.get("designed", {}), **{name: json.loads(part_path(args, name).read_text())
                                                     for name in args.datasets if part_path(args, name).exists()}}
        notes = args.notes.read_text().splitlines() if args.notes else before.get("designed_notes")
        previous.write_text(json.dumps({**before, "designed": designed, **({"designed_notes": notes} if notes else {})},
                                       indent=1, default=float))
        page = (out / "generation.md").read_text() if (out / "generation.md").exists() else ""
        page = page.split("\n" + DESIGNED_SECTION)[0].rstrip("\n") + "\n\n"
        (out / "generation.md").write_text(page + designed_markdown(designed, notes))
        return
    parts = {name: json.loads(part_path(args, name).read_text()) for name in args.datasets
             if part_path(args, name).exists()}
    if args.report and previous.exists():
        meta = {**before.get("meta", {}), **{k: v for k, v in meta.items() if v}}
    kept = {key: before[key] for key in ("designed", "designed_notes") if key in before}
    (out / "generation.json").write_text(json.dumps({"meta": meta, "datasets": parts, **kept}, indent=1,
                                                    default=float))
    (out / "generation.md").write_text(markdown(parts, meta) + ("\n" + designed_markdown(
        kept["designed"], kept.get("designed_notes")) if "designed" in kept else ""))


def machine() -> str:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, torch {torch_version} CPU, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, choices=sorted({*DATASETS, *DESIGNED}),
                        help=f"default: {' '.join(DATASETS)} ({' '.join(DESIGNED)} with --designed)")
    parser.add_argument("--designed", action="store_true",
                        help="the generators the design names: the GAN (fashion-mnist), the Bayesian network (tables)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 5, 10], help="labeled items per class")
    parser.add_argument("--pool", type=int, default=4000, help="pool items drawn from the train split per seed")
    parser.add_argument("--test", type=int, default=2000, help="test items drawn once from the test split")
    parser.add_argument("--newsgroups-classes", type=int, default=20, help="the first N newsgroups (sorted names)")
    parser.add_argument("--similarity-k", type=int, default=5)
    parser.add_argument("--no-vae", action="store_true", help="leave the VAE out (Fashion-MNIST)")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, output under bench/runs/")
    add_pool_options(parser)
    args = parser.parse_args(argv)
    args.datasets = args.datasets or list(DESIGNED if args.designed else DATASETS)
    if unfit := [name for name in args.datasets if name not in (DESIGNED if args.designed else DATASETS)]:
        parser.error(f"{', '.join(unfit)} only with{'out' if args.designed else ''} --designed")
    if args.quick and "--seeds" not in (sys.argv if argv is None else argv):
        args.seeds = [0]
    if args.worker:
        run_dataset(args.worker, args)
        return
    command = "python bench/generation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {"command": args.command or (None if args.report else command), "machine": machine(), "pool": args.pool,
            "test": args.test, "newsgroups_classes": args.newsgroups_classes, "seeds": args.seeds, "k": args.k}
    if args.notes:
        meta["notes"] = args.notes.read_text().splitlines()
    if args.report:  # a run_time of None keeps the one the last full run wrote
        report(args, {**meta, "run_time": args.run_time})
    else:
        run_workers(__file__, sys.argv[1:] if argv is None else argv, args.datasets, jobs=args.jobs,
                    threads=args.threads, poll_seconds=2,
                    on_poll=lambda run_time: report(args, {**meta, "run_time": run_time}))


if __name__ == "__main__":
    main()
