"""Oracles: whoever answers the questions active learning asks.

An oracle takes ``Query`` records (the item, the model's suggestion, the classes)
and gives ``Answer`` records (a class name, or ``None`` for "can't tell"), one at a
time if it likes: ``answer`` returns any iterable, and a generator's answers are
committed as they come. ``put_questions`` is how the labeling loop asks: it commits
each answer in its own transaction before the oracle shows the next question, and
turns SIGTERM and SIGHUP into a clean stop, so an answer given is an answer kept. An
answer the store cannot commit (busy, say) is thrown back into a generator oracle as
``AnswerNotSaved``, so the person hears it was not saved and answers again.

- ``SimulatedOracle``: answers from gold labels, with optional seeded noise
  (benchmarks and tests).
- ``TerminalOracle``: asks a person at the keyboard and yields each answer as it is
  typed; ``q`` (or Ctrl-C, or the end of input) raises ``OracleStopped``. Text and
  names are shown with terminal control codes escaped.
- ``LabelStudioQueue``: asynchronous. ``answer`` exports the questions as a
  Label Studio task file and returns no answers; the questions stay open in the
  store. Once they are labeled in Label Studio, ``import_annotations`` checks Label
  Studio's JSON export against the project (each task's question, item, content
  hash and project) and records it, all of it or nothing. It also reads back a reviewed
  ``labelstudio`` export: confirmations and corrections become human labels.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
import os
import re
import secrets
import signal
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.style import Style
from rich.text import Text

from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    MetalabelError,
    StoreError,
    StoreUnavailableError,
    UnknownLabelError,
)
from metalabel.files import write_atomically
from metalabel.label.ask import REFERENCE
from metalabel.label.image_files import holds_stored_image, read_file
from metalabel.label.labelstudio import (
    ASKED_BECAUSE_KEY,
    CHOICES_NAME,
    CONFIG_FILE,
    CURRENT_LABEL_KEY,
    HASH_KEY,
    LABEL_KEY,
    LINKED_FILE_KEY,
    PROJECT_KEY,
    QUESTION_KEY,
    URI_KEY,
    QuestionIdentity,
    Suggestion,
    choices_task,
    write_config,
)
from metalabel.store import AnswerTime, Label, LabelSource, People, ProjectStore, path_sha256


@dataclass(frozen=True)
class Query:
    """One question put to an oracle."""

    question_id: int
    item_id: int
    uri: str
    item: str | np.ndarray | None
    """The content: text, an image array ``[H, W]`` / ``[H, W, C]``, or a feature row ``[D]``;
    ``None`` where only ``uri`` (an image file or URL) can show it."""
    class_names: Sequence[str]
    suggestion: str | None = None
    """The model's predicted class, offered as the default answer."""
    suggestion_confidence: float | None = None
    content_hash: str | None = None
    """The item's content hash in the store; ``put_questions`` fills it in. A Label Studio task
    carries it, so an answer is only recorded for the very content that was shown."""
    project: str | None = None
    """The asking project (``project_identity``); ``put_questions`` fills it in."""
    asked_because: str | None = None
    """Why the question was asked (``reference``, ``label-issue`` or the query strategy); ``put_questions``
    fills it in from the store."""
    current_label: str | None = None
    """The label the item has now, as ``class (source)``; ``put_questions`` fills it in, except for a
    reference question (its answer is evidence only if the person was not shown a model's guess)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if not self.class_names:
            raise BadInputError(f"question {self.question_id} lists no classes to choose from")
        if self.suggestion is not None and self.suggestion not in self.class_names:
            raise UnknownLabelError(
                f"question {self.question_id}: the suggestion is not one of its classes",
                cls=self.suggestion,
                hint=f"classes: {', '.join(self.class_names)}",
            )


@dataclass(frozen=True)
class Answer:
    question_id: int
    label: str | None
    """The class the oracle gave; ``None`` means it could not tell (the question is dismissed)."""
    oracle: str
    """Who answered, e.g. ``simulated``, ``terminal``, ``labelstudio:ann@example.com``."""


@runtime_checkable
class Oracle(Protocol):
    def answer(self, questions: Sequence[Query]) -> Iterable[Answer]:
        """The answers, in any order, each at most once; a generator may yield each as it is given."""
        ...


class AnswerNotSaved(StoreError):
    """An answer the store could not commit (busy past its timeout, disk full, ...): nothing of it was written.

    ``put_questions`` throws it into a generator oracle at the ``yield`` that gave the answer, so the
    oracle can tell the person and ask again; an oracle that does not catch it ends labeling with it.
    """

    def __init__(self, answer: Answer, uri: str, cause: StoreError) -> None:
        self.answer = answer
        given = "the skip" if answer.label is None else f"the answer {answer.label!r}"
        super().__init__(f"{given} for {uri} (question {answer.question_id}) was not saved: {cause}")


class OracleStopped(MetalabelError):
    """The person (or a SIGTERM / SIGHUP) asked to stop. ``answers`` holds what was answered before.

    Raised by an oracle, it carries the answers it has not handed over yet (commit those and
    stop); raised by ``put_questions``, it carries every answer committed in that call, and
    ``not_saved``, the answer the store refused last if the stop came before it was given again.
    """

    def __init__(self, answers: list[Answer], *, reason: str = "by the oracle",
                 not_saved: AnswerNotSaved | None = None) -> None:
        self.answers = answers
        self.reason = reason
        self.not_saved = not_saved
        kept = f"labeling stopped {reason} after {len(answers)} answer(s); every answer given is kept"
        if not_saved is not None:  # a stop that lands while a commit waits on a busy store must not hide its loss
            kept = (f"labeling stopped {reason} after {len(answers)} saved answer(s), which are kept; {not_saved} "
                    "(its question stays open: the next run asks it again)")
        super().__init__(kept)


@dataclass(frozen=True)
class RecordedAnswers:
    answered: int
    dismissed: int
    already_closed: list[int]
    """Question ids that were closed before (e.g. an export imported twice): left as they were."""
    disagreements: int = 0
    """Answers that contradicted another person's answer about the same item: recorded as disagreements."""
    confirmed: int = 0
    """Reviewed export labels a person confirmed: each is now a human label (an ``audit`` question's answer)."""
    corrected: int = 0
    """Reviewed export labels a person changed: the correction is a human label that supersedes the old one."""
    changed: int = 0
    """Answers their own annotator changed (an updated annotation): the new class is the label, the earlier
    answer stays in its history (``ProjectStore.correct``)."""
    held: list[HeldAnswer] = field(default_factory=list)
    """Answers given on a task whose linked pool file changed after the task was made: kept, not recorded."""


@dataclass(frozen=True)
class HeldAnswer:
    """The annotations of one Label Studio task that showed a linked pool file which is no longer the file the
    task was made with: the person may have seen other content than the project holds for the item, so they
    are kept (``kept``, the task as the export had it) and never recorded; the question stays open, and the
    queue writes it a new task."""

    question_id: int
    uri: str
    reason: str
    kept: Path


class _Tally:
    def __init__(self) -> None:
        self.answered = self.dismissed = self.disagreements = self.confirmed = self.corrected = self.changed = 0
        self.already_closed: list[int] = []
        self.held: list[HeldAnswer] = []
        self.answer_times: dict[int, dict[str, str]] = {}  # when each person answered, by question id

    def saw(self, question_id: int, vote: _Votes) -> None:
        """Keep when each person in ``vote`` answered ``question_id`` (where Label Studio said)."""
        self.answer_times.setdefault(question_id, {}).update(
            (who, when.isoformat()) for who, when in vote.answered_at.items() if when is not None)

    def result(self) -> RecordedAnswers:
        return RecordedAnswers(self.answered, self.dismissed, self.already_closed, self.disagreements,
                               self.confirmed, self.corrected, self.changed, self.held)

    def record(self, store: ProjectStore, answer: Answer) -> None:
        """One answer, in its own transaction: a class becomes a human label, ``None`` dismisses."""
        if not isinstance(answer, Answer):
            raise BadInputError(f"an oracle gave {type(answer).__name__}, not an Answer")
        question = store.question(answer.question_id)
        if answer.label is None:
            if question.answered_at is not None:
                self.already_closed.append(answer.question_id)
                return
            store.dismiss(answer.question_id, oracle=answer.oracle)
            self.dismissed += 1
        elif question.answer is not None and question.oracle == answer.oracle:  # hers, recorded before: as it was
            self.already_closed.append(answer.question_id)
        elif question.answer is not None:
            # another person answered it first (the ML backend writes while a run asks): hers is kept beside that
            # answer, as a disagreement where the class differs, never over it and never dropped
            self.disagreements += store.add_human_disagreement(answer.question_id, answer.label,
                                                               oracle=answer.oracle) is not None
        else:  # open, or dismissed before and answered now
            write = store.answer(answer.question_id, answer.label, oracle=answer.oracle)
            self.answered += 1
            self.disagreements += write.disagreement_id is not None


