"""The pool embedded on a local Ray cluster (two worker CPUs, started here): the same numbers, labels and provenance
as the single-process run, the content-keyed cache reused, and a worker killed mid-embedding recovered by Ray."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
# Ray Data reads its own deprecated settings when it copies its context to the workers: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data")

import metalabel as ml  # noqa: E402
from metalabel import scale  # noqa: E402
from metalabel.data.dataset import LabeledDataset  # noqa: E402
from metalabel.data.encoders import PixelEncoder, embed_dataset, embedding_cache_path, get_encoder  # noqa: E402
from metalabel.datasets import gold_labels, seed_labels_from_pool  # noqa: E402
from metalabel.label.oracle import SimulatedOracle  # noqa: E402
from metalabel.project import Project  # noqa: E402
from metalabel.scale import RayEmbedding, embed_on_ray  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster on this machine with two worker CPUs, for the whole file; stopped after it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    # the killed-worker test's encoder is defined here; the workers cannot import a test file, so send it whole
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def kanji_pool() -> LabeledDataset:
    return ml.datasets.load("kanji", split="evaluation", max_classes=4, samples_per_class=12, progress=False)


class _DiesOnce(PixelEncoder):
    """The pixel encoder, except that the first worker to embed a batch is killed (SIGKILL) in the middle of it."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def _encode_batch(self, prepared, indices):
        try:
            with open(self.marker, "x") as file:  # only the first batch anywhere gets here
                file.write(str(os.getpid()))
        except FileExistsError:
            return super()._encode_batch(prepared, indices)
        os.kill(os.getpid(), signal.SIGKILL)


def test_embeddings_are_those_of_one_process_the_cache_is_reused_and_a_killed_worker_is_replaced(
        cluster, kanji_pool, cache, tmp_path) -> None:
    alone = embed_dataset(kanji_pool, "pixels", cache=False, progress=False)
    made = embed_on_ray(kanji_pool, "pixels", chunk_size=10, progress=False)
    assert (made.chunks, made.chunks_cached, made.workers) == (5, 0, 2)
    assert made.path == embedding_cache_path(kanji_pool.items, get_encoder("pixels"))
    assert np.array_equal(made.load(), alone)  # bitwise: the same encoder on the same items
    assert np.array_equal(embed_dataset(kanji_pool, "pixels", progress=False), alone)  # read from Ray's file

    again = embed_on_ray(kanji_pool, "pixels", chunk_size=10, progress=False)
    assert (again.chunks_cached, again.workers) == (5, 0)  # nothing run: the whole pool was cached

    # a second project's pool: this one plus new items. The encoder embeds like the pixel encoder (same cache
    # key), except that the first worker to embed a batch is killed in the middle of it
    grown = LabeledDataset("grown", "image", np.concatenate([kanji_pool.items, kanji_pool.items[:7] // 2]),
                           np.full(len(kanji_pool) + 7, -1), kanji_pool.class_names,
                           [*kanji_pool.uris, *(f"new/{i}" for i in range(7))])
    marker = tmp_path / "killed"
    second = embed_on_ray(grown, _DiesOnce(marker), chunk_size=10, progress=False)
    assert (second.chunks, second.chunks_cached) == (6, 4)  # 48 shared items: chunks 0-3 whole, chunk 4 not
    with pytest.raises(ProcessLookupError):  # the worker really died...
        os.kill(int(marker.read_text()), 0)
    # ...and Ray started another that ran its batch again: every number is there, and right
    assert np.array_equal(second.load(), embed_dataset(grown, "pixels", cache=False, progress=False))
    assert np.array_equal(second.load()[: len(kanji_pool)], alone)


def test_a_real_encoder_on_two_workers_matches_one_process(cluster, kanji_pool, cache) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pool = kanji_pool.subset(np.arange(0, len(kanji_pool), 3))  # 16 items: the model's load is the cost here
    alone = embed_dataset(pool, "efficientnet-lite0", cache=False, progress=False)
    made = embed_on_ray(pool, "efficientnet-lite0", chunk_size=8, progress=False)
    assert made.workers == 2
    # batches of other sizes may take other convolution kernels: equal to float rounding, not bit for bit
    np.testing.assert_allclose(made.load(), alone, rtol=0, atol=1e-5)


def test_a_project_run_on_ray_labels_as_the_run_without_it(cluster, kanji_pool, tmp_path, monkeypatch) -> None:
    gold = gold_labels(kanji_pool)
    seeds = seed_labels_from_pool(kanji_pool, per_class=2, seed=0)
    options = dict(encoder="pixels", budget=4, per_round=4, progress=False, project_meta_steps=0, generate=False,
                   seed=3)
    results = {}
    embedded: list[RayEmbedding] = []
    embed = scale.embed_on_ray  # watched, not replaced: the project calls it, and it runs for real
    monkeypatch.setattr(scale, "embed_on_ray", lambda *args, **kwargs: embedded.append(embed(*args, **kwargs)))
    for name, address in (("alone", None), ("ray", "local")):
        monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / f"cache-{name}"))  # Ray's run finds nothing cached
        with Project.create(tmp_path / name, pool=kanji_pool, labels=seeds) as project:
            result = project.run(oracle=SimulatedOracle(gold, seed=0), ray=address, **options)
            # every label with its provenance, less the row id and the clock
            labels = [{key: value for key, value in dataclasses.asdict(label).items()
                       if key not in ("id", "created_at", "retracted_at")}
                      for label in project.store.active_labels() + project.store.retracted_labels()]
            results[name] = (labels, [(r.human_labels, r.model_labels, r.coverage, r.certified_precision,
                                       r.questions, r.held_out_accuracy) for r in result.rounds])
    assert [(made.workers, made.chunks_cached) for made in embedded] == [(1, 0)]  # made on the cluster
    assert results["ray"] == results["alone"]
    assert results["alone"][0]  # the comparison is of something


def test_a_bad_ray_option_is_refused_before_anything_runs(kanji_pool, tmp_path, cache) -> None:
    with Project.create(tmp_path / "p", pool=kanji_pool, labels=seed_labels_from_pool(kanji_pool, per_class=2,
                                                                                      seed=0)) as project:
        with pytest.raises(ml.errors.BadInputError, match="ray must be"):
            project.run(oracle=SimulatedOracle(gold_labels(kanji_pool)), ray="", encoder="pixels", budget=4,
                        progress=False)
    with pytest.raises(ml.errors.BadInputError, match="chunk_size"):
        embed_on_ray(kanji_pool, "pixels", chunk_size=0)


def test_a_bad_item_is_refused_by_name_before_ray_starts(cache) -> None:
    pytest.importorskip("sentence_transformers")
    posts = LabeledDataset("posts", "text", ["a post", "  "], np.full(2, -1), ["a"], ["posts.csv:2", "posts.csv:3"])
    with pytest.raises(ml.errors.BadInputError, match=r"row 1: the text is empty .*posts\.csv:3"):
        embed_on_ray(posts, "minilm", address="no-such-cluster:1")  # refused before any address is tried


def test_nothing_of_ray_is_imported_until_a_run_asks_for_it() -> None:
    code = ("import sys, metalabel, metalabel.cli, metalabel.project, metalabel.scale; "
            "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"
