"""The kept pool graph is read only where this run would build the same graph (check13)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy
import torch

from metalabel.label import graph


@pytest.mark.parametrize("library", [np, scipy, torch])
def test_a_graph_kept_by_other_versions_of_the_libraries_that_build_it_is_not_read(cache, monkeypatch,
                                                                                   library) -> None:
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    before = graph._cache_path(x, 5, seed=0)
    monkeypatch.setattr(library, "__version__", "0.0.1")
    assert graph._cache_path(x, 5, seed=0) != before
