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


def test_the_approximate_search_of_a_narrow_pool_holds_its_k_means_sample_once(monkeypatch) -> None:
    pytest.importorskip("faiss")  # imported before the count: a first import's own allocations are not the search's
    import tracemalloc

    monkeypatch.setattr(graph, "SEARCH_BYTES", 2**16)  # blocks of 64 rows: a pool of many blocks
    x = np.random.default_rng(0).normal(size=(5000, graph.GRAPH_DIMENSIONS)).astype(np.float32)
    tracemalloc.start()
    try:
        columns, _ = graph._approximate_neighbours(x, 10, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (columns >= 0).mean() > 0.99
    # the k-means sample is the whole of so small a pool (a big pool's is 256 sqrt(n) rows of it): held once
    assert peak < 1.5 * x.nbytes
