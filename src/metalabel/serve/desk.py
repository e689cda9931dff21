"""What the labeling page shows and takes, apart from the web: the tasks, the actions and their commits.

The web server runs in a thread of its own and never touches the store (a SQLite connection
belongs to the thread that opened it). Each action a person takes on the page is handed to
the ``Desk``; the thread that owns the store takes them from ``Desk.answers``, a generator of
``Answer`` records: the shape of every oracle, so the first answer to a question a run put is
committed by ``put_questions`` like any oracle's. Everything else (``metalabel serve``'s answers, a
changed answer, a review of a model label) the generator writes itself, each in its own transaction,
through the store's human-answer path (a changed answer, undo then another class, is
``ProjectStore.correct``, which keeps the earlier answer in the label history), so a write the store
refuses (busy, say) is told to the page and labeling goes on. The page hears that an action is saved
only after its commit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError, MetalabelError
from metalabel.label.ask import LABEL_ISSUE, REFERENCE
from metalabel.label.oracle import AUDIT, Answer, AnswerNotSaved, OracleStopped, Query, RecordedAnswers, record_answers
from metalabel.store import LabelSource, ProjectStore


class Mode(StrEnum):
    QUESTIONS = "questions"
    REVIEW = "review"


@dataclass(frozen=True)
class Task:
    """One thing to show: an open question, or an accepted model label to review."""

    id: int
    """The question's id, or (review) the model label's id."""
    item_id: int
    uri: str
    item: str | np.ndarray | None
    """Text, an image array, a feature row, or None where only ``uri`` shows the item."""
    suggestion: str | None
    """The model's class (for a review: the label under review); never set for a reference question."""
    confidence: float | None
    why: str
    """The question's strategy (``reference``, ``label-issue``, ``margin``, ...) or ``audit``."""
    round_id: int | None = None
    current: str | None = None
    """The item's label now, as ``class (source)``; never shown for a reference question."""


def why_in_words(why: str) -> str:
    """What the page says about why an item is shown."""
    if why == REFERENCE:
        return ("drawn at random for the reference sample, the evidence that certifies precision "
                "(so the model's guess is not shown)")
    if why == LABEL_ISSUE:
        return "a seed label that looks wrong to the model: check it"
    if why == AUDIT:
        return "a label the model was trusted with: confirm it or correct it"
    return f"chosen by active learning ({why}): the model learns most from this answer"


@dataclass
class _Done:
    """What was done with a task on this page: its class, or None for skipped."""

    label: str | None
    question_id: int | None = None
    """The question the answer (or skip) is recorded through: the task's, or a review's audit question."""
    own: bool = True
    """The question's answer is this page's; False where another person answered it first (another process, the
    ML backend say), so this answer is on record as a disagreement with theirs and is changed as one."""


@dataclass
class _Queue:
    """The tasks of one mode, in order, and what was done with each (committed)."""

    tasks: list[Task] = field(default_factory=list)
    done: dict[int, _Done] = field(default_factory=dict)  # task position -> what was done
    history: list[int] = field(default_factory=list)  # positions, in the order they were done
    taken_back: dict[int, _Done] = field(default_factory=dict)  # undone: what the store still holds

    def current(self) -> int | None:
        return next((position for position in range(len(self.tasks)) if position not in self.done), None)

    def saved(self, task_id: int | None) -> _Done | None:
        """What was done with the task of this id, if it is done (committed)."""
        return next((self.done[position] for position, task in enumerate(self.tasks)
                     if task.id == task_id and position in self.done), None)


@dataclass
class _Action:
    mode: Mode
    kind: str  # "answer", "undo", "stop"
    position: int | None = None
    label: str | None = None
    result: Future = field(default_factory=Future, compare=False)
    notice: str | None = None
    """What the page must say instead of "saved" (set by the store's thread)."""


