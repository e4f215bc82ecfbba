"""``kfops validate``: check one data file against its Great Expectations suite."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.errors import ConfigError, DataError, ValidationFailed

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

app = typer.Typer(
    help="Validate a data file against its suite in expectations/.",
    no_args_is_help=True,
)


@app.command()
def validate_command(
    data: Annotated[Path, typer.Option(
        "--data", "-d", help="A parquet or CSV file (.csv, .csv.zip, .csv.gz), or a folder of parquet files.")],
    table: Annotated[
        str | None, typer.Option("--table", "-t", help="Suite to use: <validation.suites_dir>/<table>.json (default: the "
                                 "file stem, when a suite has that name).")
    ] = None,
    start: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Window start (default: dataset.start).")
    ] = None,
    end: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Window end, inclusive (default: dataset.end).")
    ] = None,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="A previous run's JSON summary: enables the volume band.")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where the HTML and JSON reports go (default: data_dir/validation).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Validate one file against the suite for its table; exit non-zero when a check fails.

    Timestamps are checked against the window dataset.start..dataset.end (or --start/--end).
    Without --table, the table name comes from the file name (orders.parquet: orders); a file
    named otherwise needs --table.

    Examples:

      kfops validate --data .kfops/pipeline_root/<run>/ingest/raw_tables/orders.parquet

      kfops validate --data customers.csv --start 2024-01-01 --end 2024-01-31

      kfops validate --data my_orders.parquet --table orders

      kfops validate --data orders_feb.parquet --table orders --previous .kfops/validation/orders.json
    """
    from kfops.adapters.gx_validation import (
        format_failures,
        load_suite,
        read_table_file,
        suite_path,
        validate_tables,
    )
    from kfops.reports.validation import write_reports

    if not data.exists():  # before the suite: the file is what is wrong, whatever its name
        raise DataError(f"data file {data} does not exist",
                        hint="pass the path of a .parquet or .csv file, or a folder of .parquet files")
    window = [f"dataset.{key}={moment.date().isoformat()}" for key, moment in (("start", start), ("end", end))
              if moment is not None]
    cfg = cli_config(config, set_, *window)
    name = table or _table_from_file_name(data, cfg)
    cfg.validation = cfg.validation.model_copy(update={"tables": [name]})
    suite = load_suite(suite_path(cfg, name))
    frame = read_table_file(data, suite)
    summary = _read_previous(previous) if previous is not None else None

    first, last = cfg.window
    typer.echo(f"validating {data} ({len(frame):,} rows) against {suite.path}, window {first}..{last}")
    result = validate_tables({name: frame}, cfg, previous=summary)
    folder = report_dir or cfg.data_dir / "validation"
    html_path, json_path = folder / f"{name}.html", folder / f"{name}.json"
    write_reports(result, html_path, json_path)
    typer.echo(format_failures(result))
    typer.echo(f"report: {html_path}\nsummary: {json_path}")
    if not result.success:  # the table above already lists the failures
        raise ValidationFailed(
            f"{len(result.failures)} of {result.expectation_count} expectations failed on {name}; report: {html_path}",
            failures=result.failures,
            summary_path=str(json_path),
        )


def _table_from_file_name(data: Path, cfg: KfopsConfig) -> str:
    """The table a file is named after, when a suite has that name or the config validates it;
    otherwise a usage error naming the tables that have suites, for --table."""
    from kfops.adapters.gx_validation import TRAINING_SET, suite_path, table_name_for

    name = table_name_for(data)
    if name in cfg.validation.tables or suite_path(cfg, name).is_file():
        return name
    suites_dir = Path(cfg.validation.suites_dir)
    known = sorted(p.stem for p in suites_dir.glob("*.json") if p.stem != TRAINING_SET)
    if not known:
        raise ConfigError(f"no table named '{name}' (from the file name {data.name}): {suites_dir} holds no "
                          "expectation suites", hint="check validation.suites_dir, or pass -c with the project's "
                          "kfops.yaml")
    raise ConfigError(f"no expectation suite for a table named '{name}' (from the file name {data.name}) "
                      f"in {suites_dir}", hint=f"pass --table, one of: {', '.join(known)}")


def _read_previous(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"previous summary {path} is not readable JSON: {err}") from err
