"""``kfops init``: scaffold a project from raw tables (see :mod:`kfops.datasets.scaffold`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kfops.cli.options import VerboseOption


def init_command(
    target: Annotated[Path, typer.Argument(help="Folder to write the project into (new or empty).")],
    table: Annotated[list[str], typer.Option(
        "--table", "-t", help="A raw table: PATH[:timestamp=COLUMN][,name=NAME]; parquet or CSV, a file here or "
        "s3://bucket/key. COLUMN says when a row became known; leave it out for static facts. Repeat per table.")],
    entity: Annotated[list[str], typer.Option(
        "--entity", "-e", help="An entity key features are looked up by (e.g. customer_id). Repeat per key.")],
    label: Annotated[str, typer.Option(
        "--label", "-l", help="'NAME = TABLE [where CONDITION] within DURATION [on KEY]' (a later table) or "
        "'NAME = CONDITION' (a condition on the events' own columns).")],
    events: Annotated[str | None, typer.Option(
        "--events", help="The table with one row per prediction (default: the one timestamped table, other "
        "than the label's, holding every entity key).")] = None,
    row_id: Annotated[str | None, typer.Option(
        "--row-id", help="Unique column of the events (default: a unique *id column, else one is made).")] = None,
    forbid: Annotated[list[str] | None, typer.Option(
        "--forbid", help="A column known only after the event, never a feature. Repeat per column.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project name (default: the folder's name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty.")] = False,
    dayfirst: Annotated[bool | None, typer.Option(
        "--day-first/--month-first", help="How to read dates such as 03/04/2024 (default: refuse a column where no "
        "value tells; ISO 8601 needs neither).", show_default=False)] = None,
    http_port: Annotated[int, typer.Option(
        "--http-port", min=1, max=65535, help="The project's local model server port (serving.http_port); pick "
        "another when a server of another project holds 8080.")] = 8080,
    verbose: VerboseOption = False,
) -> None:
    """Scaffold a kfops project from your raw tables: kfops.yaml, the dataset plug-in, Feast
    definitions and profiled Great Expectations suites.

    The tables are read and profiled; the written project is tried (the config loads, the
    plug-in builds the entity frame) before this returns. Review the draft, then run
    `kfops run training -c TARGET/kfops.yaml`.

    Examples:

    \b
      kfops init shop \\
        --table data/orders.parquet:timestamp=ordered_at \\
        --table data/customers.csv:timestamp=signup_at \\
        --table data/stores.parquet \\
        --table data/returns.csv:timestamp=returned_at \\
        --entity customer_id --entity store_id \\
        --label 'returned = returns within 30d on order_id'

    \b
      kfops init fleet \\
        --table readings.parquet:timestamp=read_at \\
        --table slots.parquet:timestamp=slot_start \\
        --entity machine_id --events slots \\
        --label 'failed = failure == 1' --forbid downtime_hours

    See docs/init.md.
    """
    from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold

    spec = InitSpec(tables=[parse_table(t) for t in table], entities=list(entity), label=parse_label(label),
                    events=events, row_id=row_id, forbid=list(forbid or []), project=project,
                    dayfirst=dayfirst, http_port=http_port)
    done = scaffold(spec, target, force=force)
    echo = typer.echo
    echo(f"scaffolded {done.project} in {done.target}")
    echo(f"  events     {done.events}: {done.rows:,} rows {done.start}..{done.end}, row id {done.row_id}")
    echo(f"  label      {done.label.text}  (rate {done.label_rate:.3f})")
    echo(f"  request    {', '.join(done.request_features) or '-'}")
    for view in done.views:
        names = ", ".join(name for name, _, _ in view.features)
        echo(f"  view       {view.name} by {', '.join(view.keys)}: {names}")
    echo(f"  forbidden  {', '.join(done.forbidden) or '-'}")
    if done.not_features:
        echo(f"  not used   {', '.join(f'{name} ({why})' for name, why in done.not_features.items())}: no "
             f"feature as they are (derive one in {done.module}.build_entity_frame, e.g. a timestamp's hour)")
    for table, why in done.unused.items():
        echo(f"  unused     {table}: {why}")
    if done.text_columns:
        echo(f"  as text    {', '.join(f'{t}.{c}' for t, columns in done.text_columns.items() for c in columns)}: "
             "zero-padded codes ('02134' is not 2134)")
    if done.left_out:
        echo(f"  left out   {', '.join(f'{name} ({why})' for name, why in done.left_out.items())}: "
             "no model can learn from them")
    for table, text in done.repeated_keys.items():
        echo(f"  warning    {table}: {text}; validation refuses them until {done.module}.py or the source keeps "
             "one row each")
    if done.stray_times:
        shown = ", ".join(done.stray_times[:3]) + (", ..." if len(done.stray_times) > 3 else "")
        echo(f"  warning    {done.events}: {len(done.stray_times):,} event time(s) far from all the others ({shown}) "
             "are outside the window: a default or placeholder time?")
    for table, columns in done.repeated_headers.items():
        echo(f"  warning    {table}: its header names {', '.join(repr(c.rsplit('.', 1)[0]) for c in columns)} twice; "
             f"read as {', '.join(repr(c) for c in columns)}: rename them at the source, so each says what it holds")
    for where, text in done.zero_mismatches.items():
        echo(f"  warning    {where}: {text}; spell them alike in {done.module}.py (e.g. .astype(str).str.zfill(N)) "
             "or at the source")
    if done.infinite:
        echo(f"  warning    infinite values in {', '.join(f'{name} ({count:,})' for name, count in done.infinite.items())}: "
             f"validation refuses them until {done.module}.py or the source cleans them")
    for path in done.files:
        echo(f"  wrote      {path.relative_to(done.target)}")
    echo(f"next: review {done.target / 'kfops.yaml'}, then: kfops run training -c {done.target / 'kfops.yaml'}")
    echo(f"on a cluster: kfops build -c {done.target / 'kfops.yaml'} makes the project's images "
         "(docs/deployment.md, 'Your own project on a cluster')")
