"""The pool's embedding on Ray under attack (review13): an address where no cluster answers is refused at once by
name, before Ray retries it for minutes; rows that reach the driver twice never stand in for rows that never came."""

from __future__ import annotations

import logging

import numpy as np
import pytest

ray = pytest.importorskip("ray")
# Ray Data reads its own deprecated settings when it copies its context to the workers: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data")

from metalabel.data.dataset import LabeledDataset  # noqa: E402
from metalabel.data.encoders import PixelEncoder, embedding_cache_path  # noqa: E402
from metalabel.errors import BadInputError  # noqa: E402
from metalabel.scale import embed_on_ray  # noqa: E402


def _never_called(**options) -> None:
    raise AssertionError(f"ray.init was called with {options}")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "no-such-host.invalid:6379"])
def test_an_address_where_no_cluster_answers_is_refused_by_name_before_ray_tries_it(
        address, monkeypatch, cache) -> None:
    monkeypatch.setattr(ray, "init", _never_called)  # Ray itself retries such an address for minutes
    pool = LabeledDataset("p", "image", np.zeros((3, 8, 8), np.uint8), np.full(3, -1), ["a"], ["0", "1", "2"])
    with pytest.raises(BadInputError, match=rf"cannot reach a Ray cluster at '{address}'.*ray start --head"):
        embed_on_ray(pool, "pixels", address=address, progress=False)


def test_a_block_that_reaches_the_driver_twice_never_stands_in_for_one_that_never_came(monkeypatch, cache) -> None:
    iter_batches = ray.data.Dataset.iter_batches

    def twice_and_never(self, **options):  # the rows in blocks of 256: the first delivered twice, the last never
        rows = {key: np.concatenate([batch[key] for batch in iter_batches(self, **options)]) for key in
                ("index", "embedding")}
        blocks = [{key: column[start:start + 256] for key, column in rows.items()} for start in range(0, 600, 256)]
        yield from [blocks[0], *blocks[:-1]]

    monkeypatch.setattr(ray.data.Dataset, "iter_batches", twice_and_never)
    pool = LabeledDataset("p", "image", np.arange(600 * 64, dtype=np.uint8).reshape(600, 8, 8), np.full(600, -1),
                          ["a"], [f"{i}.png" for i in range(600)])  # one chunk, three blocks of at most 256 items
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        with pytest.raises(RuntimeError, match="incomplete"):
            embed_on_ray(pool, "pixels", progress=False)
    finally:
        ray.shutdown()
    assert not embedding_cache_path(pool.items, PixelEncoder()).exists()
