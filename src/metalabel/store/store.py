"""The project store: ``project.db``, one SQLite file that keeps every decision of a project.

Each write method is one transaction: when it returns, the decision is on disk (see
``schema.CONNECTION_PRAGMAS`` for why that survives a crash). ``batch()`` groups many
writes into one transaction for bulk work. All SQL lives in this package.

Trust decides which label an item shows. A label from a source at least as trusted as
the item's active label supersedes it (the old row stays, pointing at the new one); a
label from a less trusted source never replaces it: if it disagrees it is recorded in
``disagreements``, if it agrees nothing is written. No answer a person gives is lost: a changed
answer (``correct``) supersedes the earlier one, which stays in the history with who gave it.
"""

from __future__ import annotations

import json
import math
import operator
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from metalabel._version import __version__
from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
    UnknownLabelError,
)
from metalabel.store import schema
from metalabel.store.hashing import path_sha256
from metalabel.store.records import (
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

DB_FILENAME = "project.db"
_UNDONE_LABEL_IDS = "undone_label_ids_up_to"
"""Meta key: the highest id of a label ``undo_round`` deleted; a new label's id is above it."""

TRUST = {source.value: source.trust for source in LabelSource}
"""Higher wins (``LabelSource.trust``). Human and imported (seed) labels are never replaced by a model."""

_ROWS_A_BLOCK = 1024
"""Rows ``each_item`` reads at a time."""

_LABEL_SELECT = """
    SELECT labels.id, labels.item_id, items.uri, classes.name AS class_name, labels.source,
           labels.raw_confidence, labels.calibrated_confidence, labels.threshold, labels.round_id,
           labels.model_hash, labels.query_strategy, labels.question_id, labels.created_at,
           labels.superseded_by, labels.certified_precision, labels.retracted_at, labels.retracted_round,
           labels.retraction_reason, labels.oracle
    FROM labels JOIN items ON items.id = labels.item_id JOIN classes ON classes.id = labels.class_id
"""

_QUESTION_SELECT = """
    SELECT questions.id, questions.item_id, items.uri, questions.round_id, questions.strategy,
           questions.score, questions.asked_at, questions.answered_at, classes.name AS answer,
           questions.oracle, questions.reference_region
    FROM questions JOIN items ON items.id = questions.item_id
    LEFT JOIN classes ON classes.id = questions.answer_class_id
"""

_DISAGREEMENT_SELECT = """
    SELECT disagreements.id, disagreements.item_id, items.uri, disagreements.kept_label_id,
           kept_class.name AS kept_class, kept.source AS kept_source,
           proposed_class.name AS proposed_class, disagreements.source,
           disagreements.raw_confidence, disagreements.calibrated_confidence, disagreements.threshold,
           disagreements.round_id, disagreements.model_hash, disagreements.query_strategy,
           disagreements.created_at, disagreements.resolved_by_label_id, disagreements.oracle
    FROM disagreements
    JOIN items ON items.id = disagreements.item_id
    JOIN labels AS kept ON kept.id = disagreements.kept_label_id
    JOIN classes AS kept_class ON kept_class.id = kept.class_id
    JOIN classes AS proposed_class ON proposed_class.id = disagreements.class_id
"""


class ProjectStore:
    """A labeling project's database. Open with ``create`` or ``open``; use as a context manager."""

    def __init__(self, connection: sqlite3.Connection, folder: Path) -> None:
        """Internal: use ``ProjectStore.create`` or ``ProjectStore.open``."""
        self._connection = connection
        self.folder = folder
        self._batch_depth = 0
        self._reading = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, folder: str | Path, *, name: str) -> ProjectStore:
        """A new, empty project database in ``folder`` (made if missing)."""
        folder = Path(folder)
        db_path = folder / DB_FILENAME
        if not isinstance(name, str) or not name.strip():
            raise BadInputError("a project needs a non-empty name", path=folder)
        if db_path.exists():
            raise StoreError(f"{folder} already holds a metalabel project; open it with ProjectStore.open")
        folder.mkdir(parents=True, exist_ok=True)
        store = cls(_connect(db_path, create=True), folder)
        try:
            store._migrate()
            with store.batch():
                store._connection.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("name", name), ("metalabel_version", __version__)],
                )
                store._connection.execute(f"INSERT INTO meta (key, value) VALUES ('created_at', {schema.NOW})")
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, folder: str | Path) -> ProjectStore:
        """The project database in ``folder``, migrated to this metalabel's schema."""
        folder = Path(folder)
        db_path = folder / DB_FILENAME
        if not db_path.is_file():
            raise DataNotFoundError(
                f"no metalabel project here ({DB_FILENAME} is missing)",
                path=folder,
                hint=f"create one with `metalabel init {folder} --pool ...` (metalabel.Project.create)",
            )
        # Never create or migrate over a file that is not a metalabel store (a 0-byte file,
        # garbage, someone else's database): look at it before SQLite writes anything to it.
        _check_is_sqlite_file(db_path)
        store = cls(_connect(db_path, create=False), folder)
        try:
            store._migrate(new=False)
            schema.check_tables(store._connection, db_path=db_path)
        except sqlite3.Error as exc:
            store.close()
            raise _store_error(exc, db_path) from exc
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, *, new: bool = True) -> None:
        try:
            schema.migrate(self._connection, db_path=self.path, new=new)
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc

    @property
    def path(self) -> Path:
        return self.folder / DB_FILENAME

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProjectStore({str(self.folder)!r})"

    # ------------------------------------------------------------- transactions

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside is one transaction: all of it is committed, or none of it.

        Outside a batch each write is its own transaction. Batches nest as savepoints,
        so a failed inner batch undoes only its own writes if the caller catches the error.
        """
        outermost = self._batch_depth == 0
        savepoint = f"batch_{self._batch_depth}"
        if self._reading:
            raise StoreError("the project is being read as of one moment (ProjectStore.reading); write outside it")
        if outermost:
            self._begin()
        else:
            self._connection.execute(f"SAVEPOINT {savepoint}")
        self._batch_depth += 1
        try:
            yield
            try:
                self._connection.execute("COMMIT" if outermost else f"RELEASE {savepoint}")
            except sqlite3.Error as exc:  # disk full, an I/O error: said in words (rolled back below)
                raise _store_error(exc, self.path) from exc
        except BaseException:
            # SQLite may have rolled the whole transaction back itself (disk full, I/O error).
            if self._connection.in_transaction:
                if outermost:
                    self._connection.execute("ROLLBACK")
                else:
                    self._connection.execute(f"ROLLBACK TO {savepoint}")
                    self._connection.execute(f"RELEASE {savepoint}")
            raise
        finally:
            self._batch_depth -= 1

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Every read inside sees the project as of one moment, whatever other processes commit meanwhile.

        For a reader that reads several tables while a run or ``metalabel serve`` writes (an export): a
        label read in one query and who gave it in another must come from the same commit. Takes no
        lock (WAL: writers go on); nothing may be written inside.
        """
        if self._connection.in_transaction:  # inside a batch: already one moment
            yield
            return
        self._connection.execute("BEGIN")  # deferred: the first read fixes the snapshot
        self._reading = True
        try:
            yield
        finally:
            self._reading = False
            if self._connection.in_transaction:
                self._connection.execute("COMMIT")

    def _begin(self) -> None:
        # IMMEDIATE takes the write lock before the first read, so no other process can
        # change an item's active label between our read and our write.
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(exc, self.path) from exc

    # -------------------------------------------------------------------- meta

    def meta(self) -> dict[str, str]:
        """Project facts: name, created_at, metalabel_version, and whatever ``set_meta`` wrote."""
        return dict(self._connection.execute("SELECT key, value FROM meta ORDER BY key").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        with self.batch():
            self._connection.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, str(value)),
            )

    @property
    def name(self) -> str:
        return self.meta().get("name", self.folder.name)

    # ------------------------------------------------------------------- items

    def add_items(self, records: Iterable[ItemRecord]) -> list[int]:
        """Add items in one transaction; returns their ids in order. A uri already present is an error."""
        ids = []
        with self.batch():
            for position, record in enumerate(records):
                if not (isinstance(record.uri, str) and record.uri and isinstance(record.content_hash, str)):
                    raise BadInputError(f"item record {position} needs a uri and a content hash, got {record!r}")
                if record.modality not in schema.MODALITIES:
                    raise BadInputError(
                        f"item {record.uri!r} has modality {record.modality!r}",
                        hint=f"use one of {', '.join(schema.MODALITIES)}",
                    )
                try:
                    cursor = self._connection.execute(
                        "INSERT INTO items (uri, content_hash, split, modality) VALUES (?, ?, ?, ?)",
                        (record.uri, record.content_hash, record.split, record.modality),
                    )
                except sqlite3.IntegrityError as exc:
                    raise BadInputError(
                        f"item {record.uri!r} (record {position}) is already in the project",
                        hint="each item needs its own uri",
                    ) from exc
                ids.append(_inserted_id(cursor))
        return ids

    def items(self) -> list[Item]:
        return list(self.each_item())

    def each_item(self) -> Iterator[Item]:
        """The items in id order, read a block of rows at a time: a pass over a large pool (its check, its index)
        holds one block of them, not an ``Item`` a row (about 0.5 KB each)."""
        cursor = self._connection.execute("SELECT * FROM items ORDER BY id")
        try:
            while rows := cursor.fetchmany(_ROWS_A_BLOCK):
                yield from (Item(**row) for row in rows)
        finally:
            cursor.close()

    def item_count(self) -> int:
        """How many items the project holds (without reading them: a check at every lock taken stays cheap)."""
        return int(self._connection.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def item(self, item_id: int | None = None, *, uri: str | None = None) -> Item | None:
        """The item with this id, or this uri (give one); None where the project has none."""
        if (item_id is None) == (uri is None):
            raise BadInputError("name an item by its id or by its uri, one of the two")
        if item_id is not None:
            row = self._connection.execute("SELECT * FROM items WHERE id = ?", (operator.index(item_id),)).fetchone()
        else:
            row = self._connection.execute("SELECT * FROM items WHERE uri = ?", (uri,)).fetchone()
        return None if row is None else Item(**row)

    def item_ids(self, uris: Iterable[str]) -> list[int]:
        """The id of each uri, in order; an unknown uri is an error naming it."""
        ids = []
        for uri in uris:
            row = self._connection.execute("SELECT id FROM items WHERE uri = ?", (uri,)).fetchone()
            if row is None:
                raise BadInputError(f"no item with uri {uri!r} in the project", hint="add it with add_items first")
            ids.append(row["id"])
        return ids

    # ----------------------------------------------------------------- classes

    def set_classes(self, names: Sequence[str]) -> None:
        """Make ``names`` the project's classes, in this order.

        New names are added; existing classes keep their id and may be reordered, but
        not removed (labels point at them).
        """
        names = list(names)
        seen = set()
        for name in names:
            check_class_name(name)
            if name in seen:
                raise BadInputError("class is listed twice", cls=name, hint="list each class once")
            seen.add(name)
        with self.batch():
            dropped = [name for name in self.classes() if name not in seen]
            if dropped:
                raise BadInputError(
                    "a class cannot be removed once it exists (labels may point at it)",
                    cls=dropped[0],
                    hint="pass every existing class, in the order you want",
                )
            self._connection.executemany(
                "INSERT INTO classes (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                [(name, position) for position, name in enumerate(names)],
            )

    def classes(self) -> list[str]:
        """Class names in their order (a model's output index ``i`` is ``classes()[i]``)."""
        rows = self._connection.execute("SELECT name FROM classes ORDER BY position, id").fetchall()
        return [row["name"] for row in rows]

    def _class_id(self, class_name: str) -> int:
        row = self._connection.execute("SELECT id FROM classes WHERE name = ?", (class_name,)).fetchone()
        if row is None:
            known = ", ".join(self.classes()) or "none yet"
            raise UnknownLabelError(
                "not one of the project's classes",
                cls=class_name,
                hint=f"known classes: {known}; add new ones with set_classes",
            )
        return row["id"]

    # ------------------------------------------------------------------ labels

    def add_label(
        self,
        item_id: int,
        class_name: str,
        *,
        source: str,
        raw_confidence: float | None = None,
        calibrated_confidence: float | None = None,
        threshold: float | None = None,
        round_id: int | None = None,
        model_hash: str | None = None,
        query_strategy: str | None = None,
        certified_precision: float | None = None,
    ) -> LabelWrite:
        """Label one item, in one transaction. See ``LabelWrite.outcome`` for what happened.

        A model label never replaces a human or imported one: a different class is recorded
        as a disagreement (and surfaced), the same class leaves everything unchanged.
        """
        if source not in schema.SOURCES:
            raise BadInputError(f"unknown label source {source!r}", hint=f"use one of {', '.join(schema.SOURCES)}")
        provenance = _provenance(
            raw_confidence=raw_confidence,
            calibrated_confidence=calibrated_confidence,
            threshold=threshold,
            round_id=round_id,
            model_hash=model_hash,
            query_strategy=query_strategy,
        )
        item_id = operator.index(item_id)  # numpy integers cannot be bound as SQL parameters
        with self.batch():
            self._require_item(item_id)
            if provenance["round_id"] is not None:
                self._require_round(provenance["round_id"])
            written = self._write_label(item_id, self._class_id(class_name), source, provenance)
            if certified_precision is not None and written.applied:
                self._connection.execute("UPDATE labels SET certified_precision = ? WHERE id = ?",
                                         (_probability(certified_precision, "certified_precision"),
                                          written.label_id))
            return written

    def _write_label(
        self, item_id: int, class_id: int, source: str, provenance: dict[str, Any], *, question_id: int | None = None,
        oracle: str | None = None,
    ) -> LabelWrite:
        """The trust rule. Runs inside the caller's transaction."""
        active = self._connection.execute(
            "SELECT id, class_id, source FROM labels WHERE item_id = ? AND superseded_by IS NULL", (item_id,)
        ).fetchone()
        if active is not None and TRUST[source] < TRUST[active["source"]]:
            if active["class_id"] == class_id:
                return LabelWrite(Outcome.UNCHANGED, label_id=active["id"])
            cursor = self._connection.execute(
                "INSERT INTO disagreements (item_id, kept_label_id, class_id, source, raw_confidence, "
                "calibrated_confidence, threshold, round_id, model_hash, query_strategy) "
                "VALUES (:item_id, :kept_label_id, :class_id, :source, :raw_confidence, "
                ":calibrated_confidence, :threshold, :round_id, :model_hash, :query_strategy)",
                {"item_id": item_id, "kept_label_id": active["id"], "class_id": class_id, "source": source}
                | provenance,
            )
            return LabelWrite(Outcome.DISAGREEMENT, label_id=active["id"], disagreement_id=cursor.lastrowid)

        # The new id is taken up front (safe: we hold the write lock) so the old label can point
        # at it before it exists; the unique "one active label per item" index forbids the other order.
        # never an id an undone round's label had: an export made before the undo names labels by id
        label_id = self._connection.execute(
            "SELECT max(coalesce(max(id), 0), coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0)) "
            "+ 1 FROM labels", (_UNDONE_LABEL_IDS,)).fetchone()[0]
        if active is not None:
            self._connection.execute("UPDATE labels SET superseded_by = ? WHERE id = ?", (label_id, active["id"]))
        self._connection.execute(
            "INSERT INTO labels (id, item_id, class_id, source, raw_confidence, calibrated_confidence, "
            "threshold, round_id, model_hash, query_strategy, question_id, oracle) "
            "VALUES (:id, :item_id, :class_id, :source, :raw_confidence, :calibrated_confidence, "
            ":threshold, :round_id, :model_hash, :query_strategy, :question_id, :oracle)",
            {
                "id": label_id,
                "item_id": item_id,
                "class_id": class_id,
                "source": source,
                "question_id": question_id,
                "oracle": oracle,
                **provenance,
            },
        )
        if source == "human":
            # A person looked at the item again: that settles what a model (or a seed) said against it, and another
            # person's answer that this one now agrees with. Another person's other class still contradicts the
            # label, so it stays open, about the new label: one person changing their answer is no verdict on it.
            self._connection.execute(
                "UPDATE disagreements SET resolved_by_label_id = ? WHERE item_id = ? AND resolved_by_label_id IS NULL "
                "AND (source != 'human' OR class_id = ?)",
                (label_id, item_id, class_id),
            )
            self._connection.execute(
                "UPDATE disagreements SET kept_label_id = ? WHERE item_id = ? AND resolved_by_label_id IS NULL",
                (label_id, item_id),
            )
        return LabelWrite(
            Outcome.WRITTEN, label_id=label_id, superseded_label_id=None if active is None else active["id"]
        )

    def active_labels(self) -> list[Label]:
        """Each labeled item's one active label, by item id."""
        rows = self._connection.execute(_LABEL_SELECT + f" WHERE {schema.ACTIVE_LABEL} ORDER BY labels.item_id")
        return [Label(**row) for row in rows]

    def active_label(self, item_id: int) -> Label | None:
        """The item's active label, or None where it has none."""
        row = self._connection.execute(_LABEL_SELECT + f" WHERE {schema.ACTIVE_LABEL} AND labels.item_id = ?",
                                       (operator.index(item_id),)).fetchone()
        return None if row is None else Label(**row)

    def retracted_labels(self) -> list[Label]:
        """Model labels a later round's certificate no longer covered, with when and why, by item id."""
        rows = self._connection.execute(
            _LABEL_SELECT + " WHERE labels.retracted_at IS NOT NULL ORDER BY labels.item_id, labels.id")
        return [Label(**row) for row in rows]

    def retract_label(self, label_id: int, *, round_id: int, reason: str) -> None:
        """Retract an active model label: it stays on record, with the round and the reason, and stops being active.

        Only model labels can be retracted; a person's word is never taken back by a model.
        """
        label_id, round_id = operator.index(label_id), operator.index(round_id)
        if not isinstance(reason, str) or not reason.strip():
            raise BadInputError("a retraction needs a reason", hint="say which rule the label no longer passes")
        with self.batch():
            self._require_round(round_id)
            row = self._connection.execute(
                f"SELECT source FROM labels WHERE id = ? AND {schema.ACTIVE_LABEL}", (label_id,)).fetchone()
            if row is None:
                raise StoreError(f"label {label_id} is not an active label, so it cannot be retracted")
            if row["source"] != "model":
                raise StoreError(f"label {label_id} is a {row['source']} label; only model labels can be retracted")
            self._connection.execute(
                f"UPDATE labels SET retracted_at = {schema.NOW}, retracted_round = ?, retraction_reason = ? "
                "WHERE id = ?", (round_id, reason, label_id))

    def label_history(self, item_id: int) -> list[Label]:
        """Every label the item ever had, oldest first."""
        rows = self._connection.execute(
            _LABEL_SELECT + " WHERE labels.item_id = ? ORDER BY labels.id", (operator.index(item_id),)
        )
        return [Label(**row) for row in rows]

    def undone_label(self, label_id: int) -> bool:
        """Whether ``label_id`` was a label of a round ``undo_round`` took back: it is gone, and no label takes its id
        again (an export made before the undo names it)."""
        label_id = operator.index(label_id)
        row = self._connection.execute(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ? AND CAST(value AS INTEGER) >= ? "
            "AND NOT EXISTS (SELECT 1 FROM labels WHERE id = ?)", (_UNDONE_LABEL_IDS, label_id, label_id)).fetchone()
        return row is not None

    def label_counts(self) -> dict[str, int]:
        """Active labels per source (every source is a key)."""
        counts = dict.fromkeys(schema.SOURCES, 0)
        rows = self._connection.execute(
            f"SELECT source, count(*) AS n FROM labels WHERE {schema.ACTIVE_LABEL} GROUP BY source"
        )
        counts.update({row["source"]: row["n"] for row in rows})
        return counts

    def disagreements(self, *, include_resolved: bool = False) -> list[Disagreement]:
        """Labels that contradicted a more trusted one; by default only those no human has settled."""
        where = "" if include_resolved else " WHERE disagreements.resolved_by_label_id IS NULL"
        rows = self._connection.execute(_DISAGREEMENT_SELECT + where + " ORDER BY disagreements.id")
        return [Disagreement(**row) for row in rows]

    # --------------------------------------------------------------- questions

    def ask(self, item_id: int, *, strategy: str, round_id: int | None = None, score: float | None = None,
            reference_region: int | None = None) -> int:
        """Record that a person is asked about an item; returns the question id.

        A person is never asked twice: an item with an open question, or with an active
        human label, is refused with ``StoreError`` and nothing is written.
        ``reference_region``: the region (``add_reference_region``) the item was drawn from;
        an item outside it is refused.
        """
        item_id = operator.index(item_id)
        if not isinstance(strategy, str) or not strategy:
            raise BadInputError(
                "a question needs the name of the strategy that chose it", hint="e.g. strategy='margin'"
            )
        with self.batch():
            self._require_item(item_id)
            if round_id is not None:
                self._require_round(operator.index(round_id))
            if reference_region is not None and not _holds(self.reference_region(reference_region), item_id):
                raise BadInputError(f"item {item_id} is not in reference region {reference_region}",
                                    hint="a question drawn from a region must be about one of its items")
            open_question = self._connection.execute(
                "SELECT questions.id, items.uri FROM questions JOIN items ON items.id = questions.item_id "
                "WHERE questions.item_id = ? AND questions.answered_at IS NULL",
                (item_id,),
            ).fetchone()
            if open_question is not None:
                raise StoreError(
                    f"item {item_id} ({open_question['uri']!r}) already waits on question {open_question['id']}; "
                    "it is not asked twice -> leave out items with an open question (open_questions())"
                )
            human = self._connection.execute(
                _LABEL_SELECT
                + " WHERE labels.item_id = ? AND labels.superseded_by IS NULL AND labels.source = 'human'",
                (item_id,),
            ).fetchone()
            if human is not None:
                raise StoreError(
                    f"item {item_id} ({human['uri']!r}) already has a person's answer ({human['class_name']!r}, "
                    f"label {human['id']}); a person is not asked twice -> leave out items with a human label"
                )
            cursor = self._connection.execute(
                "INSERT INTO questions (item_id, round_id, strategy, score, reference_region) VALUES (?, ?, ?, ?, ?)",
                (item_id, round_id, strategy, _finite(score, "score"), reference_region),
            )
            return _inserted_id(cursor)

    def add_reference_region(self, item_ids: Iterable[int], *, round_id: int, rule: str) -> int:
        """Keep the items a round's region-drawn reference questions come from; returns the region id."""
        ids = np.unique(np.fromiter((operator.index(i) for i in item_ids), dtype=np.int64))
        if not ids.size:
            raise BadInputError("a reference region needs at least one item")
        with self.batch():
            self._require_round(operator.index(round_id))
            known = self._connection.execute(
                "SELECT COUNT(*) FROM items WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids.tolist()),)
            ).fetchone()[0]
            if known != ids.size:
                raise BadInputError(f"{ids.size - known} of the reference region's item ids are not in the project")
            cursor = self._connection.execute(
                "INSERT INTO reference_regions (round_id, item_ids, rule) VALUES (?, ?, ?)",
                (round_id, ids.astype("<i8").tobytes(), rule),
            )
            return _inserted_id(cursor)

    def reference_region(self, region_id: int) -> np.ndarray:
        """The sorted item ids of a reference region."""
        row = self._connection.execute("SELECT item_ids FROM reference_regions WHERE id = ?",
                                       (operator.index(region_id),)).fetchone()
        if row is None:
            raise BadInputError(f"no reference region with id {region_id} in the project")
        return np.frombuffer(row["item_ids"], dtype="<i8").astype(np.int64)

    def answer(self, question_id: int, class_name: str, *, oracle: str) -> LabelWrite:
        """Write the human label and close the question, in one transaction.

        So an answer is never lost and never written twice: answering an answered question
        raises ``StoreError`` and writes nothing. A dismissed question ("can't tell") can
        still be answered later (a task skipped in one Label Studio export and labeled in
        a later one); another open question on the same item is then closed, so the item
        is not put to a person again. Where the item already has another person's answer,
        a different class is recorded as a disagreement between the two, never written over it.
        """
        _require_oracle(oracle)
        with self.batch():
            question = self._open_question(operator.index(question_id), allow_dismissed=True)
            class_id = self._class_id(class_name)
            provenance = _provenance(round_id=question["round_id"], query_strategy=question["strategy"])
            active = self._connection.execute(
                "SELECT id, class_id, source FROM labels WHERE item_id = ? AND superseded_by IS NULL",
                (question["item_id"],),
            ).fetchone()
            if active is not None and active["source"] == "human":
                write = self._human_disagreement(question, class_id, kept_label_id=active["id"],
                                                 kept_class_id=active["class_id"], oracle=oracle)
            else:
                write = self._write_label(
                    question["item_id"], class_id, "human", provenance, question_id=question["id"], oracle=oracle
                )
            self._close_question(question["id"], class_id=class_id, oracle=oracle)
            if question["answered_at"] is not None:  # a late answer: the item is not to be asked again
                for other in self._connection.execute(
                    "SELECT id FROM questions WHERE item_id = ? AND answered_at IS NULL AND id != ?",
                    (question["item_id"], question["id"]),
                ).fetchall():
                    self._close_question(other["id"], class_id=None,
                                         oracle=f"{oracle} (answered in question {question['id']})")
            return write

    def correct(self, question_id: int, class_name: str, *, oracle: str) -> LabelWrite:
        """A person changes an answer: undone on the labeling page and answered again, or a reviewed label
        corrected once more. One transaction.

        The new class becomes the item's label, a human label that supersedes the question's earlier
        answer; that answer stays in ``label_history`` with who gave it (``Label.oracle``) and when, so
        no answer a person gives is lost. The question shows its latest answer and who gave it. The same
        class again changes nothing. A question never answered with a class (open, or dismissed) takes
        this as its first answer (``answer``). Where the item's label is no longer this question's
        answer (another person answered since, or this answer was itself kept as a disagreement with
        another person's), the new class is recorded as a disagreement with that label, never written
        over it, and the question keeps the answer it had.
        """
        _require_oracle(oracle)
        with self.batch():
            question = self._connection.execute(
                "SELECT * FROM questions WHERE id = ?", (operator.index(question_id),)).fetchone()
            if question is None or question["answer_class_id"] is None:
                return self.answer(question_id, class_name, oracle=oracle)  # names an unknown id
            class_id = self._class_id(class_name)
            active = self._connection.execute(
                "SELECT id, class_id, source, question_id FROM labels WHERE item_id = ? AND superseded_by IS NULL",
                (question["item_id"],),
            ).fetchone()
            if active is None or active["question_id"] != question["id"]:
                kept = active or self._connection.execute(  # an item with no label left: keep the answer on record
                    "SELECT id, class_id FROM labels WHERE question_id = ? ORDER BY id DESC LIMIT 1",
                    (question["id"],)).fetchone()
                if kept is None:
                    raise StoreError(f"question {question_id} was answered but its item has no label to correct")
                return self._human_disagreement(question, class_id, kept_label_id=kept["id"],
                                                kept_class_id=kept["class_id"], oracle=oracle)
            if class_id == active["class_id"]:
                return LabelWrite(Outcome.UNCHANGED, label_id=active["id"])
            provenance = _provenance(round_id=question["round_id"], query_strategy=question["strategy"])
            write = self._write_label(question["item_id"], class_id, "human", provenance,
                                      question_id=question["id"], oracle=oracle)
            self._connection.execute("UPDATE questions SET answer_class_id = ?, oracle = ? WHERE id = ?",
                                     (class_id, oracle, question["id"]))
            return write

    def answers(self, question_id: int) -> list[Label]:
        """Every answer the question was given as a label, oldest first (the last is its answer now)."""
        rows = self._connection.execute(
            _LABEL_SELECT + " WHERE labels.question_id = ? ORDER BY labels.id", (operator.index(question_id),))
        return [Label(**row) for row in rows]

    def add_human_disagreement(self, question_id: int, class_name: str, *, oracle: str) -> int | None:
        """Record that another person (``oracle``) answered an answered question with another class.

        The answer already recorded stays the item's label; the other class becomes a
        disagreement (source ``human``) that ``disagreements()`` surfaces until a person
        settles it. Returns its id; ``None`` when the class is the one recorded or the
        same person's disagreement is already on record (an export imported twice).
        """
        _require_oracle(oracle)
        with self.batch():
            question = self._connection.execute(
                "SELECT * FROM questions WHERE id = ?", (operator.index(question_id),)
            ).fetchone()
            if question is None or question["answer_class_id"] is None:
                self.question(question_id)  # raises for an unknown id
                raise StoreError(
                    f"question {question_id} has no recorded answer to disagree with; answer it with answer()"
                )
            class_id = self._class_id(class_name)
            kept = self._connection.execute(  # the question's latest answer
                "SELECT id, class_id FROM labels WHERE question_id = ? ORDER BY id DESC LIMIT 1", (question["id"],)
            ).fetchone() or self._connection.execute(  # the answer agreed with, or disputed, an earlier one
                "SELECT id, class_id FROM labels WHERE item_id = ? AND superseded_by IS NULL", (question["item_id"],)
            ).fetchone()
            if kept is None:
                raise StoreError(f"question {question_id} was answered but its item has no label to keep")
            return self._human_disagreement(
                question, class_id, kept_label_id=kept["id"], kept_class_id=kept["class_id"], oracle=oracle
            ).disagreement_id

    def _human_disagreement(
        self, question: sqlite3.Row, class_id: int, *, kept_label_id: int, kept_class_id: int, oracle: str
    ) -> LabelWrite:
        """Two people's answers about one item: the kept one stays; another class is recorded with who gave it
        (``oracle``), once per person (an export imported twice adds nothing). A person holds one answer about
        an item: this one replaces their earlier disagreement, which is settled (they changed it, or agree now)."""
        # resolved_by_label_id is the kept label: the person's answer was not kept, so no label of theirs exists
        # to name, and the kept label is what stands; what they say now is the open disagreement below (none when
        # they agree), and the earlier one stays on record (disagreements(include_resolved=True)).
        names = sorted(self.people().names(oracle))  # theirs under any name they answered by
        among = f"oracle IN ({', '.join('?' * len(names))})"
        self._connection.execute(
            f"UPDATE disagreements SET resolved_by_label_id = ? WHERE item_id = ? AND source = 'human' AND {among} "
            "AND class_id != ? AND resolved_by_label_id IS NULL",
            (kept_label_id, question["item_id"], *names, class_id),
        )
        if class_id == kept_class_id:
            return LabelWrite(Outcome.UNCHANGED, label_id=kept_label_id)
        on_record = self._connection.execute(
            "SELECT id FROM disagreements WHERE item_id = ? AND kept_label_id = ? AND class_id = ? "
            # an unnamed one was recorded before schema 6 (who it was is unknown): it may be this person's
            f"AND source = 'human' AND ({among} OR oracle IS NULL) AND resolved_by_label_id IS NULL",
            (question["item_id"], kept_label_id, class_id, *names),
        ).fetchone()
        if on_record is not None:
            return LabelWrite(Outcome.UNCHANGED, label_id=kept_label_id)
        cursor = self._connection.execute(
            "INSERT INTO disagreements (item_id, kept_label_id, class_id, source, round_id, query_strategy, oracle) "
            "VALUES (?, ?, ?, 'human', ?, ?, ?)",
            (question["item_id"], kept_label_id, class_id, question["round_id"], question["strategy"], oracle),
        )
        return LabelWrite(Outcome.DISAGREEMENT, label_id=kept_label_id, disagreement_id=cursor.lastrowid)

    def same_person(self, name: str, other: str) -> None:
        """Record that ``name`` and ``other`` are one person's names (a Label Studio user's id and email), for
        good: their answers under either name are hers (``people``), while neither name is paired with another."""
        _require_oracle(name)
        _require_oracle(other)
        if name != other:
            with self.batch():
                self._connection.execute("INSERT OR IGNORE INTO person_names (name, same_as) VALUES (?, ?)",
                                         tuple(sorted((name, other))))

    def people(self) -> People:
        """Which answerers' names are one person's: each pair ``same_person`` recorded whose names have no other.

        A name paired with two (one Label Studio user id with two emails: two servers, or ids reused) may name
        either person, so it joins neither: taking one person's answer for another's would write over it.
        """
        pairs = self._connection.execute("SELECT name, same_as FROM person_names").fetchall()
        partners = Counter(name for pair in pairs for name in pair)
        groups: dict[str, frozenset[str]] = {}
        for name, other in pairs:
            if partners[name] == partners[other] == 1:
                groups[name] = groups[other] = frozenset((name, other))
        return People(groups)

    def dismiss(self, question_id: int, *, oracle: str) -> None:
        """Close a question the oracle could not answer, writing no label."""
        _require_oracle(oracle)
        with self.batch():
            question = self._open_question(operator.index(question_id))
            self._close_question(question["id"], class_id=None, oracle=oracle)

    def open_questions(self) -> list[Question]:
        """Questions still waiting for an answer, in the order they were asked."""
        rows = self._connection.execute(_QUESTION_SELECT + " WHERE questions.answered_at IS NULL ORDER BY questions.id")
        return [Question(**row) for row in rows]

    def open_question(self, item_id: int) -> Question | None:
        """The question about this item still waiting for an answer (an item has at most one), if any."""
        row = self._connection.execute(_QUESTION_SELECT + " WHERE questions.answered_at IS NULL AND "
                                       "questions.item_id = ?", (operator.index(item_id),)).fetchone()
        return None if row is None else Question(**row)

    def record_answer_times(self, artifact_id: int, times: Iterable[AnswerTime]) -> None:
        """Say when each person gave the answers the file ``artifact_id`` recorded (``answer_times``)."""
        with self.batch():
            self._connection.executemany(
                "INSERT INTO answer_times (artifact_id, question_id, person, answered_at) VALUES (?, ?, ?, ?)",
                [(operator.index(artifact_id), operator.index(time.question_id), time.person, time.answered_at)
                 for time in times])

    def answer_times(self, question_ids: Iterable[int]) -> list[AnswerTime]:
        """Every time ``record_answer_times`` gave for these questions' answers, in the order recorded."""
        wanted = sorted({operator.index(question_id) for question_id in question_ids})
        found: list[AnswerTime] = []
        for start in range(0, len(wanted), 500):  # SQLite caps a statement's parameters
            chunk = wanted[start:start + 500]
            found += [AnswerTime(**row) for row in self._connection.execute(
                "SELECT question_id, person, answered_at FROM answer_times WHERE question_id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY rowid", chunk)]
        return found

    def answered_questions(self, *, strategy: str | None = None) -> list[Question]:
        """Questions the oracle answered with a class (not dismissed), oldest first; optionally of one strategy."""
        return self._closed_questions("questions.answer_class_id IS NOT NULL", strategy)

    def dismissed_questions(self, *, strategy: str | None = None) -> list[Question]:
        """Questions the oracle closed without a class ("can't tell"), oldest first; optionally of one strategy."""
        return self._closed_questions("questions.answered_at IS NOT NULL AND questions.answer_class_id IS NULL",
                                      strategy)

    def _closed_questions(self, condition: str, strategy: str | None) -> list[Question]:
        rows = self._connection.execute(
            _QUESTION_SELECT + f" WHERE {condition} AND (? IS NULL OR questions.strategy = ?) ORDER BY questions.id",
            (strategy, strategy),
        )
        return [Question(**row) for row in rows]

    def question(self, question_id: int) -> Question:
        try:
            question_id = operator.index(question_id)
        except TypeError:
            raise BadInputError(f"a question id is a whole number, not {type(question_id).__name__}") from None
        if not 0 <= question_id < 2**63:  # SQLite's integers: a larger one cannot name a question
            raise BadInputError(f"no question with id {question_id}")
        row = self._connection.execute(_QUESTION_SELECT + " WHERE questions.id = ?", (question_id,)).fetchone()
        if row is None:
            raise BadInputError(f"no question with id {question_id}")
        return Question(**row)

    def _open_question(self, question_id: int, *, allow_dismissed: bool = False) -> sqlite3.Row:
        """The question's row, if it is still open (or, with ``allow_dismissed``, closed without an
        answer); otherwise an error that writes nothing."""
        row = None
        if 0 <= question_id < 2**63:
            row = self._connection.execute("SELECT * FROM questions WHERE id = ?", (question_id,)).fetchone()
        if row is None or (row["answered_at"] is not None and not (allow_dismissed and row["answer_class_id"] is None)):
            question = self.question(question_id)  # raises for an unknown id
            said = "dismissed it" if question.answer is None else f"answered {question.answer!r}"
            raise StoreError(
                f"question {question_id} about {question.uri!r} is already closed: {question.oracle} "
                f"{said} at {question.answered_at}; nothing was written (a person who changes their answer: "
                "ProjectStore.correct)"
            )
        return row

    def _close_question(self, question_id: int, *, class_id: int | None, oracle: str) -> None:
        # an open question, or a dismissed one answered late; never an answered one
        self._connection.execute(
            f"UPDATE questions SET answered_at = {schema.NOW}, answer_class_id = ?, oracle = ? "
            "WHERE id = ? AND answer_class_id IS NULL",
            (class_id, oracle, question_id),
        )

    # ------------------------------------------------------------------ rounds

    def start_round(self, config: dict[str, Any] | None = None) -> int:
        """Open a labeling round with the settings it runs under; returns its id."""
        with self.batch():
            cursor = self._connection.execute(
                "INSERT INTO rounds (config) VALUES (?)", (_to_json(config or {}, "round config"),)
            )
            return _inserted_id(cursor)

    def finish_round(self, round_id: int, metrics: dict[str, Any], *, status: str = "finished") -> None:
        """Close a running round with its metrics; ``status`` is "finished" or "failed".

        Metrics the round recorded while running (``record_round_metrics``) are kept
        unless ``metrics`` names them again, so a failed round still says what it certified.
        """
        if status not in ("finished", "failed"):
            raise BadInputError(f"a round ends as 'finished' or 'failed', not {status!r}")
        with self.batch():
            merged = self._running_round_metrics(round_id) | metrics
            self._connection.execute(
                f"UPDATE rounds SET finished_at = {schema.NOW}, status = ?, metrics = ? WHERE id = ?",
                (status, _to_json(merged, "round metrics"), operator.index(round_id)),
            )

    def record_round_metrics(self, round_id: int, metrics: dict[str, Any]) -> None:
        """Add ``metrics`` to a running round's, in the caller's transaction if there is one.

        The loop records a round's certificate in the transaction that writes the labels it
        admits, so whatever ends the round after that, the figures behind them are on record.
        """
        with self.batch():
            merged = self._running_round_metrics(round_id) | metrics
            self._connection.execute("UPDATE rounds SET metrics = ? WHERE id = ?",
                                     (_to_json(merged, "round metrics"), operator.index(round_id)))

    def _running_round_metrics(self, round_id: int) -> dict[str, Any]:
        """The metrics a running round recorded so far; StoreError if it is not running."""
        row = self._connection.execute(
            "SELECT metrics FROM rounds WHERE id = ? AND status = 'running'", (operator.index(round_id),)
        ).fetchone()
        if row is None:
            self._require_round(round_id)
            raise StoreError(f"round {round_id} is not running; it was already closed")
        return _from_json(row["metrics"]) or {}

    def undo_round(self, round_id: int, *, artifact_kinds: Sequence[str]) -> UndoneRound | None:
        """Take back, in one transaction, what a failed round recorded before it asked anything, so that the run
        redoing it starts from the project as the round found it (its model labels, retractions, disagreements,
        synthetic items, and its records of artifacts of ``artifact_kinds``). The round's row stays, failed, with
        what was taken back in its metrics (``UNDONE_METRIC``).

        None, and nothing changed, when the round asked a question or holds a label other than a model's: what
        a person answered, and the labels and questions that follow from it, are never taken back.
        StoreError for a round that is running or finished.
        """
        round_id = operator.index(round_id)
        with self.batch():
            self._require_round(round_id)
            row = self._connection.execute("SELECT status, metrics FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if row["status"] != "failed":
                raise StoreError(f"round {round_id} is {row['status']}; only a failed round can be undone "
                                 "(close an interrupted one first: finish_round with status='failed')")
            asked = self._connection.execute(
                "SELECT 1 FROM questions WHERE round_id = ? UNION ALL "
                "SELECT 1 FROM labels WHERE round_id = ? AND source != 'model' LIMIT 1", (round_id, round_id))
            if asked.fetchone() is not None:
                return None
            disagreements = self._connection.execute(
                "DELETE FROM disagreements WHERE round_id = ? AND source = 'model'", (round_id,)).rowcount
            # newest first: a label the round wrote over its own earlier one hands that one's place back in turn
            written = [row[0] for row in self._connection.execute(
                "SELECT id FROM labels WHERE round_id = ? ORDER BY id DESC", (round_id,))]
            if written:
                self._connection.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    (_UNDONE_LABEL_IDS, str(written[0])))
            for label_id in written:
                # read now: a later label of the round deleted before it may have handed this one its successor
                (successor,) = self._connection.execute(
                    "SELECT superseded_by FROM labels WHERE id = ?", (label_id,)).fetchone()
                # deleted first, so the label it replaced may take back the item's one active place
                self._connection.execute("DELETE FROM labels WHERE id = ?", (label_id,))
                self._connection.execute("UPDATE labels SET superseded_by = ? WHERE superseded_by = ?",
                                         (successor, label_id))
            retractions = self._connection.execute(
                "UPDATE labels SET retracted_at = NULL, retracted_round = NULL, retraction_reason = NULL "
                "WHERE retracted_round = ?", (round_id,)).rowcount
            synthetic = self._connection.execute(
                "DELETE FROM synthetic_items WHERE round_id = ?", (round_id,)).rowcount
            kinds = list(artifact_kinds)
            artifacts = self._connection.execute(
                f"DELETE FROM artifacts WHERE round_id = ? AND kind IN ({', '.join('?' * len(kinds))})",
                (round_id, *kinds)).rowcount if kinds else 0
            undone = UndoneRound(len(written), retractions, disagreements, synthetic, artifacts)
            if undone.anything:
                metrics = (_from_json(row["metrics"]) or {}) | {UNDONE_METRIC: undone.to_json()}
                self._connection.execute("UPDATE rounds SET metrics = ? WHERE id = ?",
                                         (_to_json(metrics, "round metrics"), round_id))
            return undone

    def rounds(self) -> list[Round]:
        rows = self._connection.execute("SELECT * FROM rounds ORDER BY id").fetchall()
        return [
            Round(**{**row, "config": json.loads(row["config"]), "metrics": _from_json(row["metrics"])})
            for row in map(dict, rows)
        ]

    # --------------------------------------------------------------- artifacts

    def add_artifact(
        self, kind: str, path: str | Path, *, round_id: int | None = None, meta: dict[str, Any] | None = None
    ) -> int:
        """Record a file or folder (checkpoint, report, ...) with its sha256; returns its id.

        A path inside the project folder is stored relative to it, so the project can move.
        """
        if not isinstance(kind, str) or not kind:
            raise BadInputError("an artifact needs a kind", hint="e.g. kind='checkpoint'")
        path = Path(path).resolve()
        sha256 = path_sha256(path)
        stored_path = self._stored_path(path)
        with self.batch():
            if round_id is not None:
                self._require_round(operator.index(round_id))
            cursor = self._connection.execute(
                "INSERT INTO artifacts (kind, path, sha256, round_id, meta) VALUES (?, ?, ?, ?, ?)",
                (kind, stored_path, sha256, round_id, _to_json(meta or {}, "artifact meta")),
            )
            return _inserted_id(cursor)

    def _stored_path(self, path: Path) -> str:
        """How an artifact's path is stored: relative to the project folder when inside it."""
        path, folder = path.resolve(), self.folder.resolve()
        return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)

    def artifact_names(self, kind: str, folder: Path) -> set[str]:
        """The names of the files right inside ``folder`` recorded as artifacts of ``kind``: what ``artifacts``
        would say of them, without reading their records (the ML backend asks at every webhook)."""
        prefix = self._stored_path(folder) + "/"
        rows = self._connection.execute(
            "SELECT substr(path, ?) FROM artifacts WHERE kind = ? AND substr(path, 1, ?) = ? "
            "AND instr(substr(path, ?), '/') = 0", (len(prefix) + 1, kind, len(prefix), prefix, len(prefix) + 1))
        return {row[0] for row in rows}

    def artifacts(self, *, kind: str | None = None, path: str | Path | None = None) -> list[Artifact]:
        """The artifacts recorded, oldest first; optionally of one kind, or of one file."""
        # only the conditions given, so SQLite can search its (kind, path) index: an import asks at every webhook
        given = {"kind": kind, "path": None if path is None else self._stored_path(Path(path))}
        where = " AND ".join(f"{column} = ?" for column, value in given.items() if value is not None)
        rows = self._connection.execute(
            f"SELECT * FROM artifacts {'WHERE ' + where if where else ''} ORDER BY id",
            [value for value in given.values() if value is not None],
        ).fetchall()
        folder = self.folder.resolve()  # once, not per row: the ML backend records a file per annotation
        return [Artifact(**{**row, "path": folder / row["path"], "meta": json.loads(row["meta"])})
                for row in map(dict, rows)]

    # ---------------------------------------------------------- synthetic items

    def add_synthetic_items(
        self, records: Iterable[SyntheticRecord], *, round_id: int | None = None, artifact_id: int | None = None
    ) -> list[int]:
        """Add generated or augmented items in one transaction; returns their ids in order.

        Each names the pool items it was made from (``parents``) and the generator and
        version that made it, so any synthetic item can be traced back and dropped with
        its generator.
        """
        ids = []
        with self.batch():
            if round_id is not None:
                self._require_round(operator.index(round_id))
            if artifact_id is not None and self._connection.execute(
                "SELECT 1 FROM artifacts WHERE id = ?", (operator.index(artifact_id),)
            ).fetchone() is None:
                raise BadInputError(f"no artifact with id {artifact_id}",
                                    hint="record the file with add_artifact first")
            for position, record in enumerate(records):
                if record.kind not in schema.SYNTHETIC_KINDS:
                    raise BadInputError(
                        f"synthetic item {record.uri!r} has kind {record.kind!r}",
                        hint=f"use one of {', '.join(schema.SYNTHETIC_KINDS)}",
                    )
                if not (record.generator and record.generator_version):
                    raise BadInputError(f"synthetic item {record.uri!r} needs its generator and version")
                parents = [operator.index(parent) for parent in record.parents]
                for parent in parents:
                    self._require_item(parent)
                try:
                    cursor = self._connection.execute(
                        "INSERT INTO synthetic_items (uri, content_hash, kind, class_id, generator, generator_version, "
                        "round_id, artifact_id, row_in_artifact, parents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.uri, record.content_hash, record.kind, self._class_id(record.class_name),
                         record.generator, record.generator_version, round_id, artifact_id,
                         operator.index(record.row_in_artifact), json.dumps(parents)),
                    )
                except sqlite3.IntegrityError as exc:
                    raise BadInputError(
                        f"synthetic item {record.uri!r} (record {position}) is already in the project",
                        hint="each synthetic item needs its own uri",
                    ) from exc
                ids.append(_inserted_id(cursor))
        return ids

    def synthetic_items(
        self, *, round_id: int | None = None, generator: str | None = None, kept_only: bool = False
    ) -> list[SyntheticItem]:
        """Synthetic items, oldest first, optionally of one round or generator, or only those still kept."""
        rows = self._connection.execute(
            "SELECT synthetic_items.*, classes.name AS class_name FROM synthetic_items "
            "JOIN classes ON classes.id = synthetic_items.class_id "
            "WHERE (? IS NULL OR round_id = ?) AND (? IS NULL OR generator = ?) AND (kept = 1 OR NOT ?) "
            "ORDER BY synthetic_items.id",
            (round_id, round_id, generator, generator, kept_only),
        ).fetchall()
        return [
            SyntheticItem(
                id=row["id"], uri=row["uri"], content_hash=row["content_hash"], kind=row["kind"],
                class_name=row["class_name"], generator=row["generator"], generator_version=row["generator_version"],
                round_id=row["round_id"], artifact_id=row["artifact_id"], row_in_artifact=row["row_in_artifact"],
                parents=tuple(json.loads(row["parents"])), kept=bool(row["kept"]), created_at=row["created_at"],
            )
            for row in rows
        ]

    def drop_synthetic_items(self, *, round_id: int, generator: str) -> int:
        """Mark a round's items of ``generator`` as dropped by feedback (kept, not deleted); returns how many."""
        with self.batch():
            cursor = self._connection.execute(
                "UPDATE synthetic_items SET kept = 0 WHERE round_id = ? AND generator = ? AND kept = 1",
                (operator.index(round_id), generator),
            )
            return cursor.rowcount

    # ----------------------------------------------------------------- summary

    def summary(self) -> dict[str, Any]:
        """What ``metalabel status`` shows: counts of everything, JSON-ready."""

        def one(sql: str) -> int:
            return self._connection.execute(sql).fetchone()[0]

        meta = self.meta()
        labels_by_class = {name: 0 for name in self.classes()}
        labels_by_class.update(
            self._connection.execute(
                "SELECT classes.name, count(*) FROM labels JOIN classes ON classes.id = labels.class_id "
                f"WHERE {schema.ACTIVE_LABEL} GROUP BY classes.name"
            ).fetchall()
        )
        last_round = self._connection.execute("SELECT id, status FROM rounds ORDER BY id DESC LIMIT 1").fetchone()
        items = one("SELECT count(*) FROM items")
        labeled = one(f"SELECT count(*) FROM labels WHERE {schema.ACTIVE_LABEL}")
        return {
            "name": meta.get("name", self.folder.name),
            "created_at": meta.get("created_at"),
            "schema_version": schema.user_version(self._connection),
            "items": items,
            # Same content under another uri: counted, not refused (the user may mean it).
            "duplicate_items": items - one("SELECT count(DISTINCT content_hash) FROM items"),
            "labeled_items": labeled,
            "unlabeled_items": items - labeled,
            "classes": list(labels_by_class),
            "labels_by_source": self.label_counts(),
            "labels_by_class": labels_by_class,
            "open_questions": one("SELECT count(*) FROM questions WHERE answered_at IS NULL"),
            "answered_questions": one("SELECT count(*) FROM questions WHERE answered_at IS NOT NULL"),
            "open_disagreements": one("SELECT count(*) FROM disagreements WHERE resolved_by_label_id IS NULL"),
            "rounds": one("SELECT count(*) FROM rounds"),
            "last_round": None if last_round is None else dict(last_round),
            "artifacts": one("SELECT count(*) FROM artifacts"),
            "synthetic_items": dict(
                self._connection.execute(
                    "SELECT generator, count(*) FROM synthetic_items WHERE kept = 1 "
                    "GROUP BY generator ORDER BY generator"
                ).fetchall()
            ),
        }

    # ------------------------------------------------------------------ checks

    def _require_item(self, item_id: int) -> None:
        if self._connection.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() is None:
            raise BadInputError(f"no item with id {item_id} in the project", hint="add it with add_items first")

    def _require_round(self, round_id: int) -> None:
        if self._connection.execute("SELECT 1 FROM rounds WHERE id = ?", (round_id,)).fetchone() is None:
            raise BadInputError(f"no round with id {round_id} in the project", hint="open one with start_round")


