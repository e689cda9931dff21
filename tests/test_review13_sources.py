"""A Parquet dataset (a folder of Parquet files) whose files disagree (review13): no label or column is dropped
silently (labels a folder label=x names included), and a file that breaks the pool is named, not only its folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import metalabel as ml
from metalabel.errors import BadInputError, UnreadableItemError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _parts(folder: Path, *tables) -> Path:
    folder.mkdir()
    for index, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{index}.parquet")
    return folder


def _rows(a: list, b: list, **more) -> object:
    return pa.table({"a": a, "b": b, **more})


def test_labels_held_only_by_a_later_file_of_a_parquet_dataset_are_kept(tmp_path) -> None:
    folder = _parts(tmp_path / "t", _rows([1.0, 2.0], [3.0, 4.0]), _rows([5.0, 6.0], [7.0, 8.0], label=["x", "y"]))
    table = ml.datasets.read_table(folder)
    assert table.class_names == ["x", "y"] and table.labels.tolist() == [-1, -1, 0, 1]
    assert table.feature_names == ["a", "b"]


def test_a_file_of_a_parquet_dataset_with_other_feature_columns_is_refused_naming_it_and_the_column(
        tmp_path) -> None:
    first = _rows([1.0, 2.0], [3.0, 4.0], label=["x", "y"])
    extra = _parts(tmp_path / "extra", first, _rows([5.0, 6.0], [7.0, 8.0], c=[9.0, 9.0]))
    with pytest.raises(BadInputError, match=r"part-1\.parquet: has the column 'c', which part-0\.parquet lacks"):
        ml.datasets.read_table(extra)
    missing = _parts(tmp_path / "missing", first, pa.table({"a": [5.0, 6.0]}))
    with pytest.raises(BadInputError, match=r"part-1\.parquet: lacks the column 'b', which part-0\.parquet has"):
        ml.datasets.chunked(missing)


def test_a_column_of_another_type_in_one_file_of_a_parquet_dataset_is_refused_naming_both_files(tmp_path) -> None:
    folder = _parts(tmp_path / "t", _rows([1.0, 2.0], [3.0, 4.0]), _rows(["five", "6"], [7.0, 8.0]))
    with pytest.raises(BadInputError, match=r"part-1\.parquet: column 'a' holds string, but double in part-0\.parquet"):
        ml.datasets.read_table(folder)


def test_an_empty_or_broken_file_in_a_parquet_dataset_is_named(tmp_path) -> None:
    folder = _parts(tmp_path / "t", _rows([1.0, 2.0], [3.0, 4.0]))
    (folder / "part-1.parquet").write_bytes(b"")
    with pytest.raises(UnreadableItemError, match=r"part-1\.parquet: is not a readable Parquet file"):
        ml.datasets.chunked(folder)
    (folder / "part-1.parquet").write_bytes(b"PAR1 not really PAR1")
    with pytest.raises(UnreadableItemError, match=r"part-1\.parquet: is not a readable Parquet file"):
        ml.datasets.read_table(folder)


def test_a_parquet_dataset_partitioned_by_label_keeps_the_labels_its_folders_name(tmp_path) -> None:
    folder = tmp_path / "t"
    pq.write_to_dataset(_rows([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], label=["x", "y", "x"], year=[2020, 2021, 2020]),
                        folder, partition_cols=["label", "year"])  # what pandas' to_parquet(partition_cols=) writes
    table = ml.datasets.read_table(folder)
    assert table.class_names == ["x", "y"] and sorted(table.labels.tolist()) == [0, 0, 1]
    assert table.feature_names == ["a", "b"]  # another partition key stays out of the features, as it was
    labels = {tuple(row): table.class_names[label] for row, label in zip(table.items.tolist(), table.labels)}
    assert labels == {(1.0, 4.0): "x", (2.0, 5.0): "y", (3.0, 6.0): "x"}

    both = _parts(tmp_path / "both", _rows([1.0], [2.0], label=["w"]))
    (both / "label=z").mkdir()
    (both / "part-0.parquet").rename(both / "label=z" / "part-0.parquet")
    with pytest.raises(BadInputError, match=r"part-0\.parquet: holds a column 'label', which its folder names too"):
        ml.datasets.read_table(both)


def test_a_folder_whose_only_parquet_file_pyarrow_skips_is_refused_by_name(tmp_path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    pq.write_table(_rows([1.0], [2.0]), folder / "_part-0.parquet")  # pyarrow skips names beginning with _ or .
    with pytest.raises(BadInputError, match=r"folder .*t: holds no Parquet file to read"):
        ml.datasets.read_table(folder)


def test_labels_a_parquet_dataset_holds_as_integers_or_folders_name_as_digits_read_as_written(tmp_path) -> None:
    numbers = _parts(tmp_path / "numbers", _rows([1.0], [2.0], label=[3]), _rows([4.0], [5.0], label=[4]))
    assert ml.datasets.read_table(numbers).class_names == ["3", "4"]
    digits = tmp_path / "digits"
    pq.write_to_dataset(_rows([1.0, 2.0], [3.0, 4.0], label=["01", "02"]), digits, partition_cols=["label"])
    assert ml.datasets.read_table(digits).class_names == ["01", "02"]  # not 1 and 2


def test_class_names_of_one_number_are_ordered_alike_in_every_process() -> None:
    code = ("from metalabel.data.sources._common import sorted_class_names; "
            "print(sorted_class_names(['1', '01', '2', '001']))")
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert orders == {"['001', '01', '1', '2']\n"}
