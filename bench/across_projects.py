"""Does a library of past projects make the next one cheaper? (issue 16)

Two modes. ``--mode stream`` (the default; the issue's benchmark, bench/results/across_projects_stream.md):
a team's projects come one after another, 20 Newsgroups in 5 projects of 4 topics, Fashion-MNIST in
5 projects of 2 classes. Project n runs the labeling loop (bench/label_efficiency.run_metalabel,
simulated oracle from the gold labels, its fast settings generate=false project_meta_steps=0) cold
and from the library of projects 1..n-1 (``Library.train``, then ``Project.run(model.learner,
encoder=...)``, where the judge keeps the library's learner only where it predicts held-out labels
better than the plain encoder space), with the same seeds, seed labels and budgets; the run from
the library (the cold one while there is none) is then added to that seed's library as it finished.
Reported against n: oracle answers until 90% of the pool's labels are right, and label accuracy at
each budget, mean ± 95% CI over seeds.

``--mode first-round`` (bench/results/across_projects.md), the earlier measure:
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

    nice -n 10 python bench/across_projects.py --datasets 20newsgroups        # the stream, 3 seeds
    nice -n 10 python bench/across_projects.py --datasets fashion-mnist --seeds 0 --budgets 0 20 50
    nice -n 10 python bench/across_projects.py --mode first-round  # what made bench/results/across_projects.md
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

from label_efficiency import LoopInputs, balanced_subset, labels_to_goal, run_metalabel  # bench/ is on the path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATASETS = {  # name -> (loader, encoder, pool limit, projects); pools as bench/label_efficiency.py cached them
    "20newsgroups": ("metalabel.data.sources.newsgroups", "minilm", 3000, 5),
    "fashion-mnist": ("metalabel.data.sources.fashion_mnist", "efficientnet-lite0", 10000, 4),
}


def project_pools(pool, x: np.ndarray, *, projects: int, seed: int):
    """The pool split into ``projects`` pools of disjoint topics, each with its rows of ``x``."""
    topics = np.random.default_rng([seed, 16]).permutation(pool.num_classes)
    pools = []
    for group in np.array_split(topics, projects):
        rows = np.flatnonzero(np.isin(pool.labels, group))
        # a subset keeps the parent's class list: narrow it to the project's own topics
        ordered = sorted(int(c) for c in group)
        remap = {c: i for i, c in enumerate(ordered)}
        sub = replace(pool.subset(rows, name=f"{pool.name}-{'-'.join(map(str, ordered))}"),
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


# ----------------------------------------------------------------------------- the stream (the benchmark)

STREAM_PROJECTS = {"20newsgroups": 5, "fashion-mnist": 5}  # 4 topics each; 2 clothing classes each
STREAM_LOOP = {"generate": False, "project_meta_steps": 0}
"""The fast loop of bench/label_efficiency.py: on 20 Newsgroups it cut a run from 108 s to 5 s at the same accuracy."""


def run_stream(dataset: str, tmp: Path, *, args: argparse.Namespace) -> list[dict]:
    """Project n = 1..N in order, cold and with the library of projects 1..n-1, for every seed.

    The library of seed s holds what that seed's earlier runs left (the run with the library where
    there was one, else the cold one): seed and human labels and the model labels a certificate
    admitted, as ``Library.add`` keeps a finished project.
    """
    import importlib

    from metalabel.data.encoders import embed_dataset
    from metalabel.library import Library

    module, encoder, pool_limit, _ = DATASETS[dataset]
    pool = balanced_subset(importlib.import_module(module).load(split="train"), pool_limit)
    x = embed_dataset(pool, encoder, progress=True)  # cached by bench/label_efficiency.py at this pool limit
    pools = project_pools(pool, x, projects=STREAM_PROJECTS[dataset], seed=0)
    tmp.mkdir(parents=True)
    os.environ["METALABEL_CACHE"] = str(tmp / "cache")  # the subsets' embeddings go here, not the user's cache
    for sub, rows in pools:
        seed_cache(sub, rows, encoder)
    loop_args = argparse.Namespace(loop_options=STREAM_LOOP, downstream_cap=0)
    cells = []
    for seed in args.seeds:
        library = Library(tmp / f"library-seed{seed}")
        for n, (sub, _) in enumerate(pools, start=1):
            cell: dict = {"dataset": dataset, "project": n, "classes": sub.class_names, "seed": seed,
                          "library_projects": len(library.names())}

            def keep(project, result, n=n) -> None:
                library.add(project, name=f"project-{n}")

            model = None
            if len(library.names()) >= 2:  # one to learn from, one held out to choose the checkpoint
                trained_at = time.perf_counter()
                model = library.train(steps=args.stream_steps[dataset], shots=5, queries=10, val_episodes=100,
                                      seed=seed)
                cell["library_model"] = {"summary": model.summary(), "validated_on": model.validated_on,
                                         "validation_accuracy": model.validation_accuracy,
                                         "encoder_space_accuracy": model.encoder_space_accuracy,
                                         "train_seconds": round(time.perf_counter() - trained_at, 1)}
            options = {"seed": seed, "k": args.stream_k, "strategy": "auto", "budgets": args.budgets,
                       "per_round": args.per_round, "args": loop_args}
            cell["cold"] = stream_run(run_metalabel(sub, None, None, None, loop=LoopInputs(None, None),
                                                    after_run=None if model else keep, **options))
            if model is not None:
                cell["library"] = stream_run(run_metalabel(sub, None, None, None,
                                                           loop=LoopInputs(model.learner, model.run_encoder),
                                                           after_run=keep, **options))
            cells.append(cell)
            print(f"[{dataset} seed {seed}] project {n} ({', '.join(sub.class_names)}), library of "
                  f"{cell['library_projects']}: " + "; ".join(
                      f"{arm} to 90%: {cell[arm]['answers_to_90']}, label accuracy "
                      + "/".join(f"{100 * cell[arm]['label_accuracy'][b]:.1f}" for b in args.budgets)
                      + f" ({cell[arm]['seconds']} s)" for arm in ("cold", "library") if arm in cell), flush=True)
    return cells


def stream_run(found: dict) -> dict:
    """One run's figures: label and pool accuracy at each budget, answers to 90% label accuracy, its choices."""
    trajectory = found["trajectory"]
    return {"label_accuracy": {b: row["label_accuracy"] for b, row in found["cells"].items()},
            "pool_accuracy": {b: row["pool_accuracy"] for b, row in found["cells"].items()},
            "answers_to_90": labels_to_goal((row["answered"], row["label_accuracy"]) for row in trajectory),
            "answers_scanned": max(row["answered"] for row in trajectory),
            "models": [row["model"] for row in trajectory], "seconds": found["seconds"]}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["stream", "first-round"], default="stream",
                        help="stream: projects 1..N in order, each with the library of the ones before (the issue's "
                             "benchmark); first-round: each project in turn new, the others fully labeled")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--loop", nargs="*", default=["20newsgroups"], choices=list(DATASETS),
                        help="first-round: data sets whose new projects also run the loop's first round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="first-round: seed labels per class")
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 150],
                        help="first-round: library meta-training steps, one per data set")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--stream-k", type=int, default=1, help="stream: seed labels per class")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 20, 50, 100],
                        help="stream: answers at which accuracy is read; the largest is each run's budget")
    parser.add_argument("--per-round", type=int, default=10, help="stream: questions a round")
    parser.add_argument("--stream-steps", nargs="+", default=["20newsgroups=300", "fashion-mnist=150"],
                        metavar="NAME=STEPS", help="stream: library meta-training steps per data set")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file stem (default bench/results/across_projects[_stream])")
    args = parser.parse_args()
    args.budgets = sorted(args.budgets)
    if any(b % args.per_round for b in args.budgets):
        raise SystemExit(f"budgets {args.budgets} must be multiples of --per-round {args.per_round}")
    args.stream_steps = {name: int(steps) for name, _, steps in (v.partition("=") for v in args.stream_steps)}
    args.out = args.out or RESULTS / ("across_projects_stream" if args.mode == "stream" else "across_projects")

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    cells, libraries = [], []
    with tempfile.TemporaryDirectory(prefix="across-projects-") as name:
        for i, dataset in enumerate(args.datasets):
            tmp = Path(name) / dataset
            if args.mode == "stream":
                cells += run_stream(dataset, tmp, args=args)
                write_stream_results(args, cells, (time.perf_counter() - started) / 60)  # what finished so far
                continue
            found = run_dataset(dataset, tmp, steps=args.steps[i], loop=dataset in args.loop, args=args)
            cells += found[0]
            libraries += found[1]
    if args.mode == "first-round":
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


