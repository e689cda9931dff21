"""Does a refactor leave the labeling loop's behaviour as it was? One seeded project, run and read, at two commits.

A restructuring (moving jobs between rooms, typing a record) should change nothing a user sees. This runs
one small project end to end with everything the loop does by default (generators included) and keeps what
a user sees of it: every round's report (its seconds aside), the questions asked in order with their
answers, why the run stopped, then ``evaluate``'s scorecard and ``plan``'s figures on the finished project.
Run it from a snapshot of each commit and compare the two files: equal means the same questions, the same
labels, the same figures.

The project: 8 kanji classes x 40 rendered characters (evaluation split), 3 seed labels a class (seed 0),
raw pixels, a simulated person answering from the true classes; budget 30, 10 questions a round, target
precision 0.8, half of each round's questions for the reference sample, seed 1. About 2 minutes here.

    # in a snapshot of each commit (git archive COMMIT | tar -x -C DIR):
    PYTHONPATH=DIR/src nice -n 10 python bench/same_behaviour.py --out before.json
    python bench/same_behaviour.py --compare before.json after.json --markdown bench/results/same_behaviour.md \
        --note "what else ran"
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
from typing import Any

# keys a later commit may add to what it records without changing behaviour, by where they sit
ADDED_KEYS = {"generation": ("image_policy",)}  # rounds keep the image augmentation policy since 215019b


def fingerprint() -> dict[str, Any]:
    import metalabel as ml
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    pool = ml.datasets.load("kanji", split="evaluation", max_classes=8, samples_per_class=40)
    gold = gold_labels(pool)
    seeds = seed_labels_from_pool(pool, per_class=3, seed=0)
    with tempfile.TemporaryDirectory(prefix="same-behaviour-") as tmp:
        folder = Path(tmp) / "project"
        with Project.create(folder, pool=pool, labels=seeds) as project:
            result = project.run(oracle=SimulatedOracle(gold), budget=30, per_round=10, target_precision=0.8,
                                 reference_share=0.5, seed=1, encoder="pixels", progress=False)
            rounds = [_comparable(report.to_json()) for report in result.rounds]
            questions = [[q.item_id, q.strategy, q.answer] for q in project.store.answered_questions()]
        with Project.open(folder) as project:
            scorecard = project.evaluate(encoder="pixels", progress=False).to_json()
            plan = project.plan(encoder="pixels", coverage=0.5, target_precision=0.8, progress=False)
    return {"rounds": rounds, "questions": questions, "stopped_because": result.stopped_because,
            "scorecard": scorecard, "plan": repr(plan)}


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    report = {key: value for key, value in report.items() if key != "seconds"}
    for key, added in ADDED_KEYS.items():
        if report.get(key):
            report[key] = {name: value for name, value in report[key].items() if name not in added}
    return report


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two fingerprints differ, as JSON paths (the first few)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in (differences(a.get(key), b.get(key), f"{path}.{key}") if key in a and key in b
                          else [f"{path}.{key}: only in {'the first' if key in a else 'the second'}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a, default=str)[:80]} vs {json.dumps(b, default=str)[:80]}"]


def summary(data: dict[str, Any]) -> str:
    coverage = ", ".join(f"{r['coverage']:.3f}" for r in data["rounds"])
    ran = sum(bool((r.get("generation") or {}).get("generators")) for r in data["rounds"])
    return (f"{len(data['rounds'])} rounds (coverage by round {coverage}; generators ran in {ran}), "
            f"{len(data['questions'])} answers, stopped: {data['stopped_because']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run the project and write its fingerprint here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--markdown", type=Path, help="with --compare: write the comparison here")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the markdown")
    args = parser.parse_args()
    if args.out:
        started = time.perf_counter()
        data = {**fingerprint(), "seconds": round(time.perf_counter() - started, 1)}
        args.out.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
        print(f"{args.out}: {summary(data)}; {data['seconds']} s")
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        found = differences({k: v for k, v in before.items() if k != "seconds"},
                            {k: v for k, v in after.items() if k != "seconds"})
        verdict = "identical" if not found else f"{len(found)} difference(s): " + "; ".join(found[:10])
        print(verdict)
        if args.markdown:
            command = "python bench/same_behaviour.py " + shlex.join(sys.argv[1:])
            args.markdown.write_text(
                "# Same behaviour before and after a refactor\n\n"
                f"`{command}` on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}. {args.note}\n\n"
                "| run | what it did | seconds |\n|---|---|---|\n"
                + "".join(f"| {path.name} | {summary(data)} | {data['seconds']} |\n"
                          for path, data in zip(args.compare, (before, after), strict=True))
                + "\nQuestions, answers, round reports (seconds aside), evaluate's scorecard and plan: "
                f"**{verdict}**.\n")


if __name__ == "__main__":
    main()
