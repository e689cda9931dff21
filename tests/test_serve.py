"""The labeling page in a real headless browser (Chromium through Playwright) over a real SQLite project.

`metalabel serve` and `metalabel run --oracle web` run as separate processes, as a person
would start them; the browser answers with the keyboard only, and what the page calls saved
is read back from project.db with a plain connection.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import answered
from metalabel.cli import main
from metalabel.errors import BadInputError
from metalabel.store import ProjectStore
from metalabel.store.lock import WriterLock

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # a busy shared machine: a commit may take a while to show

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
CLASSES = ["circle", "square", "triangle"]  # the project's classes, in the order of the number keys


def shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """A coloured shape on a light background, 48x48: easy to label by eye."""
    image = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(215, 250, 3)))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(20, 160, 3))
    x, y, r = (int(v) for v in (rng.integers(20, 28), rng.integers(20, 28), rng.integers(11, 16)))
    if kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif kind == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=colour)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    return image


@pytest.fixture
def pool(tmp_path) -> Path:
    """Two seed images per class and twelve unlabeled ones (four of each shape)."""
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (tmp_path / "pool" / kind).mkdir(parents=True)
        for i in range(2):
            shape(kind, rng).save(tmp_path / "pool" / kind / f"{i}.png")
    (tmp_path / "pool" / "unlabeled").mkdir()
    for i in range(12):
        shape(CLASSES[i % 3], rng).save(tmp_path / "pool" / "unlabeled" / f"{i:02d}-{CLASSES[i % 3]}.png")
    return tmp_path / "pool"


def init(pool: Path, folder: Path, capsys) -> Path:
    assert main(["init", str(folder), "--pool", str(pool), "--quiet"]) == 0
    capsys.readouterr()
    return folder


def item_id(store: ProjectStore, name: str) -> int:
    return next(item.id for item in store.items() if item.uri.endswith(f"unlabeled/{name}.png"))


@pytest.fixture
def project(pool, tmp_path, capsys) -> Path:
    """Four open questions (two from the reference sample, two chosen by margin) and three model labels to review."""
    folder = init(pool, tmp_path / "p", capsys)
    with ProjectStore.open(folder) as store:
        store.add_label(item_id(store, "01-square"), "square", source="model", calibrated_confidence=0.71)
        for name, why in (("00-circle", "reference"), ("01-square", "margin"), ("02-triangle", "margin"),
                          ("03-circle", "reference")):
            store.ask(item_id(store, name), strategy=why)
        for name, label, confidence in (("04-square", "square", 0.64), ("05-triangle", "circle", 0.58),
                                        ("06-circle", "circle", 0.93)):
            store.add_label(item_id(store, name), label, source="model", calibrated_confidence=confidence)
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    yield context.new_page()
    context.close()


class Served:
    """A `metalabel` process that serves the page, and the URL it printed."""

    def __init__(self, *args: str) -> None:
        # Ctrl-C as in a terminal: a child inherits an ignored or blocked SIGINT from the test process (a run
        # started in the background of a non-interactive shell ignores it), so it puts Python's own handler back
        command = ("import runpy, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
                   "signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "sys.argv = ['metalabel', *sys.argv[1:]]; runpy.run_module('metalabel.cli', run_name='__main__')")
        self.process = subprocess.Popen([sys.executable, "-c", command, *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = self.stderr = ""
        for line in self.process.stdout:  # the URL comes once the server listens
            found = re.search(r"http://\S+token=\S+", line)
            if found:
                self.url = found.group(0)
                break
        assert self.url, self.process.communicate(timeout=30)

    def stop(self) -> None:
        """Kill the process (if it still runs) and keep what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.kill()
        self.stderr += self.process.communicate(timeout=30)[1] or ""


@pytest.fixture
def served():
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def rows(folder: Path, sql: str, *parameters) -> list[tuple]:
    with sqlite3.connect(folder / "project.db") as db:
        return db.execute(sql, parameters).fetchall()


def question_rows(folder: Path) -> dict[str, tuple]:
    """Item file name -> (strategy, answered class or None, oracle), for every question."""
    found = rows(folder, "SELECT items.uri, q.strategy, c.name, q.oracle FROM questions q JOIN items ON "
                         "items.id = q.item_id LEFT JOIN classes c ON c.id = q.answer_class_id")
    return {Path(uri).stem: (strategy, label, oracle) for uri, strategy, label, oracle in found}