class Desk:
    """The page's state and the queue of its actions, shared by the web thread and the store's thread.

    ``answers(store)`` runs in the store's thread; everything else may be called from any thread.
    """

    def __init__(self, class_names: Sequence[str], *, annotator: str, review: bool = False, run: bool = False,
                 budget: int | None = None, answered_before: int = 0) -> None:
        if not annotator.strip():
            raise BadInputError("the annotator's name is empty", hint="pass --annotator NAME")
        self.class_names = tuple(class_names)
        self.oracle = f"web:{annotator.strip()}"
        self.review_enabled = review
        self.run = run
        """A run's oracle: the questions come round by round, and the page waits for them in between."""
        self.budget = budget
        self._answered_in_project = answered_before
        self._lock = threading.Lock()
        self._first_answers = self._first_skips = 0  # recorded by ``record``, for its summary
        self._queues = {Mode.QUESTIONS: _Queue(), Mode.REVIEW: _Queue()}
        self._actions: queue.Queue[_Action] = queue.Queue()
        self.stopped = False

    # -- what the page may do (any thread)

    def set_questions(self, tasks: Sequence[Task], *, answered_in_project: int | None = None) -> None:
        with self._lock:
            self._queues[Mode.QUESTIONS] = _Queue(list(tasks))
            if answered_in_project is not None:
                self._answered_in_project = answered_in_project

    def set_reviews(self, tasks: Sequence[Task]) -> None:
        with self._lock:
            self._queues[Mode.REVIEW] = _Queue(list(tasks))

    def submit(self, mode: Mode, kind: str, *, task_id: int | None = None, label: str | None = None) -> Future:
        """Queue an action; its future is done once the store holds it (or says why it could not). Its result
        is None, or what the person must hear instead of "saved" (``_first_answer``)."""
        with self._lock:
            if self.stopped:
                raise BadInputError("labeling has stopped; every answer given is saved")
            if mode is Mode.REVIEW and not self.review_enabled:
                raise BadInputError("review is not offered here", hint="run `metalabel serve PROJECT` to review")
            position = None
            if kind == "answer":
                lane = self._queues[mode]
                position = lane.current()
                if position is None or lane.tasks[position].id != task_id:
                    saved = lane.saved(task_id)
                    if saved is None:
                        raise BadInputError(f"item {task_id} is not the one on the page now; reload the page")
                    if saved.label == label:  # sent again (its reply was lost, or a second tab): it is saved
                        repeat: Future = Future()
                        repeat.set_result(None)
                        return repeat
                    said = "skipped" if saved.label is None else f"answered {saved.label!r}"
                    change = "undo back to it (U) and answer again" if self._can_undo(mode) else "reload the page"
                    raise BadInputError(f"item {task_id} is not the one on the page now: it is already saved as "
                                        f"{said}; nothing was changed -> {change}")
                if label is not None and label not in self.class_names:
                    raise BadInputError(f"{label!r} is not one of the project's classes",
                                        hint=f"classes: {', '.join(self.class_names)}")
                earlier = lane.taken_back.get(position)
                if label is None and earlier is not None and earlier.label is not None:
                    # the store changes a person's answer but never withdraws it: a skip would keep it unseen
                    raise BadInputError(f"your earlier answer {earlier.label!r} to item {task_id} is saved and can be "
                                        "changed but not withdrawn; nothing was changed -> choose "
                                        f"{earlier.label!r} again to keep it, or another class")
            elif kind == "undo":
                if not self._can_undo(mode):
                    raise BadInputError("there is no answer to undo",
                                        hint="a run takes a round's answers once its last question is answered")
            elif kind != "stop":
                raise BadInputError(f"unknown action {kind!r}")
            action = _Action(mode, kind, position, label)
            self._actions.put(action)  # under the lock: a stop refuses every action queued before it (``_stop``)
        return action.result

    def state(self, mode: Mode) -> dict:
        """The page's view: the task on show, the classes and the progress (JSON-ready)."""
        with self._lock:
            lane = self._queues[mode]
            position = lane.current()
            task = None if position is None else lane.tasks[position]
            earlier = None if position is None else lane.taken_back.get(position)
            return {
                "mode": mode.value,
                "review_enabled": self.review_enabled,
                "classes": list(self.class_names),
                "annotator": self.oracle.removeprefix("web:"),
                "task": None if task is None or self.stopped else _task_json(task, mode, earlier),
                "progress": {"done": len(lane.done), "total": len(lane.tasks),
                             "project_answered": self._answered_in_project, "budget": self.budget},
                "can_undo": self._can_undo(mode),
                "run": self.run,
                "stopped": self.stopped,
            }

    def _can_undo(self, mode: Mode) -> bool:
        lane = self._queues[mode]
        # a run's round has taken its answers once the last was given: nothing of it to undo then
        return bool(lane.history) and not (self.run and mode is Mode.QUESTIONS and lane.current() is None)

    def task(self, mode: Mode, task_id: int) -> Task:
        with self._lock:
            for task in self._queues[mode].tasks:
                if task.id == task_id:
                    return task
        raise BadInputError(f"no {mode.value} item {task_id} on this page")

    # -- the store's side (the thread that owns the store)

    def answers(self, store: ProjectStore, *, put: Collection[int] = frozenset(),
                until_done: bool = False) -> Iterator[Answer]:
        """The first answer to each question in ``put``, yielded to be committed by the caller (a run's
        ``put_questions``); every other action is written here. Runs until stopped (``OracleStopped`` when
        ``until_done``: a run's oracle stopping) or, with ``until_done``, until every question has been
        acted on.
        """
        yielded: set[int] = set()
        pending: _Action | None = None
        try:
            while True:
                if until_done and self._queues[Mode.QUESTIONS].current() is None:
                    return
                pending = self._next_action()
                if pending.kind == "stop":
                    self.stop()
                    pending.result.set_result(None)
                    pending = None
                    if until_done:
                        raise OracleStopped([], reason="from the labeling page")
                    return
                if pending.kind == "undo":
                    self._undo(pending.mode)
                    pending.result.set_result(None)
                    pending = None
                    continue
                try:
                    answer = self._act(store, pending, first_time_yielded=yielded, put=put)
                except MetalabelError as error:  # this action cannot be done; the page says why, the rest goes on
                    pending.result.set_exception(error)
                    pending = None
                    continue
                if answer is not None:
                    try:
                        yield answer  # the caller commits it before asking for the next one
                    except AnswerNotSaved as not_saved:  # nothing was written: the page says why, the item stays
                        pending.result.set_exception(not_saved)
                        pending = None
                        continue
                    yielded.add(answer.question_id)
                    # the caller recorded her answer (a disagreement where another person's stands); a store that
                    # cannot say whose answer it holds fails her request, and the same answer given again is known
                    try:
                        done, pending.notice = self._first_answer(store, answer.question_id, answer.label)
                    except MetalabelError as error:
                        pending.result.set_exception(error)
                        pending = None
                        continue
                    self._record(pending, done)
                pending.result.set_result(pending.notice)
                pending = None
        except BaseException as error:  # the run stopped (Ctrl-C, or the store failed): so does the page
            self.stop()
            if pending is not None and not pending.result.done():
                if self._holds(store, pending):  # the caller committed it before it stopped (Ctrl-C after the commit)
                    pending.result.set_result(pending.notice)
                else:
                    pending.result.set_exception(error if isinstance(error, Exception) else
                                                 BadInputError("labeling stopped before this answer was saved"))
            raise

    def stop(self) -> None:
        """Labeling stops: the page says so and takes no more actions; any still queued is refused, not left
        waiting (its request would hold the page's one-at-a-time lock)."""
        with self._lock:
            self.stopped = True
            left = []
            while not self._actions.empty():
                left.append(self._actions.get_nowait())
        for action in left:
            action.result.set_exception(BadInputError(
                "labeling stopped before this answer was saved" if action.kind == "answer" else "labeling stopped"))

    def _holds(self, store: ProjectStore, action: _Action) -> bool:
        """Whether the store holds this page's answer (or skip) as the question's answer: what an action cut off
        by a stop may have got to."""
        if action.kind != "answer" or action.mode is not Mode.QUESTIONS or action.position is None:
            return False
        try:
            question = store.question(self._queues[Mode.QUESTIONS].tasks[action.position].id)
        except Exception:  # the store is what failed: it cannot say, so the answer is not called saved
            return False
        return question.answered_at is not None and question.oracle == self.oracle and question.answer == action.label

    def _next_action(self) -> _Action:
        # a short timeout keeps the thread responsive to signals while it waits for a person
        while True:
            try:
                return self._actions.get(timeout=0.25)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                raise OracleStopped([], reason="by Ctrl-C") from None

    def record(self, store: ProjectStore) -> RecordedAnswers:
        """Take the page's actions until it stops, writing each here (``metalabel serve``); returns the first
        answers and skips recorded."""
        for _ in self.answers(store):  # puts nothing, so nothing is yielded
            pass
        return RecordedAnswers(self._first_answers, self._first_skips, [])

    def _act(self, store: ProjectStore, action: _Action, *, first_time_yielded: set[int],
             put: Collection[int]) -> Answer | None:
        """Write what ``action`` asks unless it is a question's first answer, which is returned to be yielded."""
        lane = self._queues[action.mode]
        assert action.position is not None
        task = lane.tasks[action.position]
        earlier = lane.taken_back.get(action.position)
        label = action.label
        if action.mode is Mode.QUESTIONS and earlier is None:  # the question's first answer (or skip)
            answer = Answer(task.id, label, self.oracle)
            if task.id not in first_time_yielded and task.id in put:
                return answer
            recorded = record_answers(store, [answer])
            with self._lock:
                self._first_answers += recorded.answered
                self._first_skips += recorded.dismissed
            done, action.notice = self._first_answer(store, task.id, label)
            self._record(action, done)
            return None
        if earlier is not None and earlier.label is not None:  # answered before, taken back: kept or changed
            assert label is not None  # a skip is refused (``submit``): an answer is changed, never withdrawn
            if label != earlier.label:
                assert earlier.question_id is not None
                if earlier.own:
                    store.correct(earlier.question_id, label, oracle=self.oracle)
                else:  # ``correct`` would write over the other person's answer: hers stays a disagreement
                    store.add_human_disagreement(earlier.question_id, label, oracle=self.oracle)
            self._record(action, _Done(label, earlier.question_id, earlier.own))
        elif label is None:  # skipped again, or a review skipped
            self._record(action, _Done(None))
        elif action.mode is Mode.QUESTIONS:  # a skip, answered now
            record_answers(store, [Answer(task.id, label, self.oracle)])
            done, action.notice = self._first_answer(store, task.id, label)
            self._record(action, done)
        else:
            self._record(action, _Done(label, self._audit(store, task, label)))
        return None

    def _first_answer(self, store: ProjectStore, question_id: int, label: str | None) -> tuple[_Done, str | None]:
        """What became of this page's first answer (or skip) to a question once the store took it, and what the
        person must hear instead of "saved", if anything.

        The store leaves a question another person answered as it is: another process may have answered it
        since the page showed it (the ML backend recording Label Studio, which takes no writer lock).
        ``record_answers`` then recorded her class as her disagreement with the answer that stands, as an import
        records another annotator's other class; the page tells her so.
        """
        question = store.question(question_id)
        if question.oracle == self.oracle or question.answer is None:  # hers, or dismissed by another as she did
            if question.oracle == self.oracle:
                with self._lock:
                    self._answered_in_project += 1
            return _Done(label, question_id), None
        said = f"{question.uri!r} was answered meanwhile by {question.oracle} ({question.answer!r})"
        if label is None:
            return _Done(None, question_id, own=False), f"{said}; your skip changes nothing"
        if label == question.answer:
            return _Done(label, question_id, own=False), f"{said}, as you did"
        return (_Done(label, question_id, own=False),
                f"{said}; your {label!r} is recorded as a disagreement with it, not over it")

    def _audit(self, store: ProjectStore, task: Task, label: str) -> int:
        """A person's verdict on a model label: an audit question asked and answered in one transaction;
        returns the question's id."""
        with store.batch():
            active = next((row for row in store.label_history(task.item_id) if row.active), None)
            if active is None or active.id != task.id:
                raise BadInputError(f"the model label of {task.uri!r} changed since the page was loaded",
                                    hint="reload the review")
            question_id = store.ask(task.item_id, strategy=AUDIT)
            record_answers(store, [Answer(question_id, label, self.oracle)])
            return question_id

    def _record(self, action: _Action, done: _Done) -> None:
        with self._lock:
            lane = self._queues[action.mode]
            assert action.position is not None
            lane.taken_back.pop(action.position, None)
            lane.done[action.position] = done
            lane.history.append(action.position)

    def _undo(self, mode: Mode) -> None:
        with self._lock:
            lane = self._queues[mode]
            if lane.history:
                position = lane.history.pop()
                lane.taken_back[position] = lane.done.pop(position)


