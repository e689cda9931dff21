"""metalabel: build labeled datasets from a few labels and a large unlabeled pool with meta-learning.

The front door::

    import metalabel as ml
    learner = ml.meta_train(ml.datasets.load("kanji"), algo="protonet", ways=20, shots=1, seed=0)
    project = ml.Project.create("shoes", pool=ml.datasets.imagefolder("pool/"), labels="seed.csv")
    result = project.run(learner, target_precision=0.95, budget=100, oracle=ml.TerminalOracle())
    project.export("out/", format="parquet")
"""

from metalabel import datasets, errors
from metalabel._version import __version__
from metalabel.data.dataset import UNLABELED, LabeledDataset

# name -> module it lives in; torch-heavy parts load on first use, so `import metalabel` stays quick
_LAZY: dict[str, str] = {
    "Project": "metalabel.project",
    "meta_train": "metalabel.meta.train",
    "load_learner": "metalabel.meta.checkpoint",
    "load_run": "metalabel.meta.checkpoint",
    "save_learner": "metalabel.meta.checkpoint",
    "SimulatedOracle": "metalabel.label.oracle",
    "TerminalOracle": "metalabel.label.oracle",
    "LabelStudioQueue": "metalabel.label.oracle",
    "export_project": "metalabel.export",
}

__all__ = ["UNLABELED", "LabeledDataset", "__version__", "datasets", "errors", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metalabel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
