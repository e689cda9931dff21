"""Pool positions and store item ids, both ways: how every room of a round names an item."""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterator, Mapping

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.store import ProjectStore
from metalabel.store.pool import stored_positions


class PoolIndex:
    """Pool positions and store item ids, both ways. Pool items the store does not know yet have no id.

    Held as arrays, 8 bytes an item each way: a dict of Python ints by item id held about 110 bytes an item
    through the round (bench/results/scale.md).
    """

    def __init__(self, pool: LabeledDataset, store: ProjectStore) -> None:
        ids, positions = array("q"), array("q")
        for item, position in stored_positions(store, pool.uris):
            if position is None:
                raise KeyError(item.uri)  # the pool was checked against the store: every stored item is in it
            ids.append(item.id)
            positions.append(position)
        stored, at = np.frombuffer(ids, dtype=np.int64), np.frombuffer(positions, dtype=np.int64)
        self.item_ids = np.full(len(pool), -1, dtype=np.int64)
        self.item_ids[at] = stored
        self.position_of_item = PositionOfItem(stored, at)
        self.registered = np.flatnonzero(self.item_ids >= 0)

    def item_id(self, position: int) -> int:
        return int(self.item_ids[position])


class PositionOfItem(Mapping[int, int]):
    """The pool position of each stored item, by item id: an array indexed by id (the store's ids are its dense
    row ids, items are never deleted), -1 where an id has no item."""

    def __init__(self, item_ids: np.ndarray, positions: np.ndarray) -> None:
        self._by_id = np.full(int(item_ids.max(initial=-1)) + 1, -1, dtype=np.int64)
        self._by_id[item_ids] = positions
        self._count = len(item_ids)

    def __getitem__(self, item_id: int) -> int:
        try:
            key = operator.index(item_id)
        except TypeError:
            raise KeyError(item_id) from None
        position = int(self._by_id[key]) if 0 <= key < len(self._by_id) else -1
        if position < 0:
            raise KeyError(item_id)
        return position

    def __iter__(self) -> Iterator[int]:
        return iter(np.flatnonzero(self._by_id >= 0).tolist())

    def __len__(self) -> int:
        return self._count
