"""Evaluation: how good the labels are, how close generated data is to real data,
and what the built data do for a model trained on them."""

from metalabel.evaluate.downstream import compare_with_generated, downstream_accuracy
from metalabel.evaluate.quality import LabelIssues, accuracy_with_ci, confusion, label_issues, per_class_accuracy
from metalabel.evaluate.similarity import frechet_distance, knn_precision_recall, mmd, similarity_report

__all__ = [
    "LabelIssues",
    "accuracy_with_ci",
    "compare_with_generated",
    "confusion",
    "downstream_accuracy",
    "frechet_distance",
    "knn_precision_recall",
    "label_issues",
    "mmd",
    "per_class_accuracy",
    "similarity_report",
]
