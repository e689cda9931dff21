"""Exports: a project's labeled items, each with its label's full provenance, in five formats.

``export_project`` writes one folder, with ``classes.txt`` (the classes in label-id order, as
``datasets.ClassLabel(names_file=...)`` reads them) in every format but ``labelstudio``:

- ``parquet``: ``labels.parquet``, one row per labeled item (columns in ``COLUMNS``, made
  with their types from ``PROVENANCE``, the one list of provenance columns every format
  uses; text projects add ``text``, the item itself, and table projects one column per
  feature, under the file's names or ``feature_<name>`` where a provenance column has the
  name). The schema metadata holds the class list (``PARQUET_CLASSES_KEY``).
- ``csv``: ``labels.csv``, the same rows. A text cell that a spreadsheet would read as a
  formula (first character ``=``, ``+``, ``-``, ``@``, tab or carriage return) is written with
  a ``'`` in front, so opening the file in Excel or LibreOffice runs nothing
  (CSV/formula injection); ``export.json`` says so (``csv_formula_guard``). Parquet keeps
  every value as it is.
- ``imagefolder``: ``<class>/<file>`` per labeled image (the original file's bytes, read once and
  checked to decode to the item's stored content, else a PNG written from the pool's checked
  pixels), ``labels.csv``, the rows with a ``path`` column first, and
  for Hugging Face ``datasets`` ``metadata.csv`` (``file_name`` first, values as they are)
  with a ``README.md`` dataset card whose features make ``label`` a ``ClassLabel``.
- ``labelstudio``: ``tasks.json`` (Label Studio's import format, a choices task per item,
  its ``data`` holding the item, every provenance column and the label's identity, so a
  reviewed export can be imported back: ``LabelStudioQueue.import_annotations``) and
  ``label_config.xml``. Table rows are shown as ``{column: value}``; images are embedded as
  data URIs, or with ``local_files_root`` (Label Studio's document root) written to
  ``images/`` and linked under that root. A model label whose item waits on a reference
  question is left out until it is answered: the reviewer would see the guess the answer
  must be given without.
- ``hf``: ``data/<split>-00000-of-00001.parquet`` with ``datasets`` features in the schema
  (``Image`` bytes, ``ClassLabel``, every provenance column) and a ``README.md`` dataset card;
  ``datasets.load_dataset(folder)`` reads it offline. ``test_split`` puts the answers to
  reference questions in ``test``.

Only active labels are exported unless ``include_retracted=True``: then the model labels
a round's certificate no longer covered come too, one row each, with ``retracted`` true,
``retracted_at``, ``retracted_round`` and ``retraction_reason`` (an audit trail; ImageFolder
and ``hf`` refuse it, since their class folders and ``train`` split are training data). Every model
label row carries ``certified_precision``, the bound of the certificate that admitted it.

Each export also holds ``export.json``: the project, its classes, the filters used, what
each column means, counts by source and class (of active labels) and of retracted rows, so a
data set can be traced back to how it was made.

Filters: ``sources`` keeps labels from those sources only; ``min_confidence`` drops
model labels whose calibrated confidence is below it or unknown. It applies to source
"model" only: human and imported labels carry no confidence and always pass, and so do
generated and augmented ones, whose label comes from how the item was made.

Content is checked: every export that can reach the pool (``pool=``, or the spec the project
recorded) first checks each stored item against the content hash it had at init, once per item,
and refuses (``PoolChangedError``, naming the item) if one changed or is gone, also for formats
that write no content (parquet, csv), so labels are never exported for items that are no longer
what was labeled. ``export.json`` says whether the pool was checked (``pool_checked``). An image
file is then read once, and its bytes are written only if they decode to the stored content: a
file replaced after the check gives the pool's checked pixels instead (``images_from_pool_pixels``
counts them, as it counts the files of a source that decodes them otherwise, such as Omniglot).

The folder is written under a hidden name beside ``out`` and renamed into place at the
end, so a crash never leaves a half export where ``out`` should be. ``out`` may not be the
project folder, lie inside it (except under ``PROJECT/exports/``) or contain it, with or
without ``overwrite``.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import math
import mimetypes
import numbers
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from metalabel._version import __version__
from metalabel.data.dataset import LabeledDataset
from metalabel.data.sources._common import IMAGE_SUFFIXES
from metalabel.errors import BadInputError, MissingDependencyError, StoreError
from metalabel.evaluate.records import RoundCertificate, Scorecard, recorded_before_certification
from metalabel.files import IfExists, staged_folder
from metalabel.label.ask import REFERENCE, awaiting_reference
from metalabel.label.image_files import holds_stored_image, read_file
from metalabel.label.labelstudio import CONFIG_FILE as LABELSTUDIO_CONFIG
from metalabel.label.labelstudio import ReviewIdentity, Suggestion, choices_task, write_config
from metalabel.label.oracle import project_identity
from metalabel.store import SOURCES, Disagreement, Item, Label, LabelSource, ProjectStore
from metalabel.store.pool import POOL_SPEC_KEY, check_pool, has_pool_spec, reload_pool

ExportFormat = Literal["parquet", "csv", "imagefolder", "labelstudio", "hf"]
FORMATS: tuple[ExportFormat, ...] = ("parquet", "csv", "imagefolder", "labelstudio", "hf")
_TRAINING_FORMATS: dict[str, str] = {"imagefolder": "an ImageFolder export's class folders are",
                                     "hf": "an hf export's train split is"}
"""Formats whose labels are training data as written (``datasets.load_dataset`` reads them): no retracted rows."""

ColumnType = Literal["string", "float", "int", "bool", "timestamp"]


@dataclass(frozen=True)
class ProvenanceColumn:
    """One provenance column: its name, its type, and how a row gets its value.

    ``PROVENANCE`` is the one list every export format and the parquet schema are made
    from: a column added here appears in parquet, csv, imagefolder's ``labels.csv`` and
    each Label Studio task's ``data``.
    """

    name: str
    type: ColumnType
    value: Callable[[_Row], Any]
    doc: str


PROVENANCE: tuple[ProvenanceColumn, ...] = (
    ProvenanceColumn("uri", "string", lambda row: row.item.uri, "where the item came from"),
    ProvenanceColumn("content_hash", "string", lambda row: row.item.content_hash,
                     "the item's content hash at init (blake2b of its bytes)"),
    ProvenanceColumn("split", "string", lambda row: row.item.split, "the item's split"),
    ProvenanceColumn("label", "string", lambda row: row.label.class_name, "the class"),
    ProvenanceColumn("source", "string", lambda row: row.label.source,
                     "human, imported, model, generated or augmented"),
    ProvenanceColumn("raw_confidence", "float", lambda row: row.label.raw_confidence,
                     "the model's probability before calibration (model labels)"),
    ProvenanceColumn("calibrated_confidence", "float", lambda row: row.label.calibrated_confidence,
                     "the calibrated probability (model labels)"),
    ProvenanceColumn("threshold", "float", lambda row: row.label.threshold,
                     "the certified confidence threshold that admitted a model label"),
    ProvenanceColumn("certified_precision", "float", lambda row: row.label.certified_precision,
                     "the lower confidence bound (at 1 - delta) on precision of the certificate that admitted "
                     "a model label; empty for labels a person gave"),
    ProvenanceColumn("round", "int", lambda row: row.label.round_id, "the round that wrote the label"),
    ProvenanceColumn("model_hash", "string", lambda row: row.label.model_hash,
                     "the checkpoint a model label came from"),
    ProvenanceColumn("query_strategy", "string", lambda row: row.label.query_strategy,
                     "why the item was asked (reference, label-issue, audit: a review, or the strategy that chose it)"),
    ProvenanceColumn("annotator", "string", lambda row: row.annotator,
                     "who answered the question that gave a human label (e.g. labelstudio:ann@example.com)"),
    ProvenanceColumn("created_at", "timestamp", lambda row: row.label.created_at, "when the label was written (UTC)"),
    ProvenanceColumn("disagreement", "bool", lambda row: row.disagreement is not None,
                     "another person, or a less trusted source (a model), contradicts the item's label and no "
                     "person has settled it"),
    ProvenanceColumn("disagreement_class", "string",
                     lambda row: None if row.disagreement is None else row.disagreement.proposed_class,
                     "the class the item's latest open disagreement proposes"),
    ProvenanceColumn("disagreement_by", "string",
                     lambda row: None if row.disagreement is None else _proposer(row.disagreement),
                     "who proposed it: the model's checkpoint or the person (e.g. labelstudio:bob@example.com), "
                     "else the source"),
    ProvenanceColumn("retracted", "bool", lambda row: row.label.retracted_at is not None,
                     "the label was retracted (only in exports with include_retracted)"),
    ProvenanceColumn("retracted_at", "timestamp", lambda row: row.label.retracted_at, "when it was retracted (UTC)"),
    ProvenanceColumn("retracted_round", "int", lambda row: row.label.retracted_round,
                     "the round whose certificate no longer covered it"),
    ProvenanceColumn("retraction_reason", "string", lambda row: row.label.retraction_reason, "why, in words"),
)

COLUMNS: tuple[str, ...] = tuple(column.name for column in PROVENANCE)
"""Provenance columns of every tabular export, in order (the names of ``PROVENANCE``)."""

SIDECAR_FILENAME = "export.json"
LABELS_PARQUET = "labels.parquet"
LABELS_CSV = "labels.csv"
CLASSES_FILE = "classes.txt"
"""The classes, one a line in class order: ``datasets.ClassLabel(names_file=...)`` reads it as it is."""
METADATA_CSV = "metadata.csv"
"""ImageFolder's per-image columns as ``datasets`` reads them (``file_name`` first)."""
DATASET_CARD = "README.md"
PARQUET_CLASSES_KEY = b"metalabel.classes"
"""The parquet schema metadata key holding the class list (JSON), in class order."""
LABELSTUDIO_TASKS = "tasks.json"
LABELSTUDIO_IMAGES = "images"

