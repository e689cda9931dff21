"""The project store: durability, provenance, trust between sources, questions, migrations."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    UnknownLabelError,
)
from metalabel.store import (
    DB_FILENAME,
    SOURCES,
    ItemRecord,
    Outcome,
    ProjectStore,
    SyntheticRecord,
    content_hash,
    path_sha256,
    schema,
)

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def store(tmp_path):
    with ProjectStore.create(tmp_path / "proj", name="proj") as store:
        store.set_classes(CLASSES)
        store.add_items(ItemRecord(f"pool/{i}.txt", content_hash(f"text {i}"), "text") for i in range(6))
        yield store


def committed_labels(store: ProjectStore) -> int:
    """Label rows seen through a second, independent connection: only what was committed."""
    connection = sqlite3.connect(store.path)
    try:
        return connection.execute("SELECT count(*) FROM labels").fetchone()[0]
    finally:
        connection.close()


# ------------------------------------------------------------------ durability


def test_connection_is_set_up_for_durable_commits(store):
    connection = store._connection
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == schema.BUSY_TIMEOUT_S * 1000


def test_each_write_is_committed_when_it_returns(store):
    store.add_label(1, "cat", source="human")
    assert committed_labels(store) == 1


def test_batch_commits_all_or_nothing(store):
    with pytest.raises(UnknownLabelError), store.batch():
        store.add_label(1, "cat", source="human")
        store.add_label(2, "dog", source="human")
        store.add_label(3, "zebra", source="human")
    assert store.active_labels() == []

    with store.batch():
        store.add_label(1, "cat", source="human")
        with pytest.raises(UnknownLabelError), store.batch():  # a failed inner batch undoes only itself
            store.add_label(2, "dog", source="human")
            store.add_label(3, "zebra", source="human")
    assert [label.item_id for label in store.active_labels()] == [1]


def test_a_reader_is_not_blocked_by_a_write_in_progress(store):
    with ProjectStore.open(store.folder) as reader, store.batch():
        store.add_label(1, "cat", source="human")
        assert reader.summary()["labeled_items"] == 0  # sees the last commit, does not wait
    assert committed_labels(store) == 1


def test_a_second_writer_waits_then_gets_a_clear_error(store, monkeypatch):
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.05)
    with store.batch():
        store.add_label(1, "cat", source="human")
        with (
            ProjectStore.open(store.folder) as other,  # opening takes no write lock
            pytest.raises(StoreError, match="is busy: another metalabel process"),
        ):
            other.add_label(2, "dog", source="human")
    assert committed_labels(store) == 1


WRITER = textwrap.dedent(
    """
    import sys
    from metalabel.store import ProjectStore

    store = ProjectStore.open(sys.argv[1])
    run = sys.argv[2]
    item_ids = [item.id for item in store.items()]
    for write in range(10**9):
        store.add_label(item_ids[write % len(item_ids)], ("cat", "dog")[write % 2], source="model",
                        raw_confidence=0.5, model_hash=f"{run}-{write}")
        sys.stdout.write(f"{write + 1}\\n")  # after the commit: a reported write is a committed one
        sys.stdout.flush()
    """
)


class CommitCounter:
    """Reads the writer's reported commit counts from its stdout, without sleeps or blocking forever."""

    def __init__(self, writer: subprocess.Popen, *, timeout_s: float = 60.0) -> None:
        self.fd = writer.stdout.fileno()
        self.writer = writer
        self.timeout_s = timeout_s
        self.reported = 0
        self._partial_line = b""

    def wait_for(self, commits: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.reported < commits:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"the writer reported {self.reported} commits, then nothing for {self.timeout_s} s"
            assert self._read(), f"the writer exited after {self.reported} commits: {self.writer.stderr.read()!r}"

    def read_to_end(self) -> None:
        while self._read():
            pass

    def _read(self) -> bool:
        chunk = os.read(self.fd, 1 << 16)
        # A line the kill cut short stays in _partial_line, uncounted.
        *lines, self._partial_line = (self._partial_line + chunk).split(b"\n")
        if lines:
            self.reported = int(lines[-1])
        return bool(chunk)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_stream_loses_no_committed_label(store):
    """Kill a writer mid-stream, three times over: the database stays whole and keeps every reported write."""
    store.close()
    for run, kill_after in enumerate((40, 80, 120)):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.folder), f"run{run}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            counter = CommitCounter(writer)
            counter.wait_for(kill_after)
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            counter.read_to_end()  # counts printed between the last read and the kill
            reported = counter.reported
        finally:
            if writer.poll() is None:
                writer.kill()
            writer.stdout.close()
            writer.stderr.close()
        assert writer.returncode == -signal.SIGKILL

        checker = sqlite3.connect(store.path)  # a plain connection: no migration, no store code
        try:
            assert checker.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert checker.execute("PRAGMA foreign_key_check").fetchall() == []
            rows = checker.execute("SELECT model_hash FROM labels WHERE model_hash LIKE ?", (f"run{run}-%",))
            tags = {tag for (tag,) in rows}
        finally:
            checker.close()
        assert {f"run{run}-{write}" for write in range(reported)} <= tags
        # At most one write more: the one that committed but was killed before it could report.
        assert len(tags) - reported in (0, 1)
        with ProjectStore.open(store.folder) as reopened:
            assert len(reopened.active_labels()) == 6  # still one active label per item


