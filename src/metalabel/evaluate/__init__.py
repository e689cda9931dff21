"""Evaluation: how good the labels are, how close generated data is to real data,
and what the built data do for a model trained on them."""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; they load on first use, so the report can import the records without scikit-learn and torch
_LAZY: dict[str, str] = {
    "LabelIssues": "metalabel.evaluate.quality",
    "accuracy_with_ci": "metalabel.evaluate.quality",
    "compare_with_generated": "metalabel.evaluate.downstream",
    "confusion": "metalabel.evaluate.quality",
    "downstream_accuracy": "metalabel.evaluate.downstream",
    "frechet_distance": "metalabel.evaluate.similarity",
    "knn_precision_recall": "metalabel.evaluate.similarity",
    "label_issues": "metalabel.evaluate.quality",
    "mmd": "metalabel.evaluate.similarity",
    "per_class_accuracy": "metalabel.evaluate.quality",
    "similarity_report": "metalabel.evaluate.similarity",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metalabel.evaluate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
