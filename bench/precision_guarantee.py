"""Does the exported set meet the precision asked for? Many seeded real runs of the labeling loop (issue 10).

Each run is ``Project.create`` + the real loop (``metalabel.pipeline.LabelingRun``) with the
simulated oracle answering from the pool's true labels (noise 0), ``generate=False`` and
``project_meta_steps=0`` (runs stay short), ``min_gain=0`` (every run spends its budget), B / ``--rounds``
questions a round, the split between reference and active questions made by the loop's planner (``plan``)
or fixed (``--reference-shares plan 0.5`` adds ``reference_share=0.5`` runs), on:

* fashion-mnist: a class-balanced random subset of the training split through EfficientNet-Lite0 (64 px);
* 20newsgroups: a class-balanced random subset of the training split through MiniLM;
* kanji: characters of the evaluation split, read by a ProtoNet (Conv-4) meta-trained once on the
  background split (alphabets and characters disjoint from the pool's);
* digits: scikit-learn's bundled 8x8 digits as a table (64 numeric columns, one row per image).

A cell is (data set, target precision, seed labels per class k, human answers B). For every run the
bench reads the **final** round (the one that asks nothing and whose model learned from every answer):

* **certified** (metalabel): what the export writes, every model label still active after the last
  round; ``meets`` = its precision against the truth is >= the target (a run that exports nothing
  meets it trivially and is counted under ``nothing``); coverage = its share of the candidates
  (pool items without a human label); of oracle = coverage / oracle coverage, where the oracle
  coverage is the largest most-confident prefix of the *same* final calibrated ranking whose true
  precision is >= the target; reference answers = answered reference (random) questions.
* **old rule** (``metalabel.label.accept.accept_at_precision``: the longest run whose mean calibrated
  confidence reaches the target, per class, with its balance rule) and **top-prob** (every candidate
  whose calibrated top probability >= the target), both on the same final round's calibrated
  probabilities of the same run.

The final round's probabilities come from a subclass of ``LabelingRun`` that keeps what its
``_accept`` step saw; nothing in the loop changes.

With ``+audit`` (``RunOptions.audit``) the round that spends the budget is an audit and a final round
competes with it, each certificate at delta / 2 (``metalabel.pipeline.AuditCertificate``); the export
may then be the audit model's labels. Its oracle coverage is the larger of the two rankings' (the
audit round's and the final round's, over the same candidates), so "of oracle" never flatters it;
each run also records both certificates' sizes and which was kept.

``--results NAME`` keeps partial files under bench/logs/NAME/ and writes bench/results/NAME.{md,json}
(default ``precision_guarantee``), so a comparison can be kept apart from the main table.

Runs go to one partial JSON per worker (data set x target) under bench/logs/precision_guarantee/ as
each finishes, so a run cut short keeps its finished runs; ``--report`` rebuilds the JSON and the table.

    # what made bench/results/precision_guarantee.md: the committed loop, imported from a snapshot so that
    # edits to src/ in a shared working tree cannot change it mid-run
    git archive HEAD src | tar -x -C /tmp/pg_src
    PYTHONPATH=/tmp/pg_src/src nice -n 10 python bench/precision_guarantee.py --seeds 20 --seeds-for kanji=10 \
        --reference-shares plan 0.5 --fixed-share-datasets fashion-mnist 20newsgroups digits --jobs 2
    python bench/precision_guarantee.py --report --notes NOTES.md      # table from what finished

    # what made bench/results/precision_guarantee_audit.md: see its notes (two snapshots, merged parts)
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

import numpy as np

from _workers import add_pool_options, package_sha256, run_workers, save_part  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RESULTS_NAME = "precision_guarantee"
KANJI_RUN = ROOT / "logs" / RESULTS_NAME / "kanji-protonet"
DATASETS = ("fashion-mnist", "20newsgroups", "kanji", "digits")
TARGETS = (0.95, 0.90, 0.98)  # run in this order: 0.95 first, the cell the goals name
DELTA = 0.05
POOL_SEED = 12345  # which items make each pool: fixed, so every run of a data set sees the same pool
POOL_SIZES = {"fashion-mnist": 2000, "20newsgroups": 1200, "kanji": 60, "digits": None}  # kanji: classes
KANJI_TRAINING = {"algo": "protonet", "ways": 20, "train_ways": 20, "shots": 5, "queries": 5, "steps": 300,
                  "val_every": 100, "val_episodes": 50, "seed": 0}


# ----------------------------------------------------------------------------- data


def balanced_subset(pool, size: int, *, seed: int = POOL_SEED):
    """``size`` items, the same count from every class, drawn at random (the pool's order kept)."""
    rng = np.random.default_rng(seed)
    per_class = size // pool.num_classes
    chosen = np.concatenate([rng.choice(members, size=per_class, replace=False) for members in pool.class_indices()])
    return pool.subset(np.sort(chosen), name=f"{pool.name}-{size}")


def load_pool(name: str):
    """(pool, learner or None, encoder or None) of a data set; embeddings are cached by content after the first call."""
    from metalabel import datasets
    from metalabel.data.dataset import LabeledDataset

    if name == "fashion-mnist":
        return balanced_subset(datasets.load("fashion-mnist", split="train"), POOL_SIZES[name]), None, \
            "efficientnet-lite0"
    if name == "20newsgroups":
        return balanced_subset(datasets.load("20newsgroups", split="train"), POOL_SIZES[name]), None, "minilm"
    if name == "kanji":
        pool = datasets.load("kanji", split="evaluation", max_classes=POOL_SIZES[name], progress=False)
        return pool, kanji_learner(), None
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return LabeledDataset(name="digits", modality="tabular", items=bunch.data.astype(np.float32),
                              labels=bunch.target.astype(np.int64), class_names=[str(c) for c in range(10)],
                              uris=[f"digits/{i:04d}" for i in range(len(bunch.target))],
                              feature_names=[f"pixel_{i}" for i in range(bunch.data.shape[1])]), None, None
    raise ValueError(name)


def kanji_learner():
    """The ProtoNet meta-trained on kanji's background split, trained on first use and kept under bench/logs/."""
    import metalabel
    from metalabel.meta.checkpoint import load_run

    if not (KANJI_RUN / "best").is_dir():
        metalabel.meta_train("kanji", out=KANJI_RUN, progress=False, **KANJI_TRAINING)
    return load_run(KANJI_RUN)


def prepare(names) -> dict:
    """Embed every pool once and meta-train the kanji learner, before the workers start."""
    from metalabel.label.round_model import pool_inputs

    timings = {}
    for name in names:
        started = time.perf_counter()
        pool, learner, encoder = load_pool(name)
        pool_inputs(pool, learner, encoder=encoder, progress=False)
        timings[name] = round(time.perf_counter() - started, 1)
        print(f"[prepare] {name}: {len(pool)} items, {pool.num_classes} classes, {timings[name]} s", flush=True)
    return timings


# ----------------------------------------------------------------------------- rules and metrics


def oracle_count(confidence: np.ndarray, correct: np.ndarray, target: float) -> int:
    """Largest most-confident prefix of the ranking whose true precision is >= target (0: none).

    Cuts only between distinct confidences: a threshold cannot split a tie.
    """
    order = np.argsort(-confidence, kind="stable")
    conf, right = confidence[order], correct[order]
    precision = np.cumsum(right) / np.arange(1, right.size + 1)
    ends = np.flatnonzero(np.append(conf[1:] != conf[:-1], True))  # last index of each run of equal confidence
    meets = ends[precision[ends] >= target]
    return int(meets.max() + 1) if meets.size else 0


def rule_metrics(mask: np.ndarray, correct: np.ndarray, target: float) -> dict:
    """Size, coverage and true precision of an accepted set; ``meets``: precision >= target (or nothing accepted)."""
    accepted = int(mask.sum())
    precision = float(correct[mask].mean()) if accepted else None
    return {"accepted": accepted, "coverage": accepted / max(mask.size, 1), "precision": precision,
            "meets": precision is None or precision >= target - 1e-12}


def side_rules(probs: np.ndarray, truth: np.ndarray, target: float) -> dict:
    """The old rule and a plain top-probability threshold on the same calibrated probabilities."""
    from metalabel.label.accept import accept_at_precision

    predicted, confidence = probs.argmax(1), probs.max(1)
    correct = predicted == truth
    old = accept_at_precision(probs, target_precision=target)
    return {"old_rule": rule_metrics(old.mask, correct, target),
            "top_prob": rule_metrics(confidence >= target, correct, target)}


# ----------------------------------------------------------------------------- one run


def capturing_run_class():
    from metalabel.pipeline import LabelingRun

    class CapturingRun(LabelingRun):
        """The real loop; it also keeps the candidates, calibrated probabilities and certificate of each round."""

        captured: list[dict]

        def _accept(self, round_id, fit, labels, raw, probs, model_hash, **options):
            judged = super()._accept(round_id, fit, labels, raw, probs, model_hash, **options)
            self.captured = getattr(self, "captured", [])
            self.captured.append({"candidates": judged.candidates, "probs": probs[judged.candidates].copy(),
                                  "certificate": judged.certificate, "reference": judged.reference,
                                  "recorded": judged.recorded, "kept_audit": judged.kept_audit})
            return judged

    return CapturingRun


def run_once(pool, learner, encoder, *, seed: int, k: int, budget: int, per_round: int, target: float,
             reference_share: float | None = None, audit: bool = False) -> dict:
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.pipeline import RunOptions
    from metalabel.project import Project
    from metalabel.store import LabelSource

    gold = gold_labels(pool)
    started = time.perf_counter()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="precision-guarantee-") as tmp:
        project = Project.create(Path(tmp) / "project", pool=pool,
                                 labels=seed_labels_from_pool(pool, per_class=k, seed=seed))
        options = RunOptions(target_precision=target, delta=DELTA, budget=budget, per_round=per_round,
                             max_rounds=budget // per_round + 2, min_gain=0.0, generate=False, project_meta_steps=0,
                             reference_share=reference_share, seed=seed,
                             audit=audit)
        run = capturing_run_class()(project.store, project.load_pool(), learner, oracle=SimulatedOracle(gold),
                                    options=options, encoder=encoder, gold=gold, progress=False,
                                    on_round=rounds.append)
        with project.writer_lock():
            result = run.run()
        final, report = run.captured[-1], rounds[-1]
        kept_round = {label.round_id for label in project.store.active_labels()
                      if LabelSource(label.source) is LabelSource.MODEL}
        # what the export writes: every active model label after the last round
        position = {uri: i for i, uri in enumerate(pool.uris)}
        exported = [(position[label.uri], run.class_index[label.class_name]) for label in project.store.active_labels()
                    if LabelSource(label.source) is LabelSource.MODEL]
        answered = int(project.store.summary()["answered_questions"])
        project.close()

    candidates, probs, certificate = final["candidates"], final["probs"], final["certificate"]
    # the project orders its classes by name, the pool by index: compare in the project's order
    truth_all = np.array([run.class_index[name] for name in pool.class_names])[pool.labels]
    truth = truth_all[candidates]
    correct = probs.argmax(1) == truth
    exported_correct = np.array([truth_all[p] == c for p, c in exported], dtype=bool)
    certified = rule_metrics(np.ones(len(exported), bool), exported_correct, target)
    certified["coverage"] = len(exported) / len(candidates)
    # the store's active model labels are exactly what the final round recorded (its own certificate's, or the
    # audit's it kept)
    assert len(exported) == final["recorded"].model_labels, (len(exported), final["recorded"].model_labels)
    assert len(kept_round) <= 1, kept_round
    oracle = oracle_count(probs.max(1), correct, target)
    rival = audit_figures(run.captured, candidates, truth_all, target) if audit else {}
    if rival:
        oracle = max(oracle, rival.pop("oracle_accepted"))
    return {
        "seed": seed, "k": k, "budget": budget, "target": target, "split": split_name(reference_share, audit),
        "answered": answered, **rival,
        "rounds": len(rounds), "stopped_because": result.stopped_because,
        "candidates": int(len(candidates)), "pool_accuracy": float(correct.mean()),
        "oracle_accepted": oracle, "oracle_coverage": oracle / len(candidates),
        "certified": {**certified, "threshold": None if not certificate.certified else certificate.threshold,
                      "estimate": certificate.estimate, "reference_used": certificate.reference_used,
                      "reference_needed": certificate.reference_needed, "reason": certificate.reason},
        "reference_answers": int(report.reference_answers),
        "reference_questions_by_round": [r.reference_questions for r in rounds],
        "coverage_by_round": [r.coverage for r in rounds],
        "certificate_by_round": [r.certificate for r in rounds],
        "achieved_precision_by_round": [None if r.gold is None else r.gold.achieved_precision for r in rounds],
        "held_out_accuracy": report.held_out_accuracy, "calibration_ece": report.calibration_ece,
        "model": report.model,
        **side_rules(probs, truth, target),
        "seconds": round(time.perf_counter() - started, 1),
    }


