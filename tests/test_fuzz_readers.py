"""Fuzz the readers: malformed seed CSVs, pool CSV/TSV/JSONL/Parquet files and image folders.

Each read either succeeds or raises a ``metalabel.errors.MetalabelError``, never anything
else; a refused ``Project.create`` leaves no project folder (nor its staging folder) behind.

CI runs a few hundred fixed cases (derandomized, so a new random find never breaks an
unrelated change). For a long random run:
``METALABEL_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/test_fuzz_readers.py``
(the count is per test).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import metalabel as ml
from metalabel.errors import MetalabelError

_LONG_RUN = os.environ.get("METALABEL_FUZZ_EXAMPLES")
settings.register_profile(
    "metalabel-fuzz-ci", max_examples=50, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "metalabel-fuzz-long", max_examples=int(_LONG_RUN or 1), deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# damaged TIFF and EXIF data make PIL warn before it fails or reads on; the fuzz expects that
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

# applied per test rather than loaded, so other test files keep hypothesis' defaults
fuzz_settings = settings(settings.get_profile("metalabel-fuzz-long" if _LONG_RUN else "metalabel-fuzz-ci"))

# --- what a broken file is made of ----------------------------------------------

NASTY_CELLS = [
    "", " ", "nan", "NaN", "inf", "-Infinity", "1e39", "-1e39", "1e308", "0", "-0", "1.5", "1,5", "0x10",
    "1_000", "True", "null", '"', '""', 'a"b', "\n", "\r\n", "\r", "\t", ",", "\x00", "\ufeff", "é",
    "日本", "=1+1", "\x1b[2J", "😀", " 7 ", "cat", "dog",
]
GOOD_CELLS = ["1", "2.5", "-3", "0.001", "hello world", "cat", "dog"]
cells = st.one_of(
    st.sampled_from(GOOD_CELLS),  # listed twice: half the cells are fine, so reads get past the first row
    st.sampled_from(GOOD_CELLS),
    st.sampled_from(NASTY_CELLS),
    st.integers(150_000, 300_000).map(lambda n: "x" * n),  # over the csv module's default 128 KiB cell limit
    st.text(max_size=8),
    st.floats().map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
COLUMN_NAMES = ["text", "label", "a", "b", "uri", "item", "", " text ", "Label", "\ufefftext"]
pool_headers = st.one_of(
    st.sampled_from([["text", "label"], ["a", "b", "label"], ["a", "b"]]),
    st.lists(st.sampled_from(COLUMN_NAMES), max_size=4),
)


@st.composite
def encoded(draw, text: str) -> bytes:
    """``text`` as bytes in some encoding, sometimes cut short or with bytes spliced in."""
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    mangle = draw(st.sampled_from(["none", "none", "truncate", "splice"]))
    if mangle == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif mangle == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


@st.composite
def delimited_files(draw, *, headers=pool_headers, rows=st.lists(st.lists(cells, max_size=5), max_size=6)):
    """``(suffix, content)`` of a CSV or TSV, joined by hand so quotes can be unbalanced."""
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    delimiter = "\t" if suffix == ".tsv" else ","
    header = draw(headers)
    rows = draw(rows)

    def line(values: list[str]) -> str:
        if draw(st.booleans()):  # quoted as a spreadsheet would
            return delimiter.join('"' + v.replace('"', '""') + '"' for v in values)
        return delimiter.join(values)

    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(line(values) for values in [header, *rows]) + draw(st.sampled_from(["", newline]))
    return suffix, draw(encoded(text))


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(), st.integers(min_value=-(10**400), max_value=10**400),
        st.sampled_from(NASTY_CELLS), st.text(max_size=6),
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)
json_lines = st.one_of(
    st.dictionaries(st.sampled_from(["text", "label", "a", "b", "body"]), json_values, max_size=4).map(json.dumps),
    st.sampled_from([
        "", "{", "}", "[]", "1", "null", '"text"', "[" * 5000, '{"text": "\\ud800 lone"}',
        '{"text": "ok", "label": "\\udfff"}', '{"a": NaN}', '{"a": -Infinity}', '{"a": ' + "9" * 5000 + "}",
        '{"text": "a"} trailing', "\x00",
    ]),
    st.text(max_size=12),
)


@st.composite
def jsonl_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".jsonl", ".ndjson"]))
    lines = draw(st.lists(json_lines, max_size=6))
    return suffix, draw(encoded("\n".join(lines) + "\n"))


def _image_bytes(fmt: str, mode: str, width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    if fmt == "JPEG" and mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@st.composite
def image_contents(draw) -> bytes:
    """A small image in some format and mode, maybe truncated or damaged; or not an image at all."""
    kind = draw(st.sampled_from(["image", "image", "truncated", "flipped", "garbage", "empty"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16", "LA"]))
    if fmt != "PNG" and mode in ("I;16", "LA"):
        mode = "L"
    data = _image_bytes(fmt, mode, draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(0, 9)))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


ODD_NAMES = [
    "cat", "dog", "a b", "ünï", "-x", "日本", " lead", "trail ", "unlabeled", ".hidden", "new\nline",
    "tab\tname", "quote\"d", "back\\slash", "esc\x1b[2J", "n" * 200, b"bad\xff",
]
IMAGE_SUFFIX_CHOICES = [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".webp", ".PNG", ".txt", ""]


def _entry(parent: Path, name: str | bytes) -> Path:
    """``parent / name``, for a name given as bytes too (not valid UTF-8, as a file system allows)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(parent), name if isinstance(name, bytes) else os.fsencode(name))))


