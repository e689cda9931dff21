"""A question task that links a pool file shows what the file holds when the person looks, not what the store holds.

``LabelStudioQueue(local_files_root=...)`` links each image question to the pool file itself
(``/data/local-files/?d=...``). A file replaced before the task is made, or between the task and the
answer, shows other content than the item the answer is recorded on: the import checks the task's stored
hash, not what Label Studio showed. Real PNG files, the real queue and import.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import label_studio_user
from metalabel.data.sources.user import imagefolder
from metalabel.label.oracle import QUESTION_KEY, LabelStudioQueue, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore, content_hash

CLASSES = ("cat", "dog")
LINK = "/data/local-files/?d="


def _png(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def project(tmp_path):
    """Two grey 8x8 pool files under Label Studio's document root, the store holding their decoded content."""
    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    for n in range(2):
        _png(root / "pool" / f"{n}.png", seed=n)
    pool = imagefolder(root / "pool")
    store = ProjectStore.create(tmp_path / "project", name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=uri, content_hash=content_hash(pixels), modality="image")
                    for uri, pixels in zip(pool.uris, pool.items))
    yield store, pool, root
    store.close()


def _queue(store: ProjectStore, root: Path) -> LabelStudioQueue:
    return LabelStudioQueue(store.folder / "labelstudio", local_files_root=root)


def _ask(store: ProjectStore, pool, root: Path) -> list[dict]:
    """Ask about every item through the queue; returns the tasks of the file it wrote."""
    queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, pool.items[n], CLASSES)
               for n, item in enumerate(store.items())]
    put_questions(store, _queue(store, root), queries)
    [tasks_file] = sorted((store.folder / "labelstudio").glob("tasks-*.json"))[-1:]
    return json.loads(tasks_file.read_text())


def _shown(task: dict, root: Path) -> bytes:
    """The image bytes Label Studio shows for a task now: the linked file's, else the embedded data URI's."""
    value = task["data"]["image"]
    if value.startswith(LINK):
        return (root / value[len(LINK):]).read_bytes()
    import base64

    return base64.b64decode(value.split(",", 1)[1])


def _decoded(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _labeled(tasks: list[dict], choice: str) -> list[dict]:
    """Label Studio's "JSON" export with every task answered ``choice``."""
    return [{"id": n + 1, "data": task["data"], "meta": task["meta"], "project": 1, "predictions": [],
             "annotations": [{"id": n + 1, "completed_by": label_studio_user("ann@example.com"),
                              "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                          "value": {"choices": [choice]}}]}]}
            for n, task in enumerate(tasks)]


def _replace(path: Path, seed: int) -> None:
    """Another image under the same name, as a sync tool writes it (a new file renamed over the old one)."""
    fresh = path.with_name(".fresh.png")
    _png(fresh, seed)
    os.replace(fresh, path)


def test_an_unchanged_linked_file_is_linked_and_its_answer_recorded(project, tmp_path):
    store, pool, root = project
    tasks = _ask(store, pool, root)
    assert all(task["data"]["image"].startswith(LINK) for task in tasks)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_labeled(tasks, "dog")))
    recorded = _queue(store, root).import_annotations(export, store=store)
    assert recorded.answered == 2 and [label.class_name for label in store.active_labels()] == ["dog", "dog"]


def test_a_file_replaced_before_the_task_is_made_is_not_shown_for_the_item(project):
    store, pool, root = project
    _replace(root / "pool" / "0.png", seed=7)  # after the pool was read and checked, before the task
    tasks = _ask(store, pool, root)
    first = next(task for task in tasks if task["meta"]["uri"].endswith("0.png"))
    # the person sees the stored content (embedded), never the replaced file
    assert np.array_equal(_decoded(_shown(first, root)), pool.items[0])


@pytest.mark.parametrize("restored", [False, True], ids=["replaced", "replaced-and-restored"])
def test_an_answer_given_while_the_linked_file_held_other_content_is_held_not_recorded(project, tmp_path, restored):
    store, pool, root = project
    tasks = _ask(store, pool, root)
    target = root / "pool" / "0.png"
    original = target.read_bytes()
    _replace(target, seed=7)  # the person answers while Label Studio shows this
    if restored:  # put back afterwards (the project refuses the changed pool): still not what was shown
        fresh = target.with_name(".back.png")
        fresh.write_bytes(original)
        os.replace(fresh, target)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_labeled(tasks, "dog")))
    recorded = _queue(store, root).import_annotations(export, store=store)

    question = next(task["meta"][QUESTION_KEY] for task in tasks if task["meta"]["uri"] == str(target))
    assert store.question(question).answer is None  # open: the answer is not the item's label
    assert [label.uri for label in store.active_labels()] == [str(root / "pool" / "1.png")]  # the other one is
    assert recorded.answered == 1
    [held] = recorded.held
    assert held.question_id == question and held.uri == str(target) and "changed" in held.reason
    kept = json.loads(held.kept.read_text())  # the answer is kept, whole, beside the project's queue
    assert kept["task"]["annotations"][0]["result"][0]["value"]["choices"] == ["dog"]

    # importing the same export again holds it again, and the question gets a new task showing the stored content
    again = _queue(store, root).import_annotations(export, store=store)
    assert [h.question_id for h in again.held] == [question] and store.question(question).answer is None
    _queue(store, root).answer([_query(store, question, pool)])  # the next run asks its open questions
    newest = json.loads(max((store.folder / "labelstudio").glob("tasks-*.json"),
                            key=lambda p: p.stat().st_mtime_ns).read_text())
    assert [task["meta"][QUESTION_KEY] for task in newest] == [question]
    assert np.array_equal(_decoded(_shown(newest[0], root)), pool.items[0])


