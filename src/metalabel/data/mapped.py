"""A pool's items kept in a file and read from it as they are used, never all in the heap.

A labeling run reads a pool's items only here and there (the item a question shows, the
items generators start from, content checks, exports), so ``write_mapped`` writes the decoded
items a chunk at a time into a file and hands back a view that reads them from it: a
memory-mapped array for images and table rows (``np.memmap``, a subclass of ``np.ndarray``, so
everything that reads an array reads it), and a :class:`MappedTexts` sequence for texts. Pages
of the file the OS reads in are clean and dropped again under memory pressure, unlike a heap copy.

The file lives in ``cache_dir()/items`` (beside the embedding cache: where the user keeps room
for big files, unlike a ``/tmp`` that may be memory) and has no name: it is gone once the
process drops its view, so no run leaves decoded pools behind in the cache.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import IO, overload

import numpy as np

from metalabel.data.paths import cache_dir
from metalabel.errors import BadInputError


class MappedTexts(Sequence[str]):
    """Texts kept UTF-8 in a file: ``texts[i]`` reads text ``i`` from it, a slice gives a list.

    Holds the file's bytes mapped and each text's start in it (8 bytes a text), not the texts;
    a ``LabeledDataset``'s ``items`` for a text pool read with ``mapped=True``.
    """

    def __init__(self, data: np.ndarray, starts: np.ndarray) -> None:
        self._data, self._starts = data, starts  # text i is data[starts[i]:starts[i + 1]]

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = range(len(self))[index]  # an int, negative counted from the end, or IndexError
        start, stop = self._starts[position], self._starts[position + 1]
        return self._data[start:stop].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"MappedTexts({len(self)} texts, {int(self._starts[-1])} bytes)"


def write_mapped(chunks: Iterable[np.ndarray | Sequence[str]]) -> np.ndarray | MappedTexts | None:
    """The items of ``chunks`` (arrays of one dtype and row shape, or texts) in one unnamed file, mapped.

    The file is written a chunk at a time, so no more than a chunk is in the heap. None when there
    are no items (nothing to map).
    """
    folder = cache_dir() / "items"
    with in_cache(folder, _ITEMS):
        folder.mkdir(parents=True, exist_ok=True)
        # unnamed: unlinked at once on POSIX (deleted on close elsewhere); the mapping keeps it while it is used
        file = tempfile.TemporaryFile(dir=folder)
    with file:
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None:
            return None
        if isinstance(first, np.ndarray):
            return _write_array(file, folder, first, iterator)
        return _write_texts(file, folder, first, iterator)


_ITEMS = "the pool's items"


@contextmanager
def in_cache(folder: Path, what: str) -> Iterator[None]:
    """A cache folder's OSErrors (missing, not a folder, read-only, full) as a typed error naming it and ``what``
    was written there (``"embeddings"``).

    Only around the file's own operations: an error reading the pool's files is the reader's to name.
    """
    try:
        yield
    except OSError as error:
        raise BadInputError(
            f"cannot write {what} here ({error.strerror or error})", path=folder,
            hint=f"metalabel keeps {what} in a file in this folder: set METALABEL_CACHE to a writable folder with "
                 "room for them") from error


def _write_array(file: IO[bytes], folder: Path, first: np.ndarray,
                 rest: Iterator[np.ndarray | Sequence[str]]) -> np.ndarray:
    dtype, row_shape, rows = first.dtype, first.shape[1:], 0
    for chunk in chain([first], rest):
        items = np.asarray(chunk)
        if items.dtype != dtype or items.shape[1:] != row_shape:  # the readers stack every chunk alike
            raise ValueError(f"a chunk of {items.dtype} {items.shape[1:]} after chunks of {dtype} {row_shape}")
        with in_cache(folder, _ITEMS):
            file.write(np.ascontiguousarray(items).tobytes())
        rows += len(items)
    with in_cache(folder, _ITEMS):
        file.flush()
        # copy-on-write, as the embedding cache is mapped: writable for torch, a write stays in this process
        return np.memmap(file, dtype=dtype, mode="c", shape=(rows, *row_shape))


def _write_texts(file: IO[bytes], folder: Path, first: Sequence[str],
                 rest: Iterator[np.ndarray | Sequence[str]]) -> MappedTexts:
    starts, size = array("q", [0]), 0  # 8 bytes a text, not a Python int's 28
    for chunk in chain([first], rest):
        data = [str(text).encode("utf-8") for text in chunk]
        for text in data:
            size += len(text)
            starts.append(size)
        with in_cache(folder, _ITEMS):
            file.write(b"".join(data))  # a chunk's texts at once: the chunk is in the heap anyway
    with in_cache(folder, _ITEMS):
        file.flush()
        mapped = np.memmap(file, dtype=np.uint8, mode="r", shape=(size,)) if size else np.zeros(0, dtype=np.uint8)
    return MappedTexts(mapped, np.frombuffer(starts, dtype=np.int64))
