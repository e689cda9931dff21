"""The project library (issue 16): finished projects kept as labeled embeddings, meta-training across them.

Real data: scikit-learn's handwritten digits (8x8, as 64-column table rows), split into
projects of disjoint digit classes, each a real project on SQLite made through
``Project.create`` from a CSV pool (so the CLI can reload it).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metalabel.cli import main
from metalabel.data.sources.user import read_table
from metalabel.datasets import gold_labels
from metalabel.errors import BadInputError, DataNotFoundError, EmptyClassError, NotEnoughDataError
from metalabel.label.oracle import SimulatedOracle
from metalabel.label.round_model import pool_inputs
from metalabel.library import Library, ProjectEpisodes, task_sources
from metalabel.library.entries import TABLE_ENCODER
from metalabel.project import Project
from metalabel.store import ProjectStore

GROUPS = {"lows": (0, 1, 2), "mids": (3, 4, 5), "highs": (6, 7, 8)}


def digits_csv(path: Path, digits: tuple[int, ...], *, per_class: int = 40, columns: int = 64) -> Path:
    """``per_class`` real handwritten digits of each class in ``digits`` as a CSV table pool."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = np.concatenate([np.flatnonzero(data.target == d)[:per_class] for d in digits])
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([f"p{i}" for i in range(columns)] + ["label"])
        for row in rows:
            writer.writerow([f"{v:g}" for v in data.data[row][:columns]] + [f"digit {data.target[row]}"])
    return path


def digits_project(tmp_path: Path, name: str, digits: tuple[int, ...], *, seeds: int | None = None,
                   **options) -> Project:
    pool = read_table(digits_csv(tmp_path / f"{name}.csv", digits, **options))
    labels = None
    if seeds is not None:
        labels = {int(i): pool.class_names[pool.labels[i]] for c in range(pool.num_classes)
                  for i in np.flatnonzero(pool.labels == c)[:seeds]}
    return Project.create(tmp_path / name, pool=pool, labels=labels)


@pytest.fixture
def library(tmp_path) -> Library:
    return Library(tmp_path / "library")


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def test_add_keeps_people_and_accepted_labels_with_provenance_as_embeddings(tmp_path, library):
    with digits_project(tmp_path, "lows", GROUPS["lows"], seeds=5) as project:
        store = project.store
        round_id = store.start_round({})
        unlabeled = [item for item in store.items() if item.id not in {label.item_id for label in
                                                                       store.active_labels()}]
        store.add_label(unlabeled[0].id, "digit 1", source="model", calibrated_confidence=0.97, round_id=round_id)
        retracted = store.add_label(unlabeled[1].id, "digit 2", source="model", calibrated_confidence=0.6,
                                    round_id=round_id)
        store.retract_label(retracted.label_id, round_id=round_id, reason="below the threshold")
        manifest = library.add(project)
        expected = pool_inputs(project.load_pool(), None, encoder=None, progress=False).numpy()
        uris = project.load_pool().uris

    entry = library.entry("lows")
    assert manifest.name == "lows" and manifest.encoder.name == TABLE_ENCODER and manifest.encoder.dim == 64
    assert manifest.sources == {"imported": 15, "model": 1}  # the retracted model label stays behind
    assert manifest.class_names == ("digit 0", "digit 1", "digit 2") and not manifest.with_content
    assert entry.content is None
    model_row = int(np.flatnonzero(entry.sources == "model")[0])
    assert entry.uris[model_row] == unlabeled[0].uri and entry.rounds[model_row] == round_id
    assert entry.confidence[model_row] == pytest.approx(0.97)
    assert np.isnan(entry.confidence[entry.sources == "imported"]).all()
    assert (entry.rounds[entry.sources == "imported"] == -1).all()
    # the embedding is the item as the labeling loop reads it, in the project's space
    for row in (0, model_row):
        np.testing.assert_allclose(entry.embeddings[row], expected[uris.index(str(entry.uris[row]))], rtol=1e-6)
    assert entry.manifest.class_names[entry.labels[model_row]] == "digit 1"


def test_with_content_keeps_the_items_too(tmp_path, library):
    with digits_project(tmp_path, "mids", GROUPS["mids"], seeds=3) as project:
        library.add(project, with_content=True, name="mids-with-items")
        pool = project.load_pool()
    entry = library.entry("mids-with-items")
    assert entry.manifest.with_content and entry.content is not None
    row = pool.uris.index(str(entry.uris[0]))
    np.testing.assert_array_equal(entry.content[0], np.asarray(pool.items)[row])


