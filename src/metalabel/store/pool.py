"""The pool a project was made from: loaded again from its recorded spec, and checked against the stored hashes.

The store keeps uris and content hashes, not the items. Everything that reads an item's
content (the loop, exports, the report) gets the pool through here, so an item whose
content changed since ``init`` is refused by name instead of being labeled or exported
under its old label.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError, DataNotFoundError, PoolChangedError, UnknownDatasetError
from metalabel.store.hashing import content_hash
from metalabel.store.records import Item
from metalabel.store.store import ProjectStore

POOL_SPEC_KEY = "pool_spec"
"""The store's meta key holding how to load the pool again (JSON)."""


def has_pool_spec(store: ProjectStore) -> bool:
    """Whether the project recorded how to load its pool (it was not made from a data set built in memory)."""
    return store.meta().get(POOL_SPEC_KEY) is not None


def reload_pool(store: ProjectStore) -> LabeledDataset:
    """The pool loaded afresh from the recorded spec and checked (``check_pool``).

    The items of a pool the user's files hold stay in a file, read as they are used
    (``metalabel.datasets.reload(..., mapped=True)``): a run never holds them all in its heap.
    """
    spec = store.meta().get(POOL_SPEC_KEY)
    if spec is None:
        raise BadInputError(
            f"project {store.name!r} does not record how to load its pool (it was made from a data set "
            "built in memory)", hint="pass pool= (the same LabeledDataset), e.g. Project.open(folder, pool=...)")
    from metalabel.datasets import reload

    try:
        pool = reload(json.loads(spec), mapped=True)
    except (BadInputError, UnknownDatasetError) as error:
        # a pool that is not where it was, or one that is there but cannot be read (a bad row, the items cache)
        gone = isinstance(error, DataNotFoundError | UnknownDatasetError)
        raise BadInputError(f"cannot reload the pool of project {store.name!r} ({error})",
                            hint="restore the pool where it was, or pass pool= to Project.open" if gone else
                            "fix what it names, or restore the pool the project was made from") from error
    return check_pool(store, pool)


def check_pool(store: ProjectStore, pool: LabeledDataset) -> LabeledDataset:
    """``pool`` itself if every item ``store`` holds is in it with the content hash it had at init.

    Each stored item is read and hashed once, one at a time (a mapped pool's from its file, so
    the check holds one item in memory, not the pool), and found as ``stored_positions`` finds it, so this
    is linear in the pool. Items the pool has beyond the store's are allowed (``Project.add_new_items``).
    Raises ``PoolChangedError`` naming the first item that changed, else the first that is gone: in a
    file whose rows are named by line, a row deleted or inserted shows as the rows after it changed,
    so the first changed one is where the file was edited (the last line is only the one now missing).
    """
    missing = []
    for item, index in stored_positions(store, pool.uris):
        if index is None:
            missing.append(item.uri)
        elif content_hash(pool.items[index]) != item.content_hash:
            raise PoolChangedError(
                f"item {item.uri!r} changed since init (its content no longer matches the hash stored when "
                "the project was made)", hint=_restore_hint(store, "restore the original, or make a new project"))
    if missing:
        raise PoolChangedError(f"{len(missing)} items of project {store.name!r} are not in the pool any more "
                               f"(first: {missing[0]})", hint=_restore_hint(store, "restore the pool the project "
                                                                                   "was made from"))
    return pool


def stored_positions(store: ProjectStore, uris: Sequence[str]) -> Iterator[tuple[Item, int | None]]:
    """Each item ``store`` holds, in id order, with its position in ``uris`` (None: not among them).

    Items are stored in the order of the pool they were added from, so each is first looked for at its own
    place (the k-th stored at ``uris[k]``): a pool as it was made, or grown at its end, is matched without a
    dict of its uris (about 100 bytes an item); the first item found elsewhere builds that dict, used for the
    rest. The store's rows are read a block at a time (``ProjectStore.each_item``), not as a list.
    """
    position: dict[str, int] | None = None
    for place, item in enumerate(store.each_item()):
        if position is None:
            if place < len(uris) and uris[place] == item.uri:
                yield item, place
                continue
            position = {uri: index for index, uri in enumerate(uris)}
        yield item, position.get(item.uri)


def _restore_hint(store: ProjectStore, hint: str) -> str:
    """``hint``, and for a file whose rows are named by their place in it, what that means for editing it."""
    spec = json.loads(store.meta().get(POOL_SPEC_KEY) or "{}")
    if spec.get("reader") not in ("read_text", "read_table") or spec.get("options", {}).get("id_column"):
        return hint
    return (f"{hint}; this pool's rows are named by their line (or record) in the file, so a row inserted, deleted "
            "or moved renames every row after it: add rows only at the end, or name rows by an id column "
            "(init --source-option id_column=...) in a new project")