def _query(store: ProjectStore, question_id: int, pool) -> Query:
    question = store.question(question_id)
    item = store.item(question.item_id)
    assert item is not None
    return Query(question_id, item.id, item.uri, pool.items[pool.uris.index(item.uri)], CLASSES,
                 content_hash=item.content_hash, project=_project(store))


def _project(store: ProjectStore) -> str:
    from metalabel.label.oracle import project_identity

    return project_identity(store)


def test_a_json_min_export_of_a_replaced_linked_file_is_held_too(project, tmp_path):
    store, pool, root = project
    tasks = _ask(store, pool, root)
    _replace(root / "pool" / "1.png", seed=9)
    export = tmp_path / "min.json"
    export.write_text(json.dumps([{"id": n + 1, **task["data"], "label": "cat", "annotator": "ann@example.com"}
                                  for n, task in enumerate(tasks)]))
    recorded = _queue(store, root).import_annotations(export, store=store)
    assert recorded.answered == 1 and [held.uri for held in recorded.held] == [str(root / "pool" / "1.png")]
    assert [label.uri for label in store.active_labels()] == [str(root / "pool" / "0.png")]


def test_import_answers_says_which_answer_is_held_and_where_it_is_kept(tmp_path, capsys):
    from metalabel.cli import main

    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    for n in range(4):
        _png(root / "pool" / f"{n}.png", seed=n)
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"uri,label\n{root / 'pool' / '2.png'},cat\n{root / 'pool' / '3.png'},dog\n")
    assert main(["init", str(tmp_path / "pets"), "--pool", str(root / "pool"), "--labels", str(seeds)]) == 0
    store = ProjectStore.open(tmp_path / "pets")
    try:
        pool = imagefolder(root / "pool")
        queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, pool.items[n], CLASSES)
                   for n, item in enumerate(store.items()) if n < 2]
        put_questions(store, _queue(store, root), queries)
        [tasks_file] = sorted((store.folder / "labelstudio").glob("tasks-*.json"))
        tasks = json.loads(tasks_file.read_text())
    finally:
        store.close()
    _replace(root / "pool" / "0.png", seed=7)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_labeled(tasks, "dog")))
    capsys.readouterr()
    assert main(["import-answers", str(tmp_path / "pets"), str(export)]) == 0
    said = capsys.readouterr()
    assert said.out.startswith("1 answers recorded")
    assert "held, not recorded" in said.err and "0.png" in said.err and "labelstudio/held/" in said.err
