"""A picture of an image data set: one row per class, one column per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError


def save_grid(
    dataset: LabeledDataset,
    path: str | Path,
    *,
    classes: int = 10,
    per_class: int = 10,
    seed: int = 0,
    scale: int = 2,
) -> Path:
    """Write a PNG of ``classes`` random classes (rows) x ``per_class`` random samples (columns).

    Works for grey ``[N, H, W]`` and RGB ``[N, H, W, 3]`` uint8 images. The PNG is
    ``per_class * W * scale`` wide and ``rows * H * scale`` high, where ``rows`` is
    ``classes`` or the number of labeled classes, if fewer; a class with fewer than
    ``per_class`` items leaves the rest of its row black. Unlabeled items are not shown.
    """
    images = _image_array(dataset)
    for name, value in (("classes", classes), ("per_class", per_class), ("scale", scale)):
        if value < 1:
            raise BadInputError(f"{name} must be 1 or more, got {value}")
    members = [idx for idx in dataset.class_indices() if len(idx)]
    if not members:
        raise BadInputError(f"{dataset.name} has no labeled items to show", hint="label some items first")

    rng = np.random.default_rng(seed)
    shown = rng.choice(len(members), size=min(classes, len(members)), replace=False)
    height, width = images.shape[1:3]
    grid = np.zeros((len(shown), height, per_class, width, *images.shape[3:]), dtype=np.uint8)
    for row, class_position in enumerate(np.sort(shown)):  # rows in class order: easier to read
        idx = members[class_position]
        picked = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        grid[row, :, : len(picked)] = images[picked].swapaxes(0, 1)
    grid = grid.reshape(len(shown) * height, per_class * width, *images.shape[3:])
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour: pixels stay crisp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    return path


def _image_array(dataset: LabeledDataset) -> np.ndarray:
    """The items as uint8 ``[N, H, W]`` or ``[N, H, W, 3]``, or a BadInputError saying why not."""
    items = dataset.items
    if dataset.modality != "image" or not isinstance(items, np.ndarray):
        raise BadInputError(
            f"{dataset.name} holds {dataset.modality} items, not images",
            hint="save_grid draws image data sets only",
        )
    if items.dtype != np.uint8:
        raise BadInputError(
            f"{dataset.name} images are {items.dtype}, not uint8",
            hint="scale pixel values to 0..255 and cast to uint8",
        )
    if items.ndim == 4 and items.shape[3] == 1:
        items = items[..., 0]
    if not (items.ndim == 3 or (items.ndim == 4 and items.shape[3] == 3)):
        raise BadInputError(
            f"{dataset.name} images have shape {list(items.shape[1:])}",
            hint="expected [H, W] grey or [H, W, 3] RGB per image",
        )
    return items
