"""The data validation report: a self-contained HTML page (a KFP HTML artifact) and a JSON summary."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from kfops.adapters.gx_validation import (
    ABSENT_TABLE,
    ValidationResult,
    expected_text,
    observed_text,
)
from kfops.core.files import atomic_write_text


def write_reports(result: ValidationResult, html_path: Path | str, json_path: Path | str) -> None:
    """Write the self-contained HTML report (a KFP HTML artifact) and the JSON summary."""
    html_path, json_path = Path(html_path), Path(json_path)
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(html_path, render_html(result))


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:8px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr.failed{background:#fff0f0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
table.examples{font-size:11px;margin:4px 0;width:auto}.why{color:#57606a;font-size:12px}
.examples-scroll{overflow-x:auto;max-width:60vw}
"""


def _esc(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str))


def _examples_html(outcome: dict) -> str:
    rows = outcome.get("examples") or []
    if not rows:
        return ""
    first = [c for c in outcome.get("columns", []) if c in rows[0]]
    columns = first + [c for c in rows[0] if c not in first]
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<div class="examples-scroll"><table class="examples"><tr>{head}</tr>{body}</table></div>'


def render_html(result: ValidationResult) -> str:
    status = '<span class="pass">PASSED</span>' if result.success else '<span class="fail">FAILED</span>'
    window = result.window
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kfops data validation</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data validation {status}</h1>",
        (
            f"<p>Window {_esc(window.get('start'))} to {_esc(window.get('end'))} ({_esc(window.get('timezone'))}, "
            f"{window.get('days')} days). {result.expectation_count} expectations, {len(result.failures)} failed.</p>"
        ),
    ]
    absent = [f for f in result.failures if f["expectation"] == ABSENT_TABLE]
    for failure in absent:
        parts.append(f"<p class='fail'>{_esc(failure['error'])}</p>")
    for name, table in result.tables.items():
        table_status = "pass" if table.success else "fail"
        parts.append(
            f"<h2>{_esc(name)}: <span class='{table_status}'>{table_status.upper()}</span></h2>"
            f"<p>{table.rows:,} rows; {len(table.outcomes)} expectations, {len(table.failures)} failed; "
            f"suite <code>{_esc(table.suite)}</code></p>"
        )
        if table.skipped:
            parts.append(f"<p class='why'>Skipped (column absent): {_esc(', '.join(table.skipped))}</p>")
        parts.append("<table><tr><th>status</th><th>expectation</th><th>column</th><th>expected</th>"
                     "<th>observed</th><th>examples</th></tr>")
        for o in sorted(table.outcomes, key=lambda o: o["success"]):  # failures first, suite order kept
            why = f"<div class='why'>{_esc(o['why'])}</div>" if o.get("why") else ""
            parts.append(
                f"<tr class='{'' if o['success'] else 'failed'}'>"
                f"<td class='{'pass' if o['success'] else 'fail'}'>{'pass' if o['success'] else 'FAIL'}</td>"
                f"<td><code>{_esc(o['expectation'])}</code>{why}</td><td>{_esc(o.get('column') or '')}</td>"
                f"<td><code>{_esc(expected_text(o))}</code></td><td>{_esc(observed_text(o))}</td>"
                f"<td>{_examples_html(o)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
