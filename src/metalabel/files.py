"""Writing a file whole or not at all: the one atomic write every room uses (it sits below them all)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | Path, content: bytes | str | Callable[[Path], object], *,
                     encoding: str = "utf-8") -> Path:
    """Write ``path`` so that a reader sees the old file or the new one, never part of one; returns ``path``.

    ``content`` is bytes, text (encoded with ``encoding``) or a function that writes the file at the
    path it is given (``lambda file: np.save(file, array)``; raise in it to abort). The file is written
    beside ``path`` under a temporary name, flushed to disk and renamed over ``path``. If anything
    fails, ``path`` is as it was and the temporary file is gone. The folder must exist.
    """
    path = Path(path)
    # Same folder, so the rename is atomic. The name keeps the suffix, since np.save and np.savez append
    # theirs to a name without it; a name of our own (not mkstemp) gives the file the umask, not 0600.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        if callable(content):
            content(temporary)
        else:
            with open(temporary, "xb") as file:
                file.write(content.encode(encoding) if isinstance(content, str) else content)
        fsync(temporary)  # on disk before the rename makes it the file
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
