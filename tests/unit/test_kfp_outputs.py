"""The KFP metrics helper names the confusion matrix's classes from the dataset, not from flights."""

from __future__ import annotations

from kfops.config import KfopsConfig
from kfops.steps.kfp_outputs import DEFAULT_CLASS_NAMES, log_kfp_metrics


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def summary(**extra):
    return {"metrics": {"roc_auc": 0.7, "note": "text"}, "blessed": True, "roc": {"fpr": [], "tpr": [], "thresholds": []},
            "confusion_matrix": [[5, 1], [2, 3]], **extra}


def test_confusion_matrix_labels_come_from_the_summary_else_neutral_names():
    metrics, classification = Recorder(), Recorder()
    log_kfp_metrics(summary(class_names=["kept", "churned"]), metrics, classification)
    assert classification.calls == [("log_confusion_matrix", (["kept", "churned"], [[5, 1], [2, 3]]))]
    assert ("log_metric", ("roc_auc", 0.7)) in metrics.calls and ("log_metric", ("blessed", 1.0)) in metrics.calls

    classification = Recorder()
    log_kfp_metrics(summary(), Recorder(), classification)
    assert classification.calls[0][1][0] == list(DEFAULT_CLASS_NAMES)
    assert tuple(KfopsConfig().dataset.class_names) == DEFAULT_CLASS_NAMES
