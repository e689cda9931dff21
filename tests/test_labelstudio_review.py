"""Label Studio, both ways: an exported set reviewed in Label Studio comes back as human labels, the question
queue writes each open question once (predictions kept), tasks say why they were asked, and table rows are
shown under the file's column names, in questions and in exports.
"""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from helpers import review_pool
from metalabel import datasets
from metalabel.cli import main
from metalabel.errors import BadInputError
from metalabel.export import export_project
from metalabel.label.labelstudio import ASKED_BECAUSE_KEY, CURRENT_LABEL_KEY, LABEL_KEY, QUESTION_KEY
from metalabel.label.oracle import AUDIT, LabelStudioQueue, Query, put_questions
from metalabel.project import Project

REVIEWER = "rev@example.com"


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as file:
        return {row["uri"]: row for row in csv.DictReader(file)}


def snapshot(project: Project) -> list[str]:
    with sqlite3.connect(project.store.path) as other:
        return list(other.iterdump())


def choice(class_name: str, to_name: str = "text") -> list[dict]:
    return [{"from_name": "label", "to_name": to_name, "type": "choices", "value": {"choices": [class_name]}}]


def reviewed(tasks: list[dict], verdicts: dict[str, str]) -> list[dict]:
    """Label Studio's "JSON" export after a reviewer gave ``verdicts`` (class by uri) and left the rest.

    Annotations that came with the import (a person's label) are kept, under the importing user; a
    reviewer who changes one updates it, one who reviews a prediction adds an annotation.
    """
    exported = []
    for position, task in enumerate(json.loads(json.dumps(tasks))):
        annotations = [{**annotation, "completed_by": {"id": 1, "email": "admin@example.com"}}
                       for annotation in task.get("annotations", [])]
        verdict = verdicts.get(task["data"]["uri"])
        if verdict is not None:
            mine = {"completed_by": {"id": 7, "email": REVIEWER}, "result": choice(verdict), "was_cancelled": False}
            annotations = [mine]  # an imported annotation the reviewer changed, or the reviewer's own
        exported.append({"id": position + 1, "data": task["data"], "meta": task.get("meta", {}),
                         "annotations": annotations, "predictions": task.get("predictions", []), "project": 3})
    return exported


def write(path: Path, content) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path):
    """Six texts: two seed labels, three model labels, one unlabeled item."""
    pool = review_pool(tmp_path, "works fine", "meh")
    project = Project.create(tmp_path / "reviews-project", pool=pool)
    round_id = project.store.start_round({})
    for uri, class_name, confidence in ((pool.uris[2], "pos", 0.97), (pool.uris[3], "neg", 0.91),
                                        (pool.uris[4], "pos", 0.62)):
        (item_id,) = project.store.item_ids([uri])
        project.store.add_label(item_id, class_name, source="model", calibrated_confidence=confidence,
                                round_id=round_id, model_hash="ckpt-1")
    with project:
        yield project, pool


def active(project: Project, uri: str):
    (item_id,) = project.store.item_ids([uri])
    return next(label for label in project.store.label_history(item_id) if label.active)


# ------------------------------------------------------------------ the review loop


