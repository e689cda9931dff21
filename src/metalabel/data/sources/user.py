"""Readers for the user's own data: a folder of images, a text file, a table.

Each returns a ``LabeledDataset``. Items without a label get ``UNLABELED``. Class
names are the sorted labels seen (numerically when all are integers) unless
``classes`` fixes them. A bad item raises a typed error naming the file and row;
``on_error="skip"`` leaves it out instead and lists it in ``dataset.skipped``.
Row numbers are line numbers in the file counting the header as line 1 (what an
editor shows), except for Parquet, where they count data rows from 1.

Each reader reads through a :class:`ChunkedPool` (``chunked_imagefolder``, ``chunked_text``,
``chunked_table``): the file or folder read a chunk of items at a time, so a pool larger than
memory can be embedded (``metalabel.data.encoders.embed_in_chunks``) with no more than one chunk
of raw items in memory; the readers above concatenate the chunks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import reprlib
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat, SupportsIndex, overload

import numpy as np

from metalabel.data.dataset import UNLABELED, LabeledDataset, Modality
from metalabel.data.mapped import MappedTexts, write_mapped
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
    decoded_images,
    existing_path,
    label_name,
    location,
    read_csv,
    read_csv_header,
    sorted_class_names,
    stack_images,
    text_encoding,
    text_items,
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

DEFAULT_CHUNK_SIZE = 4096
"""Items per chunk: a few MB of small images or texts, and the unit the embedding cache keys chunks by."""

Row = tuple[Any, str | None, str]
"""One item as a reader yields it: the item, its class name as written (``None``: unlabeled), its uri."""


@dataclass(frozen=True)
class PoolChunk:
    """Consecutive items of a pool: ``items[i]`` is the pool's item ``start + i``."""

    start: int
    items: np.ndarray | list[str]
    labels: list[str | None]
    """Class names as written (``None``: unlabeled): class indices need the whole pool's classes."""
    uris: list[str]

    def __len__(self) -> int:
        return len(self.uris)


