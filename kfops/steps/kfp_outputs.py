"""Small helpers shared by the KFP component wrappers (duck-typed: no kfp import here)."""

from __future__ import annotations

from typing import Any

DEFAULT_IMAGE = "ghcr.io/kfops/kfops:0.1.0"


def log_kfp_metrics(summary: dict[str, Any], metrics: Any, classification: Any) -> None:
    """Write evaluation results into KFP ``Metrics`` and ``ClassificationMetrics`` artifacts."""
    for name, value in summary["metrics"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, float(value))
    metrics.log_metric("blessed", 1.0 if summary["blessed"] else 0.0)
    roc = summary["roc"]
    if roc["fpr"]:
        classification.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    classification.log_confusion_matrix(["on_time", "delayed"], summary["confusion_matrix"])
