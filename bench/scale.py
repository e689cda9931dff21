"""Embedding a pool on Ray against pool size: throughput and the driver's peak memory (issue 15).

Writes the cells to bench/results/scale.json and prints the markdown table that bench/results/scale.md holds.

Each cell runs in a fresh Python process, so its memory is the driver's alone (Ray's workers
are processes of their own, started by Ray's raylet), and no cache is warm: every cell has an
empty ``METALABEL_CACHE``. Memory is counted from the moment the pool is in memory: the
kernel's peak resident set (VmHWM), and, sampled every 50 ms, the peak growth of the private
part (the driver's heap) and the peak of the shared part (Ray's object store, as mapped).

* ``one process``: ``embed_dataset`` as the labeling loop calls it today, no Ray;
* ``ray, w workers``: ``metalabel.scale.embed_on_ray`` on a local Ray cluster started with
  ``num_cpus=w`` (the cluster's start is timed apart: it is paid once per run, not per item).

The pool: Fashion-MNIST's 60,000 training images (28x28 grey). Sizes above 60,000 repeat them,
each copy after the first shifted by a seeded random offset of up to 3 pixels each way (np.roll)
with seeded noise of 0-7 grey levels added (uint8, saturating), so no two copies' bytes are equal
(the cache is keyed by content). ``pixels`` is the raw-pixel encoder (784-d, no model: what it
measures is Ray's and the driver's own cost per item); ``efficientnet-lite0`` at 64 px (2024-d)
is the real encoder, on a smaller pool.

``--read-sizes`` measures reading and embedding a pool kept on disk instead (no Ray): the same
synthetic images written as PNG files into a flat folder, read whole (``imagefolder`` then
``embed_dataset``, as before chunked reading) or in chunks of 4,096 (``chunked_imagefolder`` then
``embed_in_chunks``), with the pixel encoder; memory counted from before the folder is read.
Chunks are read twice: with glibc's default allocator settings and with ``MALLOC_MMAP_THRESHOLD_``
fixed at 1 MiB, which tells memory the program holds from freed buffers glibc keeps.

``--predict-ray ITEMS`` asks whether a round's prediction over every pool item is worth running on
Ray: the prototype head and a logistic regression's ``predict_log_proba`` over the pool's pixel
embeddings in one process, then the same regression as Ray Data ``map_batches`` on a local cluster
of 2 CPUs with only its weights shipped (timed: Ray's start, the embeddings into the object store,
each prediction).

``--graph-memory SIZES`` measures the heap growth of building the round's nearest-neighbour graph
alone (``PoolGraph.build`` on random 784-d float32 pools), each size in a fresh process.

``--round-sizes`` times one labeling round instead (``Project.run``, pixels, 5 seed labels a class,
20 questions, no generators, no project meta-training): what follows the embedding, the same
with or without Ray. Its memory: the peak RSS, the heap's growth, and the file-backed pages it adds
(the embedding cache the round reads memory-mapped: in RSS, not the heap, and the OS may drop them).

``--pool-run-sizes`` measures a whole run over a pool the project reads from its files (what ``metalabel run``
does): the synthetic images as PNG files in one flat folder, a project made from it (5 seed labels a class,
not measured), then in a fresh process with an empty cache ``Project.open``, ``load_pool`` (the folder read
and checked against the stored hashes) and the same one round as ``--round-sizes``. Its memory is counted from
before the project is opened: the heap the loaded pool holds, and the heap's peak growth over the whole run.
Each cell also records a hash of the questions asked and the labels made, to compare two commits by.

    nice -n 10 python bench/scale.py --note "..."     # what made bench/results/scale.md
    nice -n 10 python bench/scale.py --round-sizes 10000,30000 --out bench/results/scale_round.json
    nice -n 10 python bench/scale.py --read-sizes 10000,100000 --out bench/results/scale_read.json
    nice -n 10 python bench/scale.py --predict-ray 60000
    nice -n 10 python bench/scale.py --graph-memory 10000,30000
    nice -n 10 python bench/scale.py --pool-run-sizes 10000,100000 --out bench/results/scale_pool_run.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Cell:
    encoder: str
    items: int
    workers: int  # 0: one process, no Ray
    ray_start_s: float
    embed_s: float
    driver_cpu_s: float
    pool_rss_mb: float  # resident memory once the pool is in memory, before embedding
    peak_rss_mb: float  # the kernel's peak (VmHWM) from then on: private and shared pages
    heap_growth_mb: float  # sampled peak of private memory (RssAnon) over its value before embedding
    shared_peak_mb: float  # sampled peak of shared memory (RssShmem): Ray's object store as the driver maps it

    @property
    def items_per_s(self) -> float:
        return self.items / self.embed_s


def synthetic_pool(items: int, *, labeled: bool = False):
    """Fashion-MNIST's training images, repeated past 60k with a seeded shift and noise per copy (labels kept)."""
    import metalabel as ml
    from metalabel.data.dataset import UNLABELED, LabeledDataset

    base = ml.datasets.load("fashion-mnist", split="train")
    rng = np.random.default_rng(0)
    parts, made = [], 0
    for copy in range(-(-items // len(base))):
        part = base.items[: items - made]
        if copy:
            part = np.roll(part, tuple(rng.integers(-3, 4, size=2)), axis=(1, 2))
            noise = rng.integers(0, 8, size=part.shape, dtype=np.uint8)
            part = np.minimum(part.astype(np.uint16) + noise, 255).astype(np.uint8)
        parts.append(part)
        made += len(part)
    labels = np.resize(base.labels, items) if labeled else np.full(items, UNLABELED)
    return LabeledDataset(f"fashion-mnist-x{len(parts)}", "image", np.concatenate(parts), labels,
                          base.class_names, [f"synthetic/{i}" for i in range(items)])


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Start the kernel's peak-RSS count (VmHWM) again from the current RSS: the pool's making is not measured."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def status_mb(*fields: str) -> list[float]:
    """Fields of /proc/self/status (kB) in MB, in the order asked."""
    with open("/proc/self/status") as status:
        values = dict(line.split(":", 1) for line in status)
    return [int(values[field].split()[0]) / 1024 for field in fields]


class PeakSampler:
    """The largest private (RssAnon), shared (RssShmem: Ray's object store, mapped) and file-backed (RssFile:
    memory-mapped files, such as the embedding cache a round reads) resident memory, sampled.

    The kernel keeps a peak only for the sum (VmHWM); the split says which part is the driver's own heap.
    """

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.anon, self.shmem, self.file = every_s, 0.0, 0.0, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            anon, shmem, file = status_mb("RssAnon", "RssShmem", "RssFile")
            self.anon, self.shmem, self.file = max(self.anon, anon), max(self.shmem, shmem), max(self.file, file)
            self.stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def run_cell(encoder: str, items: int, workers: int) -> Cell:
    """One measurement, in this process (called in a fresh child by ``main``)."""
    import gc
    import logging

    from metalabel.data.encoders import embed_dataset, get_encoder

    pool = synthetic_pool(items)
    gc.collect()
    reset_peak()
    pool_rss = rss_mb()
    chosen = get_encoder(encoder, image_size=64) if encoder == "efficientnet-lite0" else get_encoder(encoder)
    ray_start = 0.0
    if workers:
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        ray_start = time.perf_counter() - began
    anon_before = status_mb("RssAnon")[0]
    wall, cpu = time.perf_counter(), time.process_time()
    with PeakSampler() as sampled:
        if workers:
            from metalabel.scale import embed_on_ray

            embed_on_ray(pool, chosen, progress=False)
        else:
            embed_dataset(pool, chosen, progress=False)
    embed_s, driver_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Cell(encoder, items, workers, ray_start, embed_s, driver_cpu, pool_rss, status_mb("VmHWM")[0],
                sampled.anon - anon_before, sampled.shmem)


@dataclass(frozen=True)
class RoundCell:
    items: int
    seconds: float
    pool_rss_mb: float
    peak_rss_mb: float
    heap_growth_mb: float
    neighbours: str  # how the round's nearest-neighbour graph was searched: "exact" or "approximate (faiss)"
    # sampled peak of file-backed resident memory (RssFile) over its value before the round: the pages of the
    # memory-mapped embedding cache as the round reads them (counted in RSS, not the heap; the OS may drop them)
    file_growth_mb: float = 0.0


def run_round(items: int, exact_max: int | None = None) -> RoundCell:
    """One labeling round on a synthetic pool in one process (what follows the embedding, with or without Ray).

    ``exact_max`` overrides the pool size above which the graph's neighbours are searched approximately.
    """
    import gc

    import metalabel.label.graph as graph
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    if exact_max is not None:
        graph.EXACT_NEIGHBOURS_MAX = exact_max
    approximate = items > graph.EXACT_NEIGHBOURS_MAX and graph.faiss_installed()
    pool = synthetic_pool(items, labeled=True)
    gold, seeds = gold_labels(pool), seed_labels_from_pool(pool, per_class=5, seed=0)
    gc.collect()
    reset_peak()
    pool_rss, (anon_before, file_before) = rss_mb(), status_mb("RssAnon", "RssFile")
    with tempfile.TemporaryDirectory() as folder, PeakSampler() as sampled:
        began = time.perf_counter()
        with Project.create(Path(folder) / "p", pool=pool, labels=seeds) as project:
            project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=20, per_round=20, max_rounds=1,
                        project_meta_steps=0, generate=False, progress=False)
        seconds = time.perf_counter() - began
    return RoundCell(items, seconds, pool_rss, status_mb("VmHWM")[0], sampled.anon - anon_before,
                     "approximate (faiss)" if approximate else "exact", sampled.file - file_before)


@dataclass(frozen=True)
class ReadCell:
    how: str  # "whole", or "chunks" (with glibc's default allocator settings or a fixed mmap threshold)
    items: int
    seconds: float
    start_rss_mb: float  # resident memory before reading (Python, numpy, torch and metalabel imported)
    peak_rss_mb: float  # the kernel's peak (VmHWM) from then on
    heap_growth_mb: float  # sampled peak of private memory (RssAnon) over its value before reading


def write_png_folder(items: int, folder: Path) -> None:
    """The synthetic pool's images as PNG files in one flat folder (an unlabeled pool)."""
    from PIL import Image

    folder.mkdir(parents=True)
    for index, image in enumerate(synthetic_pool(items).items):
        Image.fromarray(image).save(folder / f"{index:07d}.png")


def run_read(how: str, folder: Path) -> ReadCell:
    """Read and embed the PNG folder whole or in chunks, in this process (a fresh child of ``reads_only``)."""
    import gc

    from metalabel.data.encoders import embed_dataset, embed_in_chunks, get_encoder
    from metalabel.data.sources.user import chunked_imagefolder, imagefolder

    encoder = get_encoder("pixels")
    gc.collect()
    reset_peak()
    start_rss, anon_before = rss_mb(), status_mb("RssAnon")[0]
    began = time.perf_counter()
    with PeakSampler() as sampled:
        if how == "whole":
            items = len(embed_dataset(imagefolder(folder), encoder, progress=False))
        else:
            items = embed_in_chunks(chunked_imagefolder(folder), encoder, progress=False).items
    return ReadCell(how, items, time.perf_counter() - began, start_rss, status_mb("VmHWM")[0],
                    sampled.anon - anon_before)


def reads_only(args: argparse.Namespace) -> None:
    """Per size, the PNG folder written once, then read whole and in chunks, each in a fresh process."""
    load_before = os.getloadavg()
    cells = []
    with tempfile.TemporaryDirectory() as scratch:
        for items in (int(size) for size in args.read_sizes.split(",")):
            folder = Path(scratch) / f"pool{items}"
            write_png_folder(items, folder)
            for how in ("whole", "chunks", "chunks, fixed mmap threshold"):
                # glibc raises its mmap threshold as big buffers are freed, then keeps freed ones in its heap;
                # a fixed threshold (1 MiB) hands each back at once: the third row tells the heap it keeps apart
                allocator = {"MALLOC_MMAP_THRESHOLD_": str(2**20)} if "mmap" in how else {}
                with tempfile.TemporaryDirectory() as cache:
                    out = subprocess.run([sys.executable, __file__, "--read-cell", how, str(folder)],
                                         env={**os.environ, "METALABEL_CACHE": cache, **allocator}, check=True,
                                         capture_output=True, text=True)
                cells.append(ReadCell(**json.loads(out.stdout.strip().splitlines()[-1])))
                print(f"{how} {items} items: {cells[-1].seconds:.1f} s, peak {cells[-1].peak_rss_mb:.0f} MB",
                      flush=True)
    args.out.write_text(json.dumps({"command": "python bench/scale.py " + shlex.join(sys.argv[1:]),
                                    "note": args.note, "load_before": load_before, "load_after": os.getloadavg(),
                                    "reads": [asdict(cell) for cell in cells]}, indent=2))
    print("| read | items | s | items/s | driver RSS before, MB | driver peak RSS, MB | heap growth, MB |")
    print("|---|---|---|---|---|---|---|")
    for cell in cells:
        print(f"| {cell.how} | {cell.items} | {cell.seconds:.1f} | {cell.items / cell.seconds:.0f} | "
              f"{cell.start_rss_mb:.0f} | {cell.peak_rss_mb:.0f} | {cell.heap_growth_mb:.0f} |")


@dataclass(frozen=True)
class PoolRunCell:
    items: int
    load_s: float  # Project.open and load_pool: the folder read and checked against the stored hashes
    run_s: float  # Project.run: one round, embedding included
    start_rss_mb: float  # resident memory before the project is opened (imports done)
    pool_traced_mb: float  # what tracemalloc counts still allocated once the pool is loaded (Python objects, numpy)
    pool_heap_mb: float  # private memory (RssAnon) the loaded pool holds, over its value before the open
    peak_rss_mb: float  # the kernel's peak (VmHWM) from the open on
    heap_growth_mb: float  # sampled peak of private memory over its value before the open, through the run
    file_growth_mb: float  # sampled peak of file-backed resident memory (mapped files) over its value before
    behaviour: str  # sha256 of the questions asked (uri, strategy, answer) and the labels made, to compare commits


def make_pool_project(items: int, scratch: Path) -> tuple[Path, Path]:
    """The synthetic pool as a flat PNG folder, a project made from it (5 seed labels a class by uri) and the
    gold labels by uri (a JSON file the measuring process reads)."""
    import metalabel as ml
    from metalabel.datasets import gold_labels, seed_labels_from_pool
    from metalabel.project import Project

    folder = scratch / f"pool{items}"
    write_png_folder(items, folder)
    labeled = synthetic_pool(items, labeled=True)
    by_uri = {f"synthetic/{index}": str(folder / f"{index:07d}.png") for index in range(items)}
    seeds = {by_uri[labeled.uris[index]]: name for index, name in
             seed_labels_from_pool(labeled, per_class=5, seed=0).items()}
    gold = {by_uri[uri]: name for uri, name in gold_labels(labeled).items()}
    del labeled
    project = scratch / f"project{items}"
    Project.create(project, pool=ml.datasets.imagefolder(folder), labels=seeds).close()
    gold_file = scratch / f"gold{items}.json"
    gold_file.write_text(json.dumps(gold))
    return project, gold_file


def run_pool_project(project_folder: Path, gold_file: Path) -> PoolRunCell:
    """Open the project, load its pool from the folder and run one round, in this process (a fresh child)."""
    import gc
    import tracemalloc

    from metalabel.label.oracle import SimulatedOracle
    from metalabel.project import Project

    gold = json.loads(gold_file.read_text())
    gc.collect()
    reset_peak()
    start_rss, (anon_before, file_before) = rss_mb(), status_mb("RssAnon", "RssFile")
    with PeakSampler() as sampled:
        began = time.perf_counter()
        tracemalloc.start()  # for the open and the load only: what Python and numpy allocated and still hold
        with Project.open(project_folder) as project:
            pool = project.load_pool()
            loaded = time.perf_counter()
            pool_traced = tracemalloc.get_traced_memory()[0] / 2**20
            tracemalloc.stop()
            gc.collect()
            pool_heap = status_mb("RssAnon")[0] - anon_before
            project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=20, per_round=20, max_rounds=1,
                        project_meta_steps=0, generate=False, progress=False)
            ran = time.perf_counter()
            store = project.store
            name = lambda uri: Path(uri).name  # noqa: E731 (the folder is a fresh scratch path each time)
            behaviour = hashlib.sha256(json.dumps(
                [[(name(q.uri), q.strategy, q.answer) for q in store.answered_questions()],
                 sorted((name(label.uri), label.class_name, label.source, label.calibrated_confidence)
                        for label in store.active_labels())]).encode()).hexdigest()
            assert len(pool) == len(gold)
    return PoolRunCell(len(gold), loaded - began, ran - loaded, start_rss, pool_traced, pool_heap,
                       status_mb("VmHWM")[0], sampled.anon - anon_before, sampled.file - file_before, behaviour)