def test_a_reviewed_export_comes_back_as_human_labels_that_supersede_the_model(project, tmp_path):
    project, pool = project
    export = export_project(project.store, tmp_path / "review", format="labelstudio")
    tasks = json.loads((export.path / "tasks.json").read_text())
    assert all(isinstance(task["data"][LABEL_KEY], int) and task["meta"][LABEL_KEY] for task in tasks)

    # confirm one model label, correct another, leave the third; change a seed label, leave the other
    verdicts = {pool.uris[2]: "pos", pool.uris[4]: "neg", pool.uris[1]: "pos"}
    path = write(tmp_path / "reviewed.json", reviewed(tasks, verdicts))
    recorded = project.import_answers(path)
    assert (recorded.confirmed, recorded.corrected, recorded.answered, recorded.disagreements) == (1, 2, 0, 0)

    confirmed, corrected = active(project, pool.uris[2]), active(project, pool.uris[4])
    seed = active(project, pool.uris[1])
    assert (confirmed.class_name, confirmed.source, confirmed.query_strategy) == ("pos", "human", AUDIT)
    assert (corrected.class_name, corrected.source) == ("neg", "human")
    (item_id,) = project.store.item_ids([pool.uris[4]])
    model_label = project.store.label_history(item_id)[0]
    assert model_label.source == "model" and model_label.superseded_by == corrected.id  # kept, superseded
    assert (seed.class_name, seed.source) == ("pos", "human")
    assert active(project, pool.uris[3]).source == "model"  # not reviewed
    assert active(project, pool.uris[0]).source == "imported"  # a seed label left as it was exported
    assert {q.oracle for q in project.store.answered_questions(strategy=AUDIT)} == {f"labelstudio:{REVIEWER}"}

    rows = read_csv(export_project(project.store, tmp_path / "after", format="csv").path / "labels.csv")
    assert (rows[pool.uris[4]]["annotator"], rows[pool.uris[4]]["query_strategy"]) == (f"labelstudio:{REVIEWER}",
                                                                                       AUDIT)
    before = snapshot(project)
    again = project.import_answers(path)  # imported twice: nothing new
    assert (again.confirmed, again.corrected) == (0, 0) and snapshot(project) == before


def test_a_correction_of_a_persons_answer_is_a_disagreement_not_an_overwrite(project, tmp_path):
    project, pool = project
    (item_id,) = project.store.item_ids([pool.uris[5]])
    project.store.answer(project.store.ask(item_id, strategy="margin"), "neg", oracle="terminal")
    tasks = json.loads((export_project(project.store, tmp_path / "review", format="labelstudio").path
                        / "tasks.json").read_text())
    recorded = project.import_answers(write(tmp_path / "reviewed.json", reviewed(tasks, {pool.uris[5]: "pos"})))
    assert recorded.disagreements == 1 and (recorded.confirmed, recorded.corrected) == (0, 0)
    assert active(project, pool.uris[5]).class_name == "neg"
    (disagreement,) = project.store.disagreements()
    assert (disagreement.proposed_class, disagreement.source) == ("pos", "human")


def test_refused_reviews_change_nothing(project, tmp_path):
    project, pool = project
    tasks = json.loads((export_project(project.store, tmp_path / "review", format="labelstudio").path
                        / "tasks.json").read_text())
    export = reviewed(tasks, {pool.uris[2]: "neg"})
    before = snapshot(project)

    json_min = [{"id": 1, **export[2]["data"], "label": "neg", "annotator": REVIEWER}]
    with pytest.raises(BadInputError, match="'JSON' export, not 'JSON-MIN'"):
        project.import_answers(write(tmp_path / "min.json", json_min))

    moved = json.loads(json.dumps(export))
    moved[2]["data"][LABEL_KEY] = moved[2]["meta"][LABEL_KEY] = tasks[3]["meta"][LABEL_KEY]
    with pytest.raises(BadInputError, match=f"task 2 .*label {tasks[3]['meta'][LABEL_KEY]} is not a label of item"):
        project.import_answers(write(tmp_path / "moved.json", moved))

    foreign = json.loads(json.dumps(export))
    foreign[0]["data"]["metalabel_project"] = foreign[0]["meta"]["project"] = "other@2020"
    with pytest.raises(BadInputError, match="comes from project 'other@2020'"):
        project.import_answers(write(tmp_path / "foreign.json", foreign))

    # the reviewer saw the model's label: that answer cannot be a reference answer about the item
    (item_id,) = project.store.item_ids([pool.uris[2]])
    project.store.ask(item_id, strategy="reference")
    before = snapshot(project)
    with pytest.raises(BadInputError, match="waits on reference question .*did not see the model's label"):
        project.import_answers(write(tmp_path / "reviewed.json", export))
    assert snapshot(project) == before


