"""Label Studio import: every task is checked against the project, and an import is all or nothing.

An answer must land on the item the person saw, in the project that asked: a task whose
question belongs to another item, whose content changed, or that another project exported
refuses the whole file, and a refused import leaves the store exactly as it was.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from helpers import label_studio_user, pet_image_folder
from metalabel.cli import main
from metalabel.errors import BadInputError, MetalabelError, StoreError
from metalabel.label.oracle import QUESTION_KEY, LabelStudioQueue, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore

CLASSES = ("cat", "dog", "bird")


def make_store(folder: Path, *, name: str = "pets", items: int = 6) -> ProjectStore:
    store = ProjectStore.create(folder, name=name)
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(items))
    return store


def export_questions(store: ProjectStore, queue_folder: Path, item_ids: list[int] | None = None) -> list[dict]:
    """Ask about the items and put the questions to a Label Studio queue; returns the tasks written."""
    queries = []
    for item in store.items():
        if item_ids is None or item.id in item_ids:
            question_id = store.ask(item.id, strategy="margin")
            queries.append(Query(question_id, item.id, item.uri, f"text of {item.uri}", CLASSES, "cat", 0.6))
    put_questions(store, LabelStudioQueue(queue_folder), queries)
    [tasks_file] = sorted(queue_folder.glob("tasks-*.json"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads(tasks_file.read_text())


def annotation(choice: str | None, *, who: str = "ann@example.com", cancelled: bool = False) -> dict:
    result = [] if choice is None else [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}
    ]
    return {"completed_by": label_studio_user(who), "result": result, "was_cancelled": cancelled}


def labeled(tasks: list[dict], annotations: dict[int, list[dict]]) -> list[dict]:
    """Label Studio's "JSON" export after labeling: ``annotations`` by question id; the rest unlabeled."""
    tasks = json.loads(json.dumps(tasks))  # a copy: tests change tasks of one export only
    return [
        {"id": position + 1, "annotations": annotations.get(task["meta"][QUESTION_KEY], []), "drafts": [],
         "predictions": [], "data": task["data"], "meta": task["meta"], "project": 1}
        for position, task in enumerate(tasks)
    ]


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def snapshot(store: ProjectStore) -> tuple[list[str], bytes]:
    """Every row of the database, and the bytes of its files: what 'unchanged' means."""
    with sqlite3.connect(store.path) as other:
        rows = list(other.iterdump())
    files = b"".join(p.read_bytes() for p in sorted(store.folder.glob("project.db*")) if p.is_file())
    return rows, files


@pytest.fixture
def store(tmp_path):
    store = make_store(tmp_path / "pets")
    yield store
    store.close()


def imported(store, path):
    return LabelStudioQueue(store.folder / "labelstudio").import_annotations(path, store=store)


# ------------------------------------------------------------------ the round trip


