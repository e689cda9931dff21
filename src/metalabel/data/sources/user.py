"""Readers for the user's own data: a folder of images, a text file, a table.

Each returns a ``LabeledDataset``. Items without a label get ``UNLABELED``. Class
names are the sorted labels seen (numerically when all are integers) unless
``classes`` fixes them. A bad item raises a typed error naming the file and row;
``on_error="skip"`` leaves it out instead and lists it in ``dataset.skipped``.
Row numbers are line numbers in the file counting the header as line 1 (what an
editor shows), except for Parquet, where they count data rows from 1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import reprlib
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import SupportsFloat, SupportsIndex

import numpy as np

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.data.sources._common import (
    IMAGE_SUFFIXES,
    ROW_IS_LINE,
    ROW_IS_RECORD,
    BadItems,
    ClassNames,
    FileOpener,
    ImageFile,
    OnError,
    TextRow,
    existing_path,
    image_dataset,
    label_name,
    location,
    read_csv,
    read_csv_header,
    sorted_class_names,
    text_dataset,
    text_encoding,
    undecodable,
)
from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    MissingDependencyError,
    UnknownLabelError,
    UnreadableItemError,
)

CSV_SUFFIXES = frozenset({".csv", ".tsv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})


def imagefolder(
    path: str | Path,
    *,
    size: int | tuple[int, int] | None = None,
    unlabeled_dir: str | None = "unlabeled",
    grayscale: bool | None = None,
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Images in one folder per class (the folder name is the class), searched recursively.

    Images in ``path/<unlabeled_dir>/`` or directly in ``path`` are unlabeled, so a
    flat folder of images reads as a pool. ``size`` (an int, or ``(height, width)``)
    resizes every image; without it all images must have one size. ``grayscale``:
    ``True`` gives ``[N, H, W]``, ``False`` ``[N, H, W, 3]``, ``None`` grey only if
    every image is grey. uris are the absolute file paths.
    """
    folder = existing_path(path, folder=True)
    bad_items = BadItems(on_error)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for named in (folder, *subfolders):
        if not _is_text(named):
            raise BadInputError(
                "this folder's name is not UTF-8 text", path=_shown(named),
                hint="rename it; folder names become class names and uris, which are stored as text",
            )
    class_names = sorted_class_names(p.name for p in subfolders if p.name != unlabeled_dir)
    label_of_folder = {name: label for label, name in enumerate(class_names)}

    def image_files(under: Path, label: int, *, recursive: bool = True) -> list[ImageFile]:
        candidates = under.rglob("*") if recursive else under.iterdir()
        files = []
        for p in sorted(candidates):
            if (p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()
                    or any(part.startswith(".") for part in p.relative_to(under).parts)):
                continue
            if not _is_text(p):
                bad_items.handle(UnreadableItemError(
                    "the file's name is not UTF-8 text", path=_shown(p), hint="rename it; uris are stored as text"
                ))
                continue
            files.append(ImageFile(uri=str(p), label=label, open=FileOpener(p)))
        return files

    files = [file for name in class_names for file in image_files(folder / name, label_of_folder[name])]
    if unlabeled_dir is not None and (folder / unlabeled_dir).is_dir():
        files += image_files(folder / unlabeled_dir, UNLABELED)
    files += image_files(folder, UNLABELED, recursive=False)
    if not files:
        raise DataNotFoundError(
            "holds no images",
            path=folder,
            hint=f"put one folder of images per class, unlabeled images directly in {folder.name}/; "
            f"images end in {', '.join(sorted(IMAGE_SUFFIXES))}",
        )
    return image_dataset(
        folder.name, files, class_names, where=folder, size=size, grayscale=grayscale, bad_items=bad_items
    )


