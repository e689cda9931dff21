"""Test-wide settings."""

import pytest
import torch

# One intra-op thread: the tests' tensors are tiny, and on a busy 2-core machine a second
# spinning OpenMP thread made some tests 50x slower.
torch.set_num_threads(1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty data cache for one test (data sets are built into it)."""
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