# ------------------------------------------------------------------ provenance


def test_provenance_round_trips(store):
    round_id = store.start_round({"strategy": "margin"})
    write = store.add_label(
        2,
        "dog",
        source="model",
        raw_confidence=np.float32(0.75),
        calibrated_confidence=0.625,
        threshold=0.6,
        round_id=round_id,
        model_hash="sha256:abc",
        query_strategy="margin",
    )
    assert write.outcome is Outcome.WRITTEN and write.applied
    (label,) = store.active_labels()
    assert (label.id, label.item_id, label.uri, label.class_name, label.source) == (
        write.label_id,
        2,
        "pool/1.txt",
        "dog",
        "model",
    )
    assert (label.raw_confidence, label.calibrated_confidence, label.threshold) == (0.75, 0.625, 0.6)
    assert (label.round_id, label.model_hash, label.query_strategy) == (round_id, "sha256:abc", "margin")
    assert label.active and label.question_id is None and label.created_at.endswith("Z")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"source": "oracle"}, BadInputError),
        ({"source": "model", "raw_confidence": 1.5}, BadInputError),
        ({"source": "model", "calibrated_confidence": float("nan")}, BadInputError),
        ({"source": "model", "round_id": 99}, BadInputError),
    ],
)
def test_bad_label_is_refused_and_nothing_written(store, kwargs, error):
    with pytest.raises(error):
        store.add_label(1, "cat", **kwargs)
    assert store.active_labels() == []


def test_unknown_class_and_item_are_named(store):
    with pytest.raises(UnknownLabelError, match="zebra.*known classes: cat, dog, bird"):
        store.add_label(1, "zebra", source="human")
    with pytest.raises(BadInputError, match="no item with id 99"):
        store.add_label(99, "cat", source="human")


def test_check_constraints_back_up_the_python_checks(store):
    with pytest.raises(sqlite3.IntegrityError):
        store._connection.execute("INSERT INTO labels (item_id, class_id, source) VALUES (1, 1, 'oracle')")
    for source in SOURCES:  # and the constraint accepts every source the code knows
        store._connection.execute("SAVEPOINT probe")
        store._connection.execute("INSERT INTO labels (item_id, class_id, source) VALUES (1, 1, ?)", (source,))
        store._connection.execute("ROLLBACK TO probe")


# ------------------------------------------------------------------ trust


def test_model_never_overwrites_a_human_label(store):
    human = store.add_label(1, "cat", source="human")
    round_id = store.start_round()

    contradiction = store.add_label(1, "dog", source="model", raw_confidence=0.99, round_id=round_id, model_hash="m1")
    assert contradiction.outcome is Outcome.DISAGREEMENT and not contradiction.applied
    assert contradiction.label_id == human.label_id

    agreement = store.add_label(1, "cat", source="model", raw_confidence=0.9)
    assert agreement.outcome is Outcome.UNCHANGED and agreement.label_id == human.label_id

    (label,) = store.active_labels()
    assert (label.class_name, label.source) == ("cat", "human")
    assert len(store.label_history(1)) == 1
    (disagreement,) = store.disagreements()
    assert disagreement.id == contradiction.disagreement_id
    assert (disagreement.kept_class, disagreement.kept_source) == ("cat", "human")
    assert (disagreement.proposed_class, disagreement.source, disagreement.raw_confidence) == ("dog", "model", 0.99)
    assert (disagreement.round_id, disagreement.model_hash) == (round_id, "m1")
    assert store.summary()["open_disagreements"] == 1

    # A person labeling the item again settles it.
    settled = store.add_label(1, "dog", source="human")
    assert store.disagreements() == []
    (resolved,) = store.disagreements(include_resolved=True)
    assert resolved.resolved_by_label_id == settled.label_id


