"""The Python API covers what the CLI does: seed labels and gold from a pool, a learner from a run
folder, importing answers, and the front-door names of ``import metalabel``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import metalabel as ml
from helpers import pet_image_folder
from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import BadInputError, DataNotFoundError, ProjectLockedError
from metalabel.label.oracle import QUESTION_KEY, LabelStudioQueue, Query, put_questions
from metalabel.project import Project


def table_pool(labels: list[int], classes=("a", "b", "c")) -> LabeledDataset:
    rows = np.arange(len(labels) * 2, dtype=np.float32).reshape(len(labels), 2)
    return LabeledDataset(name="t", modality="tabular", items=rows, labels=np.array(labels),
                          class_names=list(classes), uris=[f"row/{i}" for i in range(len(labels))])


# ------------------------------------------------------------------ front door


def test_the_front_door_names_are_listed_and_resolve():
    for name in ("Project", "meta_train", "datasets", "errors", "load_run", "LabeledDataset", "__version__"):
        assert name in ml.__all__
        assert name in dir(ml)
    for name in ml.__all__:
        assert getattr(ml, name) is not None, name
    assert ml.Project is Project
    assert ml.datasets.seed_labels_from_pool is not None
    with pytest.raises(AttributeError):
        ml.no_such_name  # noqa: B018


# ------------------------------------------------------------------ seeds and gold


def test_seed_labels_are_per_class_from_the_pools_own_labels_and_seeded():
    pool = table_pool([0, 0, 0, 1, 1, 1, 2, 2, 2, UNLABELED])
    seeds = ml.datasets.seed_labels_from_pool(pool, per_class=2, seed=3)
    assert len(seeds) == 6
    assert sorted(seeds.values()) == ["a", "a", "b", "b", "c", "c"]
    assert all(pool.class_names[pool.labels[index]] == name for index, name in seeds.items())
    assert seeds == ml.datasets.seed_labels_from_pool(pool, per_class=2, seed=3)
    draws = {tuple(sorted(ml.datasets.seed_labels_from_pool(pool, per_class=1, seed=s))) for s in range(8)}
    assert len(draws) > 1  # the seed chooses


def test_seed_labels_refuse_a_class_with_too_few_items_by_name():
    pool = table_pool([0, 0, 0, 1, 2, 2])
    with pytest.raises(BadInputError, match="only 1 labeled items") as caught:
        ml.datasets.seed_labels_from_pool(pool, per_class=2, seed=0)
    assert caught.value.cls == "b"
    with pytest.raises(BadInputError, match="per_class"):
        ml.datasets.seed_labels_from_pool(pool, per_class=0, seed=0)


def test_gold_labels_name_every_labeled_item_and_skip_the_unlabeled():
    pool = table_pool([0, 1, UNLABELED, 2])
    assert ml.datasets.gold_labels(pool) == {"row/0": "a", "row/1": "b", "row/3": "c"}


# ------------------------------------------------------------------ a learner from a run folder


def test_load_run_reads_a_run_folders_best_checkpoint_or_a_checkpoint_folder(tmp_path):
    from metalabel.meta.backbones import build_backbone
    from metalabel.meta.checkpoint import load_run, save_learner
    from metalabel.meta.protonet import ProtoNet

    learner = ProtoNet(build_backbone("mlp", in_features=4, hidden=[8], out_features=4))
    save_learner(learner, tmp_path / "run" / "best")
    loaded = load_run(tmp_path / "run")
    assert isinstance(loaded, ProtoNet)
    assert loaded.state_dict().keys() == learner.state_dict().keys()
    for key, tensor in learner.state_dict().items():
        assert loaded.state_dict()[key].equal(tensor)
    assert isinstance(load_run(tmp_path / "run" / "best"), ProtoNet)  # a checkpoint folder itself
    with pytest.raises(DataNotFoundError, match="run or checkpoint"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="config.json"):
        load_run(tmp_path)  # a folder, but no checkpoint in it


# ------------------------------------------------------------------ import answers


@pytest.fixture
def image_project(tmp_path):
    pet_image_folder(tmp_path / "pool", per_folder=3)
    pool = ml.datasets.imagefolder(tmp_path / "pool")
    with Project.create(tmp_path / "p", pool=pool, labels={"cat/0.png": "cat", "dog/1.png": "dog"}) as project:
        store = project.store
        queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, None, ("cat", "dog"))
                   for item in store.items() if "/unlabeled/" in item.uri]
        put_questions(store, LabelStudioQueue(project.folder / "labelstudio"), queries)
    [tasks_file] = (tmp_path / "p" / "labelstudio").glob("tasks-*.json")
    return tmp_path / "p", json.loads(tasks_file.read_text())


def _export(tasks: list[dict], choices: dict[int, str]) -> list[dict]:
    """Label Studio's JSON export with the class chosen for some questions (by question id)."""
    exported = []
    for position, task in enumerate(tasks):
        choice = choices.get(task["meta"][QUESTION_KEY])
        result = [] if choice is None else [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
        exported.append({"id": position + 1, "data": task["data"], "meta": task["meta"], "project": 1,
                         "annotations": [] if choice is None else [{"completed_by": 1, "result": result}]})
    return exported


def test_import_answers_records_the_answers_as_human_labels(image_project, tmp_path):
    folder, tasks = image_project
    questions = [task["meta"][QUESTION_KEY] for task in tasks]
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(_export(tasks, {questions[0]: "cat", questions[1]: "dog"})))
    with Project.open(folder) as project:
        humans_before = project.status()["labels_by_source"]["human"]
        recorded = project.import_answers(export_file)
        assert recorded.answered == 2
        assert project.status()["labels_by_source"]["human"] == humans_before + 2
        again = project.import_answers(export_file)
        assert again.answered == 0 and len(again.already_closed) == 2


def test_import_answers_holds_the_writer_lock(image_project, tmp_path):
    folder, tasks = image_project
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(_export(tasks, {tasks[0]["meta"][QUESTION_KEY]: "cat"})))
    with Project.open(folder) as writer, writer.writer_lock(command="another writer"):
        with Project.open(folder) as project, pytest.raises(ProjectLockedError, match="another writer"):
            project.import_answers(export_file)
        assert writer.status()["labels_by_source"]["human"] == 0  # the refused import wrote nothing