def record_answers(store: ProjectStore, answers: Iterable[Answer]) -> RecordedAnswers:
    """Write answers to the store: a class becomes a human label, ``None`` dismisses the question.

    Each answer is its own transaction, committed before the next one is taken from
    ``answers``, so an error (or a kill) on one keeps the ones before it. A question
    dismissed before may still be answered; an answered one is left as it was: the same
    person's answer again is already closed, another person's other class is recorded as
    her disagreement with the answer on record.
    """
    tally = _Tally()
    for answer in answers:
        tally.record(store, answer)
    return tally.result()


def project_identity(store: ProjectStore) -> str:
    """What names a project in an exported task: its name and creation time (two projects never share both)."""
    meta = store.meta()
    return f"{meta.get('name', store.folder.name)}@{meta.get('created_at', '?')}"


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Signalled(BaseException):
    """Raised by our handler while the oracle waits (e.g. for a keypress); never escapes ``put_questions``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopOnSignal:
    """SIGTERM and SIGHUP as a request to stop, honoured only where no answer can be half-written.

    While the oracle is working (blocked on ``input()``, say), the handler raises, which
    interrupts the wait; while an answer is being committed it only notes the request,
    and ``put_questions`` stops right after the commit.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._waiting = False

    def handle(self, signum: int, frame: Any) -> None:
        self.requested = signum
        if self._waiting:
            self._waiting = False
            raise _Signalled(signum)

    @contextmanager
    def waiting_for_the_oracle(self) -> Iterator[None]:
        if self.requested is not None:
            raise _Signalled(self.requested)
        self._waiting = True
        try:
            yield
        finally:
            self._waiting = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # Python lets only the main thread set handlers: signals keep their meaning
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in _STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def put_questions(store: ProjectStore, oracle: Oracle, queries: Sequence[Query]) -> RecordedAnswers:
    """Put ``queries`` to ``oracle`` and commit each answer the moment it is given.

    Each answer is its own transaction, committed before the oracle is resumed to show
    the next question, so a kill (even SIGKILL) loses at most the answer being typed.
    While this runs (in the main thread), SIGTERM and SIGHUP stop labeling cleanly:
    the answer being committed is finished, the previous handlers are restored and
    ``OracleStopped`` is raised, as when the person types ``q``. ``OracleStopped``
    (from the oracle or a signal) carries every answer this call committed.

    An answer the store refuses (``StoreError``: busy past its timeout, say) writes nothing and is
    thrown back into a generator oracle as ``AnswerNotSaved``, whose answer to it (asked again) comes
    next; an oracle that is not a generator, or does not catch it, ends labeling with the error.

    The queries get the store's content hash and project identity (``Query.content_hash``,
    ``Query.project``) so that an asynchronous oracle can tie its answers to them, and why each
    was asked and the item's label now (``Query.asked_because``, ``Query.current_label``).
    An answer to a question that was not put is refused.
    """
    queries = _with_identity(store, queries)
    uris = {query.question_id: query.uri for query in queries}
    tally = _Tally()
    committed: list[Answer] = []

    def commit(answer: Answer) -> None:
        if not isinstance(answer, Answer) or answer.question_id not in uris:
            raise BadInputError(
                f"the oracle answered question {getattr(answer, 'question_id', answer)!r}, which was not put to it",
                hint="an oracle answers only the questions it is given",
            )
        tally.record(store, answer)
        committed.append(answer)

    stop = _StopOnSignal()
    with stop.installed():
        answers: Iterator[Answer] | None = None
        not_saved: AnswerNotSaved | None = None
        try:
            with stop.waiting_for_the_oracle():
                answers = iter(oracle.answer(queries))
            while True:
                with stop.waiting_for_the_oracle():
                    answer = _next_answer(answers, not_saved)
                if answer is None:
                    break
                try:
                    commit(answer)
                    not_saved = None
                except StoreError as error:
                    if not isinstance(answers, Generator):  # nobody to ask again
                        raise
                    not_saved = AnswerNotSaved(answer, uris[answer.question_id], error)
            if stop.requested is not None:
                raise _Signalled(stop.requested)
        except OracleStopped as stopped:
            for answer in stopped.answers:  # an oracle that hands over its answers only when it stops
                if not any(answer.question_id == done.question_id for done in committed):
                    commit(answer)
            raise OracleStopped(committed, reason=stopped.reason, not_saved=not_saved) from None
        except _Signalled as signalled:
            raise OracleStopped(committed, reason=f"by {signal.Signals(signalled.signum).name}",
                                not_saved=not_saved) from None
        finally:
            close = getattr(answers, "close", None)
            if close is not None:
                close()  # a generator oracle that was stopped mid-way tidies up (its finally blocks run)
    return tally.result()


def _next_answer(answers: Iterator[Answer], not_saved: AnswerNotSaved | None) -> Answer | None:
    """The oracle's next answer (None when it has no more); after ``not_saved``, what it gives once told."""
    if not_saved is None or not isinstance(answers, Generator):
        return next(answers, None)
    try:
        return answers.throw(not_saved)
    except StopIteration:
        return None


def _with_identity(store: ProjectStore, queries: Sequence[Query]) -> list[Query]:
    # each queried item's row and label, not every item's: a whole pool's rows were 0.6 KB an item at every ask
    project = project_identity(store)
    out = []
    for query in queries:
        question = store.question(query.question_id)
        if question.item_id != query.item_id or question.uri != query.uri:
            raise BadInputError(
                f"question {query.question_id} is about item {question.item_id} ({question.uri!r}), "
                f"not item {query.item_id} ({query.uri!r})",
                hint="build each query from the store's question",
            )
        item = store.item(query.item_id)
        assert item is not None, f"question {query.question_id}'s item {query.item_id} is not in the store"
        label = store.active_label(query.item_id)
        current = None if label is None or question.strategy == REFERENCE else f"{label.class_name} ({label.source})"
        out.append(replace(query, content_hash=item.content_hash, project=project,
                           asked_because=question.strategy, current_label=current))
    return out


# -------------------------------------------------------------------- simulated


