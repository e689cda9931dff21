"""Few-shot accuracy of every meta-learner on held-out kanji characters, beside the papers' Omniglot figures.

Each (algorithm, ways, shots) model is meta-trained on the kanji background split
under a wall-clock budget, then tested on 600 fixed episodes of the evaluation
split (mean and 95% CI). Runs go to bench/runs/, results to bench/results/.

    python bench/meta_accuracy.py --budget-s 1800 --jobs 1     # the issue's setting: 30 min per model
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
METALABEL = [sys.executable, "-m", "metalabel.cli"]

# Omniglot accuracies (%) reported by the papers: 5w1s, 5w5s, 20w1s, 20w5s.
PUBLISHED = {
    "maml": (98.7, 99.9, 95.8, 98.9),
    "protonet": (98.8, 99.7, 96.0, 98.9),
    "fomaml": (98.3, 99.2, 89.4, 97.9),
    "reptile": (95.4, 98.9, 88.1, 96.7),
    "anil": (None, None, None, None),  # Raghu et al. report Mini-ImageNet only
    "gnn": (99.2, 99.7, 97.4, 99.0),  # Garcia and Bruna 2018
    "bayes": (None, None, None, None),  # no paper for this learner; ProtoNet's row is its baseline
    "recurrent": (None, None, None, None),  # no paper for this GRU + attention reader (SNAIL: 99.1, 99.8, 97.6, 99.4)
}
SETTINGS = [(5, 1), (5, 5), (20, 1), (20, 5)]


def train_and_eval(algo: str, ways: int, shots: int, args: argparse.Namespace) -> dict:
    run = args.runs / f"kanji-{algo}-{ways}w{shots}s"
    result_file = run / "test.json"
    if not result_file.exists():  # a finished model is kept; an unfinished one resumes from its checkpoint
        train_model(run, algo, ways, shots, args)
    [result] = json.loads(result_file.read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return {"algo": algo, "ways": ways, "shots": shots, "accuracy": result["accuracy"], "ci95": result["ci95"],
            "log_loss": result["log_loss"], "confidence": result["confidence"],
            "episodes": result["episodes"], "steps": history[-1]["step"], "train_s": round(history[-1]["elapsed_s"])}


def train_model(run: Path, algo: str, ways: int, shots: int, args: argparse.Namespace) -> None:
    train = [*METALABEL, "meta-train", "--source", "kanji", "--algo", algo, "--ways", str(ways),
             "--shots", str(shots), "--queries", str(args.queries), "--steps", str(args.max_steps),
             "--time-budget-s", str(args.budget_s), "--val-every", str(args.val_every),
             "--val-episodes", str(args.val_episodes), "--seed", str(args.seed), "--out", str(run), "--quiet"]
    if algo in ("maml", "fomaml", "anil") and args.maml_meta_batch:
        train += ["--meta-batch", str(args.maml_meta_batch)]
    if algo in ("protonet", "bayes"):
        train += ["--train-ways", str(max(ways, 20))]  # Snell et al. train with more ways than they test
    subprocess.run(train, check=True, env=args.env)
    partial = run / "test.json.partial"
    subprocess.run([*METALABEL, "meta-eval", "--model", str(run), "--source", "kanji", "--ways", str(ways),
                    "--shots", str(shots), "--episodes", str(args.episodes), "--json", str(partial)],
                   check=True, env=args.env)
    partial.replace(run / "test.json")


def markdown(results: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Meta-learner accuracy on held-out kanji characters",
        "",
        f"Command: `{command}`",
        "",
        f"Each model meta-trained on the kanji background split for at most {args.budget_s:.0f} s of training "
        f"(or {args.max_steps} meta-updates), best checkpoint by validation on held-out background alphabets, "
        f"tested on {args.episodes} fixed episodes of the evaluation split ({args.queries} queries per class "
        "in training, 15 in testing). Accuracy in %, ± the 95% confidence interval. Published: the papers' "
        "Omniglot figures. Log loss: mean -log probability of the true class; confidence: mean top "
        "probability (above the accuracy: overconfident), both over the test queries, before any calibration.",
        "",
        "| algorithm | setting | kanji accuracy | published (Omniglot) | log loss | confidence | meta-updates "
        "| training s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        published = PUBLISHED[r["algo"]][SETTINGS.index((r["ways"], r["shots"]))]
        lines.append(f"| {r['algo']} | {r['ways']}-way {r['shots']}-shot | {100 * r['accuracy']:.1f} ± "
                     f"{100 * r['ci95']:.1f} | {published if published is not None else 'n/a'} | "
                     f"{r['log_loss']:.3f} | {100 * r['confidence']:.1f} | {r['steps']} | {r['train_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+",
                        default=["protonet", "maml", "fomaml", "anil", "reptile", "gnn", "recurrent", "bayes"])
    parser.add_argument("--settings", nargs="+", default=[f"{w}w{s}s" for w, s in SETTINGS])
    parser.add_argument("--budget-s", type=float, default=1800.0, help="training seconds per model")
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--maml-meta-batch", type=int, default=None,
                        help="tasks per MAML/FOMAML/ANIL update (default: the paper's 32, or 16 at 20-way)")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--val-episodes", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once (one thread each if > 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="meta_accuracy")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs",
                        help="folder of the models; a model already finished there is reused, not retrained")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the models that already finished (e.g. after a time limit)")
    args = parser.parse_args()
    args.env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TOP_PAD_": "268435456",
                "MALLOC_TRIM_THRESHOLD_": "4294967295"}
    if args.jobs > 1:
        args.env["OMP_NUM_THREADS"] = "1"
    settings = [tuple(int(v) for v in s.rstrip("s").split("w")) for s in args.settings]
    jobs = list(itertools.product(args.algos, settings))
    def attempt(job):
        if args.collect and not (args.runs / f"kanji-{job[0]}-{job[1][0]}w{job[1][1]}s" / "test.json").exists():
            return None
        try:
            return train_and_eval(job[0], *job[1], args)
        except subprocess.CalledProcessError as error:  # one failed model must not lose the others' results
            print(f"{job}: failed ({error})", file=sys.stderr)
            return None

    with ThreadPoolExecutor(args.jobs) as pool:
        results = [r for r in pool.map(attempt, jobs) if r is not None]
    command = "python bench/meta_accuracy.py " + " ".join(sys.argv[1:])
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results, args, command)
    (ROOT / "results" / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
