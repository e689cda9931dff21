"""Bad input the readers used to let in or crash on (issue 9, items 9, 13, 14): each gets a typed error."""

from __future__ import annotations

import os

import numpy as np
import pytest

import metalabel as ml
from metalabel.errors import BadInputError, UnreadableItemError

# --- item 9: NaN and inf in a table -------------------------------------------


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity", "1e39"])  # 1e39 overflows float32
def test_read_table_csv_rejects_a_non_finite_cell_naming_row_and_column(tmp_path, cell):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text(f"a,b,label\n1,2,x\n3,{cell},y\n")
    with pytest.raises(UnreadableItemError, match=rf"t\.csv, row 3: column 'b' holds {cell!r}, not a finite") as error:
        ml.datasets.read_table(csv_file)
    assert error.value.row == 3 and error.value.hint
    dataset = ml.datasets.read_table(csv_file, on_error="skip")
    assert len(dataset) == 1 and dataset.skipped[0][0] == f"{csv_file}:3"


def test_read_table_parquet_rejects_nan_naming_row_and_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet_file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0.5, float("nan")], "label": ["a", "b"]}), parquet_file)
    with pytest.raises(UnreadableItemError, match=r"t\.parquet, row 2: column 'y' holds nan") as error:
        ml.datasets.read_table(parquet_file)
    assert error.value.row == 2


def test_read_table_jsonl_reads_numbers_and_rejects_nan_and_infinity(tmp_path):
    jsonl_file = tmp_path / "t.ndjson"
    jsonl_file.write_text('{"a": 1, "b": 2.5, "label": "x"}\n\n{"a": 3, "b": -1}\n')
    dataset = ml.datasets.read_table(jsonl_file)
    np.testing.assert_array_equal(dataset.items, [[1, 2.5], [3, -1]])
    assert dataset.feature_names == ["a", "b"] and dataset.labels.tolist() == [0, ml.UNLABELED]
    assert dataset.uris == [f"{jsonl_file}:1", f"{jsonl_file}:3"]  # line numbers, blank lines counted

    jsonl_file.write_text('{"a": 1, "b": 2}\n{"a": NaN, "b": 2}\n{"a": 1, "b": -Infinity}\n{"a": 1e999, "b": 2}\n')
    with pytest.raises(UnreadableItemError, match=r"t\.ndjson, row 2: column 'a' holds nan"):
        ml.datasets.read_table(jsonl_file)
    dataset = ml.datasets.read_table(jsonl_file, on_error="skip")
    assert len(dataset) == 1 and [where for where, _ in dataset.skipped] == [
        f"{jsonl_file}:{row}" for row in (2, 3, 4)
    ]


def test_read_table_jsonl_huge_integer_is_a_typed_error(tmp_path):
    jsonl_file = tmp_path / "t.jsonl"
    jsonl_file.write_text('{"a": 1}\n{"a": ' + "9" * 400 + "}\n")  # float() of it overflows
    with pytest.raises(UnreadableItemError, match=r"row 2: column 'a' holds 9+\.\.\.9+, not a finite"):
        ml.datasets.read_table(jsonl_file)


def test_labeled_dataset_rejects_non_finite_features_naming_the_item_and_feature():
    with pytest.raises(BadInputError, match=r"item 1 \('row-1'\).*feature 'height'.*inf") as error:
        ml.LabeledDataset(
            "t", "tabular", np.array([[1.0, 2.0], [3.0, np.inf]], dtype=np.float32), np.array([0, 0]),
            ["a"], ["row-0", "row-1"], feature_names=["width", "height"],
        )
    assert error.value.hint


# --- item 14: LabeledDataset raises typed errors --------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": [0]}, r"2 items but 1 labels and 2 uris"),
        ({"uris": ["a"]}, r"2 items but 2 labels and 1 uris"),
        ({"labels": [0, 2]}, r"item 1 \('b'\) has label 2, outside -1\.\.1"),
        ({"labels": [0, -2]}, r"item 1 \('b'\) has label -2"),
        ({"labels": ["x", "y"]}, r"labels must be whole numbers"),
        ({"labels": [0.5, 1]}, r"labels must be whole numbers"),
        ({"groups": ["g"]}, r"one group per class.*2 classes but 1 groups"),
        ({"modality": "audio"}, r"modality must be one of image, text, tabular"),
        ({"class_names": ["x", "x"]}, r"class_names lists 'x' more than once"),
    ],
)
def test_labeled_dataset_bad_arguments_are_typed_errors(change, message):
    arguments = {"name": "t", "modality": "text", "items": ["one", "two"], "labels": [0, 1],
                 "class_names": ["x", "y"], "uris": ["a", "b"]} | change
    with pytest.raises(BadInputError, match=message) as error:
        ml.LabeledDataset(**arguments)
    assert error.value.hint


