"""Exports that Hugging Face ``datasets`` reads, offline, with the right features.

``hf`` is a dataset folder (parquet shards and a dataset card), imagefolder carries
``metadata.csv``, and parquet and csv carry the table's features and a ClassLabel class list.
Every test reads the export back with the real ``datasets``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from metalabel import datasets as ml_datasets
from metalabel.errors import BadInputError
from metalabel.evaluate.records import LabelQuality, RoundCertificate, Scorecard
from metalabel.export import CLASSES_FILE, COLUMNS, PARQUET_CLASSES_KEY, export_project
from metalabel.project import Project

# a local folder needs no network: make sure datasets never tries (set before it is imported)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
hf = pytest.importorskip("datasets")

MODEL_HASH = "ckpt-3f2a"


def add_model_label(project: Project, uri: str, class_name: str, confidence: float, *, round_id: int) -> None:
    (item_id,) = project.store.item_ids([uri])
    project.store.add_label(item_id, class_name, source="model", raw_confidence=confidence,
                            calibrated_confidence=confidence, threshold=0.8, round_id=round_id,
                            model_hash=MODEL_HASH, certified_precision=0.93)


def answer(project: Project, uri: str, class_name: str, *, strategy: str, who: str = "ann@example.com") -> None:
    (item_id,) = project.store.item_ids([uri])
    question_id = project.store.ask(item_id, strategy=strategy)
    project.store.answer(question_id, class_name, oracle=f"labelstudio:{who}")


def certify(project: Project, round_id: int) -> None:
    """Record a certificate on the round, as the loop does."""
    certificate = RoundCertificate(certified_precision=0.93, estimated_precision=0.97, delta=0.05, threshold=0.8,
                                   coverage=0.5, model_labels=2, reference_answers=40, reference_needed=None,
                                   retracted=0, certificate="certified at the 0.9 target")
    quality = LabelQuality(coverage=0.5, certified_precision=0.93, delta=0.05, estimated_precision=0.97,
                           reference_in_accepted=None, gold=None, held_out=None, ece=0.031, reliability=None)
    scorecard = Scorecard(label_quality=quality, confusion=None, label_issues=(), similarity={}, downstream=None,
                          generators={}, feedback=())
    project.store.record_round_metrics(round_id, certificate.to_json() | {"scorecard": scorecard.to_json()})


def load(path, tmp_path, **options):
    return hf.load_dataset(str(path), cache_dir=str(tmp_path / "hf-cache"), **options)


def front_matter(card: str) -> dict:
    _, header, _ = card.split("---\n", 2)
    return yaml.safe_load(header)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def image_project(tmp_path):
    """PNG files: a seed cat and dog, two model labels, one reference answer; classes include an empty one."""
    pool_folder = tmp_path / "pets"
    shades = {"cat/a.png": 10, "dog/a.png": 30, "unlabeled/c.png": 40, "unlabeled/d.png": 50, "unlabeled/e.png": 60}
    for name, shade in shades.items():
        (pool_folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 6), shade, np.uint8)).save(pool_folder / name)
    pool = ml_datasets.imagefolder(pool_folder)
    project = Project.create(tmp_path / "pets-project", pool=pool)
    project.store.set_classes(["cat", "dog", "bird: \"the odd one\""])  # a class nobody has labeled yet
    round_id = project.store.start_round({"target_precision": 0.9})
    add_model_label(project, str(pool_folder / "unlabeled/c.png"), "cat", 0.95, round_id=round_id)
    add_model_label(project, str(pool_folder / "unlabeled/d.png"), "dog", 0.85, round_id=round_id)
    certify(project, round_id)
    answer(project, str(pool_folder / "unlabeled/e.png"), "dog", strategy="reference")
    with project:
        yield project, pool_folder


# ---------------------------------------------------------------------------- hf


def test_hf_image_export_loads_with_class_labels_images_and_provenance(image_project, tmp_path):
    project, pool_folder = image_project
    result = export_project(project.store, tmp_path / "out", format="hf", test_split=True)
    assert sorted(p.relative_to(result.path).as_posix() for p in result.path.rglob("*") if p.is_file()) == [
        "README.md", "classes.txt", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
        "export.json"]

    loaded = load(result.path, tmp_path)
    assert set(loaded) == {"train", "test"}
    features = loaded["train"].features
    assert isinstance(features["image"], hf.Image)
    assert isinstance(features["label"], hf.ClassLabel)
    assert features["label"].names == ["cat", "dog", 'bird: "the odd one"']
    assert features["calibrated_confidence"] == hf.Value("float64") and features["round"] == hf.Value("int64")
    assert features["disagreement"] == hf.Value("bool")
    assert features["created_at"] == hf.Value("timestamp[ms, tz=UTC]")
    assert list(features) == ["image", "label", *(name for name in COLUMNS if name != "label")]

    train = {row["uri"]: row for row in loaded["train"]}
    assert len(train) == 4
    model_row = train[str(pool_folder / "unlabeled/d.png")]
    assert features["label"].int2str(model_row["label"]) == "dog"
    assert (model_row["source"], model_row["model_hash"]) == ("model", MODEL_HASH)
    assert model_row["calibrated_confidence"] == pytest.approx(0.85)
    np.testing.assert_array_equal(np.asarray(model_row["image"]), np.full((4, 6), 50, np.uint8))
    assert train[str(pool_folder / "cat/a.png")]["source"] == "imported"

    (test_row,) = loaded["test"]  # the one answer to a reference question
    assert test_row["uri"] == str(pool_folder / "unlabeled/e.png")
    assert (test_row["source"], test_row["query_strategy"]) == ("human", "reference")
    assert test_row["annotator"] == "labelstudio:ann@example.com"
    assert json.loads((result.path / "export.json").read_text())["splits"] == {"train": 4, "test": 1}


def test_the_dataset_card_says_what_the_set_is_and_how_it_was_built(image_project, tmp_path):
    project, _ = image_project
    result = export_project(project.store, tmp_path / "out", format="hf", test_split=True)
    card = (result.path / "README.md").read_text()

    header = front_matter(card)
    assert header["license"] == "unknown" and header["task_categories"] == ["image-classification"]
    names = header["configs"][0]["features"][1]["dtype"]["class_label"]["names"]
    assert names == {"0": "cat", "1": "dog", "2": 'bird: "the odd one"'}

    body = card.split("---\n", 2)[2]
    assert "Certified precision >= 93.0% (delta 0.05)" in body and "probability 0.95" in body
    assert "| 1 | dog | 2 | 1 | 1 | 1 | 1 |" in body  # train, test, then human, imported, model
    assert "| 2 | bird: \"the odd one\" | 0 | 0 | 0 | 0 | 0 |" in body
    assert "Labels by source: human 1, imported 2, model 2." in body
    assert "1 reference" in body  # questions answered, by why they were asked
    assert "## Scorecard" in body and "| model | calibration error (ECE) | 0.031 |" in body
    from metalabel._version import __version__

    assert f"metalabel {__version__}" in body and "## Licence" in body and "`annotator`" in body


def test_hf_text_export_without_a_test_split(tmp_path):
    pool_file = tmp_path / "reviews.csv"
    pool_file.write_text("text,label\ngreat phone,pos\nbroke in a day,neg\nlove the screen,\n", encoding="utf-8")
    pool = ml_datasets.read_text(pool_file)
    with Project.create(tmp_path / "project", pool=pool) as project:
        result = export_project(project.store, tmp_path / "out", format="hf")
    loaded = load(result.path, tmp_path)
    assert list(loaded) == ["train"]
    assert loaded["train"].features["text"] == hf.Value("string")
    assert sorted(loaded["train"]["text"]) == ["broke in a day", "great phone"]
    assert loaded["train"].features["label"].names == ["neg", "pos"]


def test_a_test_split_without_reference_answers_is_refused_and_nothing_is_written(tmp_path):
    pool_file = tmp_path / "reviews.csv"
    pool_file.write_text("text,label\ngreat phone,pos\nbroke in a day,neg\n", encoding="utf-8")
    pool = ml_datasets.read_text(pool_file)
    with Project.create(tmp_path / "project", pool=pool) as project:
        with pytest.raises(BadInputError, match="reference question.*test split would be empty"):
            export_project(project.store, tmp_path / "out", format="hf", test_split=True)
        with pytest.raises(BadInputError, match="'hf' export only"):
            export_project(project.store, tmp_path / "out", format="parquet", test_split=True)
        with pytest.raises(BadInputError, match="no labeled item to write in the train split"):
            export_project(project.store, tmp_path / "out", format="hf", sources="generated")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ tables


@pytest.fixture
def table_project(tmp_path):
    """Rows whose columns are named in the file; one is called like a provenance column."""
    table = tmp_path / "flowers.csv"
    table.write_text("petal_length,source,label\n1.5,0.25,setosa\n4.5,1.5,versicolor\n1.4,0.5,\n", encoding="utf-8")
    pool = ml_datasets.read_table(table)
    project = Project.create(tmp_path / "flowers-project", pool=pool)
    round_id = project.store.start_round({})
    add_model_label(project, pool.uris[2], "setosa", 0.9, round_id=round_id)
    with project:
        yield project, pool


def test_hf_table_export_has_one_column_per_feature_under_the_files_names(table_project, tmp_path):
    project, _ = table_project
    result = export_project(project.store, tmp_path / "out", format="hf")
    train = load(result.path, tmp_path)["train"]
    assert train.features["petal_length"] == hf.Value("float32")
    assert train.features["feature_source"] == hf.Value("float32")  # "source" is the label's provenance
    rows = sorted(train, key=lambda row: row["petal_length"])
    assert [(row["petal_length"], row["feature_source"], row["source"]) for row in rows] == [
        (pytest.approx(1.4), pytest.approx(0.5), "model"), (pytest.approx(1.5), pytest.approx(0.25), "imported"),
        (pytest.approx(4.5), pytest.approx(1.5), "imported")]
    sidecar = json.loads((result.path / "export.json").read_text())
    assert sidecar["feature_columns"] == {"petal_length": "petal_length", "source": "feature_source"}
    assert front_matter((result.path / "README.md").read_text())["task_categories"] == ["tabular-classification"]


def test_parquet_and_csv_carry_the_features_and_a_class_list_datasets_reads(table_project, tmp_path):
    project, _ = table_project
    parquet = export_project(project.store, tmp_path / "parquet", format="parquet")
    schema = pq.read_schema(parquet.path / "labels.parquet")
    assert json.loads(schema.metadata[PARQUET_CLASSES_KEY]) == ["setosa", "versicolor"]
    assert (parquet.path / CLASSES_FILE).read_text() == "setosa\nversicolor\n"

    class_label = hf.ClassLabel(names_file=str(parquet.path / CLASSES_FILE))
    table = hf.load_dataset("parquet", data_files=str(parquet.path / "labels.parquet"),
                            cache_dir=str(tmp_path / "hf-cache"))["train"].cast_column("label", class_label)
    assert table.features["label"].names == ["setosa", "versicolor"]
    assert table.features["petal_length"] == hf.Value("float32")
    assert sorted(table["label"]) == [0, 0, 1]

    csv_export = export_project(project.store, tmp_path / "csv", format="csv")
    rows = hf.load_dataset("csv", data_files=str(csv_export.path / "labels.csv"),
                           cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert {"petal_length", "feature_source", *COLUMNS} == set(rows.column_names)
    assert sorted(rows["petal_length"]) == pytest.approx([1.4, 1.5, 4.5])
    assert (csv_export.path / CLASSES_FILE).read_text() == "setosa\nversicolor\n"


# ------------------------------------------------------------------- imagefolder


def test_imagefolder_metadata_keeps_the_provenance_through_datasets(image_project, tmp_path):
    project, pool_folder = image_project
    result = export_project(project.store, tmp_path / "out", format="imagefolder")
    train = load(result.path, tmp_path)["train"]
    assert isinstance(train.features["image"], hf.Image)
    assert train.features["label"].names == ["cat", "dog", 'bird: "the odd one"']
    assert train.features["calibrated_confidence"] == hf.Value("float64")
    assert train.features["created_at"] == hf.Value("string")  # datasets' CSV reader cannot parse times
    rows = {row["uri"]: row for row in train}
    assert len(rows) == 5
    model_row = rows[str(pool_folder / "unlabeled/c.png")]
    assert train.features["label"].int2str(model_row["label"]) == "cat"
    assert (model_row["source"], model_row["model_hash"], model_row["round"]) == ("model", MODEL_HASH, 1.0)
    np.testing.assert_array_equal(np.asarray(model_row["image"]), np.full((4, 6), 40, np.uint8))
    assert rows[str(pool_folder / "unlabeled/e.png")]["annotator"] == "labelstudio:ann@example.com"


def test_the_cli_exports_hf_with_a_test_split(image_project, tmp_path, capsys):
    from metalabel.cli import main

    project, _ = image_project
    folder = project.folder
    project.close()  # the CLI opens the project itself
    assert main(["export", str(folder), "--format", "hf", "--test-split", "--out", str(tmp_path / "out")]) == 0
    assert "exported 5 labeled items" in capsys.readouterr().out
    loaded = load(tmp_path / "out", tmp_path)
    assert (loaded["train"].num_rows, loaded["test"].num_rows) == (4, 1)


def test_a_damaged_round_record_is_named_in_the_card_and_fails_no_export(image_project, tmp_path):
    project, _ = image_project
    round_id = project.store.start_round({})
    project.store.record_round_metrics(round_id, {"certificate": "certified", "certified_precision": 0.9})
    card = (export_project(project.store, tmp_path / "hf", format="hf").path / "README.md").read_text()
    assert f"Round {round_id}'s certificate could not be read" in card and "lacks 'estimated_precision'" in card
    assert export_project(project.store, tmp_path / "parquet", format="parquet").rows == 5