def test_a_refused_add_changes_nothing(tmp_path, library):
    with digits_project(tmp_path, "lows", GROUPS["lows"], seeds=2) as project:
        library.add(project)
        before = files_of(library.folder)
        with pytest.raises(BadInputError, match="already holds a project named 'lows'"):
            library.add(project)
    # another encoder space: 16 columns, not 64
    with digits_project(tmp_path, "narrow", GROUPS["mids"], seeds=2, columns=16) as narrow:
        with pytest.raises(BadInputError, match="encoder space columns \\(16-d.*holds columns \\(64-d"):
            library.add(narrow)
        with pytest.raises(BadInputError, match="cannot name a library entry"):
            library.add(narrow, name="../escape")
    assert files_of(library.folder) == before


def test_a_project_without_labels_is_refused(tmp_path, library):
    pool = read_table(digits_csv(tmp_path / "bare.csv", (0, 1)))
    from metalabel.store import ItemRecord, content_hash

    with ProjectStore.create(tmp_path / "bare", name="bare") as store:  # every label gone: only items and classes
        store.set_classes(pool.class_names)
        store.add_items(ItemRecord(u, content_hash(x), "tabular") for u, x in zip(pool.uris, pool.items))
    with Project.open(tmp_path / "bare", pool=pool) as project, \
            pytest.raises(EmptyClassError, match="project 'bare' has no human, seed or accepted model labels"):
        library.add(project)
    assert library.names() == []


def test_list_remove_and_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("METALABEL_LIBRARY", str(tmp_path / "team-library"))
    library = Library()
    assert library.folder == tmp_path / "team-library"
    for name, digits in GROUPS.items():
        with digits_project(tmp_path, name, digits, seeds=2) as project:
            library.add(project)
    assert library.names() == ["highs", "lows", "mids"]
    library.remove("mids")
    assert library.names() == ["highs", "lows"]
    with pytest.raises(DataNotFoundError, match="no project named 'mids'.*highs, lows"):
        library.remove("mids")


def test_export_and_import_one_file(tmp_path, library):
    for name, digits in GROUPS.items():
        with digits_project(tmp_path, name, digits, seeds=4) as project:
            library.add(project)
    shared = library.export_file(tmp_path / "team.zip")
    with zipfile.ZipFile(shared) as archive:
        import json

        manifest = json.loads(archive.read("manifest.json"))
    assert [p["name"] for p in manifest["projects"]] == ["highs", "lows", "mids"]
    assert manifest["metalabel_version"] and all(p["metalabel_version"] for p in manifest["projects"])

    other = Library(tmp_path / "other")
    result = other.import_file(shared)
    assert result.added == ["highs", "lows", "mids"]
    for name in result.added:
        mine, theirs = library.entry(name), other.entry(name)
        np.testing.assert_array_equal(mine.embeddings, theirs.embeddings)
        np.testing.assert_array_equal(mine.sources, theirs.sources)
        assert mine.manifest == theirs.manifest

    # all or nothing: one name already held refuses the whole file
    other.remove("lows")
    before = files_of(other.folder)
    with pytest.raises(BadInputError, match="already holds a project named 'highs'"):
        other.import_file(shared)
    assert files_of(other.folder) == before


def test_an_import_in_another_encoder_space_or_not_an_export_is_refused(tmp_path, library):
    with digits_project(tmp_path, "lows", GROUPS["lows"], seeds=2) as project:
        library.add(project)
    shared = library.export_file(tmp_path / "team.zip")
    narrow = Library(tmp_path / "narrow")
    with digits_project(tmp_path, "narrow", GROUPS["mids"], seeds=2, columns=16) as project:
        narrow.add(project)
    before = files_of(narrow.folder)
    with pytest.raises(BadInputError, match="encoder space columns \\(64-d.*holds columns \\(16-d"):
        narrow.import_file(shared)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="not a metalabel library export"):
        narrow.import_file(tmp_path / "junk.zip")
    assert files_of(narrow.folder) == before


def _marked_library(tmp_path: Path, *, label_space: str | None = None) -> Library:
    """Three projects; every embedding's last column is its project's number, so an episode shows its sources."""
    tmp_path.mkdir(exist_ok=True)
    library = Library(tmp_path / "marked")
    for number, (name, digits) in enumerate(GROUPS.items()):
        with digits_project(tmp_path, name, digits) as project:
            library.add(project, label_space=label_space if name != "highs" else None)
        path = library._entry_path(name)
        entry = library.entry(name)
        entry.embeddings[:, -1] = number
        path.write_bytes(entry.to_bytes())
    return library


