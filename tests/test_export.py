"""export_project: every format carries the provenance, filters work, and an export is all or nothing."""

from __future__ import annotations

import base64
import csv
import json
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from metalabel import datasets
from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.export import COLUMNS, PROVENANCE, export_project, parquet_fields
from metalabel.project import Project

MODEL_HASH = "ckpt-3f2a"


def add_model_label(project: Project, uri: str, class_name: str, confidence: float, *, round_id: int):
    (item_id,) = project.store.item_ids([uri])
    return project.store.add_label(
        item_id,
        class_name,
        source="model",
        raw_confidence=min(1.0, confidence + 0.05),
        calibrated_confidence=confidence,
        threshold=0.8,
        round_id=round_id,
        model_hash=MODEL_HASH,
        query_strategy="margin",
    )


def answer_as_human(project: Project, uri: str, class_name: str):
    (item_id,) = project.store.item_ids([uri])
    question_id = project.store.ask(item_id, strategy="margin")
    return project.store.answer(question_id, class_name, oracle="test")


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def leftovers(folder: Path) -> list[str]:
    """Hidden staging or set-aside folders an export might have left behind."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def text_project(tmp_path):
    """Six texts: two seed labels (imported), three model labels, one unlabeled item."""
    pool_file = tmp_path / "reviews.csv"
    pool_file.write_text(
        "text,label\n"
        "great phone,pos\n"
        "broke in a day,neg\n"
        "love the screen,\n"
        "battery died,\n"
        "works fine,\n"
        "meh,\n",
        encoding="utf-8",
    )
    pool = datasets.read_text(pool_file)
    project = Project.create(tmp_path / "reviews-project", pool=pool)
    round_id = project.store.start_round({"strategy": "margin"})
    add_model_label(project, pool.uris[2], "pos", 0.97, round_id=round_id)
    add_model_label(project, pool.uris[3], "neg", 0.91, round_id=round_id)
    add_model_label(project, pool.uris[4], "pos", 0.62, round_id=round_id)
    with project:
        yield project, pool


@pytest.fixture
def image_folder_project(tmp_path):
    """PNG files on disk: cat/ and dog/ seeded, three unlabeled images the model labels."""
    pool_folder = tmp_path / "pets"
    shades = {"cat/a.png": 10, "cat/b.png": 20, "dog/a.png": 30, "unlabeled/c.png": 40, "unlabeled/d.png": 50}
    for name, shade in shades.items():
        (pool_folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), shade, np.uint8)).save(pool_folder / name)
    pool = datasets.imagefolder(pool_folder)
    project = Project.create(tmp_path / "pets-project", pool=pool)
    round_id = project.store.start_round({})
    add_model_label(project, str(pool_folder / "unlabeled/c.png"), "cat", 0.95, round_id=round_id)
    add_model_label(project, str(pool_folder / "unlabeled/d.png"), "dog", 0.85, round_id=round_id)
    with project:
        yield project, pool_folder


def in_memory_image_pool(class_names: list[str]) -> LabeledDataset:
    """Images that are no files: uris like a built-in source's ("toy:train/3")."""
    rng = np.random.default_rng(0)
    count = 2 * len(class_names) + 2
    labels = [index % len(class_names) for index in range(2 * len(class_names))] + [UNLABELED, UNLABELED]
    return LabeledDataset(
        name="toy",
        modality="image",
        items=rng.integers(0, 256, size=(count, 5, 5, 3), dtype=np.uint8),
        labels=np.array(labels),
        class_names=class_names,
        uris=[f"toy:train/{index}" for index in range(count)],
    )


# ------------------------------------------------------------------ parquet, csv


