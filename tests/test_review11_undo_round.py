"""review11: ``ProjectStore.undo_round`` on a label history the round itself wrote twice.

Its docstring and comment promise that "a label the round wrote over its own earlier one hands that one's place
back in turn". The loop read each deleted label's ``superseded_by`` once, before it deletes anything, so the
older label is spliced onto the newer one's id, which is gone by then: the deferred foreign key fails the commit,
``undo_round`` raised, and ``LabelingRun`` (which undoes before it reads anything) could not start on the project.
Fixed: each label's successor is read just before it is deleted.
"""

from __future__ import annotations

from metalabel.store import ItemRecord, ProjectStore, content_hash


def test_undo_round_splices_a_history_the_round_wrote_twice(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(["a", "b"])
        (item,) = store.add_items([ItemRecord("pool/0.txt", content_hash("text"), "text")])
        first = store.start_round()
        store.add_label(item, "a", source="model", round_id=first)
        store.finish_round(first, {})
        second = store.start_round()
        store.add_label(item, "b", source="model", round_id=second)
        store.add_label(item, "a", source="model", round_id=second)  # over its own label
        store.add_label(item, "b", source="human")  # a person's answer after the kill
        store.finish_round(second, {"interrupted": True}, status="failed")
        undone = store.undo_round(second, artifact_kinds=())
        assert undone is not None and undone.labels == 2
        history = store.label_history(item)
        assert [(label.source, label.class_name, label.round_id) for label in history] == [
            ("model", "a", first), ("human", "b", None)]
        assert history[0].superseded_by == history[1].id and history[1].active  # the person's answer stands
