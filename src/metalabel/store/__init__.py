"""The project store: one SQLite file per labeling project, every label with its provenance."""

from metalabel.store.hashing import content_hash, path_sha256
from metalabel.store.records import (
    CERTIFICATE_METRIC,
    UNDONE_METRIC,
    AnswerTime,
    Artifact,
    Disagreement,
    Item,
    ItemRecord,
    Label,
    LabelSource,
    LabelWrite,
    Outcome,
    People,
    Question,
    Round,
    SyntheticItem,
    SyntheticRecord,
    UndoneRound,
)
from metalabel.store.schema import MODALITIES, SOURCES
from metalabel.store.store import DB_FILENAME, TRUST, ProjectStore

__all__ = [
    "CERTIFICATE_METRIC",
    "AnswerTime",
    "Artifact",
    "DB_FILENAME",
    "Disagreement",
    "Item",
    "ItemRecord",
    "Label",
    "LabelSource",
    "LabelWrite",
    "MODALITIES",
    "Outcome",
    "People",
    "ProjectStore",
    "Question",
    "Round",
    "SOURCES",
    "SyntheticItem",
    "SyntheticRecord",
    "UNDONE_METRIC",
    "UndoneRound",
    "TRUST",
    "content_hash",
    "path_sha256",
]