def test_parquet_round_trips_the_provenance(text_project, tmp_path):
    project, pool = text_project
    result = export_project(project.store, tmp_path / "out", format="parquet")

    assert result.path == tmp_path / "out" and result.rows == 5 and result.skipped == {}
    assert sorted(path.name for path in result.path.iterdir()) == ["classes.txt", "export.json", "labels.parquet"]
    table = pq.read_table(result.path / "labels.parquet")
    assert table.column_names == [*COLUMNS, "text"]
    rows = {row["uri"]: row for row in table.to_pylist()}

    model_row = rows[pool.uris[2]]
    assert model_row["label"] == "pos" and model_row["source"] == "model"
    assert model_row["calibrated_confidence"] == pytest.approx(0.97)
    assert model_row["raw_confidence"] == pytest.approx(1.0)
    assert (model_row["threshold"], model_row["model_hash"], model_row["query_strategy"]) == (0.8, MODEL_HASH, "margin")
    assert model_row["round"] == 1 and model_row["disagreement"] is False
    assert model_row["text"] == "love the screen" and model_row["split"] == "pool"
    assert model_row["created_at"].tzinfo is not None  # a real UTC timestamp, not text

    (item,) = [item for item in project.store.items() if item.uri == pool.uris[0]]
    seed_row = rows[pool.uris[0]]
    assert (seed_row["label"], seed_row["source"], seed_row["content_hash"]) == ("pos", "imported", item.content_hash)
    assert seed_row["calibrated_confidence"] is None and seed_row["round"] is None

    sidecar = json.loads((result.path / "export.json").read_text())
    assert sidecar["project"] == "reviews-project" and sidecar["classes"] == ["neg", "pos"]
    assert sidecar["format"] == "parquet" and sidecar["rows"] == 5
    assert sidecar["filters"] == {"sources": None, "min_confidence": None, "include_retracted": False}
    assert list(sidecar["columns"]) == list(COLUMNS) and sidecar["retracted_rows"] == 0
    assert sidecar["counts_by_source"] == {"human": 0, "imported": 2, "generated": 0, "augmented": 0, "model": 3}
    assert sidecar["counts_by_class"] == {"neg": 2, "pos": 3}
    assert {"metalabel_version", "exported_at"} <= set(sidecar)


def test_csv_round_trips_the_provenance_and_opens_a_project_by_its_folder(text_project, tmp_path):
    project, pool = text_project
    result = export_project(str(project.folder), tmp_path / "out", format="csv")

    rows = read_csv_rows(result.path / "labels.csv")
    assert list(rows[0]) == [*COLUMNS, "text"]
    assert [row["uri"] for row in rows] == pool.uris[:5]
    model_row = rows[3]
    assert (model_row["label"], model_row["source"], model_row["text"]) == ("neg", "model", "battery died")
    assert float(model_row["calibrated_confidence"]) == pytest.approx(0.91)
    assert (model_row["model_hash"], model_row["round"], model_row["threshold"]) == (MODEL_HASH, "1", "0.8")
    seed_row = rows[1]
    assert (seed_row["source"], seed_row["calibrated_confidence"], seed_row["model_hash"]) == ("imported", "", "")


def test_a_human_label_beats_the_model_and_a_disagreement_is_flagged(text_project, tmp_path):
    project, pool = text_project
    answer_as_human(project, pool.uris[2], "neg")  # overrules the model's "pos"
    round_id = project.store.start_round({})
    add_model_label(project, pool.uris[1], "pos", 0.99, round_id=round_id)  # contradicts the seed "neg"

    table = pq.read_table(export_project(project.store, tmp_path / "out", format="parquet").path / "labels.parquet")
    rows = {row["uri"]: row for row in table.to_pylist()}
    overruled = rows[pool.uris[2]]
    assert (overruled["label"], overruled["source"], overruled["query_strategy"]) == ("neg", "human", "margin")
    assert overruled["disagreement"] is False
    contradicted = rows[pool.uris[1]]
    assert (contradicted["label"], contradicted["source"], contradicted["disagreement"]) == ("neg", "imported", True)
    # what contradicts it, and whose: a reader of the file can weigh it without the project
    assert (contradicted["disagreement_class"], contradicted["disagreement_by"]) == ("pos", MODEL_HASH)
    assert sum(row["disagreement"] for row in rows.values()) == 1
    assert (overruled["disagreement_class"], overruled["disagreement_by"]) == (None, None)


