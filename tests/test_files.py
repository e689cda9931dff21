"""The atomic writes: a reader sees the old file (or folder) or the new one; a failure leaves no temporary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from metalabel.errors import BadInputError
from metalabel.files import IfExists, remove_stale_staging, staged_folder, write_atomically


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


# ------------------------------------------------------------------ folders: staged_folder


def contents(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


def old_folder(parent: Path) -> Path:
    folder = parent / "out"
    folder.mkdir()
    (folder / "a.txt").write_text("old a")
    (folder / "b.txt").write_text("old b")
    return folder


@pytest.mark.parametrize("if_exists", list(IfExists))
def test_a_new_folder_appears_whole_and_an_empty_one_counts_as_none(tmp_path, if_exists):
    for target in (tmp_path / "deep" / "new", tmp_path / "empty"):
        if target.name == "empty":
            target.mkdir()
        with staged_folder(target, if_exists=if_exists, what="the export") as staging:
            assert staging.parent == target.parent and staging.name.startswith(f".{target.name}.staging-")
            (staging / "a.txt").write_text("new")
        assert contents(target) == {"a.txt": "new"}
    assert sorted(os.listdir(tmp_path)) == ["deep", "empty"] and os.listdir(tmp_path / "deep") == ["new"]


@pytest.mark.parametrize("if_exists", list(IfExists))
def test_a_failing_write_leaves_the_old_folder_intact_and_no_staging_behind(tmp_path, if_exists):
    folder = old_folder(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        with staged_folder(folder, if_exists=if_exists, what="the export") as staging:
            (staging / "a.txt").write_text("half")
            raise OSError("disk full")
    assert contents(folder) == {"a.txt": "old a", "b.txt": "old b"}
    assert os.listdir(tmp_path) == ["out"]


def test_replace_swaps_the_whole_folder_a_file_or_a_link_but_not_the_links_target(tmp_path):
    folder = old_folder(tmp_path)
    with staged_folder(folder, if_exists=IfExists.REPLACE, what="the export") as staging:
        (staging / "c.txt").write_text("new c")
    assert contents(folder) == {"c.txt": "new c"}  # nothing of the old one left over

    (tmp_path / "file").write_text("a file")
    with staged_folder(tmp_path / "file", if_exists=IfExists.REPLACE, what="the export") as staging:
        (staging / "c.txt").write_text("new c")
    assert contents(tmp_path / "file") == {"c.txt": "new c"}

    (tmp_path / "elsewhere").mkdir()
    kept = old_folder(tmp_path / "elsewhere")
    (tmp_path / "link").symlink_to(kept)
    with staged_folder(tmp_path / "link", if_exists=IfExists.REPLACE, what="the export") as staging:
        (staging / "c.txt").write_text("new c")
    assert not (tmp_path / "link").is_symlink() and contents(tmp_path / "link") == {"c.txt": "new c"}
    assert contents(kept) == {"a.txt": "old a", "b.txt": "old b"}
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "file", "link", "out"]


def test_refuse_raises_a_clear_error_and_leaves_what_is_there(tmp_path):
    folder = old_folder(tmp_path)
    with pytest.raises(BadInputError, match=r"out: appeared while the project was being written.*another folder"):
        with staged_folder(folder, if_exists=IfExists.REFUSE, what="the project") as staging:
            (staging / "project.db").write_text("new")
    assert contents(folder) == {"a.txt": "old a", "b.txt": "old b"}
    assert os.listdir(tmp_path) == ["out"]


def test_replace_own_replaces_only_a_folder_of_the_same_files(tmp_path):
    folder = old_folder(tmp_path)
    with staged_folder(folder, if_exists=IfExists.REPLACE_OWN, what="a checkpoint") as staging:
        (staging / "a.txt").write_text("new a")
        (staging / "b.txt").write_text("new b")
    assert contents(folder) == {"a.txt": "new a", "b.txt": "new b"}

    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="holds notes.txt, which writing a checkpoint here would delete"):
        with staged_folder(folder, if_exists=IfExists.REPLACE_OWN, what="a checkpoint") as staging:
            (staging / "a.txt").write_text("newer a")
            (staging / "b.txt").write_text("newer b")
    assert contents(folder) == {"a.txt": "new a", "b.txt": "new b", "notes.txt": "mine"}

    (tmp_path / "file").write_text("a file")
    with pytest.raises(BadInputError, match="is not a folder a checkpoint wrote"):
        with staged_folder(tmp_path / "file", if_exists=IfExists.REPLACE_OWN, what="a checkpoint") as staging:
            (staging / "a.txt").write_text("new a")
    assert (tmp_path / "file").read_text() == "a file" and sorted(os.listdir(tmp_path)) == ["file", "out"]


def test_a_failed_rename_in_puts_the_old_folder_back(tmp_path, monkeypatch):
    folder = old_folder(tmp_path)
    rename = os.rename

    def refuse_the_new_one(source, destination):
        if Path(source).name.endswith("-new"):
            raise OSError("rename refused")
        rename(source, destination)

    monkeypatch.setattr("metalabel.files.os.rename", refuse_the_new_one)
    with pytest.raises(OSError, match="rename refused"):
        with staged_folder(folder, if_exists=IfExists.REPLACE, what="the export") as staging:
            (staging / "a.txt").write_text("new a")
    assert contents(folder) == {"a.txt": "old a", "b.txt": "old b"}
    assert os.listdir(tmp_path) == ["out"]


def test_every_file_is_on_disk_before_the_rename_makes_it_the_folder(tmp_path, monkeypatch):
    flushed: list[str] = []
    rename = os.rename
    monkeypatch.setattr("metalabel.files.fsync", lambda path: flushed.append(os.path.basename(path)))
    monkeypatch.setattr("metalabel.files.os.rename", lambda a, b: (flushed.append("rename"), rename(a, b)))
    with staged_folder(tmp_path / "out", if_exists=IfExists.REFUSE, what="the export") as staging:
        (staging / "images").mkdir()
        (staging / "images" / "0.png").write_bytes(b"png")
        (staging / "metadata.csv").write_text("file_name,label\n")
    assert flushed.index("0.png") < flushed.index("rename") and flushed.index("metadata.csv") < flushed.index("rename")
    assert flushed[-1] == tmp_path.name  # and the rename itself, in the parent's entries


def run_killed(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)


def test_a_write_killed_midway_leaves_the_old_folder_and_the_next_write_cleans_up(tmp_path):
    folder = old_folder(tmp_path)
    killed = run_killed(f"""
        import os
        from metalabel.files import IfExists, staged_folder
        with staged_folder({str(folder)!r}, if_exists=IfExists.REPLACE, what="the export") as staging:
            (staging / "a.txt").write_text("half")
            os._exit(9)
    """)
    assert killed.returncode == 9, killed.stderr
    assert contents(folder) == {"a.txt": "old a", "b.txt": "old b"}
    (left,) = [name for name in os.listdir(tmp_path) if name != "out"]
    assert left.startswith(".out.staging-")
    with staged_folder(folder, if_exists=IfExists.REPLACE, what="the export") as staging:
        assert not (tmp_path / left).exists()  # the killed write's, removed as this one started
        assert remove_stale_staging(folder) == [] and staging.exists()  # and this one's own is left alone
        (staging / "c.txt").write_text("new c")
    assert contents(folder) == {"c.txt": "new c"} and os.listdir(tmp_path) == ["out"]


def test_a_kill_between_the_two_renames_leaves_the_old_folder_whole_and_cleanup_puts_it_back(tmp_path):
    folder = old_folder(tmp_path)
    killed = run_killed(f"""
        import os
        from metalabel.files import IfExists, staged_folder
        rename = os.rename
        def die_before_the_new_one(source, destination):
            if source.name.endswith("-new"):
                os._exit(9)
            rename(source, destination)
        os.rename = die_before_the_new_one
        with staged_folder({str(folder)!r}, if_exists=IfExists.REPLACE, what="the export") as staging:
            (staging / "c.txt").write_text("new c")
    """)
    assert killed.returncode == 9, killed.stderr
    assert not folder.exists() and len(os.listdir(tmp_path)) == 2  # the old one aside, the new one staged
    removed = remove_stale_staging(folder)
    assert [path.name.endswith("-new") for path in removed] == [True]
    assert contents(folder) == {"a.txt": "old a", "b.txt": "old b"} and os.listdir(tmp_path) == ["out"]


def test_a_killed_writers_temporary_files_are_removed_and_a_live_or_recent_ones_kept(tmp_path, cache):
    import signal
    import time

    from metalabel.data.encoders import embed_dataset
    from metalabel.datasets import load
    from metalabel.files import STALE_AFTER_S, remove_stale_temporaries

    folder = cache / "embeddings"
    folder.mkdir(parents=True)
    # a real writer, killed in the middle of write_atomically: its temporary file stays behind
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from metalabel.files import write_atomically\n"
        "def write(file):\n"
        "    file.write_bytes(b'half an embedding file')\n"
        "    print('written', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_atomically({str(folder / 'pixels-abc.npy')!r}, write)\n")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "written"
    [left] = list(folder.iterdir())
    assert remove_stale_temporaries(folder) == [] and left.exists()  # its writer still runs
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert remove_stale_temporaries(folder) == [] and left.exists()  # changed a moment ago: maybe another machine's
    old = time.time() - STALE_AFTER_S - 1
    os.utime(left, (old, old))
    kept = folder / "pixels-abc.npy"  # a cache file, and a hidden file of someone else's naming, are never removed
    kept.write_bytes(b"x")
    other = folder / ".notes"
    other.write_bytes(b"x")
    os.utime(kept, (old, old))
    os.utime(other, (old, old))
    # the next embedding into the folder removes what the killed writer left, and only that
    embed_dataset(load("kanji", split="evaluation", max_classes=2), "pixels", progress=False, mmap=True)
    assert not left.exists() and kept.exists() and other.exists()