def test_a_model_label_whose_item_waits_on_a_reference_question_is_not_put_up_for_review(project, tmp_path):
    project, pool = project
    (item_id,) = project.store.item_ids([pool.uris[2]])
    project.store.ask(item_id, strategy="reference")
    export = export_project(project.store, tmp_path / "review", format="labelstudio")
    uris = [task["data"]["uri"] for task in json.loads((export.path / "tasks.json").read_text())]
    # the reviewer would see the model's guess, and the reference answer is evidence only without it
    assert pool.uris[2] not in uris and export.skipped == {"awaits_reference_answer": 1}
    assert {pool.uris[0], pool.uris[1], pool.uris[3], pool.uris[4]} == set(uris)
    # other formats are not put before a labeler: the label stays in them
    csv_rows = read_csv(export_project(project.store, tmp_path / "csv", format="csv").path / "labels.csv")
    assert pool.uris[2] in csv_rows


def test_a_review_answers_an_open_question_about_the_item(project, tmp_path):
    project, pool = project
    tasks = json.loads((export_project(project.store, tmp_path / "review", format="labelstudio").path
                        / "tasks.json").read_text())
    (item_id,) = project.store.item_ids([pool.uris[3]])
    question_id = project.store.ask(item_id, strategy="margin")
    recorded = project.import_answers(write(tmp_path / "reviewed.json", reviewed(tasks, {pool.uris[3]: "pos"})))
    assert recorded.corrected == 1 and project.store.open_questions() == []
    assert project.store.question(question_id).answer == "pos"  # not asked twice


# ------------------------------------------------------------------ the question queue


def ask_and_put(project: Project, queue: LabelStudioQueue, uris: list[str], *, strategy: str = "margin",
                suggest: bool = True) -> None:
    pool = project.load_pool()
    for uri in uris:
        (item_id,) = project.store.item_ids([uri])
        if not any(q.item_id == item_id for q in project.store.open_questions()):
            project.store.ask(item_id, strategy=strategy)
    queries = [Query(q.id, q.item_id, q.uri, pool.items[pool.uris.index(q.uri)], pool.class_names,
                     "pos" if suggest else None, 0.7 if suggest else None) for q in project.store.open_questions()]
    put_questions(project.store, queue, queries)


def test_asking_again_before_an_import_writes_each_open_question_once_keeping_predictions(project, tmp_path):
    project, pool = project
    queue = LabelStudioQueue(tmp_path / "queue")
    ask_and_put(project, queue, pool.uris[2:4])
    [first] = sorted((tmp_path / "queue").glob("tasks-*.json"))
    written = first.read_bytes()
    assert all(task["predictions"] for task in json.loads(written))

    ask_and_put(project, queue, [], suggest=False)  # a resumed run puts the open questions again, unscored
    assert sorted((tmp_path / "queue").glob("tasks-*.json")) == [first] and first.read_bytes() == written

    ask_and_put(project, queue, [pool.uris[5]])  # the next round asks one more
    files = sorted((tmp_path / "queue").glob("tasks-*.json"))
    assert len(files) == 2
    ids = [[task["meta"][QUESTION_KEY] for task in json.loads(path.read_text())] for path in files]
    assert ids == [[1, 2], [3]]  # no question twice


def test_question_tasks_say_why_they_were_asked_and_the_label_now_but_never_for_a_reference_question(
        project, tmp_path):
    project, pool = project
    queue = LabelStudioQueue(tmp_path / "queue")
    ask_and_put(project, queue, [pool.uris[2]])  # a model label "pos"
    ask_and_put(project, queue, [pool.uris[3]], strategy="reference")  # a model label "neg", hidden
    ask_and_put(project, queue, [pool.uris[5]], strategy="label-issue")
    tasks = {task["data"]["metalabel_uri"]: task["data"]
             for path in sorted((tmp_path / "queue").glob("tasks-*.json")) for task in json.loads(path.read_text())}
    assert (tasks[pool.uris[2]][ASKED_BECAUSE_KEY], tasks[pool.uris[2]][CURRENT_LABEL_KEY]) == ("margin",
                                                                                                "pos (model)")
    assert tasks[pool.uris[3]][ASKED_BECAUSE_KEY] == "reference"
    assert "neg" not in tasks[pool.uris[3]][CURRENT_LABEL_KEY] and "not shown" in tasks[pool.uris[3]][CURRENT_LABEL_KEY]
    assert (tasks[pool.uris[5]][ASKED_BECAUSE_KEY], tasks[pool.uris[5]][CURRENT_LABEL_KEY]) == ("label-issue", "none")
    config = ElementTree.fromstring((tmp_path / "queue" / "label_config.xml").read_text())
    assert [text.get("value") for text in config.iter("Text")] == [f"${ASKED_BECAUSE_KEY}", f"${CURRENT_LABEL_KEY}",
                                                                   "$text"]