def test_answers_skips_and_unlabeled_tasks_round_trip(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    export = labeled(tasks, {1: [annotation("dog")], 2: [annotation("cat", who="bob@x")],
                             3: [annotation(None, cancelled=True)], 4: [annotation(None)]})
    recorded = imported(store, write(tmp_path / "export.json", export))
    assert (recorded.answered, recorded.dismissed, recorded.already_closed, recorded.disagreements) == (2, 2, [], 0)
    assert [(q.id, q.answer, q.oracle) for q in store.answered_questions()] == [
        (1, "dog", "labelstudio:ann@example.com"), (2, "cat", "labelstudio:bob@x")]
    assert [q.id for q in store.open_questions()] == [5, 6]  # not labeled yet: still open


def test_json_min_export_is_read_too(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    minimal = [{"id": 1, **tasks[0]["data"], "label": "bird", "annotator": "ann@example.com"},
               {"id": 2, **tasks[1]["data"]}]
    assert imported(store, write(tmp_path / "min.json", minimal)).answered == 1
    assert store.question(1).answer == "bird" and store.open_questions()[0].id == 2


# --------------------------------------------------- answers on the wrong item (item 3)


def test_a_task_whose_question_belongs_to_another_item_refuses_the_file_and_changes_nothing(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    tasks[2]["meta"][QUESTION_KEY] = tasks[2]["data"][QUESTION_KEY] = 5  # question 5 is about pool/4.txt
    before = snapshot(store)
    export = write(tmp_path / "export.json", labeled(tasks, {1: [annotation("dog")], 5: [annotation("bird")]}))
    with pytest.raises(BadInputError, match=r"task 2 .*shows item 'pool/2.txt', but question 5 is about item "
                                            r"'pool/4.txt'.*nothing was imported") as error:
        imported(store, export)
    assert str(export) in str(error.value)
    assert snapshot(store) == before  # task 0's good answer was not written either


def test_an_export_of_another_project_is_refused_even_over_the_same_pool(store, tmp_path):
    other = make_store(tmp_path / "other", name="pets")  # same name, same pool, same question ids
    other_tasks = export_questions(other, tmp_path / "other-queue")
    other.close()
    export_questions(store, tmp_path / "queue")
    before = snapshot(store)
    export = write(tmp_path / "export.json", labeled(other_tasks, {q: [annotation("dog")] for q in range(1, 7)}))
    with pytest.raises(BadInputError, match="task 0 .*comes from project 'pets@.*not this one"):
        imported(store, export)
    assert snapshot(store) == before and store.answered_questions() == []


def test_a_task_showing_changed_content_is_refused(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    tasks[1]["meta"]["content_hash"] = tasks[1]["data"]["metalabel_content_hash"] = "0" * 64
    before = snapshot(store)
    with pytest.raises(BadInputError, match="task 1 .*other content than the project holds"):
        imported(store, write(tmp_path / "e.json", labeled(tasks, {2: [annotation("dog")]})))
    assert snapshot(store) == before


def test_meta_and_data_that_disagree_about_the_question_are_refused(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    tasks[0]["data"][QUESTION_KEY] = 2
    with pytest.raises(BadInputError, match="task 0 .*disagree about metalabel_question_id"):
        imported(store, write(tmp_path / "e.json", labeled(tasks, {1: [annotation("dog")]})))


def test_an_old_export_without_the_items_identity_is_refused_with_what_to_do(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    for task in tasks:  # what tasks exported before the check carried
        for key in ("content_hash", "project"):
            task["meta"].pop(key)
        for key in ("metalabel_content_hash", "metalabel_project"):
            task["data"].pop(key)
    with pytest.raises(BadInputError, match="carries no project and no content hash.*writes now"):
        imported(store, write(tmp_path / "e.json", labeled(tasks, {1: [annotation("dog")]})))


def test_a_class_outside_the_project_refuses_the_file(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    before = snapshot(store)
    with pytest.raises(BadInputError, match="task 1: the class 'zebra' is not one of the project's classes"):
        imported(store, write(tmp_path / "e.json", labeled(tasks, {1: [annotation("dog")], 2: [annotation("zebra")]})))
    assert snapshot(store) == before


# ---------------------------------------------- skips, repeats, disagreements (item 7)


def test_a_task_skipped_in_one_export_and_labeled_in_a_later_one_is_recorded(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    first = imported(store, write(tmp_path / "1.json", labeled(tasks, {1: [annotation(None, cancelled=True)]})))
    assert first.dismissed == 1 and store.question(1).answer is None
    later = labeled(tasks, {1: [annotation(None, cancelled=True), annotation("bird", who="bob@x")]})
    second = imported(store, write(tmp_path / "2.json", later))
    assert second.answered == 1 and store.question(1).answer == "bird"
    assert [(label.uri, label.class_name, label.source) for label in store.active_labels()] == [
        ("pool/0.txt", "bird", "human")]


def test_two_annotations_that_disagree_are_a_recorded_disagreement_not_last_wins(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    export = labeled(tasks, {1: [annotation("dog"), annotation("cat", who="bob@x")],
                             2: [annotation("bird"), annotation("cat", who="b@x"), annotation("cat", who="c@x")]})
    recorded = imported(store, write(tmp_path / "e.json", export))
    assert (recorded.answered, recorded.disagreements) == (2, 2)
    labels = {label.uri: label.class_name for label in store.active_labels()}
    assert labels == {"pool/0.txt": "dog", "pool/1.txt": "cat"}  # the first on a tie; the majority otherwise
    assert sorted((d.uri, d.kept_class, d.proposed_class, d.source) for d in store.disagreements()) == [
        ("pool/0.txt", "dog", "cat", "human"), ("pool/1.txt", "cat", "bird", "human")]
    again = imported(store, write(tmp_path / "e.json", export))  # the same export again
    assert (again.answered, again.disagreements, again.already_closed) == (0, 0, [1, 2])
    assert len(store.disagreements()) == 2


def test_two_tasks_of_one_question_that_disagree_are_recorded_too(store, tmp_path):
    tasks = export_questions(store, tmp_path / "queue")
    twice = labeled(tasks[:1], {1: [annotation("dog")]}) + labeled(tasks[:1], {1: [annotation("bird", who="b@x")]})
    assert imported(store, write(tmp_path / "e.json", twice)).disagreements == 1
    [disagreement] = store.disagreements()
    assert (disagreement.kept_class, disagreement.proposed_class) == ("dog", "bird")


def test_a_later_export_with_another_persons_answer_records_a_disagreement(store, tmp_path):
    # the same person's later answer is her change (tests/test_reliability_changes.py)
    tasks = export_questions(store, tmp_path / "queue")
    imported(store, write(tmp_path / "1.json", labeled(tasks, {1: [annotation("dog")]})))
    recorded = imported(store, write(tmp_path / "2.json", labeled(tasks, {1: [annotation("cat", who="bob@x")]})))
    assert (recorded.already_closed, recorded.disagreements) == ([1], 1)
    assert store.question(1).answer == "dog" and store.disagreements()[0].proposed_class == "cat"


def test_an_import_that_fails_while_writing_writes_nothing(store, tmp_path, monkeypatch):
    tasks = export_questions(store, tmp_path / "queue")
    export = write(tmp_path / "e.json", labeled(tasks, {q: [annotation("dog"), annotation("cat", who="bob@x")]
                                                               for q in (1, 2, 3)}))
    before = snapshot(store)
    calls = []

    def fails_on_the_third(question_id, class_name, *, oracle):
        calls.append(question_id)
        if len(calls) == 3:
            raise StoreError("disk full")
        return ProjectStore.add_human_disagreement(store, question_id, class_name, oracle=oracle)

    monkeypatch.setattr(store, "add_human_disagreement", fails_on_the_third)
    with pytest.raises(StoreError, match="disk full; nothing was imported"):
        imported(store, export)
    assert snapshot(store)[0] == before[0]  # the two questions answered before the failure were rolled back


# --------------------------------------------------- bad input is a typed error (item 14)


@pytest.mark.parametrize("question_id", ["²", "١٢", 10**30, -1, 0, 1.5, True, "1e3", " ", [1], {"a": 1}, "9" * 5000])
def test_odd_question_ids_are_typed_errors(store, tmp_path, question_id):
    tasks = export_questions(store, tmp_path / "queue")
    task = labeled(tasks, {1: [annotation("dog")]})[0]
    task["meta"][QUESTION_KEY] = task["data"][QUESTION_KEY] = question_id
    before = snapshot(store)
    with pytest.raises(BadInputError, match="task 0 .*not a question id"):
        imported(store, write(tmp_path / "e.json", [task]))
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('[{"x": ' + "9" * 6000 + "}]", "is not JSON"),
        ('{"tasks": []}', "expected a list of tasks"),
        ('[{"data": {"text": "a"}, "annotations": []}]',
         f"task 0: carries neither a {QUESTION_KEY} .* nor a metalabel_label_id"),
        (f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": []}}, 5]', "task 1: is not a JSON object"),
        (f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": {{}}}}]', "task 0: 'annotations' is not a list"),
        (f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": [{{"result": [{{"type": "choices", '
         f'"from_name": "label", "value": {{"choices": ["cat", "dog"]}}}}]}}]}}]', "task 0: expected exactly one"),
    ],
)
def test_a_malformed_export_names_the_file_and_the_task(store, tmp_path, content, problem):
    path = write(tmp_path / "export.json", content)
    with pytest.raises(BadInputError, match=problem) as error:
        imported(store, path)
    assert str(path) in str(error.value) and "nothing was imported" in str(error.value)


def test_missing_and_undecodable_files_are_typed_errors(store, tmp_path):
    with pytest.raises(MetalabelError, match="does not exist"):
        imported(store, tmp_path / "nope.json")
    (tmp_path / "latin1.json").write_bytes(b'[{"a": "\xe9"}]')
    with pytest.raises(BadInputError, match="not UTF-8"):
        imported(store, tmp_path / "latin1.json")
    with pytest.raises(BadInputError, match="is a folder"):
        imported(store, tmp_path)


# ------------------------------------------------------------------------ the CLI


def test_import_answers_cli_says_what_it_recorded_and_that_a_refusal_changed_nothing(tmp_path, capsys):

    from metalabel.project import Project

    pet_image_folder(tmp_path / "pool", per_folder=3)
    (tmp_path / "seed.csv").write_text("uri,label\ncat/0.png,cat\ndog/1.png,dog\n")
    init = ["init", str(tmp_path / "p"), "--pool", str(tmp_path / "pool"), "--labels", str(tmp_path / "seed.csv")]
    assert main(init) == 0
    with Project.open(tmp_path / "p") as project:
        store = project.store
        queries = []
        for item in store.items():
            if "/unlabeled/" in item.uri:
                queries.append(Query(store.ask(item.id, strategy="margin"), item.id, item.uri, None, ("cat", "dog")))
        put_questions(store, LabelStudioQueue(project.folder / "labelstudio"), queries)
    [tasks_file] = (tmp_path / "p" / "labelstudio").glob("tasks-*.json")
    tasks = json.loads(tasks_file.read_text())
    capsys.readouterr()

    bad = labeled(tasks, {1: [annotation("cat")]})
    bad[1]["data"]["metalabel_uri"] = bad[1]["meta"]["uri"] = tasks[0]["meta"]["uri"]
    db = tmp_path / "p" / "project.db"
    before = db.read_bytes()
    assert main(["import-answers", str(tmp_path / "p"), str(write(tmp_path / "bad.json", bad))]) == 2
    err = capsys.readouterr().err
    assert "task 1" in err and "nothing was imported" in err and "Traceback" not in err
    assert db.read_bytes() == before

    good = labeled(tasks, {1: [annotation("cat")], 2: [annotation("dog"), annotation("cat", who="b@x")]})
    assert main(["import-answers", str(tmp_path / "p"), str(write(tmp_path / "good.json", good))]) == 0
    out = capsys.readouterr().out
    assert "2 answers recorded" in out and "1 disagreements between annotators" in out
