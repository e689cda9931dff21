"""The Label Studio format in one place: the labeling config file and the choices task.

Both the question queue (``LabelStudioQueue``, which reads the answers back) and the
``labelstudio`` export write tasks with :func:`choices_task` and the config with :func:`write_config`,
so a config and a task always agree on the control's and the object's names.

An item is shown as one object: ``text``, ``image`` (a URL, a ``/data/local-files/?d=`` link or a
data URI) or ``table`` (a row as ``{column: value}``, which Label Studio's ``Table`` tag shows as
key-value pairs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from metalabel.errors import BadInputError
from metalabel.files import write_atomically

CONFIG_FILE = "label_config.xml"
"""The labeling config's file name, beside the tasks."""
CHOICES_NAME = "label"
"""The ``name`` of the Choices control in the labeling config, i.e. ``from_name`` in results."""
QUESTION_KEY = "metalabel_question_id"
"""Where a question's task keeps its question id (in ``meta`` and in ``data``, since Label Studio
exports carry ``data`` in every format and ``meta`` only in some)."""
URI_KEY = "metalabel_uri"
HASH_KEY = "metalabel_content_hash"
PROJECT_KEY = "metalabel_project"
LABEL_KEY = "metalabel_label_id"
"""Where an exported (review) task keeps the id of the label it shows, so a reviewed export can be imported."""
ASKED_BECAUSE_KEY = "metalabel_asked_because"
"""Why a question was asked: ``reference`` (the random sample), ``label-issue`` (an audit of a seed label)
or the query strategy's name."""
CURRENT_LABEL_KEY = "metalabel_current_label"
"""The label the item has now (class and source), or why none is shown."""
LINKED_FILE_KEY = "metalabel_linked_file"
"""A question task that links a pool file (``/data/local-files/?d=``) keeps, in ``data``, what that file was
when the task was made and checked: ``path``, ``sha256``, ``size``, ``mtime_ns``, and ``token``, the task's own
random name. An answer is recorded only if the file is still that file when it is imported."""

KINDS = ("text", "image", "table")
"""How an item is shown: the Label Studio object tag's name (``Text``, ``Image``, ``Table``)."""


@dataclass(frozen=True)
class QuestionIdentity:
    """What an answer is checked against on import: the question, and the item and project it is about."""

    question_id: int
    item_id: int
    uri: str
    content_hash: str
    project: str


@dataclass(frozen=True)
class ReviewIdentity:
    """What a reviewed export task is checked against on import: the label shown, its item and project."""

    label_id: int
    uri: str
    content_hash: str
    project: str


@dataclass(frozen=True)
class Suggestion:
    """A class proposed by a model (or a source), shown as a pre-annotation with its score."""

    class_name: str
    model_version: str
    score: float | None = None


def choices_task(kind: str, value: str | Mapping[str, Any], *, data: Mapping[str, Any] | None = None,
                 question: QuestionIdentity | None = None, review: ReviewIdentity | None = None,
                 answer: str | None = None, suggestions: Sequence[Suggestion] = ()) -> dict[str, Any]:
    """One choices task: the item (``value``, under ``kind``, one of ``KINDS``) and ``data`` beside it.

    ``question`` (a question task) or ``review`` (an exported label to review) puts the ids the
    importer reads back in ``meta`` and, prefixed, in ``data``; ``answer`` is a person's class (an
    annotation), ``suggestions`` are predictions.
    """
    _check_kind(kind)
    if question is not None and review is not None:
        raise BadInputError("a task is either a question or a label to review, not both")
    built: dict[str, Any] = {"data": {kind: value, **(data or {})}}
    if question is not None:
        built["data"].update({QUESTION_KEY: question.question_id, URI_KEY: question.uri,
                              HASH_KEY: question.content_hash, PROJECT_KEY: question.project})
        built["meta"] = {QUESTION_KEY: question.question_id, "item_id": question.item_id, "uri": question.uri,
                         "content_hash": question.content_hash, "project": question.project}
    if review is not None:
        built["data"].update({LABEL_KEY: review.label_id, URI_KEY: review.uri, HASH_KEY: review.content_hash,
                              PROJECT_KEY: review.project})
        built["meta"] = {LABEL_KEY: review.label_id, "uri": review.uri, "content_hash": review.content_hash,
                         "project": review.project}
    if answer is not None:
        built["annotations"] = [{"result": [_choice(answer, kind)]}]
    if suggestions:
        built["predictions"] = [prediction_json(suggestion, kind) for suggestion in suggestions]
    return built


def labeling_config(class_names: Sequence[str], *, kind: str, context: Sequence[tuple[str, str]] = ()) -> str:
    """A Label Studio labeling config: one ``text``, ``image`` or ``table`` object and a single-choice class list.

    ``context`` is ``(data key, caption)`` pairs shown above the item (every task must carry those keys).
    """
    _check_kind(kind)
    shown = f'<{_TAGS[kind]} name="{kind}" value="${kind}"/>'
    lines = "".join(f"  <Header value={quoteattr(caption)} size=\"6\"/>\n  <Text name={quoteattr(key)} "
                    f"value={quoteattr('$' + key)}/>\n" for key, caption in context)
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f"{lines}"
        f"  {shown}\n"
        f'  <Choices name="{CHOICES_NAME}" toName="{kind}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def write_config(folder: Path, class_names: Sequence[str], *, kind: str,
                 context: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the labeling config as ``folder/label_config.xml``; returns its path."""
    return write_atomically(folder / CONFIG_FILE, labeling_config(class_names, kind=kind, context=context))


_TAGS = {"text": "Text", "image": "Image", "table": "Table"}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise BadInputError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")


def _choice(class_name: str, kind: str) -> dict[str, Any]:
    return {"from_name": CHOICES_NAME, "to_name": kind, "type": "choices", "value": {"choices": [class_name]}}


def prediction_json(suggestion: Suggestion, kind: str) -> dict[str, Any]:
    """A Label Studio prediction (pre-annotation) of the suggested class, with ``model_version`` and ``score``
    at its root: the shape of a task's ``predictions`` entry and of an ML backend's ``/predict`` result."""
    prediction: dict[str, Any] = {"model_version": suggestion.model_version,
                                  "result": [_choice(suggestion.class_name, kind)]}
    if suggestion.score is not None:
        prediction["score"] = float(suggestion.score)
    return prediction
