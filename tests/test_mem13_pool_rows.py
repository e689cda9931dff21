"""What a round holds per item before its model: the pool's check, its new items and its index (issue 15).

Each pass over the store's items reads them a block of rows at a time and keeps arrays, not an ``Item`` or a
dict entry a row: before, ``check_pool``, ``Project.new_pool_items`` and ``PoolIndex`` each read every row
as an ``Item`` (about 0.5 KB) and built a dict by uri or id, 0.5 KB an item of heap at 100k items that the
round kept to its end (freed Python objects pinned by the ints that stayed: bench/results/scale.md).
Traced bytes, on 20,000 items; no timings.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.errors import PoolChangedError
from metalabel.label.positions import PoolIndex
from metalabel.project import Project
from metalabel.store import ItemRecord, ProjectStore, content_hash
from metalabel.store.pool import check_pool, stored_positions

ITEMS = 20_000


def text_pool(count: int, *, order: list[int] | None = None) -> LabeledDataset:
    order = list(range(count)) if order is None else order
    return LabeledDataset("texts", "text", [f"text {i}" for i in order], np.full(len(order), UNLABELED),
                          ["a", "b"], [f"pool/{i}.txt" for i in order])


@pytest.fixture
def store(tmp_path):
    with ProjectStore.create(tmp_path / "p", name="p") as store:
        store.set_classes(["a", "b"])
        store.add_items(ItemRecord(f"pool/{i}.txt", content_hash(f"text {i}"), "text") for i in range(ITEMS))
        yield store


def traced(job: Callable[[], object]) -> tuple[object, float, float]:
    """What ``job`` returns, and the bytes an item it held at its peak and still holds after (what it returns)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = job()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, (peak - before) / ITEMS, (held - before) / ITEMS


def test_the_pool_check_reads_the_store_a_block_at_a_time(store) -> None:
    pool = text_pool(ITEMS)
    checked, peak, _ = traced(lambda: check_pool(store, pool))
    assert checked is pool
    assert peak < 100  # bytes an item; reading every row as an Item, with a dict of the pool's uris: about 600


def test_the_pool_s_new_items_are_found_without_a_set_of_the_stored_uris(tmp_path) -> None:
    grown = text_pool(ITEMS + 3)
    with Project.create(tmp_path / "p", pool=text_pool(ITEMS), labels={0: "a", 1: "b"}) as project:
        project._pool = grown  # the pool as a later run reads it: three items appended
        new, peak, _ = traced(project.new_pool_items)
    assert new == [ITEMS, ITEMS + 1, ITEMS + 2]
    assert peak < 100  # a set of the store's uris, read as Items: about 600


def test_the_index_holds_arrays_and_answers_as_the_dict_it_replaces(store) -> None:
    pool = text_pool(ITEMS + 2)  # two items the store does not know yet
    index, peak, held = traced(lambda: PoolIndex(pool, store))
    assert isinstance(index, PoolIndex)
    assert held < 40 and peak < 100  # three int64 arrays; a dict of ids and positions held about 110
    ids = list(range(1, ITEMS + 1))  # the store's row ids, in the pool's order
    assert index.item_ids.tolist() == [*ids, -1, -1] and index.registered.tolist() == list(range(ITEMS))
    position = index.position_of_item
    assert dict(position) == {item_id: item_id - 1 for item_id in ids}
    assert len(position) == ITEMS and list(position)[:3] == [1, 2, 3]
    assert position[np.int64(5)] == 4 and type(position[5]) is int and position.get(ITEMS + 1) is None
    for unknown in (0, -1, ITEMS + 1, "1", None):
        assert unknown not in position
        with pytest.raises(KeyError):
            position[unknown]  # type: ignore[index]


def test_items_are_found_wherever_the_pool_holds_them(store) -> None:
    order = list(range(ITEMS - 1, -1, -1))  # the pool read in another order
    assert [(item.id, at) for item, at in stored_positions(store, text_pool(ITEMS, order=order).uris)][:2] == [
        (1, ITEMS - 1), (2, ITEMS - 2)]
    assert PoolIndex(text_pool(ITEMS, order=order), store).item_ids[:2].tolist() == [ITEMS, ITEMS - 1]
    shifted = text_pool(ITEMS, order=[ITEMS, *range(1, ITEMS)])  # the first item gone, another in its place
    assert [at for _, at in stored_positions(store, shifted.uris)][:3] == [None, 1, 2]
    with pytest.raises(PoolChangedError, match="1 items .* not in the pool any more .first: pool/0.txt"):
        check_pool(store, shifted)
