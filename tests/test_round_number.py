"""A round whose questions were all skipped still counts as a round that asked: the next one draws anew."""

from __future__ import annotations

from helpers import kanji_project
from metalabel.label.oracle import Answer, SimulatedOracle


class SkipsTheFirstRound(SimulatedOracle):
    """A person who can tell none of the first round's items ("can't tell"), then answers from the truth."""

    def __init__(self, gold):
        super().__init__(gold)
        self.rounds: list[list[str]] = []

    def answer(self, questions):
        self.rounds.append([query.uri for query in questions])
        if len(self.rounds) == 1:
            return [Answer(query.question_id, None, self.name) for query in questions]
        return super().answer(questions)


def test_the_round_after_one_whose_questions_were_all_skipped_does_not_ask_them_again(cache, tmp_path):
    project, gold = kanji_project(tmp_path / "p")
    oracle = SkipsTheFirstRound(gold)
    with project:
        project.run(oracle=oracle, encoder="pixels", budget=10, per_round=5, max_rounds=3, progress=False,
                    generate=False, project_meta_steps=0, seed=0)
        skipped = project.store.dismissed_questions()
    assert len(oracle.rounds) >= 2 and len(skipped) == len(oracle.rounds[0]) == 5
    # nothing was learned from the skips: the same model, so the same round number drew the same items again
    assert set(oracle.rounds[1]) != set(oracle.rounds[0])
