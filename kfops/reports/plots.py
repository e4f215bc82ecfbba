"""Evaluation plots (matplotlib, headless) and a self-contained HTML page for the KFP UI."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

MAX_SLICE_BARS = 30  # per slice column in the evaluation report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_figures(
    y_true: np.ndarray,
    proba: np.ndarray,
    champion_proba: np.ndarray | None,
    metrics: dict[str, Any],
    slices: dict,
    champion_slices: dict | None,
) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    figures: dict[str, Any] = {}
    curves = [("challenger", proba)] + ([("champion", champion_proba)] if champion_proba is not None else [])

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, scores in curves:
        fpr, tpr, _ = roc_curve(y_true, scores)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    figures["roc_curve"] = fig

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, scores in curves:
        precision, recall, _ = precision_recall_curve(y_true, scores)
        ax.plot(recall, precision, label=name)
    ax.axhline(float(np.mean(y_true)), color="k", linestyle="--", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    figures["pr_curve"] = fig

    calib = metrics["calibration"]
    fig, ax = plt.subplots(figsize=(5, 4))
    used = np.asarray(calib["count"]) > 0
    ax.plot(np.asarray(calib["mean_predicted"])[used], np.asarray(calib["fraction_positive"])[used], "o-", label="model")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title=f"Calibration (ECE {calib['ece']:.3f})")
    ax.legend()
    figures["calibration_curve"] = fig

    matrix = np.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["negative", "positive"], yticklabels=["negative", "positive"],
           xlabel="predicted", ylabel="actual", title=f"Confusion matrix @ {metrics['scalars']['threshold']:.2f}")
    figures["confusion_matrix"] = fig

    columns = [c for c in slices if slices[c]]
    if columns:
        fig, axes = plt.subplots(len(columns), 1, figsize=(8, 2.6 * len(columns)), squeeze=False)
        for ax, column in zip(axes[:, 0], columns, strict=True):
            names = sorted(slices[column])
            title = f"ROC AUC by {column}"
            if len(names) > MAX_SLICE_BARS:  # thousands of bars are unreadable and slow to draw
                largest = sorted(names, key=lambda n: -slices[column][n]["rows"])[:MAX_SLICE_BARS]
                title += f": the {MAX_SLICE_BARS} of {len(names):,} values with the most rows"
                names = sorted(largest)
            x = np.arange(len(names))
            ax.bar(x - 0.2, [slices[column][n]["roc_auc"] for n in names], width=0.4, label="challenger")
            if champion_slices and column in champion_slices:
                ref = [champion_slices[column].get(n, {}).get("roc_auc", np.nan) for n in names]
                ax.bar(x + 0.2, ref, width=0.4, label="champion")
            ax.set_xticks(x, names, rotation=45, fontsize=7)
            ax.set_ylim(0.5, 1.0)
            ax.set_title(title)
            ax.legend(fontsize=7)
        fig.tight_layout()
        figures["slices"] = fig
    return figures


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def write_html(figures: dict[str, Any], path: Path, title: str, verdict: list[str] | None = None) -> Path:
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em} img{max-width:48%;margin:.5%} "
             ".fail{color:#b00} .pass{color:#070}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if verdict:
        parts.append("<ul>")
        for line in verdict:
            css = "fail" if line.startswith("FAIL") else "pass" if line.startswith("PASS") else ""
            parts.append(f"<li class='{css}'>{html.escape(line)}</li>")
        parts.append("</ul>")
    for name, figure in figures.items():
        encoded = base64.b64encode(figure_png(figure)).decode()
        parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{encoded}'>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def close(figures: dict[str, Any]) -> None:
    plt = _pyplot()
    for figure in figures.values():
        plt.close(figure)