# ------------------------------------------------------------------------ tables


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "flowers.csv"
    path.write_text("petal_length,petal_width,label\n1.5,0.25,setosa\n4.5,1.5,versicolor\n1.4,0.2,\n4.7,1.4,\n",
                    encoding="utf-8")
    return path


def test_a_table_project_exports_for_label_studio_under_its_column_names(table, tmp_path):
    pool = datasets.read_table(table)
    with Project.create(tmp_path / "flowers", pool=pool) as project:
        result = export_project(project.store, tmp_path / "out", format="labelstudio")
    tasks = json.loads((result.path / "tasks.json").read_text())
    assert [task["data"]["table"] for task in tasks] == [{"petal_length": 1.5, "petal_width": 0.25},
                                                         {"petal_length": 4.5, "petal_width": 1.5}]
    config = ElementTree.fromstring((result.path / "label_config.xml").read_text())
    assert config.find("Table").attrib == {"name": "table", "value": "$table"}
    assert config.find("Choices").get("toName") == "table"


def test_table_questions_through_the_cli_show_column_names_and_a_second_run_adds_no_duplicates(
        table, tmp_path, capsys):
    folder = tmp_path / "flowers"
    assert main(["init", str(folder), "--pool", str(table)]) == 0
    run = ["run", str(folder), "--oracle", "labelstudio", "--budget", "2", "--per-round", "2", "--quiet"]
    assert main(run) == 0
    [tasks_file] = (folder / "labelstudio").glob("tasks-*.json")
    written = tasks_file.read_bytes()
    tasks = json.loads(written)
    assert len(tasks) == 2 and all(set(task["data"]["table"]) == {"petal_length", "petal_width"} for task in tasks)

    assert main(run) == 0  # again, before the answers came back
    assert list((folder / "labelstudio").glob("tasks-*.json")) == [tasks_file] and tasks_file.read_bytes() == written

    answered = [{**task, "id": i, "annotations": [{"completed_by": {"email": "a@b.c"},
                                                   "result": choice("setosa", "table")}]}
                for i, task in enumerate(tasks)]
    capsys.readouterr()
    assert main(["import-answers", str(folder), str(write(tmp_path / "export.json", answered))]) == 0
    assert "2 answers recorded" in capsys.readouterr().out


def test_the_queue_needs_as_many_column_names_as_values(tmp_path):
    queue = LabelStudioQueue(tmp_path / "queue", feature_names=["a", "b", "c"])
    query = Query(1, 1, "rows.csv#1", np.array([1.0, 2.0], np.float32), ("x", "y"), content_hash="h", project="p")
    with pytest.raises(BadInputError, match="2 values but the queue knows 3 column names"):
        queue.export_tasks([query])


def test_a_task_file_that_cannot_be_read_stops_the_queue_naming_it(project, tmp_path):
    project, pool = project
    queue = LabelStudioQueue(tmp_path / "queue")
    ask_and_put(project, queue, [pool.uris[2]])
    [tasks_file] = (tmp_path / "queue").glob("tasks-*.json")
    tasks_file.write_text("[{", encoding="utf-8")  # edited by hand: which questions it holds is unknown
    with pytest.raises(BadInputError, match=f"{tasks_file.name}.*cannot be read as a task file.*delete it"):
        ask_and_put(project, queue, [pool.uris[3]])
