"""Reloading and checking a project's pool (metalabel.store.pool): linear in the stored items.

Every run, plan, evaluate, report and export of a project reloads its pool from the recorded spec
and checks each stored item's uri and content hash against it. The check used to rebuild a set of
the pool's uris per stored item (8k items 8 s, 60k minutes); it now hashes each stored item once
and looks uris up in one dict.

A project is made over the first n items of Fashion-MNIST's 60k training split (one seed label
per class, nothing embedded). Its recorded pool spec is the whole split, so reloading reads all
60k items and the check covers the n stored ones (the extra items are what a pool that grew since
init looks like). Per n, three repeats of:

* load_pool: ``Project.open(folder).load_pool()``, what every command pays (read the IDX files,
  then check);
* check: ``check_pool(store, pool)`` on the pool already in memory, the part that was quadratic.

For contrast, the old uri test (``uri not in set(pool.uris)`` per stored item) is timed once on
small pools of the same items; it alone grows with the square of the pool.

    nice -n 10 python bench/load_pool.py --note "..."     # what made bench/results/load_pool.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import metalabel
from metalabel.data.dataset import LabeledDataset
from metalabel.errors import DataNotFoundError
from metalabel.project import Project
from metalabel.store.pool import check_pool

RESULTS = Path(__file__).resolve().parent / "results"


def timed(work: Callable[..., object], *args: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``work(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def make_project(folder: Path, pool: LabeledDataset, items: int) -> None:
    stored = pool.subset(np.arange(items))
    stored.reload_spec = pool.reload_spec  # reload the whole split; its first `items` are the project's
    labels, first = np.unique(stored.labels, return_index=True)  # one seed label per class
    seeds = {int(index): stored.class_names[label] for label, index in zip(labels, first, strict=True)}
    Project.create(folder, pool=stored, labels=seeds).close()


def load_pool(folder: Path) -> None:
    with Project.open(folder) as project:
        project.load_pool()


def check_stored(folder: Path, pool: LabeledDataset) -> None:
    with Project.open(folder) as project:
        check_pool(project.store, pool)


def old_uri_check(stored_uris: list[str], pool_uris: list[str]) -> list[str]:
    # the check as it was before the fix, reproduced here for the contrast: one set per stored item
    return [uri for uri in stored_uris if uri not in set(pool_uris)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,60000", help="stored items per project, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-sizes", default="2000,4000,8000", help="pool sizes for the old uri test ('' skips)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results page")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    old_sizes = [int(s) for s in args.old_sizes.split(",") if s]

    try:
        pool = metalabel.datasets.load("fashion-mnist", split="train", download_missing=False)
    except DataNotFoundError as error:
        print(f"skipped: Fashion-MNIST's training split is not on this machine ({error})", file=sys.stderr)
        return
    if max(sizes) > len(pool):
        parser.error(f"--sizes goes up to {max(sizes)} but the split holds {len(pool)} items")

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-load-pool-") as scratch:
        for items in sizes:
            folder = Path(scratch) / f"p{items}"
            create_wall, _ = timed(make_project, folder, pool, items)
            load = [timed(load_pool, folder) for _ in range(args.repeats)]
            # opening the store is in both; it is milliseconds
            check = [timed(check_stored, folder, pool) for _ in range(args.repeats)]
            rows.append({"items": items, "create_s": create_wall,
                         "load_pool_wall_s": [w for w, _ in load], "load_pool_cpu_s": [c for _, c in load],
                         "check_wall_s": [w for w, _ in check], "check_cpu_s": [c for _, c in check]})
            print(f"{items:>6} items: load_pool {statistics.median(rows[-1]['load_pool_wall_s']):.2f} s, "
                  f"check {statistics.median(rows[-1]['check_wall_s']):.2f} s (median wall)", flush=True)
    old = []
    for items in old_sizes:
        uris = list(pool.uris[:items])
        wall, cpu = timed(old_uri_check, uris, uris)
        old.append({"items": items, "wall_s": wall, "cpu_s": cpu})
        print(f"{items:>6} items: old uri test {wall:.2f} s", flush=True)
    load_after = os.getloadavg()

    command = "nice -n 10 python bench/load_pool.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "metalabel": metalabel.__version__,
               "load_average_before": load_before, "load_average_after": load_after}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load_pool.json").write_text(json.dumps(
        {"command": command.strip(), "machine": machine, "note": args.note, "rows": rows, "old_uri_test": old},
        indent=2) + "\n")
    (args.out / "load_pool.md").write_text(markdown(command.strip(), machine, args.note, rows, old))
    print(f"wrote {args.out / 'load_pool.md'}")


def markdown(command: str, machine: dict, note: str, rows: list[dict], old: list[dict]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        "# Reloading and checking a project's pool",
        "",
        f"`{command}` on {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"NumPy {machine['numpy']}, metalabel {machine['metalabel']}. Load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in machine['load_average_before'])} before, "
        f"{', '.join(f'{v:.2f}' for v in machine['load_average_after'])} after."
        + (f" Also running: {note}." if note else ""),
        "",
        "A project holds the first n items of Fashion-MNIST's training split; its pool spec is the whole "
        "split (60k items read on every reload). Seconds, median of the repeats (min-max); CPU is this "
        "process's CPU time, which the machine's other work does not inflate. load_pool: "
        "`Project.open(folder).load_pool()` (read the IDX files, then check); check: `check_pool` on the pool "
        "in memory. The bench's module doc says more.",
        "",
        "| stored items | repeats | load_pool wall | load_pool CPU | check wall | check CPU "
        "| check per 10k items (fastest) |",
        "|---|---|---|---|---|---|---|",
    ]
    # the fastest repeat: what the check costs when the machine's other work gets in its way least
    per_10k = [min(row["check_cpu_s"]) / row["items"] * 10_000 for row in rows]
    for row, cost in zip(rows, per_10k, strict=True):
        lines.append(f"| {row['items']} | {len(row['check_wall_s'])} | {spread(row['load_pool_wall_s'])} | "
                     f"{spread(row['load_pool_cpu_s'])} | {spread(row['check_wall_s'])} | "
                     f"{spread(row['check_cpu_s'])} | {cost:.3f} CPU s |")
    lines += ["", "Reading: per 10k stored items the check's fastest repeat takes "
                  f"{min(per_10k):.3f}-{max(per_10k):.3f} CPU s from {rows[0]['items']} to {rows[-1]['items']} items "
                  f"(a quadratic check would take {rows[-1]['items'] / rows[0]['items']:.0f}x as much per item at the "
                  "largest n as at the smallest)."]
    if len(old) > 1:
        growth = (old[-1]["cpu_s"] / old[0]["cpu_s"]) ** (1 / np.log2(old[-1]["items"] / old[0]["items"]))
        lines[-1] += f" The old uri test grows x{growth:.1f} per doubling of n (quadratic: x4)."
    if old:
        lines += [
            "",
            "The old uri test (`uri not in set(pool.uris)` per stored item, reproduced in the script), once per "
            "size on a pool of the same n items; it grows with n squared:",
            "",
            "| items | wall | CPU |",
            "|---|---|---|",
            *(f"| {o['items']} | {o['wall_s']:.2f} | {o['cpu_s']:.2f} |" for o in old),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
