"""What ``remove_stale_temporaries`` may delete in a cache folder shared with a writer it cannot see (check13).

A run in another pid namespace (a container sharing the cache) or on another machine cannot ask whether
the writer of a temporary file runs: it keeps the file while it changed in the last ``STALE_AFTER_S``
seconds. A live writer must keep its file changing for as long as it still needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel as ml
from metalabel import files
from metalabel.data.encoders import embed_dataset, embed_in_chunks

SECONDS_A_CHUNK = files.STALE_AFTER_S // 2
"""How long reading one chunk of the pool again takes in the tests (decoding a big chunk of images)."""


def _foreign_cleanup(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """``remove_stale_temporaries`` as a run that sees no process of this one's (another pid namespace) does it."""
    with monkeypatch.context() as foreign:
        foreign.setattr(files, "_process_alive", lambda pid: False)
        foreign.setattr(files.os, "getpid", lambda: 1)
        return files.remove_stale_temporaries(folder)


def _age(folder: Path, seconds: float) -> None:
    """Time passes: every hidden file in ``folder`` was last changed ``seconds`` earlier than it was."""
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.is_file():
            status = entry.stat()
            os.utime(entry, ns=(status.st_atime_ns, status.st_mtime_ns - int(seconds * 1e9)))


def test_a_pool_read_again_to_key_its_file_keeps_its_finished_embeddings_from_a_foreign_cleanup(
        tmp_path, cache, monkeypatch) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(20):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    (folder / "005.png").write_bytes(b"not a png")  # skipped: the pool is read again to key its file
    pool = ml.datasets.chunked(folder, on_error="skip")
    embeddings = cache / "embeddings"
    passes: list[int] = []
    removed: list[Path] = []
    read = pool.chunks

    def chunks(chunk_size: int = 4):
        passes.append(len(passes))
        for chunk in read(chunk_size):
            if len(passes) > 1:  # the second pass: the writer's finished file waits for the pool's key
                _age(embeddings, SECONDS_A_CHUNK)
                removed.extend(_foreign_cleanup(embeddings, monkeypatch))
            yield chunk

    monkeypatch.setattr(pool, "chunks", chunks)
    made = embed_in_chunks(pool, "pixels", chunk_size=4, progress=False)
    assert removed == []
    now = ml.datasets.imagefolder(folder, on_error="skip")
    assert np.array_equal(made.load(), embed_dataset(now, "pixels", cache=False, progress=False))


def test_a_killed_writers_temporary_file_is_removed_once_unchanged_long_enough(tmp_path, monkeypatch) -> None:
    left = tmp_path / f".pixels-{2**22 + 7}-0123abcd.npy"
    left.write_bytes(b"rows")
    kept = [tmp_path / "pixels-0123abcd.npy", tmp_path / ".notes-12-0123abcd.txt.bak"]
    for path in kept:
        path.write_bytes(b"not a temporary")
    assert _foreign_cleanup(tmp_path, monkeypatch) == []  # changed just now: its writer may run elsewhere
    _age(tmp_path, files.STALE_AFTER_S + 1)
    assert _foreign_cleanup(tmp_path, monkeypatch) == [left]
    assert all(path.exists() for path in kept)
