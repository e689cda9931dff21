"""A project whose pool file changed, or whose items cache cannot be written (found by review12).

Tried as a user would: a text CSV named by an id column, a project made from it, the file then edited
or the cache folder unusable. Every command that reads the pool must refuse with a typed error that
names what is wrong, and the report must say why it shows no item.
"""

from __future__ import annotations

import csv
import html
import re
import sqlite3
from contextlib import closing

import pytest

import metalabel as ml
from metalabel.cli import main
from metalabel.errors import BadInputError, PoolChangedError
from metalabel.project import Project

POSTS = [("p1", "the rocket reached orbit", "space"), ("p2", "new brakes and tyres", "cars"),
         ("p3", "the shuttle landed", "space"), ("p4", "engine oil change", "cars")]


def _posts(path, rows=POSTS):
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return path


def _project(tmp_path):
    posts = _posts(tmp_path / "posts.csv")
    Project.create(tmp_path / "p", pool=ml.datasets.read_text(posts, id_column="id")).close()
    return posts


def test_a_report_over_a_changed_pool_says_why_its_samples_show_no_item(cache, tmp_path):
    posts = _project(tmp_path)
    _posts(posts, [(key, text + (" edited" if key == "p3" else ""), label) for key, text, label in POSTS])
    with Project.open(tmp_path / "p") as project:
        with pytest.raises(PoolChangedError):
            project.load_pool()
        page = html.unescape(project.report().read_text(encoding="utf-8"))
    samples = page[page.index('<section id="samples">'):]
    samples = samples[:samples.index("</section>")]
    assert re.search(r"the pool could not be reloaded \(item '.*#p3' changed since init", samples)


def test_an_items_cache_that_cannot_be_written_is_a_typed_error_naming_the_folder(cache, tmp_path, monkeypatch,
                                                                                  capsys):
    _project(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("METALABEL_CACHE", str(blocked / "cache"))
    with Project.open(tmp_path / "p") as project, pytest.raises(BadInputError, match="METALABEL_CACHE") as refused:
        project.load_pool()
    assert str(blocked / "cache" / "items") in str(refused.value)
    assert "restore the pool where it was" not in str(refused.value)  # it is where it was
    capsys.readouterr()
    assert main(["export", str(tmp_path / "p"), "--format", "csv", "--quiet"]) == 2
    assert "METALABEL_CACHE" in capsys.readouterr().err


def test_an_id_that_is_not_text_or_a_whole_number_is_named_as_it_is(tmp_path):
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": 1.0, "text": "the rocket reached orbit"}\n', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"row 1: its id 1\.0 in column 'id' is a float"):
        ml.datasets.read_text(posts, id_column="id")


def test_a_row_deleted_from_a_pool_named_by_line_is_named_where_it_was(cache, tmp_path, capsys):
    posts = _posts(tmp_path / "posts.csv")
    Project.create(tmp_path / "p", pool=ml.datasets.read_text(posts)).close()  # rows named posts.csv:LINE
    _posts(posts, [POSTS[0], *POSTS[2:]])  # the row on line 3 deleted: line 3 now holds line 4's text
    capsys.readouterr()
    assert main(["export", str(tmp_path / "p"), "--format", "csv", "--quiet"]) == 2
    refused = capsys.readouterr().err.replace("\n", "")
    assert f"item '{posts}:3' changed since init" in refused
    assert "named by their line" in refused and "id_column" in refused


EDITS = {  # what a user does to posts.csv (rows named by id) after init, and whether the project takes it
    "sorted otherwise": (lambda rows: rows[::-1], True),
    "a row appended": (lambda rows: [*rows, ("p9", "a new post", "")], True),
    "a row inserted on top": (lambda rows: [("p9", "a new post", ""), *rows], True),
    "a text changed": (lambda rows: [(k, t + "!" if k == "p2" else t, c) for k, t, c in rows], False),
    "an id changed": (lambda rows: [("p7" if k == "p2" else k, t, c) for k, t, c in rows], False),
    "a row deleted": (lambda rows: [row for row in rows if row[0] != "p2"], False),
    "an id repeated on top": (lambda rows: [("p2", "another post", ""), *rows], False),
    "two texts swapped": (lambda rows: [(k, {"p1": POSTS[1][1], "p2": POSTS[0][1]}.get(k, t), c)
                                        for k, t, c in rows], False),
}


def _dump(folder) -> str:
    with closing(sqlite3.connect(folder / "project.db")) as connection:
        return "\n".join(connection.iterdump())


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_pool_file_is_refused_by_name_or_keeps_every_label_on_its_text(cache, tmp_path, capsys, edit):
    posts = _project(tmp_path)
    with Project.open(tmp_path / "p") as project:
        for item in project.store.items():
            project.store.add_label(item.id, "space" if item.uri.endswith(("#p1", "#p3")) else "cars", source="human")
    before = _dump(tmp_path / "p")
    change, kept = EDITS[edit]
    _posts(posts, change(POSTS))
    capsys.readouterr()
    for command in (["export", str(tmp_path / "p"), "--format", "csv", "--quiet", "--overwrite"],
                    ["add-items", str(tmp_path / "p"), "--quiet"]):
        assert main(command) == (0 if kept else 2), capsys.readouterr()
        refused = capsys.readouterr().err
        assert kept or re.search(rf"{re.escape(str(posts))}(#p[12]\b|, row \d+: has the id 'p2')", refused), refused
    labels = tmp_path / "p" / "exports" / "csv" / "labels.csv"
    exported = list(csv.DictReader(labels.read_text(encoding="utf-8").splitlines())) if kept else []
    assert kept or _dump(tmp_path / "p") == before  # a refused command wrote nothing
    text = {key: words for key, words, _ in POSTS}
    for row in exported:  # each label on the text it was given for
        key = row["uri"].rpartition("#")[2]
        assert (row["text"], row["label"]) == (text[key], "space" if key in ("p1", "p3") else "cars")
    assert len(exported) == (4 if kept else 0)


def test_a_seed_names_an_item_by_an_id_that_holds_a_slash(tmp_path, capsys):
    posts = _posts(tmp_path / "posts.csv", [("2024/07", "the rocket reached orbit", ""),
                                            ("2024/08", "new brakes and tyres", ""), ("x/9", "engine oil", "")])
    (tmp_path / "seed.csv").write_text("uri,label\n2024/07,space\n2024/08,cars\n", encoding="utf-8")
    assert main(["init", str(tmp_path / "p"), "--pool", str(posts), "--labels", str(tmp_path / "seed.csv"),
                 "--source-option", "id_column=id", "--quiet"]) == 0, capsys.readouterr().err
    with Project.open(tmp_path / "p") as project:
        seeds = {label.uri: label.class_name for label in project.store.active_labels()}
    assert seeds == {f"{posts}#2024/07": "space", f"{posts}#2024/08": "cars"}
