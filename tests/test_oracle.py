"""Oracles: simulated answers, the terminal dialogue, and the Label Studio file round trip."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from metalabel.errors import BadInputError, StoreError, UnknownLabelError
from metalabel.label.oracle import (
    QUESTION_KEY,
    Answer,
    LabelStudioQueue,
    Oracle,
    OracleStopped,
    Query,
    SimulatedOracle,
    TerminalOracle,
    escape_controls,
    put_questions,
    record_answers,
)
from metalabel.store import ItemRecord, ProjectStore

CLASSES = ("cat", "dog", "bird")


def _queries(n: int, *, item=None, suggestion: str | None = "cat") -> list[Query]:
    return [
        Query(
            question_id=100 + i,
            item_id=i,
            uri=f"pool/{i}.txt",
            item=f"text number {i}" if item is None else item,
            class_names=CLASSES,
            suggestion=suggestion,
            suggestion_confidence=0.6 if suggestion else None,
            content_hash=f"h{i}",
            project="pets@2026-01-01T00:00:00.000Z",
        )
        for i in range(n)
    ]


# -------------------------------------------------------------------- simulated


def test_simulated_oracle_without_noise_gives_the_gold_labels():
    queries = _queries(30)
    gold = {q.uri: CLASSES[q.item_id % 3] for q in queries}
    oracle = SimulatedOracle(gold)
    assert isinstance(oracle, Oracle)
    answers = oracle.answer(queries)
    assert [a.label for a in answers] == [gold[q.uri] for q in queries]
    assert [a.question_id for a in answers] == [q.question_id for q in queries]
    assert {a.oracle for a in answers} == {"simulated"}


def test_simulated_noise_rate_is_met_and_the_same_item_always_gets_the_same_answer():
    queries = _queries(4000)
    gold = {q.uri: CLASSES[q.item_id % 3] for q in queries}
    oracle = SimulatedOracle(gold, noise_rate=0.2, seed=7)
    answers = oracle.answer(queries)
    accuracy = np.mean([a.label == gold[q.uri] for a, q in zip(answers, queries)])
    assert accuracy == pytest.approx(0.8, abs=0.02)  # 4000 draws: the standard error is 0.006
    assert all(a.label in CLASSES for a in answers)

    # Order-independent and repeatable: asking in reverse, or again, changes nothing.
    reversed_answers = {a.question_id: a.label for a in oracle.answer(queries[::-1])}
    assert {a.question_id: a.label for a in answers} == reversed_answers
    # Another seed gives another noisy set.
    other = SimulatedOracle(gold, noise_rate=0.2, seed=8).answer(queries)
    assert [a.label for a in other] != [a.label for a in answers]


def test_simulated_oracle_rejects_unknown_items_and_bad_settings():
    with pytest.raises(BadInputError, match="no gold label"):
        SimulatedOracle({}).answer(_queries(1))
    with pytest.raises(UnknownLabelError, match="fish"):
        SimulatedOracle({"pool/0.txt": "fish"}).answer(_queries(1))
    with pytest.raises(BadInputError, match="noise_rate"):
        SimulatedOracle({}, noise_rate=1.5)


def test_a_suggestion_outside_the_classes_is_rejected():
    with pytest.raises(UnknownLabelError, match="suggestion"):
        Query(question_id=1, item_id=1, uri="x", item="t", class_names=CLASSES, suggestion="fish")


# --------------------------------------------------------------------- terminal


def _terminal(replies: list[str], **options) -> tuple[TerminalOracle, io.StringIO]:
    shown = io.StringIO()
    console = Console(file=shown, width=100, force_terminal=True, color_system="truecolor")
    scripted = iter(replies)

    def scripted_input(prompt: str) -> str:
        try:
            return next(scripted)
        except StopIteration:
            raise EOFError from None

    return TerminalOracle(input=scripted_input, console=console, **options), shown


def test_terminal_takes_numbers_names_enter_and_skip():
    oracle, shown = _terminal(["2", "Bird", "", "s"])
    answers = list(oracle.answer(_queries(4)))
    assert [a.label for a in answers] == ["dog", "bird", "cat", None]
    assert [a.question_id for a in answers] == [100, 101, 102, 103]
    assert {a.oracle for a in answers} == {"terminal"}
    text = shown.getvalue()
    assert "text number 0" in text and "pool/3.txt" in text
    assert "model suggests" in text and "60%" in text


def test_terminal_asks_again_after_an_unclear_reply():
    oracle, shown = _terminal(["7", "fish", "", "1"])
    queries = _queries(1, suggestion=None)
    assert [a.label for a in oracle.answer(queries)] == ["cat"]
    text = shown.getvalue()
    assert "not between 1 and 3" in text and "'fish' is not a class" in text and "no suggestion to accept" in text


def test_terminal_quit_stops_with_the_answers_given_so_far():
    oracle, _ = _terminal(["dog", "q"])
    with pytest.raises(OracleStopped) as stopped:
        list(oracle.answer(_queries(3)))
    assert stopped.value.answers == [Answer(100, "dog", "terminal")]


def test_terminal_end_of_input_stops_cleanly_too():
    oracle, _ = _terminal(["3"])
    with pytest.raises(OracleStopped) as stopped:
        list(oracle.answer(_queries(2)))
    assert [a.label for a in stopped.value.answers] == ["bird"]


def test_digit_class_names_are_chosen_by_name_not_by_position():
    digits = [str(d) for d in range(10)]
    oracle, _ = _terminal(["3", "0"])
    queries = [Query(question_id=i, item_id=i, uri=f"d/{i}", item="x", class_names=digits) for i in range(2)]
    assert [a.label for a in oracle.answer(queries)] == ["3", "0"]


def test_terminal_shortens_long_text_and_does_not_read_markup_in_it():
    oracle, shown = _terminal(["1"], max_text_chars=50)
    long_text = "[bold red]not markup[/] " + "word " * 200
    list(oracle.answer([Query(question_id=1, item_id=1, uri="t", item=long_text, class_names=CLASSES)]))
    text = shown.getvalue()
    assert "[bold red]not markup[/]" in text
    assert "more characters" in text and "word " * 100 not in text


def test_terminal_shows_an_image_as_its_path_and_a_half_block_preview():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[7:21, 7:21] = 255  # a white square on black
    oracle, shown = _terminal(["1"])
    list(oracle.answer([Query(question_id=1, item_id=1, uri="images/square.png", item=image, class_names=CLASSES)]))
    text = shown.getvalue()
    assert "images/square.png" in text
    preview_lines = [line for line in text.splitlines() if "▀" in line]
    assert len(preview_lines) == 14  # 28 pixel rows, two per line
    assert all(line.count("▀") == 28 for line in preview_lines)  # 28 columns
    assert "255;255;255" in text and "0;0;0" in text  # both the square and the background are drawn


def test_terminal_previews_an_image_file_when_no_array_is_given(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((60, 90, 3), (200, 30, 30), dtype=np.uint8)).save(path)
    oracle, shown = _terminal(["1"])
    list(oracle.answer([Query(question_id=1, item_id=1, uri=str(path), item=None, class_names=CLASSES)]))
    preview_lines = [line for line in shown.getvalue().splitlines() if "▀" in line]
    assert len(preview_lines) == 9 and preview_lines[0].count("▀") == 28  # aspect ratio kept
    assert "200;30;30" in shown.getvalue()


def test_terminal_hands_over_each_answer_as_soon_as_it_is_typed():
    prompts = []
    oracle, _ = _terminal([])
    oracle._input = lambda prompt: prompts.append(prompt) or "dog"
    answers = oracle.answer(_queries(3))
    assert next(answers) == Answer(100, "dog", "terminal") and len(prompts) == 1  # the 2nd question waits
    assert [a.question_id for a in answers] == [101, 102] and len(prompts) == 3


def test_terminal_shows_escape_codes_in_names_and_text_escaped_never_raw():
    shown = io.StringIO()
    console = Console(file=shown, width=200, force_terminal=False, color_system=None)
    replies = iter(["1"])
    oracle = TerminalOracle(input=lambda prompt: next(replies), console=console)
    evil = Query(
        question_id=1, item_id=1, uri="pool/\x1b[2J\x1b[Hfake.png", class_names=("ok\x1b]0;pwned\x07", "b\x9b31m"),
        item="line one\nclear \x1b[2J osc \x1b]52;c;ZXZpbA==\x07 bell \x07 cr \r del \x7f bidi \u202eexe.txt",
        suggestion="b\x9b31m",
    )
    assert [a.label for a in oracle.answer([evil])] == ["ok\x1b]0;pwned\x07"]  # the answer is the real name
    text = shown.getvalue()
    assert not any(char in text for char in "\x1b\x07\x9b\r\x7f\u202e")
    assert "pool/\\x1b[2J\\x1b[Hfake.png" in text and "ok\\x1b]0;pwned\\x07" in text and "b\\x9b31m" in text
    assert "osc \\x1b]52;c;ZXZpbA==\\x07" in text and "cr \\r del \\x7f bidi \\u202eexe.txt" in text
    assert "line one\nclear" in text  # text keeps its line breaks
    assert escape_controls("tab\there", keep_newlines=True) == "tab\there"
    assert escape_controls("tab\there") == "tab\\there"


# ----------------------------------------------------------------- Label Studio export


def test_label_studio_tasks_carry_the_suggestion_the_config_and_the_items_identity(tmp_path):
    queue = LabelStudioQueue(tmp_path / "queue", model_version="round-2")
    assert list(queue.answer(_queries(5))) == []  # asynchronous: the answers come back through import
    tasks = json.loads((tmp_path / "queue" / "tasks-q100-q104.json").read_text())
    assert len(tasks) == 5
    first = tasks[0]
    assert first["data"]["text"] == "text number 0"
    assert first["meta"][QUESTION_KEY] == 100 and first["meta"]["uri"] == "pool/0.txt"
    assert first["meta"]["content_hash"] == first["data"]["metalabel_content_hash"] == "h0"
    assert first["meta"]["project"] == first["data"]["metalabel_project"] == "pets@2026-01-01T00:00:00.000Z"
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "round-2" and prediction["score"] == pytest.approx(0.6)
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["cat"]}}
    ]
    assert queue.config_path == tmp_path / "queue" / "label_config.xml"  # the export's name too: one format
    config = queue.config_path.read_text()
    assert '<Text name="text" value="$text"/>' in config
    assert '<Choices name="label" toName="text" choice="single"' in config
    assert all(f'<Choice value="{name}"/>' in config for name in CLASSES)


def test_label_studio_embeds_small_image_arrays_and_links_local_files(tmp_path):
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    ids = dict(content_hash="h", project="p")
    in_memory = Query(question_id=1, item_id=1, uri="fashion-mnist:test/1", item=image, class_names=CLASSES, **ids)
    served = tmp_path / "data" / "shoes" / "a b.png"
    served.parent.mkdir(parents=True)
    Image.fromarray(image).save(served)
    on_disk = Query(question_id=2, item_id=2, uri=str(served), item=None, class_names=CLASSES, suggestion="dog", **ids)
    remote = Query(question_id=3, item_id=3, uri="https://example.com/x.jpg", item=None, class_names=CLASSES, **ids)

    queue = LabelStudioQueue(tmp_path / "queue", local_files_root=tmp_path / "data")
    tasks = json.loads(queue.export_tasks([in_memory, on_disk, remote]).read_text())
    embedded = tasks[0]["data"]["image"]
    assert embedded.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(embedded.split(",", 1)[1])))
    assert decoded.size == (28, 28)
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=shoes/a%20b.png"
    assert tasks[1]["predictions"][0]["result"][0]["to_name"] == "image"
    assert "predictions" not in tasks[0]  # no suggestion, no pre-annotation
    assert tasks[2]["data"]["image"] == "https://example.com/x.jpg"
    assert '<Image name="image" value="$image"/>' in queue.config_path.read_text()


def test_label_studio_task_file_is_written_atomically(tmp_path, monkeypatch):
    queue = LabelStudioQueue(tmp_path / "queue")
    tasks_path = queue.export_tasks(_queries(2))
    before = tasks_path.read_bytes()

    def crash(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr("metalabel.files.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        queue.export_tasks(_queries(2, suggestion="dog"))
    assert tasks_path.read_bytes() == before  # the earlier file, whole: not half of the new one
    assert sorted(p.name for p in (tmp_path / "queue").iterdir()) == [queue.config_path.name, tasks_path.name]


def test_exporting_questions_with_other_classes_together_is_refused(tmp_path):
    odd = Query(question_id=9, item_id=9, uri="x", item="t", class_names=("cat", "dog"), content_hash="h",
                project="p")
    with pytest.raises(BadInputError, match="other classes"):
        LabelStudioQueue(tmp_path).export_tasks([*_queries(1), odd])



# ------------------------------------------------------------ put_questions


@pytest.fixture
def store(tmp_path):
    store = ProjectStore.create(tmp_path / "project", name="pets")
    store.set_classes(CLASSES)
    store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(6))
    yield store
    store.close()


def _ask(store, n: int) -> list[Query]:
    queries = []
    for item in store.items()[:n]:
        question_id = store.ask(item.id, strategy="margin")
        queries.append(Query(question_id, item.id, item.uri, f"text of {item.uri}", CLASSES, "cat", 0.6))
    return queries


def test_put_questions_commits_each_answer_before_the_next_question_is_shown(store):
    queries = _ask(store, 3)
    seen_committed = []

    def person(prompt):
        seen_committed.append(len(store.answered_questions()))
        return "dog"

    oracle = TerminalOracle(input=person, console=Console(file=io.StringIO()))
    recorded = put_questions(store, oracle, queries)
    assert seen_committed == [0, 1, 2]  # every earlier answer was on disk when the next question came
    assert (recorded.answered, recorded.dismissed) == (3, 0)
    assert [label.source for label in store.active_labels()] == ["human"] * 3


def test_put_questions_keeps_the_answers_given_before_a_stop(store):
    queries = _ask(store, 3)
    oracle, _ = _terminal(["dog", "s", "q"])
    with pytest.raises(OracleStopped) as stopped:
        put_questions(store, oracle, queries)
    assert [(a.question_id, a.label) for a in stopped.value.answers] == [(1, "dog"), (2, None)]
    assert [q.id for q in store.open_questions()] == [3]
    assert store.question(1).answer == "dog" and store.question(2).oracle == "terminal"


def test_put_questions_commits_what_a_list_oracle_hands_over_when_it_stops(store):
    queries = _ask(store, 3)

    class StopsAfterTwo:
        def answer(self, questions):
            raise OracleStopped([Answer(q.question_id, "bird", "batch") for q in questions[:2]])

    with pytest.raises(OracleStopped) as stopped:
        put_questions(store, StopsAfterTwo(), queries)
    assert len(stopped.value.answers) == 2 and [q.id for q in store.open_questions()] == [3]
    assert put_questions(store, SimulatedOracle({q.uri: "cat" for q in queries}), queries[2:]).answered == 1


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_while_the_person_thinks_stops_cleanly_and_keeps_every_answer(store, signame):
    queries = _ask(store, 3)
    before = signal.getsignal(getattr(signal, signame))
    replies = iter(["dog", "bird"])

    def person(prompt):
        reply = next(replies, None)
        if reply is None:  # the third question: the session is closed while the person looks at it
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(30)  # a blocking read; the handler interrupts it
        return reply

    oracle = TerminalOracle(input=person, console=Console(file=io.StringIO()))
    started = time.monotonic()
    with pytest.raises(OracleStopped, match=f"by {signame}"):
        put_questions(store, oracle, queries)
    assert time.monotonic() - started < 10
    assert [(q.id, q.answer) for q in store.answered_questions()] == [(1, "dog"), (2, "bird")]
    assert signal.getsignal(getattr(signal, signame)) == before  # the caller's handler is back


def test_a_signal_during_a_commit_finishes_the_commit_then_stops(store):
    queries = _ask(store, 3)
    shown = []

    class SignalMidCommit:  # the store, with a SIGTERM arriving while the first answer is being written
        def __getattr__(self, name):
            return getattr(store, name)

        def answer(self, question_id, class_name, *, oracle):
            os.kill(os.getpid(), signal.SIGTERM)
            return store.answer(question_id, class_name, oracle=oracle)

    def person(prompt):
        shown.append(prompt)
        return "cat"

    oracle = TerminalOracle(input=person, console=Console(file=io.StringIO()))
    with pytest.raises(OracleStopped, match="by SIGTERM"):
        put_questions(SignalMidCommit(), oracle, queries)
    assert [(q.id, q.answer) for q in store.answered_questions()] == [(1, "cat")]
    assert len(shown) == 1  # the oracle was not resumed to show the next question


def test_an_answer_to_a_question_not_put_is_refused(store):
    queries = _ask(store, 2)

    class Confused:
        def answer(self, questions):
            return [Answer(2, "cat", "confused")]

    with pytest.raises(BadInputError, match="not put to it"):
        put_questions(store, Confused(), queries[:1])
    assert store.answered_questions() == []


def test_put_questions_adds_the_content_hash_and_project_for_label_studio(store, tmp_path):
    queries = _ask(store, 2)
    queue = LabelStudioQueue(tmp_path / "queue")
    assert put_questions(store, queue, queries).answered == 0  # asynchronous: the questions stay open
    [tasks_file] = (tmp_path / "queue").glob("tasks-*.json")
    task = json.loads(tasks_file.read_text())[1]
    assert task["meta"] | {"content_hash": "h1"} == task["meta"]
    assert task["data"]["metalabel_content_hash"] == "h1" and task["data"]["metalabel_uri"] == "pool/1.txt"
    assert task["data"]["metalabel_project"] == task["meta"]["project"] and task["meta"]["project"].startswith("pets@")
    with pytest.raises(BadInputError, match="no content hash"):
        queue.export_tasks([Query(9, 1, "pool/0.txt", "t", CLASSES)])


# ----------------------------------------------------------------- the store


def test_an_item_with_a_persons_answer_or_an_open_question_is_never_asked_again(store):
    [query] = _ask(store, 1)
    with pytest.raises(StoreError, match="already waits on question"):
        store.ask(query.item_id, strategy="audit")
    store.answer(query.question_id, "dog", oracle="ann")
    with pytest.raises(StoreError, match="already has a person's answer"):
        store.ask(query.item_id, strategy="label-issue")
    assert len(store.answered_questions()) == 1 and store.open_questions() == []


def test_a_dismissed_question_can_still_be_answered_later(store):
    [query] = _ask(store, 1)
    store.dismiss(query.question_id, oracle="labelstudio:ann")
    store.answer(query.question_id, "bird", oracle="labelstudio:bob")
    assert store.question(query.question_id).answer == "bird"
    assert [(label.class_name, label.question_id) for label in store.active_labels()] == [("bird", query.question_id)]
    with pytest.raises(StoreError, match="already closed"):
        store.answer(query.question_id, "cat", oracle="x")


def test_a_late_answer_closes_the_items_newer_question_and_two_answers_disagree_on_record(store):
    [first] = _ask(store, 1)
    store.dismiss(first.question_id, oracle="ann")
    second = store.ask(first.item_id, strategy="margin")  # asked again after the dismissal
    store.answer(first.question_id, "bird", oracle="bob")  # the first question, answered late
    assert store.open_questions() == []  # the item is not put to a person again
    assert store.question(second).answer is None and "answered in question" in store.question(second).oracle
    write = store.answer(second, "cat", oracle="carol")  # an answer to it arrives all the same
    assert write.disagreement_id is not None
    [label] = store.active_labels()
    assert label.class_name == "bird"  # the first answer stays; the other is on record
    [disagreement] = store.disagreements()
    assert (disagreement.kept_class, disagreement.proposed_class, disagreement.source) == ("bird", "cat", "human")
    assert store.add_human_disagreement(second, "cat", oracle="carol") is None  # recorded once


def test_answers_are_recorded_in_the_store_once(store):
    question_ids = [q.question_id for q in _ask(store, 3)]
    answers = [Answer(question_ids[0], "dog", "terminal"), Answer(question_ids[1], None, "terminal")]
    recorded = record_answers(store, answers)
    assert (recorded.answered, recorded.dismissed, recorded.already_closed) == (1, 1, [])
    assert [q.id for q in store.open_questions()] == [question_ids[2]]
    assert [(label.uri, label.class_name, label.source) for label in store.active_labels()] == [
        ("pool/0.txt", "dog", "human")
    ]
    # The same answers again (an export imported twice) change nothing.
    again = record_answers(store, answers)
    assert (again.answered, again.dismissed, again.already_closed) == (0, 0, question_ids[:2])
