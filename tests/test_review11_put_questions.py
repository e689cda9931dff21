"""review11: ``put_questions`` drops an oracle's answer to a question another process answered meanwhile.

A person at the terminal (``metalabel run --oracle terminal``) is shown a question; before she answers, the ML
backend records another person's answer to it (it takes no writer lock). ``_Tally.record`` then counted hers as
"already closed" and wrote nothing: no label, no disagreement, and the terminal goes on as if it were saved.
The labeling page no longer loses it (``Desk._first_answer`` records it as a disagreement); the terminal and every
other oracle did too. Fixed: a class answer to a question another person answered is recorded with
``add_human_disagreement`` and counted in ``RecordedAnswers.disagreements``.
"""

from __future__ import annotations

from metalabel.label.oracle import Answer, Query, put_questions
from metalabel.store import ItemRecord, ProjectStore, content_hash


def test_an_answer_to_a_question_answered_elsewhere_meanwhile_is_kept(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(["cat", "dog"])
        (item,) = store.add_items([ItemRecord("pool/0.png", content_hash("image"), "image")])
        question = store.ask(item, strategy="margin")

        class Terminal:
            def answer(self, queries):
                with ProjectStore.open(tmp_path / "p") as other:  # while she looks at the item
                    other.answer(question, "dog", oracle="labelstudio:bob")
                return [Answer(queries[0].question_id, "cat", "terminal")]

        recorded = put_questions(store, Terminal(), [Query(question, item, "pool/0.png", None, ["cat", "dog"])])
        assert [(d.proposed_class, d.oracle) for d in store.disagreements()] == [("cat", "terminal")]
        assert recorded.disagreements == 1