def _task_json(task: Task, mode: Mode, earlier: _Done | None) -> dict:
    kind = "text" if isinstance(task.item, str) or (isinstance(task.item, np.ndarray) and task.item.ndim == 1) \
        else "image"
    text = None
    if isinstance(task.item, str):
        text = task.item
    elif kind == "text":
        assert isinstance(task.item, np.ndarray)
        text = ", ".join(f"x{i}={value:.4g}" for i, value in enumerate(task.item.tolist()))
    return {
        "id": task.id, "uri": task.uri, "kind": kind, "text": text,
        "suggestion": task.suggestion, "confidence": task.confidence,
        "why": task.why, "why_text": why_in_words(task.why), "current": task.current,
        "earlier": None if earlier is None else {"label": earlier.label},
        "image": None if kind == "text" else f"/api/image/{mode.value}/{task.id}",
    }


# -- building tasks from the store (the store's thread)


def question_tasks(store: ProjectStore, queries: Sequence[Query]) -> list[Task]:
    """Tasks for queries put by a run: each with why its question was asked."""
    tasks = []
    for query in queries:
        question = store.question(query.question_id)
        # the loop puts a reference question without a guess; the page makes sure, whoever built the query
        unprompted = question.strategy == REFERENCE
        tasks.append(Task(query.question_id, query.item_id, query.uri, query.item,
                          None if unprompted else query.suggestion, None if unprompted else query.suggestion_confidence,
                          question.strategy, question.round_id, None if unprompted else query.current_label))
    return tasks