@st.composite
def image_folders(draw) -> list[tuple[str | bytes | None, str | bytes, bytes]]:
    """``(class folder or None for the top, file name, content)`` per file."""
    folders = draw(st.lists(st.sampled_from(ODD_NAMES), max_size=3, unique=True))
    files = []
    for folder in [None, *folders]:
        for _ in range(draw(st.integers(0, 3))):
            stem = draw(st.sampled_from(ODD_NAMES))
            suffix = draw(st.sampled_from(IMAGE_SUFFIX_CHOICES))
            name = stem + suffix.encode() if isinstance(stem, bytes) else stem + suffix
            files.append((folder, name, draw(image_contents())))
    return files


def _write_image_folder(root: Path, files) -> None:
    root.mkdir()
    for folder, name, content in files:
        parent = root if folder is None else _entry(root, folder)
        if parent.is_file() or _entry(parent, name).is_dir():  # a file and a folder of one name
            continue
        parent.mkdir(exist_ok=True)
        _entry(parent, name).write_bytes(content)


@st.composite
def parquet_tables(draw):
    pa = pytest.importorskip("pyarrow")
    n = draw(st.integers(0, 4))
    column_kinds = {
        "float": lambda: pa.array(draw(st.lists(st.floats() | st.none(), min_size=n, max_size=n)), pa.float64()),
        "int": lambda: pa.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), pa.int64()),
        "string": lambda: pa.array(
            draw(st.lists(st.sampled_from(NASTY_CELLS) | st.none(), min_size=n, max_size=n))
        ),
        "bool": lambda: pa.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        "list": lambda: pa.array(draw(st.lists(st.lists(st.integers(0, 9), max_size=2), min_size=n, max_size=n))),
        "binary": lambda: pa.array(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), pa.binary()),
        "null": lambda: pa.nulls(n),
        "timestamp": lambda: pa.array(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)), pa.timestamp("s")),
    }
    names = draw(st.lists(st.sampled_from(["a", "b", "label", "text", "x y"]), max_size=4, unique=True))
    return pa.table({name: column_kinds[draw(st.sampled_from(sorted(column_kinds)))]() for name in names})


# --- what every read must do ----------------------------------------------------


def _succeeds_or_refuses(read, *args, **options) -> ml.LabeledDataset | None:
    """The data set, or None if ``read`` refused with a typed error; any other exception fails the test."""
    try:
        dataset = read(*args, **options)
    except MetalabelError as error:
        event(f"{read.__name__}: refused ({type(error).__name__})")  # --hypothesis-show-statistics counts these
        return None
    event(f"{read.__name__}: read")
    assert isinstance(dataset, ml.LabeledDataset)
    assert len(dataset.labels) == len(dataset.items) == len(dataset.uris)
    if dataset.modality == "tabular":
        assert np.isfinite(dataset.items).all()
    return dataset


def _project_is_made_or_left_out(folder: Path, *, pool: ml.LabeledDataset, labels=None) -> None:
    """``Project.create`` succeeds, or refuses with a typed error and leaves nothing behind."""
    try:
        with ml.Project.create(folder, pool=pool, labels=labels):
            pass
    except MetalabelError as error:
        event(f"Project.create: refused ({type(error).__name__})")
        assert not folder.exists(), f"a refused Project.create left {folder} behind"
        assert not list(folder.parent.glob(f".{folder.name}.staging-*")), "a refused create left its staging folder"
    else:
        event("Project.create: made")
        assert (folder / "project.db").is_file()