class SimulatedOracle:
    """Answers from gold labels, optionally wrong at a given rate.

    A wrong answer is a uniformly random other class. Whether an item is answered wrongly,
    and how, depends only on ``seed`` and the item's uri, so the same item gets the same
    answer in any order, on any re-ask and under any query strategy: the noise is a fixed
    property of the item, as label noise in a real data set is, and strategies compared
    with one seed face the same noise.
    """

    def __init__(self, gold: Mapping[str, str], *, noise_rate: float = 0.0, seed: int = 0, name: str = "simulated"):
        if not 0.0 <= float(noise_rate) <= 1.0:
            raise BadInputError(f"noise_rate must lie in [0, 1], got {noise_rate}")
        self.gold = gold
        self.noise_rate = float(noise_rate)
        self.seed = int(seed)
        self.name = name

    def answer(self, questions: Sequence[Query]) -> list[Answer]:
        return [Answer(query.question_id, self._label(query), self.name) for query in questions]

    def _label(self, query: Query) -> str:
        if query.uri not in self.gold:
            raise BadInputError(
                f"the simulated oracle has no gold label for item {query.uri!r}",
                hint="give gold labels for every item in the pool",
            )
        true_class = self.gold[query.uri]
        if true_class not in query.class_names:
            raise UnknownLabelError(
                f"the gold label of {query.uri!r} is not one of the question's classes",
                cls=true_class,
                hint=f"classes: {', '.join(query.class_names)}",
            )
        item_key = int.from_bytes(hashlib.blake2b(query.uri.encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng([self.seed, item_key])
        others = [name for name in query.class_names if name != true_class]
        if others and rng.random() < self.noise_rate:
            return others[int(rng.integers(len(others)))]
        return true_class


# --------------------------------------------------------------------- terminal


class _Command(Enum):
    SKIP = "skip"
    STOP = "stop"


class _UnclearReply(Exception):
    """A reply that names no class and no command; the message says why."""


class TerminalOracle:
    """Asks a person at the terminal, one question at a time.

    Each question shows the item (text inline, shortened to ``max_text_chars``; an image
    as its path plus a ``preview_width``-column half-block preview; a feature row as
    numbers), the model's suggestion with its confidence, and the classes. The person
    types a class number or name, Enter to accept the suggestion, ``s`` to skip ("can't
    tell"), or ``q`` to stop. A class name is matched before the commands, so a class
    called ``s`` is still reachable; when a class name is itself a number (digit
    classes), classes are chosen by name only, so ``3`` always means class ``3``.

    ``answer`` is a generator: each answer is handed over as soon as it is typed, so
    ``put_questions`` commits it before the next question is shown; one the store could not
    save is said to be not saved, and the same item is asked again. Stopping (``q``,
    Ctrl-C or the end of input) raises ``OracleStopped`` with the answers given so far.

    Everything shown that came from the data (uris, text, class names) has terminal
    control codes escaped (``\\x1b`` is shown, never sent), so a file name cannot clear
    the screen or fake a prompt.
    """

    def __init__(
        self,
        *,
        input: Callable[[str], str] | None = None,
        console: Console | None = None,
        name: str = "terminal",
        preview_width: int = 28,
        max_text_chars: int = 1200,
    ) -> None:
        self._input = input or _read_answer
        self.console = console or Console(highlight=False)
        self.name = name
        self.preview_width = preview_width
        self.max_text_chars = max_text_chars

    def answer(self, questions: Sequence[Query]) -> Iterator[Answer]:
        answers: list[Answer] = []
        for position, query in enumerate(questions, start=1):
            numbered = not any(_is_integer(name) for name in query.class_names)
            self._show(query, position, len(questions), numbered)
            while True:
                try:
                    reply = self._input("label> ")
                except (EOFError, KeyboardInterrupt):
                    self.console.print()
                    raise OracleStopped(answers) from None
                try:
                    choice = _interpret(reply, query, numbered=numbered)
                except _UnclearReply as unclear:
                    self.console.print(Text(f"{unclear} {_HELP}", style="yellow"))
                    continue
                if choice is _Command.STOP:
                    raise OracleStopped(answers)
                answer = Answer(query.question_id, None if choice is _Command.SKIP else choice, self.name)
                try:
                    yield answer
                except AnswerNotSaved as not_saved:  # nothing of it was written: the same item again
                    self.console.print(Text(f"{escape_controls(str(not_saved))}. Answer this item again, or q to "
                                            "stop.", style="bold red"))
                    continue
                answers.append(answer)
                break

    def _show(self, query: Query, position: int, total: int, numbered: bool) -> None:
        console = self.console
        console.rule(Text(f"question {position} of {total}", style="bold"))
        console.print(Text(escape_controls(query.uri), style="cyan"))
        item = query.item
        if isinstance(item, str):
            console.print(Text(escape_controls(_shorten(item, self.max_text_chars), keep_newlines=True)))
        elif isinstance(item, np.ndarray) and item.ndim == 1:
            console.print(Text("features: " + np.array2string(item, precision=3, threshold=24)))
        else:
            image = item if isinstance(item, np.ndarray) else _read_image(query.uri)
            if image is None:
                console.print(Text("(no preview)", style="dim"))
            else:
                console.print(half_block_preview(image, width=self.preview_width))

        if query.suggestion is None:
            console.print(Text("no suggestion from the model", style="dim"))
        else:
            line = Text("model suggests: ").append(escape_controls(query.suggestion), style="bold green")
            if query.suggestion_confidence is not None:
                line.append(f" ({query.suggestion_confidence:.0%})")
            console.print(line.append("  [Enter accepts]", style="dim"))

        choices = Text()
        for number, class_name in enumerate(query.class_names, start=1):
            if numbered:
                choices.append(f"{number}", style="bold").append(" ")
            choices.append(escape_controls(class_name)).append("   ")
        console.print(choices)
        console.print(Text(_HELP, style="dim"))


_HELP = "Type a class number or name, Enter for the suggestion, s to skip, q to stop."


def _read_answer(prompt: str) -> str:
    """``input(prompt)`` with the prompt flushed here: the builtin discards an exception raised while it flushes,
    which is where a stop signal's handler runs when the write blocks (output paused with Ctrl-S), so the
    stop would wait for the next answer."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    return input()


def _interpret(reply: str, query: Query, *, numbered: bool) -> str | _Command:
    text = reply.strip()
    if not text:
        if query.suggestion is None:
            raise _UnclearReply("There is no suggestion to accept.")
        return query.suggestion
    if text in query.class_names:
        return text
    folded = [name for name in query.class_names if name.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    if text.lower() in {"s", "skip"}:
        return _Command.SKIP
    if text.lower() in {"q", "quit"}:
        return _Command.STOP
    if numbered and text.isdigit():
        number = int(text)
        if 1 <= number <= len(query.class_names):
            return query.class_names[number - 1]
        raise _UnclearReply(f"{number} is not between 1 and {len(query.class_names)}.")
    raise _UnclearReply(f"{text!r} is not a class.")


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Marks that reorder what follows on the line (a name can look like another)."""


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to show on a terminal: C0 and C1 control characters (ESC, CSI, OSC, BEL,
    carriage return, ...), DEL and bidirectional overrides appear as escapes like ``\\x1b``.

    Rich passes ESC through as it is, so an item's text could otherwise clear the screen,
    retitle the window or draw a fake prompt. ``keep_newlines`` keeps line breaks and tabs.
    """
    out = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _is_integer(name: str) -> bool:
    return name.strip().lstrip("+-").isdigit()


def _shorten(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars].rstrip()}… ({len(text) - max_chars:,} more characters)"


def _read_image(uri: str) -> np.ndarray | None:
    """An image file's pixels for the preview, or None if ``uri`` is not a readable image file."""
    try:
        with Image.open(uri) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def half_block_preview(image: np.ndarray, *, width: int = 28) -> Text:
    """An image as terminal text, ``width`` columns wide: each '▀' shows two pixel rows
    (the upper one as the character's colour, the lower one as its background)."""
    pixels = as_rgb(image)
    height, image_width = pixels.shape[:2]
    width = max(1, min(width, image_width))
    rows = max(2, 2 * round(height * width / image_width / 2))  # even: two pixel rows per line
    small = np.asarray(Image.fromarray(pixels).resize((width, rows), Image.Resampling.BILINEAR))
    preview = Text()
    for top, bottom in zip(small[0::2], small[1::2]):
        for upper, lower in zip(top.tolist(), bottom.tolist()):
            preview.append("▀", style=Style(color=f"rgb({upper[0]},{upper[1]},{upper[2]})",
                                            bgcolor=f"rgb({lower[0]},{lower[1]},{lower[2]})"))
        preview.append("\n")
    preview.rstrip()
    return preview


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` from grey or colour, uint8 or float."""
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise BadInputError(
            f"cannot show an array of shape {pixels.shape} as an image", hint="pass [H, W] or [H, W, 3]"
        )
    if pixels.dtype != np.uint8:
        values = np.nan_to_num(pixels.astype(np.float64))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0  # floats come in [0, 1] or in [0, 255]
        pixels = np.clip(values * scale, 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


# ------------------------------------------------------------------ Label Studio

_URL_SCHEMES = {"http", "https", "s3", "gs", "azure-blob", "data"}


class LabelStudioQueue:
    """A file queue for Label Studio: export questions as tasks, import the annotations.

    Asynchronous as an oracle: ``answer(questions)`` writes a task file and returns no
    answers, so the questions stay open in the project store (a later round re-asks
    them under the same question ids rather than asking twice). The workflow is

    1. ``answer(questions)`` / ``export_tasks(questions)`` writes
       ``tasks-q<first>-q<last>.json`` and ``label_config.xml`` into ``folder``;
    2. create a Label Studio project with that labeling config and import the tasks:
       the model's suggestion shows as a pre-annotation with its score;
    3. label, export with the "JSON" (or "JSON-MIN") format, and pass the file to
       ``import_annotations(path, store=store)`` (``metalabel import-answers``), which
       checks every task against the project and records the answers, all or nothing.

    ``answer`` writes only the questions no task file in ``folder`` holds yet: running the
    loop again before the answers are imported leaves the files already written (and their
    predictions) as they are, and a new file holds just the new questions, so no question
    reaches Label Studio twice. A task file that is deleted is written again.

    Each task carries its question id, the item's uri and content hash and the project's
    identity (in ``meta`` and in ``data``), so an answer can only land on the item shown; and,
    shown above the item, why it was asked and the label it has now (not for a reference
    question, whose answer is evidence only if the person did not see a model's guess).

    Images are referenced by URL when ``uri`` is one; local files under
    ``local_files_root`` (Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``) as
    ``/data/local-files/?d=...`` links; anything else is embedded as a base64 data URI,
    which suits small images (28x28 is about 1 kB) but bloats big ones: serve those
    as local files. Label Studio shows a linked file as it is when the person looks, so a file is
    linked only if its bytes decode to the item's stored content (else the stored pixels are
    embedded), and the task keeps what the file was (``LINKED_FILE_KEY``): an answer given on a
    task whose file changed since is held on import, never recorded (see ``import_annotations``).
    A table row is shown as ``{column: value}`` under the names in
    ``feature_names`` (the pool's ``LabeledDataset.feature_names``; ``x0``, ``x1``, ... without them).

    ``import_annotations`` also reads back a reviewed ``metalabel export --format labelstudio``:
    see there.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        model_version: str = "metalabel",
        local_files_root: str | Path | None = None,
        name: str = "labelstudio",
        feature_names: Sequence[str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.model_version = model_version
        self.local_files_root = None if local_files_root is None else Path(local_files_root).resolve()
        self.name = name
        self.feature_names = None if feature_names is None else tuple(feature_names)

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    def answer(self, questions: Sequence[Query]) -> list[Answer]:
        """Export the questions no task file holds yet; the answers come later through ``import_annotations``."""
        exported = self.exported_question_ids()
        new = [query for query in questions if query.question_id not in exported]
        if new:
            self.export_tasks(new)
        return []

    def exported_question_ids(self) -> set[int]:
        """The question ids the task files in ``folder`` hold."""
        ids: set[int] = set()
        held = self._held_tokens()
        for path in sorted(self.folder.glob(f"{TASK_FILE_PREFIX}*.json")):
            try:
                tasks = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise BadInputError(
                    f"cannot be read as a task file this queue wrote ({_brief(str(error), 120)})", path=path,
                    hint="restore it, or delete it and its open questions are written to a new task file",
                ) from None
            for task in tasks if isinstance(tasks, list) else []:
                meta = task.get("meta") if isinstance(task, dict) else None
                question_id = meta.get(QUESTION_KEY) if isinstance(meta, dict) else None
                data = task.get("data") if isinstance(task, dict) else None
                linked = data.get(LINKED_FILE_KEY) if isinstance(data, dict) else None
                if isinstance(linked, dict) and linked.get("token") in held:
                    continue  # an answer on it was held: its file changed, so the question gets a new task
                if isinstance(question_id, int) and not isinstance(question_id, bool):
                    ids.add(question_id)
        return ids

    def _held_tokens(self) -> set[str]:
        """The tokens of the tasks an answer was held on (``HELD_FOLDER``'s files are named by them)."""
        try:
            return {name.split("-", 1)[0] for name in os.listdir(self.folder / HELD_FOLDER) if name.endswith(".json")}
        except FileNotFoundError:
            return set()

    def _keep_held(self, held: _HeldTask, export: Path) -> HeldAnswer:
        """Write a held task's annotations under ``HELD_FOLDER`` (once: the same task from the same file again
        is the same file); the import records them nowhere else."""
        body = json.dumps({"question_id": held.question_id, "uri": held.uri, "reason": held.reason,
                           "export": str(export), "task": held.task}, indent=1, ensure_ascii=False)
        folder = self.folder / HELD_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{held.token}-{hashlib.sha256(body.encode()).hexdigest()[:16]}.json"
        if not kept.exists():
            write_atomically(kept, body)
        return HeldAnswer(held.question_id, held.uri, held.reason, kept)

    def export_tasks(self, questions: Sequence[Query], *, model_version: str | None = None) -> Path:
        """Write a Label Studio import file of the questions and the labeling config; returns the task file."""
        if not questions:
            raise BadInputError("there are no questions to export")
        identities = [_question_identity(query) for query in questions]
        class_names = questions[0].class_names
        for query in questions:
            if query.class_names != class_names:
                raise BadInputError(
                    f"question {query.question_id} has other classes than question {questions[0].question_id}",
                    hint="export one project's questions at a time",
                )
        kinds = {_data_kind(query) for query in questions}
        if len(kinds) > 1:
            raise BadInputError("the questions mix kinds of item (image, text, table rows)",
                                hint="export one kind of item at a time")
        kind = kinds.pop()
        version = model_version or self.model_version
        tasks = [self._task(query, identity, kind, version) for query, identity in zip(questions, identities)]

        self.folder.mkdir(parents=True, exist_ok=True)
        ids = sorted(query.question_id for query in questions)
        stem, copy = f"{TASK_FILE_PREFIX}{ids[0]}-q{ids[-1]}", 2
        tasks_path = self.folder / f"{stem}.json"
        while tasks_path.exists():  # never replace a file that may already be in Label Studio
            tasks_path, copy = self.folder / f"{stem}-{copy}.json", copy + 1
        # whole or absent, even if we are killed: a person imports these files into Label Studio
        write_atomically(tasks_path, json.dumps(tasks, indent=1, ensure_ascii=False))
        write_config(self.folder, class_names, kind=kind, context=_QUESTION_CONTEXT)
        return tasks_path

    def _task(self, query: Query, identity: QuestionIdentity, kind: str, model_version: str) -> dict[str, Any]:
        content: str | dict[str, float]
        linked: dict[str, Any] | None = None
        if kind == "image":
            content, linked = self._image_value(query)
        elif kind == "table":
            content = self._table_value(query)
        else:
            content = str(query.item)
        suggestions = () if query.suggestion is None else (
            Suggestion(query.suggestion, model_version, query.suggestion_confidence),)
        if query.current_label is not None:
            now = query.current_label
        elif query.asked_because == REFERENCE:
            now = "not shown: a reference question is answered without the model's guess"
        else:
            now = "none"
        context: dict[str, Any] = {ASKED_BECAUSE_KEY: query.asked_because or "not recorded", CURRENT_LABEL_KEY: now}
        if linked is not None:
            context[LINKED_FILE_KEY] = linked
        return choices_task(kind, content, data=context, question=identity, suggestions=suggestions)

    def _table_value(self, query: Query) -> dict[str, float]:
        values = np.asarray(query.item).tolist()
        names = self.feature_names or tuple(f"x{index}" for index in range(len(values)))
        if len(names) != len(values):
            raise BadInputError(
                f"question {query.question_id}: the row has {len(values)} values but the queue knows "
                f"{len(names)} column names", hint="pass the pool's feature_names to LabelStudioQueue",
            )
        return {name: float(f"{value:.7g}") for name, value in zip(names, values)}

    def _image_value(self, query: Query) -> tuple[str, dict[str, Any] | None]:
        """What the task shows (a URL, a local-files link or a data URI), and for a link what the file was."""
        if urlparse(query.uri).scheme in _URL_SCHEMES:
            return query.uri, None
        path = Path(query.uri)
        pixels = query.item if isinstance(query.item, np.ndarray) else None
        if path.is_file():
            resolved = path.resolve()
            if self.local_files_root is not None and resolved.is_relative_to(self.local_files_root):
                # Label Studio shows the file as it is when the person looks: link it only while it holds the
                # item's content, and keep what it was, so an answer given after it changed is held on import
                try:
                    data, status = read_file(resolved)
                    holds = pixels is None or holds_stored_image(data, pixels, query.content_hash or "", uri=query.uri)
                except OSError:  # gone or unreadable since is_file: the stored pixels are shown
                    holds = False
                if holds:
                    link = "/data/local-files/?d=" + quote(resolved.relative_to(self.local_files_root).as_posix())
                    return link, {"path": str(resolved), "sha256": hashlib.sha256(data).hexdigest(),
                                  "size": status.st_size, "mtime_ns": status.st_mtime_ns,
                                  "token": secrets.token_hex(8)}
            elif pixels is None:
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                return f"data:{mime};base64,{base64.b64encode(resolved.read_bytes()).decode()}", None
        if pixels is not None:  # the stored content itself
            png = io.BytesIO()
            Image.fromarray(as_rgb(pixels)).save(png, format="PNG")
            return f"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}", None
        raise DataNotFoundError(
            f"question {query.question_id}: the image is neither a file, a URL nor an array",
            path=query.uri,
            hint="pass the image array as the query's item",
        )

    def import_annotations(self, path: str | Path, *, store: ProjectStore, changed: bool = False) -> RecordedAnswers:
        """Record the answers in a Label Studio export ("JSON" or "JSON-MIN") of tasks metalabel wrote.

        All or nothing: every task is checked before anything is written, and everything is
        written in one transaction. A task is refused, and with it the whole file (naming the
        task; the store is left exactly as it was), when its question is not this project's,
        its item (uri and content hash) is not the question's item, it comes from another
        project, or its class is not one of the project's classes.

        A task nobody annotated gives no answer (its question stays open). Annotations that
        were skipped (``was_cancelled``) or submitted without a choice dismiss an open question
        ("can't tell"); a dismissed question labeled in a later export is recorded then. Where
        annotations (or two tasks of one question) disagree, the class most of them chose
        (the first of them on a tie) becomes the label and each other class a recorded
        disagreement, as does a class that contradicts the question's earlier answer.

        Tasks of ``metalabel export --format labelstudio`` (they carry ``metalabel_label_id``) that
        a reviewer annotated close the review loop; they are read from the "JSON" export only. A
        reviewed model label becomes a person's answer to an ``audit`` question about its item (the
        store's human-answer path): a confirmation keeps the class, a correction supersedes the model
        label. A seed label the reviewer changed is superseded the same way; one left as exported
        changes nothing (Label Studio cannot tell it was looked at). Where the item already has a
        person's answer, another class is recorded as a disagreement, never written over it. An item
        waiting on an open question gets the review as that question's answer, unless it is a
        reference question: a reviewer saw the model's label, so the file is refused (answer the
        reference question first, or remove that review).

        The file is recorded as an ``answers-import`` artifact in the same transaction (once), so what was
        recorded can be told from what was not (``unrecorded_annotations``).

        One person gives one answer: of her annotations of one question the newest (``updated_at``, else
        the last in the file) counts, and where the answer on record is hers, a later one is her changed
        answer (``ProjectStore.correct``: it becomes the label, the earlier answer stays in the history),
        never a disagreement with herself; one older than her answer recorded from an earlier file (a kept
        webhook replayed late) is left out. A reviewer's verdicts on a reviewed label follow the same rule.
        Another person's answer is still never written over.

        ``changed``: the annotations are ones their annotators changed (Label Studio's
        ``ANNOTATION_UPDATED``): one as old as the answer on record still changes it.

        A task that links a pool file whose bytes, size or modification time are no longer those the task
        was made with (or whose file is gone) may have shown other content than the item: its annotations
        are held (``RecordedAnswers.held``): kept under ``HELD_FOLDER``, recorded nowhere, the rest of the
        file imported. The task stays held in every later import, even once the file is put back, and its
        question stays open: ``answer`` writes it a new task, which shows the content the project holds.
        """
        path = Path(path)
        export = self._read_export(path)
        _check_against_store(export.questions, store, path)
        shown = _check_reviews(export.reviews, store, path)
        tally = _Tally()
        # kept before anything is recorded: an import stopped after this holds them again when it is repeated
        tally.held = [self._keep_held(held, path) for held in export.held]
        try:
            with store.batch():
                for name, other in sorted(export.same_people):
                    store.same_person(name, other)
                people = store.people()  # a person is one, whichever name an export or a webhook gave her
                recorded_at = _RecordedAnswerTimes(store, people)
                for question_id, vote in export.questions.items():
                    _record_votes(store, question_id, vote.named(people), tally, recorded_at, people,
                                  changed=changed)
                for label_id, vote in export.reviews.items():
                    _record_review(store, shown[label_id], vote.named(people), tally, recorded_at, people,
                                   changed=changed)
                # in the same transaction: the file is on record exactly when its answers are (once: a file
                # imported again adds nothing)
                digest = path_sha256(path)
                if not any(artifact.sha256 == digest for artifact in store.artifacts(kind=ANSWERS_IMPORT, path=path)):
                    artifact_id = store.add_artifact(ANSWERS_IMPORT, path, meta={"changed": changed})
                    store.record_answer_times(artifact_id, (
                        AnswerTime(question_id, who, when) for question_id, times in tally.answer_times.items()
                        for who, when in times.items()))
        except BadInputError as error:
            raise BadInputError(
                f"{error}; nothing was imported (an import is all or nothing)", path=path,
                hint="fix the export or the project and import the whole file again",
            ) from error
        except StoreError as error:
            kind = StoreUnavailableError if isinstance(error, StoreUnavailableError) else StoreError
            raise kind(f"{error}; nothing was imported from {path} (an import is all or nothing)") from error
        return tally.result()

    def _read_export(self, path: Path) -> _Export:
        """What the export says: the votes on each question and on each reviewed label, and who is who."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataNotFoundError("does not exist", path=path, hint="check the export's path") from None
        except IsADirectoryError:
            raise BadInputError("is a folder, not an export file", path=path) from None
        except UnicodeDecodeError as error:
            raise BadInputError(
                f"is not UTF-8 text ({error.reason} at byte {error.start}); nothing was imported",
                path=path, hint="export from Label Studio in the 'JSON' format",
            ) from None
        except OSError as error:
            raise BadInputError(f"cannot be read ({error.strerror}); nothing was imported", path=path) from None
        try:
            tasks = json.loads(text)
        except RecursionError:
            raise BadInputError(
                "is nested too deeply to be a Label Studio export; nothing was imported", path=path,
                hint="export from Label Studio in the 'JSON' format",
            ) from None
        except ValueError as error:  # JSONDecodeError, and integers too long to convert
            raise BadInputError(
                f"is not JSON ({_brief(str(error), 200)}); nothing was imported", path=path,
                hint="export from Label Studio in the 'JSON' format",
            ) from None
        if not isinstance(tasks, list):
            raise BadInputError(
                "is not a Label Studio export: expected a list of tasks; nothing was imported", path=path,
                hint="use the 'JSON' export format",
            )
        export = _Export(held_tokens=self._held_tokens())
        for index, task in enumerate(tasks):
            try:
                self._read_task(task, index, export)
            except _TaskProblem as problem:
                raise BadInputError(
                    f"task {index}{_task_id(task)}: {problem}; nothing was imported (an import is all or nothing)",
                    path=path, hint="pass the export file as Label Studio wrote it, of tasks this project exported",
                ) from None
        return export

    def _read_task(self, task: Any, index: int, export: _Export) -> None:
        if not isinstance(task, dict):
            raise _TaskProblem("is not a JSON object")
        # meta (full JSON) names them plainly; data (every format) and, in JSON-MIN, the task itself
        # carry them with a metalabel_ prefix. A task's own "project" is Label Studio's project id.
        meta, data = task.get("meta"), task.get("data")

        def places(meta_key: str, data_key: str) -> list[tuple[Any, str]]:
            return [(meta, meta_key), (data, data_key), (task, data_key)]

        raw_question_id = _field(places(QUESTION_KEY, QUESTION_KEY), QUESTION_KEY)
        raw_label_id = _field(places(LABEL_KEY, LABEL_KEY), LABEL_KEY)
        if raw_question_id is not None and raw_label_id is not None:
            raise _TaskProblem(f"carries both a {QUESTION_KEY} and a {LABEL_KEY}; was it changed by hand?")
        question_id = None if raw_question_id is None else _question_id(raw_question_id, QUESTION_KEY)
        if question_id is not None:
            vote = export.questions.setdefault(question_id, _Votes())
        elif raw_label_id is not None:
            if "annotations" not in task:
                # JSON-MIN puts the choice under "label", where the exported task's data has the label shown
                raise _TaskProblem("a reviewed export task is read from Label Studio's 'JSON' export, not "
                                   "'JSON-MIN' (which cannot tell the label shown from the reviewer's answer)")
            vote = export.reviews.setdefault(_question_id(raw_label_id, LABEL_KEY), _Votes())
        else:
            raise _TaskProblem(
                f"carries neither a {QUESTION_KEY} (a question `metalabel run --oracle labelstudio` asked) nor a "
                f"{LABEL_KEY} (a label `metalabel export --format labelstudio` wrote); was it exported by metalabel?")
        identity = _TaskIdentity(
            index=index,
            label_studio_id=_task_id(task),
            uri=_text_field(places("uri", URI_KEY), "uri"),
            content_hash=_text_field(places("content_hash", HASH_KEY), "content hash"),
            project=_text_field(places("project", PROJECT_KEY), "project"),
        )
        vote.tasks.append(identity)  # checked against the project, held or not
        linked = _field(places(LINKED_FILE_KEY, LINKED_FILE_KEY), "linked file")
        if question_id is not None and linked is not None and _annotated(task):
            token, problem = _linked_file_problem(linked, export.held_tokens)
            if problem is not None:
                export.held.append(_HeldTask(question_id, identity.uri or "", token, problem, task))
                vote = _Votes()  # its annotations are read (a malformed one refuses the file) but count nowhere
        if "annotations" in task:  # the full "JSON" export
            annotations = task["annotations"]
            if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
                raise _TaskProblem("'annotations' is not a list of objects")
            for annotation in annotations:
                annotator = self._annotator(annotation.get("completed_by"), export, annotation.get("id"))
                if annotation.get("was_cancelled", False) is True:
                    vote.skipped_by.append(annotator)
                    continue
                results = annotation.get("result", [])
                if not isinstance(results, list):
                    raise _TaskProblem("an annotation's 'result' is not a list")
                choices = [
                    r for r in results
                    if isinstance(r, dict) and r.get("type") == "choices" and r.get("from_name") == CHOICES_NAME
                ]
                if not choices:
                    vote.skipped_by.append(annotator)
                    continue
                value = choices[-1].get("value")
                self._add(vote, _one_choice(value.get("choices") if isinstance(value, dict) else None), annotator,
                          index, _annotation_time(annotation))
        elif CHOICES_NAME in task:  # "JSON-MIN": the choice sits under the control's name
            self._add(vote, _one_choice(task[CHOICES_NAME]),
                      self._annotator(task.get("annotator"), export, task.get("annotation_id")), index,
                      _annotation_time(task))

    def _add(self, vote: _Votes, label: str, annotator: str, index: int, when: datetime | None) -> None:
        """``vote.add``, but two answers that name nobody and carry no id (written by hand) are refused: they
        cannot be told apart as one person's or two, and taken as one person's the older would be dropped."""
        if annotator == self.name and annotator in vote.answered_at:
            raise _TaskProblem("two annotations of its question name nobody and carry no id, so they cannot be "
                               "told apart as one person's answers or two people's; give each its completed_by "
                               "(or its Label Studio id)")
        vote.add(label, annotator, index, when)

    def _annotator(self, completed_by: Any, export: _Export, annotation_id: Any) -> str:
        """``labelstudio:<email or user id>``: Label Studio writes either, or a user object, whose id and
        email are then one person's names (webhooks name her by id).

        An annotation that names nobody (made through the API, or written by hand) is its own person,
        ``labelstudio:annotation-<id>``: its later versions keep its id and so replace it, while two such
        annotations of one task stay two answers, so neither is taken for the other's change and lost.
        """
        if isinstance(completed_by, dict):
            email, user_id = completed_by.get("email"), completed_by.get("id")
            if email not in (None, "") and user_id not in (None, ""):
                export.same_people.add((f"{self.name}:{email}", f"{self.name}:{user_id}"))
            completed_by = email or user_id
        if completed_by not in (None, ""):
            return f"{self.name}:{completed_by}"
        if isinstance(annotation_id, (int, str)) and not isinstance(annotation_id, bool) and annotation_id != "":
            return f"{self.name}:annotation-{annotation_id}"
        return self.name


AUDIT = "audit"
"""The strategy of the question a reviewed export label is recorded through (as the labeling page's review)."""

HELD_FOLDER = "held"
"""Under the queue's folder: each task whose answers were held (``HeldAnswer``), as ``<token>-<digest>.json``."""

ANSWERS_IMPORT = "answers-import"
"""The artifact kind of a Label Studio export whose answers were recorded (``import_annotations``)."""
WEBHOOK_FOLDER = Path("labelstudio") / "webhook"
"""Where the ML backend keeps each annotation it receives (under the project folder), as a one-task export."""
UPDATED_MARK = "-updated-"
"""In a kept annotation's file name: it came as ``ANNOTATION_UPDATED``, its annotator's changed answer."""
CREATED_MARK = "-created-"
"""In a kept annotation's file name: it came as ``ANNOTATION_CREATED``. A file with neither mark was kept by a
backend before schema version 6, which recorded it without saying so: it is not replayed."""


_kept_clock = threading.Lock()
_last_kept_ns = 0
_KEPT_STAMP = re.compile(r"(\d{8}T\d{6})\.(\d{9})Z-")


def kept_annotation_name(task_id: str, annotation_id: str, *, changed: bool) -> str:
    """The file name the ML backend keeps an annotation under. It starts with the time in nanoseconds (UTC),
    later for each file this process names, so two events about one annotation are never taken in the wrong
    order (a file system's timestamps tick coarser); the random token keeps two processes' files apart."""
    global _last_kept_ns
    with _kept_clock:
        _last_kept_ns = max(time.time_ns(), _last_kept_ns + 1)
        now = _last_kept_ns
    stamp = datetime.fromtimestamp(now // 10**9, UTC).strftime("%Y%m%dT%H%M%S")
    return (f"{stamp}.{now % 10**9:09d}Z-task{task_id}-annotation{annotation_id}"
            f"{UPDATED_MARK if changed else CREATED_MARK}{secrets.token_hex(3)}.json")


def _kept_order(path: Path) -> tuple[int, str]:
    """When a kept annotation came: its name's time, or, for a name without one (a backend before this
    release: seconds and a random token), the file's modification time."""
    found = _KEPT_STAMP.match(path.name)
    if found is None:
        return path.stat().st_mtime_ns, path.name
    seconds = int(datetime.strptime(found[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp())
    return seconds * 10**9 + int(found[2]), path.name


def unrecorded_annotations(store: ProjectStore) -> list[Path]:
    """Annotations the ML backend kept but could not record (a run held the project, the store was busy, or
    they were refused), oldest first: answers people gave that are not in the project yet."""
    # by name, not path: the folder holds a file per annotation the backend ever received, and this runs at
    # every webhook
    folder = store.folder / WEBHOOK_FOLDER
    try:
        not_recorded = set(os.listdir(folder)) - store.artifact_names(ANSWERS_IMPORT, folder)  # in C: it is O(files)
    except FileNotFoundError:  # the backend never kept one
        return []
    # a link's record names the file it links to (``add_artifact`` resolves), so a link is looked up by that;
    # a name starting with "." is a file the backend is still writing (``write_atomically``'s temporary)
    kept = [name for name in not_recorded if name.endswith(".json") and not name.startswith(".")
            and (CREATED_MARK in name or UPDATED_MARK in name)
            and not ((folder / name).is_symlink() and store.artifacts(kind=ANSWERS_IMPORT, path=folder / name))]
    return sorted((folder / name for name in kept), key=_kept_order)


@dataclass(frozen=True)
class KeptAnnotations:
    """What ``record_kept_annotations`` did: the files recorded, with what they held, those refused, with why,
    and, where the store could not be written (busy, disk), the file it stopped at, with why, and every file
    left for the next time (that one first)."""

    recorded: list[tuple[Path, RecordedAnswers]]
    refused: list[tuple[Path, str]]
    stopped: tuple[Path, str] | None = None
    left: list[Path] = field(default_factory=list)


def record_kept_annotations(store: ProjectStore, *, but: Path | None = None) -> KeptAnnotations:
    """Record the annotations the ML backend kept but did not record, oldest first, each as the event it was
    (an update as its annotator's changed answer), each all or nothing. One that is refused (its question
    gone from this project, a class the project lacks) stays kept and listed by ``unrecorded_annotations``.
    A ``StoreUnavailableError`` (the store busy past its timeout, the disk full) stops it there: a later file (an
    update) must not go in before that one, and each would wait the timeout again; they stay kept. Any other
    refusal (the store's included) is the file's own and would recur: it is listed and the rest go on.
    ``but``: a kept file to leave for the caller. Hold the project's writer lock around it."""
    queue = LabelStudioQueue(store.folder / "labelstudio")
    recorded: list[tuple[Path, RecordedAnswers]] = []
    refused: list[tuple[Path, str]] = []
    kept = [path for path in unrecorded_annotations(store) if but is None or path.resolve() != but.resolve()]
    for n, path in enumerate(kept):
        try:
            recorded.append((path, queue.import_annotations(path, store=store, changed=UPDATED_MARK in path.name)))
        except StoreUnavailableError as error:
            return KeptAnnotations(recorded, refused, stopped=(path, str(error)), left=kept[n:])
        except MetalabelError as error:
            refused.append((path, str(error)))
    return KeptAnnotations(recorded, refused)

TASK_FILE_PREFIX = "tasks-q"
"""How the queue's task files are named (``tasks-q<first>-q<last>.json``), for whoever reads them back."""

_QUESTION_CONTEXT = ((ASKED_BECAUSE_KEY, "Asked because"), (CURRENT_LABEL_KEY, "Label now"))
"""What a question task shows above the item (every question task carries both keys)."""

_MAX_QUESTION_ID = 2**63 - 1  # SQLite's largest integer


class _TaskProblem(Exception):
    """What is wrong with one task; the importer names the file and the task."""


@dataclass
class _TaskIdentity:
    index: int
    label_studio_id: str
    uri: str | None
    content_hash: str | None
    project: str | None


@dataclass
class _Votes:
    """Everything an export says about one question (over all its tasks and annotations)."""

    tasks: list[_TaskIdentity] = field(default_factory=list)
    labels: list[tuple[str, str, int]] = field(default_factory=list)  # (class, annotator, task index), one a person
    skipped_by: list[str] = field(default_factory=list)
    answered_at: dict[str, datetime | None] = field(default_factory=dict)
    """When each annotator last changed the answer in ``labels`` (Label Studio's ``updated_at``), where known."""

    def add(self, label: str, annotator: str, index: int, when: datetime | None = None) -> None:
        """One person's answer. A person answers once: of two (a task imported twice), the newer is her answer,
        the later in the file where a time is missing."""
        earlier = next((n for n, (_, who, _) in enumerate(self.labels) if who == annotator), None)
        if earlier is None:
            self.labels.append((label, annotator, index))
        elif _not_older(when, self.answered_at[annotator]):
            self.labels[earlier] = (label, annotator, index)
        else:
            return
        self.answered_at[annotator] = when

    def decision(self) -> tuple[str, str, list[tuple[str, str]]] | None:
        """The class most annotators chose (the first chosen on a tie), who chose it first, and each other
        (class, annotator): every answer not kept, with who gave it, once."""
        if not self.labels:
            return None
        counts: dict[str, int] = {}
        for label, _, _ in self.labels:
            counts[label] = counts.get(label, 0) + 1
        winner = max(counts, key=lambda label: counts[label])  # dicts keep first-seen order: ties go to the first
        annotator = next(who for label, who, _ in self.labels if label == winner)
        others = dict.fromkeys((label, who) for label, who, _ in self.labels if label != winner)
        return winner, annotator, list(others)

    def named(self, people: People) -> _Votes:
        """These votes with each person under the one name the project gives her (``People.canonical``): her
        annotations under two names are one person's, of which the newer counts."""
        votes = _Votes(self.tasks, skipped_by=[people.canonical(who) for who in self.skipped_by])
        for label, who, index in self.labels:
            votes.add(label, people.canonical(who), index, self.answered_at[who])
        return votes


@dataclass
class _Export:
    """What one Label Studio export says."""

    questions: dict[int, _Votes] = field(default_factory=dict)
    reviews: dict[int, _Votes] = field(default_factory=dict)  # by the id of the label a reviewed task showed
    same_people: set[tuple[str, str]] = field(default_factory=set)  # (email name, id name) of one user
    held: list[_HeldTask] = field(default_factory=list)
    """Annotated tasks whose linked file is not the file the task was made with: kept, not recorded."""
    held_tokens: set[str] = field(default_factory=set)
    """The tokens of tasks an earlier import held (``LabelStudioQueue._held_tokens``)."""


@dataclass(frozen=True)
class _HeldTask:
    question_id: int
    uri: str
    token: str
    reason: str
    task: dict[str, Any]


def _annotated(task: dict[str, Any]) -> bool:
    """Whether an exported task carries an annotation (full "JSON": any; "JSON-MIN": a choice)."""
    annotations = task.get("annotations")
    return bool(annotations) if "annotations" in task else CHOICES_NAME in task


_LINK_FIELDS = {"path": str, "sha256": str, "size": int, "mtime_ns": int, "token": str}


def _linked_file_problem(linked: Any, held_tokens: set[str]) -> tuple[str, str | None]:
    """The task's token, and why an answer given on it cannot be taken as an answer about the item (None if it
    can): its linked file is gone or is not the file the task was made with (other bytes, size or modification
    time: a file replaced and put back may have been shown in between), or an answer on it was held before."""
    if not isinstance(linked, dict) or any(not isinstance(linked.get(key), kind) or isinstance(linked.get(key), bool)
                                           for key, kind in _LINK_FIELDS.items()):
        raise _TaskProblem(f"its {LINKED_FILE_KEY} is {_brief(linked)}, not the record the queue wrote")
    token, path = linked["token"], Path(linked["path"])
    if not re.fullmatch(r"[0-9a-f]{1,64}", token):
        raise _TaskProblem(f"its {LINKED_FILE_KEY} token is {_brief(token)}, not one the queue wrote")
    if token in held_tokens:
        return token, (f"an answer on this task was held before: the image file it links ({path}) changed after "
                       "the task was made, so every answer on it may be about other content than the project holds")
    try:
        data, status = read_file(path)
    except OSError as error:
        return token, (f"the image file its task links ({path}) cannot be read now ({error.strerror}), so what the "
                       "person saw cannot be told to be the item the project holds")
    if ((status.st_size, status.st_mtime_ns) != (linked["size"], linked["mtime_ns"])
            or hashlib.sha256(data).hexdigest() != linked["sha256"]):
        return token, (f"the image file its task links ({path}) changed after the task was made (its bytes or its "
                       "modification time differ), so the person may have seen other content than the project holds")
    return token, None


def _brief(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a value from a file (no deep recursion, no huge output)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a very large number"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _task_id(task: Any) -> str:
    label_studio_id = task.get("id") if isinstance(task, dict) else None
    if isinstance(label_studio_id, int) and not isinstance(label_studio_id, bool):
        return f" (Label Studio task {label_studio_id})"
    return ""


def _field(places: list[tuple[Any, str]], what: str) -> Any:
    """The one value found at ``(holder, key)`` places; places that disagree are a problem."""
    found = [holder[key] for holder, key in places
             if isinstance(holder, dict) and key in holder and holder[key] is not None]
    for value in found[1:]:
        if type(value) is not type(found[0]) or value != found[0]:
            raise _TaskProblem(f"'meta' and 'data' disagree about {what}: {_brief(found[0])} vs {_brief(value)}")
    return found[0] if found else None


def _text_field(places: list[tuple[Any, str]], what: str) -> str | None:
    value = _field(places, what)
    if value is not None and not isinstance(value, str):
        raise _TaskProblem(f"its {what} is {_brief(value)}, not text")
    return value


def _question_id(raw: Any, key: str) -> int:
    """A question (or label) id under ``key``: a JSON integer, or ASCII digits (Label Studio may write
    data values as text)."""
    what = "a question id" if key == QUESTION_KEY else "a label id"
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, str) and re.fullmatch(r"[0-9]{1,19}", raw.strip()):  # not '²', not '١'
        number = int(raw.strip())
    else:
        raise _TaskProblem(f"{key} is {_brief(raw)}, not {what}")
    if not 1 <= number <= _MAX_QUESTION_ID:
        raise _TaskProblem(f"{key} is {_brief(number)}, not {what} of any project")
    return number


def _one_choice(chosen: Any) -> str:
    if isinstance(chosen, str):
        chosen = [chosen]
    if not isinstance(chosen, list) or len(chosen) != 1 or not isinstance(chosen[0], str):
        raise _TaskProblem(f"expected exactly one chosen class, got {_brief(chosen)}")
    return chosen[0]


def _check_against_store(votes: dict[int, _Votes], store: ProjectStore, path: Path) -> None:
    """Every task names a question of this project about the very item (uri and content) it showed."""
    project = project_identity(store)
    classes = set(store.classes())

    def refuse(task: _TaskIdentity, problem: str, hint: str) -> BadInputError:
        return BadInputError(
            f"task {task.index}{task.label_studio_id}: {problem}; nothing was imported (an import is all or nothing)",
            path=path, hint=hint,
        )

    for question_id, vote in votes.items():
        for task in vote.tasks:
            if task.project is None or task.content_hash is None or task.uri is None:
                missing = [name for name, value in (("project", task.project), ("content hash", task.content_hash),
                                                    ("uri", task.uri)) if value is None]
                raise refuse(task, f"carries no {' and no '.join(missing)} of its item, so its answer cannot be "
                             "checked against the question",
                             "label the tasks file `metalabel run --oracle labelstudio` writes now (it carries them) "
                             "and export that")
            if task.project != project:
                raise refuse(task, f"comes from project {task.project!r}, not this one ({project!r})",
                             "import each export into the project that exported its tasks")
            try:
                question = store.question(question_id)
            except BadInputError:
                raise refuse(task, f"question {question_id} is not one of this project's questions",
                             "import each export into the project that exported its tasks") from None
            if task.uri != question.uri:
                raise refuse(task, f"shows item {task.uri!r}, but question {question_id} is about item "
                             f"{question.uri!r}",
                             "the task was changed or belongs elsewhere; export the questions again")
            shown = store.item(question.item_id)
            if shown is None or task.content_hash != shown.content_hash:
                raise refuse(task, f"shows item {task.uri!r} with other content than the project holds "
                             "(its content hash differs)", "the item changed since the task was exported; export "
                             "the open questions again and label those")
        _check_classes(vote, classes, path)


def _check_classes(vote: _Votes, classes: set[str], path: Path) -> None:
    for class_name, _, index in vote.labels:
        if class_name not in classes:
            raise BadInputError(
                f"task {index}: the class {class_name!r} is not one of the project's classes; nothing was imported "
                "(an import is all or nothing)", path=path, cls=class_name,
                hint=f"classes: {', '.join(sorted(classes))}; label with the exported labeling config",
            )


def _record_votes(store: ProjectStore, question_id: int, vote: _Votes, tally: _Tally,
                  recorded_at: _RecordedAnswerTimes, people: People, *, changed: bool) -> None:
    """One question's answers, inside the import's transaction. An answer from the person whose answer is on
    record is her change; one older than her answer recorded from an earlier file (a kept webhook replayed
    after an export with her later annotation), or as old and not an update (``changed``), is left out: her
    newer answer stands."""
    question = store.question(question_id)
    decision = vote.decision()
    tally.saw(question_id, vote)
    if decision is None:
        if not vote.skipped_by:
            return  # nobody annotated it yet: the question stays open
        if question.answered_at is not None:
            tally.already_closed.append(question_id)
        else:
            store.dismiss(question_id, oracle=vote.skipped_by[0])
            tally.dismissed += 1
        return
    label, annotator, others = decision
    if question.answer is None:  # open, or dismissed before: this is its answer
        write = store.answer(question_id, label, oracle=annotator)
        tally.answered += 1
        tally.disagreements += write.disagreement_id is not None
    else:  # every person's answer: hers to change, another's to dispute (not only the first of each class)
        others = [(chosen, who) for chosen, who, _ in vote.labels]
    changes = 0
    for other, who in others:
        if not _not_older(vote.answered_at[who], recorded_at.get(question_id, who), equal=changed):
            continue
        if people.same(who, question.oracle):  # the person whose answer is on record changed it
            write = store.correct(question_id, other, oracle=who)
            changes += write.applied
            tally.disagreements += write.disagreement_id is not None
        else:
            tally.disagreements += store.add_human_disagreement(question_id, other, oracle=who) is not None
    tally.changed += changes
    if question.answer is not None and not changes:
        tally.already_closed.append(question_id)


def _annotation_time(annotation: Mapping[str, Any]) -> datetime | None:
    """When the annotation was last changed (``updated_at``, else ``created_at``), as an aware time; None where
    Label Studio wrote neither (then the order of the files and tasks decides)."""
    for key in ("updated_at", "created_at"):
        value = annotation.get(key)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return None


def _not_older(when: datetime | None, than: datetime | None, *, equal: bool = True) -> bool:
    """Whether an answer given at ``when`` replaces one given at ``than``: where either time is unknown, the
    later one read does. ``equal``: whether the same time counts (it does in one file, and for an update event;
    otherwise, across files, it is the answer already recorded)."""
    if when is None or than is None:
        return True
    return when >= than if equal else when > than


class _RecordedAnswerTimes:
    """The newest time of each person's answer to a question that earlier imports recorded (imports before
    those times were kept recorded none), under her one name; read from the store a question at a time, as
    an import meets it, so an import's cost does not grow with the answers on record."""

    def __init__(self, store: ProjectStore, people: People) -> None:
        self._store, self._people = store, people
        self._newest: dict[int, dict[str, datetime]] = {}

    def get(self, question_id: int, who: str) -> datetime | None:
        if question_id not in self._newest:
            newest: dict[str, datetime] = {}
            for recorded in self._store.answer_times([question_id]):
                when, name = datetime.fromisoformat(recorded.answered_at), self._people.canonical(recorded.person)
                if name not in newest or when > newest[name]:
                    newest[name] = when
            self._newest[question_id] = newest
        return self._newest[question_id].get(who)


def _check_reviews(reviews: dict[int, _Votes], store: ProjectStore, path: Path) -> dict[int, Label]:
    """Every reviewed task shows a label of this project on the very item (uri and content) it names;
    returns the label each showed, by id."""
    project = project_identity(store)
    classes = set(store.classes())
    shown: dict[int, Label] = {}

    def refuse(task: _TaskIdentity, problem: str, hint: str) -> BadInputError:
        return BadInputError(
            f"task {task.index}{task.label_studio_id}: {problem}; nothing was imported (an import is all or nothing)",
            path=path, hint=hint,
        )

    for label_id, vote in reviews.items():
        for task in vote.tasks:
            if task.project != project:
                raise refuse(task, f"comes from project {task.project!r}, not this one ({project!r})",
                             "import a reviewed export into the project that exported it")
            item = store.item(uri=task.uri) if task.uri is not None else None
            if item is None:
                raise refuse(task, f"shows item {task.uri!r}, which is not one of this project's items",
                             "import a reviewed export into the project that exported it")
            if task.content_hash != item.content_hash:
                raise refuse(task, f"shows item {task.uri!r} with other content than the project holds "
                             "(its content hash differs)", "the item changed since the export; export again")
            label = next((old for old in store.label_history(item.id) if old.id == label_id), None)
            if label is None and store.undone_label(label_id):
                raise refuse(task, f"label {label_id} was taken back after the export: the round that wrote it failed "
                             "before it asked anything, and was undone when the next run started, which redid it",
                             "export again and review the new tasks (the redone round's labels)")
            if label is None:
                raise refuse(task, f"label {label_id} is not a label of item {task.uri!r}",
                             "the task was changed or belongs elsewhere; export again")
            shown[label_id] = label
            waiting = store.open_question(item.id)
            if waiting is not None and waiting.strategy == REFERENCE and _review_vote(label, vote).decision():
                raise refuse(task, f"item {task.uri!r} waits on reference question {waiting.id}, whose answer "
                             "must come from a person who did not see the model's label",
                             "import the answers to the question tasks first, or remove this review")
        _check_classes(vote, classes, path)
    return shown


def _review_vote(shown: Label, vote: _Votes) -> _Votes:
    """The reviewers' votes: the export carried a person's label as an annotation, so that class may be
    no reviewer's act and is left out."""
    if not LabelSource(shown.source).trusted:
        return vote
    return _Votes(vote.tasks, [entry for entry in vote.labels if entry[0] != shown.class_name],
                  answered_at=vote.answered_at)


def _record_review(store: ProjectStore, shown: Label, vote: _Votes, tally: _Tally,
                   recorded_at: _RecordedAnswerTimes, people: People, *, changed: bool) -> None:
    """One reviewed export label, inside the import's transaction (see ``import_annotations``). A reviewer's
    later verdict on the label that is her answer is her change, as ``_record_votes`` has it."""
    vote = _review_vote(shown, vote)
    decision = vote.decision()
    if decision is None:
        return  # not reviewed, skipped, or a person's label left as it was exported
    label, annotator, others = decision
    active = next((candidate for candidate in store.label_history(shown.item_id) if candidate.active), None)
    if active is not None and active.source == LabelSource.HUMAN and active.question_id is not None:
        tally.saw(active.question_id, vote)
        for other, who, _ in vote.labels:  # every reviewer, not only the first of each class
            if not _not_older(vote.answered_at[who], recorded_at.get(active.question_id, who), equal=changed):
                continue
            if people.same(who, active.oracle):  # the reviewer changed their own verdict
                tally.changed += store.correct(active.question_id, other, oracle=who).applied
            else:  # a person's answer is never written over: another class is a disagreement between people
                tally.disagreements += store.add_human_disagreement(active.question_id, other, oracle=who) is not None
        return
    waiting = store.open_question(shown.item_id)
    question_id = waiting.id if waiting is not None else store.ask(shown.item_id, strategy=AUDIT)
    tally.saw(question_id, vote)
    store.answer(question_id, label, oracle=annotator)
    if label == shown.class_name:
        tally.confirmed += 1
    else:
        tally.corrected += 1
    for other, who in others:
        tally.disagreements += store.add_human_disagreement(question_id, other, oracle=who) is not None


def _question_identity(query: Query) -> QuestionIdentity:
    if query.content_hash is None or query.project is None:
        raise BadInputError(
            f"question {query.question_id} carries no content hash or project, so its answer could not "
            "be checked on import",
            hint="put questions with put_questions(store, queue, queries), which adds them",
        )
    return QuestionIdentity(query.question_id, query.item_id, query.uri, query.content_hash, query.project)


def _data_kind(query: Query) -> str:
    """``text`` for text, ``table`` for a feature row, ``image`` for everything else."""
    if isinstance(query.item, str):
        return "text"
    if isinstance(query.item, np.ndarray) and query.item.ndim == 1:
        return "table"
    return "image"

