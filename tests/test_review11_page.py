"""review11: the labeling page's answer to a question another person answered meanwhile.

The page shows a question; before the person answers it, someone else does, through another process that writes
to the same project (the Label Studio ML backend recording a webhook, which takes no writer lock). The store
leaves an answered question as it is, so the page's answer must not be called saved while nothing of it is
kept: it is recorded as that person's disagreement with the answer that stands (as an import records another
annotator's other class), and the page says so. Desk-level: the store's thread is this test's, the page's
clicks come from another thread, as the web server's would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from metalabel.label.oracle import Query, put_questions
from metalabel.serve.desk import Desk, Mode, Task
from metalabel.store import ItemRecord, ProjectStore, content_hash

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def folder(tmp_path):
    """Two items, an open question about each."""
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(CLASSES)
        items = store.add_items(ItemRecord(f"pool/{i}.png", content_hash(f"image {i}"), "image") for i in range(2))
        for item in items:
            store.ask(item, strategy="margin")
    return tmp_path / "p"


def tasks(store: ProjectStore) -> list[Task]:
    return [Task(q.id, q.item_id, q.uri, None, None, None, q.strategy, q.round_id) for q in store.open_questions()]


def clicking(person: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=person)
    thread.start()
    return thread


def the_other_process_answers(folder, question_id: int, label: str) -> None:
    with ProjectStore.open(folder) as other:
        other.answer(question_id, label, oracle="labelstudio:bob")


def human_record(store: ProjectStore, item_id: int) -> tuple[list, list]:
    """(class, oracle) of the item's human labels, and of the open disagreements about it."""
    labels = [(label.class_name, label.oracle) for label in store.label_history(item_id) if label.source == "human"]
    disagreements = [(d.proposed_class, d.oracle) for d in store.disagreements() if d.item_id == item_id]
    return labels, disagreements


def test_serve_records_an_answer_to_a_question_answered_elsewhere_as_a_disagreement(folder):
    with ProjectStore.open(folder) as store:
        desk = Desk(CLASSES, annotator="alice", review=True)
        desk.set_questions(tasks(store))
        first, second = store.open_questions()
        the_other_process_answers(folder, first.id, "dog")  # after the page showed it
        replies: list = []

        def person() -> None:
            replies.append(desk.submit(Mode.QUESTIONS, "answer", task_id=first.id, label="cat").result(timeout=30))
            replies.append(desk.submit(Mode.QUESTIONS, "answer", task_id=second.id, label="cat").result(timeout=30))
            desk.submit(Mode.QUESTIONS, "undo").result(timeout=30)
            desk.submit(Mode.QUESTIONS, "undo").result(timeout=30)
            # she changes her answer to the first: still a disagreement with bob's, never written over it
            replies.append(desk.submit(Mode.QUESTIONS, "answer", task_id=first.id, label="bird").result(timeout=30))
            desk.submit(Mode.QUESTIONS, "stop").result(timeout=30)

        thread = clicking(person)
        desk.record(store)
        thread.join(timeout=30)
        assert human_record(store, first.item_id) == ([("dog", "labelstudio:bob")], [("bird", "web:alice")])
        assert [(d.proposed_class, d.oracle, d.resolved_by_label_id is not None)  # her first answer, settled
                for d in store.disagreements(include_resolved=True)] == [("cat", "web:alice", True),
                                                                          ("bird", "web:alice", False)]
        assert store.question(first.id).oracle == "labelstudio:bob"
        assert human_record(store, second.item_id) == ([("cat", "web:alice")], [])
    assert "labelstudio:bob" in replies[0] and "disagreement" in replies[0]  # the page is told
    assert replies[1] is None  # an answer that is the question's is just saved


def test_a_runs_page_records_an_answer_to_a_question_answered_elsewhere_as_a_disagreement(folder):
    with ProjectStore.open(folder) as store:
        desk = Desk(CLASSES, annotator="alice", run=True)
        questions = store.open_questions()
        queries = [Query(q.id, q.item_id, q.uri, None, CLASSES) for q in questions]
        desk.set_questions(tasks(store))
        the_other_process_answers(folder, questions[0].id, "dog")
        replies: list = []

        class Page:  # WebOracle.answer without its web server
            def answer(self, put):
                yield from desk.answers(store, put={query.question_id for query in put}, until_done=True)

        def person() -> None:
            for question in questions:
                replies.append(desk.submit(Mode.QUESTIONS, "answer", task_id=question.id,
                                           label="cat").result(timeout=30))

        thread = clicking(person)
        put_questions(store, Page(), queries)
        thread.join(timeout=30)
        assert human_record(store, questions[0].item_id) == ([("dog", "labelstudio:bob")], [("cat", "web:alice")])
        assert human_record(store, questions[1].item_id) == ([("cat", "web:alice")], [])
    assert "labelstudio:bob" in replies[0] and "disagreement" in replies[0]
    assert replies[1] is None


def test_an_answer_the_run_saved_as_it_stopped_is_told_saved_and_the_page_stops(folder):
    """Ctrl-C lands after the run committed the page's answer and before the page heard back (``put_questions``
    then closes the page's generator): the answer is saved, so the page must not say it was not; the page then
    says labeling stopped, refuses what comes after, and an action queued meanwhile is answered, not left
    hanging (its request would hold the page's one-at-a-time lock until the process ends)."""
    from metalabel.errors import BadInputError
    from metalabel.label.oracle import record_answers

    with ProjectStore.open(folder) as store:
        desk = Desk(CLASSES, annotator="alice", run=True)
        desk.set_questions(tasks(store))
        first, second = store.open_questions()
        asking = desk.answers(store, put={first.id, second.id}, until_done=True)
        saved = desk.submit(Mode.QUESTIONS, "answer", task_id=first.id, label="cat")
        record_answers(store, [next(asking)])  # the run commits it ...
        queued = desk.submit(Mode.QUESTIONS, "answer", task_id=first.id, label="dog")  # a second tab's, say
        asking.close()  # ... and Ctrl-C ends the run before the page's generator is resumed
        assert saved.result(timeout=5) is None  # saved, and told so
        with pytest.raises(BadInputError, match="stopped before this answer was saved"):
            queued.result(timeout=5)
        state = desk.state(Mode.QUESTIONS)
        assert state["stopped"] and state["task"] is None
        with pytest.raises(BadInputError, match="labeling has stopped"):
            desk.submit(Mode.QUESTIONS, "answer", task_id=second.id, label="dog")
        assert human_record(store, first.item_id) == ([("cat", "web:alice")], [])
        assert store.question(second.id).answered_at is None
