"""The drift report: kfops' verdict as a banner above Evidently's own data drift report."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.drift import DriftConfig, DriftResult, sample_rows
from kfops.core.files import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd


def render_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    result: DriftResult,
    html_path: str | Path,
    *,
    rows: int | None = None,
    importance: Mapping[str, float] | None = None,
    signals: Mapping[str, float] | None = None,
    decision: Mapping[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
) -> Path:
    """A self-contained HTML report: a summary of ``result`` (the verdict, computed on all sampled
    rows) above Evidently 0.7's own ``DataDriftPreset`` report, which runs on a random sample of
    ``rows`` per side (default ``report_rows`` of the result's config) with the same test and
    threshold per column, so it stays cheap. Its per-column scores can differ slightly from the
    verdict's, which used more rows. ``importance`` (the champion's feature importance) adds each
    column's weight to the summary table, which still lists every column; ``signals`` lists the
    retrain triggers' evidence; ``decision`` (``Decision.to_dict()``) and ``settings`` (the retrain
    policy's, ``policy_settings``) put the retrain decision, its code and thresholds on top."""
    from kfops.adapters.evidently_report import data_drift_html

    cfg = DriftConfig.model_validate(result.config)
    rows = rows or cfg.report_rows
    tested = [c for c in result.columns if c.score is not None]
    if result.prediction is not None and result.prediction.source == cfg.prediction_column:
        tested.append(result.prediction.result)
    names = [c.column for c in tested if c.column in reference.columns and c.column in current.columns]
    ref_sample = sample_rows(reference, names, rows, cfg.seed)
    cur_sample = sample_rows(current, names, rows, cfg.seed + 1)
    # Evidently refuses a column with no values left in the sample; keep those out of the report.
    by_name = {c.column: c for c in tested}
    shown = [n for n in names if _has_values(ref_sample[n], by_name[n].type) and _has_values(cur_sample[n], by_name[n].type)]

    body = ""
    if shown:
        # Evidently allows chi-square and Z only on categorical columns (its auto choice for few-valued
        # numerical columns), so those are declared categorical here.
        numerical = [n for n in shown if by_name[n].type == "numerical" and by_name[n].test not in ("chisquare", "z")]
        body = data_drift_html(
            ref_sample[shown], cur_sample[shown], numerical=numerical,
            tests={n: by_name[n].test for n in shown}, thresholds={n: by_name[n].threshold for n in shown},
            drift_share=cfg.drift_share,
        )
    banner = _decision_banner(decision, settings) + _banner(result, len(ref_sample), len(cur_sample), importance,
                                                            signals)
    if re.search(r"<body[^>]*>", body, flags=re.IGNORECASE):
        page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1, flags=re.IGNORECASE)
    else:
        head = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kfops drift</title></head>"
        page = f"{head}<body>{banner}{body}</body></html>"
    return atomic_write_text(Path(html_path), page)


def _has_values(series: pd.Series, kind: str) -> bool:
    import numpy as np

    if kind == "numerical":
        return bool(np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan)).any())
    return bool(series.notna().any())


def _banner(result: DriftResult, ref_rows: int, cur_rows: int, importance: Mapping[str, float] | None = None,
            signals: Mapping[str, float] | None = None) -> str:
    verdict = "DRIFT" if result.drift else "NO DRIFT"
    colour = "#b00020" if result.drift else "#1b5e20"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons) or "<li>no reason to retrain</li>"
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(str(c.column))}</td><td>{c.type}</td><td>{html.escape(c.test_name)}</td>"
        f"<td>{'' if c.score is None else _fmt(c.score)}</td><td>{c.threshold:g}</td>"
        f"<td>{'<b>drift</b>' if c.drifted else 'ok'}</td>"
        + (f"<td>{importance.get(c.column, 0.0):.1%}</td>" if importance is not None else "")
        + "</tr>"
        for c in sorted(result.columns, key=lambda c: (not c.drifted, -(importance or {}).get(c.column, 0.0),
                                                       str(c.column)))
    )
    evidence = "".join(f"<li>{html.escape(k)}: {v:.4f}</li>" for k, v in (signals or {}).items())
    skipped = "".join(f"<li>{html.escape(str(c))}: {html.escape(w)}</li>" for c, w in result.skipped_columns.items())
    return (
        "<section id='kfops-drift-verdict' style='font-family:sans-serif;margin:16px;padding:12px;"
        f"border:2px solid {colour}'>"
        f"<h2 style='color:{colour};margin-top:0'>kfops drift verdict: {verdict}</h2>"
        f"<p>{html.escape(result.summary())}</p><ul>{reasons}</ul>"
        f"<p>Verdict computed on {result.reference_sampled_rows:,} reference rows (of {result.reference_rows:,}) "
        f"and {result.current_sampled_rows:,} current rows (of {result.current_rows:,}) at {result.checked_at}. "
        f"The Evidently report below uses a random sample of {ref_rows:,} and {cur_rows:,} rows with the same "
        "tests and thresholds, so its scores can differ slightly.</p>"
        "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
        "<tr><th>column</th><th>type</th><th>test</th><th>score</th><th>threshold</th><th>verdict</th>"
        + ("<th>importance to the champion</th>" if importance is not None else "") + "</tr>"
        f"{rows}</table>"
        + (f"<p>Retrain triggers' evidence:</p><ul>{evidence}</ul>" if evidence else "")
        + (f"<p>Not tested:</p><ul>{skipped}</ul>" if skipped else "")
        + "</section>"
    )


def _decision_banner(decision: Mapping[str, Any] | None, settings: Mapping[str, str] | None) -> str:
    if decision is None:
        return ""
    retrain = bool(decision.get("retrain"))
    colour = "#b00020" if retrain else "#1b5e20"
    verb = "RETRAIN" if retrain else "no retrain"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in (settings or {}).items())
    triggered = ", ".join(decision.get("triggered_by") or ()) or "none"
    return (
        "<section id='kfops-retrain-decision' style='font-family:sans-serif;margin:16px;padding:12px;"
        f"border:2px solid {colour}'>"
        f"<h2 style='color:{colour};margin-top:0'>kfops retrain decision: {verb} "
        f"(<code>{html.escape(str(decision.get('code', '')))}</code>)</h2>"
        f"<p>{html.escape(str(decision.get('reason', '')))}</p>"
        f"<p>Mode {html.escape(str(decision.get('mode', '')))}; triggered by {html.escape(triggered)}; "
        f"decided at {html.escape(str(decision.get('at', '')))}.</p>"
        + (f"<p><b>In-sample rows:</b> {html.escape(str(decision['in_sample']))}.</p>" if decision.get("in_sample")
           else "")
        + ("<p>Retrain policy settings (<code>retrain:</code>):</p>"
           f"<table border='1' cellpadding='4' style='border-collapse:collapse'>{rows}</table>" if rows else "")
        + "</section>"
    )


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value != 0 and (abs(value) < 0.001 or abs(value) >= 1000) else f"{value:.4f}"
