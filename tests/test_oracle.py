"""Oracles: simulated answers, the terminal dialogue, and the Label Studio file round trip."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from metalabel.errors import BadInputError, DataNotFoundError, UnknownLabelError
from metalabel.label.oracle import (
    QUESTION_KEY,
    Answer,
    LabelStudioQueue,
    Oracle,
    OracleStopped,
    Query,
    SimulatedOracle,
    TerminalOracle,
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
    answers = oracle.answer(_queries(4))
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
        oracle.answer(_queries(3))
    assert stopped.value.answers == [Answer(100, "dog", "terminal")]


def test_terminal_end_of_input_stops_cleanly_too():
    oracle, _ = _terminal(["3"])
    with pytest.raises(OracleStopped) as stopped:
        oracle.answer(_queries(2))
    assert [a.label for a in stopped.value.answers] == ["bird"]


def test_digit_class_names_are_chosen_by_name_not_by_position():
    digits = [str(d) for d in range(10)]
    oracle, _ = _terminal(["3", "0"])
    queries = [Query(question_id=i, item_id=i, uri=f"d/{i}", item="x", class_names=digits) for i in range(2)]
    assert [a.label for a in oracle.answer(queries)] == ["3", "0"]


def test_terminal_shortens_long_text_and_does_not_read_markup_in_it():
    oracle, shown = _terminal(["1"], max_text_chars=50)
    long_text = "[bold red]not markup[/] " + "word " * 200
    oracle.answer([Query(question_id=1, item_id=1, uri="t", item=long_text, class_names=CLASSES)])
    text = shown.getvalue()
    assert "[bold red]not markup[/]" in text
    assert "more characters" in text and "word " * 100 not in text


def test_terminal_shows_an_image_as_its_path_and_a_half_block_preview():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[7:21, 7:21] = 255  # a white square on black
    oracle, shown = _terminal(["1"])
    oracle.answer([Query(question_id=1, item_id=1, uri="images/square.png", item=image, class_names=CLASSES)])
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
    oracle.answer([Query(question_id=1, item_id=1, uri=str(path), item=None, class_names=CLASSES)])
    preview_lines = [line for line in shown.getvalue().splitlines() if "▀" in line]
    assert len(preview_lines) == 9 and preview_lines[0].count("▀") == 28  # aspect ratio kept
    assert "200;30;30" in shown.getvalue()


# ----------------------------------------------------------------- Label Studio


def _as_label_studio_would_export(tasks: list[dict], labels: dict[int, str | None], *, cancelled=()) -> list[dict]:
    """What Label Studio's "JSON" export of the imported tasks looks like after labeling.

    ``labels`` maps question ids to the class chosen (``None``: submitted with no choice);
    questions in ``cancelled`` were skipped; the rest were not labeled yet.
    """
    exported = []
    for task_id, task in enumerate(tasks, start=1):
        question_id = task["meta"][QUESTION_KEY]
        annotations = []
        if question_id in cancelled:
            annotations.append({"id": task_id, "result": [], "was_cancelled": True, "completed_by": 3})
        elif question_id in labels:
            chosen = labels[question_id]
            result = [] if chosen is None else [
                {
                    "id": f"r{task_id}",
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "origin": "prediction-changed",
                    "value": {"choices": [chosen]},
                }
            ]
            annotations.append(
                {
                    "id": task_id,
                    "completed_by": {"id": 3, "email": "ann@example.com"},
                    "result": result,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": "2026-01-01T10:00:00Z",
                    "lead_time": 2.5,
                    "task": task_id,
                }
            )
        exported.append(
            {
                "id": task_id,
                "annotations": annotations,
                "drafts": [],
                "predictions": [1000 + task_id] if "predictions" in task else [],
                "data": task["data"],
                "meta": task["meta"],
                "created_at": "2026-01-01T09:00:00Z",
                "project": 1,
            }
        )
    return exported


def test_label_studio_round_trip_matches_answers_to_questions(tmp_path):
    queue = LabelStudioQueue(tmp_path / "queue", model_version="round-2")
    queries = _queries(5)
    assert queue.answer(queries) == []  # asynchronous: the answers come back through import

    tasks_path = tmp_path / "queue" / "tasks-q100-q104.json"
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 5
    first = tasks[0]
    assert first["data"]["text"] == "text number 0"
    assert first["meta"][QUESTION_KEY] == 100 and first["meta"]["uri"] == "pool/0.txt"
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "round-2" and prediction["score"] == pytest.approx(0.6)
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["cat"]}}
    ]
    config = queue.config_path.read_text()
    assert '<Text name="text" value="$text"/>' in config
    assert '<Choices name="label" toName="text" choice="single"' in config
    assert all(f'<Choice value="{name}"/>' in config for name in CLASSES)

    export = _as_label_studio_would_export(tasks, {100: "dog", 101: "cat", 103: None}, cancelled={102})
    export_path = tmp_path / "project-1-export.json"
    export_path.write_text(json.dumps(export))
    answers = {a.question_id: a for a in queue.import_annotations(export_path)}
    assert {qid: a.label for qid, a in answers.items()} == {100: "dog", 101: "cat", 102: None, 103: None}
    assert answers[100].oracle == "labelstudio:ann@example.com"
    assert answers[102].oracle == "labelstudio:3"
    assert 104 not in answers  # not labeled yet: its question stays open


def test_label_studio_json_min_export_is_read_too(tmp_path):
    queue = LabelStudioQueue(tmp_path)
    minimal = [
        {"id": 1, "text": "t", QUESTION_KEY: 100, "label": "bird", "annotator": "ann@example.com"},
        {"id": 2, "text": "u", QUESTION_KEY: 101},
    ]
    path = tmp_path / "min.json"
    path.write_text(json.dumps(minimal))
    assert queue.import_annotations(path) == [Answer(100, "bird", "labelstudio:ann@example.com")]


def test_label_studio_embeds_small_image_arrays_and_links_local_files(tmp_path):
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    in_memory = Query(question_id=1, item_id=1, uri="fashion-mnist:test/1", item=image, class_names=CLASSES)
    served = tmp_path / "data" / "shoes" / "a b.png"
    served.parent.mkdir(parents=True)
    Image.fromarray(image).save(served)
    on_disk = Query(question_id=2, item_id=2, uri=str(served), item=None, class_names=CLASSES, suggestion="dog")
    remote = Query(question_id=3, item_id=3, uri="https://example.com/x.jpg", item=None, class_names=CLASSES)

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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not JSON"),
        ('{"tasks": []}', "expected a list of tasks"),
        ('[{"data": {"text": "a"}, "annotations": []}]', f"task 0: carries no {QUESTION_KEY}"),
        (f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": []}}, 5]', "task 1: is not a JSON object"),
        (f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": {{}}}}]', "task 0: 'annotations' is not a list"),
        (
            f'[{{"data": {{"{QUESTION_KEY}": 1}}, "annotations": [{{"result": [{{"type": "choices", '
            f'"from_name": "label", "value": {{"choices": ["cat", "dog"]}}}}]}}]}}]',
            "task 0: expected exactly one chosen class",
        ),
    ],
)
def test_a_malformed_export_names_the_file_and_the_task(tmp_path, content, problem):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(BadInputError, match=problem) as error:
        LabelStudioQueue(tmp_path).import_annotations(path)
    assert str(path) in str(error.value)


def test_a_missing_export_file_is_a_data_not_found_error(tmp_path):
    with pytest.raises(DataNotFoundError):
        LabelStudioQueue(tmp_path).import_annotations(tmp_path / "nope.json")


def test_exporting_questions_with_other_classes_together_is_refused(tmp_path):
    odd = Query(question_id=9, item_id=9, uri="x", item="t", class_names=("cat", "dog"))
    with pytest.raises(BadInputError, match="other classes"):
        LabelStudioQueue(tmp_path).export_tasks([*_queries(1), odd])


# ------------------------------------------------------------------ the store


def test_answers_are_recorded_in_the_store_once(tmp_path):
    store = ProjectStore.create(tmp_path / "project", name="pets")
    store.set_classes(CLASSES)
    item_ids = store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"h{i}", modality="text") for i in range(3))
    question_ids = [store.ask(item_id, strategy="margin") for item_id in item_ids]
    answers = [
        Answer(question_ids[0], "dog", "terminal"),
        Answer(question_ids[1], None, "terminal"),
    ]
    recorded = record_answers(store, answers)
    assert (recorded.answered, recorded.dismissed, recorded.already_closed) == (1, 1, [])
    assert [q.id for q in store.open_questions()] == [question_ids[2]]
    assert [(label.uri, label.class_name, label.source) for label in store.active_labels()] == [
        ("pool/0.txt", "dog", "human")
    ]
    # The same answers again (an export imported twice) change nothing.
    again = record_answers(store, answers)
    assert (again.answered, again.dismissed, again.already_closed) == (0, 0, question_ids[:2])
    store.close()
