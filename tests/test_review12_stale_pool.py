"""A Project that read its pool before another process added items must not ask about those items with the
content it read (found by review12).

As a user would: a notebook opens the project and looks at its pool (``load_pool``) while a new image, A, sits in
the pool folder; she then replaces it by the image she meant, B, and adds it from a terminal (``metalabel
add-items``: the store records B's hash); back in the notebook she runs. The run asked about the new item showing
A, the answer given for A was recorded on the item whose content is B, and the export wrote B under A's class as a
person's answer: a misplaced human answer.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

import metalabel as ml
from metalabel.datasets import seed_labels_from_pool
from metalabel.label.oracle import Answer, Query
from metalabel.project import Project
from metalabel.store import content_hash


class Person:
    """Answers what the image shown is, by its pixels, as a person looking at it would."""

    def __init__(self, class_of_content: dict[str, str]) -> None:
        self.class_of_content = class_of_content
        self.shown: list[tuple[str, str]] = []

    def answer(self, questions: list[Query]) -> list[Answer]:
        answers = []
        for query in questions:
            shown = content_hash(query.item)
            self.shown.append((query.uri, shown))
            answers.append(Answer(query.question_id, self.class_of_content[shown], "person"))
        return answers


def _pool_folder(root: Path) -> Path:
    kanji = ml.datasets.load("kanji", split="evaluation", max_classes=2, samples_per_class=5)
    for index, (image, label) in enumerate(zip(kanji.items, kanji.labels, strict=True)):
        folder = root / kanji.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return root


def test_a_pool_read_before_another_process_added_items_is_read_again_under_the_writer_lock(cache, tmp_path):
    pool_folder = _pool_folder(tmp_path / "pool")
    whole = ml.datasets.imagefolder(pool_folder)
    class_of_content = {content_hash(item): whole.class_names[label] for item, label in zip(whole.items, whole.labels)}
    first, last = Path(whole.uris[0]), Path(whole.uris[-1])
    assert class_of_content[content_hash(whole.items[0])] != class_of_content[content_hash(whole.items[-1])]
    Project.create(tmp_path / "p", pool=whole, labels=seed_labels_from_pool(whole, per_class=1, seed=0)).close()

    new = pool_folder / "unlabeled" / "new.png"
    new.parent.mkdir()
    shutil.copy(first, new)  # image A
    notebook = Project.open(tmp_path / "p")
    notebook.load_pool()  # read with new.png = A, not in the project yet
    shutil.copy(last, new)  # replaced by image B, and added from a terminal
    with Project.open(tmp_path / "p") as terminal:
        assert [item.uri for item in terminal.add_new_items()] == [str(new)]
    stored = {item.uri: item.content_hash for item in notebook.store.items()}
    with notebook.writer_lock():
        pool = notebook.load_pool()
        assert content_hash(pool.items[pool.uris.index(str(new))]) == stored[str(new)]

    person = Person(class_of_content)
    notebook.run(oracle=person, encoder="pixels", budget=20, per_round=10, seed=1, target_precision=0.8,
                 reference_share=0.5, project_meta_steps=0, progress=False, generate=False)
    notebook.close()
    assert str(new) in [uri for uri, _ in person.shown]  # every item was asked about
    assert all(stored[uri] == shown for uri, shown in person.shown)  # each answer is about the content stored
    with Project.open(tmp_path / "p") as project:
        exported = project.export(tmp_path / "out", format="csv")
    rows = list(csv.DictReader((exported.path / "labels.csv").open(newline="", encoding="utf-8")))
    for row in rows:
        assert row["label"] == class_of_content[row["content_hash"]], row
    assert np.array_equal(np.asarray(Image.open(new)), np.asarray(Image.open(last)))


def test_plan_on_a_pool_read_before_another_process_added_items_reads_it_again(cache, tmp_path):
    pool_folder = _pool_folder(tmp_path / "pool")
    whole = ml.datasets.imagefolder(pool_folder)
    Project.create(tmp_path / "p", pool=whole, labels=seed_labels_from_pool(whole, per_class=2, seed=0)).close()
    with Project.open(tmp_path / "p") as notebook:
        notebook.load_pool()
        (pool_folder / "unlabeled").mkdir()
        shutil.copy(whole.uris[0], pool_folder / "unlabeled" / "new.png")
        with Project.open(tmp_path / "p") as terminal:
            assert len(terminal.add_new_items()) == 1
        assert notebook.plan(encoder="pixels", coverage=0.5) is not None
