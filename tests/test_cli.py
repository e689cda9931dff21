"""The command line on real (small) data: show, init, status, and clear errors with exit code 2."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from helpers import pet_image_folder
from metalabel.cli import main


@pytest.fixture
def pool(tmp_path):
    pet_image_folder(tmp_path / "pool", per_folder=3)
    seed = tmp_path / "seed.csv"
    seed.write_text("uri,label\ncat/0.png,cat\ndog/1.png,dog\n")
    return tmp_path / "pool", seed


def test_show_kanji_prints_summary_and_writes_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "grid.png"
    assert main(["show", "kanji", "--split", "evaluation", "--max-classes", "4", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "kanji" in out and "items" in out
    assert Image.open(grid).size[0] > 0


def test_init_then_status(pool, tmp_path, capsys):
    folder, seed = pool
    assert main(["init", str(tmp_path / "proj"), "--pool", str(folder), "--labels", str(seed)]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "proj"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["items"] == 9 and status["labels_by_source"]["imported"] == 2
    assert status["classes"] == ["cat", "dog"]


def test_init_with_a_seed_row_naming_a_missing_item_fails_clearly(pool, tmp_path, capsys):
    folder, seed = pool
    seed.write_text("uri,label\ncat/0.png,cat\ndog/9.png,dog\n")
    assert main(["init", str(tmp_path / "proj"), "--pool", str(folder), "--labels", str(seed)]) == 2
    err = capsys.readouterr().err
    assert "row 3" in err and "dog/9.png" in err
    assert not (tmp_path / "proj").exists()  # nothing half-made


def test_status_of_a_missing_project_says_how_to_make_one(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "metalabel init" in capsys.readouterr().err


def test_unknown_source_lists_known_ones(capsys):
    assert main(["show", "cifar"]) == 2
    assert "kanji" in capsys.readouterr().err


def test_label_studio_round_trip_through_the_cli(pool, tmp_path, capsys):
    folder, seed = pool
    project = tmp_path / "proj"
    assert main(["init", str(project), "--pool", str(folder), "--labels", str(seed)]) == 0
    assert main(["run", str(project), "--oracle", "labelstudio", "--encoder", "pixels", "--budget", "2",
                 "--per-round", "2", "--quiet"]) == 0
    assert "waiting for the oracle" in capsys.readouterr().out
    [tasks_file] = (project / "labelstudio").glob("tasks-*.json")
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 2
    # what Label Studio's JSON export holds after a person labeled both tasks "cat"
    exported = [{**task, "id": i, "annotations": [{"was_cancelled": False, "completed_by": {"email": "a@b.c"},
                 "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": ["cat"]}}]}]} for i, task in enumerate(tasks)]
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(exported))
    assert main(["import-answers", str(project), str(export_file)]) == 0
    assert "2 answers recorded" in capsys.readouterr().out
    assert main(["status", str(project), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["labels_by_source"]["human"] == 2 and status["open_questions"] == 0


# ------------------------------------------------ export targets (issue 9 item 1)


def test_export_never_targets_the_project_or_its_own_files_even_with_overwrite(pool, tmp_path, capsys):
    folder, seed = pool
    project = tmp_path / "proj"
    assert main(["init", str(project), "--pool", str(folder), "--labels", str(seed), "--quiet"]) == 0
    (project / "models" / "round-1").mkdir(parents=True)
    (project / "models" / "round-1" / "weights.safetensors").write_bytes(b"weights")
    (project / "generated").mkdir()
    (project / "generated" / "round-1.npz").write_bytes(b"samples")
    db_before = (project / "project.db").read_bytes()
    capsys.readouterr()

    for target in (project / "project.db", project / "models", project / "generated", project, tmp_path,
                   project / "models" / "new", project / "exports", project / "exports" / ".."):
        for overwrite in ([], ["--overwrite"]):
            code = main(["export", str(project), "--format", "parquet", "--out", str(target), *overwrite])
            err = " ".join(capsys.readouterr().err.split())
            assert code == 2, (target, overwrite)
            assert "project" in err and "Traceback" not in err, err
    assert (project / "project.db").read_bytes() == db_before
    assert (project / "models" / "round-1" / "weights.safetensors").read_bytes() == b"weights"
    assert (project / "generated" / "round-1.npz").read_bytes() == b"samples"
    assert not (project / "models" / "new").exists()

    # PROJECT/exports/<name> is an export's place, and may be replaced when asked.
    assert main(["export", str(project), "--format", "csv", "--out", str(project / "exports" / "v1")]) == 0
    assert main(["export", str(project), "--format", "csv", "--out", str(project / "exports" / "v1"),
                 "--overwrite"]) == 0
    assert main(["export", str(project), "--format", "csv"]) == 0  # the default, PROJECT/exports/csv
    assert (project / "exports" / "csv" / "labels.csv").is_file()


# ---------------------------------------- a pool that grows after init (issue 9 item 12)


def test_add_items_adds_images_the_pool_gained_after_init(pool, tmp_path, capsys):
    folder, seed = pool
    project = tmp_path / "proj"
    assert main(["init", str(project), "--pool", str(folder), "--labels", str(seed), "--quiet"]) == 0
    rng = np.random.default_rng(1)
    for i in (7, 8):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / "unlabeled" / f"new{i}.png")
    capsys.readouterr()
    assert main(["add-items", str(project)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "added 2 items" in out and "new7.png" in out and "11 items" in out
    assert main(["add-items", str(project)]) == 0
    assert "nothing to add" in capsys.readouterr().out


def test_run_on_a_grown_pool_adds_the_new_items_and_says_so(pool, tmp_path, capsys):
    folder, seed = pool
    for image in (folder / "unlabeled").iterdir():  # the simulated oracle needs every item's class
        image.unlink()
    (folder / "unlabeled").rmdir()
    project = tmp_path / "proj"
    assert main(["init", str(project), "--pool", str(folder), "--labels", str(seed), "--quiet"]) == 0
    rng = np.random.default_rng(2)
    for i in range(4):  # new items, also in labeled folders (the simulated oracle knows their class)
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / "cat" / f"new{i}.png")
    capsys.readouterr()
    code = main(["run", str(project), "--oracle", "simulated", "--encoder", "pixels", "--budget", "4",
                 "--per-round", "2", "--max-rounds", "3", "--no-generate", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "4 items the pool gained since init were added" in " ".join(captured.err.split())
    assert main(["status", str(project), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["items"] == 10
    with sqlite3.connect(project / "project.db") as db:
        assert {row[0] for row in db.execute("SELECT status FROM rounds")} == {"finished"}


def test_a_damaged_project_database_is_a_clear_error_not_a_traceback(pool, tmp_path, capsys):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "project.db").write_bytes(b"")
    assert main(["status", str(tmp_path / "proj")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "empty (0 bytes)" in err and "backup" in err and "Traceback" not in err
    assert (tmp_path / "proj" / "project.db").read_bytes() == b""


# ------------------------------------- certified figures and retracted labels (issue 10 item 5)


def test_status_says_the_last_rounds_certified_figures_and_export_marks_retracted_labels(pool, tmp_path, capsys):
    from metalabel.store import ProjectStore

    folder, seed = pool
    project = tmp_path / "proj"
    assert main(["init", str(project), "--pool", str(folder), "--labels", str(seed), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(project)]) == 0
    assert "no round has finished yet, so nothing is certified" in capsys.readouterr().out

    with ProjectStore.open(project) as store:
        unlabeled = [item.id for item in store.items() if "unlabeled" in item.uri]
        first = store.start_round({"target_precision": 0.95})
        kept = store.add_label(unlabeled[0], "cat", source="model", calibrated_confidence=0.97, threshold=0.93,
                               round_id=first, certified_precision=0.951)
        stale = store.add_label(unlabeled[1], "dog", source="model", calibrated_confidence=0.94, threshold=0.93,
                                round_id=first, certified_precision=0.951)
        store.finish_round(first, {"certified_precision": 0.951, "estimated_precision": 0.975, "delta": 0.05,
                                   "coverage": 0.4, "threshold": 0.93, "reference_answers": 60,
                                   "reference_needed": 0, "model_labels": 2, "retracted": 0,
                                   "certificate": "certified at 0.93"})
        second = store.start_round({"target_precision": 0.95})
        store.retract_label(stale.label_id, round_id=second, reason="calibrated confidence 0.940 below 0.950")
        store.finish_round(second, {"certified_precision": 0.953, "estimated_precision": 0.98, "delta": 0.05,
                                    "coverage": 0.2, "threshold": 0.95, "reference_answers": 64,
                                    "reference_needed": 0, "model_labels": 1, "retracted": 1,
                                    "certificate": "certified at 0.95"})
    assert kept.applied

    assert main(["status", str(project), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["retracted_labels"] == 1 and status["labels_by_source"]["model"] == 1
    certified = status["certified"]
    assert (certified["round"], certified["certified_precision"], certified["delta"]) == (second, 0.953, 0.05)
    assert (certified["estimated_precision"], certified["coverage"], certified["threshold"]) == (0.98, 0.2, 0.95)
    assert (certified["reference_answers"], certified["retracted_in_round"]) == (64, 1)
    assert certified["summary"].startswith("Certified precision >= 95.3% (delta 0.05): holds with probability 0.95")

    assert main(["status", str(project)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"round {second}: Certified precision >= 95.3% (delta 0.05)" in out
    assert "point estimate 98.0%; coverage 20.0% of the unlabeled pool" in out
    assert "calibrated confidence >= 0.950" in out and "1 model labels in all, 1 in round" in out
    assert "nan" not in out.lower()

    assert main(["export", str(project), "--format", "csv", "--out", str(tmp_path / "plain")]) == 0
    assert main(["export", str(project), "--format", "csv", "--out", str(tmp_path / "audit"),
                 "--include-retracted"]) == 0
    assert "(retracted ones included, marked retracted)" in capsys.readouterr().out
    with open(tmp_path / "plain" / "labels.csv", newline="") as file:
        plain = list(csv.DictReader(file))
    with open(tmp_path / "audit" / "labels.csv", newline="") as file:
        audit = list(csv.DictReader(file))
    assert len(audit) == len(plain) + 1 and not any(row["retracted"] == "True" for row in plain)
    (row,) = [row for row in audit if row["retracted"] == "True"]
    assert (row["label"], row["retracted_round"], row["certified_precision"]) == ("dog", str(second), "0.951")
    assert row["retraction_reason"] == "calibrated confidence 0.940 below 0.950"
    assert main(["export", str(project), "--format", "imagefolder", "--include-retracted"]) == 2