class ChunkedPool:
    """A pool's file or folder, read a chunk at a time: each pass (``chunks``) reads it again from disk.

    No more than one chunk of raw items (decoded images, texts, table rows) is in memory at a time;
    what stays for the whole pool is what the reader needs to find the items again (an image
    folder's file list). Bad items are handled as the reader's ``on_error`` says; ``skipped``
    holds those of the last whole pass. ``dataset()`` is the pool read whole.
    """

    def __init__(self, name: str, modality: Modality, rows: Callable[[BadItems], Iterator[Row]],
                 stack: Callable[[list[Any]], np.ndarray | list[str]], *, on_error: OnError, classes: ClassNames,
                 count: int | None = None, feature_names: list[str] | None = None,
                 skipped_listing: Sequence[tuple[str, str]] = ()) -> None:
        BadItems(on_error)  # refuses an on_error it does not know now, not at the first pass
        self.name, self.modality = name, modality
        self._rows, self._stack, self._on_error, self._classes = rows, stack, on_error, classes
        self.count = count
        """How many items the pool holds if none is skipped, when known before reading (files listed, Parquet
        metadata); ``None`` otherwise."""
        self.feature_names = feature_names
        self._skipped_listing = list(skipped_listing)  # items left out while listing the files, before any pass
        self.skipped: list[tuple[str, str]] = list(skipped_listing)

    def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[PoolChunk]:
        """The pool's items in order, ``chunk_size`` at a time (the last chunk may be shorter)."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise BadInputError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
        bad_items = BadItems(self._on_error)
        bad_items.skipped.extend(self._skipped_listing)
        start, rows = 0, []
        for row in self._rows(bad_items):
            rows.append(row)
            if len(rows) == chunk_size:
                yield self._chunk(start, rows)
                start, rows = start + len(rows), []
        self.skipped = bad_items.skipped
        if rows:
            yield self._chunk(start, rows)

    def _chunk(self, start: int, rows: list[Row]) -> PoolChunk:
        items, labels, uris = zip(*rows)
        return PoolChunk(start, self._stack(list(items)), list(labels), list(uris))

    def dataset(self, *, mapped: bool = False) -> LabeledDataset:
        """The whole pool: what ``imagefolder``, ``read_text`` and ``read_table`` return.

        ``mapped``: the items are written a chunk at a time to a file and read from it as they are used
        (``metalabel.data.mapped``: a memory-mapped array, or ``MappedTexts``), not held in memory; the
        labels and uris are. What a project's run reads its pool as.
        """
        if mapped:
            labels_seen: list[str | None] = []
            uris: list[str] = []

            def items_of_chunks() -> Iterator[np.ndarray | list[str]]:
                for chunk in self.chunks():
                    labels_seen.extend(chunk.labels)
                    uris.extend(chunk.uris)
                    yield chunk.items

            written = write_mapped(items_of_chunks())
            items: np.ndarray | list[str] | MappedTexts = self._stack([]) if written is None else written
        else:
            chunks = list(self.chunks())
            labels_seen = [label for chunk in chunks for label in chunk.labels]
            uris = [uri for chunk in chunks for uri in chunk.uris]
            if self.modality == "text":
                items = [text for chunk in chunks for text in chunk.items]
            elif len(chunks) == 1:
                items = chunks[0].items
            else:
                items = np.concatenate([chunk.items for chunk in chunks]) if chunks else self._stack([])
        labels, class_names = self._classes.encode(labels_seen)
        return LabeledDataset(name=self.name, modality=self.modality, items=items, labels=labels,
                              class_names=class_names, uris=uris, feature_names=self.feature_names,
                              skipped=self.skipped)


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
    return chunked_imagefolder(path, size=size, unlabeled_dir=unlabeled_dir, grayscale=grayscale,
                               on_error=on_error).dataset()


def chunked_imagefolder(
    path: str | Path,
    *,
    size: int | tuple[int, int] | None = None,
    unlabeled_dir: str | None = "unlabeled",
    grayscale: bool | None = None,
    on_error: OnError = "raise",
) -> ChunkedPool:
    """``imagefolder``'s pool read in chunks: the files are listed now, decoded a chunk at a time."""
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

    def image_files(under: Path, *, recursive: bool = True) -> list[str]:
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
            files.append(str(p))
        return files

    uris: list[str] = []
    labels: list[int] = []
    for label, under, recursive in [*((label_of_folder[name], folder / name, True) for name in class_names),
                                    *([(UNLABELED, folder / unlabeled_dir, True)]
                                      if unlabeled_dir is not None and (folder / unlabeled_dir).is_dir() else []),
                                    (UNLABELED, folder, False)]:
        found = image_files(under, recursive=recursive)
        uris += found
        labels += [label] * len(found)
    files = _ListedImages(uris, np.array(labels, dtype=np.int64))
    if not files:
        raise DataNotFoundError(
            "holds no images",
            path=folder,
            hint=f"put one folder of images per class, unlabeled images directly in {folder.name}/; "
            f"images end in {', '.join(sorted(IMAGE_SUFFIXES))}",
        )

    def rows(bad_items: BadItems) -> Iterator[Row]:
        for image, file in decoded_images(files, class_names, where=folder, size=size, grayscale=grayscale,
                                          bad_items=bad_items):
            yield image, None if file.label == UNLABELED else class_names[file.label], file.uri

    return ChunkedPool(folder.name, "image", rows, lambda images: stack_images(images, size=size),
                       on_error=on_error, classes=ClassNames(class_names), count=len(files),
                       skipped_listing=bad_items.skipped)


