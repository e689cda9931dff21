"""Certified acceptance (metalabel.label.certify) against today's rule and a plain threshold, on synthetic pools.

Each run draws a pool whose true per-item accuracy is sigmoid(z), z ~ N(3, 1.5), and whose
calibrated confidence is sigmoid(z + overclaim): overclaim 0 is calibrated, 0.8 claims more
than it gets (as calibration fitted on active-learning answers tends to). A reference sample
is drawn from the pool (uniform with replacement, or stratified by confidence with equal
draws per stratum), and each rule picks what to export:

* binomial / binomial-strat: certify_acceptance(method="binomial"), exact Clopper-Pearson
  (uniform) or Hoeffding-Bentkus with inverse-probability weights (stratified);
* ppi: certify_acceptance(method="ppi"), uniform design;
* today: metalabel.label.accept.accept_at_precision (mean calibrated confidence >= target);
* top-prob: accept every item whose confidence >= target (what the anchors do).

Per cell: failure = share of runs whose exported set is below the target (the certified
rules promise at most delta; a run that exports nothing does not fail); nothing = share of
runs that export nothing; coverage = mean share of the pool exported; of oracle = mean of
coverage / oracle coverage (the largest most-confident set whose true precision meets the
target); ref used = reference answers above the chosen threshold (mean over runs).

    python bench/certify_sim.py --seeds 200       # what made bench/results/certify_sim.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from metalabel.label.accept import accept_at_precision
from metalabel.label.certify import certify_acceptance

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = 5
EDGES = [0.97, 0.995]


def pool(seed: int, items: int, overclaim: float):
    rng = np.random.default_rng(seed)
    z = rng.normal(3.0, 1.5, items)
    correct = rng.random(items) < 1 / (1 + np.exp(-z))
    confidence = 1 / (1 + np.exp(-(z + overclaim)))
    return rng, confidence, rng.integers(0, CLASSES, items), correct


def oracle_count(confidence, correct, target: float) -> int:
    ranked = correct[np.argsort(-confidence, kind="stable")]
    meets = np.flatnonzero(np.cumsum(ranked) / np.arange(1, ranked.size + 1) >= target)
    return int(meets.max() + 1) if meets.size else 0


def run_cell(seeds: int, items: int, overclaim: float, target: float, reference: int, delta: float):
    rows: dict[str, list[tuple[bool, float, float, int, bool]]] = {}
    for seed in range(seeds):
        rng, confidence, predicted, correct = pool(seed, items, overclaim)
        oracle = max(oracle_count(confidence, correct, target), 1)
        uniform = rng.integers(0, items, reference)
        stratum = np.searchsorted(EDGES, confidence, side="right")
        per = reference // (len(EDGES) + 1)
        strat = np.concatenate([rng.choice(np.flatnonzero(stratum == h), per) for h in range(len(EDGES) + 1)])
        masks: dict[str, tuple[np.ndarray, int]] = {}
        for name, draws, method, edges in (("binomial", uniform, "binomial", None),
                                           ("binomial-strat", strat, "binomial", EDGES),
                                           ("ppi", uniform, "ppi", None)):
            result = certify_acceptance(confidence, predicted, reference_confidence=confidence[draws],
                                        reference_predicted=predicted[draws], reference_correct=correct[draws],
                                        target=target, delta=delta, method=method, strata_edges=edges)
            masks[name] = (result.mask, result.reference_used)
        probs = np.repeat(((1 - confidence) / (CLASSES - 1))[:, None], CLASSES, axis=1)
        probs[np.arange(items), predicted] = confidence
        masks["today"] = (accept_at_precision(probs, target_precision=target).mask, 0)
        masks["top-prob"] = (confidence >= target, 0)
        for name, (mask, used) in masks.items():
            accepted = int(mask.sum())
            failed = bool(accepted and correct[mask].mean() < target)
            rows.setdefault(name, []).append((failed, accepted / items, accepted / oracle, used, accepted == 0))
    return {name: np.array(values, dtype=np.float64).mean(axis=0) for name, values in rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--reference", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--out", type=Path, default=RESULTS / "certify_sim.md")
    args = parser.parse_args(argv)
    started = time.time()
    lines = []
    for overclaim in (0.0, 0.8):
        for reference in args.reference:
            lines += [f"\n### overclaim {overclaim} (logit), {reference} reference answers\n",
                      "| target | rule | failure | nothing | coverage | of oracle | ref used |",
                      "|---|---|---|---|---|---|---|"]
            for target in (0.90, 0.95, 0.98):
                cell = run_cell(args.seeds, args.items, overclaim, target, reference, args.delta)
                for name, (failed, coverage, share, used, nothing) in cell.items():
                    ref = f"{used:.0f} of {reference}" if name in ("binomial", "binomial-strat", "ppi") else "-"
                    lines.append(f"| {target:.2f} | {name} | {failed:.1%} | {nothing:.1%} | {coverage:.1%} | "
                                 f"{share:.1%} | {ref} |")
                print(lines[-1 - len(cell) + 1:], flush=True)
    elapsed = time.time() - started
    command = "python bench/certify_sim.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = [
        "# Certified acceptance on synthetic pools",
        "",
        f"`{command.strip()}` — {elapsed:.0f} s on a shared 2-core CPU; {args.seeds} seeded pools per cell of "
        f"{args.items} items ({CLASSES} classes), delta {args.delta}. Failure: share of runs whose exported set is "
        "below the target (the certified rules promise at most delta). Nothing: runs that export nothing. "
        "Of oracle: coverage over the largest most-confident set that truly meets the target. Ref used: reference "
        "answers above the chosen threshold. The stratified design draws equally from confidence strata "
        f"split at {EDGES}. The bench's module doc gives the pool model.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + lines) + "\n")
    print(f"wrote {args.out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
