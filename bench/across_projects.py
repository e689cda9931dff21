"""Does a library of past projects make the next one cheaper? (issue 16)

A data set is split into labeling projects of disjoint classes (a fixed random split, so a
project mixes subject areas as a team's projects do): 20 Newsgroups (MiniLM, the 3000-post
class-balanced pool bench/label_efficiency.py cached) into 5 projects of 4 topics,
Fashion-MNIST (EfficientNet-Lite0, its 10,000-image pool) into 4 projects of 2-3 classes.
Each project in turn is the *new* project; the others are the team's finished projects:
each is made with ``Project.create`` (every item labeled, source "imported"), added with
``Library.add`` (which embeds it as the loop does) and the library is meta-trained with
``Library.train`` (ProtoNet over an MLP on the frozen embeddings that starts as the
identity; one past project held out to choose the checkpoint). The new project's classes
are disjoint from every library project's.

Two measures for each new project, seed s and k labels per class:

* k-shot episodes: nearest-prototype accuracy over all the new project's classes (15
  queries a class, ``--episodes`` tasks), in the encoder space and in the library's space:
  the embedding alone, no loop;
* the loop (``--loop`` data sets): its first round (``Project.run``, ``max_rounds=1``, no
  questions, generators off in both arms) on the same k seed labels, cold (the default
  start: the encoder space and a meta-learner trained on the project's own pool, CACTUs,
  the judge choosing) and from the library (``Project.run(model.learner, encoder=...)``):
  the round model's accuracy on the whole pool (gold labels).

Intervals are 95% Student-t over the (new project, seed) cells.

    nice -n 10 python bench/across_projects.py          # what made bench/results/across_projects.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATASETS = {  # name -> (loader, encoder, pool limit, projects); pools as bench/label_efficiency.py cached them
    "20newsgroups": ("metalabel.data.sources.newsgroups", "minilm", 3000, 5),
    "fashion-mnist": ("metalabel.data.sources.fashion_mnist", "efficientnet-lite0", 10000, 4),
}


def balanced_subset(dataset, limit: int | None):
    """At most ``limit`` items, as many of each class, drawn with the seed bench/label_efficiency.py uses
    (so its cached MiniLM embeddings of the 3000-post pool are found)."""
    if limit is None or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng(12345)
    per_class = limit // dataset.num_classes
    chosen = [rng.choice(members, min(per_class, len(members)), replace=False)
              for members in (np.flatnonzero(dataset.labels == c) for c in range(dataset.num_classes))]
    return dataset.subset(np.sort(np.concatenate(chosen)), name=f"{dataset.name}-{limit}")


def project_pools(pool, x: np.ndarray, *, projects: int, seed: int):
    """The pool split into ``projects`` pools of disjoint topics, each with its rows of ``x``."""
    topics = np.random.default_rng([seed, 16]).permutation(pool.num_classes)
    pools = []
    for group in np.array_split(topics, projects):
        rows = np.flatnonzero(np.isin(pool.labels, group))
        # a subset keeps the parent's class list: narrow it to the project's own topics
        ordered = sorted(int(c) for c in group)
        remap = {c: i for i, c in enumerate(ordered)}
        sub = replace(pool.subset(rows, name=f"20ng-{'-'.join(map(str, ordered))}"),
                      class_names=[pool.class_names[c] for c in ordered], groups=None,
                      labels=np.array([remap[int(c)] for c in pool.labels[rows]], dtype=np.int64))
        pools.append((sub, x[rows]))
    return pools


def seed_cache(dataset, embeddings: np.ndarray, encoder: str) -> None:
    """Put the embeddings of ``dataset``'s items where ``embed_dataset`` looks: nothing is encoded twice."""
    from metalabel.data.encoders import embedding_cache_path, get_encoder
    from metalabel.files import write_atomically

    path = embedding_cache_path(dataset.items, get_encoder(encoder))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: np.save(file, embeddings.astype(np.float32), allow_pickle=False))


