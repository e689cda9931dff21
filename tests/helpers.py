"""Builders several test files share: one of each."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import numpy as np

import metalabel as ml
from metalabel.data.dataset import LabeledDataset
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.project import Project

KANJI_POOL = dict(split="evaluation", max_classes=5, samples_per_class=20)
"""A small kanji pool: big enough for a few labeling rounds, quick to render."""


def kanji_project(folder: Path, *, per_class: int = 2, seed: int = 0, **pool_options) -> tuple[Project, dict[str, str]]:
    """A project over a kanji pool (``KANJI_POOL`` updated by ``pool_options``) with ``per_class`` seed labels,
    and the pool's gold labels by uri."""
    pool = ml.datasets.load("kanji", **{**KANJI_POOL, **pool_options})
    project = Project.create(folder, pool=pool, labels=seed_labels_from_pool(pool, per_class=per_class, seed=seed))
    return project, gold_labels(pool)


def review_pool(folder: Path, *unlabeled: str) -> LabeledDataset:
    """``folder/reviews.csv`` read as a text pool: two seed-labeled reviews (pos, neg), then two unlabeled ones
    and ``unlabeled``'s texts."""
    texts = ["love the screen", "battery died", *unlabeled]
    pool_file = folder / "reviews.csv"
    pool_file.write_text("text,label\ngreat phone,pos\nbroke in a day,neg\n" + "".join(f"{t},\n" for t in texts),
                         encoding="utf-8")
    return ml.datasets.read_text(pool_file)


def answered(folder: Path) -> dict[int, str]:
    """Question id -> answered class, read with a plain connection (only what was committed)."""
    with sqlite3.connect(folder / "project.db") as db:
        return dict(db.execute("SELECT q.id, c.name FROM questions q JOIN classes c ON c.id = q.answer_class_id"))


def pet_image_folder(root: Path, *, per_folder: int) -> Path:
    """``root/{cat,dog,unlabeled}/{0..per_folder-1}.png``: 12x12 grey noise, the same bytes every time."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in ("cat", "dog", "unlabeled"):
        (root / folder).mkdir(parents=True)
        for i in range(per_folder):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


def random_images(count: int, *, seed: int = 0, shape: tuple[int, ...] = (28, 28)) -> np.ndarray:
    """uint8 noise images ``[count, *shape]``."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def label_studio_user(email: str) -> dict:
    """A Label Studio user object as an export carries it: each email its own user id, as in one Label Studio
    server (an id seen with two emails names no one for sure: ``ProjectStore.people``)."""
    return {"id": zlib.crc32(email.encode()) + 1, "email": email}
