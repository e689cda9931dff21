"""Rules (labeling functions) beside the model on 20 Newsgroups (issue 14): rules alone, the model alone, both.

The pool is a class-balanced subset of the training split (``--pool-limit``, as in
bench/label_efficiency.py, whose 3000-item MiniLM embeddings are then cached), the rules are
bench/rules_20ng.toml (one keyword rule per topic, written once), and k human labels per
class are drawn at random per seed. Every figure is on the pool items without a human label,
against their true topics, and comes from the loop's own code (metalabel.label.fitting):

* rules alone: the label model (Dawid-Skene, anchored on the human labels) where a rule fired;
  majority vote beside it;
* model alone: the head the judge keeps among the loop's heads (held-out human labels);
* both: the judge choosing among those heads and the "rules + <head>" heads, and each rules
  head forced (what the judge could have kept).

Pool predictions are made as in a round: cross-fitted (every item by a fold model that never
saw its label) once labels can be held out, else by the model adapted to all of them.

``--loop-seeds`` adds whole labeling runs (``Project.run`` with the simulated oracle, one seed
label per class, no project meta-learning or generators, so the rules are the only difference)
with and without ``rules=``: certified coverage, achieved precision and label accuracy.

    nice -n 10 python bench/rules.py --pool-limit 3000 --shots 1 5 --seeds 0 1 2 --loop-seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RULES = ROOT / "rules_20ng.toml"


def load_pool(limit: int):
    sys.path.insert(0, str(ROOT))
    from label_efficiency import balanced_subset  # the same subset, so the same cached embeddings
    from metalabel.data.encoders import embed_dataset
    from metalabel.data.sources import newsgroups

    pool = balanced_subset(newsgroups.load(split="train"), limit)
    return pool, embed_dataset(pool, "minilm", progress=False)


def draw_labels(truth: np.ndarray, classes: int, shots: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, shots])
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(truth == c), shots, replace=False)
                                   for c in range(classes)]))


def pool_predictions(model, calibration, labels, ways: int) -> np.ndarray:
    """As the loop's ``_pool_probabilities``: cross-fitted logits when labels can be held out."""
    if calibration.pool_logits is not None:
        return calibration.pool_logits.argmax(1)
    return model.logits(labels.positions, labels.classes, labels.weights, ways).argmax(1)


def one_cell(pool, x, votes, shots: int, seed: int, graph: list) -> dict:
    import torch

    from metalabel.label.fitting import LabelSnapshot, calibrate, choose_model
    from metalabel.label.round_model import RoundModel, default_learner
    from metalabel.rules import LabelModel

    truth, ways = pool.labels, pool.num_classes
    human = draw_labels(truth, ways, shots, seed)
    labels = LabelSnapshot(human, truth[human], np.ones(len(human)), np.ones(len(human), bool))
    scored = np.setdiff1d(np.arange(len(truth)), human)
    fired = (votes.matrix >= 0).any(1)
    covered, quiet = scored[fired[scored]], scored[~fired[scored]]

    def accuracy(predicted: np.ndarray, where: np.ndarray) -> float:
        return float((predicted[where] == truth[where]).mean())

    started = time.perf_counter()
    label_model = LabelModel(ways).fit(votes.matrix, anchors=human, anchor_classes=truth[human])
    rules_predicted = label_model.predict_proba(votes.matrix).argmax(1)
    counts = np.stack([(votes.matrix == c).sum(1) for c in range(ways)], 1)
    cell = {"shots": shots, "seed": seed, "coverage": float(fired[scored].mean()),
            "rules_accuracy_covered": accuracy(rules_predicted, covered),
            "majority_vote_accuracy_covered": accuracy(counts.argmax(1), covered)}
    base = RoundModel(default_learner(), torch.from_numpy(x), seed=seed, graph_holder=graph,
                      rule_votes=votes.matrix)
    variants = base.variants()
    plain = [v for v in variants if not v.uses_rules]
    for name, candidates in (("model", plain), ("both", variants)):
        choice = choose_model([("encoder space", v) for v in candidates], labels, ways=ways, folds=5, seed=seed)
        chosen, calibration = choice.model, choice.calibration
        predicted = pool_predictions(chosen, calibration, labels, ways)
        cell[name] = {"head": chosen.head, "accuracy": accuracy(predicted, scored),
                      "accuracy_covered": accuracy(predicted, covered), "accuracy_quiet": accuracy(predicted, quiet),
                      "held_out_accuracy": calibration.accuracy}
    for variant in variants:
        if variant.uses_rules:
            calibration = calibrate(variant, labels, ways=ways, folds=5, seed=seed)
            predicted = pool_predictions(variant, calibration, labels, ways)
            cell[variant.head] = {"accuracy": accuracy(predicted, scored),
                                  "accuracy_covered": accuracy(predicted, covered),
                                  "held_out_accuracy": calibration.accuracy}
    cell["seconds"] = round(time.perf_counter() - started, 1)
    return cell


