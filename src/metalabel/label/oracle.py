"""Oracles: whoever answers the questions active learning asks.

An oracle takes ``Query`` records (the item, the model's suggestion, the classes)
and returns ``Answer`` records (a class name, or ``None`` for "can't tell").
``record_answers`` writes answers into the project store, one transaction each,
so an answer given is an answer kept.

- ``SimulatedOracle``: answers from gold labels, with optional seeded noise
  (benchmarks and tests).
- ``TerminalOracle``: asks a person at the keyboard; ``q`` (or Ctrl-C, or the end
  of input) raises ``OracleStopped`` carrying the answers given so far.
- ``LabelStudioQueue``: asynchronous. ``answer`` exports the questions as a
  Label Studio task file and returns no answers; the questions stay open in the
  store. Once they are labeled in Label Studio, ``import_annotations`` reads
  Label Studio's JSON export back into answers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable
from urllib.parse import quote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.style import Style
from rich.text import Text

from metalabel.errors import BadInputError, DataNotFoundError, MetalabelError, UnknownLabelError
from metalabel.store import ProjectStore


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
    def answer(self, questions: Sequence[Query]) -> list[Answer]: ...


class OracleStopped(MetalabelError):
    """The person asked to stop. ``answers`` holds what they answered before; commit those and stop."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        super().__init__(f"labeling stopped by the oracle after {len(answers)} answer(s)")


@dataclass(frozen=True)
class RecordedAnswers:
    answered: int
    dismissed: int
    already_closed: list[int]
    """Question ids that were closed before (e.g. an export imported twice): left as they were."""


