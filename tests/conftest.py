"""Test-wide settings."""

import torch

# One intra-op thread: the tests' tensors are tiny, and on a busy 2-core machine a second
# spinning OpenMP thread made some tests 50x slower.
torch.set_num_threads(1)