class _ListedImages(Sequence[ImageFile]):
    """An image folder's files as their paths and class indices (about 130 bytes a file, a third of a ``Path``
    alone): each ``ImageFile`` is made when it is read, so a pool of millions of files lists in little memory."""

    def __init__(self, uris: list[str], labels: np.ndarray) -> None:
        self.uris, self.labels = uris, labels

    def __len__(self) -> int:
        return len(self.uris)

    @overload
    def __getitem__(self, index: int) -> ImageFile: ...

    @overload
    def __getitem__(self, index: slice) -> list[ImageFile]: ...

    def __getitem__(self, index: int | slice) -> ImageFile | list[ImageFile]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        uri = self.uris[index]
        return ImageFile(uri=uri, label=int(self.labels[index]), open=FileOpener(Path(uri)))


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
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Text items from a CSV/TSV (header row) or JSONL file (one JSON object per line).

    A row without text is a bad item; a row without a label (or a file without the
    label column) is unlabeled. With ``classes``, a label outside them raises
    ``UnknownLabelError`` (or is skipped). ``encoding`` is the file's text encoding
    (e.g. ``"cp1252"`` for a CSV Excel saved on Windows); a UTF-8 byte-order mark is dropped.

    An item's uri is ``path:line``; with ``id_column``, ``path#id``: the item keeps its name
    when rows are added, removed or sorted, and a seed label or an export names it by its
    id. A row without an id, or with one an earlier row has, is a bad item.
    """
    return chunked_text(path, text_column=text_column, label_column=label_column, id_column=id_column,
                        classes=classes, encoding=encoding, on_error=on_error).dataset()


def chunked_text(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> ChunkedPool:
    """``read_text``'s pool read in chunks: the file is checked now and read a chunk of rows at a time."""
    file = existing_path(path, folder=False, suffixes=CSV_SUFFIXES | JSONL_SUFFIXES)
    class_names = ClassNames(classes)  # checks classes before the file is read
    jsonl = file.suffix.lower() in JSONL_SUFFIXES
    if not jsonl:
        header = read_csv_header(file, encoding=encoding)
        _require_column(file, header, text_column, "text_column")
        _require_column(file, header, id_column, "id_column")

    def rows(bad_items: BadItems) -> Iterator[Row]:
        records: Iterator[tuple[int, Mapping[str, object]]]
        if jsonl:
            records = _jsonl_records(file, encoding=encoding, bad_items=bad_items)
        else:
            _, records = read_csv(file, encoding=encoding, bad_items=bad_items)
        ids = None if id_column is None else _RowIds(file, id_column)  # afresh at every read of the file

        def named(line: int, cells: Mapping[str, object]) -> TextRow | None:
            try:
                uri = None if ids is None else ids.uri(line, cells)
            except UnreadableItemError as error:
                bad_items.handle(error)
                return None
            return TextRow(file, line, cells.get(text_column), cells.get(label_column), uri)

        raw = (row for line, cells in records if (row := named(line, cells)) is not None)
        yield from text_items(raw, text_column=text_column, classes=class_names, bad_items=bad_items)

    return ChunkedPool(file.stem, "text", rows, list, on_error=on_error, classes=class_names)


class _RowIds:
    """Names a file's rows ``file#id`` by their ``column``; a row without an id, or with one an earlier row
    has, is a bad row (``UnreadableItemError``). One per read of the file."""

    def __init__(self, file: Path, column: str) -> None:
        self.file, self.column = file, column
        self._first_row: dict[str, int] = {}

    def uri(self, row: int, cells: Mapping[str, object]) -> str:
        raw = cells.get(self.column)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, str | int)):
            # a float id is what pandas writes for an int column with a gap: say so, not "missing"
            raise UnreadableItemError(
                f"its id {reprlib.repr(raw)} in column {self.column!r} is a {type(raw).__name__}, not text or a "
                "whole number", path=self.file, row=row,
                hint="write the ids as text or whole numbers (pandas: .astype('Int64') keeps a column with gaps whole)")
        item_id = "" if raw is None else str(raw).strip()
        problem = (f"has no id (column {self.column!r} is missing or empty)" if not item_id else
                   f"has the id {item_id!r} of row {self._first_row[item_id]}" if item_id in self._first_row
                   else None)
        if problem is not None:
            raise UnreadableItemError(problem, path=self.file, row=row,
                                      hint="give every row its own id, or leave id_column out")
        self._first_row[item_id] = row
        return f"{self.file}#{item_id}"


