"""The data set registry: ``metalabel.datasets.load(name, ...)`` and readers for user data.

Each built-in source lives in ``metalabel.data.sources.<module>`` and exposes
``load(*, split, root, seed, **options) -> LabeledDataset``; it is imported only
when asked for, so loading one source never pays for another's dependencies.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError, DataNotFoundError, UnknownDatasetError, check_whole_number

if TYPE_CHECKING:
    from metalabel.data.sources.user import ChunkedPool

# name -> (module under metalabel.data.sources, default split, splits)
_SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "kanji": ("kanji", "background", ("background", "evaluation")),
    "omniglot": ("omniglot", "background", ("background", "evaluation")),
    "fashion-mnist": ("fashion_mnist", "train", ("train", "test")),
    "20newsgroups": ("newsgroups", "train", ("train", "test")),
}


def available() -> list[str]:
    """Names ``load`` accepts."""
    return sorted(_SOURCES)


def load(
    name: str,
    *,
    split: str | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    **options,
) -> LabeledDataset:
    """Load a built-in data source by name, e.g. ``load("kanji", split="evaluation")``.

    ``root`` points at data the user already has on disk (required for ``omniglot``);
    ``seed`` fixes every random choice the source makes (kanji rendering).
    """
    key = name.lower().replace("_", "-")
    if key not in _SOURCES:
        raise UnknownDatasetError(
            f"no data set named {name!r}; known: {', '.join(available())}. "
            "For your own data use metalabel.datasets.imagefolder / read_text / read_table."
        )
    module_name, default_split, splits = _SOURCES[key]
    split = split or default_split
    if split not in splits:
        raise UnknownDatasetError(f"{key} has no split {split!r}; choose one of {', '.join(splits)}")
    module = importlib.import_module(f"metalabel.data.sources.{module_name}")
    dataset = module.load(split=split, root=root, seed=seed, **options)
    dataset.reload_spec = {"source": key, "split": split, "root": None if root is None else str(Path(root).resolve()),
                           "seed": seed, "options": options}
    return dataset


_CHUNKED_READER = {"imagefolder": "chunked_imagefolder", "read_text": "chunked_text", "read_table": "chunked_table"}


def _read_user_data(reader: str, path: str | Path, options: dict, *, mapped: bool = False) -> LabeledDataset:
    # imported on use so `import metalabel` stays light
    user = importlib.import_module("metalabel.data.sources.user")
    read = getattr(user, _CHUNKED_READER[reader])  # what the reader itself reads through, joined by .dataset()
    _check_options(reader, read, path, options)
    dataset = read(path, **options).dataset(mapped=mapped)
    dataset.reload_spec = {"reader": reader, "path": str(Path(path).resolve()), "options": options}
    return dataset


def _check_options(reader: str, read, path: str | Path, options: dict) -> None:
    accepted = [name for name, p in inspect.signature(read).parameters.items() if p.kind is p.KEYWORD_ONLY]
    if unknown := sorted(set(options) - set(accepted)):
        raise BadInputError(
            f"{reader} takes no option {', '.join(map(repr, unknown))}",
            path=path,
            hint=f"its options are {', '.join(accepted)}",
        )


def imagefolder(path: str | Path, **options) -> LabeledDataset:
    """Images in one folder per class, plus an optional ``unlabeled/`` folder; see ``sources.user.imagefolder``."""
    return _read_user_data("imagefolder", path, options)


def read_text(path: str | Path, **options) -> LabeledDataset:
    """Text rows from CSV/TSV or JSONL (``text``, optional ``label``); see ``sources.user.read_text``."""
    return _read_user_data("read_text", path, options)


def read_table(path: str | Path, **options) -> LabeledDataset:
    """Numeric rows from CSV/TSV, JSONL or Parquet (optional ``label``); see ``sources.user.read_table``."""
    return _read_user_data("read_table", path, options)


def from_spec(spec: str | Path, *, seed: int = 0, mapped: bool = False, **options) -> LabeledDataset:
    """Resolve what a user typed on the command line into a data set.

    A folder is an image folder, or a table if it holds Parquet files and no images (a Parquet
    dataset); a CSV/TSV with a ``text`` column or a JSONL file whose first object has a ``text``
    key is text; Parquet and any other CSV/TSV/JSONL is a table; anything else is ``name[:split]``
    of a built-in source, e.g. ``fashion-mnist:test``.
    ``options`` go to the reader, e.g. ``encoding="cp1252"`` for a file not saved as UTF-8.
    ``mapped``: the user's own data is kept in a file, not the heap, as ``reload`` keeps it.
    """
    reader = _user_reader(spec, options)
    if reader is not None:
        return _read_user_data(reader, Path(spec), options, mapped=mapped)
    name, _, split = str(spec).partition(":")
    return load(name, split=split or None, seed=seed, **options)


def chunked(path: str | Path, **options) -> ChunkedPool:
    """A pool's file or folder to read a chunk at a time (a ``ChunkedPool``), told apart as ``from_spec`` does.

    ``metalabel.data.encoders.embed_in_chunks(pool, encoder)`` embeds it with memory bounded by the
    chunk size, into the cache the labeling run reads; ``pool.dataset()`` reads it whole.
    """
    user = importlib.import_module("metalabel.data.sources.user")
    reader = _user_reader(path, options)
    if reader is None:
        raise DataNotFoundError("does not exist", path=path, hint="give a folder of images, or a CSV, JSONL or "
                                "Parquet file, or a folder of Parquet files")
    read = getattr(user, _CHUNKED_READER[reader])
    _check_options(reader, read, path, options)
    return read(path, **options)


def _user_reader(spec: str | Path, options: dict) -> str | None:
    """The reader of ``sources.user`` for a file or folder; ``None`` when ``spec`` is neither and names no file."""
    user = importlib.import_module("metalabel.data.sources.user")
    path = Path(spec)
    suffix = path.suffix.lower()
    known_suffixes = user.CSV_SUFFIXES | user.JSONL_SUFFIXES | user.PARQUET_SUFFIXES
    if path.is_dir():
        return "read_table" if user.is_parquet_dataset(path) else "imagefolder"
    if path.is_file():
        if suffix not in known_suffixes:
            raise UnknownDatasetError(
                f"{path}: cannot tell what kind of data this is; use a folder of images, "
                f"or a file ending in {', '.join(sorted(known_suffixes))}"
            )
        is_text = suffix not in user.PARQUET_SUFFIXES and options.get("text_column", "text") in user.columns_of(
            path, encoding=options.get("encoding", "utf-8")
        )
        return "read_text" if is_text else "read_table"
    if suffix in known_suffixes or "/" in str(spec):
        raise DataNotFoundError("does not exist", path=path, hint="check the path")
    return None


def reload(spec: dict, *, mapped: bool = False) -> LabeledDataset:
    """Load a data set again from its ``reload_spec`` (what a project records about its pool).

    ``mapped``: the items of the user's own data (an image folder, a text file, a table) are read
    a chunk at a time into a file and read from it as they are used (``ChunkedPool.dataset``), not
    held in memory: how a project's run reads its pool. Built-in sources load as they always do.
    """
    if "reader" in spec:
        return _read_user_data(spec["reader"], spec["path"], spec.get("options", {}), mapped=mapped)
    return load(spec["source"], split=spec.get("split"), root=spec.get("root"), seed=spec.get("seed", 0),
                **spec.get("options", {}))


def seed_labels_from_pool(pool: LabeledDataset, *, per_class: int, seed: int) -> dict[int, str]:
    """``per_class`` random labeled items of each class as seed labels, ``{pool index: class}``.

    For simulations on a pool that is labeled already: pass the result as
    ``Project.create(..., labels=...)``. The same ``seed`` draws the same items.
    """
    check_whole_number("per_class", per_class, minimum=1)
    rng = np.random.default_rng(seed)
    seeds: dict[int, str] = {}
    for cls, members in enumerate(pool.class_indices()):
        if len(members) < per_class:
            raise BadInputError(f"only {len(members)} labeled items, fewer than the {per_class} seed labels per "
                                "class asked for", cls=pool.class_names[cls],
                                hint="ask for fewer seed labels per class, or label more items of this class")
        for index in rng.choice(members, size=per_class, replace=False):
            seeds[int(index)] = pool.class_names[cls]
    return seeds


def gold_labels(pool: LabeledDataset) -> dict[str, str]:
    """``{uri: class}`` for every labeled item of ``pool``: the answers a simulated oracle gives, the gold to score."""
    return {uri: pool.class_names[label] for uri, label in zip(pool.uris, pool.labels, strict=True) if label >= 0}