def test_filters_by_source_and_by_model_confidence(text_project, tmp_path):
    project, pool = text_project
    answer_as_human(project, pool.uris[4], "neg")

    only_model = export_project(project.store, tmp_path / "model", format="csv", sources="model")
    assert [row["source"] for row in read_csv_rows(only_model.path / "labels.csv")] == ["model", "model"]
    assert only_model.skipped == {"sources": 3}

    confident = export_project(project.store, tmp_path / "confident", format="csv", min_confidence=0.95)
    rows = read_csv_rows(confident.path / "labels.csv")
    # Imported and human labels have no confidence and always pass; the 0.91 model label does not.
    assert [(row["uri"], row["source"]) for row in rows] == [
        (pool.uris[0], "imported"),
        (pool.uris[1], "imported"),
        (pool.uris[2], "model"),
        (pool.uris[4], "human"),
    ]
    assert confident.skipped == {"min_confidence": 1}

    both = export_project(project.store, tmp_path / "both", format="csv", sources=["human", "model"],
                          min_confidence=0.95)
    assert both.rows == 2 and both.skipped == {"sources": 2, "min_confidence": 1}
    sidecar = json.loads((both.path / "export.json").read_text())
    assert sidecar["filters"] == {"sources": ["human", "model"], "min_confidence": 0.95, "include_retracted": False}
    assert sidecar["skipped"] == {"sources": 2, "min_confidence": 1}


def test_bad_filters_are_refused_with_the_valid_choices(text_project, tmp_path):
    project, _ = text_project
    with pytest.raises(BadInputError, match="'robot'.*human, imported, generated, augmented, model"):
        export_project(project.store, tmp_path / "out", format="csv", sources="human,robot")
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        export_project(project.store, tmp_path / "out", format="csv", min_confidence=1.5)
    with pytest.raises(BadInputError, match="parquet, csv, imagefolder, labelstudio"):
        export_project(project.store, tmp_path / "out", format="xlsx")
    assert not (tmp_path / "out").exists()


def test_parquet_without_pyarrow_says_how_to_install_it(text_project, tmp_path, monkeypatch):
    project, _ = text_project
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalabel\[tabular\]'"):
        export_project(project.store, tmp_path / "out", format="parquet")


def test_text_content_needs_the_pool_and_the_pool_unchanged(tmp_path):
    pool_file = tmp_path / "pool.csv"
    pool_file.write_text("text,label\nyes,a\nno,b\nmaybe,\n", encoding="utf-8")
    pool = datasets.read_text(pool_file)
    pool.reload_spec = None  # as if built in memory: the project cannot load it again by itself
    Project.create(tmp_path / "project", pool=pool).close()
    with Project.open(tmp_path / "project") as project:  # reopened: it no longer has the pool at hand
        with pytest.raises(BadInputError, match="pass pool="):
            export_project(project.store, tmp_path / "out", format="csv")
        result = export_project(project.store, tmp_path / "out", format="csv", pool=pool)
        assert [row["text"] for row in read_csv_rows(result.path / "labels.csv")] == ["yes", "no"]

        pool_file.write_text("text,label\nyes,a\nNO!,b\nmaybe,\n", encoding="utf-8")
        with pytest.raises(BadInputError, match=f"{pool.uris[1]}.*changed since init"):
            export_project(project.store, tmp_path / "again", format="csv", pool=datasets.read_text(pool_file))
    assert not (tmp_path / "again").exists() and leftovers(tmp_path) == []