def run_meta(minutes: float) -> dict:
    """The command, commit, wall time and machine a results file states."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    command = "nice -n 10 python bench/across_projects.py " + shlex.join(sys.argv[1:])
    return {"command": command.strip(), "commit": commit, "minutes": round(minutes, 1),
            "machine": f"{platform.machine()}, torch {__import__('torch').__version__}, 1 thread"}


def pct(pair: tuple[float, float]) -> str:
    return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"


def write_stream_results(args: argparse.Namespace, cells: list[dict], minutes: float) -> None:
    """JSON of every cell and a markdown table per data set: answers to 90% and accuracy at each budget, against n."""
    meta = run_meta(minutes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "cells": cells}, indent=2, default=str))
    cap = max(args.budgets) + args.per_round  # a run that never reached 90% counts as needing one round more

    def answers(runs: list[dict]) -> tuple[list[float], int]:
        found = [r["answers_to_90"] for r in runs]
        return [cap if a is None else a for a in found], sum(a is None for a in found)

    lines = ["# Each project makes the next one cheaper? A stream of projects, with and without the library "
             "(issue 16)", "",
             f"Made by `{meta['command']}` at {meta['commit']} ({meta['minutes']} min, {meta['machine']}).", "",
             "Projects 1..N of disjoint classes come in order; project n runs the loop cold and with the library "
             "of projects 1..n-1 (what those runs left: seed, human and certified model labels), same seeds, seed "
             f"labels ({args.stream_k} a class) and budgets ({args.per_round} questions a round, simulated oracle "
             "from the gold labels, loop options " + ", ".join(f"{k}={v}" for k, v in STREAM_LOOP.items())
             + "). The library needs two past projects to train (one held out), so project 2 runs cold only. "
             f"Answers to 90%: oracle answers until the pool's labels (people's, the model's, else its "
             f"prediction) are 90% right; a run that never got there within {max(args.budgets)} counts {cap} "
             f"(the 'not reached' column). Mean ± 95% CI over {len(args.seeds)} seeds; differences paired by seed."]
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        mine = [c for c in cells if c["dataset"] == dataset]
        lines += ["", f"## {dataset}", "",
                  "| project | library (projects) | answers to 90%, cold | with the library | fewer answers | "
                  "not reached cold / library | "
                  + " | ".join(f"label acc. at {b}: cold / library (diff.)" for b in args.budgets) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(args.budgets)]
        for n in sorted({c["project"] for c in mine}):
            at = [c for c in mine if c["project"] == n]
            cold, cold_missed = answers([c["cold"] for c in at])
            row = [f"{n} ({', '.join(at[0]['classes'])})", str(at[0]["library_projects"])]
            mean_cold = interval(cold)
            row.append(f"{mean_cold[0]:.0f} ± {mean_cold[1]:.0f}")
            paired = [c for c in at if "library" in c]
            if paired:
                warm, warm_missed = answers([c["library"] for c in paired])
                mean_warm = interval(warm)
                saved = 1 - mean_warm[0] / mean_cold[0] if mean_cold[0] else 0.0
                row += [f"{mean_warm[0]:.0f} ± {mean_warm[1]:.0f}", f"{100 * saved:.0f}%",
                        f"{cold_missed} / {warm_missed}"]
            else:
                row += ["-", "-", f"{cold_missed} / -"]
            for b in args.budgets:
                c_acc = [c["cold"]["label_accuracy"][b] for c in at]
                text = pct(interval(c_acc))
                if paired:
                    w_acc = [c["library"]["label_accuracy"][b] for c in paired]
                    diff = interval(np.subtract(w_acc, [c["cold"]["label_accuracy"][b] for c in paired]))
                    text += f" / {pct(interval(w_acc))} ({100 * diff[0]:+.1f} ± {100 * diff[1]:.1f})"
                row.append(text)
            lines.append("| " + " | ".join(row) + " |")
        trained = [c["library_model"] for c in mine if "library_model" in c]
        if trained:
            kept = sum(t["validation_accuracy"] > t["encoder_space_accuracy"] for t in trained)
            lines += ["", f"Library meta-training: {len(trained)} libraries trained, {kept} chose a checkpoint "
                      "other than the plain encoder space on their held-out project. Per project (seed "
                      f"{args.seeds[0]}):", ""]
            lines += [f"- project {c['project']}: {c['library_model']['summary']} "
                      f"({c['library_model']['train_seconds']} s)"
                      for c in mine if "library_model" in c and c["seed"] == args.seeds[0]]
    notes = args.out.with_suffix(".notes.md")
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


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
    meta = run_meta(minutes)
    commit = meta["commit"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": rows, "libraries": libraries,
                                                         "cells": cells}, indent=2, default=str))

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
