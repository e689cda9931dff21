"""metalabel: build labeled datasets from a few labels and a large unlabeled pool with meta-learning."""

from metalabel import datasets, errors
from metalabel.data.dataset import UNLABELED, LabeledDataset

__version__ = "0.1.0"

__all__ = ["LabeledDataset", "UNLABELED", "datasets", "errors", "__version__"]
