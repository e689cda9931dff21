"""One writer per project: a lock file in the project folder, held with ``fcntl.flock``.

The kernel drops a ``flock`` when its holder's file is closed, which includes the holder
dying (SIGKILL, a crash, a power cut ends the boot): a lock left by a dead process is
free again without anyone deleting anything, so there is no stale-lock cleanup to get
wrong. The file itself stays in the folder for good (deleting a lock file that another
process may just have opened would let two writers hold "the" lock on two different
files); what it holds (pid, host, command, since when) only names the holder in the
error a second writer gets.

SQLite already serialises single writes; this lock is about whole jobs: a run that
marks "running" rounds of a dead run as failed, asks questions and writes labels
for many minutes must not share the project with another run or an import.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from metalabel.errors import ProjectLockedError, StoreError

LOCK_FILENAME = "writer.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a project's writer lock, as written in the lock file."""

    pid: int | None
    host: str | None
    command: str | None
    since: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "another process (it has not written its name yet)"
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        what = f" `{self.command}`" if self.command else ""
        since = f" since {self.since}" if self.since else ""
        return f"process {self.pid}{where}{what}{since}"


class WriterLock:
    """The writer lock of one project folder; re-entrant within the object that holds it.

    ``acquire`` never waits: a second writer is told at once who holds the project
    (``ProjectLockedError``) rather than hanging behind a run that may take hours.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILENAME
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, command: str | None = None) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the writer lock {self.path} ({exc.strerror}); check the folder's "
                             "permissions") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot take the writer lock {self.path} ({exc.strerror})") from exc
            holder = read_holder(self.path)
            raise ProjectLockedError(
                f"project {self.folder} is being written by {holder.describe()}; one writer per project -> "
                "wait for it to finish (or stop it: everything it committed is kept) and try again; "
                "reading (`metalabel status`, `report`, `export`) works meanwhile"
            ) from None
        # Ours now: say who we are. Written in place (the file is never replaced, see above).
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or _this_command(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            data = json.dumps(record).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the name is a courtesy to the next writer; the flock is what counts
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it now; a later reader must not name us
        except OSError:
            pass
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def read_holder(path: Path) -> LockHolder:
    """What the lock file says about its holder; every field None if it says nothing readable."""
    for _ in range(3):  # the holder writes its name just after taking the lock: give it a moment
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict):
            pid = record.get("pid")
            return LockHolder(
                pid if isinstance(pid, int) else None,
                _text_or_none(record.get("host")),
                _text_or_none(record.get("command")),
                _text_or_none(record.get("since")),
            )
        time.sleep(0.05)
    return LockHolder(None, None, None, None)


def _text_or_none(value: object) -> str | None:
    # The file is anyone's to write: its text reaches a terminal, so control codes are shown escaped.
    if not isinstance(value, str):
        return None
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value)[:300]


def _this_command() -> str:
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:300]
