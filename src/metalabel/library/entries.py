"""One finished project as the library keeps it: labeled items as embeddings, with provenance, in one file.

A library entry is a ``.npz`` (no pickle) holding, for every labeled item the project
kept (a person's answer, a seed label, or a model label a certificate admitted):

    embeddings  float32 [n, d]  the item in the encoder space the project was labeled in
    labels      int64 [n]       index into the entry's class names
    sources     str [n]         human, imported or model (metalabel.store.LabelSource)
    rounds      int64 [n]       the round that wrote the label, -1 for none (seed labels)
    confidence  float64 [n]     a model label's calibrated confidence, NaN for a person's
    uris, hashes str [n]        where the item came from and its content hash
    content     [n, ...]        the items themselves, only when added ``with_content``
    manifest    str             JSON: name, project, modality, encoder, classes, counts, version, and
                                what each query strategy the project's runs used bought, and
                                when its labels were first certified

Pool content stays out unless asked: embeddings and labels are what meta-training needs,
and a shared library should not carry a team's raw data by accident.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from metalabel._version import __version__
from metalabel.errors import BadInputError, EmptyClassError
from metalabel.library.runs import CertificationRecord, StrategyRecord
from metalabel.store import LabelSource

ENTRY_FORMAT = 1
KEPT_SOURCES = (LabelSource.HUMAN, LabelSource.IMPORTED, LabelSource.MODEL)
"""Generated and augmented labels belong to synthetic rows, not pool items: they stay in the project."""
TABLE_ENCODER = "columns"
"""The "encoder" of table rows: their standardized columns (what the loop reads for tabular pools)."""
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class EncoderSpace:
    """The space an entry's embeddings live in; entries are comparable only within one space."""

    name: str
    dim: int
    version: str

    def __str__(self) -> str:
        return f"{self.name} ({self.dim}-d, {self.version})"


@dataclass(frozen=True)
class EntryManifest:
    """What an entry says of itself (stored as JSON inside its file)."""

    name: str
    project: str
    """The project's name and the folder it was added from, for provenance."""
    project_folder: str
    modality: str
    encoder: EncoderSpace
    class_names: tuple[str, ...]
    label_space: str | None
    """Entries naming the same label space share classes by name and may be mixed in an episode."""
    sources: dict[str, int]
    items: int
    with_content: bool
    metalabel_version: str
    added_at: str
    format: int = ENTRY_FORMAT
    strategies: tuple[StrategyRecord, ...] = ()
    """What each query strategy the project's runs used bought (``metalabel.library.runs``)."""
    certification: CertificationRecord | None = None
    """The project's first certified round (its threshold and the reference answers it took), None if none."""

    @property
    def group(self) -> str:
        """The source of tasks this entry belongs to: its label space, or the project alone."""
        return f"space:{self.label_space}" if self.label_space else f"project:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "class_names": list(self.class_names),
                "strategies": [asdict(record) for record in self.strategies],
                "certification": None if self.certification is None else asdict(self.certification)}

    @classmethod
    def from_json(cls, data: object, *, where: str | Path) -> EntryManifest:
        try:
            assert isinstance(data, dict)
            if int(data["format"]) > ENTRY_FORMAT:
                raise BadInputError(f"library entry format {data['format']} is newer than this metalabel reads",
                                    path=where, hint="upgrade metalabel")
            encoder = EncoderSpace(str(data["encoder"]["name"]), int(data["encoder"]["dim"]),
                                   str(data["encoder"]["version"]))
            return cls(name=str(data["name"]), project=str(data["project"]),
                       project_folder=str(data["project_folder"]), modality=str(data["modality"]),
                       encoder=encoder, class_names=tuple(str(c) for c in data["class_names"]),
                       label_space=None if data["label_space"] is None else str(data["label_space"]),
                       sources={str(k): int(v) for k, v in data["sources"].items()}, items=int(data["items"]),
                       with_content=bool(data["with_content"]), metalabel_version=str(data["metalabel_version"]),
                       added_at=str(data["added_at"]), format=int(data["format"]),
                       # entries added before strategies were recorded hold none
                       strategies=tuple(StrategyRecord(str(r["strategy"]), int(r["rounds"]), int(r["answers"]),
                                                       float(r["coverage_gain"]))
                                        for r in data.get("strategies", [])),
                       certification=_certification(data.get("certification")))
        except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise BadInputError(f"not a metalabel library entry ({type(error).__name__}: {error})", path=where,
                                hint="use a file written by `metalabel library add` or `library export`") from error


