"""A Label Studio ML backend (``metalabel ml-backend``): Label Studio shows metalabel's labels as predictions,
and the annotations made there land in the project store as people's answers.

The endpoints Label Studio calls (the label-studio-ml-backend protocol):

- ``GET /health`` (and ``/``): ``{"status": "UP", "model_class": ..., "model_version": ...}``.
- ``POST /setup`` ``{"project": "<id>.<created>", "schema": "<View>...</View>", ...}``: answers
  ``{"model_version": ...}``; a labeling config without metalabel's single-choice ``label`` control over
  the project's classes is refused (400), naming what is wrong.
- ``POST /predict`` ``{"tasks": [...], "label_config": ..., "project": ..., "params": ...}``: answers
  ``{"results": [...]}``, one prediction per task, in order: ``{"result": [choices], "score": ...,
  "model_version": ...}``, the result built by ``metalabel.label.labelstudio`` like every task metalabel writes.
- ``POST /webhook`` ``{"action": "ANNOTATION_CREATED" | "ANNOTATION_UPDATED", "annotation": {...},
  "task": {...}, "project": {...}}``: the annotation is recorded; other actions are acknowledged and ignored.

What is predicted: a task names its item by the metalabel keys in its data (tasks written by
``metalabel run --oracle labelstudio`` and ``metalabel export --format labelstudio`` carry them); the
prediction is the item's accepted model label with its calibrated confidence, or, for a question
about an unlabeled item, the class the run suggested when it asked (as the queue's task file holds
it). A task of another project, or whose item changed since it was written (its content hash),
gets no prediction, and neither does an item that waits on a reference question: a reference
answer is evidence only if the person did not see the model's guess.

How an annotation is recorded: the task with that one annotation is kept as a Label Studio "JSON"
export under ``PROJECT/labelstudio/webhook/`` and recorded by ``LabelStudioQueue.import_annotations``,
the path ``metalabel import-answers`` takes: every check (project, item and content hash, class), one
transaction, the annotator as ``labelstudio:<user id>``. An annotation its annotator changed later
(``ANNOTATION_UPDATED``) is their changed answer: the new class becomes the label and the first answer
stays in the history (``ProjectStore.correct``); a change to another person's answer is recorded as a
disagreement, never written over it. While another process holds the project's writer lock (a run),
an annotation is refused (409) and its file kept, and the backend's console says so (Label Studio shows its
annotators no webhook failure). Kept annotations are recorded, oldest first and each as the event it was (an
update as a changed answer), before the next annotation the backend records, or by ``metalabel import-answers
PROJECT --kept``; ``metalabel status`` lists those not recorded yet (``unrecorded_annotations``).

Every request needs HTTP basic auth (user ``metalabel``, the password printed at start or set in
``METALABEL_ML_BACKEND_PASSWORD``): enter both in Label Studio's model connection settings. Label
Studio (1.23) sends those credentials on ``/health``, ``/setup`` and ``/predict`` only: the webhook it
makes for the backend (``<url>/webhook``, all actions) carries no header, so its annotations are
refused (401) until the header ``webhook_auth_header`` gives is added to that webhook (Settings >
Webhooks, or ``PATCH /api/webhooks/<id>`` with ``{"headers": {"Authorization": ...}}``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import shlex
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metalabel.errors import BadInputError, MetalabelError, MissingDependencyError, ProjectLockedError, StoreError
from metalabel.files import write_atomically
from metalabel.label.ask import awaiting_reference
from metalabel.label.labelstudio import (
    CHOICES_NAME,
    HASH_KEY,
    KINDS,
    PROJECT_KEY,
    QUESTION_KEY,
    URI_KEY,
    Suggestion,
    prediction_json,  # the one prediction builder, shared with the task files metalabel writes
)
from metalabel.label.oracle import (
    TASK_FILE_PREFIX,
    WEBHOOK_FOLDER,
    LabelStudioQueue,
    kept_annotation_name,
    project_identity,
    record_kept_annotations,
)
from metalabel.serve.app import Listener
from metalabel.store import LabelSource, ProjectStore
from metalabel.store.lock import WriterLock

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as error:  # a core install: say how to get the backend
    raise MissingDependencyError(
        "the Label Studio ML backend needs starlette and uvicorn, which are not installed: "
        "pip install 'metalabel[serve]'") from error

USER = "metalabel"
PASSWORD_ENV = "METALABEL_ML_BACKEND_PASSWORD"
RECORDED_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
log = logging.getLogger(__name__)
"""Says on the backend's console which annotation was not recorded: Label Studio shows no webhook failure."""


