"""How the scorecard moves over rounds with feedback on versus off (issue 5), on Fashion-MNIST and 20 Newsgroups.

Each run is a real ``metalabel run`` (Project.create + project.run) on a pool drawn from the
data set's test split, from k seed labels per class, with a simulated person answering
from the true labels (noise 0). Feedback on is the default loop: the augmentation policy is
searched and every generator is kept only on held-out evidence, the project's meta-learner
continues on the grown data. Feedback off (``feedback=False``) uses the hand-set policy and
keeps every generator unjudged. Both accept only what the reference sample certifies and ask
the same number of questions, reference questions included.

Per round it records what the scorecard says (certified bound, estimated precision,
held-out accuracy, the downstream classifier with and without generated data) beside what
the true labels say (achieved precision of the accepted labels, accuracy of all labels).

    python bench/feedback_rounds.py --seeds 0 1 2        # what made bench/results/feedback_rounds.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _workers import package_sha256  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATASETS = {"fashion-mnist": "efficientnet-lite0", "20newsgroups": "minilm"}


def pool_of(name: str, size: int, seed: int):
    import metalabel as ml

    full = ml.datasets.load(name, split="test")
    rows = np.sort(np.random.default_rng(seed).choice(len(full), min(size, len(full)), replace=False))
    return full.subset(rows)


def one_run(name: str, *, feedback: bool, seed: int, k: int, size: int, budget: int, per_round: int) -> list[dict]:
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    pool = pool_of(name, size, seed)
    gold = gold_labels(pool)
    with tempfile.TemporaryDirectory() as folder, Project.create(
            Path(folder) / "p", pool=pool, labels=seed_labels_from_pool(pool, per_class=k, seed=seed)) as project:
        result = project.run(oracle=SimulatedOracle(gold), encoder=DATASETS[name], budget=budget, per_round=per_round,
                             gold=gold, progress=False, seed=seed, feedback=feedback)
    rows = []
    for report in result.rounds:
        card, gold = report.scorecard, report.gold
        assert gold is not None  # the run is given the pool's gold labels
        rows.append({
            "round": report.round_id, "human": report.human_labels, "model_labels": report.model_labels,
            "coverage": report.coverage, "certified": report.certified_precision,
            "estimated_precision": report.estimated_precision, "reference": report.reference_answers,
            "held_out": report.held_out_accuracy, "achieved_precision": gold.achieved_precision,
            "label_accuracy": gold.label_accuracy,
            "downstream_real": None if card.downstream is None else card.downstream.real_only,
            "downstream_generated": None if card.downstream is None else card.downstream.with_generated,
            "kept": sorted(name for name, outcome in card.generators.items() if outcome.kept),
            "feedback": list(report.feedback), "seconds": report.seconds,
        })
    return rows


def mean(values) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return "-" if not values else f"{100 * float(np.mean(values)):.1f}"


def table(results: dict) -> list[str]:
    lines = []
    for name, by_mode in results.items():
        lines += [f"### {name}", "",
                  "| round | feedback | human | model labels | certified bound | est. precision | reference answers "
                  "| achieved precision "
                  "| label accuracy | held-out | downstream real / +generated | generators kept |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rounds = max(len(run) for runs in by_mode.values() for run in runs)
        for r in range(rounds):
            for mode, runs in by_mode.items():
                rows = [run[r] for run in runs if len(run) > r]
                if not rows:
                    continue
                kept = sorted({g for row in rows for g in row["kept"]})
                lines.append(
                    f"| {r + 1} | {mode} | {np.mean([x['human'] for x in rows]):.0f} "
                    f"| {np.mean([x['model_labels'] for x in rows]):.0f} | {mean(x['certified'] for x in rows)} "
                    f"| {mean(x['estimated_precision'] for x in rows)} "
                    f"| {np.mean([x['reference'] for x in rows]):.0f} "
                    f"| {mean(x['achieved_precision'] for x in rows)} | {mean(x['label_accuracy'] for x in rows)} "
                    f"| {mean(x['held_out'] for x in rows)} | {mean(x['downstream_real'] for x in rows)} / "
                    f"{mean(x['downstream_generated'] for x in rows)} | {', '.join(kept) or '-'} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=5, help="seed labels per class")
    parser.add_argument("--pool-size", type=int, default=2000)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "feedback_rounds")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    started = time.time()
    results: dict = {}
    for name in args.datasets:
        results[name] = {}
        for mode, feedback in (("on", True), ("off", False)):
            results[name][mode] = []
            for seed in args.seeds:
                t = time.time()
                results[name][mode].append(one_run(name, feedback=feedback, seed=seed, k=args.k, size=args.pool_size,
                                                   budget=args.budget, per_round=args.per_round))
                print(f"{name} feedback {mode} seed {seed}: {time.time() - t:.0f} s", flush=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    command = "python bench/feedback_rounds.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Feedback on vs off, round by round", "",
        f"`{command}` (metalabel package sha256 {package_sha256()}) — {time.time() - started:.0f} s on this "
        f"2-core CPU, {len(args.seeds)} seeds, pools of "
        f"{args.pool_size} test-split items, {args.k} seed labels per class, {args.budget} questions "
        f"({args.per_round} a round, split by the planner between the reference sample and the query "
        "strategy). Figures are means over seeds, in %. "
        "Achieved precision and label accuracy are measured against the true labels; the rest is what "
        "the scorecard itself reports.", "",
        *table(results),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
