"""Step 3, featurize: write the Feast offline sources, build the point-in-time training set and
split it by time. ``window_features`` runs the same path in-process for drift and backtests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.featureset import EVENT_TIMESTAMP
from kfops.core.files import import_callable
from kfops.core.splits import SPLIT_COLUMN, check_split_classes, split_by_time
from kfops.core.tables import read_parquet
from kfops.core.windows import window_config
from kfops.errors import DataError
from kfops.steps.common import previous_validation, read_tables, record_validation, step_config

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig


def featurize(config: KfopsConfig | str, raw_dir: Path, sources_dir: Path, training_set: Path) -> dict[str, Any]:
    """Write the Feast offline sources from validated tables, then join features point-in-time and split by time.

    The sources are derived here, after validation, so corrupted data never reaches the feature store.
    """
    from kfops.adapters import feast_store as features
    from kfops.adapters import gx_validation as validation
    from kfops.reports.validation import write_reports

    cfg = step_config(config)
    tables = read_tables(raw_dir)
    entities = build_entities(cfg, tables, Path(sources_dir))
    joined = features.build_training_set(entities, cfg, Path(sources_dir))
    check_views_joined(joined, cfg, Path(sources_dir))
    frame = final_labels(joined, cfg)
    frame[SPLIT_COLUMN] = split_by_time(frame, cfg)
    previous = previous_validation(cfg, "training_set")
    result = validation.validate_training_set(frame, cfg, previous=previous)
    report_dir = Path(training_set).parent
    write_reports(result, report_dir / "training_set_validation.html", report_dir / "training_set_validation.json")
    if not result.success:
        print(validation.format_failures(result), flush=True)
        validation.raise_if_failed(result)
    check_split_classes(frame, cfg)
    Path(training_set).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(training_set, index=False)
    record_validation(cfg, "training_set", {"stats": result.stats})
    counts = frame[SPLIT_COLUMN].value_counts().to_dict()
    result = {"rows": len(frame), "splits": {k: int(v) for k, v in counts.items()},
              "label_rate": float(frame[cfg.dataset.label].mean()),
              # Per view, the share of rows that found its features: kept with the training set,
              # so a share that falls from run to run (keys spelled otherwise, a stale source) shows.
              "features_found": {view: round(share, 4) for view, share in features_found(frame, cfg).items()}}
    if cfg.features.materialize_online:
        result["materialized"] = materialize_window(cfg, Path(sources_dir))
    return result


# Under this many rows a view may miss every row by chance (a short window, a new entity).
MIN_ROWS_FOR_JOIN_CHECK = 50


def check_views_joined(frame: pd.DataFrame, cfg: KfopsConfig, sources_dir: Path, what: str = "the training set") -> None:
    """Raise a DataError for a feature view whose features are missing in every row of ``what``.

    A view that joins no row at all is not sparse data: its keys are spelled differently on the
    two sides ('237' in the entity frame, '237.0' in the source). Training on it would go on
    without those features and nothing else would fail, so it stops here, before training,
    naming the view, its join keys and a few keys of each side.
    """
    if len(frame) < MIN_ROWS_FOR_JOIN_CHECK:
        return
    for view, share in features_found(frame, cfg).items():
        if share > 0:
            continue
        names = cfg.features.refs_by_view[view]
        keys, source_keys = _source_keys(Path(sources_dir) / f"{view}.parquet", frame, names)
        ours = "; ".join(f"{k} {_sample(frame[k])}" for k in keys) or "?"
        theirs = source_keys or f"? (not read: no {view}.parquet under the sources)"
        raise DataError(
            f"feature view '{view}' joined none of the {len(frame):,} rows of {what}: its features "
            f"({', '.join(names)}) are missing in every row. Join key(s) {', '.join(keys) or '?'}: the entity "
            f"frame has {ours}; the source has {theirs}",
            hint="write a key the same way on both sides (an id read as a float gives '237.0' where the events "
            "say '237': kfops.core.featureset.canonical_keys spells both alike), or drop the view from "
            "features.feature_refs",
        )


def features_found(frame: pd.DataFrame, cfg: KfopsConfig) -> dict[str, float]:
    """Per feature view, the share of ``frame``'s rows holding any of its features (a view whose
    columns the frame lacks is left out)."""
    found = {}
    for view, names in cfg.features.refs_by_view.items():
        present = [n for n in names if n in frame.columns]
        if present:
            found[view] = float(frame[present].notna().any(axis=1).mean()) if len(frame) else 0.0
    return found


def _source_keys(path: Path, frame: pd.DataFrame, features: list[str]) -> tuple[list[str], str]:
    """The join keys of a view's source file (its columns the entity frame has too) and a few of their values."""

    if not path.is_file():
        return [], ""
    source = read_parquet(path)
    keys = [c for c in source.columns if c in frame.columns and c not in (*features, EVENT_TIMESTAMP)]
    return keys, "; ".join(f"{k} {_sample(source[k])}" for k in keys)