def first_round(pool, folder: Path, *, k: int, seed: int, learner, encoder: str | None) -> dict:
    """The loop's first round on ``k`` seed labels per class: the round model's pool accuracy and its choice."""
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    gold = gold_labels(pool)
    started = time.perf_counter()
    with Project.create(folder, pool=pool, labels=seed_labels_from_pool(pool, per_class=k, seed=seed)) as project:
        result = project.run(learner, oracle=SimulatedOracle(gold), encoder=encoder, budget=0, max_rounds=1,
                             generate=False, gold=gold, progress=False, seed=seed)
    report = result.rounds[0]
    assert report.gold is not None
    return {"pool_accuracy": report.gold.pool_accuracy, "model": report.model,
            "seconds": round(time.perf_counter() - started, 1)}


def episode_accuracy(embed, x: np.ndarray, y: np.ndarray, *, k: int, episodes: int, seed: int) -> float:
    """Mean nearest-prototype accuracy of ``episodes`` all-class k-shot tasks (15 queries a class) in ``embed``."""
    import torch

    from metalabel.data.episodes import EpisodeSampler

    sampler = EpisodeSampler(x, y, ways=int(y.max()) + 1, shots=k, queries=15, seed=seed, length=episodes)
    correct = []
    with torch.no_grad():
        for index in range(episodes):
            episode = sampler[index]
            support, query = embed(episode.support_x), embed(episode.query_x)
            prototypes = torch.stack([support[episode.support_y == c].mean(0) for c in range(sampler.ways)])
            predicted = torch.cdist(query, prototypes).argmin(1)
            correct.append(float((predicted == episode.query_y).float().mean()))
    return float(np.mean(correct))


def interval(values) -> tuple[float, float]:
    from metalabel.data.episodes import mean_confidence_interval

    mean, half = mean_confidence_interval(np.asarray(values, dtype=float))
    return float(mean), float(half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--loop", nargs="*", default=["20newsgroups"], choices=list(DATASETS),
                        help="data sets whose new projects also run the loop's first round (the rest: episodes only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 150],
                        help="library meta-training steps, one per data set")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "across_projects")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    cells, libraries = [], []
    with tempfile.TemporaryDirectory(prefix="across-projects-") as name:
        for dataset, steps in zip(args.datasets, args.steps, strict=True):
            tmp = Path(name) / dataset
            found = run_dataset(dataset, tmp, steps=steps, loop=dataset in args.loop, args=args)
            cells += found[0]
            libraries += found[1]
    write_results(args, cells, libraries, (time.perf_counter() - started) / 60)


def run_dataset(dataset: str, tmp: Path, *, steps: int, loop: bool, args: argparse.Namespace):
    import importlib

    from metalabel.data.encoders import embed_dataset
    from metalabel.library import Library
    from metalabel.project import Project

    module, encoder, pool_limit, projects = DATASETS[dataset]
    pool = balanced_subset(importlib.import_module(module).load(split="train"), pool_limit)
    x = embed_dataset(pool, encoder, progress=True)  # cached by bench/label_efficiency.py at this pool limit
    pools = project_pools(pool, x, projects=projects, seed=0)
    cells, libraries = [], []
    tmp.mkdir(parents=True)
    os.environ["METALABEL_CACHE"] = str(tmp / "cache")  # the subsets' embeddings go here, not the user's cache
    for i, (sub, rows) in enumerate(pools):  # a finished project: every item labeled
        seed_cache(sub, rows, encoder)
        Project.create(tmp / f"past-{i}", pool=sub).close()
    for new in range(projects):
        library = Library(tmp / f"library-without-{new}")
        for i, (sub, _) in enumerate(pools):
            if i != new:
                with Project.open(tmp / f"past-{i}", pool=sub) as project:
                    library.add(project, name=f"project-{i}")
        trained_at = time.perf_counter()
        model = library.train(steps=steps, shots=5, queries=10, val_episodes=100, seed=0)
        sub, rows = pools[new]
        libraries.append({"dataset": dataset, "new_project": new, "classes": sub.class_names,
                          "summary": model.summary(), "trained_on": model.trained_on,
                          "validated_on": model.validated_on, "validation_accuracy": model.validation_accuracy,
                          "encoder_space_accuracy": model.encoder_space_accuracy,
                          "train_seconds": round(time.perf_counter() - trained_at, 1)})
        print(f"[{dataset}, new project {new}: {', '.join(sub.class_names)}] library: {model.summary()}", flush=True)
        for k in args.shots:
            for seed in args.seeds:
                cell = {"dataset": dataset, "new_project": new, "k": k, "seed": seed,
                        "episodes_encoder": episode_accuracy(lambda t: t, rows, sub.labels, k=k,
                                                             episodes=args.episodes, seed=seed),
                        "episodes_library": episode_accuracy(model.learner.embed, rows, sub.labels, k=k,
                                                             episodes=args.episodes, seed=seed)}
                if loop:
                    folder = tmp / f"new-{new}-k{k}-seed{seed}"
                    cell["cold"] = first_round(sub, folder / "cold", k=k, seed=seed, learner=None, encoder=None)
                    cell["library"] = first_round(sub, folder / "library", k=k, seed=seed, learner=model.learner,
                                                  encoder=encoder)
                cells.append(cell)
                print(f"  k={k} seed={seed}: episodes {cell['episodes_encoder']:.3f} -> "
                      f"{cell['episodes_library']:.3f}" + (
                          f"; round-1 pool accuracy cold {cell['cold']['pool_accuracy']:.3f} "
                          f"({cell['cold']['model']}), library {cell['library']['pool_accuracy']:.3f} "
                          f"({cell['library']['model']})" if loop else ""), flush=True)
    return cells, libraries