# An `out` with one of these suffixes reads as a file name, but an export is a folder.
_FILE_SUFFIXES = frozenset({".parquet", ".csv", ".json", ".jsonl"})

_UNSAFE_CHARACTERS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')  # not allowed in a name on Windows (or "/" anywhere)
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}
)
_MAX_NAME_BYTES = 200  # file systems allow 255; this leaves room for a "-2" and a suffix

# Names an ImageFolder export's class folders must not take: its own files, and the folder
# that metalabel's imagefolder reader treats as unlabeled items.
_IMAGEFOLDER_RESERVED = (LABELS_CSV, SIDECAR_FILENAME, CLASSES_FILE, METADATA_CSV, DATASET_CARD, "unlabeled")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    """The export folder."""
    rows: int
    """Labeled items written."""
    skipped: dict[str, int]
    """Labeled items left out, by reason: ``sources`` and ``min_confidence`` (the filters),
    ``no_content`` (an image or text to write that could not be found: an item outside the
    pool, such as a generated one, that is no file on disk)."""


def export_project(
    store_or_folder: ProjectStore | str | Path,
    out: str | Path,
    *,
    format: ExportFormat,
    min_confidence: float | None = None,
    sources: Sequence[str] | str | None = None,
    include_retracted: bool = False,
    pool: LabeledDataset | None = None,
    overwrite: bool = False,
    test_split: bool = False,
    local_files_root: str | Path | None = None,
) -> ExportResult:
    """Write the project's labeled items, each with its label's provenance, into the folder ``out``.

    ``store_or_folder`` is an open project store or a project folder (``Project.export`` passes
    its store). ``sources`` (a list, or a comma-separated string such as ``"human,model"``) keeps labels from those
    sources; ``min_confidence`` drops model labels below that calibrated confidence (other
    sources always pass, see the module docstring). ``include_retracted=True`` adds the
    model labels a round retracted, as rows with ``retracted`` true, ``retracted_round`` and
    ``retraction_reason`` (an audit trail; not for ImageFolder or hf, whose class folders and train split
    are training data); by default only active labels are written.

    The store keeps uris and content hashes, not items. Where an export needs an item's
    content (text, or an image that is no file on disk), it comes from ``pool`` or else
    from the spec the project recorded (meta ``pool_spec``), and must hash as it
    did when the project was made. An existing non-empty ``out`` is replaced only with
    ``overwrite=True``.

    ``local_files_root`` (format ``labelstudio``, image projects): Label Studio's
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``, a folder that holds ``out``. The images are then
    written to ``out/images`` and linked as ``/data/local-files/?d=<path under the root>``; without
    it each image is embedded in its task as a data URI (fine for small images, heavy for large).

    ``test_split=True`` (format ``hf`` only) puts the people's answers to reference questions in a
    ``test`` split: uniform random draws from the pool, so a fair test of what the model labeled.
    """
    if format not in FORMATS:
        raise BadInputError(f"unknown export format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    wanted_sources = _checked_sources(sources)
    _check_min_confidence(min_confidence)
    if not isinstance(include_retracted, bool):
        raise BadInputError(f"include_retracted must be True or False, got {include_retracted!r}")
    if include_retracted and format in _TRAINING_FORMATS:
        raise BadInputError(
            f"{_TRAINING_FORMATS[format]} training data, so retracted labels (no certificate covers them) "
            "cannot go in them",
            hint="export the audit trail with format 'csv' or 'parquet' and include_retracted=True",
        )
    if not isinstance(test_split, bool):
        raise BadInputError(f"test_split must be True or False, got {test_split!r}")
    if test_split and format != "hf":
        raise BadInputError("a test split is made by the 'hf' export only", hint="export with format 'hf'")
    if format in ("parquet", "hf"):
        _import_pyarrow()  # fail before any work if it is missing
    out = Path(out)
    root = _checked_local_files_root(local_files_root, out, format=format)
    # one moment of the project: a run or `metalabel serve` may commit answers while the export reads
    with _opened_store(store_or_folder) as store, store.reading():
        _check_target(out, store, overwrite=overwrite)
        modality = _modality(store)
        _check_format_fits(format, modality)
        rows, skipped = _select_rows(store, sources=wanted_sources, min_confidence=min_confidence,
                                     include_retracted=include_retracted)
        if test_split and not any(_is_reference_answer(row) for row in rows):
            raise BadInputError(
                "no exported label is a person's answer to a reference question, so the test split would be empty",
                hint="run more rounds (they ask reference questions), or export without a test split",
            )
        content = _PoolContent(store, pool)
        if format in ("parquet", "csv") and modality == "image":
            content.check_if_reachable()  # no content written, but no labels for items that are gone either
        facts = _ProjectFacts.of(store) if format in _CARD_FORMATS else None
        job = _Job(rows, content, modality, store.classes(), out.resolve(), skipped, facts,
                   _feature_columns(modality, content), test_split, project_identity(store), root,
                   awaiting_reference(store.open_questions()) if format == "labelstudio" else frozenset())

        # _check_target let an existing export through only with overwrite: anything else there now is new
        if_exists = IfExists.REPLACE if overwrite else IfExists.REFUSE
        with staged_folder(out, if_exists=if_exists, what="the export") as staging:
            written = _WRITERS[format](job, staging)
            sidecar = _sidecar(store, job, written, format=format, min_confidence=min_confidence,
                               sources=wanted_sources, include_retracted=include_retracted)
            _write_json(staging / SIDECAR_FILENAME, sidecar, indent=2)
    return ExportResult(path=out, rows=len(written.rows), skipped=dict(job.skipped))


# ----------------------------------------------------------------- what to export


@dataclass(frozen=True)
class _Row:
    """One labeled item on its way out."""

    item: Item
    label: Label
    disagreement: Disagreement | None
    """The item's latest open disagreement, if any."""
    annotator: str | None = None
    """Who answered the question the label came from (``Question.oracle``)."""

    def columns(self) -> dict[str, Any]:
        """The row's provenance, one value per ``PROVENANCE`` column (timestamps as ISO text)."""
        return {column.name: column.value(self) for column in PROVENANCE}


@dataclass
class _Job:
    """Everything a format writer needs."""

    rows: list[_Row]
    content: _PoolContent
    modality: str
    classes: list[str]
    out: Path
    """Where the export will live once renamed into place (absolute)."""
    skipped: Counter[str]
    facts: _ProjectFacts | None
    """What the dataset card says about how the set was built (formats that write one)."""
    feature_columns: dict[str, str] = field(default_factory=dict)
    """A table project's feature names and the column each is written under (``_feature_columns``)."""
    held_out_test: bool = False
    project: str = ""
    """The project's identity (``project_identity``), which Label Studio tasks carry."""
    local_files_root: Path | None = None
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT (absolute), which image links are relative to."""
    awaiting_reference: frozenset[int] = frozenset()
    """Items with an open reference question (format ``labelstudio``): their model labels are not put up for review."""
    images_from_pixels: int = 0
    """Image files on disk that did not decode to their item's stored content, so the pool's pixels were written."""


@dataclass
class _Written:
    """What a format writer wrote: the rows, and facts about them for ``export.json``."""

    rows: list[_Row]
    sidecar: dict[str, Any] = field(default_factory=dict)


def _proposer(disagreement: Disagreement) -> str:
    """Who proposed a disagreement's class: the model's checkpoint, else the person, else the source (a
    disagreement has a checkpoint or a person, never both)."""
    return disagreement.model_hash or disagreement.oracle or disagreement.source


def _checked_sources(sources: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if sources is None:
        return None
    names = sources.split(",") if isinstance(sources, str) else [str(name) for name in sources]
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise BadInputError(
            f"unknown label source {', '.join(map(repr, unknown))}", hint=f"choose from {', '.join(SOURCES)}"
        )
    if not names:
        raise BadInputError(
            "no label source given, so nothing would be exported", hint=f"name some of {', '.join(SOURCES)}"
        )
    return tuple(dict.fromkeys(names))


def _checked_local_files_root(root: str | Path | None, out: Path, *, format: ExportFormat) -> Path | None:
    if root is None:
        return None
    if format != "labelstudio":
        raise BadInputError("local_files_root is for Label Studio exports", hint="export with format 'labelstudio'")
    resolved = Path(root).resolve()
    if not out.resolve().is_relative_to(resolved):
        raise BadInputError(
            f"the export folder {out} is not inside Label Studio's document root {resolved}, so its images could not "
            "be served", path=out, hint=f"export into a folder under {resolved}, or leave local_files_root out to "
            "embed the images in the tasks",
        )
    return resolved


def _check_min_confidence(min_confidence: float | None) -> None:
    if min_confidence is None:
        return
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, numbers.Real):
        raise BadInputError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
    if not (math.isfinite(min_confidence) and 0.0 <= min_confidence <= 1.0):
        raise BadInputError(f"min_confidence must lie in [0, 1], got {min_confidence!r}", hint="e.g. 0.9")


def _select_rows(
    store: ProjectStore, *, sources: tuple[str, ...] | None, min_confidence: float | None,
    include_retracted: bool = False,
) -> tuple[list[_Row], Counter[str]]:
    items = {item.id: item for item in store.each_item()}
    # Ordered by id, so an item's latest open disagreement is the one kept.
    open_disagreements = {disagreement.item_id: disagreement for disagreement in store.disagreements()}
    annotators = {question.id: question.oracle for question in store.answered_questions()}
    rows: list[_Row] = []
    skipped: Counter[str] = Counter()
    labels = store.active_labels() + (store.retracted_labels() if include_retracted else [])
    for label in labels:
        if sources is not None and label.source not in sources:
            skipped["sources"] += 1
        elif not _confident_enough(label, min_confidence):
            skipped["min_confidence"] += 1
        else:
            # a disagreement concerns the item's active label; a retracted row carries none
            disagreement = open_disagreements.get(label.item_id) if label.active else None
            annotator = None if label.question_id is None else annotators.get(label.question_id)
            rows.append(_Row(items[label.item_id], label, disagreement, annotator))
    return rows, skipped


def _confident_enough(label: Label, min_confidence: float | None) -> bool:
    if min_confidence is None or label.source != "model":
        return True
    # A model label with no calibrated confidence cannot show that it clears the bar.
    return label.calibrated_confidence is not None and label.calibrated_confidence >= min_confidence


def _modality(store: ProjectStore) -> str:
    modality = store.meta().get("modality")
    if modality is None:
        modalities = {item.modality for item in store.each_item()}
        modality = modalities.pop() if len(modalities) == 1 else "no items"
    return modality


def _check_format_fits(format: ExportFormat, modality: str) -> None:
    if format == "imagefolder" and modality != "image":
        others = [repr(name) for name in FORMATS if name != "imagefolder"]
        raise BadInputError(
            f"an ImageFolder export needs an image project, and this one holds {modality}",
            hint=f"export it with format {', '.join(others[:-1])} or {others[-1]}",
        )


@contextmanager
def _opened_store(store_or_folder: ProjectStore | str | Path) -> Iterator[ProjectStore]:
    """The store to read; one opened here from a folder is closed again."""
    if isinstance(store_or_folder, ProjectStore):
        yield store_or_folder
    else:
        with ProjectStore.open(store_or_folder) as store:
            yield store


# ------------------------------------------------------------------ item content


class _PoolContent:
    """Items' content from the pool the project was made from, checked against the stored hashes.

    The pool is loaded and checked on first use only (each stored item hashed once), so
    exports that need no content never pay for it. A pool the project already loaded (and
    so checked) is used as it is.
    """

    def __init__(self, store: ProjectStore, pool: LabeledDataset | None) -> None:
        self._store = store
        self._given = pool
        self._pool: LabeledDataset | None = None
        self._index_of_uri: dict[str, int] = {}
        self.checked = False
        """Whether the pool was loaded and every stored item checked against its hash."""

    def of(self, item: Item) -> str | np.ndarray | None:
        """The item's text or pixels; None for an item outside the pool (e.g. generated)."""
        pool = self._loaded_pool()
        index = self._index_of_uri.get(item.uri)
        if index is None:  # check_pool found every stored item; only synthetic ones get here
            return None
        return pool.items[index]

    def feature_names(self) -> list[str]:
        """The table's column names (``x0``, ``x1``, ... where the pool has none)."""
        pool = self._loaded_pool()
        if pool.feature_names:
            return list(pool.feature_names)
        width = np.asarray(pool.items).shape[1] if len(pool.items) else 0
        return [f"x{index}" for index in range(width)]

    def check_if_reachable(self) -> None:
        """Check the pool when there is one to check (given, recorded, or in memory); else note it was not."""
        if self._given is not None or has_pool_spec(self._store):
            self._loaded_pool()

    def _loaded_pool(self) -> LabeledDataset:
        if self._pool is None:
            if self._given is not None:
                pool = check_pool(self._store, self._given)
            else:
                # Read afresh, not a copy loaded earlier: the files (which image exports copy) may
                # have changed since that copy was checked. Checked there, each item hashed once.
                pool = reload_pool(self._store)
            self._index_of_uri = {uri: index for index, uri in enumerate(pool.uris)}
            self._pool, self.checked = pool, True
        return self._pool


@dataclass(frozen=True)
class _CheckedFile:
    """An image file's bytes, read once and checked to decode to its item's stored content: what is written."""

    data: bytes
    name: Path
    """The file's name (its stem and suffix name the exported file)."""
    times_ns: tuple[int, int]
    """Its access and modification times, kept on the copy as a copy keeps them."""


def _image_source(row: _Row, job: _Job) -> _CheckedFile | np.ndarray | None:
    """The original file's bytes when they hold the item's content, else the pool's pixels (None if neither).

    The pool is checked first (a file that changed since init is refused, ``PoolChangedError``); the file is
    then read once, and those bytes are written only if they decode to the stored content: one replaced
    after the check is never exported under the label its old content got. A file that does not hold it
    (changed during the export, or its source decodes it otherwise: Omniglot inverts its ink) gives the
    pool's checked pixels as PNG, counted in ``export.json`` (``images_from_pool_pixels``).
    """
    pixels = job.content.of(row.item)
    if pixels is None:
        return None
    pixels = np.asarray(pixels)
    path = Path(row.item.uri)
    if not path.is_file():
        return pixels
    try:
        data, status = read_file(path)
    except OSError:  # gone or unreadable since is_file: it holds nothing of the item's now
        data = b""
    if data and holds_stored_image(data, pixels, row.item.content_hash, uri=row.item.uri):
        return _CheckedFile(data, Path(path.name), (status.st_atime_ns, status.st_mtime_ns))
    job.images_from_pixels += 1
    return pixels


def _put_image(image: _CheckedFile | np.ndarray, folder: Path, names: _UniqueNames, uri: str) -> str:
    """Write the checked file's bytes, or the pixels as PNG, into ``folder``; returns the file name used."""
    folder.mkdir(exist_ok=True)
    if isinstance(image, _CheckedFile):
        name = names.claim(image.name.stem, image.name.suffix)
        (folder / name).write_bytes(image.data)
        os.utime(folder / name, ns=image.times_ns)
        return name
    # A uri naming an image file keeps that file's name; "fashion-mnist:train/12" becomes one.
    stem = Path(uri).stem if Path(uri).suffix.lower() in IMAGE_SUFFIXES else uri
    name = names.claim(stem, ".png")
    _save_png(image, folder / name)
    return name


def _save_png(pixels: np.ndarray, path: Path | io.BytesIO) -> None:
    from PIL import Image  # imported here: only image exports need it

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")


# ------------------------------------------------------------------------ names


class _UniqueNames:
    """Safe, distinct names within one folder, also on case-insensitive file systems."""

    def __init__(self, reserved: Sequence[str] = ()) -> None:
        self._taken = {name.casefold() for name in reserved}

    def claim(self, wanted: str, suffix: str = "") -> str:
        base = _safe_name(wanted)
        name, copy = base + suffix, 2
        while name.casefold() in self._taken:
            name, copy = f"{base}-{copy}{suffix}", copy + 1
        self._taken.add(name.casefold())
        return name


def _safe_name(name: str) -> str:
    """A file or folder name that is valid on Linux, macOS and Windows, and not hidden."""
    cleaned = _UNSAFE_CHARACTERS.sub("_", name)
    cleaned = cleaned.encode("utf-8")[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    cleaned = cleaned.strip().rstrip(". ")  # Windows drops trailing dots and spaces
    # A leading dot hides the folder, and data readers (metalabel's too) skip hidden ones.
    cleaned = re.sub(r"^\.+", lambda dots: "_" * len(dots.group()), cleaned)
    if not cleaned:
        return "_"
    if cleaned.split(".")[0].upper() in _WINDOWS_RESERVED:
        cleaned = f"_{cleaned}"
    return cleaned


# ---------------------------------------------------------------------- writers


def _write_parquet(job: _Job, folder: Path) -> _Written:
    pa, pq = _import_pyarrow()
    records = _parsed_timestamps(_tabular_records(job))
    fields = parquet_fields(pa) + [(column, _ARROW_TYPES[dtype](pa)) for column, dtype in _content_columns(job)]
    # the class order travels with the file, so label strings map to the same ClassLabel ids everywhere
    schema = pa.schema(fields, metadata={PARQUET_CLASSES_KEY: json.dumps(job.classes, ensure_ascii=False).encode()})
    pq.write_table(pa.Table.from_pylist(records, schema=schema), folder / LABELS_PARQUET)
    _write_classes(job, folder)
    return _Written(job.rows)


def parquet_fields(pa: Any) -> list[tuple[str, Any]]:
    """The parquet schema's provenance fields, from ``PROVENANCE`` (``pa`` is the pyarrow module)."""
    return [(column.name, _ARROW_TYPES[column.type](pa)) for column in PROVENANCE]


_ARROW_TYPES: dict[str, Callable[[Any], Any]] = {
    "string": lambda pa: pa.string(), "float": lambda pa: pa.float64(), "float32": lambda pa: pa.float32(),
    "int": lambda pa: pa.int64(), "bool": lambda pa: pa.bool_(),
    "timestamp": lambda pa: pa.timestamp("ms", tz="UTC"),
}


def _parsed_timestamps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real timestamps in place of ISO text, so parquet readers can filter and sort by time."""
    timestamps = [column.name for column in PROVENANCE if column.type == "timestamp"]
    for record in records:
        for name in timestamps:
            if record[name] is not None:
                record[name] = datetime.fromisoformat(record[name])
    return records


def _write_csv_format(job: _Job, folder: Path) -> _Written:
    records = _tabular_records(job)
    _write_csv(folder / LABELS_CSV, records, [*COLUMNS, *(column for column, _ in _content_columns(job))])
    _write_classes(job, folder)
    return _Written(job.rows)


def _content_columns(job: _Job) -> list[tuple[str, str]]:
    """(column, type) of the item itself in tabular exports: ``text``, or one column per table feature."""
    if job.modality == "text":
        return [("text", "string")]
    return [(column, "float32") for column in job.feature_columns.values()]


def _tabular_records(job: _Job) -> list[dict[str, Any]]:
    """The provenance columns of each row, and the item (text or features; empty outside the pool)."""
    return [row.columns() | _content_record(job, row) for row in job.rows]


def _content_record(job: _Job, row: _Row) -> dict[str, Any]:
    if job.modality == "text":
        return {"text": job.content.of(row.item)}
    if job.modality == "tabular":
        values = job.content.of(row.item)
        if values is None:
            return dict.fromkeys(job.feature_columns.values())
        return {column: float(value) for column, value in zip(job.feature_columns.values(), np.asarray(values))}
    return {}


def _feature_columns(modality: str, content: _PoolContent) -> dict[str, str]:
    """Each table feature's column: its own name, or ``feature_<name>`` where a provenance column has it."""
    if modality != "tabular":
        return {}
    names = content.feature_names()
    taken = {*COLUMNS, "file_name", "path"}
    columns: dict[str, str] = {}
    for name in names:
        column = name
        while column in taken:
            column = f"feature_{column}"
        taken.add(column)
        columns[name] = column
    return columns


def _write_classes(job: _Job, folder: Path) -> None:
    (folder / CLASSES_FILE).write_text("".join(f"{name}\n" for name in job.classes), encoding="utf-8")


def _write_imagefolder(job: _Job, folder: Path) -> _Written:
    class_folders = _UniqueNames(reserved=_IMAGEFOLDER_RESERVED)
    folder_of_class = {name: class_folders.claim(name) for name in job.classes}
    file_names = {class_folder: _UniqueNames() for class_folder in folder_of_class.values()}
    written, records = [], []
    for row in job.rows:
        image = _image_source(row, job)
        if image is None:
            job.skipped["no_content"] += 1
            continue
        # Folders appear only for classes with images: ImageFolder readers reject empty ones.
        class_folder = folder_of_class[row.label.class_name]
        name = _put_image(image, folder / class_folder, file_names[class_folder], row.item.uri)
        records.append({"path": f"{class_folder}/{name}", **row.columns()})
        written.append(row)
    _write_csv(folder / LABELS_CSV, records, ["path", *COLUMNS])
    # datasets reads metadata.csv (file_name first) and the card's features: the label a ClassLabel, the
    # provenance beside each image. Written as it is (no formula guard): open labels.csv in a spreadsheet.
    metadata = [{"file_name": record.pop("path"), **record} for record in records]
    with (folder / METADATA_CSV).open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["file_name", *_HF_ORDER])
        writer.writeheader()
        writer.writerows(metadata)
    _write_classes(job, folder)
    # datasets reads metadata.csv through pandas, whose int64 holds no missing value and which cannot parse
    # timestamps by dtype: whole numbers that may be missing (a seed label's round) are float64 there, and
    # times stay ISO text
    features: list[tuple[str, HfDtype]] = [("image", "image")]
    features += [(name, _CSV_METADATA_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
                 for name, dtype in _hf_provenance_features(job)]
    card = _dataset_card(job, written, features=features, splits={"train": written}, data_files=None)
    (folder / DATASET_CARD).write_text(card, encoding="utf-8")
    return _Written(written, {"class_folders": folder_of_class})


# ----------------------------------------------------------------- Hugging Face

HF_DATA = "data"
_CARD_FORMATS = ("imagefolder", "hf")
_IMAGE_FORMATS = ("imagefolder", "hf", "labelstudio")
"""Formats that write an image project's images (checked file bytes, or the pool's pixels)."""
_HF_ORDER = ("label", *(name for name in COLUMNS if name != "label"))
"""The label first, then the rest of the provenance: the column order of the hf and metadata.csv exports."""
_HF_DTYPES = {"string": "string", "float": "float64", "float32": "float32", "int": "int64", "bool": "bool",
              "timestamp": "timestamp[ms, tz=UTC]"}
_CSV_METADATA_DTYPES = {"int64": "float64", "timestamp[ms, tz=UTC]": "string"}
_TASK_CATEGORY = {"image": "image-classification", "text": "text-classification",
                  "tabular": "tabular-classification"}

HfDtype = str | dict[str, Any]
"""A feature's dtype as a dataset card writes it: ``"string"``, ``"image"``, or ``{"class_label": ...}``."""


def _hf_provenance_features(job: _Job) -> list[tuple[str, HfDtype]]:
    types = {column.name: column.type for column in PROVENANCE}
    label: HfDtype = {"class_label": {"names": {str(index): name for index, name in enumerate(job.classes)}}}
    return [("label", label), *((name, _HF_DTYPES[types[name]]) for name in _HF_ORDER[1:])]


def _hf_feature_dict(dtype: HfDtype) -> dict[str, Any]:
    """The same feature as ``datasets.Features.to_dict`` writes it (parquet schema metadata)."""
    if dtype == "image":
        return {"_type": "Image"}
    if isinstance(dtype, dict):
        return {"_type": "ClassLabel", "names": list(dtype["class_label"]["names"].values())}
    return {"_type": "Value", "dtype": dtype}


def _hf_arrow_type(dtype: HfDtype, pa: Any) -> Any:
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if isinstance(dtype, dict):
        return pa.int64()
    return {"string": pa.string(), "float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
            "bool": pa.bool_(), "timestamp[ms, tz=UTC]": pa.timestamp("ms", tz="UTC")}[dtype]


def _write_hf(job: _Job, folder: Path) -> _Written:
    """A folder ``datasets.load_dataset(folder)`` reads: parquet shards under ``data/`` and a dataset card."""
    pa, pq = _import_pyarrow()
    item: list[tuple[str, HfDtype]] = [("image", "image")] if job.modality == "image" else [
        (column, _HF_DTYPES[dtype]) for column, dtype in _content_columns(job)]
    features = [*item, *_hf_provenance_features(job)]
    huggingface = {"info": {"features": {name: _hf_feature_dict(dtype) for name, dtype in features}}}
    schema = pa.schema([(name, _hf_arrow_type(dtype, pa)) for name, dtype in features],
                       metadata={b"huggingface": json.dumps(huggingface, ensure_ascii=False).encode()})
    class_index = {name: index for index, name in enumerate(job.classes)}
    splits: dict[str, list[_Row]] = {"train": [], "test": []} if job.held_out_test else {"train": []}
    records: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    image_names = _UniqueNames()
    for row in job.rows:
        if job.modality == "image":
            image = _image_source(row, job)
            if image is None:
                job.skipped["no_content"] += 1
                continue
            content: dict[str, Any] = {"image": _image_bytes(image, image_names, row.item.uri)}
        else:
            content = _content_record(job, row)
            if all(value is None for value in content.values()):  # an item outside the pool (generated)
                job.skipped["no_content"] += 1
                continue
        split = "test" if job.held_out_test and _is_reference_answer(row) else "train"
        record = content | row.columns() | {"label": class_index[row.label.class_name]}
        records[split].append(record)
        splits[split].append(row)
    empty = [split for split, rows in records.items() if not rows]
    if empty:  # datasets cannot read a parquet shard without rows
        raise BadInputError(
            f"no labeled item to write in the {' and '.join(empty)} split ({len(job.rows)} passed the filters, "
            f"{job.skipped['no_content']} without content)", hint="loosen the filters (sources, min_confidence)",
        )
    (folder / HF_DATA).mkdir()
    for split, rows in records.items():
        table = pa.Table.from_pylist(_parsed_timestamps(rows), schema=schema)
        pq.write_table(table, folder / HF_DATA / f"{split}-00000-of-00001.parquet")
    _write_classes(job, folder)
    data_files = {split: f"{HF_DATA}/{split}-*.parquet" for split in splits}
    written = [row for rows in splits.values() for row in rows]
    card = _dataset_card(job, written, features=features, splits=splits, data_files=data_files)
    (folder / DATASET_CARD).write_text(card, encoding="utf-8")
    return _Written(written, {"splits": {split: len(rows) for split, rows in splits.items()}})


def _is_reference_answer(row: _Row) -> bool:
    """A person's answer to a reference question: a uniform random draw from the pool, so a fair test item."""
    return row.label.source == LabelSource.HUMAN and row.label.query_strategy == REFERENCE


def _image_bytes(image: _CheckedFile | np.ndarray, names: _UniqueNames, uri: str) -> dict[str, Any]:
    """``datasets.Image``'s storage: the file's own (checked) bytes, or a PNG of the pool's pixels."""
    if isinstance(image, _CheckedFile):
        return {"bytes": image.data, "path": names.claim(image.name.stem, image.name.suffix)}
    buffer = io.BytesIO()
    _save_png(image, buffer)
    stem = Path(uri).stem if Path(uri).suffix.lower() in IMAGE_SUFFIXES else uri
    return {"bytes": buffer.getvalue(), "path": names.claim(stem, ".png")}


def _write_labelstudio(job: _Job, folder: Path) -> _Written:
    kind = {"image": "image", "tabular": "table"}.get(job.modality, "text")
    links = job.local_files_root is not None
    image_names = _UniqueNames()
    tasks, written = [], []
    for row in job.rows:
        if row.item.id in job.awaiting_reference and not LabelSource(row.label.source).trusted:
            job.skipped["awaits_reference_answer"] += 1  # a reviewer would see the guess the answer must not see
            continue
        value: str | dict[str, float] | None
        if kind == "image":
            image = _image_source(row, job)
            value = None if image is None else _labelstudio_image(image, folder, job, image_names, row.item.uri)
        elif kind == "table":
            values = job.content.of(row.item)
            value = None if values is None else {  # under the file's own column names
                name: float(f"{number:.7g}") for name, number in zip(job.feature_columns, np.asarray(values))}
        else:
            text = job.content.of(row.item)
            value = None if text is None else str(text)
        if value is None:
            job.skipped["no_content"] += 1
            continue
        tasks.append(_labelstudio_task(row, kind, value, job.project))
        written.append(row)
    _write_json(folder / LABELSTUDIO_TASKS, tasks)
    write_config(folder, job.classes, kind=kind)
    return _Written(written, {"label_studio_setup": _labelstudio_setup(job, images=kind == "image" and links),
                              "label_studio_images": ("local files" if links else "embedded") if kind == "image"
                              else None})


def _labelstudio_image(image: _CheckedFile | np.ndarray, folder: Path, job: _Job, names: _UniqueNames,
                       uri: str) -> str:
    """A link Label Studio's local-files serving resolves (with ``local_files_root``), else a data URI."""
    if job.local_files_root is None:
        if isinstance(image, _CheckedFile):
            data, mime = image.data, mimetypes.guess_type(image.name.name)[0] or "image/png"
        else:
            buffer = io.BytesIO()
            _save_png(image, buffer)
            data, mime = buffer.getvalue(), "image/png"
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"
    name = _put_image(image, folder / LABELSTUDIO_IMAGES, names, uri)
    # the export lands at job.out, checked to lie under the document root
    path = (job.out / LABELSTUDIO_IMAGES / name).relative_to(job.local_files_root)
    return f"/data/local-files/?d={quote(path.as_posix())}"


def _labelstudio_task(row: _Row, kind: str, value: str | dict[str, float], project: str) -> dict[str, Any]:
    label = row.label
    by_person = LabelSource(label.source).trusted
    suggestions = [] if by_person else [
        Suggestion(label.class_name, label.model_hash or label.source, label.calibrated_confidence)]
    if row.disagreement is not None:
        # The contradicting label goes along as a prediction, so a reviewer sees both, and whose it is.
        disagreement = row.disagreement
        suggestions.append(Suggestion(disagreement.proposed_class, _proposer(disagreement),
                                      disagreement.calibrated_confidence))
    # every provenance column rides along in the task's data (Label Studio shows it beside the item), and the
    # label's identity, so a reviewed export can be imported back (LabelStudioQueue.import_annotations)
    review = ReviewIdentity(label.id, row.item.uri, row.item.content_hash, project)
    return choices_task(kind, value, data=row.columns(), review=review,
                        answer=label.class_name if by_person else None, suggestions=suggestions)


def _labelstudio_setup(job: _Job, *, images: bool) -> list[str]:
    """How to label the export in Label Studio and bring the review back."""
    steps = []
    if images:
        steps.append(f"start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
                     f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={job.local_files_root}")
    steps.append(f"create a project with the labeling config in {LABELSTUDIO_CONFIG}")
    if images:
        steps.append(f"add a Local Files source storage with the absolute path {job.out / LABELSTUDIO_IMAGES} "
                     "(do not sync it)")
    steps += [f"import {LABELSTUDIO_TASKS}",
              "review: submit a task to confirm its label, change the choice to correct it",
              "export the project in the 'JSON' format and run `metalabel import-answers PROJECT FILE`: "
              "confirmations and corrections become human labels"]
    return steps


_WRITERS = {
    "parquet": _write_parquet,
    "csv": _write_csv_format,
    "imagefolder": _write_imagefolder,
    "labelstudio": _write_labelstudio,
    "hf": _write_hf,
}


# ------------------------------------------------------------------ dataset card


@dataclass(frozen=True)
class _ProjectFacts:
    """What a dataset card says about how the set was built, read from the store before writing."""

    name: str
    pool: str | None
    rounds: int
    target_precision: float | None
    certified: str
    """The last certificate in one sentence (``certificate_summary``)."""
    certificate_round: int | None
    scorecard: list[tuple[str, str, str, str]]
    """The last round's scorecard as table rows (``scorecard_rows``); empty before any round."""
    answered: dict[str, int]
    """Questions a person answered, by why they were asked."""
    dismissed: int

    @classmethod
    def of(cls, store: ProjectStore) -> _ProjectFacts:
        from metalabel.evaluate.scorecard import certificate_summary, not_certified, scorecard_rows

        rounds = store.rounds()
        # the round that recorded a certificate last admitted the active labels, even if it ended early;
        # not one undone: its labels were taken back, and those it had replaced are the earlier round's again
        certified_rounds = [r for r in rounds if r.metrics and r.may_hold_active_labels]
        last = certified_rounds[-1] if certified_rounds else None
        target = None if last is None else last.config.get("target_precision")
        if last is None:
            sentence = "No round has run: every label is a person's (or a seed label); nothing needed certifying."
        elif recorded_before_certification(last.metrics or {}):
            sentence = f"Round {last.id} ran before certified acceptance: {not_certified(None, known=False)}."
        else:
            try:
                certificate = RoundCertificate.from_json(last.metrics, f"round {last.id}'s metrics")
            except StoreError as error:  # a damaged record: the card says so rather than the export failing
                sentence = f"Round {last.id}'s certificate could not be read ({error})."
            else:
                sentence = certificate_summary(certificate, target=target)
        scored = [r for r in rounds if r.metrics and "scorecard" in r.metrics
                  and not recorded_before_certification(r.metrics)]
        card_rows: list[tuple[str, str, str, str]] = []
        if scored:
            try:
                card_rows = scorecard_rows(Scorecard.from_json(scored[-1].metrics["scorecard"],  # type: ignore[index]
                                                               f"round {scored[-1].id}'s scorecard"))
            except StoreError as error:  # an older record: say so rather than fail the export
                card_rows = [("scorecard", "unreadable", "–", str(error))]
        return cls(
            name=store.name, pool=store.meta().get("pool"), rounds=len(rounds), target_precision=target,
            certified=sentence, certificate_round=None if last is None else last.id, scorecard=card_rows,
            answered=dict(Counter(question.strategy for question in store.answered_questions())),
            dismissed=len(store.dismissed_questions()),
        )


def _dataset_card(job: _Job, written: list[_Row], *, features: list[tuple[str, HfDtype]],
                  splits: dict[str, list[_Row]], data_files: dict[str, str] | None) -> str:
    """README.md: a Hugging Face dataset card (YAML front matter that ``datasets`` reads, then the story)."""
    facts = job.facts
    assert facts is not None, "export_project reads the facts for every format that writes a card"
    front = {
        "license": "unknown",  # the items' licence is the pool's, which metalabel cannot know
        "pretty_name": facts.name,
        "task_categories": [_TASK_CATEGORY[job.modality]] if job.modality in _TASK_CATEGORY else [],
        "tags": ["metalabel"],
    }
    # JSON is YAML: every value (class names with colons, quotes or emoji) stays exactly what it is
    lines = ["---", *(f"{key}: {_json(value)}" for key, value in front.items()), "configs:", "- config_name: default"]
    if data_files is not None:
        lines += ["  data_files:", *(f"  - {_json({'split': split, 'path': path})}"
                                     for split, path in data_files.items())]
    lines += ["  features:", *(f"  - {_json({'name': name, 'dtype': dtype})}" for name, dtype in features), "---", ""]
    active = [row for row in written if row.label.active]
    lines += [
        f"# {_md(facts.name)}",
        "",
        f"{len(written):,} labeled {job.modality} items in {len(job.classes)} classes, built with "
        f"[metalabel](https://pypi.org/project/metalabel/) {__version__} from the project `{_md(facts.name)}`"
        + (f" (pool `{_md(facts.pool)}`)" if facts.pool else "")
        + f" on {datetime.now(UTC).date().isoformat()}. Each row keeps its label's provenance: where the label "
        "came from (`source`), the model's calibrated confidence, the round that wrote it, and who answered.",
        "",
        "## Certified precision",
        "",
        facts.certified,
        "",
        "The model labels here are the ones that round's certificate covers: a lower confidence bound on their "
        "precision from a uniform random reference sample that people labeled, holding with probability "
        "1 - delta. Labels a person gave carry no confidence.",
        "",
        "## Splits and classes",
        "",
    ]
    if "test" in splits:
        lines += ["`test` holds the people's answers to reference questions: uniform random draws from the "
                  "pool, so a fair sample of what the model labeled. `train` holds everything else.", ""]
    sources = [source for source in SOURCES if any(row.label.source == source for row in active)]
    lines += ["| id | class | " + " | ".join(splits) + " | " + " | ".join(sources) + " |",
              "|---|---|" + "---|" * (len(splits) + len(sources))]
    for index, name in enumerate(job.classes):
        in_split = [sum(row.label.class_name == name for row in rows) for rows in splits.values()]
        by_source = [sum(row.label.class_name == name and row.label.source == source for row in active)
                     for source in sources]
        lines.append(f"| {index} | {_md(name)} | " + " | ".join(map(str, in_split + by_source)) + " |")
    by_source_total = Counter(row.label.source for row in active)
    counts = ", ".join(f"{source} {by_source_total[source]:,}" for source in sources)
    lines += ["", f"Labels by source: {counts}." if counts else "No labels yet.", ""]
    if facts.scorecard:
        lines += ["## Scorecard", "", "| section | metric | value | detail |", "|---|---|---|---|"]
        lines += [f"| {_md(a)} | {_md(b)} | {_md(c)} | {_md(d)} |" for a, b, c, d in facts.scorecard]
        lines.append("")
    answered = ", ".join(f"{count:,} {why}" for why, count in sorted(facts.answered.items())) or "none"
    lines += [
        "## How it was built",
        "",
        f"- metalabel {__version__}; {facts.rounds} labeling round(s)"
        + (f", target precision {facts.target_precision:g}" if facts.target_precision is not None else "")
        + (f", last certificate from round {facts.certificate_round}" if facts.certificate_round else ""),
        f"- seed labels brought by the user are `imported`; questions people answered, by why they were asked: "
        f"{answered}; {facts.dismissed:,} dismissed as \"can't tell\"",
        "- model labels come from a meta-learned few-shot model adapted to the people's labels, calibrated, and "
        "accepted only where the certificate above covers them; every round re-judges them and retracts what no "
        "longer passes (retracted labels are not in this set)",
        f"- `{CLASSES_FILE}` lists the classes in label-id order (`datasets.ClassLabel(names_file=...)` reads it); "
        f"`{SIDECAR_FILENAME}` holds the export's filters and counts",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        *(f"| `{name}` | {_md(_COLUMN_DOCS.get(name, _FEATURE_DOC))} |" for name, _ in features),
        "",
        "## Licence",
        "",
        "The labels and their provenance were made with metalabel. The items themselves keep the licence of the "
        f"pool they came from{f' (`{_md(facts.pool)}`)' if facts.pool else ''}, which metalabel does not know: "
        "set `license:` above before sharing this set.",
        "",
    ]
    return "\n".join(lines)


_COLUMN_DOCS = {column.name: column.doc for column in PROVENANCE} | {
    "label": "the class, as a ClassLabel id (names in class order)", "image": "the image (its file's bytes)",
    "text": "the item's text"}


_FEATURE_DOC = "a feature column of the pool's table"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _md(text: str) -> str:
    """Text safe inside a markdown table cell or heading (no column breaks, no new lines)."""
    return re.sub(r"\s+", " ", text).replace("|", "\\|")


def _sidecar(
    store: ProjectStore,
    job: _Job,
    written: _Written,
    *,
    format: ExportFormat,
    min_confidence: float | None,
    sources: tuple[str, ...] | None,
    include_retracted: bool,
) -> dict[str, Any]:
    active = [row for row in written.rows if row.label.active]
    by_source = dict.fromkeys(SOURCES, 0) | Counter(row.label.source for row in active)
    by_class = dict.fromkeys(job.classes, 0) | Counter(row.label.class_name for row in active)
    return {
        "project": store.name,
        "project_folder": str(store.folder.resolve()),
        "format": format,
        "modality": job.modality,
        "classes": job.classes,
        "filters": {"sources": None if sources is None else list(sources), "min_confidence": min_confidence,
                    "include_retracted": include_retracted},
        "rows": len(written.rows),
        "retracted_rows": len(written.rows) - len(active),
        "columns": {column.name: column.doc for column in PROVENANCE},
        "skipped": dict(job.skipped),
        "counts_by_source": by_source,
        "counts_by_class": by_class,
        "open_disagreements": sum(row.disagreement is not None for row in active),
        "pool_checked": job.content.checked,
        # metadata.csv (imagefolder) is for datasets and written as it is; labels.csv is the guarded one
        "csv_formula_guard": format in ("csv", "imagefolder"),
        "feature_columns": job.feature_columns,
        **({"images_from_pool_pixels": job.images_from_pixels} if job.modality == "image" and format in _IMAGE_FORMATS
           else {}),
        "metalabel_version": __version__,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **written.sidecar,
    }


# A cell starting with one of these is run as a formula by Excel, LibreOffice and Google
# Sheets (OWASP "CSV injection"): "=HYPERLINK(...)", "+cmd|' /C calc'!A0", "@SUM(...)".
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: Any) -> Any:
    """``value`` made safe to open in a spreadsheet: text that starts like a formula gets a ``'`` in front.

    The quote tells spreadsheets "this is text"; numbers are left alone (a negative number is
    no formula). Readers of the CSV outside a spreadsheet see the quote: strip a leading
    ``'`` from text cells that start with ``'=``, ``'+``, ``'-``, ``'@``, a quote and a tab,
    or a quote and a carriage return to get the original.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _write_csv(path: Path, records: list[dict[str, Any]], columns: list[str]) -> None:
    """Write ``records`` as CSV, every text cell passed through ``neutralise_formula``."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)  # writes None as an empty cell
        writer.writeheader()
        writer.writerows({key: neutralise_formula(value) for key, value in record.items()} for record in records)


def _write_json(path: Path, value: Any, *, indent: int | None = None) -> None:
    with path.open("w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, indent=indent, allow_nan=False)
        file.write("\n")


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise MissingDependencyError(
            "writing Parquet needs pyarrow: pip install 'metalabel[tabular]' (or export with format 'csv')"
        ) from error
    return pyarrow, pyarrow.parquet


# ------------------------------------------------------------- the target folder


def _check_target(out: Path, store: ProjectStore, *, overwrite: bool) -> None:
    if out.suffix.lower() in _FILE_SUFFIXES:
        raise BadInputError(
            "an export is a folder (the data plus export.json), not a single file",
            path=out,
            hint=f"pass a folder path, e.g. {out.with_suffix('')}",
        )
    target, project = out.resolve(), store.folder.resolve()
    if project == target or project.is_relative_to(target):
        raise BadInputError(
            "exporting here would replace the project itself",
            path=out,
            hint="export into a folder of its own, e.g. PROJECT/exports/v1",
        )
    exports = project / "exports"
    # Inside the project only PROJECT/exports/<name> is an export's place: anywhere else an
    # export (or --overwrite) could replace project.db, checkpoints or generated data.
    if target.is_relative_to(project) and not (target.is_relative_to(exports) and target != exports):
        raise BadInputError(
            "is inside the project folder, where an export could replace the project's own files",
            path=out,
            hint=f"export into {exports}/<name> (the default) or a folder outside the project",
        )
    if not (out.exists() or out.is_symlink()) or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise BadInputError(
            "already exists and is not an empty folder",
            path=out,
            hint="choose a new folder, or pass overwrite=True to replace it",
        )
    _refuse_to_delete_project_data(out, store)


def _refuse_to_delete_project_data(out: Path, store: ProjectStore) -> None:
    """Replacing ``out`` must not delete the pool's files (the very images an export copies)."""
    target = out.resolve()
    spec = json.loads(store.meta().get(POOL_SPEC_KEY) or "{}")
    paths = itertools.chain((Path(item.uri) for item in store.each_item()),
                            [Path(spec["path"])] if "path" in spec else [])
    for path in paths:
        # A uri that is no path ("fashion-mnist:train/3") is relative and does not exist: skipped.
        if (path.is_absolute() or path.exists()) and path.resolve().is_relative_to(target):
            raise BadInputError(
                f"replacing this folder would delete {path}, which the project's items come from",
                path=out,
                hint="export into another folder",
            )