def test_imported_seed_label_is_protected_too(store):
    store.add_label(1, "cat", source="imported")
    assert store.add_label(1, "dog", source="model").outcome is Outcome.DISAGREEMENT
    assert store.add_label(1, "bird", source="generated").outcome is Outcome.DISAGREEMENT
    assert store.active_labels()[0].source == "imported"


def test_newer_labels_supersede_older_ones_and_history_is_kept(store):
    first_model = store.add_label(1, "dog", source="model", raw_confidence=0.7)
    second_model = store.add_label(1, "cat", source="model", raw_confidence=0.8)
    first_human = store.add_label(1, "bird", source="human")
    second_human = store.add_label(1, "cat", source="human")
    assert second_model.superseded_label_id == first_model.label_id
    assert first_human.superseded_label_id == second_model.label_id
    assert second_human.superseded_label_id == first_human.label_id

    history = store.label_history(1)
    assert [(label.class_name, label.source) for label in history] == [
        ("dog", "model"),
        ("cat", "model"),
        ("bird", "human"),
        ("cat", "human"),
    ]
    assert [label.superseded_by for label in history] == [
        second_model.label_id,
        first_human.label_id,
        second_human.label_id,
        None,
    ]
    assert [label.id for label in store.active_labels()] == [second_human.label_id]


def test_one_active_label_per_item_is_enforced_by_the_schema(store):
    store.add_label(1, "cat", source="human")
    with pytest.raises(sqlite3.IntegrityError):
        store._connection.execute("INSERT INTO labels (item_id, class_id, source) VALUES (1, 2, 'human')")


def test_label_counts_by_source_follow_the_active_labels(store):
    store.add_label(1, "cat", source="imported")
    store.add_label(2, "dog", source="model")
    store.add_label(2, "dog", source="human")  # supersedes the model label
    store.add_label(3, "bird", source="model")
    store.add_label(3, "cat", source="model")
    assert store.label_counts() == {"human": 1, "imported": 1, "generated": 0, "augmented": 0, "model": 1}
    summary = store.summary()
    assert summary["labels_by_class"] == {"cat": 2, "dog": 1, "bird": 0}
    assert (summary["labeled_items"], summary["unlabeled_items"]) == (3, 3)


# ------------------------------------------------------------------ questions


def test_answer_writes_the_human_label_and_closes_the_question(store):
    round_id = store.start_round()
    store.add_label(4, "dog", source="model", raw_confidence=0.55)
    question_id = store.ask(4, round_id=round_id, strategy="margin", score=0.1)
    assert [question.id for question in store.open_questions()] == [question_id]

    write = store.answer(question_id, "cat", oracle="terminal:alice")
    assert write.outcome is Outcome.WRITTEN
    (label,) = [label for label in store.active_labels() if label.item_id == 4]
    assert (label.class_name, label.source, label.question_id) == ("cat", "human", question_id)
    assert (label.round_id, label.query_strategy) == (round_id, "margin")
    assert store.open_questions() == []
    question = store.question(question_id)
    assert (question.answer, question.oracle) == ("cat", "terminal:alice") and question.answered_at


def test_answering_a_closed_question_raises_and_writes_nothing(store):
    question_id = store.ask(1, strategy="entropy")
    store.answer(question_id, "cat", oracle="alice")
    with pytest.raises(StoreError, match="already closed.*alice answered 'cat'.*nothing was written"):
        store.answer(question_id, "dog", oracle="bob")
    assert [(label.class_name, label.source) for label in store.label_history(1)] == [("cat", "human")]
    assert store.question(question_id).oracle == "alice"


def test_answer_with_an_unknown_class_leaves_the_question_open(store):
    question_id = store.ask(1, strategy="entropy")
    with pytest.raises(UnknownLabelError):
        store.answer(question_id, "zebra", oracle="alice")
    assert [question.id for question in store.open_questions()] == [question_id]
    assert store.active_labels() == []


def test_an_item_is_not_asked_twice_while_its_question_is_open(store):
    first = store.ask(1, strategy="margin", score=0.2)
    with pytest.raises(StoreError, match="already waits on question"):
        store.ask(1, strategy="entropy", score=0.9)
    assert [q.id for q in store.open_questions()] == [first]
    store.dismiss(first, oracle="alice")  # closed without a label
    assert store.question(first).answer is None and store.active_labels() == []
    assert store.ask(1, strategy="margin") != first
    with pytest.raises(BadInputError, match="no question with id 99"):
        store.answer(99, "cat", oracle="alice")


