"""Reliability: `metalabel status` and the HTML report read one moment of the project while people answer.

Both are invited while a run or a `metalabel serve` session writes ("reading works meanwhile"), and both
read several tables: the labeled items, then the labels by source, then the questions. Here another
connection (a serve session's) commits an answer at the moment the labels are counted by source: read
table by table, the figures then disagree with each other (one more human label than labeled items).
"""

from __future__ import annotations

import pytest

from helpers import review_pool
from metalabel.project import Project
from metalabel.report.collect import collect
from metalabel.store import ProjectStore


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Two seed labels and two questions, one answered by ann; bob answers the other while the project is read."""
    with Project.create(tmp_path / "reviews", pool=review_pool(tmp_path)) as project:
        [first, second] = [item.id for item in project.store.items()][2:]
        project.store.answer(project.store.ask(first, strategy="margin"), "pos", oracle="web:ann")
        late = project.store.ask(second, strategy="margin")
        counts_by_source = ProjectStore.label_counts
        answered = []

        def bob_answers_meanwhile(store: ProjectStore) -> dict[str, int]:
            if store is project.store and not answered:
                with ProjectStore.open(store.folder) as session:  # the serve session's own connection
                    session.answer(late, "neg", oracle="web:bob")
                answered.append(late)
            return counts_by_source(store)

        monkeypatch.setattr(ProjectStore, "label_counts", bob_answers_meanwhile)
        yield project
        assert answered  # the answer did come in while the project was read


def test_status_figures_agree_when_an_answer_is_committed_while_it_reads(project):
    status = project.status()
    by_source = status["labels_by_source"]
    assert sum(by_source.values()) == status["labeled_items"] == sum(status["labels_by_class"].values()), status
    assert status["open_questions"] + status["answered_questions"] == 2
    assert (by_source["human"], status["open_questions"]) in ((1, 1), (2, 0)), status  # before bob, or after


def test_report_figures_agree_when_an_answer_is_committed_while_it_reads(project):
    counts = collect(project).counts
    assert counts["labeled"] == counts["human"] + counts["imported"], counts
    assert (counts["human"], counts["open_questions"]) in ((1, 1), (2, 0)), counts