def pool_runs_only(args: argparse.Namespace) -> None:
    """Per size, the PNG folder and its project made once, then one run in a fresh process with an empty cache."""
    load_before = os.getloadavg()
    cells = []
    with tempfile.TemporaryDirectory() as scratch:
        for items in (int(size) for size in args.pool_run_sizes.split(",")):
            project, gold_file = make_pool_project(items, Path(scratch))
            run_copy = Path(scratch) / "run"
            shutil.copytree(project, run_copy)  # the run writes answers: the made project stays as it was
            with tempfile.TemporaryDirectory() as cache:
                out = subprocess.run([sys.executable, __file__, "--pool-run-cell", str(run_copy), str(gold_file)],
                                     env={**os.environ, "METALABEL_CACHE": cache}, check=True, capture_output=True,
                                     text=True)
            shutil.rmtree(run_copy)
            cells.append(PoolRunCell(**json.loads(out.stdout.strip().splitlines()[-1])))
            print(f"run over {items} items from files: load {cells[-1].load_s:.1f} s, run {cells[-1].run_s:.1f} s, "
                  f"heap growth {cells[-1].heap_growth_mb:.0f} MB", flush=True)
    args.out.write_text(json.dumps({"command": "python bench/scale.py " + shlex.join(sys.argv[1:]),
                                    "note": args.note, "load_before": load_before, "load_after": os.getloadavg(),
                                    "pool_runs": [asdict(cell) for cell in cells]}, indent=2))
    print(pool_run_table(cells))