def audit_figures(captured: list[dict], candidates: np.ndarray, truth_all: np.ndarray, target: float) -> dict:
    """Of a run with an audit: both certificates' sizes, which was kept, and the audit ranking's oracle count.

    ``captured[-2]`` is the audit round's certificate on its answers (its last ``_accept``), ``captured[-1]``
    the final round's; an audit that never happened (a run that stopped before) gives {}.
    """
    if len(captured) < 2 or captured[-1]["certificate"].delta >= DELTA:  # the final round certified alone
        return {}
    audit, final = captured[-2], captured[-1]
    assert np.array_equal(audit["candidates"], candidates), "the final round has the audit's candidates"
    correct = audit["probs"].argmax(1) == truth_all[candidates]
    return {"audit_accepted": audit["certificate"].accepted, "final_accepted": final["certificate"].accepted,
            "kept": "audit" if final["kept_audit"] else "final",
            "oracle_accepted": oracle_count(audit["probs"].max(1), correct, target)}


# ----------------------------------------------------------------------------- driver


def parts_folder() -> Path:
    return ROOT / "logs" / RESULTS_NAME


def part_path(worker: str) -> Path:
    return parts_folder() / f"{worker}.json"


def split_name(reference_share: float | None, audit: bool = False) -> str:
    name = "planner" if reference_share is None else f"{100 * reference_share:.0f}% reference"
    return f"{name}, audit vs final" if audit else name


