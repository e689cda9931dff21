"""A real run with generation on, then `metalabel evaluate` and `metalabel report` on its project."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

import metalabel as ml
from metalabel.cli import main
from metalabel.datasets import gold_labels, seed_labels_from_pool
from metalabel.label.oracle import SimulatedOracle
from metalabel.project import Project
from metalabel.store import content_hash


@pytest.fixture(scope="module")
def labeled_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    environment = pytest.MonkeyPatch()
    environment.setenv("METALABEL_CACHE", str(root / "cache"))
    pool = ml.datasets.load("kanji", split="evaluation", max_classes=5, samples_per_class=24)
    gold = gold_labels(pool)
    with Project.create(root / "p", pool=pool, labels=seed_labels_from_pool(pool, per_class=3, seed=0)) as project:
        # sized so that a round certifies (the report's certified figures are then exercised too)
        result = project.run(oracle=SimulatedOracle(gold), encoder="pixels", budget=45, per_round=15, gold=gold,
                             target_precision=0.8, reference_share=0.6, seed=1, progress=False, project_meta_steps=0)
    assert any(report.certified_precision is not None for report in result.rounds), "no round certified"
    yield root / "p", result
    environment.undo()


def test_every_synthetic_item_traces_back_to_its_parents_generator_and_file(labeled_project):
    folder, result = labeled_project
    with Project.open(folder) as project:
        store = project.store
        synthetic = store.synthetic_items()
        labeled = {label.item_id for label in store.active_labels() if label.source in ("human", "imported")}
        artifacts = {artifact.id: artifact for artifact in store.artifacts(kind="generated")}
    assert synthetic, "the generators made nothing"
    for item in synthetic:
        assert item.generator_version and item.round_id is not None
        assert set(item.parents) <= labeled  # made from human or seed labels only
        stored = np.load(artifacts[item.artifact_id].path)
        key = item.generator.replace(" ", "_")
        assert content_hash(stored[f"{key}.content"][item.row_in_artifact]) == item.content_hash
    generated = [report for report in result.rounds if report.generation is not None]
    assert any(report.generation.generators for report in generated), "no round ran its generators"
    for report in generated:  # what the round log says was dropped is marked dropped in the store
        for generator, verdict in report.generation.generators.items():
            rows = [item for item in synthetic if item.round_id == report.round_id and item.generator == generator]
            assert rows and all(item.kept == verdict.kept for item in rows)


def test_evaluate_scores_the_labels_against_gold_and_saves_the_scorecard(labeled_project, capsys):
    folder, _ = labeled_project
    assert main(["evaluate", str(folder), "--encoder", "pixels", "--gold-from-pool", "--json", "--quiet"]) == 0
    scorecard = json.loads(capsys.readouterr().out)
    gold = scorecard["label_quality"]["gold"]
    assert 0 <= gold["low"] <= gold["accuracy"] <= gold["high"] <= 1
    assert scorecard["confusion"]["against"] == "gold labels"
    quality = scorecard["label_quality"]
    assert "audit" not in quality and "precision_ci" not in quality
    assert {"certified_precision", "estimated_precision", "reference_in_accepted", "coverage"} <= set(quality)
    assert json.loads((folder / "scorecard.json").read_text()) == scorecard


def test_report_is_one_self_contained_page_with_the_round_log(labeled_project, capsys):
    folder, result = labeled_project
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']https?://""", page) and "<script src" not in page
    assert any(report.feedback for report in result.rounds), "the round log check below needs feedback lines"
    for report in result.rounds:
        for line in report.feedback:
            assert html.escape(line) in page
    with Project.open(folder) as project:
        assert [a.kind for a in project.store.artifacts(kind="report")] == ["report"]
        retracted = project.store.retracted_labels()
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"\bnan\b", text, re.I)
    table = re.search(r'<table class="numeric rounds">(.*?)</table>', page).group(1)
    cells = [re.findall(r"<td>(.*?)</td>", row)[1] for row in re.findall(r"<tr>(.*?)</tr>", table) if "<td>" in row]
    assert len(cells) == len(result.rounds)
    for cell, report in zip(cells, result.rounds):  # the bound with its delta, or what it would take
        if report.certified_precision is None:
            assert cell.startswith("nothing certified yet")
        else:
            assert cell == f"&gt;= {100 * report.certified_precision:.1f}% (delta {report.delta:g})"
    section = re.search(r'<section id="retracted">(.*?)</section>', page).group(1)
    assert all(html.escape(label.uri) in section for label in retracted[:5])
    assert ("Not measured yet" in section) == (not retracted)


def test_report_leaves_out_damaged_generated_files_and_says_so(labeled_project, tmp_path, capsys):
    """A truncated round-N.npz, one holding a pickled object array, or a garbled scorecard.json: noted, not a crash."""
    folder, _ = labeled_project
    with Project.open(folder) as project:
        if not project.store.artifacts(kind="scorecard"):  # whatever order the tests run in, there is one to damage
            project.evaluate(encoder="pixels", progress=False)
        artifacts = {a.id: a.path for a in project.store.artifacts(kind="generated")}
        read = sorted({artifacts[item.artifact_id] for item in project.store.synthetic_items()
                       if item.kept and item.artifact_id in artifacts})
        scorecards = [a.path for a in project.store.artifacts(kind="scorecard")]
    assert read, "no round kept generated items"
    originals = {path: path.read_bytes() for path in read + scorecards}
    marker = tmp_path / "unpickled"
    try:
        truncated = read[0]
        truncated.write_bytes(originals[truncated][: len(originals[truncated]) // 2])
        for path in read[1:]:  # object arrays: loading them would run a pickle
            stored = dict(np.load(path))
            for key in stored:
                stored[key] = np.empty(len(stored[key]), dtype=object)
                stored[key][:] = [Unpickled(marker)] * len(stored[key])
            np.savez(path, **stored)
        for path in scorecards:
            path.write_text("{not json")
        assert main(["report", str(folder), "--out", str(tmp_path / "report.html")]) == 0
    finally:
        for path, content in originals.items():
            path.write_bytes(content)
    page = (tmp_path / "report.html").read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', page)
    assert any(html.escape(str(truncated)) in note and "cannot be read" in note for note in notes)
    assert sum("left out of this report" in note for note in notes) == len(read)
    assert scorecards and any("run `metalabel evaluate` again" in note for note in notes)
    assert not marker.exists()  # no pickle was executed


class Unpickled:
    """Leaves a file behind if it is ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
