"""Pool positions and store item ids, both ways: how every room of a round names an item."""

from __future__ import annotations

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.store import Item


class PoolIndex:
    """Pool positions and store item ids, both ways. Pool items the store does not know yet have no id."""

    def __init__(self, pool: LabeledDataset, items: list[Item]) -> None:
        position = {uri: i for i, uri in enumerate(pool.uris)}
        self.item_ids = np.full(len(pool), -1, dtype=np.int64)
        for item in items:
            self.item_ids[position[item.uri]] = item.id
        self.position_of_item = {item.id: position[item.uri] for item in items}
        self.registered = np.flatnonzero(self.item_ids >= 0)

    def item_id(self, position: int) -> int:
        return int(self.item_ids[position])