def webhook_auth_header(password: str) -> str:
    """The ``Authorization`` header value Label Studio's webhook to the backend needs (see the module's notes)."""
    return "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


def model_version(store: ProjectStore) -> str:
    """The version Label Studio shows beside the predictions: the round whose labels are active, the last finished
    one or a later one that ended early after it accepted (its certificate on record), never one undone."""
    judged = [round_.id for round_ in store.rounds() if round_.may_hold_active_labels]
    return f"metalabel-round-{judged[-1] if judged else 0}"


def predictions(store: ProjectStore, tasks: Any, *,
                suggested: Mapping[int, tuple[str, float | None]] | None = None) -> list[dict[str, Any]]:
    """One prediction per task, in order (an empty result where metalabel has none to give).

    A task's item with an accepted model label gets that label; a question's item with no label
    gets what the run suggested when it asked (``suggested``: question id -> class and score, see
    ``RunSuggestions``), under the version of the round that asked.
    """
    if not isinstance(tasks, list):
        raise BadInputError("'tasks' must be a list of Label Studio tasks")
    # one moment of the project: a task's label and its open question must come from the same commit
    with store.reading():
        suggested = suggested or {}
        version = model_version(store)
        project = project_identity(store)
        classes = set(store.classes())
        out = []
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                raise BadInputError("a task has no 'data' object", hint="send Label Studio tasks as they are")
            uri = data.get(URI_KEY)
            # each task's own rows, not the project's: Label Studio asks as each task is opened
            item = store.item(uri=uri) if isinstance(uri, str) and data.get(PROJECT_KEY) == project else None
            kind = next((kind for kind in KINDS if kind in data), None)
            waiting = None if item is None else store.open_question(item.id)
            prediction = None
            if item is not None and kind is not None and item.content_hash == data.get(HASH_KEY) \
                    and not awaiting_reference([waiting] if waiting else []):
                label = next((label for label in store.label_history(item.id) if label.active), None)
                asked = data.get(QUESTION_KEY)
                question = waiting if waiting is not None and waiting.id == asked else None
                chosen, score = suggested.get(asked, (None, None)) if isinstance(asked, int) else (None, None)
                if label is not None and label.source == LabelSource.MODEL:
                    confidence = label.calibrated_confidence
                    prediction = Suggestion(label.class_name, version,
                                            label.raw_confidence if confidence is None else confidence)
                elif label is None and question is not None and chosen in classes:
                    assert chosen is not None
                    asked_in = version if question.round_id is None else f"metalabel-round-{question.round_id}"
                    prediction = Suggestion(chosen, asked_in, score)
            out.append({"result": [], "model_version": version} if prediction is None or kind is None
                       else prediction_json(prediction, kind))
        return out