def record_answers(store: ProjectStore, answers: Sequence[Answer]) -> RecordedAnswers:
    """Write answers to the store: a class becomes a human label, ``None`` dismisses the question.

    Each answer is its own transaction, so an error on one keeps the ones before it.
    """
    answered = dismissed = 0
    already_closed: list[int] = []
    for answer in answers:
        if store.question(answer.question_id).answered_at is not None:
            already_closed.append(answer.question_id)
        elif answer.label is None:
            store.dismiss(answer.question_id, oracle=answer.oracle)
            dismissed += 1
        else:
            store.answer(answer.question_id, answer.label, oracle=answer.oracle)
            answered += 1
    return RecordedAnswers(answered=answered, dismissed=dismissed, already_closed=already_closed)


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

    Stopping (``q``, Ctrl-C or the end of input) raises ``OracleStopped`` with the
    answers given so far, so the caller can commit them and end cleanly.
    """

    def __init__(
        self,
        *,
        input: Callable[[str], str] = input,
        console: Console | None = None,
        name: str = "terminal",
        preview_width: int = 28,
        max_text_chars: int = 1200,
    ) -> None:
        self._input = input
        self.console = console or Console(highlight=False)
        self.name = name
        self.preview_width = preview_width
        self.max_text_chars = max_text_chars

    def answer(self, questions: Sequence[Query]) -> list[Answer]:
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
                break
            if choice is _Command.STOP:
                raise OracleStopped(answers)
            answers.append(Answer(query.question_id, None if choice is _Command.SKIP else choice, self.name))
        return answers

    def _show(self, query: Query, position: int, total: int, numbered: bool) -> None:
        console = self.console
        console.rule(Text(f"question {position} of {total}", style="bold"))
        console.print(Text(query.uri, style="cyan"))
        item = query.item
        if isinstance(item, str):
            console.print(Text(_shorten(item, self.max_text_chars)))
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
            line = Text("model suggests: ").append(query.suggestion, style="bold green")
            if query.suggestion_confidence is not None:
                line.append(f" ({query.suggestion_confidence:.0%})")
            console.print(line.append("  [Enter accepts]", style="dim"))

        choices = Text()
        for number, class_name in enumerate(query.class_names, start=1):
            if numbered:
                choices.append(f"{number}", style="bold").append(" ")
            choices.append(class_name).append("   ")
        console.print(choices)
        console.print(Text(_HELP, style="dim"))


_HELP = "Type a class number or name, Enter for the suggestion, s to skip, q to stop."


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
    pixels = _as_rgb(image)
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


def _as_rgb(image: np.ndarray) -> np.ndarray:
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

QUESTION_KEY = "metalabel_question_id"
"""Where an exported task keeps its question id (in ``meta`` and in ``data``, since Label Studio
exports carry ``data`` in every format and ``meta`` only in some)."""
CHOICES_NAME = "label"
"""The ``name`` of the Choices control in the labeling config, i.e. ``from_name`` in results."""

_URL_SCHEMES = {"http", "https", "s3", "gs", "azure-blob", "data"}


class LabelStudioQueue:
    """A file queue for Label Studio: export questions as tasks, import the annotations.

    Asynchronous as an oracle: ``answer(questions)`` writes a task file and returns no
    answers, so the questions stay open in the project store (a later round re-asks
    them under the same question ids rather than asking twice). The workflow is

    1. ``answer(questions)`` / ``export_tasks(questions)`` writes
       ``tasks-q<first>-q<last>.json`` and ``labeling-config.xml`` into ``folder``;
    2. create a Label Studio project with that labeling config and import the tasks:
       the model's suggestion shows as a pre-annotation with its score;
    3. label, export with the "JSON" (or "JSON-MIN") format, and pass the file to
       ``import_annotations``; then ``record_answers(store, answers)``.

    Images are referenced by URL when ``uri`` is one; local files under
    ``local_files_root`` (Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``) as
    ``/data/local-files/?d=...`` links; anything else is embedded as a base64 data URI,
    which suits small images (28x28 is about 1 kB) but bloats big ones: serve those
    as local files.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        model_version: str = "metalabel",
        local_files_root: str | Path | None = None,
        name: str = "labelstudio",
    ) -> None:
        self.folder = Path(folder)
        self.model_version = model_version
        self.local_files_root = None if local_files_root is None else Path(local_files_root).resolve()
        self.name = name

    @property
    def config_path(self) -> Path:
        return self.folder / "labeling-config.xml"

    def answer(self, questions: Sequence[Query]) -> list[Answer]:
        """Export the questions for Label Studio; the answers come later through ``import_annotations``."""
        if questions:
            self.export_tasks(questions)
        return []

    def export_tasks(self, questions: Sequence[Query], *, model_version: str | None = None) -> Path:
        """Write a Label Studio import file of the questions and the labeling config; returns the task file."""
        if not questions:
            raise BadInputError("there are no questions to export")
        class_names = questions[0].class_names
        for query in questions:
            if query.class_names != class_names:
                raise BadInputError(
                    f"question {query.question_id} has other classes than question {questions[0].question_id}",
                    hint="export one project's questions at a time",
                )
        kinds = {_data_kind(query) for query in questions}
        if len(kinds) > 1:
            raise BadInputError("the questions mix images and text", hint="export one kind of item at a time")
        kind = kinds.pop()
        version = model_version or self.model_version
        tasks = [self._task(query, kind, version) for query in questions]

        self.folder.mkdir(parents=True, exist_ok=True)
        ids = sorted(query.question_id for query in questions)
        tasks_path = self.folder / f"tasks-q{ids[0]}-q{ids[-1]}.json"
        tasks_path.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
        self.config_path.write_text(labeling_config(class_names, kind=kind), encoding="utf-8")
        return tasks_path

    def _task(self, query: Query, kind: str, model_version: str) -> dict[str, Any]:
        content = self._image_value(query) if kind == "image" else _text_value(query)
        task: dict[str, Any] = {
            "data": {kind: content, QUESTION_KEY: query.question_id, "metalabel_uri": query.uri},
            "meta": {QUESTION_KEY: query.question_id, "item_id": query.item_id, "uri": query.uri},
        }
        if query.suggestion is not None:
            prediction: dict[str, Any] = {
                "model_version": model_version,
                "result": [
                    {
                        "from_name": CHOICES_NAME,
                        "to_name": kind,
                        "type": "choices",
                        "value": {"choices": [query.suggestion]},
                    }
                ],
            }
            if query.suggestion_confidence is not None:
                prediction["score"] = float(query.suggestion_confidence)
            task["predictions"] = [prediction]
        return task

    def _image_value(self, query: Query) -> str:
        if urlparse(query.uri).scheme in _URL_SCHEMES:
            return query.uri
        path = Path(query.uri)
        if path.is_file():
            resolved = path.resolve()
            if self.local_files_root is not None and resolved.is_relative_to(self.local_files_root):
                return "/data/local-files/?d=" + quote(resolved.relative_to(self.local_files_root).as_posix())
            if not isinstance(query.item, np.ndarray):
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                return f"data:{mime};base64,{base64.b64encode(resolved.read_bytes()).decode()}"
        if isinstance(query.item, np.ndarray):
            png = io.BytesIO()
            Image.fromarray(_as_rgb(query.item)).save(png, format="PNG")
            return f"data:image/png;base64,{base64.b64encode(png.getvalue()).decode()}"
        raise DataNotFoundError(
            f"question {query.question_id}: the image is neither a file, a URL nor an array",
            path=query.uri,
            hint="pass the image array as the query's item",
        )

    def import_annotations(self, path: str | Path) -> list[Answer]:
        """Answers from a Label Studio export ("JSON" or "JSON-MIN") of tasks this queue exported.

        A task nobody annotated gives no answer (its question stays open); a task whose
        annotations were all skipped (``was_cancelled``) or submitted without a choice gives
        a ``None`` answer (can't tell). Of several annotations, the latest submitted wins.
        """
        path = Path(path)
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataNotFoundError("does not exist", path=path, hint="check the export's path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadInputError(
                f"is not JSON ({error})", path=path, hint="export from Label Studio in the 'JSON' format"
            ) from None
        if not isinstance(tasks, list):
            raise BadInputError(
                "is not a Label Studio export: expected a list of tasks", path=path, hint="use the 'JSON' export format"
            )
        answers: dict[int, Answer] = {}
        for index, task in enumerate(tasks):
            answer = self._answer_from_task(task, index, path)
            # A task imported twice into Label Studio: a real label beats a skip; otherwise the later task wins.
            if answer is not None and (answer.label is not None or answer.question_id not in answers):
                answers[answer.question_id] = answer
        return list(answers.values())

    def _answer_from_task(self, task: Any, index: int, path: Path) -> Answer | None:
        def malformed(problem: str) -> BadInputError:
            return BadInputError(
                f"task {index}: {problem}", path=path, hint="pass the export file as Label Studio wrote it"
            )

        if not isinstance(task, dict):
            raise malformed("is not a JSON object")
        raw_question_id = next(
            (holder[QUESTION_KEY] for holder in (task.get("meta"), task.get("data"), task)
             if isinstance(holder, dict) and holder.get(QUESTION_KEY) is not None),
            None,
        )
        if raw_question_id is None:
            raise malformed(f"carries no {QUESTION_KEY} in 'meta' or 'data'; was it exported by metalabel?")
        if isinstance(raw_question_id, bool) or not str(raw_question_id).strip().isdigit():
            raise malformed(f"{QUESTION_KEY} is {raw_question_id!r}, not a question id")
        question_id = int(str(raw_question_id).strip())

        if "annotations" in task:  # the full "JSON" export
            annotations = task["annotations"]
            if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
                raise malformed("'annotations' is not a list of objects")
            if not annotations:
                return None
            submitted = [a for a in annotations if not a.get("was_cancelled", False)]
            if not submitted:
                return Answer(question_id, None, self._annotator(annotations[-1].get("completed_by")))
            latest = submitted[-1]
            results = latest.get("result", [])
            if not isinstance(results, list):
                raise malformed("an annotation's 'result' is not a list")
            choices = [
                r for r in results
                if isinstance(r, dict) and r.get("type") == "choices" and r.get("from_name") == CHOICES_NAME
            ]
            oracle = self._annotator(latest.get("completed_by"))
            if not choices:
                return Answer(question_id, None, oracle)
            value = choices[-1].get("value")
            chosen = value.get("choices") if isinstance(value, dict) else None
        elif CHOICES_NAME in task:  # "JSON-MIN": the choice sits under the control's name
            chosen = task[CHOICES_NAME]
            oracle = self._annotator(task.get("annotator"))
        else:
            return None

        if isinstance(chosen, str):
            chosen = [chosen]
        if not isinstance(chosen, list) or len(chosen) != 1 or not isinstance(chosen[0], str):
            raise malformed(f"expected exactly one chosen class, got {chosen!r}")
        return Answer(question_id, chosen[0], oracle)

    def _annotator(self, completed_by: Any) -> str:
        """``labelstudio:<email or user id>``: Label Studio writes either, or a user object."""
        if isinstance(completed_by, dict):
            completed_by = completed_by.get("email") or completed_by.get("id")
        return self.name if completed_by in (None, "") else f"{self.name}:{completed_by}"


def labeling_config(class_names: Sequence[str], *, kind: str) -> str:
    """A Label Studio labeling config: one ``text`` or ``image`` object and a single-choice class list."""
    if kind not in {"text", "image"}:
        raise BadInputError(f"kind must be 'text' or 'image', got {kind!r}")
    shown = '<Text name="text" value="$text"/>' if kind == "text" else '<Image name="image" value="$image"/>'
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f"  {shown}\n"
        f'  <Choices name="{CHOICES_NAME}" toName="{kind}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _data_kind(query: Query) -> str:
    """``text`` for text and feature rows (shown as text), ``image`` for everything else."""
    if isinstance(query.item, str) or (isinstance(query.item, np.ndarray) and query.item.ndim == 1):
        return "text"
    return "image"


def _text_value(query: Query) -> str:
    if isinstance(query.item, str):
        return query.item
    return ", ".join(f"x{i}={value:.4g}" for i, value in enumerate(query.item.tolist()))

