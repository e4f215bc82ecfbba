"""Small helpers shared by the KFP component wrappers (duck-typed: no kfp import here)."""

from __future__ import annotations

from typing import Any

DEFAULT_IMAGE = "ghcr.io/kfops/kfops:0.1.0"
DEFAULT_CLASS_NAMES = ("negative", "positive")  # dataset.class_names' default


def log_kfp_metrics(summary: dict[str, Any], metrics: Any, classification: Any) -> None:
    """Write evaluation results into KFP ``Metrics`` and ``ClassificationMetrics`` artifacts."""
    for name, value in summary["metrics"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, float(value))
    metrics.log_metric("blessed", 1.0 if summary["blessed"] else 0.0)
    roc = summary["roc"]
    if roc["fpr"]:
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    names = list(summary.get("class_names") or DEFAULT_CLASS_NAMES)  # label 0, label 1
    classification.log_confusion_matrix(names, summary["confusion_matrix"])