def _holds(sorted_ids: np.ndarray, item_id: int) -> bool:
    at = int(np.searchsorted(sorted_ids, item_id))
    return at < sorted_ids.size and int(sorted_ids[at]) == item_id


def check_class_name(name: object, *, where: str = "") -> str:
    """``name`` if it is usable as a class name; else a ``BadInputError`` saying why.

    Control characters (NUL, newlines, terminal escapes) are refused: they break file
    names, CSV rows and terminals wherever the class is shown.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(name, str) or not name.strip():
        raise BadInputError(f"{prefix}class names must be non-empty text, got {name!r}")
    bad = [ch for ch in name if unicodedata.category(ch) == "Cc"]
    if bad:
        raise BadInputError(f"{prefix}the class name {name!r} holds a control character ({bad[0]!r})",
                            hint="remove it (NUL, tab, newline and escape codes are not allowed in class names)")
    return name


def _connect(db_path: Path, *, create: bool) -> sqlite3.Connection:
    # mode=rw never creates a file, so opening a mistyped folder cannot leave an empty database behind.
    uri = f"{db_path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
    try:
        # isolation_level=None: the store issues BEGIN/COMMIT itself, one transaction per decision.
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=schema.BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {db_path} ({exc})") from exc
    connection.row_factory = sqlite3.Row
    try:
        for pragma in schema.CONNECTION_PRAGMAS:
            connection.execute(pragma)
    except sqlite3.Error as exc:
        connection.close()
        raise _store_error(exc, db_path) from exc
    return connection


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_is_sqlite_file(db_path: Path) -> None:
    try:
        with db_path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read {db_path} ({exc.strerror}); check its permissions") from exc
    if not header:
        raise corrupt_store_error(db_path, "the file is empty (0 bytes), so it holds no project")
    if header != _SQLITE_HEADER:
        raise corrupt_store_error(db_path, "the file is not an SQLite database, so not a metalabel store")
    # Read-only first: the read-write connection switches the file to WAL mode, which
    # rewrites its header, and a file that is not ours must be left exactly as it was.
    try:
        peek = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=schema.BUSY_TIMEOUT_S)
        try:
            version = schema.user_version(peek)
            tables = peek.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            peek.close()
    except sqlite3.Error as exc:
        raise _store_error(exc, db_path) from exc
    if version == 0:
        what = "holds other tables" if tables else "is empty"
        raise StoreCorruptError(
            f"{db_path} is an SQLite database but not a metalabel store (it {what} and has no metalabel schema); "
            "metalabel left it as it is -> point metalabel at the project folder, or restore project.db "
            "from a backup"
        )


def corrupt_store_error(db_path: Path, problem: str) -> StoreCorruptError:
    """A ``StoreCorruptError`` about ``db_path``: what is wrong, what SQLite's integrity check says, how to recover."""
    report = _integrity_report(db_path)
    checked = f"; PRAGMA integrity_check says: {report}" if report else ""
    return StoreCorruptError(
        f"{db_path}: {problem}{checked}. metalabel left the file as it is -> restore {db_path.name} from a "
        f"backup (copy it together with any {db_path.name}-wal beside it); to inspect or salvage a damaged one: "
        f"sqlite3 {db_path} 'PRAGMA integrity_check' and sqlite3 {db_path} .recover > rows.sql"
    )


