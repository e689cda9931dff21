"""Test-wide settings."""

import os

import pytest

# One thread for OpenMP (torch's intra-op threads too), OpenBLAS and MKL, set before numpy, scipy or
# torch is loaded and inherited by every process a test starts. The tests' arrays are tiny, and the
# suite runs in one pytest-xdist worker per core (scripts/test.sh): on a busy 2-core machine a second
# spinning OpenMP thread made some tests 50x slower, a second OpenBLAS thread a scikit-learn fit 15x.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty data cache for one test (data sets are built into it)."""
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
