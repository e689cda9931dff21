"""Pools read from disk a chunk at a time: the same items, uris, labels, hashes and embeddings as the pool read
whole, the same cache file the labeling run reads, and memory that does not grow with the pool."""

from __future__ import annotations

import csv
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel as ml
from metalabel.data.dataset import LabeledDataset
from metalabel.data.encoders import embed_dataset, embed_in_chunks, embedding_cache_path, get_encoder
from metalabel.data.sources.user import ChunkedPool, chunked_imagefolder, chunked_table, chunked_text
from metalabel.errors import BadInputError, UnreadableItemError
from metalabel.store.hashing import content_hash


def _image_folder(root: Path, images: np.ndarray, labels: np.ndarray, *, unlabeled: int) -> Path:
    """``images`` as PNG files: the first ``unlabeled`` in ``unlabeled/``, the rest in one folder per label."""
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("unlabeled" if index < unlabeled else f"class{label}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return root


@pytest.fixture(scope="module")
def fashion() -> LabeledDataset:
    return ml.datasets.load("fashion-mnist", split="test").subset(np.arange(36))


def _assert_same_pool(pool: ChunkedPool, whole: LabeledDataset, *, chunk_size: int) -> None:
    chunks = list(pool.chunks(chunk_size))
    assert [len(chunk) for chunk in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
    assert [chunk.start for chunk in chunks] == list(range(0, len(whole), chunk_size))
    assert [uri for chunk in chunks for uri in chunk.uris] == whole.uris
    names = [None if label < 0 else whole.class_names[label] for label in whole.labels]
    assert [label for chunk in chunks for label in chunk.labels] == names
    items = [item for chunk in chunks for item in chunk.items]
    assert [content_hash(item) for item in items] == [content_hash(item) for item in whole.items]


def test_an_image_folder_read_in_chunks_is_the_folder_read_whole_and_embeds_into_the_same_cache(
        fashion, tmp_path, cache) -> None:
    folder = _image_folder(tmp_path / "pool", fashion.items, fashion.labels, unlabeled=10)
    whole = ml.datasets.imagefolder(folder)
    assert len(whole) == 36 and whole.num_classes > 1
    pool = chunked_imagefolder(folder)
    assert pool.count == 36
    _assert_same_pool(pool, whole, chunk_size=5)

    made = embed_in_chunks(pool, "pixels", chunk_size=5, progress=False)
    assert (made.items, made.chunks, made.chunks_cached) == (36, 8, 0)
    assert made.path == embedding_cache_path(whole.items, get_encoder("pixels"))  # the file the run reads
    alone = embed_dataset(whole, "pixels", cache=False, progress=False)
    assert np.array_equal(made.load(), alone)
    # each chunk's own file is where metalabel.scale.embed_on_ray looks a chunk up: either finds the other's work
    pixels = get_encoder("pixels")
    assert all(embedding_cache_path(whole.items[start:start + 5], pixels).is_file() for start in range(0, 36, 5))
    again = embed_in_chunks(chunked_imagefolder(folder), "pixels", chunk_size=5, progress=False)
    assert (again.path, again.chunks_cached) == (made.path, 8)  # every chunk came from its own cache file


def test_one_colour_image_makes_every_image_rgb_and_a_skipped_file_still_gives_the_pools_cache_key(
        fashion, tmp_path, cache) -> None:
    folder = _image_folder(tmp_path / "pool", fashion.items[:12], fashion.labels[:12], unlabeled=12)
    Image.fromarray(np.stack([fashion.items[0]] * 3, axis=-1)).save(folder / "unlabeled" / "colour.png")
    (folder / "unlabeled" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableItemError, match="broken.png"):
        list(chunked_imagefolder(folder).chunks(4))

    whole = ml.datasets.imagefolder(folder, on_error="skip")
    pool = chunked_imagefolder(folder, on_error="skip")
    _assert_same_pool(pool, whole, chunk_size=4)
    assert whole.items.shape == (13, 28, 28, 3) and pool.skipped == whole.skipped and len(pool.skipped) == 1
    made = embed_in_chunks(pool, "pixels", chunk_size=4, progress=False)  # 14 files listed, 13 read: hashed again
    assert made.path == embedding_cache_path(whole.items, get_encoder("pixels"))
    assert np.array_equal(made.load(), embed_dataset(whole, "pixels", cache=False, progress=False))


@pytest.fixture(scope="module")
def newsgroups_csv(tmp_path_factory) -> Path:
    posts = ml.datasets.load("20newsgroups", split="test").subset(np.arange(0, 7528, 300))
    path = tmp_path_factory.mktemp("news") / "posts.csv"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for index, (text, label) in enumerate(zip(posts.items, posts.labels)):
            writer.writerow([text[:300], posts.class_names[label] if index % 3 else ""])
    return path


def test_a_csv_of_newsgroup_posts_read_in_chunks_is_the_file_read_whole_and_embeds_as_it_does(
        newsgroups_csv, cache) -> None:
    pytest.importorskip("sentence_transformers")
    whole = ml.datasets.read_text(newsgroups_csv)
    pool = ml.datasets.chunked(newsgroups_csv)  # a CSV with a text column: text
    _assert_same_pool(pool, whole, chunk_size=8)
    encoder = get_encoder("minilm", max_seq_length=64)  # one model load for both embeddings
    made = embed_in_chunks(pool, encoder, chunk_size=8, progress=False)
    assert made.path == embedding_cache_path(whole.items, encoder)
    # the same model on the same texts, in batches of other lengths: equal up to float rounding
    np.testing.assert_allclose(made.load(), embed_dataset(whole, encoder, cache=False, progress=False), atol=1e-5)


def test_a_parquet_dataset_folder_reads_as_one_table_rows_counted_across_its_files(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "table"
    folder.mkdir()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 3)).astype(np.float32)
    for part in range(3):
        rows = slice(10 * part, 10 * part + 10)
        pq.write_table(pa.table({"a": features[rows, 0], "b": features[rows, 1], "c": features[rows, 2],
                                 "label": ["x", "y"] * 5}), folder / f"part-{part}.parquet")
    table = ml.datasets.from_spec(folder)  # a folder of Parquet files is a table, not an image folder
    assert table.modality == "tabular" and table.feature_names == ["a", "b", "c"]
    np.testing.assert_array_equal(table.items, features)
    assert table.uris[25] == f"{folder}:26" and table.class_names == ["x", "y"]
    _assert_same_pool(ml.datasets.chunked(folder), table, chunk_size=7)

    pq.write_table(pa.table({"a": [1.0, float("nan")], "b": [0.0, 0.0], "c": [0.0, 0.0], "label": ["x", "y"]}),
                   folder / "part-3.parquet")
    with pytest.raises(UnreadableItemError, match=r"row 32: column 'a' holds nan"):
        ml.datasets.read_table(folder)


def test_a_chunk_size_that_is_not_a_positive_whole_number_is_refused(newsgroups_csv) -> None:
    with pytest.raises(BadInputError, match="chunk_size"):
        next(chunked_text(newsgroups_csv).chunks(0))


def _peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _drain(pool: ChunkedPool, chunk_size: int) -> None:
    for _ in pool.chunks(chunk_size):
        pass


def test_memory_reading_a_table_in_chunks_does_not_grow_with_the_file(tmp_path) -> None:
    rng = np.random.default_rng(0)
    files = {}
    for rows in (2000, 8000):
        files[rows] = tmp_path / f"t{rows}.csv"
        np.savetxt(files[rows], rng.normal(size=(rows, 8)), delimiter=",", fmt="%.6f",
                   header=",".join(f"f{i}" for i in range(8)), comments="")
    chunked = {rows: _peak_bytes(lambda f=file: _drain(chunked_table(f), 500)) for rows, file in files.items()}
    whole = {rows: _peak_bytes(lambda f=file: ml.datasets.read_table(f)) for rows, file in files.items()}
    assert chunked[8000] < 1.3 * chunked[2000]
    assert whole[8000] > 2.5 * whole[2000]  # the measure sees the difference: read whole, memory grows with the file


def test_memory_reading_and_embedding_an_image_folder_in_chunks_does_not_grow_with_the_pool(tmp_path, cache) -> None:
    images = ml.datasets.load("fashion-mnist", split="test").items
    folders = {count: _image_folder(tmp_path / f"pool{count}", images[:count], np.zeros(count, np.int64),
                                    unlabeled=count) for count in (300, 1200)}
    embed_in_chunks(chunked_imagefolder(folders[300]), "pixels", progress=False)  # first-use imports, not counted
    peaks = {count: _peak_bytes(lambda f=folder: embed_in_chunks(chunked_imagefolder(f), "pixels", chunk_size=100,
                                                                 progress=False)) for count, folder in folders.items()}
    whole = {count: _peak_bytes(lambda f=folder: embed_dataset(ml.datasets.imagefolder(f), "pixels", cache=False,
                                                               progress=False)) for count, folder in folders.items()}
    # what grows is the file list kept to read the folder again (a path per image), not the images (784 bytes
    # each) or their embeddings (3,136 bytes each), as it does read whole
    per_image = {name: (peak[1200] - peak[300]) / 900 for name, peak in (("chunks", peaks), ("whole", whole))}
    assert per_image["chunks"] < 400 and per_image["whole"] > 3000, per_image