def _require_column(file: Path, columns: Sequence[str], column: str | None, option: str) -> None:
    if columns and column is not None and column not in columns:
        raise BadInputError(f"has no column {column!r}", path=file, row=1,
                            hint=f"its columns are {', '.join(columns)}; pass {option}=...")


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
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Numeric rows from a CSV/TSV (header row), JSONL or Parquet file as float32 ``[N, D]`` features.

    Every column but ``label_column`` (and ``id_column``) is a feature (``feature_names``; for JSONL the keys
    in the order they first appear); each cell must be a finite number that float32
    holds, so NaN and inf are bad items. The label column is optional; rows without a
    label are unlabeled. ``encoding`` is a CSV or JSONL file's text encoding. Parquet
    needs pyarrow (``pip install metalabel[tabular]``). A row's uri is ``path:row``, or with
    ``id_column`` ``path#id`` (as ``read_text`` names rows).
    """
    return chunked_table(path, label_column=label_column, id_column=id_column, classes=classes, encoding=encoding,
                         on_error=on_error).dataset()


def chunked_table(
    path: str | Path,
    *,
    label_column: str = "label",
    id_column: str | None = None,
    classes: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_error: OnError = "raise",
) -> ChunkedPool:
    """``read_table``'s pool read in chunks; ``path`` may also be a Parquet dataset (a folder of Parquet files).

    The columns are known before the rows are read: a CSV's header, Parquet's schema, and for
    JSONL one pass over the file collecting the keys (in the order they first appear).
    """
    suffixes = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
    file = Path(path).expanduser().resolve()
    file = file if is_parquet_dataset(file) else existing_path(path, folder=False, suffixes=suffixes)
    class_names = ClassNames(classes)
    suffix = file.suffix.lower()
    parquet = file.is_dir() or suffix in PARQUET_SUFFIXES
    row_meaning = ROW_IS_RECORD if parquet else ROW_IS_LINE
    count = None
    records: Callable[[BadItems], Iterator[tuple[int, Mapping[str, object]]]]
    if parquet:
        dataset = _parquet_dataset(file, label_column=label_column)
        columns, count = dataset.schema.names, dataset.count_rows()
        records = lambda bad_items: _parquet_records(dataset)  # noqa: E731 (bad rows are the caller's)
    elif suffix in JSONL_SUFFIXES:
        keys = (record for _, record in _jsonl_records(file, encoding=encoding, bad_items=BadItems(on_error)))
        columns = list(dict.fromkeys(key for record in keys for key in record))
        if not columns:  # no record at all (the CSV reader says so of a file without its header line)
            raise BadInputError("holds no records", path=file, hint="write one JSON object a line, its keys the "
                                "columns (the features and, for labeled rows, 'label')")
        records = lambda bad_items: _jsonl_records(file, encoding=encoding, bad_items=bad_items)  # noqa: E731
    else:
        columns, _ = read_csv(file, encoding=encoding, bad_items=BadItems(on_error))
        records = lambda bad_items: read_csv(file, encoding=encoding, bad_items=bad_items)[1]  # noqa: E731
    _require_column(file, columns, id_column, "id_column")
    feature_names = [column for column in columns if column not in (label_column, id_column)]
    if not feature_names:
        raise BadInputError("has no feature columns", path=file,
                            hint=f"every column but {label_column!r} (and the id_column) is a feature")

    def rows(bad_items: BadItems) -> Iterator[Row]:
        ids = None if id_column is None else _RowIds(file, id_column)  # afresh at every read of the file
        for row, cells in records(bad_items):
            label = label_name(cells.get(label_column))
            try:
                uri = location(file, row) if ids is None else ids.uri(row, cells)
                values = [_number(cells.get(column), file, row, column, row_meaning) for column in feature_names]
                class_names.check(label, path=file, row=row)
            except (UnreadableItemError, UnknownLabelError) as error:
                bad_items.handle(error)
                continue
            yield values, label, uri

    def stack(values: list[Any]) -> np.ndarray:
        return np.array(values, dtype=np.float32).reshape(len(values), len(feature_names))

    name = file.name if file.is_dir() else file.stem
    return ChunkedPool(name, "tabular", rows, stack, on_error=on_error, classes=class_names, count=count,
                       feature_names=feature_names)


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


def is_parquet_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder of Parquet files (a Parquet dataset, partitioned or not) and of no images."""
    if not path.is_dir():
        return False
    found = False
    for file in path.rglob("*"):  # an image folder is told at its first image, not after listing it all
        suffix = file.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return False
        found = found or suffix in PARQUET_SUFFIXES
    return found


