"""``kfops features``: load the Feast online store and look features up."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.core.redaction import redact_uri
from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

app = typer.Typer(
    help=(
        "Feast: write the offline sources, apply the definitions, materialize the online store.\n\n"
        "Examples:\n\n"
        "  kfops features materialize\n\n"
        "  kfops features materialize --start 2024-12-01 --end 2024-12-31T23:00:00 --online-store redis\n\n"
        "  kfops features get customer_id=C1042 store=north"
    ),
    no_args_is_help=True,
)

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
OnlineStoreOption = Annotated[
    str | None, typer.Option("--online-store", metavar="sqlite|redis", help="sqlite or redis (default: features.online_store).")
]


def _online_store(online_store: str | None) -> list[str]:
    """``--online-store`` as a config override (none when not given)."""
    if online_store is None:
        return []
    if online_store not in ("sqlite", "redis"):
        raise ConfigError(f"--online-store must be sqlite or redis, not '{online_store}'")
    return [f"features.online_store={online_store}"]


def pipeline_feature_sources(cfg: KfopsConfig) -> Path | None:
    """The feature sources the newest finished local pipeline run wrote, validated:
    ``<pipeline_root>/<run>/featurize/feast_sources`` (None when no run got that far)."""
    from kfops.adapters.kfp_local import EXECUTOR_OUTPUT

    root = cfg.pipeline_root
    if not root.is_dir():
        return None
    finished = [p for p in root.glob("*/featurize/feast_sources")
                if (p.parent / EXECUTOR_OUTPUT).is_file() and any(p.glob("*.parquet"))]
    return max(finished, key=lambda p: (p.parent / EXECUTOR_OUTPUT).stat().st_mtime, default=None)


def latest_raw_snapshot(cfg: KfopsConfig) -> Path:
    """``data_dir/raw/<window>`` when it exists, else the newest snapshot folder under ``data_dir/raw``."""
    raw_root = cfg.data_dir / "raw"
    preferred = raw_root / cfg.window_name
    if any(preferred.glob("*.parquet")):
        return preferred
    snapshots = [p for p in raw_root.glob("*") if p.is_dir() and any(p.glob("*.parquet"))] if raw_root.is_dir() else []
    if not snapshots:
        raise DataError(
            f"no feature sources from a pipeline run under {cfg.pipeline_root}/*/featurize/feast_sources, and no "
            f"raw snapshot under {raw_root} to build them from",
            hint="run `kfops run training` (its featurize step writes the sources), or pass --sources DIR",
        )
    return max(snapshots, key=lambda p: max(f.stat().st_mtime for f in p.glob("*.parquet")))


def _sources_stale(sources: Path, raw_dir: Path) -> bool:
    written = list(sources.glob("*.parquet"))
    if not written:
        return True
    newest_raw = max(f.stat().st_mtime for f in raw_dir.glob("*.parquet"))
    return min(f.stat().st_mtime for f in written) < newest_raw


def _copy_sources(origin: Path, destination: Path) -> int:
    import shutil

    destination.mkdir(parents=True, exist_ok=True)
    files = sorted(origin.glob("*.parquet"))
    for path in files:
        shutil.copy2(path, destination / path.name)
    return len(files)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@app.command()
def materialize(
    start: Annotated[dt.datetime | None, typer.Option(formats=DATE_FORMATS, metavar="DATE[THH:MM:SS]",
                     help="Earliest feature timestamp to load, UTC (default: dataset.start).")] = None,
    end: Annotated[dt.datetime | None, typer.Option(formats=DATE_FORMATS, metavar="DATE[THH:MM:SS]",
                   help="Latest feature timestamp to load, UTC (default: now).")] = None,
    online_store: OnlineStoreOption = None,
    sources: Annotated[Path | None, typer.Option(
        help="Folder of offline source parquet files (default: <data_dir>/feast/sources, copied from the newest "
             "pipeline run's featurize step when missing or older).")] = None,
    rebuild_sources: Annotated[bool, typer.Option(help="Rewrite the sources even when they look current.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Write the sources if needed, apply the definitions and load the online store.

    Loads, per entity, the latest feature row stamped in [start, end]; static views (no TTL)
    are loaded whatever their timestamp.

    Examples:

      kfops features materialize

      kfops features materialize --start 2013-12-24 --end 2013-12-31 --online-store redis
    """
    from kfops.adapters import feast_store as features
    from kfops.core.files import import_callable
    from kfops.steps.common import read_tables

    cfg = cli_config(config, set_, *_online_store(online_store))
    source_dir = (sources or cfg.feast_dir / "sources").expanduser().resolve()
    from_pipeline = pipeline_feature_sources(cfg) if sources is None or rebuild_sources else None
    if from_pipeline is not None:
        if rebuild_sources or _sources_stale(source_dir, from_pipeline):
            copied = _copy_sources(from_pipeline, source_dir)
            typer.echo(f"copied {copied} feature sources from {from_pipeline} to {source_dir}")
    elif sources is None or rebuild_sources:
        raw_dir = latest_raw_snapshot(cfg)
        if rebuild_sources or _sources_stale(source_dir, raw_dir):
            writer = import_callable(cfg.require("dataset.feast_sources_writer"), project_dir=cfg.resolved_against)
            written = writer(read_tables(raw_dir), source_dir)
            typer.echo(f"wrote {len(written)} feature sources from {raw_dir} to {source_dir}")
    elif not any(source_dir.glob("*.parquet")):
        raise DataError(f"no feature sources (*.parquet) in {source_dir}", hint="drop --sources to build them")

    start_at = _utc(start or dt.datetime.combine(cfg.window[0], dt.time()))
    end_at = _utc(end or dt.datetime.now(dt.UTC))
    store = features.apply_definitions(cfg, source_dir)
    loaded = features.materialize(cfg, start_at, end_at, store=store)
    where = (f"redis at {redact_uri(cfg.features.redis_connection)}" if cfg.features.online_store == "redis"
             else f"sqlite at {cfg.feast_dir / 'online.db'}")
    typer.echo(f"materialized {start_at:%Y-%m-%d %H:%M} .. {end_at:%Y-%m-%d %H:%M} UTC into {where} "
               f"(project {cfg.features.project}, registry {features.registry_config(cfg)})")
    for view, count in loaded.items():
        typer.echo(f"  {view}: {'?' if count is None else count} entities")


@app.command()
def get(
    keys: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE...", help="Join keys as key=value, e.g. customer_id=C1042 store=north.")
    ],
    online_store: OnlineStoreOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print the online features for one entity row as JSON.

    Examples:

      kfops features get customer_id=C1042 store=north
    """
    from kfops.adapters import feast_store as features

    row = {}
    for item in keys:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"'{item}' must look like key=value")
        row[key] = value
    cfg = cli_config(config, set_, *_online_store(online_store))
    values = features.OnlineFeatureReader(cfg).read_one(row)
    typer.echo(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}, indent=2))
