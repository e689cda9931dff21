"""An image file's bytes checked against the content the store holds for its item.

The store keeps an image item's hash as ``content_hash`` of its decoded pixels (what the pool's
reader made of the file). Whatever shows or copies the file itself (a Label Studio link, an export's
copy) reads its bytes once, checks them here, and then shows or writes those same bytes, so a file
replaced after the pool was checked is never shown or written for the item.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from metalabel.data.dataset import UNLABELED
from metalabel.data.sources._common import ImageFile, decode_image
from metalabel.errors import UnreadableItemError
from metalabel.store import content_hash


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its status as read through the same descriptor (so they belong together)."""
    with path.open("rb") as file:
        data = file.read()
        return data, os.fstat(file.fileno())


def holds_stored_image(data: bytes, pixels: np.ndarray, stored_hash: str, *, uri: str) -> bool:
    """Whether ``data`` decodes, as an image pool decodes its files, to the item's stored content.

    ``pixels`` are the item's checked pixels, whose shape says the size and colour the pool decoded to
    (``decode_image`` with that size; a grey file in a colour pool was repeated to RGB, or converted, as
    ``grayscale=None`` or ``False`` had it); ``stored_hash`` is the store's ``content_hash`` of them.
    False for bytes that do not decode, that decode to other pixels (the file changed), or that their
    source decodes otherwise (Omniglot inverts its ink): the caller then shows or writes ``pixels``.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        return False
    colour = pixels.ndim == 3
    file = ImageFile(uri=uri, label=UNLABELED, open=lambda: io.BytesIO(data))
    for grayscale in (None, False) if colour else (True,):
        try:
            image = decode_image(file, size=(pixels.shape[0], pixels.shape[1]), grayscale=grayscale)
        except UnreadableItemError:
            return False
        grey_file = image.ndim == 2
        if grey_file and colour:  # a grey file in a colour pool, as ``decoded_images`` promotes it
            image = np.repeat(image[..., None], 3, axis=2)
        if content_hash(image) == stored_hash:
            return True
        if not grey_file:  # converting a colour file to RGB is one way only
            return False
    return False