def test_retracted_labels_are_left_out_unless_asked_and_then_marked_retracted(text_project, tmp_path):
    project, pool = text_project
    store = project.store
    round_id = store.start_round({})
    (item_id,) = store.item_ids([pool.uris[5]])
    certified = store.add_label(item_id, "pos", source="model", calibrated_confidence=0.96, threshold=0.9,
                                round_id=round_id, model_hash=MODEL_HASH, certified_precision=0.951)
    (stale,) = [label for label in store.active_labels() if label.uri == pool.uris[4]]
    later = store.start_round({})
    store.retract_label(stale.id, round_id=later, reason="calibrated confidence 0.620 below the certified threshold")
    assert certified.applied

    default = export_project(project.store, tmp_path / "active", format="parquet")
    rows = {row["uri"]: row for row in pq.read_table(default.path / "labels.parquet").to_pylist()}
    assert pool.uris[4] not in rows and default.rows == 5
    assert rows[pool.uris[5]]["certified_precision"] == pytest.approx(0.951)
    assert rows[pool.uris[5]]["retracted"] is False and rows[pool.uris[5]]["retracted_round"] is None
    assert rows[pool.uris[0]]["certified_precision"] is None  # a seed label is no certified claim

    audit = export_project(project.store, tmp_path / "audit", format="parquet", include_retracted=True)
    table = pq.read_table(audit.path / "labels.parquet")
    retracted = [row for row in table.to_pylist() if row["retracted"]]
    assert audit.rows == 6 and len(retracted) == 1
    (row,) = retracted
    assert (row["uri"], row["label"], row["source"], row["round"], row["retracted_round"]) == (
        pool.uris[4], "pos", "model", round_id - 1, later)
    assert row["retraction_reason"].startswith("calibrated confidence 0.620") and row["retracted_at"].tzinfo
    sidecar = json.loads((audit.path / "export.json").read_text())
    assert sidecar["retracted_rows"] == 1 and sidecar["filters"]["include_retracted"] is True
    assert sidecar["counts_by_source"]["model"] == 3  # counts are of the active labels

    csv_rows = read_csv_rows(export_project(project.store, tmp_path / "csv", format="csv",
                                            include_retracted=True).path / "labels.csv")
    (csv_row,) = [r for r in csv_rows if r["retracted"] == "True"]
    assert (csv_row["uri"], csv_row["retracted_round"]) == (pool.uris[4], str(later))
    tasks = json.loads((export_project(project.store, tmp_path / "ls", format="labelstudio", include_retracted=True)
                        .path / "tasks.json").read_text())
    (task,) = [t for t in tasks if t["data"]["retracted"]]
    assert task["data"]["retraction_reason"] == row["retraction_reason"] and "annotations" not in task
    with pytest.raises(BadInputError, match="ImageFolder.*training data"):
        export_project(project.store, tmp_path / "if", format="imagefolder", include_retracted=True)


def test_every_format_takes_its_provenance_columns_from_one_list():
    import pyarrow

    assert COLUMNS == tuple(column.name for column in PROVENANCE)
    assert [name for name, _ in parquet_fields(pyarrow)] == list(COLUMNS)
    assert {"certified_precision", "retracted", "retracted_round", "retraction_reason"} <= set(COLUMNS)
    source = Path(__file__).parents[1].joinpath("src/metalabel/export.py").read_text()
    # no format lists the columns by hand: each name is spelled once, in PROVENANCE
    for name in ("raw_confidence", "query_strategy", "retraction_reason", "model_hash"):
        assert source.count(f'"{name}"') == 1, name


# ------------------------------------------------------------------ imagefolder


def test_imagefolder_copies_the_original_files_into_class_folders(image_folder_project, tmp_path):
    project, pool_folder = image_folder_project
    result = export_project(project.store, tmp_path / "out", format="imagefolder")

    assert result.rows == 5
    files = sorted(path.relative_to(result.path).as_posix() for path in result.path.rglob("*.png"))
    assert files == ["cat/a.png", "cat/b.png", "cat/c.png", "dog/a.png", "dog/d.png"]
    assert (result.path / "cat/c.png").read_bytes() == (pool_folder / "unlabeled/c.png").read_bytes()
    assert (result.path / "dog/a.png").read_bytes() == (pool_folder / "dog/a.png").read_bytes()

    rows = {row["path"]: row for row in read_csv_rows(result.path / "labels.csv")}
    assert list(next(iter(rows.values()))) == ["path", *COLUMNS]
    assert rows["dog/d.png"]["uri"] == str(pool_folder / "unlabeled/d.png")
    assert (rows["dog/d.png"]["source"], rows["dog/d.png"]["model_hash"]) == ("model", MODEL_HASH)
    assert rows["cat/a.png"]["source"] == "imported"

    reread = datasets.imagefolder(result.path)  # the tree reads back as a labeled image folder
    assert reread.class_counts() == {"cat": 3, "dog": 2}