def _read_every_way(path: Path, *, make_project: bool, encoding: str, on_error: str) -> None:
    datasets = [
        _succeeds_or_refuses(ml.datasets.from_spec, path),
        _succeeds_or_refuses(ml.datasets.from_spec, path, encoding=encoding, on_error=on_error),
    ]
    suffix = path.suffix.lower()
    if suffix != ".parquet" and suffix != ".pq":
        datasets.append(_succeeds_or_refuses(ml.datasets.read_text, path, encoding=encoding, on_error=on_error))
    datasets.append(_succeeds_or_refuses(ml.datasets.read_table, path, encoding=encoding, on_error=on_error))
    readable = [dataset for dataset in datasets if dataset is not None and len(dataset) >= 2]
    if make_project and readable:
        _project_is_made_or_left_out(path.parent / "project", pool=readable[0])


read_options = {
    "make_project": st.booleans(),
    "encoding": st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    "on_error": st.sampled_from(["raise", "skip"]),
}

# --- the fuzz tests ---------------------------------------------------------------


@fuzz_settings
@given(file=delimited_files(), **read_options)
def test_fuzz_pool_csv_and_tsv(file, make_project, encoding, on_error):
    suffix, content = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pool{suffix}"
        path.write_bytes(content)
        _read_every_way(path, make_project=make_project, encoding=encoding, on_error=on_error)


@fuzz_settings
@given(file=jsonl_files(), **read_options)
def test_fuzz_pool_jsonl(file, make_project, encoding, on_error):
    suffix, content = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pool{suffix}"
        path.write_bytes(content)
        _read_every_way(path, make_project=make_project, encoding=encoding, on_error=on_error)


@fuzz_settings
@given(table=parquet_tables(), damage=st.sampled_from(["none", "none", "truncate", "flip"]),
       at=st.floats(0, 1), suffix=st.sampled_from([".parquet", ".pq"]), **read_options)
def test_fuzz_pool_parquet(table, damage, at, suffix, make_project, encoding, on_error):
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pool{suffix}"
        pq.write_table(table, path)
        data = path.read_bytes()
        cut = int(at * (len(data) - 1))
        if damage == "truncate":
            path.write_bytes(data[:cut])
        elif damage == "flip":
            path.write_bytes(data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1 :])
        _read_every_way(path, make_project=make_project, encoding=encoding, on_error=on_error)


@fuzz_settings
@given(files=image_folders(), size=st.sampled_from([None, 6, (4, 7)]), grayscale=st.sampled_from([None, True, False]),
       on_error=st.sampled_from(["raise", "skip"]), make_project=st.booleans())
def test_fuzz_image_folders(files, size, grayscale, on_error, make_project):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        _write_image_folder(root, files)
        datasets = [
            _succeeds_or_refuses(ml.datasets.from_spec, root),
            _succeeds_or_refuses(ml.datasets.imagefolder, root, size=size, grayscale=grayscale, on_error=on_error),
        ]
        readable = [dataset for dataset in datasets if dataset is not None and len(dataset) >= 2]
        if make_project and readable:
            _project_is_made_or_left_out(Path(folder) / "project", pool=readable[0])


POOL_URIS = ["/data/pool/cat/1.png", "/data/pool/cat/2.png", "/data/pool/dog/1.png", "/data/pool/dog/10.png",
             "/data/pool/é/1.png"]
SEED_CELLS = st.one_of(
    st.sampled_from(POOL_URIS),
    st.sampled_from(POOL_URIS),
    st.sampled_from(["cat", "dog"]),
    st.sampled_from(["cat/1.png", "1.png", "dog/10.png", "/data/pool/", "10.png", "é/1.png", "CAT", "Cat", "cat",
                     "dog", "a", "A"]),
    cells,
)


@fuzz_settings
@given(file=delimited_files(
    headers=st.one_of(
        st.sampled_from([["uri", "label"], ["item", "label"]]),
        st.lists(st.sampled_from(["uri", "item", "label", "Label", " URI ", "text", ""]), max_size=4),
    ),
    rows=st.one_of(
        st.lists(st.tuples(st.sampled_from(POOL_URIS), st.sampled_from(["cat", "dog"])).map(list), min_size=2,
                 max_size=5),  # mostly a good seed file, so Project.create gets to write a store
        st.lists(st.lists(SEED_CELLS, max_size=4), max_size=6),
    ),
))
def test_fuzz_seed_csv_through_project_create(file):
    suffix, content = file
    pool = ml.LabeledDataset("pool", "text", [f"item {i}" for i in range(len(POOL_URIS))],
                             np.full(len(POOL_URIS), ml.UNLABELED), [], list(POOL_URIS))
    with tempfile.TemporaryDirectory() as folder:
        seed_file = Path(folder) / f"seed{suffix}"
        seed_file.write_bytes(content)
        _project_is_made_or_left_out(Path(folder) / "project", pool=pool, labels=seed_file)