# ------------------------------------------------------------------ items, classes, rounds, artifacts


def test_duplicate_content_is_counted_and_a_duplicate_uri_refused(store):
    store.add_items([ItemRecord("copy/0.txt", content_hash("text 0"), "text")])
    assert store.summary()["duplicate_items"] == 1
    with pytest.raises(BadInputError, match="'pool/0.txt'.*already in the project"):
        store.add_items([ItemRecord("new.txt", "h", "text"), ItemRecord("pool/0.txt", "h", "text")])
    assert len(store.items()) == store.item_count() == 7  # the batch was all-or-nothing
    assert store.item_ids(["pool/2.txt", "copy/0.txt"]) == [3, 7]


def test_set_classes_adds_and_reorders_but_never_removes(store):
    store.add_label(1, "cat", source="human")
    store.set_classes(["bird", "cat", "dog", "fish"])
    assert store.classes() == ["bird", "cat", "dog", "fish"]
    assert store.active_labels()[0].class_name == "cat"
    with pytest.raises(BadInputError, match="class 'fish'.*cannot be removed"):
        store.set_classes(["bird", "cat", "dog"])
    with pytest.raises(BadInputError, match="listed twice"):
        store.set_classes(["bird", "cat", "dog", "fish", "cat"])


def test_rounds_keep_config_and_metrics(store):
    round_id = store.start_round({"target_precision": 0.95, "budget": 100})
    store.finish_round(round_id, {"accuracy": np.float64(0.9), "per_class": np.array([1, 2])})
    (finished,) = store.rounds()
    assert finished.status == "finished" and finished.finished_at
    assert finished.config == {"budget": 100, "target_precision": 0.95}
    assert finished.metrics == {"accuracy": 0.9, "per_class": [1, 2]}
    with pytest.raises(StoreError, match="not running"):
        store.finish_round(round_id, {})
    with pytest.raises(BadInputError, match="JSON"):
        store.start_round({"model": object()})


def test_artifacts_are_hashed_and_stored_relative_to_the_project(store, tmp_path):
    checkpoint = store.folder / "checkpoints" / "round1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    (checkpoint / "config.json").write_text("{}")
    report = tmp_path / "report.html"
    report.write_text("<html></html>")

    round_id = store.start_round()
    checkpoint_id = store.add_artifact("checkpoint", checkpoint, round_id=round_id, meta={"algo": "protonet"})
    store.add_artifact("report", report)
    stored = store._connection.execute("SELECT path FROM artifacts WHERE id = ?", (checkpoint_id,)).fetchone()[0]
    assert stored == "checkpoints/round1"
    (artifact,) = store.artifacts(kind="checkpoint")
    assert artifact.path == checkpoint.resolve() and artifact.meta == {"algo": "protonet"}
    assert artifact.sha256 == path_sha256(checkpoint)
    assert store.artifacts(kind="report")[0].path == report.resolve()

    (checkpoint / "model.safetensors").write_bytes(b"other weights")
    assert path_sha256(checkpoint) != artifact.sha256
    with pytest.raises(DataNotFoundError):
        store.add_artifact("report", tmp_path / "missing.html")


def test_content_hash_is_sha256_of_the_items_bytes():
    import hashlib

    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    row = np.array([0.5, 1.5], dtype=np.float32)
    assert content_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert content_hash(image) == hashlib.sha256(image.tobytes()).hexdigest()
    assert content_hash(image.T) == hashlib.sha256(np.ascontiguousarray(image.T).tobytes()).hexdigest()
    assert content_hash(row.astype(np.float64)) == content_hash(row) == hashlib.sha256(row.tobytes()).hexdigest()
    with pytest.raises(BadInputError):
        content_hash(3.0)


# ------------------------------------------------------------------ opening, migrations