def pool_run_table(cells: list[PoolRunCell], code: str = "") -> str:
    rows = ["| items | code | load s | run s | driver RSS before, MB | loaded pool, traced MB | loaded pool, heap MB | "
            "driver peak RSS, MB | heap growth, MB | file-backed growth, MB | behaviour (sha256) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows += [f"| {cell.items} | {code} | {cell.load_s:.1f} | {cell.run_s:.1f} | {cell.start_rss_mb:.0f} | "
             f"{cell.pool_traced_mb:.1f} | {cell.pool_heap_mb:.0f} | {cell.peak_rss_mb:.0f} | "
             f"{cell.heap_growth_mb:.0f} | {cell.file_growth_mb:.0f} | {cell.behaviour[:12]} |" for cell in cells]
    return "\n".join(rows)


def graph_memory(items: int) -> None:
    """The heap growth of building the pool graph alone on ``items`` random 784-d rows (printed)."""
    import gc

    from metalabel.label.graph import PoolGraph

    embeddings = np.random.default_rng(0).random((items, 784), dtype=np.float32)
    gc.collect()
    before = status_mb("RssAnon")[0]
    with PeakSampler(every_s=0.01) as sampled:
        PoolGraph.build(embeddings)
    growth = sampled.anon - before
    print(f"| {items} | {growth:.0f} | {growth * 1024 / items:.1f} |")


