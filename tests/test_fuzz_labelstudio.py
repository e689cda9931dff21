"""Fuzz: malformed Label Studio exports fed to the importer.

Each either imports or raises a ``metalabel.errors`` type, never anything else, and an
import that is refused leaves the store exactly as it was (every row, every byte).
A few hundred cases by default; ``METALABEL_FUZZ_EXAMPLES=20000`` for a longer run.
"""

from __future__ import annotations

import json
import os
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalabel.errors import MetalabelError
from metalabel.label.oracle import QUESTION_KEY, LabelStudioQueue, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore

EXAMPLES = int(os.environ.get("METALABEL_FUZZ_EXAMPLES", "300"))
CLASSES = ("cat", "dog", "bird")

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["²", "١", "1", " 2 ", "007", "cat", "dog", "", "\x1b[2J", "9" * 30]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _snapshot(store: ProjectStore) -> tuple[list[str], bytes]:
    with sqlite3.connect(store.path) as other:
        rows = list(other.iterdump())
    files = b"".join(p.read_bytes() for p in sorted(store.folder.glob("project.db*")) if p.is_file())
    return rows, files


def _mutate(data, tasks: list[dict]) -> object:
    """A real export, bent: one field replaced, a task dropped or doubled, annotations scrambled, or garbage."""
    kind = data.draw(st.sampled_from(["field", "annotation", "structure", "garbage", "valid"]))
    tasks = json.loads(json.dumps(tasks))
    if kind == "garbage":
        return data.draw(json_values)
    if kind == "structure":
        op = data.draw(st.sampled_from(["drop", "double", "wrap", "shuffle"]))
        if op == "drop" and tasks:
            tasks.pop(data.draw(st.integers(0, len(tasks) - 1)))
        elif op == "double" and tasks:
            tasks.append(tasks[data.draw(st.integers(0, len(tasks) - 1))])
        elif op == "wrap":
            return {"tasks": tasks}
        else:
            tasks = data.draw(st.permutations(tasks))
        return tasks
    task = tasks[data.draw(st.integers(0, len(tasks) - 1))]
    if kind == "field":
        holder = data.draw(st.sampled_from(["meta", "data", "task"]))
        target = task if holder == "task" else task[holder]
        key = data.draw(st.sampled_from([QUESTION_KEY, "uri", "content_hash", "project", "metalabel_uri",
                                         "metalabel_content_hash", "metalabel_project", "annotations", "label",
                                         "meta", "data"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(json_values)
    elif kind == "annotation":
        annotations = task.setdefault("annotations", [])
        annotations.append({
            "was_cancelled": data.draw(st.one_of(st.booleans(), json_scalars)),
            "completed_by": data.draw(json_values),
            "result": data.draw(st.one_of(json_values, st.lists(st.fixed_dictionaries({
                "from_name": st.sampled_from(["label", "other"]), "type": st.sampled_from(["choices", "labels"]),
                "value": st.one_of(json_values, st.fixed_dictionaries({"choices": st.one_of(
                    st.lists(st.sampled_from([*CLASSES, "zebra"]), max_size=2), json_values)}))}), max_size=2))),
        })
    return tasks


def test_malformed_label_studio_exports_import_or_fail_typed_and_a_refusal_changes_nothing(tmp_path):
    store = ProjectStore.create(tmp_path / "pets", name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(8))
    queries = [Query(store.ask(item.id, strategy="margin"), item.id, item.uri, "t", CLASSES) for item in store.items()]
    put_questions(store, LabelStudioQueue(tmp_path / "queue"), queries)
    [tasks_file] = (tmp_path / "queue").glob("tasks-*.json")
    written = json.loads(tasks_file.read_text())
    tasks = [{**task, "id": i, "project": 7, "annotations": []} for i, task in enumerate(written)]
    queue = LabelStudioQueue(tmp_path / "queue")
    export = tmp_path / "export.json"
    outcomes = {"imported": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def one_export(data):
        content = _mutate(data, tasks)
        export.write_text(json.dumps(content) if data.draw(st.integers(0, 9)) else json.dumps(content)[:-3])
        before = _snapshot(store)
        try:
            queue.import_annotations(export, store=store)
        except MetalabelError:
            outcomes["refused"] += 1
            assert _snapshot(store) == before
        else:
            outcomes["imported"] += 1

    one_export()
    assert outcomes["refused"] and outcomes["imported"]  # both kinds were exercised
    assert sqlite3.connect(store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"label studio fuzz: {outcomes}")
    store.close()