def _parquet_dataset(path: Path, *, label_column: str) -> Any:
    """A Parquet file or folder as a ``pyarrow.dataset.Dataset`` (read as it is iterated), its columns checked.

    A folder's files must agree on their columns (``_agreeing_files``); the dataset has them all, and the label
    of the rows of a folder named ``LABEL_COLUMN=value`` (a dataset partitioned by label).
    """
    try:  # optional: only Parquet needs pyarrow
        import pyarrow as pa
        import pyarrow.dataset as ds
    except ImportError as error:
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install 'metalabel[tabular]'") from error
    try:
        dataset = ds.dataset(path, format="parquet")
        if path.is_dir():
            fragments = [_labelled_by_folder(path, dataset, fragment, label_column) for fragment in
                         dataset.get_fragments()]
            # the files checked, read with the columns of them all (replace_schema refuses to widen a type)
            schema = _agreeing_files(path, fragments, label_column=label_column)
            dataset = ds.FileSystemDataset(fragments, schema, dataset.format, dataset.filesystem)
        names = dataset.schema.names
    # UnicodeDecodeError: a damaged file's column names are not UTF-8
    except (pa.ArrowException, OSError, UnicodeDecodeError) as error:
        raise _unreadable_parquet(path, error) from error
    if len(set(names)) != len(names):
        raise BadInputError(f"names a column twice: {names}", path=path, hint="give each column its own name")
    return dataset


def _labelled_by_folder(folder: Path, dataset: Any, fragment: Any, label_column: str) -> Any:
    """``fragment`` (one file of the dataset in ``folder``), its rows labelled ``x`` if a folder above it is named
    ``LABEL_COLUMN=x``, as pandas' ``partition_cols`` writes a dataset partitioned by label.

    Read here, not by pyarrow's hive partitioning, so the label is text as written (``01`` stays ``01``) and other
    partition keys stay out of the features, as they always were.
    """
    import pyarrow.dataset as ds

    key = f"{label_column}="
    named = [part[len(key):] for part in Path(fragment.path).relative_to(folder).parts[:-1] if part.startswith(key)]
    if not named:
        return fragment
    label = urllib.parse.unquote(named[-1])  # pyarrow writes a folder's name %-encoded
    return dataset.format.make_fragment(fragment.path, dataset.filesystem,
                                        partition_expression=ds.field(label_column) == label)


