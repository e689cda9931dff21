"""audit12: a Label Studio review of an export taken between a killed round and the run that undid it.

``metalabel export --format labelstudio`` names each label by id so that a reviewed export comes back onto that
label. A round killed after it accepted labels and before it asked is undone when the next run starts: its labels
are deleted (no later label takes their ids) and the redone round writes them again under new ids. A review of
the export taken in between was refused whole, naming a label "not a label of item ...; the task was changed or
belongs elsewhere": nothing had been changed by hand. Found on a real run (kanji, round 3 killed after accepting
161 labels, exported, resumed; a reviewed task of the first export was refused). The import stays all or nothing
(which verdict the reviewer meant for a label that no longer exists is not the import's to guess), but now says
what happened and what to do.
"""

from __future__ import annotations

import json

import pytest

from helpers import review_pool
from metalabel.errors import BadInputError
from metalabel.export import export_project
from metalabel.project import Project


def choice(class_name: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [class_name]}}]


def test_a_review_of_a_label_an_undone_round_wrote_is_refused_saying_so(tmp_path):
    pool = review_pool(tmp_path)
    with Project.create(tmp_path / "p", pool=pool) as project:
        store = project.store
        (item_id,) = store.item_ids([pool.uris[2]])
        killed = store.start_round({})
        store.add_label(item_id, "pos", source="model", calibrated_confidence=0.97, round_id=killed,
                        model_hash="ckpt-1")
        store.finish_round(killed, {"interrupted": True}, status="failed")
        export = export_project(store, tmp_path / "before-the-undo", format="labelstudio")
        assert store.undo_round(killed, artifact_kinds=()).labels == 1  # what the next run does first
        redone = store.start_round({})
        store.add_label(item_id, "pos", source="model", calibrated_confidence=0.97, round_id=redone,
                        model_hash="ckpt-1")
        store.finish_round(redone, {})
        tasks = json.loads((export.path / "tasks.json").read_text())
        exported = [{"id": n + 1, "data": task["data"], "meta": task.get("meta", {}), "project": 3,
                     "annotations": [{"completed_by": {"id": 7, "email": "rev@example.com"}, "was_cancelled": False,
                                      "result": choice("neg")}] if task["data"]["uri"] == pool.uris[2] else []}
                    for n, task in enumerate(tasks)]
        path = tmp_path / "reviewed.json"
        path.write_text(json.dumps(exported), encoding="utf-8")
        with pytest.raises(BadInputError) as refused:
            project.import_answers(path)
        message = str(refused.value)
        assert "taken back" in message and "undone" in message and "export again" in message
        assert "changed" not in message
        assert [label.source for label in store.active_labels() if label.item_id == item_id] == ["model"]
