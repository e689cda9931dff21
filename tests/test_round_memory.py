"""A labeling round reads the pool's embeddings memory-mapped from the embedding cache, never a heap copy.

On a big pool the round's driver memory was the embeddings held in the heap plus copies of them
(bench/results/scale.md, issue 15). These tests fail if the round copies the pool's embeddings into the
heap again, or writes into the mapped file's pages (copy-on-write would make them private, silently).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import metalabel.label.round_model as round_model
from metalabel.data.dataset import LabeledDataset
from metalabel.data.encoders import embed_dataset, embedding_cache_path, get_encoder
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.label.oracle import SimulatedOracle
from metalabel.label.transductive import LOGIT_ROWS, prototype_logits
from metalabel.meta.functional import squared_distances
from metalabel.project import Project

ROOT = Path(__file__).resolve().parents[1]

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def blobs(items: int, ways: int = 4, seed: int = 0) -> LabeledDataset:
    """28x28 grey images around one random image a class."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, size=(ways, 28, 28))
    labels = np.arange(items) % ways
    images = np.clip(centres[labels] + rng.integers(-40, 41, size=(items, 28, 28)), 0, 255).astype(np.uint8)
    return LabeledDataset("blobs", "image", images, labels, [f"c{i}" for i in range(ways)],
                          [f"blob/{i}" for i in range(items)])


def mapping_of(address: int) -> tuple[str, dict[str, int]]:
    """The file a mapping of this process holds ``address`` in, and its /proc/self/smaps counts (kB)."""
    found: tuple[str, dict[str, int]] | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line: range perms ... path
                low, high = (int(end, 16) for end in fields[0].split("-"))
                found = (fields[5] if len(fields) > 5 else "", {}) if low <= address < high else None
            elif found is not None and fields[-1] == "kB":
                found[1][fields[0].rstrip(":")] = int(fields[1])
            elif found is not None and found[1]:
                return found
    assert found is not None, f"no mapping holds address {address:#x}"
    return found


def test_embeddings_made_batch_by_batch_into_the_file_are_those_of_encode(cache, monkeypatch) -> None:
    dataset = blobs(50)
    encoder = get_encoder("pixels")
    expected = encoder.encode(dataset.items, progress=False)
    # batches in a scrambled order, as a text encoder's (by length): each row must still land at its place
    monkeypatch.setattr(type(encoder), "_batch_order", lambda self, prepared: np.random.default_rng(1).permutation(
        len(prepared)))
    monkeypatch.setattr(type(encoder), "default_batch_size", 7)
    made = embed_dataset(dataset, encoder, progress=False, mmap=True)
    read = embed_dataset(dataset, encoder, progress=False, mmap=True)
    for embeddings in (made, read):
        assert isinstance(embeddings, np.memmap) and Path(embeddings.filename) == embedding_cache_path(
            dataset.items, encoder)
        np.testing.assert_array_equal(embeddings, expected)
    np.testing.assert_array_equal(embed_dataset(dataset, encoder, progress=False), expected)  # the heap path


@LINUX
def test_a_round_reads_the_pool_from_the_cache_file_and_writes_nothing_into_it(cache, monkeypatch) -> None:
    pool = blobs(600)
    read: list[torch.Tensor] = []
    make = round_model.RoundModel.__init__

    def keeping_what_it_reads(self, learner, x, **options):  # type: ignore[no-untyped-def]
        read.append(x)
        make(self, learner, x, **options)

    monkeypatch.setattr(round_model.RoundModel, "__init__", keeping_what_it_reads)
    seeds = seed_labels_from_pool(pool, per_class=3, seed=0)
    with Project.create(cache.parent / "project", pool=pool, labels=seeds) as p:
        p.run(oracle=SimulatedOracle(gold_labels(pool)), encoder="pixels", budget=8, per_round=8, max_rounds=1,
              project_meta_steps=0, generate=False, progress=False)
    assert read
    cache_file = embedding_cache_path(pool.items, get_encoder("pixels"))
    for x in read:
        path, counts = mapping_of(x.data_ptr())
        assert Path(path) == cache_file, f"the round read a copy of the pool's embeddings ({path or 'the heap'})"
        assert mapping_of(x.data_ptr() + x.nbytes - 1)[0] == path
        # a page written in place becomes an anonymous copy in the mapping: the round must only read
        assert counts["Anonymous"] == 0, f"the round wrote into the pool's embeddings ({counts})"