def _agreeing_files(folder: Path, fragments: list[Any], *, label_column: str) -> Any:
    """The schema of a Parquet dataset's files together, refused unless they agree, naming the file that does not.

    pyarrow takes the first file's columns: a label column only later files hold would be dropped, and so would
    another file's extra column, silently. Every file must hold the first one's columns, of types that widen
    to one (int and float: float), except the label column, which a file of unlabeled rows may leave out. A
    folder ``label=x`` (pandas' ``partition_cols``) gives its rows' label; other partition keys stay out, as ever.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    merged = first = None
    first_with: dict[str, Path] = {}  # column -> the first file holding it
    for fragment in fragments:
        file = Path(fragment.path)
        try:
            schema = fragment.physical_schema
        except (pa.ArrowException, OSError, UnicodeDecodeError) as error:  # an empty or broken file among them
            raise _unreadable_parquet(file, error) from error
        if label_column in schema.names and label_column in ds.get_partition_keys(fragment.partition_expression):
            raise BadInputError(f"holds a column {label_column!r}, which its folder names too", path=file,
                                hint="keep the label in the file or in the folder's name, not both")
        if merged is None or first is None:
            merged, first = schema, (file, schema)
            first_with = dict.fromkeys(schema.names, file)
            continue
        first_file, first_schema = first
        hint = (f"write every file of the dataset with the same columns (a file of unlabeled rows may leave out "
                f"{label_column!r}), or move the file out of the folder")
        for column in schema.names:
            if column not in first_schema.names and column != label_column:
                raise BadInputError(f"has the column {column!r}, which {first_file.name} lacks", path=file, hint=hint)
        for column in first_schema.names:
            if column not in schema.names and column != label_column:
                raise BadInputError(f"lacks the column {column!r}, which {first_file.name} has", path=file, hint=hint)
        for field in schema:
            if field.name in merged.names and not _widen_to_one(merged.field(field.name), field):
                raise BadInputError(
                    f"column {field.name!r} holds {field.type}, but {merged.field(field.name).type} in "
                    f"{first_with[field.name].name}", path=file, hint="write the column with one type in every file")
            first_with.setdefault(field.name, file)
        merged = pa.unify_schemas([merged, schema], promote_options="permissive")
    if merged is None:  # pyarrow skips files named _... or .... (never a dataset without a schema: it crashes)
        raise BadInputError("holds no Parquet file to read", path=folder,
                            hint="pyarrow skips files whose names begin with _ or .; rename them")
    if label_column not in merged.names and any(ds.get_partition_keys(fragment.partition_expression)
                                                for fragment in fragments):
        merged = merged.append(pa.field(label_column, pa.string()))  # the label only folders name
    return merged


def _widen_to_one(known: Any, field: Any) -> bool:
    """Whether two files' fields of one column have types pyarrow widens to one (int64 and double: double)."""
    import pyarrow as pa

    try:
        pa.unify_schemas([pa.schema([known]), pa.schema([field])], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return True


def _unreadable_parquet(path: Path, error: Exception) -> UnreadableItemError:
    return UnreadableItemError(f"is not a readable Parquet file: {error}", path=path,
                               hint="write the file again, or check it is Parquet")


def _parquet_records(dataset: Any) -> Iterator[tuple[int, dict[str, object]]]:
    """``(row, {column: value})`` per row of a Parquet ``dataset``, rows counted from 1 across its files (in the
    order of their paths), read a batch at a time; a file that fails is named."""
    import pyarrow as pa

    names = dataset.schema.names
    row = 0
    for fragment in dataset.get_fragments():
        file = Path(fragment.path)
        try:
            # the dataset's schema: a file without the label column reads it as empty, an int column as float
            for batch in fragment.to_batches(schema=dataset.schema, batch_size=DEFAULT_CHUNK_SIZE):
                columns = []
                for name, column in zip(names, batch.columns):
                    try:
                        columns.append(column.to_pylist())
                    # a damaged file can hold strings that are not UTF-8, or dates past year 9999
                    except (pa.ArrowException, ValueError, OverflowError) as error:
                        raise UnreadableItemError(
                            f"column {name!r} holds values Python cannot read: {error}", path=file,
                            hint="fix the column in the program that wrote the file, or drop it",
                        ) from error
                for values in zip(*columns):
                    row += 1
                    yield row, dict(zip(names, values))
        except (pa.ArrowException, OSError) as error:  # a damaged page surfaces only when its batch is read
            raise _unreadable_parquet(file, error) from error
