"""Omniglot (Lake et al.), read from the standard layout the user already has on disk.

``root`` holds ``images_background/`` and ``images_evaluation/`` (or the zips
``images_background.zip`` / ``images_evaluation.zip``, read without extracting),
each as ``<Alphabet>/<characterNN>/*.png``. A class is ``"<Alphabet>/<characterNN>"``
and its group is the alphabet, so episodes can be drawn within one alphabet.

Polarity: the files draw black strokes on white; metalabel inverts them, so ink is
255 and background 0, like Fashion-MNIST. The 105x105 binary images are resized with
antialiasing (Lanczos) to ``size`` (28 by default; ``None`` keeps 105), giving
uint8 ``[N, size, size]``.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.data.sources._common import BadItems, FileOpener, ImageFile, OnError, existing_path, image_dataset
from metalabel.errors import DataNotFoundError, UnreadableItemError

SOURCE_URL = "https://github.com/brendenlake/omniglot"
_HOW_TO_GET = (
    f"download images_background.zip and images_evaluation.zip from {SOURCE_URL} (folder python/) "
    "into one folder and pass it: metalabel.datasets.load('omniglot', root='path/to/that/folder'); "
    "unzipped folders work too"
)

# (alphabet, character) -> [(uri, open the image), ...]
FilesByClass = dict[tuple[str, str], list[tuple[str, Callable[[], IO[bytes]]]]]


def load(
    *,
    split: str = "background",
    root: str | Path | None = None,
    seed: int = 0,  # the registry passes one; reading Omniglot makes no random choice
    size: int | None = 28,
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Load one Omniglot split (``"background"``: 964 characters, ``"evaluation"``: 659) from ``root``."""
    if root is None:
        raise DataNotFoundError("Omniglot is not bundled with metalabel and needs root=...", hint=_HOW_TO_GET)
    root = existing_path(root, folder=True)
    bad_items = BadItems(on_error)
    folder, archive = root / f"images_{split}", root / f"images_{split}.zip"
    if folder.is_dir():
        return _from_folder(folder, split=split, size=size, bad_items=bad_items)
    if archive.is_file():
        return _from_zip(archive, split=split, size=size, bad_items=bad_items)
    raise DataNotFoundError(f"neither {folder.name}/ nor {archive.name} is here", path=root, hint=_HOW_TO_GET)


def _omniglot_dataset(
    split: str,
    files_by_class: FilesByClass,
    *,
    where: Path,
    size: int | None,
    bad_items: BadItems,
) -> LabeledDataset:
    classes = sorted(files_by_class)
    files = [
        ImageFile(uri=uri, label=label, open=opener)
        for label, key in enumerate(classes)
        for uri, opener in sorted(files_by_class[key], key=lambda file: file[0])
    ]
    dataset = image_dataset(
        f"omniglot-{split}",
        files,
        [f"{alphabet}/{character}" for alphabet, character in classes],
        where=where,
        size=size,
        grayscale=True,
        bad_items=bad_items,
        groups=[alphabet for alphabet, _ in classes],
    )
    if isinstance(dataset.items, np.ndarray):  # always: image_dataset stacks the images into one array
        dataset.items = 255 - dataset.items  # ink bright on dark, as documented above
    return dataset


def _visible_dirs(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")]


def _from_folder(folder: Path, *, split: str, size: int | None, bad_items: BadItems) -> LabeledDataset:
    files_by_class: FilesByClass = {
        (alphabet.name, character.name): [
            (str(png), FileOpener(png)) for png in character.glob("*.png")
        ]
        for alphabet in _visible_dirs(folder)
        for character in _visible_dirs(alphabet)
    }
    if not files_by_class:
        raise DataNotFoundError("holds no <Alphabet>/<character>/ folders", path=folder, hint=_HOW_TO_GET)
    return _omniglot_dataset(split, files_by_class, where=folder, size=size, bad_items=bad_items)


def _from_zip(archive_path: Path, *, split: str, size: int | None, bad_items: BadItems) -> LabeledDataset:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnreadableItemError(f"is not a readable zip: {error}", path=archive_path, hint=_HOW_TO_GET) from error
    with archive:
        files_by_class: FilesByClass = {}
        for member in archive.namelist():
            parts = member.split("/")
            # "<prefix>/<Alphabet>/<character>/<file>.png"; __MACOSX/ holds resource forks, not images
            if member.endswith(".png") and len(parts) >= 3 and parts[0] != "__MACOSX":
                opener = functools.partial(archive.open, member)
                # Python's own convention for a file inside a zip (zipimport, zipfile.Path)
                files_by_class.setdefault((parts[-3], parts[-2]), []).append((f"{archive_path}/{member}", opener))
        if not files_by_class:
            raise DataNotFoundError("holds no <Alphabet>/<character>/*.png", path=archive_path, hint=_HOW_TO_GET)
        return _omniglot_dataset(split, files_by_class, where=archive_path, size=size, bad_items=bad_items)
