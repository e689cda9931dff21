"""Meta-training loop: checkpoints, resume equals an uninterrupted run, evaluation with a CI, CLI."""

from __future__ import annotations

import json

import pytest
import torch

import metalabel as ml
from metalabel.cli import main
from metalabel.errors import BadInputError
from metalabel.meta import load_learner
from metalabel.meta.evaluation import meta_evaluate
from metalabel.meta.train import TrainConfig, build_learner, evaluation_sampler, meta_train, split_validation_classes


@pytest.fixture(scope="module")
def kanji(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METALABEL_CACHE", str(cache))
        yield ml.datasets.load("kanji", max_classes=40, samples_per_class=10)


TINY = dict(algo="protonet", backbone="conv4", backbone_kwargs={"hidden": 8}, ways=3, shots=1, queries=2,
            task_parallel="loop",
            val_episodes=4, seed=3)


def state_of(learner):
    return {k: v.clone() for k, v in learner.state_dict().items()}


def test_validation_classes_are_disjoint_whole_groups(kanji):
    train, val = split_validation_classes(kanji, fraction=0.2, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == kanji.num_classes
    val_groups = {kanji.groups[c] for c in val}
    assert not val_groups & {kanji.groups[c] for c in train}


def test_training_writes_checkpoints_and_history(kanji, tmp_path):
    learner = meta_train(kanji, out=tmp_path / "run", steps=4, val_every=2, progress=False, **TINY)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [record["step"] for record in history] == [2, 4]
    best = max(history, key=lambda r: r["val_accuracy"])
    reloaded = load_learner(tmp_path / "run" / "best")
    assert all(torch.equal(a, b) for a, b in zip(state_of(learner).values(), state_of(reloaded).values()))
    assert 0 <= best["val_accuracy"] <= 1


@pytest.mark.parametrize("algo", ["protonet", "maml", "reptile"])
def test_resumed_run_equals_uninterrupted_run(kanji, tmp_path, algo):
    options = TINY | {"algo": algo, "meta_batch": 2, "val_every": 2, "adapt_steps": 2, "progress": False}
    meta_train(kanji, out=tmp_path / "straight", steps=5, **options)

    calls = {"n": 0}
    outer = torch.optim.SGD if algo == "reptile" else torch.optim.Adam
    original_step = outer.step

    def interrupted_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # Ctrl-C during the fourth meta-update, after the step-2 checkpoint
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outer, "step", interrupted_step)
        with pytest.raises(KeyboardInterrupt):
            meta_train(kanji, out=tmp_path / "resumed", steps=5, **options)
    assert json.loads((tmp_path / "resumed" / "last" / "state.json").read_text())["step"] == 3
    meta_train(kanji, out=tmp_path / "resumed", steps=5, **options)
    straight, resumed = (load_learner(tmp_path / name / "last") for name in ("straight", "resumed"))
    assert straight.state_dict().keys() == resumed.state_dict().keys()  # zip below would stop at the shorter
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_run_killed_between_a_validation_and_its_checkpoint_resumes_with_each_validation_once(kanji, tmp_path):
    import metalabel.meta.train as train

    original_save, saves = train.save_learner, []

    def killed_at_the_second_validations_save(*args, **kwargs):
        saves.append(args[1].name)
        if len(saves) == 3:  # step 2 saved best/ and last/; step 4's line is written, its checkpoint is not
            raise RuntimeError("killed")
        return original_save(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "save_learner", killed_at_the_second_validations_save)
        with pytest.raises(RuntimeError, match="killed"):
            meta_train(kanji, out=tmp_path / "run", steps=4, val_every=2, progress=False, **TINY)
    with open(tmp_path / "run" / "history.jsonl", "a") as history:
        history.write('{"step": 4, "lo')  # and a line torn by the kill
    meta_train(kanji, out=tmp_path / "run", steps=4, val_every=2, progress=False, **TINY)
    history = [json.loads(line)["step"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history == [2, 4]


def test_workers_restarted_before_the_first_checkpoint_write_each_validation_once(kanji, tmp_path):
    """Ray Train restarts the workers of a fresh run killed between its first validation's line and that
    checkpoint with the same job, not resuming (no checkpoint exists: ``distributed._ray_worker``)."""
    import metalabel.meta.train as train

    job = train.prepare_training(kanji, train.training_config(dict(steps=4, val_every=2, **TINY)),
                                 out=tmp_path / "run", resume=True, device="cpu", progress=False, init=None)
    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "save_learner", killed)
        with pytest.raises(RuntimeError, match="killed"):
            train.run_training(job)  # step 2's line is written, its checkpoint is not
    train.run_training(job)
    history = [json.loads(line)["step"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history == [2, 4]


def test_resume_refuses_other_options(kanji, tmp_path):
    meta_train(kanji, out=tmp_path / "run", steps=2, val_every=2, progress=False, **TINY)
    with pytest.raises(BadInputError, match="other options"):
        meta_train(kanji, out=tmp_path / "run", steps=2, val_every=2, progress=False, **(TINY | {"shots": 2}))


def test_unknown_options_are_named():
    with pytest.raises(BadInputError, match="warp"):
        meta_train("kanji", warp=3)
    with pytest.raises(BadInputError, match="unknown algo"):
        meta_train("kanji", algo="bogus")


def test_evaluation_is_fixed_and_carries_a_confidence_interval(kanji):
    learner = meta_train(kanji, steps=2, val_every=2, progress=False, **TINY)
    sampler = evaluation_sampler(kanji, ways=3, shots=1, queries=3, episodes=20, seed=5)
    first, second = meta_evaluate(learner, sampler), meta_evaluate(learner, sampler)
    assert first == second and first.episodes == 20
    assert 0 < first.ci95 < 0.5


def test_cli_meta_train_then_meta_eval(kanji, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("metalabel.datasets.from_spec", lambda spec, **kw: kanji)
    run = tmp_path / "run"
    assert main(["meta-train", "--source", "kanji", "--algo", "protonet", "--ways", "3", "--queries", "2",
                 "--steps", "2", "--val-every", "2", "--val-episodes", "4", "--out", str(run), "--quiet"]) == 0
    assert main(["meta-eval", "--model", str(run), "--ways", "3", "--shots", "1", "--episodes", "10", "--queries", "5",
                 "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "best validation accuracy" in out and "3-way 1-shot" in out
    [result] = json.loads((tmp_path / "eval.json").read_text())
    assert result["episodes"] == 10 and result["ways"] == 3


def test_build_learner_asks_for_a_resolved_config():
    # an unresolved config once failed inside max() with a TypeError about None
    with pytest.raises(BadInputError, match="no train_ways.*resolved"):
        build_learner(TrainConfig(algo="maml", ways=3))
    learner = build_learner(TrainConfig(algo="maml", ways=3, backbone_kwargs={"hidden": 8}).resolved())
    assert learner.algo == "maml"