def test_episodes_never_mix_projects_unless_they_share_a_label_space(tmp_path):
    entries = _marked_library(tmp_path).entries()
    sources = task_sources(entries)
    assert [s.projects for s in sources] == [("highs",), ("lows",), ("mids",)]
    episodes = ProjectEpisodes(sources, ways=3, shots=2, queries=3, seed=0)
    seen = set()
    for start in range(40):
        batch = episodes.batch(start, 1)
        marks = torch.cat([batch.support_x[..., -1].ravel(), batch.query_x[..., -1].ravel()]).unique()
        assert len(marks) == 1  # one project per episode
        seen.add(float(marks[0]))
    assert seen == {0.0, 1.0, 2.0}  # and every project is a source of tasks

    shared = task_sources(_marked_library(tmp_path / "shared", label_space="digits").entries())
    assert sorted(s.projects for s in shared) == [("highs",), ("lows", "mids")]
    merged = next(s for s in shared if s.projects == ("lows", "mids"))
    assert len(merged.class_names) == 6
    mixed = ProjectEpisodes([merged], ways=6, shots=1, queries=1, seed=0).batch(0, 1)
    assert len(mixed.support_x[..., -1].unique()) == 2  # a shared label space's classes meet in one episode


def test_train_holds_out_projects_and_a_new_project_runs_from_the_model(tmp_path, library):
    for name, digits in GROUPS.items():
        with digits_project(tmp_path, name, digits) as project:
            library.add(project)
    model = library.train(steps=30, shots=3, queries=5, val_every=10, val_episodes=20, seed=0)
    assert model.validated_on and not set(model.validated_on) & set(model.trained_on)
    assert set(model.validated_on) | set(model.trained_on) == set(GROUPS)
    assert 0 < model.validation_accuracy <= 1 and 0 < model.encoder_space_accuracy <= 1
    loaded = library.model()
    assert loaded.trained_on == model.trained_on and loaded.encoder == model.encoder
    for (name, a), b in zip(model.learner.state_dict().items(), loaded.learner.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)

    # a new project with digits none of the past projects had
    with digits_project(tmp_path, "new", (9, 0), seeds=2) as project:
        pool = project.load_pool()
        result = project.run(loaded.learner, encoder=loaded.run_encoder, oracle=SimulatedOracle(gold_labels(pool)),
                             budget=6, per_round=3, max_rounds=2, generate=False, progress=False)
        assert len(result.rounds) == 2
        assert result.rounds[0].model.startswith("given")
        assert result.rounds[0].questions == 3 and len(project.store.answered_questions()) == 3


def test_any_learner_trains_and_too_small_a_library_is_refused(tmp_path, library):
    with digits_project(tmp_path, "lows", GROUPS["lows"]) as project:
        library.add(project)
    with pytest.raises(NotEnoughDataError, match="at least two projects"):
        library.train(steps=2)
    with digits_project(tmp_path, "mids", GROUPS["mids"]) as project:
        library.add(project)
    model = library.train(algo="fomaml", steps=3, shots=2, queries=3, val_every=3, val_episodes=5)
    assert model.algo == library.model().algo == "fomaml" and library.model().learner.algo == "maml"
    with pytest.raises(BadInputError, match="not a metalabel.meta learner"):
        library.train(learner=torch.nn.Linear(64, 3), steps=2)  # type: ignore[arg-type]