def open_question_tasks(store: ProjectStore, pool: LabeledDataset) -> list[Task]:
    """The project's open questions, oldest first. The suggestion is the item's accepted model label,
    if it has one; a reference question shows none (its answer is evidence only unprompted)."""
    labels = {label.item_id: label for label in store.active_labels()}
    position = {uri: index for index, uri in enumerate(pool.uris)}
    tasks = []
    for question in store.open_questions():
        label = None if question.strategy == REFERENCE else labels.get(question.item_id)
        model = label if label is not None and label.source == LabelSource.MODEL else None
        tasks.append(Task(question.id, question.item_id, question.uri, _content(pool, position, question.uri),
                          None if model is None else model.class_name,
                          None if model is None else model.calibrated_confidence, question.strategy,
                          question.round_id, None if label is None else f"{label.class_name} ({label.source})"))
    return tasks


def review_tasks(store: ProjectStore, pool: LabeledDataset) -> list[Task]:
    """The accepted model labels, least confident first (where a mistake is likeliest), except items
    a question already waits on."""
    waiting = {question.item_id for question in store.open_questions()}
    labels = [label for label in store.active_labels()
              if label.source == LabelSource.MODEL and label.item_id not in waiting]
    labels.sort(key=lambda label: (label.calibrated_confidence if label.calibrated_confidence is not None
                                   else 1.0, label.id))
    position = {uri: index for index, uri in enumerate(pool.uris)}
    # no round: the audit question a verdict is recorded through is asked outside any round
    return [Task(label.id, label.item_id, label.uri, _content(pool, position, label.uri), label.class_name,
                 label.calibrated_confidence, AUDIT) for label in labels]


def _content(pool: LabeledDataset, position: dict[str, int], uri: str) -> str | np.ndarray | None:
    index = position.get(uri)
    return None if index is None else pool.items[index]
