"""The project database's tables, connection settings and migrations.

``PRAGMA user_version`` counts the migrations a database has had. ``MIGRATIONS[v]``
takes a database from version ``v`` to ``v + 1`` inside its own transaction, so a crash
mid-migration leaves the database at the last whole version. To change the schema,
append one function to ``MIGRATIONS``; never edit a migration that has shipped (its DDL
is spelled out literally for that reason, not built from Python constants that may move).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from metalabel.errors import SchemaVersionError, StoreCorruptError, StoreError
from metalabel.store.records import LabelSource

SOURCES = tuple(source.value for source in LabelSource)
"""Where a label came from. Must match the CHECK constraints below (a test checks they do)."""

MODALITIES = ("image", "text", "tabular")
SYNTHETIC_KINDS = ("generated", "augmented")
ROUND_STATUSES = ("running", "finished", "failed")

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for another process's write lock before giving up."""

CONNECTION_PRAGMAS = (
    # WAL: readers (`metalabel status`) never block the writer, and a commit is one append.
    "PRAGMA journal_mode = WAL",
    # FULL fsyncs the WAL at every commit, so a committed label survives power loss and OS
    # crashes, not only a killed process (NORMAL in WAL mode promises only the latter).
    # Decisions are committed at human speed or in batches, so one fsync each is cheap.
    "PRAGMA synchronous = FULL",
    # SQLite leaves foreign keys off unless asked, per connection.
    "PRAGMA foreign_keys = ON",
)

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
"""SQL for the current UTC time, ISO 8601 with milliseconds (sorts as text)."""


def _create_tables(connection: sqlite3.Connection) -> None:
    """Version 1: the whole first schema."""
    statements = [
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """
        CREATE TABLE items (
            id           INTEGER PRIMARY KEY,
            uri          TEXT NOT NULL UNIQUE,
            content_hash TEXT NOT NULL,                  -- sha256 of the item's bytes
            split        TEXT NOT NULL DEFAULT 'pool',   -- pool, generated, augmented, holdout, ...
            modality     TEXT NOT NULL CHECK (modality IN ('image', 'text', 'tabular')),
            created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        "CREATE INDEX items_by_content_hash ON items (content_hash)",
        """
        CREATE TABLE classes (
            id       INTEGER PRIMARY KEY,
            name     TEXT NOT NULL UNIQUE CHECK (length(trim(name)) > 0),
            position INTEGER NOT NULL
        )""",
        """
        CREATE TABLE rounds (
            id          INTEGER PRIMARY KEY,
            started_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            finished_at TEXT,
            status      TEXT NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'finished', 'failed')),
            config      TEXT NOT NULL DEFAULT '{}',      -- JSON
            metrics     TEXT                             -- JSON, set when the round ends
        )""",
        """
        CREATE TABLE questions (
            id              INTEGER PRIMARY KEY,
            item_id         INTEGER NOT NULL REFERENCES items (id),
            round_id        INTEGER REFERENCES rounds (id),
            strategy        TEXT NOT NULL,
            score           REAL,
            asked_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            answered_at     TEXT,
            answer_class_id INTEGER REFERENCES classes (id),  -- NULL when dismissed
            oracle          TEXT,                             -- who answered
            CHECK (answered_at IS NOT NULL OR (answer_class_id IS NULL AND oracle IS NULL))
        )""",
        # An item waits on at most one question, so it is never asked twice at once.
        "CREATE UNIQUE INDEX questions_one_open_per_item ON questions (item_id) WHERE answered_at IS NULL",
        """
        CREATE TABLE labels (
            id                    INTEGER PRIMARY KEY,
            item_id               INTEGER NOT NULL REFERENCES items (id),
            class_id              INTEGER NOT NULL REFERENCES classes (id),
            source                TEXT NOT NULL
                                  CHECK (source IN ('human', 'imported', 'generated', 'augmented', 'model')),
            raw_confidence        REAL CHECK (raw_confidence BETWEEN 0 AND 1),
            calibrated_confidence REAL CHECK (calibrated_confidence BETWEEN 0 AND 1),
            threshold             REAL,
            round_id              INTEGER REFERENCES rounds (id),
            model_hash            TEXT,
            query_strategy        TEXT,
            question_id           INTEGER UNIQUE REFERENCES questions (id),  -- one label per answer
            created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            -- NULL while active. Deferred: the old label points at the new one before it is inserted.
            superseded_by         INTEGER REFERENCES labels (id) DEFERRABLE INITIALLY DEFERRED
        )""",
        "CREATE UNIQUE INDEX labels_one_active_per_item ON labels (item_id) WHERE superseded_by IS NULL",
        """
        CREATE TABLE disagreements (
            id                    INTEGER PRIMARY KEY,
            item_id               INTEGER NOT NULL REFERENCES items (id),
            kept_label_id         INTEGER NOT NULL REFERENCES labels (id),  -- the trusted label left in place
            class_id              INTEGER NOT NULL REFERENCES classes (id), -- what the less trusted source said
            source                TEXT NOT NULL
                                  CHECK (source IN ('human', 'imported', 'generated', 'augmented', 'model')),
            raw_confidence        REAL,
            calibrated_confidence REAL,
            threshold             REAL,
            round_id              INTEGER REFERENCES rounds (id),
            model_hash            TEXT,
            query_strategy        TEXT,
            created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            resolved_by_label_id  INTEGER REFERENCES labels (id)  -- a later human label on the item
        )""",
        "CREATE INDEX disagreements_by_item ON disagreements (item_id)",
        """
        CREATE TABLE artifacts (
            id         INTEGER PRIMARY KEY,
            kind       TEXT NOT NULL,        -- checkpoint, report, seed-labels, ...
            path       TEXT NOT NULL,        -- relative to the project folder when inside it
            sha256     TEXT NOT NULL,
            round_id   INTEGER REFERENCES rounds (id),
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            meta       TEXT NOT NULL DEFAULT '{}'  -- JSON
        )""",
    ]
    # One execute per statement: executescript() would COMMIT the migration's transaction.
    for statement in statements:
        connection.execute(statement)


def _add_synthetic_items(connection: sqlite3.Connection) -> None:
    """Version 2: items a generator made (augmented copies, synthetic samples), with their provenance.

    They live apart from ``items``: they are not part of the pool a person labels, their
    label is the class they were made for, and their content sits in an artifact file
    (``artifact_id``) since the pool's own files do not hold it.
    """
    statements = [
        """
        CREATE TABLE synthetic_items (
            id                INTEGER PRIMARY KEY,
            uri               TEXT NOT NULL UNIQUE,            -- generated/<round>/<generator>/<n>
            content_hash      TEXT NOT NULL,
            kind              TEXT NOT NULL CHECK (kind IN ('generated', 'augmented')),
            class_id          INTEGER NOT NULL REFERENCES classes (id),
            generator         TEXT NOT NULL,                   -- augment, hallucinator, vae, ...
            generator_version TEXT NOT NULL,                   -- hash of the policy or the weights
            round_id          INTEGER REFERENCES rounds (id),
            artifact_id       INTEGER REFERENCES artifacts (id),  -- the file that holds the content
            row_in_artifact   INTEGER NOT NULL,
            parents           TEXT NOT NULL DEFAULT '[]',      -- JSON list of item ids it was made from
            kept              INTEGER NOT NULL DEFAULT 1 CHECK (kept IN (0, 1)),  -- 0: feedback dropped it
            created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        "CREATE INDEX synthetic_items_by_round ON synthetic_items (round_id, generator)",
    ]
    for statement in statements:
        connection.execute(statement)