def test_open_a_missing_project_says_how_to_make_one(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere.*metalabel init"):
        ProjectStore.open(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_create_over_an_existing_project_is_refused(store):
    with pytest.raises(StoreError, match="already holds a metalabel project"):
        ProjectStore.create(store.folder, name="again")


def test_reopen_keeps_everything(store):
    store.add_label(1, "cat", source="human")
    store.close()
    with ProjectStore.open(store.folder) as reopened:
        assert reopened.name == "proj" and reopened.classes() == CLASSES
        assert reopened.meta()["metalabel_version"] and reopened.meta()["created_at"]
        assert [label.class_name for label in reopened.active_labels()] == ["cat"]


def test_a_zero_byte_database_is_refused_never_made_into_a_project(tmp_path):
    # Before: a 0-byte project.db was silently migrated into a new, empty project.
    db = tmp_path / DB_FILENAME
    db.touch()
    with pytest.raises(StoreCorruptError, match=r"empty \(0 bytes\).*backup.*integrity_check"):
        ProjectStore.open(tmp_path)
    assert db.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == [DB_FILENAME]


def test_garbage_or_a_damaged_database_gives_a_typed_error_that_says_how_to_recover(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    (garbage / DB_FILENAME).write_bytes(noise)
    with pytest.raises(StoreCorruptError, match="not an SQLite database.*backup"):
        ProjectStore.open(garbage)
    assert (garbage / DB_FILENAME).read_bytes() == noise

    # A real store whose pages after the header were overwritten: SQLite's own check is quoted.
    damaged = tmp_path / "damaged"
    with ProjectStore.create(damaged, name="p") as store:
        store.set_classes(["a", "b"])
        store.add_items(ItemRecord(f"u{i}", "h", "text") for i in range(200))
    data = bytearray((damaged / DB_FILENAME).read_bytes())
    data[100:] = noise[: len(data) - 100] + noise[: max(0, len(data) - 100 - len(noise))]
    (damaged / DB_FILENAME).write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="integrity_check") as caught:
        ProjectStore.open(damaged)
    assert "Traceback" not in str(caught.value) and "backup" in str(caught.value)


def test_an_sqlite_file_without_a_metalabel_schema_is_refused_untouched(tmp_path):
    other = sqlite3.connect(tmp_path / DB_FILENAME)
    other.execute("PRAGMA user_version = 0")
    other.execute("VACUUM")  # a valid, empty database file
    other.close()
    before = (tmp_path / DB_FILENAME).read_bytes()
    with pytest.raises(StoreCorruptError, match="not a metalabel store"):
        ProjectStore.open(tmp_path)
    assert (tmp_path / DB_FILENAME).read_bytes() == before


def test_a_database_from_a_newer_metalabel_is_refused(tmp_path):
    with ProjectStore.create(tmp_path, name="future") as store:
        store._connection.execute(f"PRAGMA user_version = {schema.current_version() + 1}")
    with pytest.raises(SchemaVersionError, match="upgrade metalabel"):
        ProjectStore.open(tmp_path)


def test_a_new_migration_is_one_appended_function(tmp_path, monkeypatch):
    with ProjectStore.create(tmp_path, name="old") as store:
        store.set_classes(["a", "b"])
    version = schema.current_version()

    def add_class_colour(connection):
        connection.execute("ALTER TABLE classes ADD COLUMN colour TEXT NOT NULL DEFAULT 'grey'")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, add_class_colour])
    with ProjectStore.open(tmp_path) as store:
        assert schema.user_version(store._connection) == version + 1
        assert [tuple(row) for row in store._connection.execute("SELECT colour FROM classes")] == [("grey",), ("grey",)]


def test_a_failing_migration_leaves_the_last_whole_version(tmp_path, monkeypatch):
    with ProjectStore.create(tmp_path, name="old"):
        pass
    version = schema.current_version()

    def half_done(connection):
        connection.execute("CREATE TABLE scratch (x)")
        connection.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, half_done])
    with pytest.raises(StoreError, match=f"from version {version} to {version + 1} failed"):
        ProjectStore.open(tmp_path)
    monkeypatch.undo()
    with ProjectStore.open(tmp_path) as store:
        assert schema.user_version(store._connection) == version
        assert store._connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'scratch'").fetchone() is None


def test_a_database_that_is_not_a_project_is_refused(tmp_path):
    other = sqlite3.connect(tmp_path / DB_FILENAME)
    other.execute("CREATE TABLE something (x)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="not a metalabel store"):
        ProjectStore.open(tmp_path)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_FILENAME).write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        ProjectStore.open(garbage)


# ------------------------------------------------------------- synthetic items


def synthetic(uri: str, *, parents=(1,), kind="augmented", generator="augment", class_name="cat"):
    return SyntheticRecord(uri, content_hash(uri), kind, class_name, generator, "v1", row_in_artifact=0,
                           parents=parents)