def predict_on_ray(items: int) -> None:
    """The heads' prediction over ``items`` pool items locally and as Ray Data map_batches (printed)."""
    import logging

    import torch
    from sklearn.linear_model import LogisticRegression

    from metalabel.data.encoders import embed_dataset
    from metalabel.label.transductive import prototype_logits

    pool = synthetic_pool(items, labeled=True)
    embeddings = embed_dataset(pool, "pixels", progress=False)
    rng = np.random.default_rng(0)
    support = np.concatenate([rng.choice(np.flatnonzero(pool.labels == c), 50, replace=False) for c in range(10)])
    prototypes = torch.stack([torch.from_numpy(embeddings[support[pool.labels[support] == c]]).mean(0)
                              for c in range(10)])
    probe = LogisticRegression(max_iter=300).fit(embeddings[support], pool.labels[support])

    def best_of_three(predict):
        seconds = []
        for _ in range(3):
            began = time.perf_counter()
            out = predict()
            seconds.append(time.perf_counter() - began)
        return min(seconds), out

    prototype_s, _ = best_of_three(lambda: prototype_logits(torch.from_numpy(embeddings), prototypes).numpy())
    probe_s, local = best_of_three(lambda: probe.predict_log_proba(embeddings))
    import ray
    import ray.data

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    start_s = time.perf_counter() - began
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars, context.print_on_execution_start = False, False
    coef, intercept = probe.coef_, probe.intercept_

    def predict(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = batch["data"] @ coef.T + intercept
        logits -= logits.max(1, keepdims=True)
        return {"log_p": logits - np.log(np.exp(logits).sum(1, keepdims=True))}

    began = time.perf_counter()
    dataset = ray.data.from_numpy(embeddings).materialize()
    put_s = time.perf_counter() - began
    ray_s, remote = best_of_three(lambda: np.concatenate([batch["log_p"] for batch in dataset.map_batches(
        predict, batch_size=8192, batch_format="numpy").iter_batches(batch_size=None, batch_format="numpy")]))
    ray.shutdown()
    print(f"| {items} | {embeddings.shape[1]} | {prototype_s:.2f} | {probe_s:.2f} | {start_s:.1f} | {put_s:.1f} | "
          f"{ray_s:.2f} | {np.abs(remote - local).max():.0e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="pool sizes for the pixel encoder")
    parser.add_argument("--real-size", type=int, default=2000, help="pool size for efficientnet-lite0 (0: skip)")
    parser.add_argument("--workers", default="0,1,2", help="0 is one process without Ray")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--round-sizes", default="", help="pool sizes for one labeling round (pixels, one process)")
    parser.add_argument("--cell", nargs=3, metavar=("ENCODER", "ITEMS", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--round-cell", type=int, metavar="ITEMS", help=argparse.SUPPRESS)
    parser.add_argument("--exact-neighbours-max", type=int,
                        help="with --round-sizes: search the graph's neighbours approximately above this many items")
    parser.add_argument("--read-sizes", default="", help="pool sizes to read from a PNG folder, whole and in chunks")
    parser.add_argument("--graph-memory", default="", help="pool sizes to build the round's graph alone at")
    parser.add_argument("--graph-cell", type=int, metavar="ITEMS", help=argparse.SUPPRESS)
    parser.add_argument("--predict-ray", type=int, metavar="ITEMS", help="time the pool's prediction, local and Ray")
    parser.add_argument("--read-cell", nargs=2, metavar=("HOW", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--pool-run-sizes", default="",
                        help="pool sizes for a whole run over a project's PNG folder (load, check, one round)")
    parser.add_argument("--pool-run-cell", nargs=2, metavar=("PROJECT", "GOLD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pool_run_cell:
        print(json.dumps(asdict(run_pool_project(Path(args.pool_run_cell[0]), Path(args.pool_run_cell[1])))))
        return
    if args.pool_run_sizes:
        pool_runs_only(args)
        return
    if args.cell:
        print(json.dumps(asdict(run_cell(args.cell[0], int(args.cell[1]), int(args.cell[2])))))
        return
    if args.round_cell:
        print(json.dumps(asdict(run_round(args.round_cell, args.exact_neighbours_max))))
        return
    if args.predict_ray:
        predict_on_ray(args.predict_ray)
        return
    if args.graph_cell:
        graph_memory(args.graph_cell)
        return
    if args.graph_memory:
        print("| items | heap growth, MB | per item, KB |\n|---|---|---|")
        for size in args.graph_memory.split(","):
            out = subprocess.run([sys.executable, __file__, "--graph-cell", size], check=True, capture_output=True,
                                 text=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
        return
    if args.read_cell:
        print(json.dumps(asdict(run_read(args.read_cell[0], Path(args.read_cell[1])))))
        return
    if args.round_sizes:
        rounds_only(args)
        return
    if args.read_sizes:
        reads_only(args)
        return
    plan = [("pixels", int(size)) for size in args.sizes.split(",")]
    if args.real_size:
        plan.append(("efficientnet-lite0", args.real_size))
    load_before = os.getloadavg()
    cells = []
    for encoder, items in plan:
        for workers in (int(w) for w in args.workers.split(",")):
            with tempfile.TemporaryDirectory() as cache:
                out = subprocess.run([sys.executable, __file__, "--cell", encoder, str(items), str(workers)],
                                     env={**os.environ, "METALABEL_CACHE": cache}, check=True,
                                     capture_output=True, text=True)
            cell = Cell(**json.loads(out.stdout.strip().splitlines()[-1]))
            cells.append(cell)
            print(f"{encoder} {items} items, {workers or 'no Ray'} workers: {cell.embed_s:.1f} s "
                  f"({cell.items_per_s:.0f}/s), driver peak {cell.peak_rss_mb:.0f} MB", flush=True)
    write(args, cells, load_before, os.getloadavg())


def rounds_only(args: argparse.Namespace) -> None:
    """One labeling round per size, each in a fresh process; the cells go to ``--out``, the table is printed."""
    load_before = os.getloadavg()
    cells = []
    for items in (int(size) for size in args.round_sizes.split(",")):
        with tempfile.TemporaryDirectory() as cache:
            limit = [] if args.exact_neighbours_max is None else ["--exact-neighbours-max",
                                                                  str(args.exact_neighbours_max)]
            out = subprocess.run([sys.executable, __file__, "--round-cell", str(items), *limit],
                                 env={**os.environ, "METALABEL_CACHE": cache}, check=True, capture_output=True,
                                 text=True)
        cells.append(RoundCell(**json.loads(out.stdout.strip().splitlines()[-1])))
        print(f"round on {items} items: {cells[-1].seconds:.1f} s, driver peak {cells[-1].peak_rss_mb:.0f} MB",
              flush=True)
    args.out.write_text(json.dumps({"command": "python bench/scale.py " + shlex.join(sys.argv[1:]),
                                    "note": args.note, "load_before": load_before, "load_after": os.getloadavg(),
                                    "rounds": [asdict(cell) for cell in cells]}, indent=2))
    print("| items | neighbours | round s | items/s | driver RSS with the pool, MB | driver peak RSS, MB | "
          "heap growth, MB | heap growth per item, KB | file-backed growth, MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        print(f"| {cell.items} | {cell.neighbours} | {cell.seconds:.1f} | {cell.items / cell.seconds:.0f} | "
              f"{cell.pool_rss_mb:.0f} | {cell.peak_rss_mb:.0f} | {cell.heap_growth_mb:.0f} | "
              f"{cell.heap_growth_mb * 1024 / cell.items:.1f} | {cell.file_growth_mb:.0f} |")


def write(args: argparse.Namespace, cells: list[Cell], load_before: tuple[float, ...],
          load_after: tuple[float, ...]) -> None:
    import metalabel

    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python bench/scale.py " + shlex.join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.out.write_text(json.dumps(
        {"command": command, "machine": machine, "note": args.note, "load_before": load_before,
         "load_after": load_after, "metalabel": metalabel.__version__,
         "cells": [asdict(cell) | {"items_per_s": cell.items_per_s} for cell in cells]}, indent=2))
    rows = ["| encoder | items | run on | cluster start s | embed s | items/s | driver CPU s | driver RSS with the "
            "pool, MB | driver peak RSS, MB | of which heap growth, MB | object store mapped, MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        where = f"Ray, {cell.workers} worker{'s' if cell.workers > 1 else ''}" if cell.workers else "one process"
        rows.append(f"| {cell.encoder} | {cell.items} | {where} | {cell.ray_start_s:.1f} | {cell.embed_s:.1f} | "
                    f"{cell.items_per_s:.0f} | {cell.driver_cpu_s:.1f} | {cell.pool_rss_mb:.0f} | "
                    f"{cell.peak_rss_mb:.0f} | {cell.heap_growth_mb:.0f} | {cell.shared_peak_mb:.0f} |")
    print(f"`{command}` on {machine}, metalabel {metalabel.__version__}. Load average (1, 5, 15 min) "
          f"{', '.join(f'{x:.2f}' for x in load_before)} before, {', '.join(f'{x:.2f}' for x in load_after)} "
          f"after. Also running: {args.note or 'nothing noted'}.\n")
    print("\n".join(rows))

if __name__ == "__main__":
    main()
