"""Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research; MIT): 28x28 grey clothing images, 10 classes.

The standard IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``, or the
same names unzipped) are looked for in ``root``, then in each of
``metalabel.data.paths.data_dirs()``, each also with a ``fashion-mnist/`` subfolder,
then where the Debian package ``dataset-fashion-mnist`` puts them. If none has them,
they are downloaded from Zalando's GitHub into the cache and checked against the
published MD5 sums. Items are uint8 ``[N, 28, 28]``, clothing bright on black.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.data.paths import cache_dir, data_dirs
from metalabel.data.sources._common import download
from metalabel.errors import DataNotFoundError, UnreadableItemError

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
SOURCE_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
# The MD5 sums Zalando publishes for its gzip files. Debian's package recompresses
# them, so its files differ byte-wise: only downloads are checked against these.
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]  # Debian: apt-get install dataset-fashion-mnist
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist`, or put the four "
    f"*-ubyte.gz files from {SOURCE_URL} in a folder named in $METALABEL_DATA (or pass root=...)"
)
_REPAIR_HINT = "delete the file and load again to download it afresh, or reinstall dataset-fashion-mnist"


def load(
    *,
    split: str = "train",
    root: str | Path | None = None,
    seed: int = 0,  # the registry passes one; reading Fashion-MNIST makes no random choice
    download_missing: bool = True,
) -> LabeledDataset:
    """Load the ``"train"`` (60,000 items) or ``"test"`` (10,000) split.

    ``download_missing=False`` raises ``DataNotFoundError`` instead of reaching for the network.
    """
    prefix = _FILE_PREFIX[split]
    wanted = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    paths = _find(wanted, root) or (_download(wanted) if download_missing else None)
    if paths is None:
        raise DataNotFoundError(f"Fashion-MNIST {split} files are not on this machine", hint=_HOW_TO_GET)
    images_path, labels_path = paths
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise UnreadableItemError(f"holds {images.shape[1:]} images, not 28x28", path=images_path, hint=_REPAIR_HINT)
    if len(labels) != len(images):
        raise UnreadableItemError(
            f"holds {len(labels)} labels but {images_path.name} holds {len(images)} images",
            path=labels_path,
            hint=_REPAIR_HINT,
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise UnreadableItemError(f"holds label {labels.max()}; classes are 0-9", path=labels_path, hint=_REPAIR_HINT)
    return LabeledDataset(
        name=f"fashion-mnist-{split}",
        modality="image",
        items=images,
        labels=labels,
        class_names=list(CLASS_NAMES),
        uris=[f"fashion-mnist:{split}/{i}" for i in range(len(images))],
    )


def _candidate_dirs(root: str | Path | None) -> list[Path]:
    user_dirs = ([Path(root).expanduser()] if root is not None else []) + data_dirs()
    return [d for base in user_dirs for d in (base, base / "fashion-mnist")] + SYSTEM_DIRS


def _find(names: list[str], root: str | Path | None) -> list[Path] | None:
    """The first folder holding every one of ``names``, gzipped or not (the ``.gz`` wins)."""
    for folder in _candidate_dirs(root):
        found = [next((p for p in (folder / n, folder / n.removesuffix(".gz")) if p.is_file()), None) for n in names]
        paths = [path for path in found if path is not None]
        if len(paths) == len(names):
            return paths
    return None


def _download(names: list[str]) -> list[Path]:
    target = cache_dir() / "data" / "fashion-mnist"  # one of data_dirs(), so the next load finds it
    try:
        for name in names:
            if not (target / name).is_file():
                download(SOURCE_URL + name, target / name, md5=MD5[name])
    except OSError as error:  # URLError, timeouts and a wrong checksum all land here
        raise DataNotFoundError(
            f"Fashion-MNIST is not on this machine and downloading it failed ({error})", hint=_HOW_TO_GET
        ) from error
    return [target / name for name in names]


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """A uint8 IDX file (gzipped or not) as an array; ``UnreadableItemError`` naming the file if corrupt.

    IDX: magic ``00 00 08 <ndim>`` (08 = unsigned byte), ``ndim`` big-endian uint32
    sizes, then the values.
    """
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UnreadableItemError(f"cannot be read: {error}", path=path, hint=_REPAIR_HINT) from error
    magic = bytes([0, 0, 0x08, ndim])
    if raw[:4] != magic:
        raise UnreadableItemError(
            f"is not a {ndim}-d uint8 IDX file: magic {raw[:4].hex()}, expected {magic.hex()}",
            path=path,
            hint=_REPAIR_HINT,
        )
    header_size = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4)) if len(raw) >= header_size else None
    if shape is None or len(raw) != header_size + math.prod(shape):
        raise UnreadableItemError(
            f"is {len(raw)} bytes, which does not match its header (shape {shape}); it is cut short or corrupt",
            path=path,
            hint=_REPAIR_HINT,
        )
    # A copy: frombuffer over bytes is read-only, and torch.from_numpy warns on that.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()
