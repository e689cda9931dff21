"""The pool's embedding on Ray under attack (review13): an address where no cluster answers is refused at once by
name, before Ray retries it for minutes."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from metalabel.data.dataset import LabeledDataset  # noqa: E402
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