def _add_certificates_and_retractions(connection: sqlite3.Connection) -> None:
    """Version 3: the precision a model label was certified at, and retraction.

    A model label that a later round's certificate no longer covers is retracted: it stays
    in the table with when, in which round and why, and stops being active. A retracted
    label keeps ``superseded_by`` NULL until a newer label on the item supersedes it, so
    "one label per item with superseded_by NULL" still holds.
    """
    for statement in (
        "ALTER TABLE labels ADD COLUMN certified_precision REAL CHECK (certified_precision BETWEEN 0 AND 1)",
        "ALTER TABLE labels ADD COLUMN retracted_at TEXT",
        "ALTER TABLE labels ADD COLUMN retracted_round INTEGER REFERENCES rounds (id)",
        "ALTER TABLE labels ADD COLUMN retraction_reason TEXT",
    ):
        connection.execute(statement)


def _add_reference_regions(connection: sqlite3.Connection) -> None:
    """Version 4: the part of the pool a reference question was drawn from.

    A round may draw part of its reference sample uniformly from its most confident
    candidates (a region) instead of from all of them: there the certificate needs its
    evidence. The region's items are kept (sorted item ids, little-endian int64) so a
    later certificate can tell whether the set it accepts lies inside it, which is when
    such a draw is still a uniform draw from that set. A reference question with no
    region was drawn uniformly from all of its round's candidates.
    """
    for statement in (
        """
        CREATE TABLE reference_regions (
            id         INTEGER PRIMARY KEY,
            round_id   INTEGER NOT NULL REFERENCES rounds (id),
            item_ids   BLOB NOT NULL,
            rule       TEXT NOT NULL,      -- how the region was chosen, in words
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        "ALTER TABLE questions ADD COLUMN reference_region INTEGER REFERENCES reference_regions (id)",
    ):
        connection.execute(statement)


def _keep_every_answer(connection: sqlite3.Connection) -> None:
    """Version 5: a question may have several answers over time; each answer's label says who gave it.

    A person who answers, takes it back and answers again, or corrects an answer given on review,
    gives the question a new answer: the new human label supersedes the earlier one, and both
    point at the question (``question_id`` is no longer unique). ``labels.oracle`` keeps who gave
    each human answer (it was on the question only, which shows the latest answer). SQLite cannot
    drop a column's UNIQUE constraint, so ``labels`` is rebuilt; every row keeps its id, so the
    references to it (``superseded_by``, disagreements) still hold. ``migrate`` runs this with
    foreign keys off and checks them before it commits.
    """
    for statement in (
        """
        CREATE TABLE labels_v5 (
            id                    INTEGER PRIMARY KEY,
            item_id               INTEGER NOT NULL REFERENCES items (id),
            class_id              INTEGER NOT NULL REFERENCES classes (id),
            source                TEXT NOT NULL
                                  CHECK (source IN ('human', 'imported', 'generated', 'augmented', 'model')),
            raw_confidence        REAL CHECK (raw_confidence BETWEEN 0 AND 1),
            calibrated_confidence REAL CHECK (calibrated_confidence BETWEEN 0 AND 1),
            threshold             REAL,
            round_id              INTEGER REFERENCES rounds (id),
            model_hash            TEXT,
            query_strategy        TEXT,
            question_id           INTEGER REFERENCES questions (id),  -- the question this answer answers
            created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            superseded_by         INTEGER REFERENCES labels (id) DEFERRABLE INITIALLY DEFERRED,
            certified_precision   REAL CHECK (certified_precision BETWEEN 0 AND 1),
            retracted_at          TEXT,
            retracted_round       INTEGER REFERENCES rounds (id),
            retraction_reason     TEXT,
            oracle                TEXT                                -- who gave a human answer
        )""",
        """
        INSERT INTO labels_v5 (id, item_id, class_id, source, raw_confidence, calibrated_confidence, threshold,
                               round_id, model_hash, query_strategy, question_id, created_at, superseded_by,
                               certified_precision, retracted_at, retracted_round, retraction_reason, oracle)
        SELECT labels.id, labels.item_id, labels.class_id, labels.source, labels.raw_confidence,
               labels.calibrated_confidence, labels.threshold, labels.round_id, labels.model_hash,
               labels.query_strategy, labels.question_id, labels.created_at, labels.superseded_by,
               labels.certified_precision, labels.retracted_at, labels.retracted_round, labels.retraction_reason,
               questions.oracle
        FROM labels LEFT JOIN questions ON questions.id = labels.question_id""",
        "DROP TABLE labels",
        "ALTER TABLE labels_v5 RENAME TO labels",
        "CREATE UNIQUE INDEX labels_one_active_per_item ON labels (item_id) WHERE superseded_by IS NULL",
        "CREATE INDEX labels_by_question ON labels (question_id) WHERE question_id IS NOT NULL",
    ):
        connection.execute(statement)


def _name_who_disagreed(connection: sqlite3.Connection) -> None:
    """Version 6: a disagreement between people says who gave the answer that was not kept.

    The kept answer's label names its annotator (``labels.oracle``); without this column the other
    person's name was lost (two annotators of one Label Studio task, a late or changed answer about an
    item someone else had answered). NULL for model disagreements and for those recorded before.
    """
    connection.execute("ALTER TABLE disagreements ADD COLUMN oracle TEXT")


def _know_people_by_every_name(connection: sqlite3.Connection) -> None:
    """Version 7: names under which one person answered.

    Label Studio names an annotator by user id in webhooks and in some exports, and by a user object
    (id and email) in others; metalabel names her ``labelstudio:<email>`` from the one and
    ``labelstudio:<id>`` from the other. Each row says two names are one person, so her later answer
    under either name is her change, never a disagreement with herself.
    """
    connection.execute(
        """
        CREATE TABLE person_names (
            name    TEXT NOT NULL,
            same_as TEXT NOT NULL,
            PRIMARY KEY (name, same_as)
        )""")


def _find_answer_times_by_question(connection: sqlite3.Connection) -> None:
    """Version 8: when each person gave each answer an import recorded, a row each, found by question.

    Label Studio says when an annotation last changed (``updated_at``); an import compares that with the answer
    on record, so an older export never undoes a newer answer. Those times sat in each ``answers-import``
    artifact's JSON meta, which every import (every webhook the ML backend records) read whole: its cost grew
    with every answer on record. They move here, once, and the meta no longer carries them.
    """
    connection.execute(
        """
        CREATE TABLE answer_times (
            artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
            question_id INTEGER NOT NULL REFERENCES questions (id),
            person      TEXT NOT NULL,
            answered_at TEXT NOT NULL
        )""")
    connection.execute("CREATE INDEX answer_times_by_question ON answer_times (question_id)")
    # an import looks up its own file's record, to record a file once
    connection.execute("CREATE INDEX artifacts_by_path ON artifacts (kind, path)")
    questions = {row[0] for row in connection.execute("SELECT id FROM questions")}
    imports = connection.execute("SELECT id, meta FROM artifacts WHERE kind = 'answers-import'").fetchall()
    for artifact_id, meta in imports:
        recorded = json.loads(meta)
        for question_id, times in recorded.pop("answer_times", {}).items():
            connection.executemany(
                "INSERT INTO answer_times (artifact_id, question_id, person, answered_at) VALUES (?, ?, ?, ?)",
                [(artifact_id, int(question_id), person, answered_at) for person, answered_at in times.items()
                 if int(question_id) in questions])
        connection.execute("UPDATE artifacts SET meta = ? WHERE id = ?", (json.dumps(recorded), artifact_id))


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = [_create_tables, _add_synthetic_items, _add_certificates_and_retractions,
                               _add_reference_regions, _keep_every_answer, _name_who_disagreed,
                               _know_people_by_every_name, _find_answer_times_by_question]

ACTIVE_LABEL = "labels.superseded_by IS NULL AND labels.retracted_at IS NULL"
"""SQL: the label is its item's active one (neither superseded nor retracted)."""