def _is_text(path: Path) -> bool:
    # a name that is not UTF-8 reaches Python as lone surrogates, which no text store accepts
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: Path) -> str:
    """``path`` with the bytes that are not UTF-8 written as ``\\xNN``, safe to print."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def read_text(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Text items from a CSV/TSV (header row) or JSONL file (one JSON object per line).

    A row without text is a bad item; a row without a label (or a file without the
    label column) is unlabeled. With ``classes``, a label outside them raises
    ``UnknownLabelError`` (or is skipped). ``encoding`` is the file's text encoding
    (e.g. ``"cp1252"`` for a CSV Excel saved on Windows); a UTF-8 byte-order mark is dropped.
    """
    file = existing_path(path, folder=False, suffixes=CSV_SUFFIXES | JSONL_SUFFIXES)
    bad_items = BadItems(on_error)
    class_names = ClassNames(classes)  # checks classes before the file is read
    if file.suffix.lower() in JSONL_SUFFIXES:
        rows = (
            TextRow(file, line, record.get(text_column), record.get(label_column))
            for line, record in _jsonl_records(file, encoding=encoding, bad_items=bad_items)
        )
    else:
        header, records = read_csv(file, encoding=encoding, bad_items=bad_items)
        if text_column not in header:
            raise BadInputError(
                f"has no column {text_column!r}",
                path=file,
                row=1,
                hint=f"its columns are {', '.join(header)}; pass text_column=...",
            )
        rows = (TextRow(file, line, cells.get(text_column), cells.get(label_column)) for line, cells in records)
    return text_dataset(file.stem, rows, text_column=text_column, classes=class_names, bad_items=bad_items)


def columns_of(path: str | Path, *, encoding: str = "utf-8") -> list[str]:
    """A CSV/TSV's header, or the keys of a JSONL file's first object: enough to tell text from a table."""
    file = existing_path(path, folder=False, suffixes=CSV_SUFFIXES | JSONL_SUFFIXES)
    if file.suffix.lower() in CSV_SUFFIXES:
        return read_csv_header(file, encoding=encoding)
    # skip: a broken first line is the reader's to report, with the rest of the file
    with contextlib.closing(_jsonl_records(file, encoding=encoding, bad_items=BadItems("skip"))) as records:
        _, first = next(records, (0, {}))
    return list(first)


def _jsonl_records(
    path: Path, *, encoding: str, bad_items: BadItems
) -> Generator[tuple[int, dict[str, object]], None, None]:
    """``(line, object)`` per non-blank line of a JSONL file; a line that is not a JSON object is a bad item."""
    encoding = text_encoding(encoding)
    try:
        with path.open(encoding=encoding) as stream:
            for line_number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    problem = None if isinstance(record, dict) else f"is a JSON {type(record).__name__}, not an object"
                except (ValueError, RecursionError) as error:  # RecursionError: nested thousands deep
                    problem = f"is not a JSON object: {error}"
                if problem is None and _has_lone_surrogate(line, record):
                    problem = "holds an escaped lone surrogate (like \\ud800), which is not text"
                if problem is not None:
                    bad_items.handle(UnreadableItemError(problem, path=path, row=line_number, hint=ROW_IS_LINE))
                    continue
                yield line_number, record
    except UnicodeError as error:  # UnicodeDecodeError, or a codec's own complaint (UTF-16's missing BOM)
        raise undecodable(path, encoding=encoding, error=error) from error


