"""Writing a file or a folder whole or not at all: the atomic writes every room uses (they sit below them all)."""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from metalabel.errors import BadInputError


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


class IfExists(Enum):
    """What :func:`staged_folder` does with something already at the folder's place.

    An empty folder counts as nothing there in every case.
    """

    REFUSE = "refuse"
    """Raise BadInputError: the caller found the place free, so someone else wrote there meanwhile."""
    REPLACE = "replace"
    """Replace whatever is there: a folder, a file or a link (a link's target is left alone)."""
    REPLACE_OWN = "replace own"
    """Replace a folder holding nothing but files of the names being written (an earlier save of the same
    kind); refuse anything else, so a save never deletes what it did not write."""


STAGING_MARK = ".staging-"
"""Beside ``NAME``, ``.NAME.staging-PID-TOKEN-new`` holds a write in progress (or a killed one) and
``.NAME.staging-PID-TOKEN-old`` the previous ``NAME`` in the moment it is being replaced."""

# Staging folders this process is writing now: a cleanup in another thread must leave them alone.
_writing: set[Path] = set()


@contextmanager
def staged_folder(folder: str | Path, *, if_exists: IfExists, what: str) -> Iterator[Path]:
    """Yield a new empty staging folder beside ``folder``; when the block ends, it becomes ``folder`` whole.

    A reader sees the previous ``folder`` (or none) or the new one, never part of either:

    - the block raises: the staging folder is deleted and ``folder`` is as it was;
    - the process is killed in the block: only a staging folder is left, which the next write of
      ``folder`` (or :func:`remove_stale_staging`) deletes;
    - replacing: the previous ``folder`` is renamed aside, the new one renamed in, then the previous
      one deleted. A failed rename puts it back; a kill in between leaves no ``folder`` but the previous
      one whole beside it, which the next write or cleanup puts back.

    Every file is flushed to disk before the rename makes it ``folder``. ``if_exists`` says what to do
    with something already at ``folder``; ``what`` names the contents in errors ("the export").
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(folder)
    name = f"{_staging_prefix(folder)}{os.getpid()}-{secrets.token_hex(4)}"
    staging, previous = folder.with_name(f"{name}-new"), folder.with_name(f"{name}-old")
    staging.mkdir()
    _writing.add(staging.resolve())
    try:
        yield staging
        _fsync_tree(staging)
        _move_into_place(staging, folder, previous, if_exists=if_exists, what=what)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _writing.discard(staging.resolve())
    _remove(previous)


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Clean up after a :func:`staged_folder` write of ``folder`` that was killed; returns what was removed.

    Its staging folder is deleted. Killed between moving the previous ``folder`` aside and renaming
    the new one in, it left no ``folder``: the previous one is put back. A staging folder whose
    writer (the pid in its name) still runs is left alone.
    """
    folder = Path(folder)
    if not folder.parent.is_dir():
        return []
    removed = []
    prefix = _staging_prefix(folder)
    for candidate in sorted(folder.parent.glob(glob.escape(prefix) + "*")):  # the name is no pattern: run[1]
        pid, _, rest = candidate.name[len(prefix):].partition("-")
        if candidate.resolve() in _writing or (pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid))):
            continue
        if rest.endswith("old") and not (folder.exists() or folder.is_symlink()):
            os.rename(candidate, folder)  # the previous version, whole: it was the folder until moved aside
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


# A temporary file's name ends with its writer's pid and a random token: write_atomically's, and a caller's own
# staging file (``.<name>-<pid>-<token>.npy``); a file beside it is kept whatever its name
_TEMPORARY = re.compile(r"^\..*[.-](?P<pid>\d+)-[0-9a-f]{8}(?:\.tmp)?(?:\.[A-Za-z0-9]+)?$")
STALE_AFTER_S = 600  # a temporary file unchanged this long whose writer is gone was left by a killed writer


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (a cache's: an embedding's is as big as the
    pool's embeddings); returns them. A file is left alone while its writer (the pid in its name) runs, or
    while it changed in the last ``STALE_AFTER_S`` seconds (a writer on another machine, or in another pid
    namespace, sharing the folder)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        found = _TEMPORARY.match(entry.name)
        if found is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(found["pid"])
        try:
            if (pid == os.getpid() or _process_alive(pid)
                    or time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S):
                continue
            os.unlink(entry.path)
        except OSError:  # gone meanwhile, or not ours to remove: nothing to clean
            continue
        removed.append(Path(entry.path))
    return removed


def _staging_prefix(folder: Path) -> str:
    return f".{folder.name}{STAGING_MARK}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a pid we can ask about): leave its folder alone
    return True


def _fsync_tree(root: Path) -> None:
    for top, _, names in os.walk(root):
        for name in names:
            if not os.path.islink(os.path.join(top, name)):
                fsync(os.path.join(top, name))
        fsync(top)


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _move_into_place(staging: Path, folder: Path, previous: Path, *, if_exists: IfExists, what: str) -> None:
    there = (folder.exists() or folder.is_symlink()) and not _is_empty_folder(folder)
    if not there or if_exists is IfExists.REFUSE:
        try:
            os.rename(staging, folder)  # replaces an empty folder; fails on anything else
        except OSError as error:
            raise BadInputError(f"appeared while {what} was being written", path=folder,
                                hint="choose another folder") from error
    else:
        if if_exists is IfExists.REPLACE_OWN:
            _check_only_own_files(folder, {path.name for path in staging.iterdir()}, what=what)
        os.rename(folder, previous)
        try:
            os.rename(staging, folder)
        except BaseException:
            os.rename(previous, folder)
            raise
    fsync(folder.parent)  # the rename itself on disk


def _check_only_own_files(folder: Path, written: set[str], *, what: str) -> None:
    if folder.is_symlink() or not folder.is_dir():
        raise BadInputError(f"is not a folder {what} wrote", path=folder, hint="write to a new folder name")
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in written or not entry.is_file())
    if foreign:
        raise BadInputError(f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which writing "
                            f"{what} here would delete", path=folder,
                            hint=f"write to a new folder (or one that holds {what} written by metalabel)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
