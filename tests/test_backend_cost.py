"""What the ML backend does for one Label Studio task does not grow with the pool.

The backend records every annotation as it comes and predicts each task as it is opened; a team's project
holds a large pool. Counted in SQLite's own steps (its progress handler, every 10 virtual machine
instructions), not in seconds: recording one more annotation, or predicting one task, in a pool ten times
larger takes the same work. (Recording still lists the kept files and the names recorded from them, which
grows with the answers on record by design: ``bench/webhook_cost.py`` measures it.) Real SQLite projects,
the backend's own functions and Label Studio's payload shapes.
"""

from __future__ import annotations

from pathlib import Path

from metalabel.label.labelstudio import QuestionIdentity, choices_task
from metalabel.label.oracle import project_identity
from metalabel.serve.ml_backend import predictions, record_annotation
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


class Steps:
    """SQLite's steps while inside the ``with``."""

    def __init__(self, store: ProjectStore) -> None:
        self.connection, self.count = store._connection, 0

    def __enter__(self) -> Steps:
        self.connection.set_progress_handler(self._step, 10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.set_progress_handler(None, 10)

    def _step(self) -> int:
        self.count += 1
        return 0


def steps_to_record_one_more(folder: Path, *, pool: int, recorded: int) -> tuple[int, int]:
    """SQLite's steps to record one more annotation, and to predict one task."""
    store = ProjectStore.create(folder, name="team")
    with store:
        store.set_classes(["cat", "dog"])
        items = store.add_items(ItemRecord(f"pool/{i}.txt", f"h{i + 1}", "text") for i in range(pool))
        with store.batch():
            questions = [store.ask(item_id, strategy="margin") for item_id in items[:recorded + 1]]
        for n, question_id in enumerate(questions[:recorded]):
            record_annotation(store, payload(store, question_id, user=n % 3))
        with Steps(store) as recording:
            assert record_annotation(store, payload(store, questions[-1], user=1))["answered"] == 1
        with Steps(store) as predicting:
            assert predictions(store, [payload(store, questions[-1], user=1)["task"]])[0]["result"] == []
    return recording.count, predicting.count


def test_a_webhook_and_a_prediction_take_the_same_work_in_a_pool_ten_times_larger(tmp_path):
    small = steps_to_record_one_more(tmp_path / "small", pool=300, recorded=20)
    large = steps_to_record_one_more(tmp_path / "large", pool=3000, recorded=20)
    # equal here (97 and 23 tens of instructions); before, when each read all the items, 8 times the steps to
    # record and to predict (4,909 against 589, 2,487 against 327)
    assert large[0] < 1.2 * small[0] and large[1] < 1.2 * small[1], (small, large)