def _has_lone_surrogate(line: str, record: dict[str, object]) -> bool:
    if "\\ud" not in line.lower():  # cheap: JSON can only write a surrogate as an escape
        return False
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_table(
    path: str | Path,
    *,
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Numeric rows from a CSV/TSV (header row), JSONL or Parquet file as float32 ``[N, D]`` features.

    Every column but ``label_column`` is a feature (``feature_names``; for JSONL the keys
    in the order they first appear); each cell must be a finite number that float32
    holds, so NaN and inf are bad items. The label column is optional; rows without a
    label are unlabeled. ``encoding`` is a CSV or JSONL file's text encoding. Parquet
    needs pyarrow (``pip install metalabel[tabular]``).
    """
    file = existing_path(path, folder=False, suffixes=CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES)
    bad_items = BadItems(on_error)
    class_names = ClassNames(classes)
    suffix = file.suffix.lower()
    row_meaning = ROW_IS_RECORD if suffix in PARQUET_SUFFIXES else ROW_IS_LINE
    records: Sequence[tuple[int, Mapping[str, object]]]
    if suffix in PARQUET_SUFFIXES:
        columns, records = _parquet_records(file)
    elif suffix in JSONL_SUFFIXES:
        records = list(_jsonl_records(file, encoding=encoding, bad_items=bad_items))
        columns = list(dict.fromkeys(key for _, record in records for key in record))
    else:
        columns, records = read_csv(file, encoding=encoding, bad_items=bad_items)
    feature_names = [column for column in columns if column != label_column]
    if not feature_names:
        raise BadInputError("has no feature columns", path=file, hint=f"every column but {label_column!r} is a feature")

    features: list[list[float]] = []
    labels: list[str | None] = []
    uris: list[str] = []
    for row, cells in records:
        label = label_name(cells.get(label_column))
        try:
            values = [_number(cells.get(column), file, row, column, row_meaning) for column in feature_names]
            class_names.check(label, path=file, row=row)
        except (UnreadableItemError, UnknownLabelError) as error:
            bad_items.handle(error)
            continue
        features.append(values)
        labels.append(label)
        uris.append(location(file, row))
    encoded, names = class_names.encode(labels)
    return LabeledDataset(
        name=file.stem,
        modality="tabular",
        items=np.array(features, dtype=np.float32).reshape(len(features), len(feature_names)),
        labels=encoded,
        class_names=names,
        uris=uris,
        feature_names=feature_names,
        skipped=bad_items.skipped,
    )


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number(value: object, path: Path, row: int, column: str, row_meaning: str) -> float:
    """One feature cell as a finite float32-sized float, or ``UnreadableItemError`` naming file, row and column."""
    hint = f"fix the cell, drop the column, or name it as the label_column; {row_meaning}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UnreadableItemError(f"column {column!r} is empty", path=path, row=row, hint=hint)
    shown = reprlib.repr(value)  # a cell can be megabytes long
    try:
        number = _float(value)
    except OverflowError:  # a JSON integer hundreds of digits long
        number = math.inf
    except (TypeError, ValueError):
        problem = f"column {column!r} holds {shown}, not a number"
        raise UnreadableItemError(problem, path=path, row=row, hint=hint) from None
    # NaN or inf (or a number float32 turns into inf) would only fail later, deep inside training;
    # the comparison is False for NaN too
    if not abs(number) <= _FLOAT32_MAX:
        raise UnreadableItemError(
            f"column {column!r} holds {shown}, not a finite number",
            path=path,
            row=row,
            hint=f"features must be finite and within ±{_FLOAT32_MAX:.2e} (float32); {hint}",
        )
    return number


def _float(value: object) -> float:
    """``float(value)``, ``TypeError`` for a value ``float`` does not take (a list, a dict, a date)."""
    # str, int and float first: the cells of CSV and JSONL, checked without the slower protocol isinstance
    if isinstance(value, (str, int, float, bytes, bytearray)) or isinstance(value, (SupportsFloat, SupportsIndex)):
        return float(value)
    raise TypeError(f"float() argument must be a string or a real number, not {type(value).__name__!r}")


def _parquet_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, object]]]]:
    """Column names and ``(row, {column: value})`` per row, rows counted from 1."""
    try:  # optional: only Parquet needs pyarrow
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install 'metalabel[tabular]'") from error
    try:
        table = pq.read_table(path)
        names = table.column_names
    # UnicodeDecodeError: a damaged file's column names are not UTF-8
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise UnreadableItemError(
            f"is not a readable Parquet file: {error}", path=path, hint="write the file again, or check it is Parquet"
        ) from error
    if len(set(names)) != len(names):
        raise BadInputError(f"names a column twice: {names}", path=path, hint="give each column its own name")
    columns = []
    for name, column in zip(names, table.columns):
        try:
            columns.append(column.to_pylist())
        # a damaged file can hold strings that are not UTF-8, or dates past year 9999
        except (pa.ArrowException, ValueError, OverflowError) as error:
            raise UnreadableItemError(
                f"column {name!r} holds values Python cannot read: {error}", path=path,
                hint="fix the column in the program that wrote the file, or drop it",
            ) from error
    return names, [(row, dict(zip(names, values))) for row, values in enumerate(zip(*columns), start=1)]