def current_version() -> int:
    """The schema version this code writes."""
    return len(MIGRATIONS)


def user_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def migrate(connection: sqlite3.Connection, *, db_path: Path, new: bool = True) -> int:
    """Bring the database up to ``current_version()``, one transaction per migration.

    Raises ``SchemaVersionError`` for a database written by a newer metalabel. With
    ``new=False`` (opening an existing project) a database at version 0 is not a metalabel
    store at all, and is refused (``StoreCorruptError``) rather than made into one.
    Returns the version.
    """
    target = current_version()
    _refuse_newer(user_version(connection), target, db_path)
    if not new and user_version(connection) == 0:
        raise StoreCorruptError(
            f"{db_path} is an SQLite database but not a metalabel store (it has no metalabel schema); "
            "metalabel left it as it is -> point metalabel at the project folder, or restore project.db "
            "from a backup"
        )
    # The common case, an up-to-date database, takes no write lock: opening one to read
    # (`metalabel status`) never waits for a process that is busy writing.
    if user_version(connection) == target:
        return target
    # A migration that rebuilds a table drops the table others point at: SQLite's procedure for that
    # turns foreign keys off outside the transaction (inside, the pragma is a no-op) and checks them
    # all before the commit.
    connection.execute("PRAGMA foreign_keys = OFF")
    try:
        return _migrate_to(connection, target, db_path)
    finally:
        connection.execute("PRAGMA foreign_keys = ON")