def active_label(folder: Path, name: str) -> tuple[str, str]:
    [(label, source)] = rows(folder, "SELECT c.name, l.source FROM labels l JOIN items i ON i.id = l.item_id "
                                     "JOIN classes c ON c.id = l.class_id WHERE l.superseded_by IS NULL "
                                     "AND i.uri LIKE ?", f"%/{name}.png")
    return label, source


def press(page, key: str, progress: str) -> None:
    """One key, then wait until the page says the store holds it (the progress moves only after the commit)."""
    page.keyboard.press(key)
    expect(page.locator("#progress")).to_contain_text(progress)


def test_a_keyboard_only_session_lands_in_the_store_with_the_annotator(project, served, page, tmp_path):
    server = served("serve", str(project), "--annotator", "alice", "--quiet")
    page.goto(server.url)
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")
    expect(page.locator("#item img")).to_be_visible()
    # a reference question: why it is asked, and no suggestion (its answer is evidence only unprompted)
    expect(page.locator("#why")).to_contain_text("reference sample")
    expect(page.locator("#suggestion")).to_have_text("hidden for the reference sample")
    expect(page.locator("#current-box")).to_be_hidden()
    expect(page.locator("#classes button")).to_have_text(["1circle", "2square", "3triangle"])
    press(page, "1", "1 / 4 answered")

    # chosen by margin, with the model's label as the suggestion
    expect(page.locator("#why")).to_contain_text("active learning (margin)")
    expect(page.locator("#suggestion")).to_contain_text("square (71% confident)")
    expect(page.locator("#current")).to_have_text("square (model)")
    page.wait_for_function("() => { const img = document.querySelector('#item img'); "
                           "return img && img.complete && img.naturalWidth > 0; }")
    natural = page.locator("#item img").evaluate("img => [img.naturalWidth, img.clientWidth]")
    assert natural[0] == 48 and natural[1] >= 300  # shown large
    page.screenshot(path=tmp_path / "serve.png")
    if not SCREENSHOT.exists() or os.environ.get("METALABEL_UPDATE_SCREENSHOT"):
        page.screenshot(path=SCREENSHOT)
    picture = np.asarray(Image.open(tmp_path / "serve.png").convert("L"))
    assert picture.std() > 10  # something was drawn

    press(page, "s", "2 / 4 answered")  # skipped: dismissed in the store
    assert question_rows(project)["01-square"] == ("margin", None, "web:alice")
    press(page, "u", "1 / 4 answered")  # undo brings it back ...
    expect(page.locator("#status")).to_contain_text("earlier answer was skip")
    press(page, "Enter", "2 / 4 answered")  # ... and Enter accepts the suggestion
    press(page, "3", "3 / 4 answered")
    press(page, "u", "2 / 4 answered")  # undo an answer, and give another
    press(page, "2", "3 / 4 answered")

    questions = question_rows(project)
    assert questions["00-circle"] == ("reference", "circle", "web:alice")
    assert questions["01-square"] == ("margin", "square", "web:alice")  # the skip, answered after the undo
    assert questions["03-circle"] == ("reference", None, None)  # still open
    assert active_label(project, "00-circle") == ("circle", "human")
    assert active_label(project, "01-square") == ("square", "human")  # over the model's label
    # the changed answer: the item's label is the new class, the first one stays in its history, both
    # answers to the one question, with who gave them; the question shows the latest
    assert active_label(project, "02-triangle") == ("square", "human")
    assert questions["02-triangle"] == ("margin", "square", "web:alice")
    history = rows(project, "SELECT c.name, l.query_strategy, l.question_id IS NOT NULL, l.oracle FROM labels l "
                            "JOIN items i ON i.id = l.item_id JOIN classes c ON c.id = l.class_id "
                            "WHERE i.uri LIKE '%/02-triangle.png' ORDER BY l.id")
    assert history == [("triangle", "margin", 1, "web:alice"), ("square", "margin", 1, "web:alice")]
    assert len(set(rows(project, "SELECT l.question_id FROM labels l JOIN items i ON i.id = l.item_id "
                                 "WHERE i.uri LIKE '%/02-triangle.png'"))) == 1