def write_results(args: argparse.Namespace, cells: list[dict], libraries: list[dict], minutes: float) -> None:
    rows = []
    for dataset in args.datasets:
        for k in args.shots:
            mine = [c for c in cells if c["dataset"] == dataset and c["k"] == k]
            enc = [c["episodes_encoder"] for c in mine]
            lib = [c["episodes_library"] for c in mine]
            row = {"dataset": dataset, "k": k, "cells": len(mine), "episodes_encoder": interval(enc),
                   "episodes_library": interval(lib), "episodes_difference": interval(np.subtract(lib, enc))}
            if mine and "cold" in mine[0]:
                cold = [c["cold"]["pool_accuracy"] for c in mine]
                warm = [c["library"]["pool_accuracy"] for c in mine]
                row |= {"cold": interval(cold), "library": interval(warm),
                        "difference": interval(np.subtract(warm, cold)),
                        "library_better": int(np.sum(np.subtract(warm, cold) > 0)),
                        "library_worse": int(np.sum(np.subtract(warm, cold) < 0))}
            rows.append(row)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    command = "nice -n 10 python bench/across_projects.py " + shlex.join(sys.argv[1:])
    meta = {"command": command.strip(), "commit": commit, "minutes": round(minutes, 1),
            "machine": f"{platform.machine()}, torch {__import__('torch').__version__}, 1 thread"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": rows, "libraries": libraries,
                                                         "cells": cells}, indent=2, default=str))

    def pct(pair: tuple[float, float]) -> str:
        return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"

    lines = [
        "# A library of past projects: the next project's start, with and without it (issue 16)",
        "",
        f"Made by `{meta['command']}` at {commit} ({meta['minutes']} min, {meta['machine']}).",
        "",
        "Each data set is split into projects of disjoint classes; each project in turn is the new one and the "
        "others, fully labeled, are the library (see the script's docstring). Mean ± 95% CI over (new project, "
        f"seed) cells, {len(args.seeds)} seeds per new project; differences are paired cell by cell.",
        "",
        "| data set | seed labels per class | cells | round-1 pool accuracy, cold start | with the library | "
        "difference | library better / worse | k-shot episodes, encoder space | library space | difference |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loop = (f"{pct(r['cold'])}% | {pct(r['library'])}% | {pct(r['difference'])} pts | "
                f"{r['library_better']} / {r['library_worse']}" if "cold" in r else "- | - | - | -")
        lines.append(f"| {r['dataset']} | {r['k']} | {r['cells']} | {loop} | {pct(r['episodes_encoder'])}% | "
                     f"{pct(r['episodes_library'])}% | {pct(r['episodes_difference'])} pts |")
    lines += ["", "Library meta-training (ProtoNet over an MLP that starts as the identity, 5-shot episodes, one "
              "past project held out to choose the checkpoint):", ""]
    for lib in libraries:
        lines.append(f"- {lib['dataset']}, new project {lib['new_project']} ({', '.join(lib['classes'])}): "
                     f"{lib['summary']} ({lib['train_seconds']} s)")
    notes = args.out.with_suffix(".notes.md")
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
