"""One live run of metalabel against a real Label Studio on 127.0.0.1, driven through its REST API.

Not a test (CI has no Label Studio): run it by hand against a Label Studio you started, e.g.

    python3 -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio==1.23.2
    SSRF_PROTECTION_ENABLED=false /tmp/lsvenv/bin/label-studio start --data-dir /tmp/lsdata --internal-host 127.0.0.1 \\
        -p 8089 --no-browser --username ls@example.com --password PW --user-token TOKEN --enable-legacy-api-token
    LABEL_STUDIO_API_KEY=TOKEN .venv/bin/python bench/labelstudio_live.py --ls-url http://127.0.0.1:8089

(``SSRF_PROTECTION_ENABLED=false``: Label Studio refuses to call an ML backend or a webhook on a
loopback address otherwise.) What it does, as a person would:

1. makes an image folder of Fashion-MNIST test images (a few classes) and a seed CSV, and
   ``metalabel init``s a project on it;
2. round 1: ``metalabel run --oracle labelstudio`` writes the questions as tasks; a Label Studio
   project is created with metalabel's labeling config, the tasks are imported (predictions
   pre-filled), a person's answers are posted as annotations through the API (the true class),
   the project is exported as "JSON" and ``metalabel import-answers`` records it;
3. round 2: the next ``run`` writes new questions; ``metalabel ml-backend`` is connected to the
   Label Studio project (``/api/ml``) through a recording proxy, so every request Label Studio
   sends it (``/health``, ``/setup``, ``/predict``, ``/webhook``) is kept as it came; the new tasks'
   predictions are retrieved from the backend, the answers are posted, each ``ANNOTATION_CREATED``
   webhook records one answer in the store; one annotation is then changed (``ANNOTATION_UPDATED``);
4. round 3 runs on every answer.

Writes ``--out`` (markdown: versions, commands, what was sent and received, timings, what failed)
and, beside it, ``labelstudio_live_payloads.json``: the requests Label Studio sent the ML backend and
the backend's answers (image data URIs shortened).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metalabel.data.sources import fashion_mnist
from metalabel.serve.ml_backend import webhook_auth_header

CLASSES = (0, 1, 7, 8)  # T-shirt/top, Trouser, Sneaker, Bag: one of each kind of thing
PER_CLASS = 30
SEEDS_PER_CLASS = 2


@dataclass
class Step:
    name: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    failed: bool = False


@dataclass
class Exchange:
    """One request Label Studio sent the ML backend, and the answer it got."""

    at: float
    method: str
    path: str
    request_headers: dict[str, str]
    request: Any
    status: int
    response: Any


class Journal:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.commands: list[str] = []
        self.started = time.perf_counter()

    def step(self, name: str) -> _Timed:
        return _Timed(self, name)


class _Timed:
    def __init__(self, journal: Journal, name: str) -> None:
        self.journal, self.step = journal, Step(name, 0.0)

    def __enter__(self) -> Step:
        self.t0 = time.perf_counter()
        return self.step

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> bool:
        self.step.seconds = time.perf_counter() - self.t0
        if error is not None:
            self.step.failed = True
            self.step.notes.append(f"FAILED: {type(error).__name__}: {error}")
        self.journal.steps.append(self.step)
        print(f"[{self.step.seconds:6.1f} s] {self.step.name}" + (" FAILED" if self.step.failed else ""), flush=True)
        for note in self.step.notes:
            print(f"          {note}", flush=True)
        return False


# ------------------------------------------------------------------ Label Studio's API


class LabelStudio:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Token {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: HTTP {error.code}: {error.read()[:600]!r}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def version(self) -> dict[str, Any]:
        return self.call("GET", "/api/version")


# ------------------------------------------------------------ the recording proxy


def recording_proxy(target: str, exchanges: list[Exchange], port: int) -> ThreadingHTTPServer:
    """An HTTP proxy on 127.0.0.1:port that forwards to ``target`` and keeps every request and answer."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # the journal says what came
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            request = urllib.request.Request(target + self.path, data=body, method=self.command, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, answer = response.status, response.read()
                    answer_type = response.headers.get("Content-Type", "application/json")
            except urllib.error.HTTPError as error:
                status, answer = error.code, error.read()
                answer_type = error.headers.get("Content-Type", "application/json")
            shown = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in headers.items()
                     if k.lower() not in ("sentry-trace", "baggage")}  # Label Studio's tracing, not the protocol
            exchanges.append(Exchange(time.time(), self.command, self.path, shown, _json_or_text(body), status,
                                      _json_or_text(answer)))
            self.send_response(status)
            self.send_header("Content-Type", answer_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _json_or_text(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


SECRETS = ("access_token", "basic_auth_pass", "token")
"""Keys whose values never leave this script (``/setup`` carries the Label Studio user's API token)."""


def shortened(value: Any) -> Any:
    """The value with data URIs cut short (a 28x28 PNG is about 1 kB of base64 per task) and secrets redacted."""
    if isinstance(value, str) and value.startswith("data:") and len(value) > 60:
        return value[:40] + f"...<{len(value)} chars>"
    if isinstance(value, dict):
        return {k: "<redacted>" if k in SECRETS and v else shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shortened(v) for v in value]
    return value


# ---------------------------------------------------------------------- metalabel


def metalabel(journal: Journal, step: Step, *args: str, env: dict[str, str] | None = None) -> str:
    command = [sys.executable, "-m", "metalabel.cli", *args]
    journal.commands.append("metalabel " + " ".join(args))
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"metalabel {' '.join(args)} exited {done.returncode}: {output[-1500:]}")
    last = output.splitlines()[-1] if output else ""
    step.notes.append(f"`metalabel {' '.join(args)}`" + (f": {last}" if last and "─" not in last else ""))
    return output


def status(journal: Journal, project: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "metalabel.cli", "status", str(project), "--json"]
    journal.commands.append(f"metalabel status {project} --json")
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def make_pool(folder: Path, seed_csv: Path) -> dict[str, str]:
    """Fashion-MNIST test images of CLASSES as a flat image folder, a seed CSV; returns the true class by file."""
    data = fashion_mnist.load(split="test", download_missing=False)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    gold: dict[str, str] = {}
    seeds = []
    for label in CLASSES:
        chosen = rng.choice(np.flatnonzero(data.labels == label), PER_CLASS, replace=False)
        for n, index in enumerate(chosen):
            name = f"fmnist-test-{int(index):05d}.png"
            Image.fromarray(data.items[index]).save(folder / name)
            gold[name] = data.class_names[label]
            if n < SEEDS_PER_CLASS:
                seeds.append((name, data.class_names[label]))
    seed_csv.write_text("uri,label\n" + "".join(f"{name},{label}\n" for name, label in seeds))
    return gold


def file_of(task: dict[str, Any]) -> str:
    return Path(task["data"]["metalabel_uri"]).name


def annotation(choice: str) -> dict[str, Any]:
    return {"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}],
            "was_cancelled": False, "ground_truth": False, "lead_time": 2.5}


# ---------------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ls-url", default="http://127.0.0.1:8089")
    parser.add_argument("--token", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="a Label Studio legacy token (default: $LABEL_STUDIO_API_KEY)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metalabel-ls-live"))
    parser.add_argument("--backend-port", type=int, default=9091)
    parser.add_argument("--proxy-port", type=int, default=9090)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "labelstudio_live.md")
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=12)
    parser.add_argument("--target-precision", type=float, default=0.8,
                        help="low enough for a few dozen answers to certify some model labels to review")
    parser.add_argument("--no-webhook-header", action="store_true",
                        help="leave Label Studio's webhook as it makes it (without credentials)")
    args = parser.parse_args()
    if not args.token:
        parser.error("pass --token or set LABEL_STUDIO_API_KEY")
    if args.workdir.exists():
        parser.error(f"{args.workdir} exists: pass a fresh --workdir")
    ls = LabelStudio(args.ls_url, args.token)
    journal = Journal()
    exchanges: list[Exchange] = []
    facts: dict[str, Any] = {"label_studio": ls.version(), "python": platform.python_version(),
                             "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    project = args.workdir / "fmnist"
    run_args = ["--oracle", "labelstudio", "--encoder", "pixels", "--target-precision", str(args.target_precision),
                "--budget", str(args.budget),
                "--per-round", str(args.per_round), "--max-rounds", "2", "--no-generate", "--quiet"]
    backend = None
    proxy = None
    try:
        with journal.step("make the pool and init the project") as step:
            gold = make_pool(args.workdir / "pool", args.workdir / "seed.csv")
            metalabel(journal, step, "init", str(project), "--pool", str(args.workdir / "pool"),
                      "--labels", str(args.workdir / "seed.csv"), "--quiet")
            step.notes.append(f"{len(gold)} Fashion-MNIST test images, classes {sorted(set(gold.values()))}, "
                              f"{SEEDS_PER_CLASS} seeds per class")

        with journal.step("round 1: metalabel run --oracle labelstudio") as step:
            metalabel(journal, step, "run", str(project), *run_args)
            [tasks_file] = sorted((project / "labelstudio").glob("tasks-q*.json"))
            tasks = json.loads(tasks_file.read_text())
            step.notes.append(f"{tasks_file.name}: {len(tasks)} tasks, "
                              f"{sum(1 for t in tasks if t.get('predictions'))} with a prediction")

        with journal.step("create the Label Studio project with metalabel's labeling config") as step:
            config = (project / "labelstudio" / "label_config.xml").read_text()
            created = ls.call("POST", "/api/projects", {"title": "metalabel live", "label_config": config})
            ls_project = created["id"]
            step.notes.append(f"project {ls_project}; controls parsed by Label Studio: "
                              f"{sorted(created.get('parsed_label_config', {}))}")

        with journal.step("import round 1's tasks (predictions pre-filled)") as step:
            answer = ls.call("POST", f"/api/projects/{ls_project}/import", tasks)
            step.notes.append(f"import answered {shortened({k: answer[k] for k in answer if k != 'file_upload_ids'})}")
            listed = ls.call("GET", f"/api/tasks?project={ls_project}&page_size=100&fields=all")
            listed = listed["tasks"] if isinstance(listed, dict) else listed
            predictions = [p for t in listed for p in ls.call("GET", f"/api/predictions?task={t['id']}")]
            step.notes.append(f"{len(listed)} tasks in Label Studio, {len(predictions)} predictions stored; "
                              f"first: {shortened(predictions[0]) if predictions else None}")
            facts["round1_prediction_stored"] = shortened(predictions[0]) if predictions else None

        with journal.step("a person answers round 1 through the API") as step:
            for task in listed:
                ls.call("POST", f"/api/tasks/{task['id']}/annotations", annotation(gold[file_of(task)]))
            step.notes.append(f"{len(listed)} annotations posted (POST /api/tasks/<id>/annotations)")

        with journal.step("export as JSON and metalabel import-answers") as step:
            exported = ls.call("GET", f"/api/projects/{ls_project}/export?exportType=JSON", raw=True)
            export_path = args.workdir / "export-round1.json"
            export_path.write_bytes(exported)
            first = json.loads(exported)[0]
            facts["export_task_keys"] = sorted(first)
            facts["export_annotation"] = shortened({k: v for k, v in first["annotations"][0].items()})
            metalabel(journal, step, "import-answers", str(project), str(export_path))
            before = status(journal, project)
            step.notes.append(f"status: {before['answered_questions']} answered, {before['open_questions']} open, "
                              f"labels by source {before['labels_by_source']}")

        with journal.step("round 2: metalabel run --oracle labelstudio") as step:
            metalabel(journal, step, "run", str(project), *run_args)
            new_files = sorted(set((project / "labelstudio").glob("tasks-q*.json")) - {tasks_file})
            round2 = [t for path in new_files for t in json.loads(path.read_text())]
            # the ML backend gives these their predictions this time
            for task in round2:
                task.pop("predictions", None)
            step.notes.append(f"{[p.name for p in new_files]}: {len(round2)} tasks (imported without their "
                              "predictions: the ML backend is asked for them)")
            answer = ls.call("POST", f"/api/projects/{ls_project}/import", round2)
            step.notes.append(f"imported: {answer.get('task_count')} tasks")

        with journal.step("connect metalabel ml-backend to the Label Studio project (/api/ml)") as step:
            password = secrets.token_urlsafe(12)
            journal.commands.append(f"METALABEL_ML_BACKEND_PASSWORD=... metalabel ml-backend {project} "
                                    f"--port {args.backend_port}")
            backend = subprocess.Popen(
                [sys.executable, "-m", "metalabel.cli", "ml-backend", str(project), "--port", str(args.backend_port),
                 "--quiet"], env={**os.environ, "METALABEL_ML_BACKEND_PASSWORD": password},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _wait_for(f"http://127.0.0.1:{args.backend_port}/health", password)
            proxy = recording_proxy(f"http://127.0.0.1:{args.backend_port}", exchanges, args.proxy_port)
            connected = ls.call("POST", "/api/ml", {
                "url": f"http://127.0.0.1:{args.proxy_port}", "project": ls_project, "title": "metalabel",
                "auth_method": "BASIC_AUTH", "basic_auth_user": "metalabel", "basic_auth_pass": password,
                "is_interactive": False})
            facts["ml_backend_record"] = {k: connected.get(k) for k in
                                          ("id", "state", "model_version", "auth_method", "error_message")}
            step.notes.append(f"Label Studio's ML backend record: {facts['ml_backend_record']}")
            step.notes.append("Label Studio called: " + ", ".join(f"{e.method} {e.path} -> {e.status}"
                                                                   for e in exchanges))
            hooks = ls.call("GET", f"/api/webhooks?project={ls_project}")
            facts["webhooks"] = [{k: h.get(k) for k in ("id", "url", "send_for_all_actions", "headers")}
                                 for h in hooks]
            step.notes.append(f"webhooks Label Studio made for it: {facts['webhooks']}")
            if not args.no_webhook_header:
                # Label Studio sends the webhook no credentials: add the header `metalabel ml-backend` prints
                for hook in hooks:
                    ls.call("PATCH", f"/api/webhooks/{hook['id']}",
                            {"headers": {"Authorization": webhook_auth_header(password)}})
                step.notes.append("added the Authorization header to the webhook (PATCH /api/webhooks/<id>, "
                                  "as `metalabel ml-backend` says to)")

        with journal.step("Label Studio asks the backend for round 2's predictions") as step:
            seen = len(exchanges)
            answer = ls.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={ls_project}",
                             {"selectedItems": {"all": True, "excluded": []}})
            step.notes.append(f"action answered {answer}")
            step.notes.append("Label Studio called: " + ", ".join(f"{e.method} {e.path} -> {e.status}"
                                                                   for e in exchanges[seen:]))
            listed = ls.call("GET", f"/api/tasks?project={ls_project}&page_size=100&fields=all")
            listed = listed["tasks"] if isinstance(listed, dict) else listed
            open_tasks = [t for t in listed if not t.get("total_annotations")]
            stored = [p for t in open_tasks for p in ls.call("GET", f"/api/predictions?task={t['id']}")]
            step.notes.append(f"{len(stored)} predictions stored on the {len(open_tasks)} unanswered tasks; "
                              f"first: {shortened(stored[0]) if stored else None}")
            facts["round2_prediction_stored"] = shortened(stored[0]) if stored else None

        with journal.step("a person answers round 2; each annotation reaches the backend's webhook") as step:
            seen = len(exchanges)
            made = []
            for task in open_tasks:
                made.append(ls.call("POST", f"/api/tasks/{task['id']}/annotations",
                                    annotation(gold[file_of(task)])))
            time.sleep(2)  # webhooks are sent as each annotation is saved; give the last one a moment
            hooks = [e for e in exchanges[seen:] if e.path.startswith("/webhook")]
            step.notes.append(f"{len(made)} annotations posted; {len(hooks)} webhook requests reached the backend: "
                              + ", ".join(f"{e.request.get('action') if isinstance(e.request, dict) else '?'}"
                                          f" -> {e.status}" for e in hooks))
            after = status(journal, project)
            step.notes.append(f"status: {after['answered_questions']} answered, {after['open_questions']} open")

        with journal.step("the person changes one answer (ANNOTATION_UPDATED)") as step:
            seen = len(exchanges)
            if made:
                task = open_tasks[0]
                other = next(name for name in sorted(set(gold.values())) if name != gold[file_of(task)])
                ls.call("PATCH", f"/api/annotations/{made[0]['id']}", annotation(other))
                time.sleep(2)
                hooks = [e for e in exchanges[seen:] if e.path.startswith("/webhook")]
                step.notes.append(f"annotation {made[0]['id']} changed to {other!r}; webhook: "
                                  + ", ".join(f"{e.request.get('action') if isinstance(e.request, dict) else '?'} "
                                              f"-> {e.status} {shortened(e.response)}" for e in hooks))

        with journal.step("export again and import-answers (the webhook recorded them: nothing twice)") as step:
            exported = ls.call("GET", f"/api/projects/{ls_project}/export?exportType=JSON", raw=True)
            export_path = args.workdir / "export-round2.json"
            export_path.write_bytes(exported)
            metalabel(journal, step, "import-answers", str(project), str(export_path))
            if made:
                history = subprocess.run(
                    [sys.executable, "-c", _HISTORY, str(project), file_of(open_tasks[0])],
                    capture_output=True, text=True, check=True).stdout.strip()
                step.notes.append(f"the changed item's label history (class, source, oracle, active): {history}")

        with journal.step("round 3 on every answer") as step:
            metalabel(journal, step, "run", str(project), *run_args)
            final = status(journal, project)
            facts["round3_status"] = {k: final[k] for k in ("answered_questions", "open_questions",
                                                            "labels_by_source", "open_disagreements", "rounds")}
            step.notes.append(f"status: {facts['round3_status']}")

        with journal.step("review in Label Studio: export the model labels, the backend predicts them") as step:
            review = args.workdir / "review"
            metalabel(journal, step, "export", str(project), "--format", "labelstudio", "--sources", "model",
                      "--out", str(review), "--quiet")
            review_tasks = json.loads((review / "tasks.json").read_text())
            for task in review_tasks:
                task.pop("predictions", None)  # the ML backend is asked for them
            created = ls.call("POST", "/api/projects", {"title": "metalabel review",
                                                        "label_config": (review / "label_config.xml").read_text()})
            review_project = created["id"]
            ls.call("POST", f"/api/projects/{review_project}/import", review_tasks)
            connected = ls.call("POST", "/api/ml", {
                "url": f"http://127.0.0.1:{args.proxy_port}", "project": review_project, "title": "metalabel",
                "auth_method": "BASIC_AUTH", "basic_auth_user": "metalabel", "basic_auth_pass": password})
            for hook in ls.call("GET", f"/api/webhooks?project={review_project}"):
                ls.call("PATCH", f"/api/webhooks/{hook['id']}",
                        {"headers": {"Authorization": webhook_auth_header(password)}})
            seen = len(exchanges)
            ls.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={review_project}",
                    {"selectedItems": {"all": True, "excluded": []}})
            listed = ls.call("GET", f"/api/tasks?project={review_project}&page_size=500&fields=all")
            listed = listed["tasks"] if isinstance(listed, dict) else listed
            stored = [p for t in listed[:3] for p in ls.call("GET", f"/api/predictions?task={t['id']}")]
            step.notes.append(f"{len(review_tasks)} model labels exported and imported; ML backend {connected['id']} "
                              f"state {connected.get('state')}; Label Studio called: "
                              + ", ".join(f"{e.method} {e.path} -> {e.status}" for e in exchanges[seen:]))
            step.notes.append(f"a stored prediction: {shortened(stored[0]) if stored else None}")
            facts["review_prediction_stored"] = shortened(stored[0]) if stored else None

        with journal.step("a reviewer checks model labels in Label Studio (webhooks)") as step:
            seen = len(exchanges)
            verdicts = []
            shown = {task["id"]: _predicted(ls, task) for task in listed}
            # the model labels the backend predicted, wrong ones first (so a correction shows), and one it gave
            # no prediction: its item waits on a reference question, so a review of it must be refused
            predicted_tasks = sorted((t for t in listed if shown[t["id"]]),
                                     key=lambda t: gold[file_of(t)] == shown[t["id"]])
            withheld = [t for t in listed if not shown[t["id"]]]
            for task in predicted_tasks[:5] + withheld[:1]:
                predicted, truth = shown[task["id"]], gold[file_of(task)]
                ls.call("POST", f"/api/tasks/{task['id']}/annotations", annotation(truth))
                verdicts.append(f"{predicted} -> {truth}")
            time.sleep(2)
            hooks = [e for e in exchanges[seen:] if e.path.startswith("/webhook")]
            step.notes.append(f"verdicts {verdicts}; webhooks: " + ", ".join(
                f"{e.request.get('action') if isinstance(e.request, dict) else '?'} -> {e.status} "
                f"{shortened(e.response)}" for e in hooks))
            final = status(journal, project)
            facts["final_status"] = {k: final[k] for k in ("answered_questions", "open_questions",
                                                           "labels_by_source", "open_disagreements", "rounds")}
            step.notes.append(f"status: {facts['final_status']}")
    except Exception as error:  # the journal says what failed; the results are written all the same
        print(f"stopped: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        if proxy is not None:
            proxy.shutdown()
        if backend is not None:
            backend.terminate()
            backend.wait(timeout=20)
    write_results(args.out, journal, facts, exchanges)
    return 1 if any(step.failed for step in journal.steps) else 0


def _predicted(ls: LabelStudio, task: dict[str, Any]) -> str | None:
    stored = ls.call("GET", f"/api/predictions?task={task['id']}")
    results = [p["result"] for p in stored if p.get("result")]
    return results[0][0]["value"]["choices"][0] if results else None


_HISTORY = """
import sys
from metalabel.store import ProjectStore
with ProjectStore.open(sys.argv[1]) as store:
    [item] = [i for i in store.items() if i.uri.endswith(sys.argv[2])]
    print([(l.class_name, l.source, l.oracle, l.active) for l in store.label_history(item.id)])
"""


def _wait_for(url: str, password: str, *, seconds: float = 60.0) -> None:
    auth = base64.b64encode(f"metalabel:{password}".encode()).decode()
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"}),
                                        timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


KEPT_TASKS = 3
"""A /predict request's tasks (and results) kept in the payloads file: each is a whole task, the rest are counted."""


def _first_tasks(body: Any, key: str) -> Any:
    if isinstance(body, dict) and isinstance(body.get(key), list) and len(body[key]) > KEPT_TASKS:
        return {**body, key: body[key][:KEPT_TASKS], f"{key}_left_out": len(body[key]) - KEPT_TASKS}
    return body


def write_results(out: Path, journal: Journal, facts: dict[str, Any], exchanges: list[Exchange]) -> None:
    payloads = out.with_name("labelstudio_live_payloads.json")
    t0 = exchanges[0].at if exchanges else 0.0
    payloads.write_text(json.dumps([shortened({"t": round(e.at - t0, 3), "method": e.method, "path": e.path,
                                               "request_headers": e.request_headers,
                                               "request": _first_tasks(e.request, "tasks"), "status": e.status,
                                               "response": _first_tasks(e.response, "results")})
                                    for e in exchanges], indent=1, ensure_ascii=False) + "\n")
    version = facts.get("label_studio", {})
    lines = [
        "# metalabel against a real Label Studio (REST API, 127.0.0.1)",
        "",
        f"Label Studio {version.get('release', '?')} (`label-studio` from PyPI, its own venv), Python "
        f"{facts.get('python')}, {facts.get('machine')}. Written by `bench/labelstudio_live.py`; the requests "
        f"Label Studio sent `metalabel ml-backend` and its answers are in `{payloads.name}` (through a recording "
        "proxy; image data URIs shortened, the basic-auth header redacted).",
        "",
        "| step | seconds | result |",
        "|---|---:|---|",
    ]
    for step in journal.steps:
        lines.append(f"| {step.name} | {step.seconds:.1f} | {'FAILED' if step.failed else 'ok'} |")
    lines += ["", "## What each step sent and got", ""]
    for step in journal.steps:
        lines.append(f"- **{step.name}** ({step.seconds:.1f} s)")
        lines += [f"  - {_md(note)}" for note in step.notes]
    lines += ["", "## Requests Label Studio sent the ML backend", "", "| t (s) | request | status | answer |",
              "|---:|---|---:|---|"]
    for e in exchanges:
        what = e.request.get("action") if isinstance(e.request, dict) and "action" in e.request else ""
        lines.append(f"| {e.at - (exchanges[0].at):.2f} | {e.method} {e.path} {what} | {e.status} | "
                     f"{_md(json.dumps(shortened(e.response))[:160])} |")
    lines += ["", "## Facts recorded", "", "```json", json.dumps(facts, indent=1, default=str)[:6000], "```", "",
              "## Commands", "", "```"] + journal.commands + ["```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {payloads}")


def _md(text: str) -> str:
    return re.sub(r"\|", "\\|", text.replace("\n", " "))


if __name__ == "__main__":
    sys.exit(main())
