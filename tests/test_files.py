"""The one atomic write: a reader sees the old file or the new one, and a failure leaves no temporary behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from metalabel.files import write_atomically


def test_bytes_text_and_a_writer_function_all_land_whole(tmp_path):
    assert write_atomically(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    write_atomically(tmp_path / "a.txt", "ünïcode")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "ünïcode"
    # np.save appends ".npy" to a name without it: the temporary keeps the target's suffix
    write_atomically(tmp_path / "a.npy", lambda file: np.save(file, np.arange(3)))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))
    write_atomically(tmp_path / "a.npz", lambda file: np.savez_compressed(file, x=np.ones(2)))
    with np.load(tmp_path / "a.npz") as stored:
        np.testing.assert_array_equal(stored["x"], np.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "a.npy", "a.npz", "a.txt"]


def test_a_write_replaces_the_old_file(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    write_atomically(target, json.dumps({"new": True}))
    assert json.loads(target.read_text()) == {"new": True}


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scorecard.json"
    target.write_text("old")

    def half_then_crash(file):
        file.write_text('{"half":')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_crash)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["scorecard.json"]


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old")

    def crash(source, destination):
        raise OSError("rename refused")

    monkeypatch.setattr("metalabel.files.os.replace", crash)
    with pytest.raises(OSError, match="rename refused"):
        write_atomically(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_failure_before_any_file_leaves_no_file(tmp_path):
    def refuse(file):
        raise ValueError("MD5 mismatch")

    with pytest.raises(ValueError, match="MD5"):
        write_atomically(tmp_path / "download.gz", refuse)
    assert os.listdir(tmp_path) == []
