"""What one Label Studio webhook costs the ML backend as the pool and the answers on record grow.

Each ``ANNOTATION_CREATED`` webhook is kept as a file and recorded through
``metalabel.serve.ml_backend.record_annotation``, the function the backend's ``/webhook`` runs (no HTTP
server here: its cost is the same for every request and is not what grows). A project of ``--pool-sizes``
text items gets ``history + samples`` open questions; ``history`` annotations are recorded first, one
webhook each, as a team's earlier work would be, then ``samples`` more are timed one by one.

    python bench/webhook_cost.py --pool-sizes 10000 100000 --history 0 1000 5000 --out bench/results/webhook_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from metalabel.label.labelstudio import QuestionIdentity, choices_task
from metalabel.label.oracle import project_identity
from metalabel.serve.ml_backend import record_annotation
from metalabel.store import ItemRecord, ProjectStore

CLASSES = ("cat", "dog")


def webhook(store: ProjectStore, question_id: int, *, annotation_id: int, user: int) -> dict:
    """Label Studio's ANNOTATION_CREATED payload for one question's task, answered "cat" by ``user``."""
    question = store.question(question_id)
    identity = QuestionIdentity(question.id, question.item_id, question.uri, f"hash-{question.item_id}",
                                project_identity(store))
    task = {"id": question_id, "project": 1, **choices_task("text", f"post {question.item_id}", question=identity)}
    annotation = {"id": annotation_id, "completed_by": user, "was_cancelled": False, "task": question_id,
                  "project": 1, "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                            "value": {"choices": ["cat"]}}],
                  "created_at": "2026-12-05T10:00:00.000000Z", "updated_at": "2026-12-05T10:00:00.000000Z"}
    return {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": task}


def measure(pool_size: int, history: int, samples: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        store = ProjectStore.create(Path(scratch) / "p", name="webhooks")
        with store:
            store.set_classes(CLASSES)
            item_ids = store.add_items(ItemRecord(uri=f"pool/{i}.txt", content_hash=f"hash-{i + 1}", modality="text")
                                       for i in range(pool_size))
            assert item_ids[0] == 1, "the payload names each item's hash by its id"
            with store.batch():
                questions = [store.ask(item_id, strategy="margin") for item_id in item_ids[: history + samples]]
            started = time.perf_counter()
            for n, question_id in enumerate(questions[:history]):
                record_annotation(store, webhook(store, question_id, annotation_id=n + 1, user=1 + n % 5))
            history_seconds = time.perf_counter() - started
            timings = []
            for n, question_id in enumerate(questions[history:]):
                started = time.perf_counter()
                answered = record_annotation(store, webhook(store, question_id, annotation_id=history + n + 1,
                                                            user=1 + n % 5))
                timings.append(time.perf_counter() - started)
                assert answered["answered"] == 1, answered
            assert store.summary()["answered_questions"] == history + samples
    return {"pool": pool_size, "history": history, "samples": samples,
            "median_ms": round(1000 * statistics.median(timings), 1), "max_ms": round(1000 * max(timings), 1),
            "history_s": round(history_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--history", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/webhook_cost.json"))
    parser.add_argument("--note", default="", help="what else ran on the machine")
    args = parser.parse_args()
    rows = []
    print("| pool items | answers on record | one webhook, median ms | max ms | recording the history, s |")
    print("|---|---|---|---|---|")
    for pool_size in args.pool_sizes:
        for history in args.history:
            row = measure(pool_size, history, args.samples)
            rows.append(row)
            print(f"| {pool_size:,} | {history:,} | {row['median_ms']} | {row['max_ms']} | {row['history_s']} |",
                  flush=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "python": platform.python_version(),
                                    "note": args.note, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