def test_killing_the_server_mid_session_loses_no_committed_answer(project, served, page):
    server = served("serve", str(project), "--annotator", "alice", "--quiet")
    page.goto(server.url)
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")
    press(page, "1", "1 / 4 answered")
    press(page, "2", "2 / 4 answered")
    server.process.send_signal(signal.SIGKILL)
    server.process.communicate(timeout=30)
    assert answered(project) == {1: "circle", 2: "square"}
    assert {q[2] for q in question_rows(project).values() if q[1]} == {"web:alice"}
    assert rows(project, "PRAGMA integrity_check") == [("ok",)]
    page.keyboard.press("3")  # the page notices the server is gone, and says what is safe
    expect(page.locator("#status")).to_contain_text("not saved")

    again = served("serve", str(project), "--annotator", "alice", "--quiet")
    page.goto(again.url)
    expect(page.locator("#progress")).to_contain_text("0 / 2 answered")  # the two still open, nothing asked twice
    expect(page.locator("#item img")).to_have_attribute("alt", re.compile(r"02-triangle\.png$"))


def test_an_answer_to_a_question_answered_elsewhere_meanwhile_is_kept_and_the_page_says_so(project, served, page):
    """The ML backend (no writer lock) records another person's answer to the question on the page first."""
    server = served("serve", str(project), "--annotator", "alice", "--quiet")
    page.goto(server.url)
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")
    with ProjectStore.open(project) as other:
        other.answer(other.open_questions()[0].id, "square", oracle="labelstudio:bob")
    press(page, "1", "1 / 4 answered")
    expect(page.locator("#status")).to_contain_text("answered meanwhile by labelstudio:bob ('square')")
    expect(page.locator("#status")).to_contain_text("recorded as a disagreement")
    assert active_label(project, "00-circle") == ("square", "human")
    assert rows(project, "SELECT c.name, d.oracle FROM disagreements d JOIN classes c ON c.id = d.class_id") == [
        ("circle", "web:alice")]