def _integrity_report(db_path: Path, *, lines: int = 5) -> str | None:
    """The first lines of ``PRAGMA integrity_check`` on a read-only connection; None if it cannot run."""
    try:
        with db_path.open("rb") as file:
            if file.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                return None
        connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except (OSError, sqlite3.Error):
        return None
    try:
        rows = connection.execute(f"PRAGMA integrity_check({lines})").fetchall()
        return "; ".join(str(row[0]) for row in rows)
    except sqlite3.Error as exc:
        return f"cannot run ({exc})"
    finally:
        connection.close()


def _store_error(exc: sqlite3.Error, db_path: Path) -> StoreError:
    """A StoreError that says what went wrong with the database file, in words."""
    primary_code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # extended codes keep it in the low byte
    if primary_code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreUnavailableError(
            f"{db_path} is busy: another metalabel process has been writing for over "
            f"{schema.BUSY_TIMEOUT_S:g} s; wait for it to finish and try again"
        )
    if primary_code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return corrupt_store_error(db_path, f"damaged or not an SQLite database ({exc})")
    if primary_code == sqlite3.SQLITE_READONLY:
        return StoreUnavailableError(f"{db_path} cannot be written (read-only file or folder); check its permissions")
    if primary_code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return StoreUnavailableError(f"{db_path}: {exc}")
    return StoreError(f"{db_path}: {exc}")


