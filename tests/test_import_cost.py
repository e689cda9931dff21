"""What one Label Studio webhook costs does not grow with the pool or with the answers on record.

The ML backend records every annotation as it comes; a team's project holds a large pool and, after a while,
thousands of recorded annotations. Counted in SQLite's own steps (its progress handler, every 100 virtual
machine instructions), not in seconds: recording one more annotation into a project ten times larger, with
ten times the answers on record, takes about the same work. Real SQLite projects, the backend's own recording
function and Label Studio's webhook payload shape.
"""

from __future__ import annotations

from pathlib import Path

from metalabel.label.labelstudio import QuestionIdentity, choices_task
from metalabel.label.oracle import project_identity
from metalabel.serve.ml_backend import record_annotation
from metalabel.store import ItemRecord, ProjectStore


def payload(store: ProjectStore, question_id: int, user: int) -> dict:
    question = store.question(question_id)
    identity = QuestionIdentity(question.id, question.item_id, question.uri, f"h{question.item_id}",
                                project_identity(store))
    task = {"id": question_id, "project": 1, **choices_task("text", question.uri, question=identity)}
    annotation = {"id": question_id, "completed_by": user, "was_cancelled": False, "task": question_id,
                  "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                              "value": {"choices": ["cat"]}}], "updated_at": "2026-12-05T10:00:00Z"}
    return {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": task}


def steps_to_record_one_more(folder: Path, *, pool: int, recorded: int) -> int:
    store = ProjectStore.create(folder, name="team")
    with store:
        store.set_classes(["cat", "dog"])
        items = store.add_items(ItemRecord(f"pool/{i}.txt", f"h{i + 1}", "text") for i in range(pool))
        with store.batch():
            questions = [store.ask(item_id, strategy="margin") for item_id in items[:recorded + 1]]
        for n, question_id in enumerate(questions[:recorded]):
            record_annotation(store, payload(store, question_id, user=n % 3))
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        store._connection.set_progress_handler(count, 100)
        assert record_annotation(store, payload(store, questions[-1], user=1))["answered"] == 1
        store._connection.set_progress_handler(None, 100)
    return steps


def test_recording_a_webhook_takes_the_same_work_in_a_pool_ten_times_larger_with_ten_times_the_answers(tmp_path):
    small = steps_to_record_one_more(tmp_path / "small", pool=300, recorded=6)
    large = steps_to_record_one_more(tmp_path / "large", pool=3000, recorded=60)
    # before, when every import read all the items, 9 times the steps (56 and 502 hundred instructions)
    assert large < 1.5 * small, (small, large)
