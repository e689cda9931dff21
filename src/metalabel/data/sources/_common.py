"""Helpers the readers share: bad-item policy, class names, paths, CSV rows, images, text, downloads."""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NamedTuple
from urllib.request import urlopen

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    EmptyClassError,
    UnknownLabelError,
    UnreadableItemError,
)
from metalabel.files import write_atomically

OnError = Literal["raise", "skip"]

# What "row N" means in an error, per kind of file, said in the error's hint.
ROW_IS_LINE = "row N is line N of the file, counting from 1 as an editor does"
ROW_IS_RECORD = "row N is the N-th data row, counting from 1"

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# PIL modes that carry no colour: read as one grey channel unless told otherwise.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def location(path: str | Path | None, row: int | None = None) -> str:
    """``path:row`` for a row of a file, ``path`` for a whole file: the form uris and skip notes use."""
    return f"{path}:{row}" if row is not None else str(path)


class BadItems:
    """What a reader does with an item it cannot use: raise its error, or note it and go on.

    ``on_error="skip"`` keeps ``(where, why)`` for each item left out, for ``LabeledDataset.skipped``.
    """

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise BadInputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.skip = on_error == "skip"
        self.skipped: list[tuple[str, str]] = []

    def handle(self, error: BadInputError) -> None:
        """Raise ``error``, or in skip mode record it; the caller then moves to the next item."""
        if not self.skip:
            raise error
        self.skipped.append((location(error.path, error.row), error.problem))


def sorted_class_names(names: Iterable[str]) -> list[str]:
    """Unique names sorted; numerically when every name is an integer, so class "10" follows "9" (names of one
    number, "1" and "01", by their text: a set's order differs between processes)."""
    unique = set(names)
    try:
        return sorted(unique, key=lambda name: (int(name), name))
    except ValueError:
        return sorted(unique)


def label_name(value: object) -> str | None:
    """A raw label cell as a class name; ``None`` for a missing one (the item is unlabeled)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    name = str(value).strip()
    return name or None


class ClassNames:
    """Maps label names to class indices: the ``classes`` given, else the sorted labels seen."""

    def __init__(self, classes: Sequence[str] | None) -> None:
        self.fixed = None if classes is None else [str(name) for name in classes]
        if self.fixed is not None and len(set(self.fixed)) != len(self.fixed):
            duplicates = sorted({name for name in self.fixed if self.fixed.count(name) > 1})
            raise BadInputError(f"classes lists {', '.join(map(repr, duplicates))} more than once")
        self._known = frozenset(self.fixed or ())

    def check(self, label: str | None, *, path: str | Path, row: int) -> None:
        """Raise ``UnknownLabelError`` for a label outside the fixed classes."""
        if self.fixed is not None and label is not None and label not in self._known:
            raise UnknownLabelError(
                f"label {label!r} is not one of the classes",
                path=path,
                row=row,
                hint=f"known classes: {', '.join(self.fixed)}; fix the label or add it to classes",
            )

    def encode(self, labels: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
        """Class indices (``UNLABELED`` for ``None``) and the class names they index."""
        seen = (label for label in labels if label is not None)
        names = self.fixed if self.fixed is not None else sorted_class_names(seen)
        index = {name: i for i, name in enumerate(names)}
        encoded = np.array([UNLABELED if label is None else index[label] for label in labels], dtype=np.int64)
        return encoded, names


def existing_path(path: str | Path, *, folder: bool, suffixes: Iterable[str] = ()) -> Path:
    """``path`` made absolute, or ``DataNotFoundError``/``BadInputError`` saying what is wrong with it."""
    resolved = Path(path).expanduser().resolve()
    kind = "folder" if folder else "file"
    if not (resolved.is_dir() if folder else resolved.is_file()):
        raise DataNotFoundError(f"no such {kind}", path=resolved, hint=f"check the path; it must be a {kind}")
    suffixes = sorted(suffixes)
    if suffixes and resolved.suffix.lower() not in suffixes:
        raise BadInputError(
            f"cannot tell the format from the extension {resolved.suffix!r}",
            path=resolved,
            hint=f"use one of {', '.join(suffixes)}",
        )
    return resolved


# Python's csv module refuses cells over 128 KiB by default, less than a long article.
# A cell larger than this is far more often an unmatched quote swallowing the rest of the file.
CSV_CELL_LIMIT = 16 * 1024 * 1024


def text_encoding(encoding: str) -> str:
    """The codec to open a text file with: ``encoding`` checked, UTF-8 read as ``utf-8-sig`` to drop a BOM."""
    try:
        name = codecs.lookup(encoding).name
        io.TextIOWrapper(io.BytesIO(), encoding=name)  # refuses codecs that are not text (base64, rot13)
    except (LookupError, TypeError) as error:
        raise BadInputError(
            f"encoding {encoding!r} is not a text encoding Python knows",
            hint="use a codec name such as 'utf-8', 'cp1252' or 'latin-1'",
        ) from error
    # spreadsheets often save a byte-order mark before the header
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def undecodable(path: Path, *, encoding: str, error: UnicodeError) -> UnreadableItemError:
    """The error for a file that is not text in ``encoding``, naming the line and byte where it breaks."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as whole_file_error:
        at = whole_file_error.start
        where: int | None = data.count(b"\n", 0, at) + 1
        problem = f"(byte 0x{data[at]:02x})"
    else:  # a stream decoder can refuse what a whole-file decode takes (UTF-16 without a BOM)
        where, problem = None, f"({error})"
    try:  # what Excel on Windows saves; else latin-1, which decodes any byte
        data.decode("cp1252")
        guess = "cp1252"
    except UnicodeDecodeError:
        guess = "latin-1"
    label = "UTF-8" if encoding == "utf-8-sig" else encoding
    return UnreadableItemError(
        f"is not {label} text {problem}",
        path=path,
        row=where,
        hint=f"save it as UTF-8, or pass the encoding it was saved in, e.g. encoding={guess!r} "
        f"(CLI: --source-option encoding={guess}); {ROW_IS_LINE}",
    )