def test_the_command_line(tmp_path, capsys):
    lib = ["--library", str(tmp_path / "lib")]
    for name, digits in GROUPS.items():
        digits_csv(tmp_path / f"{name}.csv", digits)
        assert main(["init", str(tmp_path / name), "--pool", str(tmp_path / f"{name}.csv"), "--quiet"]) == 0
        assert main(["library", "add", str(tmp_path / name), *lib, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["library", "list", "--json", *lib]) == 0
    import json

    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["highs", "lows", "mids"]
    assert main(["library", "add", str(tmp_path / "nowhere"), *lib]) == 2
    assert "no metalabel project here" in capsys.readouterr().err
    digits_csv(tmp_path / "new.csv", (9, 0))
    assert main(["init", str(tmp_path / "new"), "--pool", str(tmp_path / "new.csv"), "--seed-per-class", "2",
                 "--quiet"]) == 0
    run = ["run", str(tmp_path / "new"), "--oracle", "simulated", "--budget", "4", "--max-rounds", "2",
           "--no-generate", "--quiet", "--from-library", *lib]
    assert main(run) == 2
    assert "no trained model yet" in capsys.readouterr().err
    assert main(["library", "train", "--steps", "20", "--shots", "3", "--queries", "5", *lib, "--quiet"]) == 0
    assert "held-out projects" in capsys.readouterr().out
    assert main(run) == 0
    assert main([*run, "--model", "runs/x"]) == 2
    assert "either --model or --from-library" in capsys.readouterr().err
    assert main(["library", "export", str(tmp_path / "team.zip"), *lib]) == 0
    assert main(["library", "remove", "lows", *lib]) == 0
    assert main(["library", "import", str(tmp_path / "team.zip"), *lib]) == 2  # highs and mids are still there
    assert "already holds a project named 'highs'" in capsys.readouterr().err


def test_the_default_learner_starts_as_the_plain_encoder_space(tmp_path, library):
    # held-out projects choose the checkpoint, and the start is a candidate: a library that teaches nothing
    # leaves the encoder's own geometry, never a random projection of it
    for name, digits in GROUPS.items():
        with digits_project(tmp_path, name, digits) as project:
            library.add(project)
    model = library.train(steps=1, lr=0.0, shots=3, queries=5, val_episodes=10)
    x = torch.from_numpy(library.entry("lows").embeddings[:7])
    torch.testing.assert_close(model.learner.embed(x), x)
    assert model.validation_accuracy == pytest.approx(model.encoder_space_accuracy)
    with pytest.raises(BadInputError, match="hidden must be a whole number >= 1"):
        library.train(steps=1, hidden=0)


def _round(round_id: int, strategy: str, questions: int, coverage: float):
    from metalabel.store import Round

    return Round(round_id, "t", "t", "finished", {"strategy": strategy},
                 {"questions": questions, "coverage": coverage})


def test_what_each_strategy_bought_is_the_next_rounds_coverage_per_answer():
    from metalabel.library.runs import StrategyRecord, strategy_records, suggest_strategy

    rounds = [_round(1, "typiclust", 10, 0.0), _round(2, "margin", 10, 0.2), _round(3, "margin", 5, 0.5),
              _round(4, "margin", 0, 0.6)]
    records = strategy_records(rounds)
    # round 1's answers show in round 2 (+0.2); rounds 2-3 asked 15 with margin (+0.3 +0.1); round 4 asked none
    assert records == (StrategyRecord("margin", 2, 15, pytest.approx(0.4)),
                       StrategyRecord("typiclust", 1, 10, pytest.approx(0.2)))
    assert suggest_strategy([("a", records)]) is None  # neither tried on 20 answers: nothing to compare
    more = (StrategyRecord("margin", 2, 20, 0.0), StrategyRecord("random", 3, 30, 0.6))
    suggestion = suggest_strategy([("a", records), ("b", more)])
    assert suggestion is not None and suggestion.strategy == "random"
    assert suggestion.points_per_100_answers == pytest.approx(200.0)  # 60 points over 30 answers
    # margin pooled over both projects: 40 points over 35 answers; typiclust saw 10 answers, too few to compare
    assert suggestion.others == (("margin", pytest.approx(4000 / 35), 35),)
    assert "suggested by the library" in suggestion.summary()


def test_strategies_are_kept_and_a_run_from_the_library_takes_the_suggested_one(tmp_path, capsys):
    lib = tmp_path / "lib"
    library = Library(lib)
    for name, strategy in (("lows", "margin"), ("mids", "random")):
        with digits_project(tmp_path, name, GROUPS[name], seeds=2) as project:
            # rounds 1 and 2 ask 10 each, round 3 sees what round 2's answers bought
            project.run(oracle=SimulatedOracle(gold_labels(project.load_pool())), budget=20, per_round=10,
                        max_rounds=3, strategy=strategy, generate=False, project_meta_steps=0, progress=False)
            manifest = library.add(project)
        assert [(r.strategy, r.rounds, r.answers) for r in manifest.strategies] == [(strategy, 2, 20)]
    assert library.entry("lows").manifest.strategies == library.manifests()[0].strategies  # read back from disk
    suggestion = library.suggest_strategy("tabular")
    assert suggestion is not None and {suggestion.strategy, *(n for n, _, _ in suggestion.others)} == {"margin",
                                                                                                        "random"}
    assert library.suggest_strategy("text") is None
    library.train(steps=5, shots=2, queries=2, val_every=5, val_episodes=5)
    capsys.readouterr()
    assert main(["library", "list", "--library", str(lib)]) == 0
    assert f"tabular: query strategy {suggestion.strategy}, suggested by the library" in capsys.readouterr().out

    digits_csv(tmp_path / "new.csv", (9, 0))
    assert main(["init", str(tmp_path / "new"), "--pool", str(tmp_path / "new.csv"), "--seed-per-class", "2",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "new"), "--oracle", "simulated", "--budget", "4", "--max-rounds", "1",
                 "--no-generate", "--from-library", "--library", str(lib)]) == 0
    assert "suggested by the library" in capsys.readouterr().out
    with ProjectStore.open(tmp_path / "new") as store:
        assert store.rounds()[-1].config["strategy"] == suggestion.strategy
    assert main(["run", str(tmp_path / "new"), "--oracle", "simulated", "--budget", "8", "--max-rounds", "1",
                 "--no-generate", "--from-library", "--library", str(lib), "--strategy", "entropy", "--quiet"]) == 0
    with ProjectStore.open(tmp_path / "new") as store:
        assert store.rounds()[-1].config["strategy"] == "entropy"  # a strategy the user chose wins


