"""A project's run reads its pool's items from a file as it needs them, never all in its heap (issue 15).

A pool of the user's files (an image folder, a text file, a table) is read again for each run; its items go
a chunk at a time into an unnamed file and the run reads them from there (``metalabel.data.mapped``). These
tests fail if the reloaded pool holds its items in the heap again, or if a run on it asks, labels or reports
anything other than the same run on the pool held in memory.
"""

from __future__ import annotations

import csv
import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel as ml
from helpers import KANJI_POOL
from metalabel.data.dataset import LabeledDataset
from metalabel.data.mapped import MappedTexts, write_mapped
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.errors import PoolChangedError
from metalabel.label.oracle import SimulatedOracle
from metalabel.project import Project


def _image_folder(root: Path, pool: LabeledDataset) -> Path:
    for index, (image, label) in enumerate(zip(pool.items, pool.labels, strict=True)):
        folder = root / pool.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def _made(folder: Path, pool: LabeledDataset) -> None:
    Project.create(folder, pool=pool, labels=seed_labels_from_pool(pool, per_class=2, seed=0)).close()


def test_a_reloaded_image_pool_is_a_mapped_file_not_a_heap_array(cache, tmp_path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(300, 64, 64), dtype=np.uint8)  # 4 KB an image
    labels = np.arange(300) % 3
    pool = _image_folder(tmp_path / "pool", LabeledDataset("noise", "image", images, labels, ["a", "b", "c"],
                                                           [str(i) for i in range(300)]))
    whole = ml.datasets.imagefolder(pool)
    _made(tmp_path / "p", whole)
    with Project.open(tmp_path / "p") as project:
        project.store.items()  # the store's rows, read before the count: the pool's load is what is measured
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            reloaded = project.load_pool()  # read, checked against the stored hashes, kept for the run
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert isinstance(reloaded.items, np.memmap)
        assert np.array_equal(reloaded.items, whole.items) and reloaded.uris == whole.uris
        assert np.array_equal(reloaded.labels, whole.labels) and reloaded.class_names == whole.class_names
        # the uris and labels stay (a few hundred KB here), the images (1.2 MB) do not
        assert held < whole.items.nbytes / 4, (held, whole.items.nbytes)
        assert not list((cache / "items").iterdir())  # the file has no name: nothing is left in the cache


def _comparable_run(project: Project, gold: dict[str, str]) -> dict:
    result = project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=4, per_round=4, seed=1,
                         target_precision=0.8, reference_share=0.5, project_meta_steps=0, gold=gold, progress=False,
                         generate=False)
    store = project.store
    return {"rounds": [{key: value for key, value in report.to_json().items() if key != "seconds"}
                       for report in result.rounds],
            "questions": [(q.uri, q.strategy, q.answer) for q in store.answered_questions()],
            "labels": sorted((label.uri, label.class_name, label.source, label.calibrated_confidence)
                             for label in store.active_labels()),
            "stopped_because": result.stopped_because}


def test_a_run_on_the_mapped_pool_asks_labels_and_reports_as_on_the_pool_in_memory(cache, tmp_path) -> None:
    kanji = ml.datasets.load("kanji", **KANJI_POOL)
    whole = ml.datasets.imagefolder(_image_folder(tmp_path / "pool", kanji))
    gold = gold_labels(whole)
    with Project.create(tmp_path / "memory", pool=whole,
                        labels=seed_labels_from_pool(whole, per_class=2, seed=0)) as project:
        in_memory = _comparable_run(project, gold)  # the pool given to create, held in memory
    _made(tmp_path / "mapped", whole)
    with Project.open(tmp_path / "mapped") as project:
        assert isinstance(project.load_pool().items, np.memmap)
        mapped = _comparable_run(project, gold)
    assert len(mapped["questions"]) == 4
    assert mapped == in_memory


@pytest.fixture
def posts(tmp_path) -> Path:
    path = tmp_path / "posts.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for index in range(40):
            writer.writerow([f"post {index}: {'ünïcode ' * (index % 5)}{'x' * index}", "ab"[index % 2]])
    return path


def test_a_reloaded_text_pool_reads_each_text_from_its_file_and_a_changed_text_is_refused(cache, tmp_path,
                                                                                        posts) -> None:
    whole = ml.datasets.read_text(posts)
    _made(tmp_path / "p", whole)
    with Project.open(tmp_path / "p") as project:
        texts = project.load_pool().items
        assert isinstance(texts, MappedTexts)
        assert list(texts) == whole.items and len(texts) == 40
        assert texts[-1] == whole.items[-1] and texts[3:6] == whole.items[3:6]
        with pytest.raises(IndexError):
            texts[40]
        assert project.load_pool().subset([5, 1]).items == [whole.items[5], whole.items[1]]
    posts.write_text(posts.read_text(encoding="utf-8").replace("post 7:", "post 7!"), encoding="utf-8")
    with Project.open(tmp_path / "p") as project, pytest.raises(PoolChangedError, match="changed since init"):
        project.load_pool()


def test_a_reloaded_table_is_mapped_float32_rows(cache, tmp_path) -> None:
    table = tmp_path / "rows.csv"
    rows = np.random.default_rng(0).normal(size=(30, 4)).round(4)
    np.savetxt(table, np.column_stack([rows, np.arange(30) % 2]), delimiter=",", fmt="%.4f",
               header="f0,f1,f2,f3,label", comments="")
    whole = ml.datasets.read_table(table)
    _made(tmp_path / "p", whole)
    with Project.open(tmp_path / "p") as project:
        items = project.load_pool().items
        assert isinstance(items, np.memmap) and items.dtype == np.float32
        assert np.array_equal(items, whole.items)


def test_no_chunks_map_nothing_and_texts_without_bytes_map_as_empty(cache) -> None:
    assert write_mapped(iter([])) is None
    texts = write_mapped([["", ""], [""]])
    assert isinstance(texts, MappedTexts) and list(texts) == ["", "", ""]


def test_mapped_texts_embed_as_their_list_does_without_being_copied_into_one(cache, posts) -> None:
    from metalabel.data.encoders import get_encoder

    texts = ml.datasets.read_text(posts).items
    mapped = write_mapped([texts[:25], texts[25:]])
    assert isinstance(mapped, MappedTexts)
    encoder = get_encoder("minilm")
    assert encoder._prepare(mapped) is mapped  # read text by text as batches are made, not listed whole
    assert np.array_equal(encoder.encode(mapped, progress=False), encoder.encode(texts, progress=False))


def test_metalabel_init_reads_the_pool_mapped_and_stores_the_hashes_a_run_checks(tmp_path, monkeypatch, capsys):
    from metalabel.cli import main

    pool = ml.datasets.load("kanji", **{**KANJI_POOL, "max_classes": 2, "samples_per_class": 4})
    _image_folder(tmp_path / "pool", pool)
    created = []
    create = Project.create.__func__  # type: ignore[attr-defined]

    def recording(cls, folder, *, pool, **kwargs):
        created.append(type(pool.items))
        return create(cls, folder, pool=pool, **kwargs)

    monkeypatch.setattr(Project, "create", classmethod(recording))
    assert main(["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--quiet"]) == 0
    capsys.readouterr()
    assert created == [np.memmap]  # the pool whole was never in the heap
    with Project.open(tmp_path / "p") as project:
        assert len(project.load_pool()) == len(pool)  # its items are checked against the hashes init stored