@contextlib.contextmanager
def _csv_cell_limit() -> Iterator[None]:
    # the limit is process-wide: set ours for the read, then give the caller's back
    previous = csv.field_size_limit(CSV_CELL_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def csv_rows(
    path: Path,
    *,
    encoding: str,
    delimiter: str | None = None,
    failed: Callable[[UnicodeError | csv.Error, int], Exception] | None = None,
) -> Generator[tuple[int, list[str]], None, None]:
    """``(line, cells)`` per non-blank row of a CSV, the header included: the one CSV reader of metalabel.

    ``line`` is where the row starts, counting from 1 as an editor does. ``delimiter``: by
    default a tab for ``.tsv``, else a comma. Cells may be up to ``CSV_CELL_LIMIT`` long. A file
    that is not text in ``encoding``, or not valid CSV, raises ``failed(error, line)``; by default
    an ``UnreadableItemError`` naming the line. Read it under ``contextlib.closing``, so the csv
    module's cell limit is given back as soon as the caller stops, even on an error of its own.
    """
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    line = 1
    try:
        with _csv_cell_limit(), path.open(newline="", encoding=encoding) as stream:
            reader = csv.reader(stream, delimiter=delimiter)
            for cells in reader:
                if cells:  # csv yields [] for a blank line
                    yield line, cells
                line = reader.line_num + 1
    except (UnicodeError, csv.Error) as error:  # UnicodeError: a codec's own complaint too (UTF-16's missing BOM)
        raise (failed(error, line) if failed else _unreadable_csv(path, encoding, error, line)) from error


def _unreadable_csv(path: Path, encoding: str, error: UnicodeError | csv.Error, line: int) -> UnreadableItemError:
    if isinstance(error, UnicodeError):
        return undecodable(path, encoding=encoding, error=error)
    if "field larger than field limit" in str(error):
        return UnreadableItemError(
            f"a cell is longer than {CSV_CELL_LIMIT:,} characters",
            path=path,
            row=line,
            hint=f"look for an unmatched quote (\") in or above this row, or shorten the cell; {ROW_IS_LINE}",
        )
    return UnreadableItemError(f"is not valid CSV: {error}", path=path, row=line, hint=ROW_IS_LINE)


def read_csv_header(path: Path, *, encoding: str) -> list[str]:
    """The column names of a CSV, stripped (empty for an empty file)."""
    # closing: gives the csv cell limit back now, not when the generator is collected
    with contextlib.closing(csv_rows(path, encoding=text_encoding(encoding))) as rows:
        _, header = next(rows, (1, []))
    return [name.strip() for name in header]


def read_csv(
    path: Path, *, encoding: str, bad_items: BadItems
) -> tuple[list[str], Generator[tuple[int, dict[str, str]], None, None]]:
    """Header and ``(line, {column: cell})`` per data row of a CSV (TSV for ``.tsv``), the rows read as they are used.

    ``line`` is where the row starts in the file counting the header as line 1, as an
    editor shows it. Short rows get no cells for the missing columns; a row with more
    cells than the header (an unquoted delimiter, usually) is a bad item.
    """
    header = read_csv_header(path, encoding=encoding)
    if not header:
        raise BadInputError("is empty; the first line must name the columns", path=path)
    if len(set(header)) != len(header):
        raise BadInputError(f"the header names a column twice: {header}", path=path, row=1)
    return header, _csv_records(path, header, encoding=encoding, bad_items=bad_items)


def _csv_records(
    path: Path, header: list[str], *, encoding: str, bad_items: BadItems
) -> Generator[tuple[int, dict[str, str]], None, None]:
    with contextlib.closing(csv_rows(path, encoding=text_encoding(encoding))) as rows:
        next(rows, None)  # the header
        for line, cells in rows:
            if len(cells) > len(header):
                bad_items.handle(
                    UnreadableItemError(
                        f"has {len(cells)} cells but the header has {len(header)}",
                        path=path,
                        row=line,
                        hint=f"quote cells that contain the delimiter; {ROW_IS_LINE}",
                    )
                )
            else:
                yield line, dict(zip(header, cells))


class TextRow(NamedTuple):
    """One raw text item: where it is (for errors), its text and label cells, and its uri."""

    path: Path
    row: int
    text: object
    label: object
    uri: str | None = None  # None: "path:row"


def text_dataset(
    name: str,
    rows: Iterable[TextRow],
    *,
    text_column: str,
    classes: ClassNames,
    bad_items: BadItems,
    group_of: Callable[[str], str] | None = None,
) -> LabeledDataset:
    """A text data set from raw rows; ``group_of(class_name)`` gives each class's group."""
    texts: list[str] = []
    labels: list[str | None] = []
    uris: list[str] = []
    for text, label, uri in text_items(rows, text_column=text_column, classes=classes, bad_items=bad_items):
        texts.append(text)
        labels.append(label)
        uris.append(uri)
    encoded, class_names = classes.encode(labels)
    return LabeledDataset(
        name=name,
        modality="text",
        items=texts,
        labels=encoded,
        class_names=class_names,
        uris=uris,
        groups=None if group_of is None else [group_of(c) for c in class_names],
        skipped=bad_items.skipped,
    )


def text_items(
    rows: Iterable[TextRow], *, text_column: str, classes: ClassNames, bad_items: BadItems
) -> Iterator[tuple[str, str | None, str]]:
    """``(text, class name or None, uri)`` per usable row, one at a time; a row without text is a bad item."""
    for path, row, text, raw_label, uri in rows:
        label = label_name(raw_label)
        try:
            if not isinstance(text, str) or not text.strip():
                raise UnreadableItemError(
                    f"has no text (column {text_column!r} is missing or empty)", path=path, row=row, hint=ROW_IS_LINE
                )
            classes.check(label, path=path, row=row)
        except (UnreadableItemError, UnknownLabelError) as error:
            bad_items.handle(error)
            continue
        yield text, label, uri or location(path, row)


@dataclass(frozen=True)
class ImageFile:
    """One image to read: where it is (uri and error messages), its class index, how to open it."""

    uri: str
    label: int
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class FileOpener:
    """Opens ``path`` for binary reading when called: an ``ImageFile.open`` for a file on disk, picklable."""

    path: Path

    def __call__(self) -> IO[bytes]:
        return self.path.open("rb")


def _height_width(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise BadInputError(f"size must be positive, not {size!r}")
    return height, width


def decode_image(file: ImageFile, *, size: tuple[int, int] | None, grayscale: bool | None) -> np.ndarray:
    """uint8 ``[H, W]`` (grey) or ``[H, W, 3]``; ``UnreadableItemError`` naming the file if it won't decode."""
    try:
        with file.open() as stream, Image.open(stream) as opened:
            image = ImageOps.exif_transpose(opened)  # phone photos store their rotation in EXIF
            grey = image.mode in _GREY_MODES if grayscale is None else grayscale
            image = image.convert("L" if grey else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError as error:  # its message repeats the stream's repr; say it plainly
        raise UnreadableItemError(
            "is not in an image format PIL can read", path=file.uri, hint="replace or remove the file"
        ) from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableItemError(
            f"cannot be decoded as an image: {error}", path=file.uri, hint="replace or remove the file"
        ) from error


def image_dataset(
    name: str,
    files: Sequence[ImageFile],
    class_names: list[str],
    *,
    where: str | Path,
    size: int | tuple[int, int] | None,
    grayscale: bool | None,
    bad_items: BadItems,
    groups: list[str] | None = None,
) -> LabeledDataset:
    """Decode ``files`` into one uint8 array; ``where`` names the data set's folder in errors.

    ``size`` is an int (square) or ``(height, width)``; without it every image must
    already have one size. ``grayscale=None`` keeps grey images grey unless any
    image has colour, in which case all become RGB.
    """
    images: list[np.ndarray] = []
    kept: list[ImageFile] = []
    for image, file in decoded_images(files, class_names, where=where, size=size, grayscale=grayscale,
                                      bad_items=bad_items):
        images.append(image)
        kept.append(file)
    return LabeledDataset(
        name=name,
        modality="image",
        items=stack_images(images, size=size),
        labels=np.array([f.label for f in kept], dtype=np.int64),
        class_names=class_names,
        uris=[f.uri for f in kept],
        groups=groups,
        skipped=bad_items.skipped,
    )


def stack_images(images: Sequence[np.ndarray], *, size: int | tuple[int, int] | None) -> np.ndarray:
    """Decoded images as one uint8 array ``[N, H, W(, 3)]``; none at all as ``[0, *size]``."""
    return np.stack(images) if images else np.zeros((0, *(_height_width(size) or (0, 0))), dtype=np.uint8)


def decoded_images(
    files: Sequence[ImageFile],
    class_names: list[str],
    *,
    where: str | Path,
    size: int | tuple[int, int] | None,
    grayscale: bool | None,
    bad_items: BadItems,
) -> Iterator[tuple[np.ndarray, ImageFile]]:
    """``(uint8 image, its file)`` per readable file, decoded one at a time (see ``image_dataset``).

    With ``grayscale=None`` the files' headers are read first (not their pixels): if any image has
    colour, grey ones are repeated to RGB as they are decoded, so every image has the pool's shape.
    A class none of whose images could be read raises ``EmptyClassError`` once all were tried.
    """
    target = _height_width(size)
    files_per_class = np.bincount([f.label for f in files if f.label != UNLABELED], minlength=len(class_names))
    for class_name, count in zip(class_names, files_per_class):
        if count == 0:
            raise EmptyClassError("has no images", path=where, cls=class_name, hint="add images or remove the class")
    colour = grayscale is None and any(_has_colour(file) for file in files)
    first: tuple[np.ndarray, ImageFile] | None = None
    kept_per_class = np.zeros(len(class_names), dtype=np.int64)
    for file in files:
        try:
            image = decode_image(file, size=target, grayscale=grayscale)
        except UnreadableItemError as error:
            bad_items.handle(error)
            continue
        if colour and image.ndim == 2:  # mixed grey and colour: promote grey to RGB
            image = np.repeat(image[..., None], 3, axis=2)
        if first is None:
            first = image, file
        elif image.shape[:2] != first[0].shape[:2]:
            (height, width), (first_height, first_width) = image.shape[:2], first[0].shape[:2]
            raise BadInputError(
                f"image is {width}x{height} but {first[1].uri} is {first_width}x{first_height}",
                path=file.uri,
                hint="pass size=... to resize every image to one size",
            )
        if file.label != UNLABELED:
            kept_per_class[file.label] += 1
        yield image, file
    for class_name, count in zip(class_names, kept_per_class):
        if count == 0:
            raise EmptyClassError(
                "has no readable images; every one was skipped", path=where, cls=class_name,
                hint="see the skipped files",
            )


def _has_colour(file: ImageFile) -> bool:
    """Whether the image's header names a colour mode; a file that will not open counts as grey (its decoding
    reports it)."""
    try:
        with file.open() as stream, Image.open(stream) as opened:
            return opened.mode not in _GREY_MODES
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return False


def download(url: str, destination: Path, *, md5: str, timeout: float = 20.0) -> None:
    """Fetch ``url`` into ``destination`` if its MD5 matches; a partial or wrong file never lands there.

    Raises ``OSError`` (``urllib.error.URLError`` and timeouts included) when it fails.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)

    def fetch(partial: Path) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        with urlopen(url, timeout=timeout) as response, partial.open("xb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:  # raised before the rename: a wrong file never lands
            raise OSError(f"{url} sent a file with MD5 {digest.hexdigest()}, expected {md5}")

    write_atomically(destination, fetch)