def test_synthetic_items_keep_their_parents_generator_and_round(store, tmp_path):
    round_id = store.start_round()
    content = tmp_path / "generated.npz"
    np.savez(content, x=np.zeros((2, 4)))
    artifact = store.add_artifact("generated", content, round_id=round_id)
    ids = store.add_synthetic_items(
        [synthetic("gen/1/augment/0", parents=(1, 2)), synthetic("gen/1/vae/0", parents=(), kind="generated",
                                                                 generator="vae", class_name="dog")],
        round_id=round_id, artifact_id=artifact)
    first, second = store.synthetic_items()
    assert [first.id, second.id] == ids
    assert (first.parents, first.kind, first.generator, first.class_name, first.round_id, first.artifact_id) == (
        (1, 2), "augmented", "augment", "cat", round_id, artifact)
    assert second.class_name == "dog" and second.kept
    assert store.summary()["synthetic_items"] == {"augment": 1, "vae": 1}
    # synthetic items are not pool items and carry no pool labels
    assert len(store.items()) == 6 and store.active_labels() == []


def test_dropping_a_generator_marks_its_items_and_keeps_the_rows(store):
    round_id = store.start_round()
    store.add_synthetic_items([synthetic("a"), synthetic("b", generator="vae", kind="generated")], round_id=round_id)
    assert store.drop_synthetic_items(round_id=round_id, generator="augment") == 1
    assert [item.uri for item in store.synthetic_items(kept_only=True)] == ["b"]
    assert len(store.synthetic_items()) == 2
    assert store.summary()["synthetic_items"] == {"vae": 1}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (synthetic("x", parents=(99,)), "no item with id 99"),
        (synthetic("x", kind="imagined"), "kind 'imagined'"),
        (synthetic("x", class_name="fish"), "fish"),
    ],
)
def test_bad_synthetic_items_are_refused_and_nothing_written(store, record, match):
    with pytest.raises(BadInputError, match=match):
        store.add_synthetic_items([synthetic("fine"), record])
    assert store.synthetic_items() == []


