"""Typed errors. Each names the file, row or class at fault and says what to do."""

from __future__ import annotations

from numbers import Integral  # numpy integers count too
from pathlib import Path


class MetalabelError(Exception):
    """Base of every error metalabel raises on purpose."""


def _kind_of_path(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return "file" if path.exists() or path.suffix else "path"


class BadInputError(MetalabelError, ValueError):
    """Input the user gave cannot be used as it is.

    The message always carries where (file, row, class) and a hint on what to do.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        cls: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.row = row
        self.cls = cls
        self.hint = hint
        where = []
        if self.path is not None:
            where.append(f"{_kind_of_path(Path(self.path))} {self.path}")
        if row is not None:
            where.append(f"row {row}")
        if cls is not None:
            where.append(f"class {cls!r}")
        message = problem if not where else f"{', '.join(where)}: {problem}"
        if hint:
            message += f" -> {hint}"
        super().__init__(message)


def check_whole_number(name: str, value: object, *, minimum: int) -> None:
    """Raise BadInputError unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise BadInputError(f"{name} must be a whole number >= {minimum}, got {value!r}")


class DataNotFoundError(BadInputError, FileNotFoundError):
    """A path or data set that does not exist where it was looked for."""


class UnreadableItemError(BadInputError):
    """One item (image, text row, table row) could not be read."""


class EmptyClassError(BadInputError):
    """A class that has no usable examples."""


class UnknownLabelError(BadInputError):
    """A label name that is not one of the known classes."""


class UnknownDatasetError(MetalabelError, KeyError):
    """A data set name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(MetalabelError, ImportError):
    """An optional dependency is needed for what was asked; the message says how to install it."""


class StoreError(MetalabelError):
    """The project store cannot do what was asked."""


class StoreUnavailableError(StoreError):
    """The store cannot be written just now (busy past its timeout, read-only, full, an I/O error).

    Nothing was written, and the same write may succeed later: unlike a refusal, worth trying again.
    """


class SchemaVersionError(StoreError):
    """The project store was written by a newer metalabel."""


class NotEnoughDataError(BadInputError):
    """Too few labels or items for a step *yet* (e.g. nothing to hold out with one label per class).

    Distinct from a configuration error: the loop skips a step on this signal and only on
    this one, so a wrong option (``calibration_folds=1``) is never swallowed as "not enough data".
    """


class PoolChangedError(BadInputError):
    """A pool item's content no longer matches the hash the project stored for it (or the item is gone)."""


class ProjectLockedError(StoreError):
    """Another process is writing to the project (one writer per project); the message names it."""


class StoreCorruptError(StoreError):
    """The project database is not a metalabel store or is damaged; the message says how to recover."""
