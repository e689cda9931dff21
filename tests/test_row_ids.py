"""A text or table file's rows named by an id column: the uri is ``path#id``, a seed label names an item by its
id, and the project keeps its items when the file's rows are sorted otherwise."""

from __future__ import annotations

import csv

import pytest

import metalabel as ml
from metalabel.cli import main
from metalabel.errors import BadInputError
from metalabel.project import Project

POSTS = [("p7", "the rocket reached orbit", "space"), ("p3", "new brakes and tyres", "cars"),
         ("p9", "the shuttle landed", ""), ("p1", "engine oil change", "")]


def write_posts(path, rows):
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return path


def test_rows_are_named_by_their_id_and_a_missing_or_repeated_id_is_a_bad_row(tmp_path):
    posts = write_posts(tmp_path / "posts.csv", POSTS)
    pool = ml.datasets.read_text(posts, id_column="id")
    assert pool.uris == [f"{posts}#{post_id}" for post_id, _, _ in POSTS]
    with pytest.raises(BadInputError, match="has no column 'key'.*id_column"):
        ml.datasets.read_text(posts, id_column="key")
    repeated = write_posts(tmp_path / "repeated.csv", [*POSTS, ("p3", "a second p3", "cars"), ("", "no id", "")])
    with pytest.raises(BadInputError, match="row 6.*the id 'p3' of row 3"):
        ml.datasets.read_text(repeated, id_column="id")
    skipped = ml.datasets.read_text(repeated, id_column="id", on_error="skip")
    assert len(skipped) == len(POSTS) and [where for where, _ in skipped.skipped] == [f"{repeated}:6", f"{repeated}:7"]


def test_a_project_names_items_by_id_in_its_seed_file_and_survives_its_rows_sorted_otherwise(tmp_path, capsys):
    posts = write_posts(tmp_path / "posts.csv", [(post_id, text, "") for post_id, text, _ in POSTS])
    (tmp_path / "seed.csv").write_text("uri,label\np7,space\np3,cars\n")
    assert main(["init", str(tmp_path / "p"), "--pool", str(posts), "--labels", str(tmp_path / "seed.csv"),
                 "--source-option", "id_column=id", "--quiet"]) == 0
    capsys.readouterr()
    write_posts(posts, [(post_id, text, "") for post_id, text, _ in reversed(POSTS)])  # sorted otherwise
    with Project.open(tmp_path / "p") as project:
        pool = project.load_pool()  # every item checked against the hash stored for its uri
        seeds = {label.uri: label.class_name for label in project.store.active_labels()}
    assert seeds == {f"{posts}#p7": "space", f"{posts}#p3": "cars"}
    assert pool.items[pool.uris.index(f"{posts}#p7")] == "the rocket reached orbit"


def test_a_tables_id_column_names_its_rows_and_is_no_feature(tmp_path):
    table = tmp_path / "rows.csv"
    table.write_text("key,width,height,label\nr2,1.5,2.0,small\nr1,9.0,8.5,big\nr3,1.0,1.5,\n")
    pool = ml.datasets.read_table(table, id_column="key")
    assert pool.feature_names == ["width", "height"] and pool.items.shape == (3, 2)
    assert pool.uris == [f"{table}#r2", f"{table}#r1", f"{table}#r3"]
    with pytest.raises(BadInputError, match="has no column 'id'.*id_column"):
        ml.datasets.read_table(table, id_column="id")
    table.write_text("key,width,label\nr2,1.5,small\nr2,9.0,big\n")
    with pytest.raises(BadInputError, match="row 3.*the id 'r2' of row 2"):
        ml.datasets.read_table(table, id_column="key")