def test_imagefolder_writes_pngs_for_in_memory_images_with_safe_distinct_class_folders(tmp_path):
    class_names = ["T-shirt/top", "t-shirt_top", "unlabeled", ".hidden"]
    pool = in_memory_image_pool(class_names)
    with Project.create(tmp_path / "project", pool=pool) as project:
        result = export_project(project.store, tmp_path / "out", format="imagefolder", pool=pool)
        sidecar = json.loads((result.path / "export.json").read_text())

    folders = sidecar["class_folders"]
    assert folders == {
        "T-shirt/top": "T-shirt_top",
        "t-shirt_top": "t-shirt_top-2",
        "unlabeled": "unlabeled-2",
        ".hidden": "_hidden",
    }
    assert sorted(path.name for path in result.path.iterdir() if path.is_dir()) == sorted(folders.values())
    rows = read_csv_rows(result.path / "labels.csv")
    assert len(rows) == int((pool.labels >= 0).sum())  # every labeled image, each checked below
    for row in rows:
        index = pool.uris.index(row["uri"])
        assert row["path"].split("/")[0] == folders[class_names[pool.labels[index]]]
        assert row["path"].endswith(f"toy_train_{index}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(result.path / row["path"])), pool.items[index])


def test_imagefolder_needs_the_pool_for_images_that_are_no_files_and_refuses_a_changed_one(tmp_path):
    pool_folder = tmp_path / "pool"
    for name, shade in {"a/1.png": 1, "b/2.png": 2, "c/3.png": 3}.items():
        (pool_folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((3, 3), shade, np.uint8)).save(pool_folder / name)
    pool = datasets.imagefolder(pool_folder)
    # Pretend the uris are not files (like "fashion-mnist:train/12"): pixels must come from the pool.
    uris = [f"moved:{n}" for n in range(3)]
    moved = LabeledDataset("moved", "image", pool.items, pool.labels, pool.class_names, uris)
    Project.create(tmp_path / "project", pool=moved).close()
    with Project.open(tmp_path / "project") as project:  # reopened: it no longer has the pool at hand
        with pytest.raises(BadInputError, match="pass pool="):
            export_project(project.store, tmp_path / "out", format="imagefolder")
        project.store.set_meta("pool_spec", json.dumps({"reader": "imagefolder", "path": str(tmp_path / "gone")}))
        with pytest.raises(BadInputError, match="cannot reload the pool .*gone"):
            export_project(project.store, tmp_path / "out", format="imagefolder")

        changed = LabeledDataset("moved", "image", pool.items[::-1].copy(), pool.labels, pool.class_names, uris)
        with pytest.raises(BadInputError, match="'moved:0'.*changed since init"):
            export_project(project.store, tmp_path / "out", format="imagefolder", pool=changed)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_imagefolder_refuses_a_text_project(text_project, tmp_path):
    project, _ = text_project
    with pytest.raises(BadInputError, match="needs an image project.*'parquet', 'csv', 'labelstudio' or 'hf'"):
        export_project(project.store, tmp_path / "out", format="imagefolder")


# ------------------------------------------------------------------ labelstudio


def test_labelstudio_text_tasks_carry_annotations_predictions_and_disagreements(text_project, tmp_path):
    project, pool = text_project
    answer_as_human(project, pool.uris[4], "neg")
    round_id = project.store.start_round({})
    add_model_label(project, pool.uris[1], "pos", 0.99, round_id=round_id)  # contradicts the seed "neg"

    result = export_project(project.store, tmp_path / "out", format="labelstudio")
    assert sorted(path.name for path in result.path.iterdir()) == ["export.json", "label_config.xml", "tasks.json"]
    tasks = {task["data"]["uri"]: task for task in json.loads((result.path / "tasks.json").read_text())}
    assert len(tasks) == 5

    model_task = tasks[pool.uris[2]]
    assert model_task["data"]["text"] == "love the screen" and "annotations" not in model_task
    (prediction,) = model_task["predictions"]
    assert prediction["model_version"] == MODEL_HASH and prediction["score"] == pytest.approx(0.97)
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["pos"]}}
    ]

    human_task = tasks[pool.uris[4]]
    assert human_task["data"]["source"] == "human" and "predictions" not in human_task
    assert set(COLUMNS) <= set(human_task["data"])  # every provenance column rides along
    assert human_task["annotations"][0]["result"][0]["value"] == {"choices": ["neg"]}

    disputed = tasks[pool.uris[1]]
    assert disputed["data"]["disagreement"] is True
    assert disputed["annotations"][0]["result"][0]["value"] == {"choices": ["neg"]}
    assert disputed["predictions"][0]["result"][0]["value"] == {"choices": ["pos"]}

    config = ElementTree.fromstring((result.path / "label_config.xml").read_text())
    assert config.find("Text").attrib == {"name": "text", "value": "$text"}
    choices = config.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == ("label", "text")
    assert [choice.get("value") for choice in choices] == ["neg", "pos"]