def _migrate_to(connection: sqlite3.Connection, target: int, db_path: Path) -> int:
    while True:
        # IMMEDIATE takes the write lock first, so two processes opening an old database
        # at once migrate it once: the second re-reads the version after the first commits.
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(connection)
            _refuse_newer(version, target, db_path)
            if version == target:
                connection.execute("COMMIT")
                return version
            if version == 0 and connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(
                    f"{db_path} is an SQLite database but not a metalabel project; "
                    "move it away or point metalabel at the project folder"
                )
            try:
                MIGRATIONS[version](connection)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{db_path}: migrating the schema from version {version} to {version + 1} failed "
                    f"({exc}); the database was left at version {version}"
                ) from exc
            broken = connection.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise StoreError(
                    f"{db_path}: migrating the schema from version {version} to {version + 1} would leave row "
                    f"{broken[1]} of table {broken[0]!r} pointing at a missing row of {broken[2]!r}; the database "
                    f"was left at version {version} -> check it with sqlite3 {db_path} 'PRAGMA foreign_key_check'"
                )
            # user_version lives in the database header, so it commits or rolls back with the DDL.
            connection.execute(f"PRAGMA user_version = {version + 1}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


REQUIRED_TABLES = ("meta", "items", "classes", "rounds", "questions", "labels", "disagreements", "artifacts")
"""Tables every metalabel store has had since version 1."""


def check_tables(connection: sqlite3.Connection, *, db_path: Path) -> None:
    """Raise ``StoreCorruptError`` if a migrated store lacks one of its tables (a damaged or doctored file)."""
    present = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [table for table in REQUIRED_TABLES if table not in present]
    if missing:
        raise StoreCorruptError(
            f"{db_path} says it is a metalabel store (schema version {user_version(connection)}) but has no "
            f"table {missing[0]!r}; metalabel left it as it is -> restore project.db from a backup"
        )


def _refuse_newer(version: int, target: int, db_path: Path) -> None:
    if version > target:
        raise SchemaVersionError(
            f"{db_path} has schema version {version}, but this metalabel reads versions "
            f"up to {target}; upgrade metalabel (pip install -U metalabel) to open it"
        )
