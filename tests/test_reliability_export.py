"""Reliability: an export taken while people keep answering is one moment of the project.

The writer lock invites it ("reading (`metalabel status`, `report`, `export`) works meanwhile"): a
`metalabel serve` session or a run commits answers while an export reads the store. The export reads
several tables; each answer it writes must come whole, with who gave it, or not at all. Here another
connection (another process's, as a serve session's) commits an answer at the moment the export reads
the labels: the worst moment for an export that reads its tables one by one.
"""

from __future__ import annotations

import csv
import json

import pytest

from helpers import review_pool
from metalabel import datasets
from metalabel.errors import StoreError
from metalabel.project import Project
from metalabel.store import ProjectStore


def test_an_answer_committed_while_an_export_reads_comes_whole_or_not_at_all(tmp_path, monkeypatch):
    pool = review_pool(tmp_path)
    with Project.create(tmp_path / "reviews", pool=pool) as project:
        [first, second] = [store_item.id for store_item in project.store.items()][2:]
        answered = project.store.ask(first, strategy="margin")
        project.store.answer(answered, "pos", oracle="web:ann")
        late = project.store.ask(second, strategy="margin")

        reads_labels = ProjectStore.active_labels

        def a_person_answers_meanwhile(store: ProjectStore):
            if store is project.store and not hasattr(a_person_answers_meanwhile, "done"):
                a_person_answers_meanwhile.done = True  # type: ignore[attr-defined]
                with ProjectStore.open(store.folder) as session:  # the serve session's own connection
                    session.answer(late, "neg", oracle="web:bob")
            return reads_labels(store)

        monkeypatch.setattr(ProjectStore, "active_labels", a_person_answers_meanwhile)
        result = project.export(tmp_path / "out", format="csv")
        assert getattr(a_person_answers_meanwhile, "done", False)

    with (result.path / "labels.csv").open(encoding="utf-8") as file:
        rows = {row["uri"]: row for row in csv.DictReader(file)}
    human = {uri: (row["label"], row["annotator"]) for uri, row in rows.items() if row["source"] == "human"}
    # ann's answer with its annotator; bob's either whole (label and annotator) or not yet
    assert human.get(pool.uris[2]) == ("pos", "web:ann")
    assert human.get(pool.uris[3]) in (None, ("neg", "web:bob")), human
    assert (result.path / "export.json").is_file()


def test_nothing_is_written_while_the_store_is_read_as_one_moment(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        with store.reading(), pytest.raises(StoreError, match="ProjectStore.reading"):
            store.set_meta("note", "x")
        store.set_meta("note", "y")  # after it, writes go on as before
        assert store.meta()["note"] == "y"


def test_a_label_studio_export_names_the_person_whose_answer_disagrees(tmp_path):
    pool_file = tmp_path / "reviews.csv"
    pool_file.write_text("text,label\ngreat phone,pos\nbroke in a day,neg\nlove the screen,\n", encoding="utf-8")
    pool = datasets.read_text(pool_file)
    with Project.create(tmp_path / "reviews", pool=pool) as project:
        [item] = project.store.item_ids([pool.uris[2]])
        asked = project.store.ask(item, strategy="margin")
        project.store.answer(asked, "pos", oracle="labelstudio:ann@x")
        project.store.add_human_disagreement(asked, "neg", oracle="labelstudio:bob@x")  # a second annotator
        result = project.export(tmp_path / "out", format="labelstudio")
        table = project.export(tmp_path / "table", format="csv")
    with (table.path / "labels.csv").open(encoding="utf-8") as rows:
        [row] = [row for row in csv.DictReader(rows) if row["uri"] == pool.uris[2]]
    assert (row["disagreement"], row["disagreement_class"], row["disagreement_by"]) == ("True", "neg",
                                                                                        "labelstudio:bob@x")
    tasks = {task["data"]["uri"]: task for task in json.loads((result.path / "tasks.json").read_text())}
    disputed = tasks[pool.uris[2]]
    assert disputed["annotations"][0]["result"][0]["value"] == {"choices": ["pos"]}
    [other] = disputed["predictions"]  # bob's answer beside ann's, under his name, for the reviewer to weigh
    assert (other["result"][0]["value"], other["model_version"]) == ({"choices": ["neg"]}, "labelstudio:bob@x")
