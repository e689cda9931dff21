"""Content hashes: the same item gives the same sha256 wherever and whenever it is read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from metalabel.errors import BadInputError, DataNotFoundError

_CHUNK_BYTES = 1 << 20


def content_hash(item: str | bytes | np.ndarray) -> str:
    """sha256 (hex) of one item's bytes.

    Text is hashed as UTF-8; an array by its raw bytes in C order, floating-point arrays
    as float32 first (the dtype tabular rows live in), so a float64 copy of a row hashes
    the same as the row.
    """
    if isinstance(item, str):
        data = item.encode("utf-8")
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, np.ndarray):
        array = item.astype(np.float32, copy=False) if np.issubdtype(item.dtype, np.floating) else item
        data = np.ascontiguousarray(array).tobytes()
    else:
        raise BadInputError(
            f"cannot hash an item of type {type(item).__name__}",
            hint="items are str (text), bytes or numpy arrays (images, table rows)",
        )
    return hashlib.sha256(data).hexdigest()


def path_sha256(path: Path) -> str:
    """sha256 (hex) of a file, or of a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    if path.is_file():
        _update_with_file(digest, path)
        return digest.hexdigest()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            # Name and size go in too, so renaming a file or moving bytes between files changes the hash.
            header = f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0"
            digest.update(header.encode("utf-8"))
            _update_with_file(digest, file)
        return digest.hexdigest()
    raise DataNotFoundError("no file or folder here", path=path, hint="write the artifact before recording it")


def _update_with_file(digest, path: Path) -> None:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