def loop_cell(pool, seed: int, *, use_rules: bool, budget: int, per_round: int, target: float) -> dict:
    """One labeling run from one seed label per class; the last round's figures against the true topics."""
    import tempfile

    from metalabel.datasets import gold_labels
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    gold = gold_labels(pool)
    human = draw_labels(pool.labels, pool.num_classes, 1, seed)
    started = time.perf_counter()
    seeds = {int(i): gold[pool.uris[i]] for i in human}
    with tempfile.TemporaryDirectory() as folder, \
            Project.create(Path(folder) / "p", pool=pool, labels=seeds) as project:
        result = project.run(oracle=SimulatedOracle(gold, seed=seed), encoder="minilm", budget=budget,
                             per_round=per_round, target_precision=target, gold=gold, progress=False, seed=seed,
                             project_meta_steps=0, generate=False, rules=RULES if use_rules else None)
    last = result.rounds[-1]
    assert last.gold is not None
    return {"seed": seed, "rules": use_rules, "rounds": len(result.rounds), "coverage": last.coverage,
            "certified_precision": last.certified_precision, "achieved_precision": last.gold.achieved_precision,
            "label_accuracy": last.gold.label_accuracy, "pool_accuracy": last.gold.pool_accuracy,
            "heads": [report.model for report in result.rounds],
            "seconds": round(time.perf_counter() - started, 1)}


def loop_table(result: dict) -> str:
    lines = ["| run | certified coverage | certified precision (lower bound) | achieved precision | pool accuracy "
             "| label accuracy | rounds whose model used the rules |", "|---|---|---|---|---|---|---|"]
    for use_rules in (False, True):
        group = [cell for cell in result["loop"] if cell["rules"] is use_rules]
        if not group:
            continue
        used = sum(head.startswith("encoder space + rules") for cell in group for head in cell["heads"])
        figures = [mean_sd([c[key] for c in group]) for key in
                   ("coverage", "certified_precision", "achieved_precision", "pool_accuracy", "label_accuracy")]
        lines.append(f"| {'model and rules' if use_rules else 'model alone'} | " + " | ".join(figures)
                     + f" | {used} of {sum(len(c['heads']) for c in group)} |")
    return "\n".join(lines)


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}" if len(values) > 1 else f"{100 * values[0]:.1f}"