def test_prototype_logits_by_blocks_are_the_logits_computed_whole() -> None:
    """Soft k-means' distances over a big pool go by blocks (no [N, d] squared copy), bit for bit as whole.

    A last block of a few rows alone was multiplied in other bits (5 of 3,077 rows here, 784-d): it joins the
    block before it.
    """
    torch.manual_seed(0)
    for rows, dims in ((3 * LOGIT_ROWS + 5, 784), (2 * LOGIT_ROWS + 5, 24), (5 * LOGIT_ROWS + 700, 384)):
        pool, prototypes = torch.randn(rows, dims), torch.randn(10, dims)
        assert torch.equal(prototype_logits(pool, prototypes), -squared_distances(pool, prototypes))


# One round model's heads over a pool of 12,288 items in 1,024 dimensions (48 MB), in a fresh process: the peak of
# its resident memory over what it held before, in bytes. glibc's mmap threshold is fixed at 1 MiB, so a buffer
# freed goes back to the kernel and the peak counts what the heads hold, not what the allocator keeps.
PEAK_OF_A_ROUND = textwrap.dedent("""
    import gc, json
    import numpy as np, torch
    import metalabel.label.graph as graph
    from metalabel.label.round_model import RoundModel, default_learner

    def resident(field):
        with open("/proc/self/status") as status:
            return int(dict(line.split(":", 1) for line in status)[field].split()[0]) * 1024

    graph.BLOCK_BYTES = 8 * 2**20  # the distance blocks' fixed 64 MB would hide what grows with the pool
    rng = np.random.default_rng(0)
    items, dims, ways = 12288, 1024, 4
    y = np.arange(items) % ways
    pool = torch.from_numpy((rng.normal(size=(ways, dims))[y] + rng.normal(size=(items, dims))).astype(np.float32))
    support = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(ways)])
    for x, labeled in ((pool[:500].clone(), np.arange(8)), (pool, support)):  # the first loads what heads load
        gc.collect()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # the kernel's peak (VmHWM) starts again from the resident memory now
        before = resident("VmRSS")
        for head in RoundModel(default_learner(), x, refine_steps=1).variants():
            head.logits(labeled, y[labeled], np.ones(len(labeled)), ways)
    print(json.dumps({"pool": pool.nbytes, "peak": resident("VmHWM") - before}))
""")


@LINUX
def test_a_rounds_heads_never_hold_a_copy_of_the_pools_embeddings() -> None:
    """The graph's principal axes and soft k-means read the pool in place: each copied it whole (the centred
    embeddings, the unlabeled rows), which held 1.35 times the pool's bytes over the round's start here; now 0.6."""
    measured = peak_in_a_fresh_process(PEAK_OF_A_ROUND)
    assert measured["peak"] < measured["pool"], f"the round's heads held {measured['peak'] / measured['pool']:.2f} " \
        "times the pool's embeddings at their peak"


def peak_in_a_fresh_process(script: str) -> dict[str, int]:
    """What ``script`` printed last (its pool's bytes and its peak), run with glibc's mmap threshold at 1 MiB."""
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          check=True)
    measured: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return measured


# A big pool's neighbour graph (the approximate search, forced) over 40,000 items in 256 dimensions (39 MB), in a
# fresh process, as above: the peak of its resident memory over what it held before, in bytes.
PEAK_OF_AN_APPROXIMATE_GRAPH = textwrap.dedent("""
    import json
    import numpy as np
    import metalabel.label.graph as graph

    def resident(field):
        with open("/proc/self/status") as status:
            return int(dict(line.split(":", 1) for line in status)[field].split()[0]) * 1024

    graph.EXACT_NEIGHBOURS_MAX, graph.SEARCH_BYTES = 0, 2**20  # searched approximately, by blocks of 512 rows
    rng = np.random.default_rng(0)
    items, dims = 40000, 256
    pool = (rng.normal(size=(8, dims))[np.arange(items) % 8] + rng.normal(size=(items, dims))).astype(np.float32)
    graph.PoolGraph.build(pool[:8000])  # loads what the search loads
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = resident("VmRSS")
    graph.PoolGraph.build(pool)
    print(json.dumps({"pool": pool.nbytes, "peak": resident("VmHWM") - before}))
""")


@LINUX
def test_a_big_pools_graph_projects_and_searches_the_pool_by_blocks() -> None:
    """The approximate search held the [N, 128] projection, faiss's float32 copy of it and the whole search's
    results at once: 1.69 times the pool's bytes here; by blocks, with faiss keeping 16-bit floats, 1.00 times
    (most of it the k-means training sample, all 40,000 rows projected at this size, and the graph's matrices)."""
    pytest.importorskip("faiss")
    measured = peak_in_a_fresh_process(PEAK_OF_AN_APPROXIMATE_GRAPH)
    assert measured["peak"] < 1.5 * measured["pool"], f"the graph held {measured['peak'] / measured['pool']:.2f} " \
        "times the pool's embeddings at its peak"