class RunSuggestions:
    """The class (and score) a run suggested for each question it put to the Label Studio queue, read from the
    queue's task files in ``PROJECT/labelstudio`` (the store keeps no per-item prediction). Each file is
    parsed again only when it changes: one with embedded images can be large."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder) / "labelstudio"
        self._parsed: dict[Path, tuple[tuple[int, int], dict[int, tuple[str, float | None]]]] = {}

    def read(self) -> dict[int, tuple[str, float | None]]:
        found: dict[int, tuple[str, float | None]] = {}
        for path in sorted(self.folder.glob(f"{TASK_FILE_PREFIX}*.json")):
            try:
                stat = path.stat()
            except OSError:
                continue
            version = (stat.st_mtime_ns, stat.st_size)
            parsed = self._parsed.get(path)
            if parsed is None or parsed[0] != version:
                parsed = self._parsed[path] = (version, _suggestions_in(path))
            found.update(parsed[1])
        return found


def _suggestions_in(path: Path) -> dict[int, tuple[str, float | None]]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the queue names a task file it cannot read the next time it runs
    found: dict[int, tuple[str, float | None]] = {}
    for task in tasks if isinstance(tasks, list) else []:
        try:
            question_id = task["meta"][QUESTION_KEY]
            prediction = task["predictions"][0]
            [chosen] = prediction["result"][0]["value"]["choices"]
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # a task without a suggestion (a reference question has none)
        score = prediction.get("score")
        if isinstance(question_id, int) and isinstance(chosen, str):
            found[question_id] = (chosen, float(score) if isinstance(score, int | float) else None)
    return found


def check_labeling_config(store: ProjectStore, schema: Any) -> None:
    """The labeling config must hold metalabel's single-choice control over the project's classes."""
    hint = "use the label_config.xml that `metalabel run --oracle labelstudio` (or the labelstudio export) wrote"
    if not isinstance(schema, str) or not schema.strip():
        raise BadInputError("the setup request carries no labeling config ('schema')", hint=hint)
    try:
        root = ElementTree.fromstring(schema)
    except ElementTree.ParseError as error:
        raise BadInputError(f"the labeling config is not XML ({error})", hint=hint) from None
    controls = [node for node in root.iter("Choices") if node.get("name") == CHOICES_NAME]
    if len(controls) != 1 or controls[0].get("toName") not in KINDS:
        raise BadInputError(f"the labeling config needs one <Choices name=\"{CHOICES_NAME}\"> over the item "
                            f"(toName one of {', '.join(KINDS)})", hint=hint)
    offered = [choice.get("value") for choice in controls[0].iter("Choice")]
    unknown = sorted(str(value) for value in offered if value not in store.classes())
    if unknown:
        raise BadInputError(f"the labeling config offers classes the project does not have: {', '.join(unknown)}",
                            hint=f"the project's classes: {', '.join(store.classes())}; {hint}")


def record_annotation(store: ProjectStore, payload: Any, *, told: set[Path] | None = None) -> dict[str, Any]:
    """Keep the webhook's annotation as a one-task export and import it; returns what was recorded.
    ``told``: kept annotations whose refusal the console has shown (each is said once, not at every webhook)."""
    annotation, task = payload.get("annotation"), payload.get("task")
    if not isinstance(annotation, dict) or not isinstance(task, dict):
        raise BadInputError(f"a {payload.get('action')} webhook carries 'annotation' and 'task' objects",
                            hint="send Label Studio's webhook payload as it is")
    changed = payload.get("action") == "ANNOTATION_UPDATED"
    # the name orders the kept files and says an update, so a later import records it as one (record_kept_annotations)
    path = store.folder / WEBHOOK_FOLDER / kept_annotation_name(_safe_id(task.get("id")),
                                                                _safe_id(annotation.get("id")), changed=changed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps([{**task, "annotations": [annotation]}], ensure_ascii=False))
    later = (f"the annotation is kept in {path} and recorded with the next one the backend can record, or "
             f"with `metalabel import-answers {shlex.quote(str(store.folder))} --kept`")
    lock = WriterLock(store.folder)
    try:
        lock.acquire(command="metalabel ml-backend (recording an annotation)")
    except ProjectLockedError as error:
        raise ProjectLockedError(f"{error}; {later}") from None
    try:
        # what a run made the backend keep comes first, in order: an update after the answer it changes
        kept = record_kept_annotations(store, but=path)
        for refused, why in kept.refused:
            if told is None or refused not in told:
                log.warning("metalabel ml-backend: a kept annotation is refused (%s); it stays kept and `metalabel "
                            "status` lists it: fix the project or the file, then `metalabel import-answers %s "
                            "--kept`", why, shlex.quote(str(store.folder)))
                if told is not None:
                    told.add(refused)
        if kept.stopped is not None:  # this one must not go in before those
            raise StoreError(f"{kept.stopped[1]}; {len(kept.left)} annotations kept earlier wait to be recorded "
                             f"first")
        recorded = LabelStudioQueue(store.folder / "labelstudio").import_annotations(path, store=store, changed=changed)
        for held in [held for _, earlier in kept.recorded for held in earlier.held] + recorded.held:
            log.warning("metalabel ml-backend: the answer to question %d (%s) is held, not recorded: %s; it is kept "
                        "in %s and the question stays open", held.question_id, held.uri, held.reason, held.kept)
    except StoreError as error:  # the store could not take it now (busy, disk): the file can be recorded later
        raise StoreError(f"{error}; {later}") from error
    finally:
        lock.release()
    return {"status": "ok", "answered": recorded.answered, "dismissed": recorded.dismissed,
            "already_answered": len(recorded.already_closed), "disagreements": recorded.disagreements,
            "changed": recorded.changed, "confirmed": recorded.confirmed, "corrected": recorded.corrected,
            "held": len(recorded.held), "kept_in": str(path)}


def _safe_id(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-unknown"


class _BasicAuth:
    """ASGI middleware: every request needs the backend's user and password (HTTP basic auth)."""

    def __init__(self, app: ASGIApp, password: str) -> None:
        self.app = app
        self.expected = f"{USER}:{password}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Request(scope).headers.get("authorization", "")
            given = b""
            if header.lower().startswith("basic "):
                try:
                    given = base64.b64decode(header[6:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    given = b""
            if not secrets.compare_digest(given, self.expected):
                response = JSONResponse({"status": "error", "error": "this ML backend needs basic auth: the user "
                                         "and password `metalabel ml-backend` printed (for Label Studio's "
                                         "webhook: the Authorization header it printed)"}, status_code=401,
                                        headers={"WWW-Authenticate": 'Basic realm="metalabel"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_backend_app(folder: str | Path, *, password: str) -> ASGIApp:
    """The ML backend over the project in ``folder``; each request opens the store afresh (any thread may serve)."""
    folder = Path(folder)
    suggestions = RunSuggestions(folder)
    told: set[Path] = set()  # kept annotations whose refusal the console has shown

    async def body(request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError:
            raise BadInputError("the request body is not JSON") from None
        if not isinstance(payload, dict):
            raise BadInputError("the request body must be a JSON object")
        return payload

    async def health(request: Request) -> Response:
        with ProjectStore.open(folder) as store:
            return JSONResponse({"status": "UP", "model_class": "metalabel", "model_version": model_version(store)})

    async def setup(request: Request) -> Response:
        payload = await body(request)
        with ProjectStore.open(folder) as store:
            check_labeling_config(store, payload.get("schema"))
            return JSONResponse({"model_version": model_version(store)})

    async def predict(request: Request) -> Response:
        payload = await body(request)
        with ProjectStore.open(folder) as store:
            if payload.get("label_config") is not None:
                check_labeling_config(store, payload["label_config"])
            return JSONResponse({"results": predictions(store, payload.get("tasks"), suggested=suggestions.read())})

    async def webhook(request: Request) -> Response:
        payload = await body(request)
        action = payload.get("action")
        if action not in RECORDED_ACTIONS:
            if isinstance(action, str) and action.startswith("ANNOTATION") and action.endswith("DELETED"):
                # the annotator took an answer back; the project keeps it (an answer is changed, never withdrawn)
                log.warning("metalabel ml-backend: Label Studio deleted an annotation (%s); the answer it gave stays "
                            "in the project: to change it, update the annotation instead", action)
            return JSONResponse({"status": "ignored", "reason": f"metalabel records {' and '.join(RECORDED_ACTIONS)}"
                                                                f", not {action!r}"})
        try:
            with ProjectStore.open(folder) as store:
                return JSONResponse(record_annotation(store, payload, told=told), status_code=201)
        except MetalabelError as error:
            log.warning("metalabel ml-backend: an annotation was not recorded (%s): %s", action, error)
            raise

    async def refused(request: Request, error: Exception) -> Response:
        status = 409 if isinstance(error, ProjectLockedError) else 400 if isinstance(error, BadInputError) else 500
        return JSONResponse({"status": "error", "error": str(error)}, status_code=status)

    routes = [Route("/", health), Route("/health", health), Route("/setup", setup, methods=["POST"]),
              Route("/predict", predict, methods=["POST"]), Route("/webhook", webhook, methods=["POST"])]
    return _BasicAuth(Starlette(routes=routes, exception_handlers={MetalabelError: refused}), password)


class BackendServer:
    """The ML backend on ``host:port`` (bound at once); ``serve`` runs it in this thread until Ctrl-C."""

    def __init__(self, folder: str | Path, *, password: str, host: str = "127.0.0.1", port: int = 0,
                 allow_remote: bool = False) -> None:
        with ProjectStore.open(folder):  # a missing or broken project is named now, not at the first request
            pass
        self._listener = Listener(create_backend_app(folder, password=password), host=host, port=port,
                                  allow_remote=allow_remote)

    @property
    def url(self) -> str:
        return self._listener.base_url

    def serve(self) -> None:
        self._listener.serve()
