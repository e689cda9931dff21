"""audit12: an export's stated guarantee is the one that holds for the labels it hands over as training data.

``--include-retracted`` adds the model labels a round's certificate no longer covers. ImageFolder refuses it (its
class folders are training data), but ``hf`` took it: ``datasets.load_dataset(folder)`` then gave those labels in
the ``train`` split, each with its class as ``label``, under a card that says "The model labels here are the ones
that round's certificate covers" and "retracted labels are not in this set". Found on a real project (kanji, run at
0.8, then at 0.95: 161 labels retracted; ``export --format hf --include-retracted`` wrote all 161 to ``train``).
Fixed: ``hf`` refuses it as ImageFolder does; csv and parquet keep the audit trail.
"""

from __future__ import annotations

import pytest

from helpers import review_pool
from metalabel.cli import main
from metalabel.project import Project


def test_an_hf_export_refuses_retracted_labels_as_imagefolder_does(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    pool = review_pool(tmp_path)
    with Project.create(tmp_path / "p", pool=pool) as project:
        store = project.store
        first = store.start_round({})
        (item_id,) = store.item_ids([pool.uris[2]])
        label = store.add_label(item_id, "pos", source="model", calibrated_confidence=0.9, threshold=0.85,
                                round_id=first, certified_precision=0.9)
        store.finish_round(first, {})
        second = store.start_round({})
        store.retract_label(label.label_id, round_id=second, reason="no certificate this round")
        store.finish_round(second, {})
    out = tmp_path / "hf"
    code = main(["export", str(tmp_path / "p"), "--format", "hf", "--include-retracted", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "training data" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "p"), "--format", "csv", "--include-retracted", "--out",
                 str(tmp_path / "csv")]) == 0  # the audit trail stays available where it is no training split
