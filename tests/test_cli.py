"""The command line on real (small) data: show, init, status, and clear errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from metalabel.cli import main


@pytest.fixture
def pool(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("cat", "dog", "unlabeled"):
        (tmp_path / "pool" / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / "pool" / folder / f"{i}.png")
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