def old_label(store: ProjectStore, item_id: int, class_name: str, **columns) -> int:
    """A label row as an older metalabel wrote it (today's add_label writes columns an old schema lacks)."""
    values = {"item_id": item_id, "class_id": store._class_id(class_name), **columns}
    cursor = store._connection.execute(
        f"INSERT INTO labels ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))
    return cursor.lastrowid


def test_a_version_1_project_gains_synthetic_items_and_keeps_its_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    with ProjectStore.create(tmp_path, name="old") as store:
        store.set_classes(["a", "b"])
        (item,) = store.add_items([ItemRecord("x.txt", content_hash("x"), "text")])
        old_label(store, item, "a", source="human")
    monkeypatch.undo()
    with ProjectStore.open(tmp_path) as store:
        assert schema.user_version(store._connection) == schema.current_version()
        assert [label.class_name for label in store.active_labels()] == ["a"]
        store.add_synthetic_items([SyntheticRecord("g", "h", "generated", "b", "vae", "v", 0, (item,))])
        assert store.synthetic_items()[0].parents == (item,)


def test_answered_questions_by_strategy(store):
    audit = store.ask(1, strategy="audit")
    margin = store.ask(2, strategy="margin")
    dismissed = store.ask(3, strategy="audit")
    store.answer(audit, "cat", oracle="ann")
    store.answer(margin, "dog", oracle="ann")
    store.dismiss(dismissed, oracle="ann")
    assert [q.id for q in store.answered_questions()] == [audit, margin]
    assert [(q.id, q.answer) for q in store.answered_questions(strategy="audit")] == [(audit, "cat")]


def test_a_version_2_project_gains_retraction_and_keeps_its_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    with ProjectStore.create(tmp_path, name="old") as store:
        store.set_classes(["a", "b"])
        (item,) = store.add_items([ItemRecord("x.txt", content_hash("x"), "text")])
        old_label(store, item, "a", source="model", calibrated_confidence=0.9)
    monkeypatch.undo()
    with ProjectStore.open(tmp_path) as store:
        assert schema.user_version(store._connection) == schema.current_version()
        (label,) = store.active_labels()
        assert label.class_name == "a" and label.certified_precision is None and label.retracted_at is None


def test_a_retracted_model_label_stays_on_record_and_stops_being_active(store):
    round_id = store.start_round()
    written = store.add_label(1, "cat", source="model", calibrated_confidence=0.97, threshold=0.9,
                              certified_precision=0.95, round_id=round_id)
    (label,) = store.active_labels()
    assert label.certified_precision == 0.95 and label.active
    later = store.start_round()
    store.retract_label(written.label_id, round_id=later, reason="confidence 0.80 below the certified threshold 0.90")
    assert store.active_labels() == [] and store.label_counts()["model"] == 0 and store.active_label(1) is None
    assert store.summary()["labeled_items"] == 0
    (retracted,) = store.retracted_labels()
    assert not retracted.active and retracted.retracted_round == later
    assert retracted.retraction_reason.startswith("confidence 0.80") and retracted.retracted_at
    # a later certificate may admit the item again: the new label supersedes the retracted one
    again = store.add_label(1, "cat", source="model", calibrated_confidence=0.99, round_id=later)
    assert again.applied and [x.id for x in store.active_labels()] == [again.label_id]
    assert store.active_label(1) == store.active_labels()[0] and store.active_label(2) is None
    assert store.label_history(1)[0].superseded_by == again.label_id


def test_only_active_model_labels_can_be_retracted(store):
    round_id = store.start_round()
    human = store.add_label(1, "cat", source="human")
    with pytest.raises(StoreError, match="only model labels"):
        store.retract_label(human.label_id, round_id=round_id, reason="no")
    model = store.add_label(2, "cat", source="model", calibrated_confidence=0.9)
    store.retract_label(model.label_id, round_id=round_id, reason="below threshold")
    with pytest.raises(StoreError, match="not an active label"):
        store.retract_label(model.label_id, round_id=round_id, reason="twice")
    with pytest.raises(BadInputError, match="needs a reason"):
        store.retract_label(human.label_id, round_id=round_id, reason=" ")
    assert [label.source for label in store.active_labels()] == ["human"]


def test_metrics_a_round_recorded_while_running_survive_its_failure(store):
    round_id = store.start_round()
    store.record_round_metrics(round_id, {"certificate": "certified", "certified_precision": 0.9})
    store.finish_round(round_id, {"interrupted": True}, status="failed")
    (closed,) = store.rounds()
    assert closed.status == "failed"
    assert closed.metrics == {"certificate": "certified", "certified_precision": 0.9, "interrupted": True}
    with pytest.raises(StoreError, match="not running"):
        store.record_round_metrics(round_id, {"late": 1})
    assert [q.strategy for q in store.dismissed_questions()] == []
    question = store.ask(1, strategy="reference")
    store.dismiss(question, oracle="terminal")
    assert [q.id for q in store.dismissed_questions(strategy="reference")] == [question]
    assert store.answered_questions(strategy="reference") == []


def test_a_reference_region_keeps_its_items_and_refuses_a_question_outside_it(store):
    round_id = store.start_round()
    region = store.add_reference_region([3, 1, 1], round_id=round_id, rule="most confident 2")
    assert store.reference_region(region).tolist() == [1, 3]
    inside = store.ask(3, strategy="reference", round_id=round_id, reference_region=region)
    with pytest.raises(BadInputError, match="not in reference region"):
        store.ask(2, strategy="reference", round_id=round_id, reference_region=region)
    store.answer(inside, "cat", oracle="ann")
    (question,) = store.answered_questions(strategy="reference")
    assert question.reference_region == region and store.open_questions() == []
    with pytest.raises(BadInputError, match="not in the project"):
        store.add_reference_region([1, 999], round_id=round_id, rule="x")


# ------------------------------------------------------------- changed answers


def test_a_changed_answer_supersedes_the_first_and_keeps_it_with_who_gave_it(store):
    question = store.ask(1, strategy="margin")
    first = store.answer(question, "cat", oracle="web:ann")
    changed = store.correct(question, "dog", oracle="web:ann")
    assert changed.outcome is Outcome.WRITTEN and changed.superseded_label_id == first.label_id
    again = store.correct(question, "bird", oracle="web:bo")  # undone and answered a second time
    assert [(a.class_name, a.oracle, a.active) for a in store.answers(question)] == [
        ("cat", "web:ann", False), ("dog", "web:ann", False), ("bird", "web:bo", True)]
    assert [label.id for label in store.label_history(1)] == [first.label_id, changed.label_id, again.label_id]
    asked = store.question(question)
    assert (asked.answer, asked.oracle) == ("bird", "web:bo")
    assert store.correct(question, "bird", oracle="web:bo").outcome is Outcome.UNCHANGED
    assert len(store.answers(question)) == 3
    assert store.summary()["answered_questions"] == 1


def test_correcting_an_open_or_dismissed_question_is_its_first_answer(store):
    dismissed = store.ask(1, strategy="margin")
    store.dismiss(dismissed, oracle="web:ann")
    assert store.correct(dismissed, "cat", oracle="web:ann").applied
    assert store.question(dismissed).answer == "cat"
    with pytest.raises(BadInputError, match="no question with id 99"):
        store.correct(99, "cat", oracle="web:ann")


def test_a_correction_never_overwrites_another_persons_later_answer(store):
    mine = store.ask(1, strategy="margin")
    store.answer(mine, "cat", oracle="web:ann")
    theirs = store.correct(store.ask(2, strategy="margin"), "dog", oracle="web:bo")  # another item: its own
    assert theirs.applied
    store.add_label(1, "dog", source="human")  # a person's label on the item since (a reviewed export)
    write = store.correct(mine, "bird", oracle="web:ann")
    assert write.outcome is Outcome.DISAGREEMENT
    [disagreement] = store.disagreements()
    assert (disagreement.kept_class, disagreement.proposed_class, disagreement.source) == ("dog", "bird", "human")
    assert store.question(mine).answer == "cat"  # the question keeps the answer it had


def test_a_model_label_corrected_on_review_twice_keeps_every_verdict(store):
    model = store.add_label(3, "cat", source="model", calibrated_confidence=0.7)
    audit = store.ask(3, strategy="audit")
    store.answer(audit, "cat", oracle="web:ann")  # confirmed
    store.correct(audit, "dog", oracle="web:ann")  # then corrected
    history = store.label_history(3)
    assert [(label.class_name, label.source, label.oracle) for label in history] == [
        ("cat", "model", None), ("cat", "human", "web:ann"), ("dog", "human", "web:ann")]
    assert history[0].id == model.label_id and [label.active for label in history] == [False, False, True]


def test_a_version_4_project_keeps_every_answer_and_takes_corrections(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
    with ProjectStore.create(tmp_path, name="old") as store:
        store.set_classes(CLASSES)
        items = store.add_items(ItemRecord(f"{i}.txt", content_hash(str(i)), "text") for i in range(3))
        round_id = store.start_round()
        seed = old_label(store, items[0], "cat", source="imported")
        # as version 4 recorded an answer: the question closed, a human label pointing at it
        question = store._connection.execute(
            f"INSERT INTO questions (item_id, round_id, strategy, answered_at, answer_class_id, oracle) VALUES "
            f"(?, ?, 'reference', {schema.NOW}, ?, 'terminal:ann')",
            (items[0], round_id, store._class_id("dog"))).lastrowid
        with store.batch():  # the old label points at the new one first (one active label per item)
            store._connection.execute(f"UPDATE labels SET superseded_by = {seed + 1} WHERE id = {seed}")
            answer = old_label(store, items[0], "dog", source="human", question_id=question, round_id=round_id,
                               query_strategy="reference")
        # and a change of answer as version 4's labeling page wrote it: a human label with no question
        with store.batch():
            store._connection.execute(f"UPDATE labels SET superseded_by = {answer + 1} WHERE id = {answer}")
            changed = old_label(store, items[0], "bird", source="human", round_id=round_id,
                                query_strategy="reference")
        model = old_label(store, items[1], "cat", source="model", calibrated_confidence=0.8, round_id=round_id)
        store._connection.execute(
            "INSERT INTO disagreements (item_id, kept_label_id, class_id, source) VALUES (?, ?, ?, 'human')",
            (items[0], changed, store._class_id("cat")))
        dismissed = store._connection.execute(
            f"INSERT INTO questions (item_id, strategy, answered_at, oracle) VALUES (?, 'margin', {schema.NOW}, "
            "'web:ann')", (items[2],)).lastrowid
        before = store._connection.execute("SELECT * FROM labels ORDER BY id").fetchall()
    monkeypatch.undo()
    with ProjectStore.open(tmp_path) as store:
        assert schema.user_version(store._connection) == schema.current_version()
        after = store._connection.execute("SELECT * FROM labels ORDER BY id").fetchall()
        assert [tuple(row)[:17] for row in after] == [tuple(row) for row in before]  # every row, every column
        assert [row["oracle"] for row in after] == [None, "terminal:ann", None, None]
        assert store._connection.execute("PRAGMA foreign_key_check").fetchall() == []
        assert store._connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert [label.class_name for label in store.label_history(items[0])] == ["cat", "dog", "bird"]
        assert [(d.kept_label_id, d.proposed_class) for d in store.disagreements()] == [(changed, "cat")]
        assert store.active_labels()[1].id == model
        # version 5: the dismissed question takes an answer, then a change of it; both are kept
        store.answer(dismissed, "cat", oracle="web:ann")
        store.correct(dismissed, "dog", oracle="web:ann")
        assert [(a.class_name, a.oracle) for a in store.answers(dismissed)] == [("cat", "web:ann"), ("dog", "web:ann")]
        with pytest.raises(sqlite3.IntegrityError):  # the rebuilt table still keeps one active label per item
            store._connection.execute("UPDATE labels SET superseded_by = NULL")