def get(url: str, data: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_request_without_the_token_is_refused(project, served):
    server = served("serve", str(project), "--annotator", "alice", "--quiet")
    base, token = server.url.split("/?token=")
    assert len(token) >= 24
    for url in (base + "/", base + "/api/state", base + "/?token=wrong", base + "/api/image/questions/1"):
        status, body = get(url)
        assert status == 403 and "token" in body["error"], url
    status, body = get(base + "/api/answer", json.dumps({"task": 1, "label": "circle"}).encode())
    assert status == 403
    assert answered(project) == {}  # the refused answer wrote nothing
    status, body = get(f"{base}/api/state?token={token}")
    assert status == 200 and body["task"]["id"] == 1 and body["classes"] == CLASSES
    status, body = get(f"{base}/api/answer?token={token}", json.dumps({"task": 1, "label": "hexagon"}).encode())
    assert status == 400 and "'hexagon' is not one of the project's classes" in body["error"]


def test_other_hosts_are_refused_unless_asked_for_and_then_warned_of(project, served, capsys):
    assert main(["serve", str(project), "--host", "0.0.0.0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 would open the labeling page to other machines" in err and "--allow-remote" in err
    assert answered(project) == {}
    server = served("serve", str(project), "--host", "0.0.0.0", "--allow-remote", "--quiet")
    assert server.url.startswith("http://0.0.0.0:")
    server.stop()
    assert "warning: the labeling page listens on 0.0.0.0, not only on this machine" in server.stderr


def test_review_confirms_and_corrects_the_model_labels(project, served, page):
    server = served("serve", str(project), "--annotator", "alice", "--quiet")
    page.goto(server.url + "&mode=review")
    expect(page.locator("#progress")).to_contain_text("0 / 3 reviewed")  # 01-square waits on a question: not here
    expect(page.locator("#why")).to_contain_text("confirm it or correct it")
    expect(page.locator("#suggestion")).to_contain_text("circle (58% confident)")  # the least confident first
    press(page, "3", "1 / 3 reviewed")  # corrected: a triangle
    expect(page.locator("#suggestion")).to_contain_text("square (64% confident)")
    press(page, "Enter", "2 / 3 reviewed")  # confirmed
    press(page, "s", "3 / 3 reviewed")  # left as it is
    expect(page.locator("#empty")).to_contain_text("Nothing left to review")
    assert "06-circle" not in question_rows(project) and active_label(project, "06-circle") == ("circle", "model")
    press(page, "u", "2 / 3 reviewed")  # undo the leave, and correct it after all ...
    press(page, "3", "3 / 3 reviewed")
    press(page, "u", "2 / 3 reviewed")  # ... then undo that, and confirm the model's class
    press(page, "Enter", "3 / 3 reviewed")

    questions = question_rows(project)
    assert questions["05-triangle"] == ("audit", "triangle", "web:alice")
    assert questions["04-square"] == ("audit", "square", "web:alice")
    assert questions["06-circle"] == ("audit", "circle", "web:alice")  # the question shows the latest verdict
    assert active_label(project, "05-triangle") == ("triangle", "human")
    assert active_label(project, "04-square") == ("square", "human")
    assert active_label(project, "06-circle") == ("circle", "human")  # the changed verdict is the label
    history = rows(project, "SELECT c.name, l.source, l.query_strategy, l.oracle FROM labels l "
                            "JOIN items i ON i.id = l.item_id JOIN classes c ON c.id = l.class_id "
                            "WHERE i.uri LIKE '%/06-circle.png' ORDER BY l.id")
    assert history == [("circle", "model", None, None), ("triangle", "human", "audit", "web:alice"),
                       ("circle", "human", "audit", "web:alice")]  # every verdict kept, with who gave it
    # the model's labels stay on record, superseded by the person's
    assert rows(project, "SELECT count(*) FROM labels WHERE source = 'model' AND superseded_by IS NOT NULL") == [(3,)]

    page.click("#mode-questions")  # the questions are still there, untouched by the review
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")


def test_a_run_waits_for_the_answers_from_the_page(pool, tmp_path, served, page, capsys):
    folder = init(pool, tmp_path / "run", capsys)
    run = served("run", str(folder), "--oracle", "web", "--annotator", "bob", "--encoder", "pixels",
                 "--budget", "4", "--per-round", "4", "--max-rounds", "2", "--no-generate", "--no-feedback",
                 "--quiet")
    page.goto(run.url)
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")
    for done in range(1, 5):
        press(page, "Enter" if page.locator("#accept").is_visible() else "1", f"{done} / 4 answered")
    out, err = run.process.communicate(timeout=300)
    assert run.process.returncode == 0, err[-3000:]
    questions = question_rows(folder)
    assert len(questions) == 4 and {oracle for _, _, oracle in questions.values()} == {"web:bob"}
    assert all(label is not None for _, label, _ in questions.values())


@pytest.mark.parametrize("how", ["stop button", "Ctrl-C"])
def test_stopping_a_run_keeps_every_answer_given(pool, tmp_path, served, page, capsys, how):
    folder = init(pool, tmp_path / "run", capsys)
    run = served("run", str(folder), "--oracle", "web", "--annotator", "bob", "--encoder", "pixels",
                 "--budget", "4", "--per-round", "4", "--max-rounds", "2", "--no-generate", "--no-feedback",
                 "--quiet")
    page.goto(run.url)
    expect(page.locator("#progress")).to_contain_text("0 / 4 answered")
    press(page, "1", "1 / 4 answered")
    press(page, "s", "2 / 4 answered")
    if how == "stop button":
        page.click("#stop")
        expect(page.locator("#empty")).to_contain_text("Labeling stopped")
    else:
        run.process.send_signal(signal.SIGINT)
    out, err = run.process.communicate(timeout=120)
    assert run.process.returncode == 0, err[-3000:]
    assert "stopped by the oracle" in out
    questions = question_rows(folder)
    given = [(label, oracle) for _, label, oracle in questions.values() if oracle is not None]
    assert sorted(given, key=str) == [("circle", "web:bob"), (None, "web:bob")]
    assert sum(oracle is None for _, _, oracle in questions.values()) == 2  # the other two stay open


def test_without_the_serve_extra_the_command_says_what_to_install(project, capsys, monkeypatch):
    for module in [name for name in sys.modules if name.startswith(("starlette", "uvicorn", "metalabel.serve."))]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "starlette", None)  # `import starlette` now fails, as on a core install
    assert main(["serve", str(project), "--quiet"]) == 2
    assert "pip install 'metalabel[serve]'" in capsys.readouterr().err


def test_text_is_shown_as_text_never_as_markup(tmp_path, served, page, capsys):
    hostile = 'Great <b>phone</b>! <img src=x onerror="window.pwned=1"><script>window.pwned=2</script>\nSecond line.'
    rows = [("battery lasts two days", "positive"), ("screen cracked in a week", "negative"),
            ("love the camera", "positive"), ("stopped charging", "negative"), (hostile, "")]
    with (tmp_path / "reviews.csv").open("w", newline="") as file:
        csv.writer(file).writerows([("text", "label"), *rows])
    folder = init(tmp_path / "reviews.csv", tmp_path / "text", capsys)
    with ProjectStore.open(folder) as store:
        [unlabeled] = [item.id for item in store.items() if item.id not in {label.item_id for label in
                                                                             store.active_labels()}]
        store.ask(unlabeled, strategy="margin")
    server = served("serve", str(folder), "--annotator", "carol", "--quiet")
    page.goto(server.url)
    expect(page.locator("#item .text")).to_have_text(hostile)
    assert page.evaluate("window.pwned") is None and page.locator("#item img").count() == 0
    expect(page.locator("#classes button")).to_have_text(["1negative", "2positive"])
    press(page, "2", "1 / 1 answered")
    assert [oracle for _, _, oracle in question_rows(folder).values()] == ["web:carol"]


def test_serve_is_refused_while_another_process_writes_to_the_project(project, capsys):
    run = WriterLock(project)
    run.acquire(command="metalabel run (in this test)")
    try:
        assert main(["serve", str(project), "--quiet"]) == 2
    finally:
        run.release()
    assert "metalabel run (in this test)" in capsys.readouterr().err


def test_a_runs_round_takes_its_answers_once_the_last_is_given(tmp_path):
    from metalabel.serve.desk import Desk, Mode, Task
    from metalabel.store import ItemRecord, content_hash

    store = ProjectStore.create(tmp_path / "p", name="p")
    store.set_classes(["cat", "dog"])
    items = store.add_items(ItemRecord(uri, content_hash(uri), "image") for uri in ("a.png", "b.png"))
    assert [store.ask(item, strategy=why) for item, why in zip(items, ("margin", "reference"), strict=True)] == [1, 2]
    desk = Desk(["cat", "dog"], annotator="dana", run=True)
    desk.set_questions([Task(1, 1, "a.png", None, "cat", 0.7, "margin"),
                        Task(2, 2, "b.png", None, None, None, "reference")])
    seen = []

    def person() -> None:  # the page: each action waits until the store's side has taken the one before
        desk.submit(Mode.QUESTIONS, "answer", task_id=1, label="dog").result(timeout=30)
        seen.append(desk.state(Mode.QUESTIONS)["can_undo"])
        desk.submit(Mode.QUESTIONS, "answer", task_id=2, label=None).result(timeout=30)

    clicking = threading.Thread(target=person)
    clicking.start()
    # first answers are only yielded (the caller commits them; this one does not), the store only read
    with store:
        given = list(desk.answers(store, put={1, 2}, until_done=True))
    clicking.join(timeout=30)
    assert [(answer.question_id, answer.label, answer.oracle) for answer in given] == [
        (1, "dog", "web:dana"), (2, None, "web:dana")]
    assert seen == [True]  # an answer can be undone while its round waits for more
    state = desk.state(Mode.QUESTIONS)
    assert state["task"] is None and not state["can_undo"] and state["progress"]["done"] == 2
    with pytest.raises(BadInputError, match="no answer to undo"):
        desk.submit(Mode.QUESTIONS, "undo")
    with pytest.raises(BadInputError, match="not the one on the page"):
        desk.submit(Mode.QUESTIONS, "answer", task_id=2, label="cat")


def test_a_reference_question_is_shown_without_a_guess_whoever_built_the_query(project):
    from metalabel.label.oracle import Query
    from metalabel.serve.desk import question_tasks

    with ProjectStore.open(project) as store:
        [reference, margin] = [q for q in store.open_questions() if q.uri.endswith(("00-circle.png", "01-square.png"))]
        tasks = question_tasks(store, [Query(q.id, q.item_id, q.uri, None, CLASSES, "circle", 0.9, current_label=now)
                                       for q, now in ((reference, "circle (model)"), (margin, "square (model)"))])
    assert [(t.why, t.suggestion, t.confidence, t.current) for t in tasks] == [
        ("reference", None, None, None), ("margin", "circle", 0.9, "square (model)")]
