"""A pool file that goes between the queue finding it and reading it is shown as the stored pixels (check13)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from metalabel.data.sources.user import imagefolder
from metalabel.label import oracle
from metalabel.label.oracle import LabelStudioQueue, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore, content_hash

CLASSES = ("cat", "dog")


def test_a_linked_file_removed_as_its_task_is_made_is_shown_as_the_stored_pixels(tmp_path, monkeypatch) -> None:
    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(root / "pool" / "0.png")
    pool = imagefolder(root / "pool")
    store = ProjectStore.create(tmp_path / "project", name="pets")
    try:
        store.set_classes(CLASSES)
        [item_id] = store.add_items([ItemRecord(uri=pool.uris[0], content_hash=content_hash(pool.items[0]),
                                                modality="image")])

        def removed_meanwhile(path):  # the file was there when the queue looked, gone when it reads it
            path.unlink()
            raise FileNotFoundError(2, "No such file or directory", str(path))

        monkeypatch.setattr(oracle, "read_file", removed_meanwhile)
        queue = LabelStudioQueue(store.folder / "labelstudio", local_files_root=root)
        put_questions(store, queue, [Query(store.ask(item_id, strategy="margin"), item_id, pool.uris[0],
                                           pool.items[0], CLASSES)])
        [tasks_file] = sorted((store.folder / "labelstudio").glob("tasks-*.json"))
        [task] = json.loads(tasks_file.read_text())
        assert task["data"]["image"].startswith("data:image/png;base64,")
        assert "metalabel_linked_file" not in task["data"]
    finally:
        store.close()
