"""audit12: the model version Label Studio shows beside metalabel's predictions names the round whose labels they are.

``metalabel ml-backend`` gives each accepted model label as a prediction under ``metalabel-round-N``, N the last
finished round. A round that accepted labels and then ended early keeps them active with its certificate on record:
stopped while it asked (the page's stop button, Ctrl-C: the round is failed, its answers and labels stay), or killed
before it asked (until the next run undoes it). Its labels were shown as the round before's, which wrote none of
them. Found reading the backend beside a real run (kanji, round 3 killed after accepting 161 labels: the backend said
metalabel-round-2). Now the version names that round, and after an undo the round before again.
"""

from __future__ import annotations

import pytest

from metalabel.store import ItemRecord, ProjectStore, content_hash

pytest.importorskip("starlette")
from metalabel.serve.ml_backend import model_version  # noqa: E402


def test_the_version_names_the_round_whose_labels_are_active(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(["a", "b"])
        items = store.add_items(ItemRecord(f"pool/{i}.txt", content_hash(f"text {i}"), "text") for i in range(3))
        first = store.start_round()
        store.finish_round(first, {"certificate": "nothing certified"})
        stopped = store.start_round()
        store.add_label(items[0], "a", source="model", round_id=stopped, calibrated_confidence=0.9)
        store.record_round_metrics(stopped, {"certificate": "certified"})
        store.ask(items[1], strategy="reference", round_id=stopped)
        store.finish_round(stopped, {"stopped_by_oracle": True}, status="failed")
        assert model_version(store) == f"metalabel-round-{stopped}"
        killed = store.start_round()
        store.add_label(items[2], "b", source="model", round_id=killed, calibrated_confidence=0.9)
        store.record_round_metrics(killed, {"certificate": "certified"})
        store.finish_round(killed, {"interrupted": True}, status="failed")
        assert model_version(store) == f"metalabel-round-{killed}"
        assert store.undo_round(killed, artifact_kinds=()) is not None
        assert model_version(store) == f"metalabel-round-{stopped}"
        store.finish_round(store.start_round(), {}, status="failed")  # failed before it accepted: no labels of its own
        assert model_version(store) == f"metalabel-round-{stopped}"