def table(result: dict) -> str:
    cells = result["cells"]
    rule_heads = [key for key in cells[0] if key.startswith("rules") and isinstance(cells[0][key], dict)]
    lines = [
        "| labels per class | rule coverage | rules alone (covered) | majority vote (covered) "
        "| model alone (covered) | both, judge (covered) | model alone (pool) | both, judge (pool) "
        "| judge kept rules | " + " | ".join(f"{h} forced (pool)" for h in rule_heads) + " |",
        "|" + "---|" * (9 + len(rule_heads)),
    ]
    for shots in sorted({cell["shots"] for cell in cells}):
        group = [cell for cell in cells if cell["shots"] == shots]
        kept = sum(cell["both"]["head"].startswith("rules") for cell in group)
        lines.append(
            f"| {shots} | {mean_sd([c['coverage'] for c in group])} "
            f"| {mean_sd([c['rules_accuracy_covered'] for c in group])} "
            f"| {mean_sd([c['majority_vote_accuracy_covered'] for c in group])} "
            f"| {mean_sd([c['model']['accuracy_covered'] for c in group])} "
            f"| {mean_sd([c['both']['accuracy_covered'] for c in group])} "
            f"| {mean_sd([c['model']['accuracy'] for c in group])} "
            f"| {mean_sd([c['both']['accuracy'] for c in group])} | {kept} of {len(group)} | "
            + " | ".join(mean_sd([c[h]['accuracy'] for c in group]) for h in rule_heads) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-limit", type=int, default=3000)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--loop-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--loop-budget", type=int, default=100)
    parser.add_argument("--loop-per-round", type=int, default=25)
    parser.add_argument("--loop-target", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=RESULTS / "rules.json")
    args = parser.parse_args()

    import torch

    from metalabel.rules import analyze_rules, load_rules

    torch.set_num_threads(1)
    started = time.perf_counter()
    pool, x = load_pool(args.pool_limit)
    votes = load_rules(RULES, classes=pool.class_names).votes(pool, pool.class_names)
    analysis = analyze_rules(votes, np.arange(len(pool)), pool.labels)  # every item's true topic: the rules' truth
    graph: list = []  # the pool graph, built once for every cell
    cells = []
    for shots in args.shots:
        for seed in args.seeds:
            cells.append(one_cell(pool, x, votes, shots, seed, graph))
            print(json.dumps(cells[-1]), flush=True)
    loop = []
    for seed in args.loop_seeds:
        for use_rules in (False, True):
            loop.append(loop_cell(pool, seed, use_rules=use_rules, budget=args.loop_budget,
                                  per_round=args.loop_per_round, target=args.loop_target))
            print(json.dumps(loop[-1]), flush=True)
    result = {
        "command": "nice -n 10 python bench/rules.py " + shlex.join(sys.argv[1:]),
        "pool": len(pool), "rules": str(RULES.relative_to(ROOT.parent)), "encoder": "minilm",
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "rule_analysis": analysis.to_json(), "cells": cells, "loop": loop,
        "loop_settings": {"budget": args.loop_budget, "per_round": args.loop_per_round, "target": args.loop_target},
    }
    args.out.write_text(json.dumps(result, indent=1))
    markdown = args.out.with_suffix(".md")
    notes = markdown.with_name(markdown.stem + ".notes.md")  # the reading, written by hand after a run
    text = report(result, args) + ("\n" + notes.read_text() if notes.exists() else "")
    markdown.write_text(text)
    print(text)


def report(result: dict, args: argparse.Namespace) -> str:
    parts = [f"# Rules beside the model: 20 Newsgroups, {result['pool']}-item pool, MiniLM\n",
             f"Made by `{result['command']}` ({result['wall_minutes']} min, {result['machine']}).",
             f"Rules: `{result['rules']}` (20 keyword rules, one per topic). Accuracies in % on the pool items "
             f"without a human label (mean ± sd over seeds {', '.join(map(str, args.seeds))}); "
             "\"covered\": the items at least one rule fired on.\n", table(result) + "\n"]
    if result["loop"]:
        parts += [f"Whole labeling runs from one seed label per class, budget {args.loop_budget}, "
                  f"{args.loop_per_round} questions a round, target precision {args.loop_target:g} "
                  f"(seeds {', '.join(map(str, args.loop_seeds))}; the last round's figures):\n",
                  loop_table(result) + "\n"]
    parts.append("Per rule, against every item's true topic:\n")
    parts += [f"- {r['name']}: coverage {100 * r['coverage']:.1f}%, accuracy {100 * (r['accuracy'] or 0):.0f}%"
              for r in result["rule_analysis"]["rules"]]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