def test_a_project_set_to_auto_add_joins_the_library_after_each_run(tmp_path, capsys):
    lib = ["--library", str(tmp_path / "lib")]
    digits_csv(tmp_path / "lows.csv", GROUPS["lows"])
    assert main(["init", str(tmp_path / "lows"), "--pool", str(tmp_path / "lows.csv"), "--seed-per-class", "2",
                 "--quiet"]) == 0
    # two rounds: the first asks, the last (whose answers nothing would learn from) does not
    run = ["run", str(tmp_path / "lows"), "--oracle", "simulated", "--max-rounds", "2", "--per-round", "3",
           "--no-generate", "--quiet"]
    assert main(["library", "auto-add", str(tmp_path / "lows"), *lib]) == 0
    capsys.readouterr()
    assert main([*run, "--budget", "3"]) == 0
    assert "added to the library as lows" in capsys.readouterr().out
    first = Library(tmp_path / "lib").entry("lows").manifest
    assert first.sources["human"] == 3
    assert main([*run, "--budget", "6"]) == 0  # run further: the entry is refreshed, not refused
    second = Library(tmp_path / "lib").entry("lows").manifest
    assert second.sources["human"] == 6

    with digits_project(tmp_path, "other", GROUPS["mids"], seeds=2) as project:  # another project, same name
        with pytest.raises(BadInputError, match="already holds a project named 'lows'"):
            Library(tmp_path / "lib").add(project, name="lows", replace=True)
    assert main(["library", "auto-add", str(tmp_path / "lows"), "--off", *lib]) == 0
    assert main([*run, "--budget", "9"]) == 0
    assert Library(tmp_path / "lib").entry("lows").manifest == second


def test_when_past_projects_were_first_certified_is_a_prior_not_evidence(tmp_path):
    from metalabel.library.entries import EntryManifest
    from metalabel.library.runs import CertificationRecord, certification_prior, certification_record
    from metalabel.store import Round

    def certified(round_id: int, bound: float | None, threshold: float | None, reference: int) -> Round:
        return Round(round_id, "t", "t", "finished", {"target_precision": 0.95},
                     {"certified_precision": bound, "threshold": threshold, "reference_answers": reference,
                      "coverage": 0.5})

    record = certification_record([certified(1, None, None, 10), certified(2, 0.96, 0.9, 30),
                                   certified(3, 0.97, 0.8, 50)])
    assert record == CertificationRecord(0.95, 0.9, 0.96, 30, 0.5)  # the first certified round
    assert certification_record([certified(1, None, None, 10)]) is None
    prior = certification_prior([record, None, CertificationRecord(0.95, 0.8, 0.95, 50, 0.7),
                                 CertificationRecord(0.9, 0.5, 0.91, 5, 0.9)], target_precision=0.95)
    assert prior is not None and prior.thresholds == (0.9, 0.8) and prior.reference_answers == (30, 50)
    assert "0.80-0.90 after a median of 40 reference answers" in prior.summary()
    assert "not evidence" in prior.summary()
    assert certification_prior([record], target_precision=0.99) is None

    with digits_project(tmp_path, "lows", GROUPS["lows"], seeds=2) as project:
        manifest = Library(tmp_path / "lib").add(project)
    assert manifest.certification is None  # never run: nothing certified
    kept = EntryManifest.from_json({**manifest.to_json(), "certification": {
        "target_precision": 0.95, "threshold": 0.9, "certified_precision": 0.96, "reference_answers": 30,
        "coverage": 0.5}}, where="x")
    assert kept.certification == record