def _sample(values: pd.Series, count: int = 5) -> str:
    """A few distinct values as repr shows them, so that '237', '237.0' and 237 tell apart."""
    return ", ".join(repr(v) for v in values.dropna().drop_duplicates().head(count).tolist())


def final_labels(frame: pd.DataFrame, cfg: KfopsConfig) -> pd.DataFrame:
    """The training set without the rows whose labels are not final yet now: younger than
    ``retrain.label_delay``. Says how many were left out."""
    from kfops.core.monitoring import final_labels_only
    from kfops.core.retrain_policy import format_duration

    delay = cfg.retrain.label_delay
    if not delay or frame.empty:
        return frame
    kept = final_labels_only(frame, cfg.dataset.event_timestamp, dt.datetime.now(dt.UTC), delay)
    if len(kept) < len(frame):
        print(f"kfops: featurize: {len(frame) - len(kept):,} of {len(frame):,} rows left out: their labels are final only "
              f"{format_duration(delay)} after the event (retrain.label_delay)", flush=True)
    return kept


def build_entities(cfg: KfopsConfig, tables: dict[str, pd.DataFrame], sources_dir: Path) -> pd.DataFrame:
    """Write the Feast offline sources (when the dataset has a writer) and build the entity frame,
    then check that it has every column the config names, before any join or training."""
    from kfops.core.columns import check_config_columns, feature_names

    writer = cfg.dataset.feast_sources_writer
    if writer:
        import_callable(writer, project_dir=cfg.resolved_against)(tables, Path(sources_dir))
    entities = import_callable(cfg.require("dataset.entity_builder"), project_dir=cfg.resolved_against)(tables, cfg)
    check_config_columns(entities.columns, cfg, where="the entity frame", joined=feature_names(cfg))
    return entities


def materialize_window(cfg: KfopsConfig, sources_dir: Path) -> dict[str, int | None]:
    """Load the online store with each entity's latest features up to the window's end.

    The window's days are those of ``validation.window_timezone`` (as validation counts them): it
    ends at local midnight after ``dataset.end``, so a request at the end of the window, the
    demo's serving time, finds the features of that evening too.
    """
    from zoneinfo import ZoneInfo

    from kfops.adapters import feast_store as features

    zone = ZoneInfo(cfg.validation.window_timezone)
    first, last = cfg.window
    start = dt.datetime.combine(first, dt.time(), tzinfo=zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=zone).astimezone(dt.UTC)
    if not cfg.features.feature_refs:
        print("no feature views: the online store has nothing to hold, a raw request carries every feature",
              flush=True)
        return {}
    store = features.apply_definitions(cfg, sources_dir)
    through = features.materialized_through(store)
    if through is not None and through > end:
        # A run on an earlier window (a refused one included) must not set the served features back in time.
        print(f"the online store already holds features up to {through:%Y-%m-%d %H:%M} UTC, later than this "
              f"window's end ({end:%Y-%m-%d %H:%M} UTC): left as it is", flush=True)
        return {}
    loaded = features.materialize(cfg, start, end, store=store)
    print(f"materialized the online store ({cfg.features.online_store}) up to {end:%Y-%m-%d %H:%M} UTC: "
          + ", ".join(f"{view} {'?' if count is None else count}" for view, count in loaded.items()), flush=True)
    return loaded




def window_features(cfg: KfopsConfig, start: dt.date, end: dt.date, work_dir: Path) -> pd.DataFrame:
    """The labelled feature frame of a window: the same loader, entity builder and point-in-time
    join the training pipeline uses, so reference and current are built alike."""
    from kfops.adapters import feast_store as features
    from kfops.core.files import import_callable

    window_cfg = window_config(cfg, start, end)
    tables = import_callable(cfg.require("dataset.loader"), project_dir=cfg.resolved_against)(window_cfg)
    sources = Path(work_dir) / "sources"
    entities = build_entities(window_cfg, tables, sources)
    joined = features.build_training_set(entities, window_cfg, sources)
    # A drift check or backtest on a view that joined nothing would compare empty columns, not data.
    check_views_joined(joined, window_cfg, sources, what=f"the window {start}..{end}")
    return joined
