"""metalabel: build labeled datasets from a few labels and a large unlabeled pool with meta-learning."""

from metalabel import datasets, errors
from metalabel.data.dataset import UNLABELED, LabeledDataset

__version__ = "0.1.0"

__all__ = ["LabeledDataset", "Project", "UNLABELED", "datasets", "errors", "meta_train", "__version__"]


def __getattr__(name: str):
    # torch-heavy parts load on first use, so `import metalabel` stays quick
    if name == "meta_train":
        from metalabel.meta.train import meta_train

        return meta_train
    if name == "Project":
        from metalabel.project import Project

        return Project
    raise AttributeError(f"module 'metalabel' has no attribute {name!r}")