def _provenance(
    *,
    raw_confidence: float | None = None,
    calibrated_confidence: float | None = None,
    threshold: float | None = None,
    round_id: int | None = None,
    model_hash: str | None = None,
    query_strategy: str | None = None,
) -> dict[str, Any]:
    """The checked provenance columns a label or disagreement row carries."""
    return {
        "raw_confidence": _probability(raw_confidence, "raw_confidence"),
        "calibrated_confidence": _probability(calibrated_confidence, "calibrated_confidence"),
        "threshold": _finite(threshold, "threshold"),
        "round_id": None if round_id is None else operator.index(round_id),
        "model_hash": model_hash,
        "query_strategy": query_strategy,
    }


def _require_oracle(oracle: str) -> None:
    if not isinstance(oracle, str) or not oracle:
        raise BadInputError("an answer needs the oracle that gave it", hint="e.g. oracle='terminal:alice'")


def _inserted_id(cursor: sqlite3.Cursor) -> int:
    # typeshed says int | None: None only before any INSERT ran on the cursor, never after one succeeded
    row_id = cursor.lastrowid
    assert row_id is not None
    return row_id


def _finite(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):  # SQLite would store NaN as NULL, silently
        raise BadInputError(f"{what} must be a finite number, got {value!r}")
    return number


def _probability(value: float | None, what: str) -> float | None:
    number = _finite(value, what)
    if number is not None and not 0.0 <= number <= 1.0:
        raise BadInputError(f"{what} must lie in [0, 1], got {value!r}")
    return number


def _to_json(value: dict[str, Any], what: str) -> str:
    def plain(obj: Any) -> Any:
        if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(type(obj).__name__)

    if not isinstance(value, dict):
        raise BadInputError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, default=plain)
    except (TypeError, ValueError) as exc:
        raise BadInputError(
            f"{what} cannot be stored as JSON ({exc})", hint="use numbers, text, lists and dicts"
        ) from exc


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