def test_labelstudio_images_are_embedded_unless_a_document_root_is_given(image_folder_project, tmp_path):
    project, pool_folder = image_folder_project
    result = export_project(project.store, tmp_path / "out", format="labelstudio", sources=["model"])
    assert not (result.path / "images").exists()
    tasks = json.loads((result.path / "tasks.json").read_text())
    prefix = "data:image/png;base64,"
    assert all(task["data"]["image"].startswith(prefix) for task in tasks)
    assert base64.b64decode(tasks[0]["data"]["image"][len(prefix):]) == (pool_folder / "unlabeled/c.png").read_bytes()
    assert tasks[0]["predictions"][0]["result"][0]["to_name"] == "image"
    assert ElementTree.fromstring((result.path / "label_config.xml").read_text()).find("Image") is not None


def test_labelstudio_image_links_resolve_under_labelstudios_document_root(image_folder_project, tmp_path):
    project, pool_folder = image_folder_project
    root = tmp_path / "served"
    result = export_project(project.store, root / "review" / "v1", format="labelstudio", sources=["model"],
                            local_files_root=root)
    tasks = json.loads((result.path / "tasks.json").read_text())
    # Label Studio serves /data/local-files/?d=PATH as LOCAL_FILES_DOCUMENT_ROOT/PATH
    links = [task["data"]["image"] for task in tasks]
    assert links == ["/data/local-files/?d=review/v1/images/c.png", "/data/local-files/?d=review/v1/images/d.png"]
    for link in links:
        served = root / unquote(link.removeprefix("/data/local-files/?d="))
        assert served.read_bytes() in {(pool_folder / name).read_bytes() for name in ("unlabeled/c.png",
                                                                                       "unlabeled/d.png")}
    setup = json.loads((result.path / "export.json").read_text())["label_studio_setup"]
    assert any(f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root.resolve()}" in step for step in setup)

    with pytest.raises(BadInputError, match="not inside Label Studio's document root"):
        export_project(project.store, tmp_path / "elsewhere", format="labelstudio", local_files_root=root)
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------ the target folder


def test_an_existing_export_is_replaced_only_when_asked(text_project, tmp_path):
    project, _ = text_project
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine to export into
    export_project(project.store, out, format="csv")
    with pytest.raises(BadInputError, match="already exists.*overwrite=True"):
        export_project(project.store, out, format="parquet")
    assert sorted(path.name for path in out.iterdir()) == ["classes.txt", "export.json", "labels.csv"]

    export_project(project.store, out, format="parquet", sources="model", overwrite=True)
    assert sorted(path.name for path in out.iterdir()) == ["classes.txt", "export.json", "labels.parquet"]
    assert pq.read_table(out / "labels.parquet").num_rows == 3
    assert leftovers(tmp_path) == []


def test_a_failed_export_leaves_the_old_one_in_place(tmp_path):
    pool_file = tmp_path / "pool.csv"
    pool_file.write_text("text,label\nyes,a\nno,b\n", encoding="utf-8")
    pool = datasets.read_text(pool_file)
    with Project.create(tmp_path / "project", pool=pool) as project:
        out = export_project(project.store, tmp_path / "out", format="csv", pool=pool).path
        before = (out / "labels.csv").read_bytes()
        changed = LabeledDataset("pool", "text", ["yes", "NO"], pool.labels, pool.class_names, pool.uris)
        with pytest.raises(BadInputError, match="changed since init"):
            export_project(project.store, out, format="csv", pool=changed, overwrite=True)
    assert (out / "labels.csv").read_bytes() == before and leftovers(tmp_path) == []


