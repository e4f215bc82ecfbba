"""`kfops drift ...`: compare a current window with a reference window."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.core.tables import read_csv, read_parquet
from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Detect data and prediction drift between a reference window and a current window.",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Keeps `check` a subcommand when this app runs on its own (typer collapses one-command apps)."""



@app.command("check")
def check(
    reference: Annotated[Path, typer.Option("--reference", help="Reference window: parquet (file or folder) or CSV.")],
    current: Annotated[Path, typer.Option("--current", help="Current window, same columns as the reference.")],
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Where drift_report.html and drift_verdict.json go "
                     "(default: data_dir/drift/<UTC time>)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A kfops model folder: adds prediction drift and, with labels, performance.")
    ] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write the HTML report (Evidently, on a sample).")] = True,
    all_columns: Annotated[bool, typer.Option("--all-columns", help="List every tested column, not only drifted ones.")] = False,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with code 1 when the verdict is drift.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Test every column of CURRENT against REFERENCE and write a verdict and a report.

    Drift is a finding, not an error: the exit code is 0 either way unless --fail-on-drift.

    Examples:

      kfops drift check --reference data/jan.parquet --current data/jul.parquet

      kfops drift check --reference ref.csv --current cur.csv --output-dir out/ --fail-on-drift

      kfops drift check --reference ref.parquet --current cur.parquet --set drift.sample_size=200000

      kfops drift check --reference ref.parquet --current cur.parquet --set 'drift.exclude_columns=[order_id]'
    """
    from rich.console import Console

    from kfops.core.drift import check_drift, write_verdict
    from kfops.reports.drift import render_report

    console = Console(soft_wrap=True)  # paths and reasons stay on one line, copyable
    cfg = cli_config(config, set_)
    reference_frame = read_table(reference)
    current_frame = read_table(current)
    champion = None
    if model is not None:
        from kfops.core.model import load_model

        champion = load_model(model, cfg.train.plugins, cfg.resolved_against)

    result = check_drift(reference_frame, current_frame, cfg.drift, model=champion)
    folder = output_dir or cfg.data_dir / "drift" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    html_path = render_report(reference_frame, current_frame, result, folder / "drift_report.html") if html else None
    verdict_path = write_verdict(result, folder / "drift_verdict.json", html_path=html_path)

    _print_result(console, result, all_columns)
    if html_path is not None:
        console.print(f"Report:       {html_path}")
    console.print(f"Verdict JSON: {verdict_path}")
    if fail_on_drift and result.drift:
        raise typer.Exit(1)


def read_table(path: Path) -> pd.DataFrame:
    """A parquet file or folder, or a CSV (optionally .gz/.zip), as a DataFrame."""
    import pandas as pd

    if not path.exists():
        raise DataError(f"{path} does not exist", hint="pass the path of a .parquet or .csv file")
    name = path.name.lower()
    try:
        if path.is_dir() or name.endswith((".parquet", ".pq")):
            return read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz")):
            return read_csv(path, path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    raise DataError(f"{path} is neither parquet nor CSV", hint="use a .parquet, .pq or .csv file")


def _print_result(console, result, all_columns: bool) -> None:
    from rich.table import Table

    shown = result.columns if all_columns else [c for c in result.columns if c.drifted]
    if shown:
        table = Table(title="Drifted columns" if not all_columns else "Columns")
        for heading in ("column", "type", "test", "score", "threshold", "drift"):
            table.add_column(heading, no_wrap=True)
        for column in sorted(shown, key=lambda c: (not c.drifted, str(c.column))):
            score = column.note if column.score is None else f"{column.score:.4g}"
            table.add_row(str(column.column), column.type, column.test, score, f"{column.threshold:g}",
                          "yes" if column.drifted else "no")
        console.print(table)
    if result.prediction is not None:
        p = result.prediction
        console.print(f"Prediction drift ({p.source}): {p.result.describe()}; "
                      f"mean {p.reference_mean:.4f} -> {p.current_mean:.4f}")
    if result.performance is not None and result.performance.roc_auc is not None:
        perf = result.performance
        base = "" if perf.reference_roc_auc is None else f" (reference {perf.reference_roc_auc:.4f})"
        console.print(f"Champion on the current window: ROC AUC {perf.roc_auc:.4f}{base}, {perf.rows:,} rows")
    for column, why in result.skipped_columns.items():
        console.print(f"Not tested: {column}: {why}")
    for note in result.notes:
        console.print(f"Note: {note}")
    verdict = "[bold red]DRIFT[/]" if result.drift else "[bold green]NO DRIFT[/]"
    console.print(f"Verdict: {verdict}, {len(result.drifted_columns)} of {len(result.columns)} columns drifted "
                  f"({result.drift_share:.0%}; dataset drift at >= {result.drift_share_threshold:.0%})")
    for reason in result.reasons:
        console.print(f"  - {reason}", markup=False)