@dataclass(frozen=True, eq=False)
class LibraryEntry:
    """A finished project's labeled items in its encoder space, with each label's provenance."""

    manifest: EntryManifest
    embeddings: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    rounds: np.ndarray
    confidence: np.ndarray
    uris: np.ndarray
    hashes: np.ndarray
    content: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "manifest": np.array(json.dumps(self.manifest.to_json())), "embeddings": self.embeddings,
            "labels": self.labels, "sources": self.sources, "rounds": self.rounds, "confidence": self.confidence,
            "uris": self.uris, "hashes": self.hashes}
        if self.content is not None:
            arrays["content"] = self.content
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str | Path) -> LibraryEntry:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                manifest = EntryManifest.from_json(json.loads(str(arrays["manifest"])), where=where)
                content = arrays["content"] if "content" in arrays.files else None
                entry = cls(manifest, arrays["embeddings"], arrays["labels"], arrays["sources"], arrays["rounds"],
                            arrays["confidence"], arrays["uris"], arrays["hashes"], content)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise BadInputError(f"not a readable library entry ({type(error).__name__}: {error})", path=where,
                                hint="use a file written by `metalabel library add` or `library export`") from error
        entry.check(where=where)
        return entry

    def check(self, *, where: str | Path) -> None:
        """Shapes agree with each other and with the manifest; labels index its classes."""
        n = len(self.labels)
        problem = None
        if self.embeddings.ndim != 2 or self.embeddings.shape != (n, self.manifest.encoder.dim):
            problem = f"embeddings of shape {self.embeddings.shape}, expected ({n}, {self.manifest.encoder.dim})"
        elif any(len(a) != n for a in (self.sources, self.rounds, self.confidence, self.uris, self.hashes)):
            problem = "provenance columns of different lengths"
        elif n != self.manifest.items or n == 0:
            problem = f"{n} items, but its manifest says {self.manifest.items}"
        elif self.labels.min() < 0 or self.labels.max() >= len(self.manifest.class_names):
            problem = "labels outside its class list"
        elif self.content is not None and len(self.content) != n:
            problem = "content rows that do not match its items"
        if problem is not None:
            raise BadInputError(f"library entry {self.name!r} is damaged: {problem}", path=where,
                                hint="add the project again, or import a fresh export")


def _certification(data: Any) -> CertificationRecord | None:
    if data is None:  # never certified, or added before certifications were kept
        return None
    return CertificationRecord(float(data["target_precision"]), float(data["threshold"]),
                               float(data["certified_precision"]), int(data["reference_answers"]),
                               float(data["coverage"]))


def entry_name(name: str) -> str:
    """``name`` if it can name an entry's file, else a BadInputError saying what can."""
    if not _SAFE_NAME.fullmatch(name):
        raise BadInputError(f"{name!r} cannot name a library entry",
                            hint="use letters, digits, '.', '_' and '-' (starting with a letter or digit), "
                                 "e.g. --name tickets-2024")
    return name


def default_entry_name(project_name: str) -> str:
    """A project's name made fit for a file name (``Support tickets`` -> ``Support-tickets``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-._")
    return slug[:100] or "project"


def make_entry(*, name: str, project: str, project_folder: str | Path, modality: str, encoder: EncoderSpace,
               class_names: list[str], label_space: str | None, embeddings: np.ndarray, labels: list[Any],
               uris: list[str], hashes: list[str], content: np.ndarray | None,
               strategies: tuple[StrategyRecord, ...] = (),
               certification: CertificationRecord | None = None) -> LibraryEntry:
    """An entry from a project's active labels (``metalabel.store.Label`` rows) and their items' embeddings.

    ``embeddings``, ``uris``, ``hashes`` and ``content`` are aligned with ``labels``.
    Raises ``EmptyClassError`` when the project holds no label the library keeps.
    """
    if not labels:
        raise EmptyClassError(f"project {project!r} has no human, seed or accepted model labels to keep",
                              path=project_folder,
                              hint="label it first (`metalabel run`), then add it to the library")
    class_index = {c: i for i, c in enumerate(class_names)}
    sources = [str(label.source) for label in labels]
    manifest = EntryManifest(
        name=entry_name(name), project=project, project_folder=str(Path(project_folder).resolve()),
        modality=modality, encoder=encoder, class_names=tuple(class_names), label_space=label_space,
        sources=dict(sorted(Counter(sources).items())), items=len(labels), with_content=content is not None,
        metalabel_version=__version__, added_at=datetime.now(UTC).isoformat(timespec="seconds"),
        strategies=strategies, certification=certification)
    confidence = [math.nan if label.calibrated_confidence is None else label.calibrated_confidence
                  for label in labels]
    return LibraryEntry(
        manifest, np.ascontiguousarray(embeddings, dtype=np.float32),
        np.array([class_index[label.class_name] for label in labels], dtype=np.int64), np.array(sources),
        np.array([-1 if label.round_id is None else label.round_id for label in labels], dtype=np.int64),
        np.array(confidence, dtype=np.float64), np.array(uris), np.array(hashes), content)