def test_refuses_targets_that_would_lose_data(image_folder_project, tmp_path):
    project, pool_folder = image_folder_project
    with pytest.raises(BadInputError, match="a folder.*not a single file"):
        export_project(project.store, tmp_path / "labels.parquet", format="parquet")
    with pytest.raises(BadInputError, match="replace the project itself"):
        export_project(project.store, project.folder, format="csv", overwrite=True)
    with pytest.raises(BadInputError, match="would delete"):
        export_project(project.store, pool_folder, format="imagefolder", overwrite=True)
    assert (pool_folder / "cat/a.png").is_file() and (project.folder / "project.db").is_file()


# ------------------------------------------------ pool content checks (issue 9 item 5)


def test_imagefolder_and_labelstudio_refuse_an_image_file_that_changed_since_init(image_folder_project, tmp_path):
    from metalabel.errors import PoolChangedError

    project, pool_folder = image_folder_project
    changed = pool_folder / "unlabeled/c.png"
    Image.fromarray(np.full((4, 4), 99, np.uint8)).save(changed)  # the file now shows something else
    for format in ("imagefolder", "labelstudio"):
        with pytest.raises(PoolChangedError, match=f"{changed}.*changed since init"):
            export_project(project.store, tmp_path / format, format=format)
        assert not (tmp_path / format).exists()
    assert leftovers(tmp_path) == []


def test_parquet_and_csv_refuse_a_pool_whose_files_are_gone(image_folder_project, tmp_path):
    from metalabel.errors import PoolChangedError

    project, pool_folder = image_folder_project
    (pool_folder / "cat/b.png").unlink()
    for format in ("parquet", "csv"):
        with pytest.raises(PoolChangedError, match=f"not in the pool any more.*{pool_folder / 'cat/b.png'}"):
            export_project(project.store, tmp_path / format, format=format)
        assert not (tmp_path / format).exists()
    shutil.rmtree(pool_folder)
    with pytest.raises(BadInputError, match="cannot reload the pool"):
        export_project(project.store, tmp_path / "csv", format="csv")


def test_an_export_says_whether_it_checked_the_pool(image_folder_project, tmp_path):
    project, _ = image_folder_project
    result = export_project(project.store, tmp_path / "out", format="parquet")
    assert json.loads((result.path / "export.json").read_text())["pool_checked"] is True


def test_an_export_hashes_each_pool_item_once(text_project, tmp_path, monkeypatch):
    import metalabel.export
    import metalabel.store.pool

    project, pool = text_project
    hashed = []
    for module in (metalabel.store.pool, metalabel.export):
        if hasattr(module, "content_hash"):
            real = module.content_hash
            monkeypatch.setattr(module, "content_hash", lambda item, real=real: hashed.append(item) or real(item))
    with Project.open(project.folder) as reopened:
        export_project(reopened.store, tmp_path / "out", format="csv")
    assert sorted(hashed) == sorted(pool.items)  # before: every exported item was hashed twice


# ----------------------------------------------- spreadsheet formulas (issue 9 item 15)


def test_csv_cells_that_start_like_a_formula_are_neutralised(tmp_path):
    texts = ["=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tlead", "\rx", "fine"]
    pool_file = tmp_path / "pool.csv"
    with pool_file.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows([(text, "=cls" if index % 2 else "ok") for index, text in enumerate(texts)])
    pool = datasets.read_text(pool_file)
    with Project.create(tmp_path / "project", pool=pool) as project:
        result = export_project(project.store, tmp_path / "out", format="csv")
    rows = read_csv_rows(result.path / "labels.csv")
    by_uri = {row["uri"]: row for row in rows}
    for uri, text in zip(pool.uris, pool.items, strict=True):
        row = by_uri[uri]
        if text == "fine":
            assert row["text"] == "fine"
        else:
            assert row["text"] == "'" + text, row
    assert {row["label"] for row in rows} == {"'=cls", "ok"}
    for row in rows:
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values()), row
    assert json.loads((result.path / "export.json").read_text())["csv_formula_guard"] is True