def parse_share(text: str) -> tuple[float | None, bool]:
    """``plan`` or a reference share, optionally ``+audit`` (RunOptions.audit=True)."""
    reference, _, flag = text.partition("+")
    if flag not in ("", "audit"):
        raise SystemExit(f"unknown split suffix {flag!r} in {text!r}: the only one is +audit")
    return (None if reference == "plan" else float(reference)), bool(flag)


def worker_names(args) -> list[str]:
    """One worker per (data set, target, question split): targets in the order given, then the planner's split
    before fixed ones, the slowest data set first."""
    slowness = ("kanji", "20newsgroups", "fashion-mnist", "digits")
    slow_first = sorted(args.datasets, key=slowness.index)
    return [f"{name}@{target:.2f}@{share}" for target in args.targets for share in args.reference_shares
            for name in slow_first if share.startswith("plan") or name in args.fixed_share_datasets]


def seeds_for(name: str, args) -> list[int]:
    count = dict(args.seeds_for).get(name, args.seeds)
    return list(range(args.first_seed, args.first_seed + count))


def run_worker(worker: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    name, target = worker.split("@")[0], float(worker.split("@")[1])
    share, audit = parse_share(worker.split("@")[2])
    pool, learner, encoder = load_pool(name)
    part = json.loads(part_path(worker).read_text()) if args.resume and part_path(worker).exists() else {
        "dataset": name, "target": target, "split": split_name(share, audit), "pool": len(pool),
        "classes": pool.num_classes,
        "encoder": encoder or ("kanji ProtoNet (Conv-4)" if learner is not None else "table columns"), "runs": {}}
    part.setdefault("package_sha256", []).append(package_sha256())
    for seed in seeds_for(name, args):
        for k in args.seed_per_class:
            for budget in args.budgets:
                key = f"seed={seed},k={k},B={budget}"
                if key in part["runs"] and "error" not in part["runs"][key]:
                    continue
                per_round = args.per_round or max(budget // args.rounds, 1)
                t = time.perf_counter()
                try:
                    row = run_once(pool, learner, encoder, seed=seed, k=k, budget=budget, per_round=per_round,
                                   target=target, reference_share=share, audit=audit)
                except Exception as error:  # a library failure is a result too; the other runs go on
                    row = {"seed": seed, "k": k, "budget": budget, "target": target,
                           "split": split_name(share, audit),
                           "error": f"{type(error).__name__}: {error}", "seconds": round(time.perf_counter() - t, 1)}
                    print(f"[{worker}] {key}: FAILED {row['error']}", flush=True)
                part["runs"][key] = row
                save_part(part_path(worker), part)
                if "error" not in row:
                    c = row["certified"]
                    print(f"[{worker}] {key}: {row['seconds']:.0f}s exported {c['accepted']} "
                          f"prec {c['precision'] if c['precision'] is not None else float('nan'):.3f} "
                          f"oracle cov {row['oracle_coverage']:.3f} ref {row['reference_answers']}", flush=True)
            if args.deadline and time.time() > args.deadline:
                print(f"[{worker}] deadline reached after seed {seed}", flush=True)
                return


# ----------------------------------------------------------------------------- report


def pct(value, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def summarize(runs: list[dict], target: float) -> dict:
    ok = [r for r in runs if "error" not in r]
    n = len(ok)
    out = {"runs": n, "errors": len(runs) - n}
    if not n:
        return out

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    for rule in ("certified", "old_rule", "top_prob"):
        rows = [r[rule] for r in ok]
        exported = [x for x in rows if x["accepted"]]
        out[rule] = {
            "meets": sum(x["meets"] for x in rows) / n,
            "fails": sum(not x["meets"] for x in rows) / n,
            "nothing": sum(not x["accepted"] for x in rows) / n,
            "coverage": mean([x["coverage"] for x in rows]),
            # runs with oracle coverage 0 have no share to take (nothing could meet the target)
            "of_oracle": mean([x["coverage"] / r["oracle_coverage"] for x, r in zip(rows, ok) if r["oracle_coverage"]]),
            "precision": mean([x["precision"] for x in exported]),
            "min_precision": min((x["precision"] for x in exported), default=None),
        }
    out["oracle_coverage"] = mean([r["oracle_coverage"] for r in ok])
    out["reference_answers"] = mean([r["reference_answers"] for r in ok])
    out["reference_used"] = mean([r["certified"]["reference_used"] for r in ok])
    out["answered"] = mean([r["answered"] for r in ok])
    out["pool_accuracy"] = mean([r["pool_accuracy"] for r in ok])
    rivals = [r for r in ok if "kept" in r]
    if rivals:  # runs with an audit and a final round: which certificate the export kept
        out["audit_kept"] = sum(r["kept"] == "audit" for r in rivals) / len(rivals)
        out["audit_accepted"] = mean([r["audit_accepted"] for r in rivals])
        out["final_accepted"] = mean([r["final_accepted"] for r in rivals])
        out["rival_runs"] = len(rivals)
    needed = [r["certified"]["reference_needed"] for r in ok if not r["certified"]["accepted"]]
    out["reference_needed"] = sorted(needed, key=lambda v: (v is None, v or 0))
    out["seconds"] = mean([r["seconds"] for r in ok])
    return out


def collect(parts: dict) -> list[dict]:
    cells = {}
    for part in parts.values():
        for run in part["runs"].values():
            key = (part["dataset"], part["split"], part["target"], run["k"], run["budget"])
            cells.setdefault(key, []).append(run)
    rows = []
    for (name, split, target, k, budget), runs in cells.items():
        rows.append({"dataset": name, "split": split, "target": target, "k": k, "budget": budget,
                     **summarize(runs, target)})
    order = {name: i for i, name in enumerate(DATASETS)}
    return sorted(rows, key=lambda r: (order.get(r["dataset"], 99), r["split"] != "planner", r["split"], r["k"],
                                       r["budget"], r["target"]))


def summary_lines(parts: dict) -> list[str]:
    """All runs of every data set, target and budget together, per question split and rule."""
    runs = [r for p in parts.values() for r in p["runs"].values() if "error" not in r]
    if not runs:
        return []
    lines = ["## All cells together", "",
             "Failure = share of runs whose exported set is below its target; then how many of the runs that exported "
             "something failed. Of oracle at 0.95: mean coverage / oracle coverage over the 0.95 runs.", "",
             "| split | rule | runs | failure | failed / exporting runs | exported nothing | of oracle at 0.95 |",
             "|---|---|---|---|---|---|---|"]
    for split in sorted({r["split"] for r in runs}, key=lambda s: (s != "planner", s)):
        mine = [r for r in runs if r["split"] == split]
        for rule, label in (("certified", "certified (metalabel)"), ("old_rule", "old rule"), ("top_prob", "top-prob")):
            fails = sum(not r[rule]["meets"] for r in mine)
            exporting = sum(r[rule]["accepted"] > 0 for r in mine)
            at95 = [r[rule]["coverage"] / r["oracle_coverage"] for r in mine
                    if abs(r["target"] - 0.95) < 1e-9 and r["oracle_coverage"]]
            lines.append(f"| {split} | {label} | {len(mine)} | {pct(fails / len(mine))}% | "
                         f"{fails} of {exporting} | {pct(1 - exporting / len(mine), 0)}% | "
                         f"{pct(float(np.mean(at95)) if at95 else None, 0)}% |")
    return lines + [""]


def markdown(parts: dict, meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Precision you can prove: the certified export on real data, through the real loop (issue 10)",
        "",
        f"Command: `{meta.get('command', '?')}`",
        "",
        f"Machine: {meta.get('machine', '?')}. Run time: {meta.get('run_time', '?')}.",
        "",
        f"Every run: `Project.create` with k random seed labels per class, then the labeling loop "
        f"(`LabelingRun`, delta {DELTA}, certify=binomial, generate=False, project_meta_steps=0, min_gain=0, "
        "B / 2 questions a round, so two asking rounds and a last one that asks nothing and learns from every "
        "answer; with *audit* (`audit=True`) the second asking round asks only reference questions from its "
        "confident region and certifies its own predictions again on them: *audit* alone (the loop before "
        "the final round competed) ends the run there at delta; *audit vs final* goes on to the last round "
        "and keeps the larger of the audit's and the last round's certificates, each at delta / 2) answered by "
        "`SimulatedOracle` from the true labels (noise 0) until B answers are spent. **split**: how each round "
        "divides its questions between the random reference sample and active learning, *planner* = the loop's "
        "default (`plan_budget`), *50% reference* = `reference_share=0.5`. All figures are read off the final "
        "round. Candidates: pool items without a human label.",
        "",
        "* **meets** — share of runs whose exported set (every active model label after the last round) has "
        f"true precision >= target; goal >= {100 * (1 - DELTA):.0f}%. A run that exports nothing meets it "
        "trivially; **nothing** says how often that happened.",
        "* **cov** — mean share of candidates exported. **of oracle** — mean over runs of coverage / oracle "
        "coverage, the oracle being the largest most-confident prefix of the same final calibrated ranking "
        "whose true precision reaches the target (goal >= 80% at 0.95). **prec** — mean true precision over "
        "runs that exported something (**min**: the worst run).",
        "* **ref** — reference (random) answers given over the run, of B; *used*: those above the final "
        "certified threshold.",
        "* **old rule** (`accept_at_precision`, mean calibrated confidence >= target) and **top-prob** "
        "(calibrated top probability >= target): the same final round's calibrated probabilities of the same "
        "run, so the three columns differ only in the rule.",
        "",
    ]
    lines += summary_lines(parts)
    rivals = [r for r in rows if r.get("rival_runs")]
    if rivals:
        lines += ["## Audit vs final: which certificate the export kept", "",
                  "Runs with an audit and a final round, each certified at delta / 2: the share of runs whose "
                  "export is the audit's labels, and the mean size (labels) of each certificate.", "",
                  "| data set | split | target | k | B | runs | audit kept | audit certified | final certified |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['split']} | {r['target']:.2f} | {r['k']} | {r['budget']} | "
                  f"{r['rival_runs']} | {pct(r['audit_kept'], 0)}% | {r['audit_accepted']:.0f} | "
                  f"{r['final_accepted']:.0f} |" for r in rivals]
        lines.append("")
    for name in [n for n in DATASETS if any(r["dataset"] == n for r in rows)]:
        info = next(p for p in parts.values() if p["dataset"] == name)
        lines += [f"## {name}", "",
                  f"Pool {info['pool']} items, {info['classes']} classes, features: {info['encoder']}.", "",
                  "| split | target | k | B | runs | certified: meets | nothing | cov | of oracle | prec (min) "
                  "| ref (used) | old rule: meets | cov | prec (min) | top-prob: meets | cov | prec (min) "
                  "| oracle cov | pool acc |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["dataset"] == name):
            if not r["runs"]:
                lines.append(f"| {r['split']} | {r['target']:.2f} | {r['k']} | {r['budget']} | "
                             f"0 ({r['errors']} failed) |" + " – |" * 14)
                continue
            c, o, t = r["certified"], r["old_rule"], r["top_prob"]

            def prec(x):
                return f"{pct(x['precision'])} ({pct(x['min_precision'])})"

            runs = f"{r['runs']}" + (f" (+{r['errors']} failed)" if r["errors"] else "")
            lines.append(
                f"| {r['split']} | {r['target']:.2f} | {r['k']} | {r['budget']} | {runs} | **{pct(c['meets'], 0)}** | "
                f"{pct(c['nothing'], 0)} | {pct(c['coverage'])} | {pct(c['of_oracle'], 0)} | {prec(c)} | "
                f"{r['reference_answers']:.0f} ({r['reference_used']:.0f}) | {pct(o['meets'], 0)} | "
                f"{pct(o['coverage'])} | {prec(o)} | {pct(t['meets'], 0)} | {pct(t['coverage'])} | {prec(t)} | "
                f"{pct(r['oracle_coverage'])} | {pct(r['pool_accuracy'])} |")
        times = [r["seconds"] for r in rows if r["dataset"] == name and r.get("seconds")]
        lines += ["", f"Mean seconds per run: {', '.join(f'{s:.0f}' for s in times)} (cells in table order).", ""]
        failed = [f"`{p['dataset']}@{p['target']:.2f} {key}`: {run['error']}" for p in parts.values()
                  if p["dataset"] == name for key, run in p["runs"].items() if "error" in run]
        if failed:
            more = "" if len(failed) <= 10 else f" (+{len(failed) - 10})"
            lines += ["Failed runs: " + "; ".join(failed[:10]) + more, ""]
    if meta.get("notes"):
        lines += ["## Notes", "", *meta["notes"], ""]
    return "\n".join(lines)


def report(args: argparse.Namespace, meta: dict) -> None:
    parts = {}
    for path in sorted(parts_folder().glob("*@*.json")):  # every worker's part, whichever invocation made it
        part = json.loads(path.read_text())
        if part["dataset"] in args.datasets:
            parts[path.stem] = part
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / f"{RESULTS_NAME}.json"
    if previous.exists():
        meta = {**json.loads(previous.read_text()).get("meta", {}), **{k: v for k, v in meta.items() if v}}
    rows = collect(parts)
    (RESULTS / f"{RESULTS_NAME}.json").write_text(
        json.dumps({"meta": meta, "cells": rows, "workers": parts}, default=float))  # one line: every run is in it
    (RESULTS / f"{RESULTS_NAME}.md").write_text(markdown(parts, meta, rows))


def machine() -> str:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, torch {torch_version} CPU, " \
           f"Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    global RESULTS_NAME  # where parts and results go, read by every function that writes them
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS))
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. N-1 per cell")
    parser.add_argument("--seeds-for", nargs="+", default=[], metavar="NAME=N",
                        type=lambda text: (text.split("=")[0], int(text.split("=")[1])),
                        help="fewer (or more) seeds for a data set, e.g. kanji=10")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed-per-class", nargs="+", type=int, default=[5])
    parser.add_argument("--budgets", nargs="+", type=int, default=[200])
    parser.add_argument("--rounds", type=int, default=2, help="asking rounds: per_round = B / rounds")
    parser.add_argument("--per-round", type=int, help="questions per round (overrides --rounds)")
    parser.add_argument("--reference-shares", nargs="+", default=["plan"],
                        help="how each round splits its questions: plan (the planner, the default) or a fixed share "
                             "of reference questions (RunOptions.reference_share), e.g. plan 0.5; the suffix +audit "
                             "makes the last asking round an audit (RunOptions.audit), e.g. plan plan+audit")
    parser.add_argument("--fixed-share-datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                        help="data sets that also run the fixed shares")
    parser.add_argument("--minutes", type=float, help="each worker stops starting new seeds after this long")
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--results", default=RESULTS_NAME,
                        help="partial files under bench/logs/NAME/, the table in bench/results/NAME.md")
    add_pool_options(parser)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    RESULTS_NAME = args.results
    if args.worker:
        run_worker(args.worker, args)
        return
    meta = {"command": "python bench/precision_guarantee.py " + shlex.join(argv), "machine": machine()}
    if args.report:
        extra = {"command": args.command, "run_time": args.run_time, "machine": machine()}
        if args.notes:
            extra["notes"] = args.notes.read_text().splitlines()
        report(args, extra)
        return
    started = time.perf_counter()
    meta["prepare_seconds"] = prepare(args.datasets)
    worker_argv = list(argv)
    if args.minutes:
        worker_argv += ["--deadline", str(time.time() + 60 * args.minutes)]
    run_workers(__file__, worker_argv, worker_names(args), jobs=args.jobs, threads=args.threads, poll_seconds=10,
                on_poll=lambda run_time: report(args, {**meta, "run_time": run_time}))
    meta["run_time"] = f"{(time.perf_counter() - started) / 60:.1f} min wall, including preparation"
    report(args, meta)


if __name__ == "__main__":
    main()