# --- item 13: what from_spec reads a file as --------------------------------------


def test_from_spec_reads_a_utf8_bom_csv_with_a_text_column_as_text(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_bytes("text,label\nhello,a\nbye,b\n".encode("utf-8-sig"))
    dataset = ml.datasets.from_spec(csv_file)
    assert dataset.modality == "text" and dataset.items == ["hello", "bye"]


def test_from_spec_latin1_csv_names_file_row_and_encoding_then_reads_with_encoding(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_bytes("text,label\nplain,a\ncafé crème,b\n".encode("latin-1"))
    with pytest.raises(UnreadableItemError, match=r"t\.csv, row 3: is not UTF-8 text \(byte 0xe9\)") as error:
        ml.datasets.from_spec(csv_file)
    assert "encoding='cp1252'" in error.value.hint and "--source-option encoding=cp1252" in error.value.hint
    dataset = ml.datasets.from_spec(csv_file, encoding="cp1252")
    assert dataset.modality == "text" and dataset.items == ["plain", "café crème"]
    assert ml.datasets.reload(dataset.reload_spec).items == dataset.items  # the choice is remembered


def test_readers_report_the_undecodable_row_and_reject_an_unknown_encoding(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_bytes("a,label\n1,x\n2,\xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(UnreadableItemError, match=r"row 3: is not UTF-8 text"):
        ml.datasets.read_table(csv_file)
    assert ml.datasets.read_table(csv_file, encoding="latin-1").class_names == ["x", "été"]
    with pytest.raises(BadInputError, match=r"encoding 'klingon' is not a text encoding Python knows"):
        ml.datasets.read_text(csv_file, encoding="klingon")


@pytest.mark.parametrize(
    "name, content, modality",
    [
        ("t.tsv", "text\tlabel\nhello\ta\nbye\tb\n", "text"),
        ("t.tsv", "x\tlabel\n1\ta\n2\tb\n", "tabular"),
        ("t.ndjson", '{"text": "hello"}\n{"text": "bye"}\n', "text"),
        ("t.jsonl", '{"x": 1}\n{"x": 2}\n', "tabular"),
    ],
)
def test_from_spec_takes_every_suffix_the_readers_take(tmp_path, name, content, modality):
    (tmp_path / name).write_text(content)
    dataset = ml.datasets.from_spec(tmp_path / name)
    assert dataset.modality == modality and len(dataset) == 2


def test_from_spec_detects_text_by_the_text_column_asked_for_and_names_unknown_options(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"body": "hello"}\n{"body": "bye"}\n')
    assert ml.datasets.from_spec(tmp_path / "t.jsonl", text_column="body").items == ["hello", "bye"]
    with pytest.raises(BadInputError, match=r"read_table takes no option 'size'.*its options are label_column"):
        ml.datasets.from_spec(tmp_path / "t.jsonl", size=28)


def test_from_spec_takes_pq_and_names_a_missing_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "t.pq")
    assert ml.datasets.from_spec(tmp_path / "t.pq").modality == "tabular"
    with pytest.raises(ml.errors.DataNotFoundError, match=r"missing\.tsv"):
        ml.datasets.from_spec(tmp_path / "missing.tsv")


# --- item 14: CSV cells over the csv module's 128 KiB default ----------------------


def test_read_text_takes_a_cell_over_128_kib(tmp_path):
    long_text = "word " * 60_000  # 300 KB
    csv_file = tmp_path / "t.csv"
    csv_file.write_text(f'text,label\nshort,a\n"{long_text}",b\n')
    assert ml.datasets.from_spec(csv_file).items == ["short", long_text]


def test_a_cell_over_the_limit_names_the_row_and_says_how(tmp_path, monkeypatch):
    from metalabel.data.sources import _common

    monkeypatch.setattr(_common, "CSV_CELL_LIMIT", 1000)  # the real limit is too large to write in a test
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('text,label\nshort,a\n"' + "x" * 2000 + '",b\n')
    with pytest.raises(UnreadableItemError, match=r"t\.csv, row 3: a cell is longer than 1,000 characters") as error:
        ml.datasets.read_text(csv_file)
    assert "unmatched quote" in error.value.hint
    csv_file.write_text("x" * 2000 + ",label\n1,a\n")  # from_spec reads the header to choose a reader
    with pytest.raises(UnreadableItemError, match=r"row 1: a cell is longer"):
        ml.datasets.from_spec(csv_file)


def test_jsonl_nested_too_deep_is_a_typed_error(tmp_path):
    jsonl_file = tmp_path / "t.jsonl"
    jsonl_file.write_text('{"text": "fine"}\n' + "[" * 100_000 + "\n")
    with pytest.raises(UnreadableItemError, match=r"row 2: is not a JSON object"):
        ml.datasets.read_text(jsonl_file)


# --- found by tests/test_fuzz_readers.py --------------------------------------------


def test_utf16_without_a_bom_and_a_non_text_codec_are_typed_errors(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("text\nhi\n")
    with pytest.raises(UnreadableItemError, match=r"is not utf-16 text \(UTF-16 stream does not start with BOM\)"):
        ml.datasets.read_text(csv_file, encoding="utf-16")
    with pytest.raises(BadInputError, match=r"encoding 'base64' is not a text encoding"):
        ml.datasets.read_text(csv_file, encoding="base64")


def test_imagefolder_file_and_folder_names_that_are_not_utf8(tmp_path):
    from PIL import Image

    for folder in ("cat", "dog"):
        (tmp_path / folder).mkdir()
        Image.new("L", (4, 4)).save(tmp_path / folder / "ok.png")
    bad_name = os.path.join(os.fsencode(tmp_path / "cat"), b"bad\xff.png")
    with open(bad_name, "wb") as out:
        out.write((tmp_path / "cat" / "ok.png").read_bytes())
    with pytest.raises(UnreadableItemError, match=r"cat/bad\\xff\.png: the file's name is not UTF-8 text -> rename"):
        ml.datasets.imagefolder(tmp_path)
    dataset = ml.datasets.imagefolder(tmp_path, on_error="skip")
    assert len(dataset) == 2 and dataset.skipped[0][0].endswith("bad\\xff.png")
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"bird\xff"))
    with pytest.raises(BadInputError, match=r"bird\\xff: this folder's name is not UTF-8 text"):
        ml.datasets.imagefolder(tmp_path, on_error="skip")


def test_jsonl_lone_surrogate_escape_is_a_bad_item(tmp_path):
    jsonl_file = tmp_path / "t.jsonl"
    jsonl_file.write_text('{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n{"text": "ok", "label": "\\uDFFF"}\n')
    with pytest.raises(UnreadableItemError, match=r"row 2: holds an escaped lone surrogate"):
        ml.datasets.read_text(jsonl_file)
    assert ml.datasets.read_text(jsonl_file, on_error="skip").items == ["fine"]


def test_parquet_with_values_python_cannot_convert_names_the_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet_file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.0], "when": pa.array([2**40], pa.timestamp("s"))}), parquet_file)
    with pytest.raises(UnreadableItemError, match=r"column 'when' holds values Python cannot read"):
        ml.datasets.read_table(parquet_file)
    pq.write_table(pa.table({"x\N{LATIN SMALL LETTER E WITH ACUTE}": [1.0]}), parquet_file)
    data = parquet_file.read_bytes()
    parquet_file.write_bytes(data.replace("x\N{LATIN SMALL LETTER E WITH ACUTE}".encode(), b"x\xff\xfe"))
    with pytest.raises(UnreadableItemError, match=r"is not a readable Parquet file"):
        ml.datasets.read_table(parquet_file)


@pytest.mark.parametrize("content", ["", "\n\n"], ids=["empty", "blank-lines"])
def test_read_table_jsonl_with_no_record_says_so(tmp_path, content):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(BadInputError, match="holds no records") as caught:
        ml.datasets.read_table(path)
    assert str(path) in str(caught.value)
