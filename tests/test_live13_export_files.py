"""An image export writes, under each label, the content that label is about, even when a file changes during it.

Image exports check the pool (each file decoded and hashed against the store), then read each file
from disk again to copy it: a file replaced in between was written under the label its old content
got. Real PNG files, the real export; the replacement comes right after the pool check returns.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import metalabel.export as export_module
from metalabel import datasets
from metalabel.export import export_project
from metalabel.project import Project

SHADES = {"cat/a.png": 10, "dog/b.png": 30, "unlabeled/c.png": 40}
FORMATS = ["imagefolder", "hf", "labelstudio", "labelstudio-linked"]


def _png(path: Path, shade: int) -> None:
    Image.fromarray(np.full((4, 4), shade, np.uint8)).save(path)


@pytest.fixture
def project(tmp_path):
    """Grey 4x4 PNGs: a seeded cat and dog, and c, which a model labeled cat."""
    pool_folder = tmp_path / "root" / "pets"
    for name, shade in SHADES.items():
        (pool_folder / name).parent.mkdir(parents=True, exist_ok=True)
        _png(pool_folder / name, shade)
    project = Project.create(tmp_path / "project", pool=datasets.imagefolder(pool_folder))
    (item_id,) = project.store.item_ids([str(pool_folder / "unlabeled/c.png")])
    project.store.add_label(item_id, "cat", source="model", raw_confidence=0.97, calibrated_confidence=0.95,
                            threshold=0.8, round_id=project.store.start_round({}), model_hash="ckpt",
                            query_strategy="margin")
    with project:
        yield project, pool_folder


def _export(project: Project, tmp_path: Path, format: str):
    linked = format == "labelstudio-linked"
    return export_project(project.store, tmp_path / "root" / "out", format="labelstudio" if linked else format,
                          local_files_root=tmp_path / "root" if linked else None)


def _shades(out: Path, format: str) -> dict[str, tuple[str, int]]:
    """Each exported image's uri -> (the label written with it, its one grey shade as written)."""
    def shade(data: bytes) -> int:
        values = np.unique(np.asarray(Image.open(io.BytesIO(data)).convert("L")))
        assert len(values) == 1
        return int(values[0])

    if format == "imagefolder":
        with (out / "labels.csv").open(newline="", encoding="utf-8") as file:
            return {row["uri"]: (row["label"], shade((out / row["path"]).read_bytes()))
                    for row in csv.DictReader(file)}
    if format == "hf":
        table = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
        names = (out / "classes.txt").read_text().split()
        return {row["uri"]: (names[row["label"]], shade(row["image"]["bytes"])) for row in table}
    shown = {}
    for task in json.loads((out / "tasks.json").read_text()):
        value = task["data"]["image"]
        if value.startswith("/data/local-files/?d="):
            data = (out.parent / unquote(value.split("?d=", 1)[1])).read_bytes()
        else:
            data = base64.b64decode(value.split(",", 1)[1])
        shown[task["data"]["uri"]] = (task["data"]["label"], shade(data))
    return shown


@pytest.mark.parametrize("format", FORMATS)
def test_unchanged_files_are_written_with_their_labels(project, tmp_path, format):
    project, pool_folder = project
    result = _export(project, tmp_path, format)
    assert _shades(result.path, format) == {
        str(pool_folder / "cat/a.png"): ("cat", 10), str(pool_folder / "dog/b.png"): ("dog", 30),
        str(pool_folder / "unlabeled/c.png"): ("cat", 40)}


@pytest.mark.parametrize("format", FORMATS)
def test_a_file_replaced_during_the_export_is_not_written_under_the_label_of_its_old_content(
        project, tmp_path, monkeypatch, format):
    project, pool_folder = project
    target = pool_folder / "unlabeled/c.png"
    checked = export_module.reload_pool

    def check_then_replace(store):
        pool = checked(store)
        fresh = target.with_name(".fresh.png")
        _png(fresh, 200)  # a dog, say, as a sync tool puts it: written beside, renamed over
        os.replace(fresh, target)
        return pool

    monkeypatch.setattr(export_module, "reload_pool", check_then_replace)
    result = _export(project, tmp_path, format)
    # whatever is written for c is the content the model labeled cat, never the file that replaced it
    assert _shades(result.path, format)[str(target)] == ("cat", 40)
    assert _shades(result.path, format)[str(pool_folder / "cat/a.png")] == ("cat", 10)
    sidecar = json.loads((result.path / "export.json").read_text())
    assert sidecar["images_from_pool_pixels"] == 1  # said, with why, in export.json


@pytest.mark.parametrize("size", [None, (3, 5)], ids=["as-is", "resized"])
def test_unchanged_files_of_a_mixed_colour_pool_are_copied_byte_for_byte(tmp_path, size):
    """The check decodes as the pool did (size, grey files repeated to RGB beside colour ones), so no unchanged
    file is taken for a changed one and replaced by pixels."""
    folder = tmp_path / "pool"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / "cat" / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(folder / "dog" / "grey.png")
    Image.fromarray(rng.integers(0, 65535, (6, 6), dtype=np.uint16)).save(folder / "dog" / "deep.png")  # I;16
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / "cat" / "photo.jpg")
    project = Project.create(tmp_path / "project", pool=datasets.imagefolder(folder, size=size))
    with project:
        result = export_project(project.store, tmp_path / "out", format="imagefolder")
    assert json.loads((result.path / "export.json").read_text())["images_from_pool_pixels"] == 0
    for name in ("cat/rgb.png", "dog/grey.png", "dog/deep.png", "cat/photo.jpg"):
        assert (result.path / name).read_bytes() == (folder / name).read_bytes(), name
