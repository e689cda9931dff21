"""Answering in a browser: ``serve_questions`` (``metalabel serve``) and ``WebOracle`` (``metalabel run --oracle web``).

Both commit each answer in the store's own thread, the moment the page gives it (``Desk.record`` /
``put_questions``, see ``metalabel.serve.desk``), with the annotator recorded as ``web:<name>``; a kill
loses at most the answer in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from metalabel.data.dataset import LabeledDataset
from metalabel.label.oracle import Answer, Query, RecordedAnswers
from metalabel.serve.app import PageServer
from metalabel.serve.desk import Desk, open_question_tasks, question_tasks, review_tasks
from metalabel.serve.page import POLL_S
from metalabel.store import ProjectStore


def _answered(store: ProjectStore) -> int:
    return int(store.summary()["answered_questions"])


def serve_questions(store: ProjectStore, pool: LabeledDataset, *, annotator: str, host: str = "127.0.0.1",
                    port: int = 0, allow_remote: bool = False,
                    on_ready: Callable[[str], None] = print) -> RecordedAnswers:
    """Serve the project's open questions and its accepted model labels for review until stopped.

    ``on_ready`` gets the page's URL (with its token) once the server listens. Returns the
    first answers to open questions that were recorded; reviews and changed answers are
    written as they are given too. Ctrl-C (or the page's stop) ends it; ``OracleStopped``
    is raised for Ctrl-C. Hold the project's writer lock around it.
    """
    desk = Desk(store.classes(), annotator=annotator, review=True, answered_before=_answered(store))
    desk.set_questions(open_question_tasks(store, pool))
    desk.set_reviews(review_tasks(store, pool))
    with PageServer(desk, host=host, port=port, allow_remote=allow_remote) as server:
        on_ready(server.url)
        return desk.record(store)


class WebOracle:
    """A run's oracle that asks on the labeling page: served from the first question until ``close``.

    ``answer`` shows the round's questions and yields each answer as the page gives it, so
    ``put_questions`` commits it at once; it returns once every question has been answered or
    skipped. The page's stop button and Ctrl-C raise ``OracleStopped`` (every answer given is
    kept). Reference questions are shown without the model's suggestion, as the loop puts them.
    """

    def __init__(self, store: ProjectStore, *, annotator: str, host: str = "127.0.0.1", port: int = 0,
                 allow_remote: bool = False, budget: int | None = None,
                 on_ready: Callable[[str], None] = print) -> None:
        self.store = store
        self.desk = Desk(store.classes(), annotator=annotator, run=True, budget=budget)
        self.name = self.desk.oracle
        self._server = PageServer(self.desk, host=host, port=port, allow_remote=allow_remote)
        self._on_ready = on_ready
        self._started = False

    @property
    def url(self) -> str:
        return self._server.url

    def answer(self, questions: Sequence[Query]) -> Iterator[Answer]:
        if not self._started:
            self._server.start()
            self._started = True
            self._on_ready(self._server.url)
        self.desk.set_questions(question_tasks(self.store, questions), answered_in_project=_answered(self.store))
        yield from self.desk.answers(self.store, put={query.question_id for query in questions}, until_done=True)

    def close(self) -> None:
        """The page is told labeling stopped (its next poll says so), then no longer served."""
        if self._started and not self.desk.stopped:
            self.desk.stop()
            time.sleep(POLL_S + 0.5)  # a page waiting between rounds asks again within POLL_S
        self._server.stop()

    def __enter__(self) -> WebOracle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
