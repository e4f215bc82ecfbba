"""`kfops init`: a new project from a user's raw tables, the entity keys and the label.

It reads the tables, decides what each one is (the events, one row per prediction; the later table
the label comes from; feature tables keyed by an entity) and writes, into a target folder:

- ``kfops.yaml``: a draft config, every dataset key set and commented with where it came from;
- ``<project>_data.py``: the dataset plug-in (``load_tables``, ``build_entity_frame``,
  ``write_feature_sources``) and ``FEATURES``, the one declaration of the Feast features;
- ``feature_repo/definitions.py``: ``build(source_dir)``, Feast objects from ``FEATURES``;
- ``expectations/<table>.json`` per raw table, profiled from the data, and ``training_set.json``
  from the config and the entity frame the plug-in builds. Each check's ``meta.why`` says what
  was inferred.

The written project is tried before this returns: the config loads, and the plug-in loads the
window and builds the entity frame (which the training-set suite is profiled from). It is written
into a staging folder and moved into the target only once it works, so a failure leaves nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.config import PROJECT_NAME, is_uri
from kfops.core.featureset import parse_timestamps
from kfops.core.retrain_policy import format_duration
from kfops.core.splits import SPLIT_COLUMN
from kfops.datasets.scaffold import profile as prof
from kfops.datasets.scaffold import templates as tpl
from kfops.datasets.scaffold.spec import InitSpec, LabelSpec, TableSpec, parse_label, parse_table
from kfops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["InitSpec", "LabelSpec", "Scaffold", "TableSpec", "parse_label", "parse_table", "scaffold"]

TTL_CADENCES = 3  # a feature row stays valid for this many of its table's usual gaps between rows
MIN_VOLUME_SHARE = 0.5  # a run needs at least this share of the observed rows per day
MAX_SLICE_VALUES = 20  # the gate's slice column: one of at most this many values


@dataclass
class ViewPlan:
    name: str
    table: str
    keys: list[str]
    timestamp: str | None
    features: list[tuple[str, str, str]]  # (feature name, dtype, source column)
    ttl: dt.timedelta | None
    ttl_why: str


@dataclass
class Scaffold:
    """What was written and why: printed by the CLI, read by tests."""

    target: Path
    project: str
    module: str
    events: str
    row_id: str
    label: LabelSpec
    request_features: list[str]
    views: list[ViewPlan]
    forbidden: list[str]
    start: dt.date
    end: dt.date
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    label_rate: float = 0.0
    notes: list[str] = field(default_factory=list)
    label_columns: list[str] = field(default_factory=list)  # what the label's condition reads
    unknown_labels: int = 0  # events of the window left out: a null where the label reads
    row_id_time_format: str = "%Y%m%dT%H%M%S"  # of a made row id; with %f for sub-second event times
    left_out: dict[str, str] = field(default_factory=dict)  # 'table.column' -> why no model can learn from it
    infinite: dict[str, int] = field(default_factory=dict)  # 'table.column' -> its +-inf values, which validation refuses
    repeated_keys: dict[str, str] = field(default_factory=dict)  # view table -> its keys with several rows, said
    text_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> CSV columns of zero-padded codes
    unused: dict[str, str] = field(default_factory=dict)  # table given but feeding no feature view -> why
    not_features: dict[str, str] = field(default_factory=dict)  # 'table.column' -> why it is no feature as it is
    zero_mismatches: dict[str, str] = field(default_factory=dict)  # 'view.key' -> keys that match but for zeros
    repeated_headers: dict[str, list[str]] = field(default_factory=dict)  # CSV table -> 'x.1' beside 'x'
    stray_times: list[str] = field(default_factory=list)  # event times far from the rest, left out of the window

    @property
    def feature_refs(self) -> list[str]:
        return [f"{v.name}:{name}" for v in self.views for name, _, _ in v.features]


def read_raw(table: TableSpec, dayfirst: bool | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The table, and the columns of a CSV kept as text because their numbers are zero-padded
    (:func:`kfops.core.tables.zero_padded_columns`); the plug-in reads them so on every run."""
    import pandas as pd

    from kfops.core.tables import zero_padded_columns
    from kfops.datasets import read_table_file

    if not is_uri(table.path) and not Path(table.path).is_file():
        # read_table_file's hint (dataset.source_dir) is for a run; here the path is --table's, as typed.
        path = Path(table.path)
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"raw table file '{path}' {what}",
                        hint=f"--table takes a file's path, absolute or relative to the current folder "
                             f"({Path.cwd()}): '{path}' is {path.absolute()}")
    try:
        frame = read_table_file(table.path)
        # Codes read as numbers: integers, or whole floats (an integer column with nulls).
        numbers = [str(c) for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])
                   or (pd.api.types.is_float_dtype(frame[c]) and bool((frame[c].dropna() % 1 == 0).all()))]
        padded = []
        if numbers and ".csv" in str(table.path).lower():  # zero-padded codes: their CSV text, read once more
            text = read_table_file(table.path, text_columns=numbers)
            padded = zero_padded_columns(text[numbers])
            frame[padded] = text[padded]
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"table file {table.path} could not be read: {err}") from err
    if table.timestamp:
        if table.timestamp not in frame.columns:
            raise DataError(f"table '{table.name}' has no timestamp column '{table.timestamp}' "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        stamps = parse_timestamps(frame[table.timestamp], dayfirst=dayfirst)
        if stamps.isna().all():
            raise DataError(f"table '{table.name}': column '{table.timestamp}' holds no timestamps")
        frame[table.timestamp] = stamps
    return frame, padded


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug if slug and not slug[0].isdigit() else f"p_{slug}"


def scaffold(spec: InitSpec, target: Path, force: bool = False) -> Scaffold:
    """Write the project for ``spec`` into ``target``; see the module docstring."""
    target = Path(target).expanduser().resolve()
    if target.exists() and any(target.iterdir()) and not force:
        raise ConfigError(f"{target} is not empty", hint="pick a new folder, or pass --force to overwrite its files")
    if not spec.tables:
        raise ConfigError("no tables given", hint="--table orders.parquet:timestamp=ordered_at (one per table)")
    if not spec.entities:
        raise ConfigError("no entity keys given", hint="--entity customer_id (one per key features are looked up by)")
    if spec.project is not None and not re.match(PROJECT_NAME, spec.project):
        raise ConfigError(f"--project '{spec.project}' is not a project name: letters, digits, '.', '_' and '-'",
                          hint=f"e.g. --project {_slug(spec.project) or 'my_project'}")
    names = [t.name for t in spec.tables]
    if len(set(names)) != len(names):
        raise ConfigError(f"two tables share a name: {names}", hint="give one of them name=NAME")
    read = {t.name: read_raw(t, spec.dayfirst) for t in spec.tables}
    frames = {name: frame for name, (frame, _) in read.items()}
    text_columns = {name: padded for name, (_, padded) in read.items() if padded}
    profiles = {name: prof.profile_table(name, frame) for name, frame in frames.items()}
    by_name = {t.name: t for t in spec.tables}

    for key in spec.entities:
        if not any(key in frame.columns for frame in frames.values()):
            raise DataError(f"entity key '{key}' is in none of the tables")
    label = spec.label
    events = _events_table(spec, frames, profiles)
    row_id = _row_id(spec, events, profiles[events])
    forbidden = list(dict.fromkeys(spec.forbid))
    if label.table is not None:
        _check_later_label(label, events, by_name, frames)
        on = list(label.on) or [c for c in frames[events].columns if c in frames[label.table].columns
                                and c not in (by_name[events].timestamp, by_name[label.table].timestamp)]
        if not on:
            raise DataError(f"tables '{events}' and '{label.table}' share no column to match the label on",
                            hint="name the key: --label '... within 30d on order_id'")
        _check_label_keys(on, events, label.table, frames)
        label = LabelSpec(label.name, label.text, label.table, label.condition, label.horizon, tuple(on))
        forbidden += [c for c in frames[label.table].columns if c not in on]
        label_columns = _columns_read(label.condition, frames[label.table]) if label.condition else []
    else:
        label_columns = _columns_read(label.condition or "", frames[events])
        if not label_columns:
            raise DataError(f"the label condition '{label.condition}' reads no column of '{events}'",
                            hint=f"columns: {', '.join(map(str, frames[events].columns))}")
        _check_condition(label, frames[events], events)
        forbidden += label_columns
    forbidden = list(dict.fromkeys(forbidden))
    _check_label_name(label, frames[events], events, forbidden, label_columns, [row_id, *spec.entities])
    taken = {row_id, label.name, "event_timestamp", *spec.entities}
    others = [c for c in profiles[events].columns.values()
              if c.name not in taken | set(forbidden) | set(label.on) and c.name != by_name[events].timestamp]
    candidates = [c for c in others if c.dtype and not c.id_like and c.name != SPLIT_COLUMN]
    not_features = {f"{events}.{c.name}": _not_a_feature(c) for c in others if c not in candidates}
    request = [c.name for c in candidates if not c.uninformative]
    left_out = {f"{events}.{c.name}": str(c.uninformative) for c in candidates if c.uninformative}
    unused: dict[str, str] = {}
    # A view's feature named as kfops' split column gets its table's name in front, as a taken name does.
    views = _views(spec, frames, profiles, events, label, forbidden, set(request) | taken | {SPLIT_COLUMN}, left_out,
                   unused, not_features)
    project = spec.project or _slug(target.name)
    start, end, strays = _window(frames, by_name, events, label)
    plan = Scaffold(target=target, project=project, module=f"{_slug(project)}_data", events=events, row_id=row_id,
                    label=label, request_features=request, views=views, forbidden=forbidden, start=start, end=end,
                    label_columns=label_columns, row_id_time_format=_row_id_time_format(frames[events], by_name[events]),
                    left_out=left_out, infinite={f"{table}.{c.name}": c.infinite for table, profile in profiles.items()
                                                 for c in profile.columns.values() if c.infinite},
                    repeated_keys={v.table: text for v in views if (text := repeated_keys(frames[v.table], v))},
                    text_columns=text_columns, unused=unused, not_features=not_features,
                    zero_mismatches=zero_mismatches(frames[events], events, frames, views),
                    stray_times=[str(t) for t in strays],
                    repeated_headers={t.name: found for t in spec.tables
                                      if ".csv" in str(t.path).lower() and (found := repeated_headers(frames[t.name]))})
    _write_project(plan, spec, frames, profiles, by_name)
    return plan


# Why the events need a time, said where a table lacks one.
EVENTS_NEED_TIME = ("kfops splits train, validation and test by when events happened, reads features as of that "
                    "time, and windows, monitors and retrains by it")


def _events_table(spec: InitSpec, frames: dict[str, pd.DataFrame],
                  profiles: dict[str, prof.TableProfile]) -> str:
    timestamps = {t.name: t.timestamp for t in spec.tables}
    tables = {t.name: t for t in spec.tables}
    if spec.events:
        if spec.events not in frames:
            raise ConfigError(f"--events {spec.events}: no such table (tables: {', '.join(frames)})")
        if not timestamps[spec.events]:
            raise ConfigError(f"the events table '{spec.events}' needs a timestamp: {EVENTS_NEED_TIME}",
                              hint=_time_hint(tables[spec.events], profiles[spec.events]))
        return spec.events
    if not any(timestamps.values()):
        raise ConfigError(f"no --table names a timestamp, and the events need one: {EVENTS_NEED_TIME}",
                          hint="; ".join(_time_hint(tables[name], profile) for name, profile in profiles.items()))
    candidates = [name for name, frame in frames.items() if timestamps[name] and name != spec.label.table
                  and all(k in frame.columns for k in spec.entities)]
    # A table with one row per key holds facts about the entity, not events.
    repeated = [name for name in candidates if frames[name].duplicated(spec.entities).any()]
    candidates = repeated or candidates
    if len(candidates) != 1:
        raise ConfigError(
            f"cannot tell which table holds the events (one row per prediction): candidates {candidates or 'none'}",
            hint="name it: --events TABLE (a table with a timestamp and every entity key)",
        )
    return candidates[0]


def _time_hint(table: TableSpec, profile: prof.TableProfile) -> str:
    """Which of a table's columns could be its timestamp, as a --table option; or that it has none."""
    times = [c.name for c in profile.columns.values() if c.kind == "timestamp" or c.time_text]
    if times:
        return " or ".join(f"--table {table.path}:timestamp={name}" for name in times)
    return (f"'{table.name}' has no column of times: a one-off export without them (when each row was known) "
            "cannot be split or monitored by time")


def _row_id(spec: InitSpec, events: str, table: prof.TableProfile) -> str:
    if spec.row_id:
        if spec.row_id not in table.columns:
            raise DataError(f"--row-id {spec.row_id}: no such column in '{events}'")
        if not table.columns[spec.row_id].unique:
            raise DataError(f"--row-id {spec.row_id}: values in '{events}' are not unique (or some are null)")
        return spec.row_id
    ids = [c.name for c in table.columns.values() if c.unique and c.kind in ("string", "int")
           and c.name not in spec.entities and c.name.lower().endswith("id")]
    return ids[0] if ids else "row_id"  # none: the plug-in makes one from the keys and the time


def _check_later_label(label: LabelSpec, events: str, by_name: dict[str, TableSpec],
                       frames: dict[str, pd.DataFrame]) -> None:
    if label.table not in frames:
        raise ConfigError(f"the label reads table '{label.table}', which is not among the tables "
                          f"({', '.join(frames)})", hint="add it: --table FILE:timestamp=COLUMN")
    if label.table == events:
        raise ConfigError(f"the label's later table is the events table '{events}' itself",
                          hint="give the later rows as their own --table (the same file with name=NAME works)")
    if not by_name[label.table].timestamp:
        raise ConfigError(f"the label table '{label.table}' needs a timestamp", hint="--table ...:timestamp=COLUMN")
    missing = [k for k in label.on if k not in frames[events].columns or k not in frames[label.table].columns]
    if missing:
        raise DataError(f"label key(s) {', '.join(missing)} are not in both '{events}' and '{label.table}'")
    if label.condition:
        _check_condition(label, frames[label.table], label.table)


def _columns_read(condition: str, frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that ``condition`` names, outside its quoted strings."""
    code = re.sub(r"'[^']*'|\"[^\"]*\"", " ", condition)
    return [str(c) for c in frame.columns if re.search(rf"(?<!\w){re.escape(str(c))}(?!\w)", code)]


def _check_condition(label: LabelSpec, frame: pd.DataFrame, table: str) -> None:
    """The label's condition runs on the whole of ``table`` and gives true/false (or 1/0), as the
    plug-in's ``label`` needs: a mistake is refused here, before anything is written."""
    import pandas as pd

    condition = label.condition or ""
    try:
        value = frame.eval(condition)
    except Exception as err:  # pandas raises many kinds for a bad expression
        raise ConfigError(f"the label condition '{condition}' does not run on '{table}': {type(err).__name__}: {err}",
                          hint=_condition_hint(label, frame, table)) from err
    if isinstance(value, pd.DataFrame):  # `a = b` assigns a column
        raise ConfigError(f"the label condition '{condition}' assigns a column instead of comparing",
                          hint="compare with '==': e.g. churn == 'yes'")
    present = pd.Series(value).dropna()
    odd = present[~present.isin([0, 1])]
    if len(odd):
        example = _plain(odd.iloc[0])
        raise ConfigError(f"the label condition '{condition}' gives values such as {example!r} on '{table}', "
                          "not true/false", hint=f"a label condition compares, e.g. {condition} == {example!r}")


def _condition_hint(label: LabelSpec, frame: pd.DataFrame, table: str) -> str:
    condition = label.condition or ""
    # pandas reads `Is Fraud == 1` as two names: a column name that is no identifier needs backticks.
    bare = [str(c) for c in frame.columns if not str(c).isidentifier() and str(c) in condition
            and f"`{c}`" not in condition]
    if bare:
        pattern = "|".join(re.escape(c) for c in sorted(bare, key=len, reverse=True))
        quoted = re.sub(pattern, lambda m: f"`{m.group(0)}`", condition)
        return f"put a column name with spaces or signs in backticks: --label \"{label.text.replace(condition, quoted)}\""
    return f"a pandas expression on the columns of '{table}': {', '.join(map(str, frame.columns))}"


def _check_label_keys(on: list[str], events: str, later: str, frames: dict[str, pd.DataFrame]) -> None:
    """The label's keys can be matched: of one type in both tables, or whole numbers on one side and
    the same numbers as digits on the other (7 and '7' or '0007'), which the plug-in matches."""
    for key in on:
        left, right = frames[events][key], frames[later][key]
        if left.dtype == right.dtype:
            continue
        kinds = _key_kind(left), _key_kind(right)
        if _KEY_MATCHES.get(kinds[0], {kinds[0]}) & _KEY_MATCHES.get(kinds[1], {kinds[1]}):
            continue
        raise DataError(
            f"the label key '{key}' is {left.dtype} in '{events}' ({_key_example(left)}) but {right.dtype} in "
            f"'{later}' ({_key_example(right)}): its values cannot be matched unambiguously",
            hint=f"store '{key}' with one type in both tables (both text, or both integers)")


# What a key of each kind can be matched with: digits match numbers (by the integer they spell) or text.
_KEY_MATCHES = {"number": {"number"}, "digits": {"number", "text"}, "text": {"text"}}


def _key_kind(values: pd.Series) -> str:
    """``number`` for whole numbers; ``digits`` for text that spells them, one number per value
    ('7', '0007'; not both); ``text`` for other strings; else the dtype."""
    import pandas as pd

    present = values.dropna()
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "number"
    if pd.api.types.is_float_dtype(values):
        return "number" if bool((present % 1 == 0).all()) else "float"
    if pd.api.types.is_object_dtype(values) or isinstance(values.dtype, pd.StringDtype):
        text = present.astype(str).drop_duplicates()
        if not text.str.fullmatch(r"-?[0-9]+").all():
            return "text"
        spelled = text.str.replace(r"^(-?)0+(?=[0-9])", r"\1", regex=True)
        return "digits" if spelled.is_unique else "text"
    return str(values.dtype)


def _key_example(values: pd.Series) -> str:
    present = values.dropna()
    return f"e.g. {_plain(present.iloc[0])!r}" if len(present) else "all null"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so a message shows 7, not np.int64(7); a group
    key likewise, one of one column as its value ('S01', not ('S01',))."""
    if isinstance(value, tuple):
        return _plain(value[0]) if len(value) == 1 else tuple(_plain(v) for v in value)
    return value.item() if hasattr(value, "item") else value


def _check_label_name(label: LabelSpec, frame: pd.DataFrame, events: str, forbidden: list[str],
                      label_columns: list[str], keys: list[str]) -> None:
    """The label's name is a new column of the entity frame: one that names an outcome would be
    refused as label leakage on every run, one that names a column of the events would replace it."""
    leakage = "an outcome (features.forbidden_columns): every run would refuse the label itself as label leakage"
    if label.name in label_columns and label.table is None:
        what = f"the column its condition reads, {leakage}"
    elif label.name in forbidden:
        what = leakage
    elif label.name in [*keys, "event_timestamp"]:
        what = "the row id, an entity key or the event time of the entity frame, which the label would replace"
    elif label.name in map(str, frame.columns):
        what = f"a column of '{events}', which the label would replace in the entity frame"
    else:
        return
    taken = {*forbidden, *keys, *map(str, frame.columns)}
    names = ([f"{label.name}d" if label.name.endswith("e") else f"{label.name}ed"]
             if not label.name.endswith("d") else []) + [f"{label.name}_label", f"label_{label.name}"]
    other = next((name for name in names if name not in taken), f"{label.name}_label")
    expression = label.text.partition("=")[2].strip()
    raise ConfigError(f"the label's name '{label.name}' is also {what}",
                      hint=f"give the label another name: --label \"{other} = {expression}\"")


def _row_id_time_format(frame: pd.DataFrame, table: TableSpec) -> str:
    """A made row id names the event's second; the microsecond too when events have sub-second times,
    so the id stays readable for whole seconds and tells sub-second events apart."""
    stamps = frame[table.timestamp].dropna() if table.timestamp else None
    if stamps is not None and bool((stamps != stamps.dt.floor("s")).any()):
        return "%Y%m%dT%H%M%S%f"
    return "%Y%m%dT%H%M%S"


def _views(spec: InitSpec, frames: dict[str, pd.DataFrame], profiles: dict[str, prof.TableProfile], events: str,
           label: LabelSpec, forbidden: list[str], taken: set[str], left_out: dict[str, str],
           unused: dict[str, str], not_features: dict[str, str]) -> list[ViewPlan]:
    """One view per table holding an entity key; columns no model can learn from go to ``left_out``,
    columns that are no feature as they are to ``not_features``, and a table that gives no view to
    ``unused``, each with the reason."""
    views = []
    used = set(taken)
    for table in spec.tables:
        if table.name in (events, label.table):
            continue
        keys = [k for k in spec.entities if k in frames[table.name].columns]
        if not keys:
            unused[table.name] = (f"no column of it is named as an --entity ({', '.join(spec.entities)}), so no "
                                  "feature comes from it: give its key column the name the events use")
            continue
        features = []
        for item in profiles[table.name].columns.values():
            if item.name in keys or item.name == table.timestamp or item.name in forbidden or item.name in spec.entities:
                continue
            if not item.dtype or item.id_like:
                not_features[f"{table.name}.{item.name}"] = _not_a_feature(item)
                continue
            if item.uninformative:
                left_out[f"{table.name}.{item.name}"] = item.uninformative
                continue
            dtype = "float" if item.dtype == "int" and item.nulls else item.dtype
            name = item.name if item.name not in used else f"{table.name}_{item.name}"
            used.add(name)
            features.append((name, dtype, item.name))
        if not features:
            unused[table.name] = ("none of its other columns can be a feature (ids, timestamps, outcomes or "
                                  "columns of one value)")
            continue
        ttl, why = _ttl(frames[table.name], keys, table.timestamp)
        views.append(ViewPlan(name=table.name, table=table.name, keys=keys, timestamp=table.timestamp,
                              features=features, ttl=ttl, ttl_why=why))
    return views


def repeated_headers(frame: pd.DataFrame) -> list[str]:
    """Columns pandas renamed because a CSV header named them twice: 'beds.1' beside 'beds'."""
    names = {str(c) for c in frame.columns}
    return [str(c) for c in frame.columns
            if (found := re.fullmatch(r"(.+)\.[1-9][0-9]*", str(c))) and found.group(1) in names]


def zero_mismatches(events: pd.DataFrame, events_name: str, frames: dict[str, pd.DataFrame],
                    views: list[ViewPlan]) -> dict[str, str]:
    """Keys of the events that a view's table holds only with other leading zeros (2134 in the
    events, '02134' in the table): those events would join no features, silently. By 'view.key'."""
    from kfops.core.featureset import canonical_keys

    def unpadded(key: str) -> str:
        return re.sub(r"^(-?)0+(?=[0-9])", r"\1", key)

    found: dict[str, str] = {}
    for view in views:
        for key in view.keys:
            ours = set(canonical_keys(events[key].dropna()))
            theirs = set(canonical_keys(frames[view.table][key].dropna()))
            by_number = {unpadded(value): value for value in theirs}
            near = {value: by_number[unpadded(value)] for value in sorted(ours - theirs)
                    if unpadded(value) in by_number}
            if near:
                ours_example, theirs_example = next(iter(near.items()))
                found[f"{view.name}.{key}"] = (
                    f"{len(near):,} of the {len(ours):,} {key} values of {events_name} match a row of {view.table} only "
                    f"but for leading zeros ({ours_example!r} in {events_name}, {theirs_example!r} in {view.table}): "
                    "those events would join none of its features")
    return found


def _not_a_feature(item: prof.ColumnProfile) -> str:
    """Why a column is no feature as it is: a second timestamp (its hour or weekday may be one, made
    in the plug-in), an id, free text, or a type a model does not take."""
    if item.name == SPLIT_COLUMN:
        return f"named '{SPLIT_COLUMN}', as kfops' own train/validation/test column: rename it to use it"
    if item.kind == "timestamp" or item.time_text:
        return "a timestamp"
    if item.not_numbers:
        return (f"numbers but for {', '.join(map(repr, item.not_numbers))}, which keep it text: read them as "
                "missing (pd.to_numeric(..., errors='coerce'))")
    if item.id_like:
        return "an id or free text: about a value per row" if item.kind == "string" else "numbers the rows"
    return f"of type {item.pandas_dtype}"


def _ttl(frame: pd.DataFrame, keys: list[str], timestamp: str | None) -> tuple[dt.timedelta | None, str]:
    if timestamp is None:
        return None, "no timestamp: static facts, never expire"
    per_key = frame.groupby(keys, sort=False)[timestamp]
    if int(per_key.size().max()) <= 1:
        return None, f"one row per {'/'.join(keys)}: its facts hold from {timestamp} on and never expire"
    gaps = per_key.diff().dropna()
    gaps = gaps[gaps > dt.timedelta(0)]
    if gaps.empty:
        return None, f"rows of a {'/'.join(keys)} share one {timestamp}: never expire"
    median = gaps.median().to_pytimedelta()
    hours = max(1, math.ceil(TTL_CADENCES * median.total_seconds() / 3600))
    ttl = dt.timedelta(days=math.ceil(hours / 24)) if hours >= 48 else dt.timedelta(hours=hours)
    return ttl, (f"a new row per {'/'.join(keys)} every {_human(median)} (median gap): a row older than "
                 f"{TTL_CADENCES}x that no longer describes it")


def _human(value: dt.timedelta) -> str:
    hours = value.total_seconds() / 3600
    return f"{hours / 24:.3g} days" if hours >= 48 else f"{hours:.3g} hours"


# An event time this far from all the others, at either end, among at most STRAY_SHARE of them, is a
# placeholder (1970-01-01, 2099-12-31), not the start or end of the data.
STRAY_GAP = dt.timedelta(days=90)
STRAY_SHARE = 0.01


def stray_times(stamps: pd.Series) -> tuple[pd.Series, list]:
    """``stamps`` without the few at either end that lie more than :data:`STRAY_GAP` from the rest,
    and those left out."""
    values = stamps.sort_values(kind="stable").reset_index(drop=True)
    most = int(STRAY_SHARE * len(values))
    if not most:
        return values, []
    gaps = values.diff().iloc[1:].reset_index(drop=True)  # gaps[i]: values[i + 1] - values[i]
    first = max((i + 1 for i in range(most) if gaps[i] > STRAY_GAP), default=0)
    last = min((j + 1 for j in range(len(values) - 1 - most, len(values) - 1) if gaps[j] > STRAY_GAP),
               default=len(values))
    kept = values.iloc[first:last]
    return kept, [*values.iloc[:first], *values.iloc[last:]]


def _window(frames: dict[str, pd.DataFrame], by_name: dict[str, TableSpec], events: str,
            label: LabelSpec) -> tuple[dt.date, dt.date, list]:
    stamps, strays = stray_times(frames[events][by_name[events].timestamp].dropna())
    start, end = stamps.min().date(), stamps.max().date()
    if label.table is not None and label.horizon is not None:
        # An event closer to the end of the label data than the horizon has no complete label yet.
        last = frames[label.table][by_name[label.table].timestamp].max()
        end = min(end, (last - label.horizon).date())
    if end < start:
        raise DataError(f"the events of '{events}' span {start}..{stamps.max().date()}, less than the label's horizon "
                        f"{label.horizon_text}: no event has a complete label")
    return start, end, strays


# --- writing ------------------------------------------------------------------------------------


def _write(plan: Scaffold, folder: Path, relative: str, text: str) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    plan.files.append(plan.target / relative)


def _write_project(plan: Scaffold, spec: InitSpec, frames: dict[str, pd.DataFrame],
                   profiles: dict[str, prof.TableProfile], by_name: dict[str, TableSpec]) -> None:
    """Write the project into a staging folder beside the target and try it there; only a project
    that works is moved into place, so a failed init leaves the target as it was."""
    import shutil
    import uuid

    parent = next(p for p in plan.target.parents if p.is_dir())  # the target and its parents may be new
    staging = parent / f".{plan.target.name}.kfops-init-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
    except OSError as err:
        raise ConfigError(f"cannot write in {parent}: {err}", hint="pick a folder you can write to") from err
    try:
        _write_files(plan, staging, spec, frames, profiles)
        shutil.rmtree(staging / "__pycache__", ignore_errors=True)  # left by the trial import of the plug-in
        _move_into_place(staging, plan.target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_files(plan: Scaffold, folder: Path, spec: InitSpec, frames: dict[str, pd.DataFrame],
                 profiles: dict[str, prof.TableProfile]) -> None:
    source_dir, table_files = _source_layout(spec.tables)
    _write(plan, folder, f"{plan.module}.py", _plugin_text(plan, spec, table_files, profiles))
    _write(plan, folder, "feature_repo/definitions.py",
           tpl.DEFINITIONS.format(project=plan.project, module=plan.module))
    for table in spec.tables:
        _write(plan, folder, f"expectations/{table.name}.json",
               _json(_raw_suite(plan, table, frames[table.name], profiles[table.name])))
    _write(plan, folder, "kfops.yaml", _config_text(plan, spec, source_dir, None, profiles[plan.events]))
    # Try it: the config loads (and with it FEATURES), the loader and entity builder run.
    entity_frame = _entity_frame(plan, folder)
    plan.rows = len(entity_frame)
    plan.label_rate = float(entity_frame[plan.label.name].mean()) if len(entity_frame) else 0.0
    if not 0 < plan.label_rate < 1:
        raise DataError(f"the label '{plan.label.text}' is {plan.label_rate:.0%} positive over {plan.rows:,} events: "
                        "a model cannot learn from one class", hint="check the label's table, key and horizon")
    band = (round(max(0.0, plan.label_rate / 2), 4), round(min(1.0, plan.label_rate * 2 + 0.01), 4))
    plan.files.remove(plan.target / "kfops.yaml")
    _write(plan, folder, "kfops.yaml", _config_text(plan, spec, source_dir, band, profiles[plan.events]))
    _write(plan, folder, "expectations/training_set.json", _json(_training_suite(plan, entity_frame, profiles)))
    _write(plan, folder, ".gitignore", ".kfops/\n__pycache__/\n")


def _move_into_place(staging: Path, target: Path) -> None:
    import os

    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # one step: the project appears whole
        return
    for path in sorted(staging.rglob("*")):  # an empty target, or --force: file by file, replacing
        if path.is_file():
            destination = target / path.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)


def _source_layout(tables: list[TableSpec]) -> tuple[Path | str, dict[str, str]]:
    """``dataset.source_dir`` (the tables' common folder or object-store prefix) and each table's
    file under it, as the plug-in reads them."""
    import os
    import posixpath

    remote = [t for t in tables if is_uri(t.path)]
    if not remote:
        files = {t.name: Path(t.path).expanduser().resolve() for t in tables}
        folder = Path(os.path.commonpath([str(f.parent) for f in files.values()]))
        return folder, {name: f.relative_to(folder).as_posix() for name, f in files.items()}
    if len(remote) != len(tables):
        raise ConfigError("--table: some tables are files here and some are in an object store; the plug-in reads "
                          "every table from one place (dataset.source_dir)",
                          hint="put them all in one folder, or all under one s3://bucket/prefix")
    roots = {str(t.path).split("://")[0] + "://" + str(t.path).split("://", 1)[1].split("/")[0] for t in tables}
    if len(roots) != 1:
        raise ConfigError(f"--table: the tables are in {len(roots)} buckets ({', '.join(sorted(roots))}); the plug-in "
                          "reads every table from one prefix (dataset.source_dir)", hint="copy them under one prefix")
    (root,) = roots
    keys = {t.name: str(t.path)[len(root) + 1:] for t in tables}
    common = posixpath.commonpath([posixpath.dirname(k) for k in keys.values()])
    prefix = f"{root}/{common}" if common else root
    return prefix, {name: key[len(common) + 1:] if common else key for name, key in keys.items()}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str) + "\n"


def _entity_frame(plan: Scaffold, folder: Path) -> pd.DataFrame:
    """The entity frame the written plug-in in ``folder`` builds for the window, checked."""
    from kfops.config import load_config
    from kfops.core.files import import_callable

    cfg = load_config(folder / "kfops.yaml", environ={})
    tables = import_callable(f"{plan.module}:load_tables", search_path=folder)(cfg)
    frame = import_callable(f"{plan.module}:build_entity_frame", search_path=folder)(tables, cfg)
    plan.unknown_labels = len(tables[plan.events]) - len(frame)  # build_entity_frame printed them
    if frame.empty:
        raise DataError(f"the scaffolded plug-in built no events for {plan.start}..{plan.end}"
                        + (f" ({plan.unknown_labels:,} left out: their label is unknown)" if plan.unknown_labels else ""))
    ids = frame[plan.row_id]
    if ids.isna().any() or not ids.is_unique:
        repeated = ids[ids.duplicated()].head(3).tolist()
        raise DataError(f"the row id '{plan.row_id}' of the entity frame is not unique or has nulls "
                        f"(repeated: {repeated})", hint="name a unique column of the events: --row-id COLUMN")
    return frame


def _plugin_text(plan: Scaffold, spec: InitSpec, table_files: dict[str, str],
                 profiles: dict[str, prof.TableProfile]) -> str:
    label = plan.label
    timestamps = {t.name: t.timestamp for t in spec.tables}
    later = label.table is not None
    if later:
        label_doc = (f"1 when a row of '{label.table}'" + (f" matching `{label.condition}`" if label.condition else "")
                     + f" with the same {', '.join(label.on)} comes within {label.horizon_text} after the event.")
    else:
        label_doc = f"`{label.condition}` on the events' own columns (refused as features: outcomes)."
    row_id_present = plan.row_id in profiles[plan.events].columns
    text = tpl.PLUGIN_HEADER.format(
        project=plan.project, table_list=", ".join(table_files.values()), label_text=label.text, label_doc=label_doc,
        table_files=tpl.mapping_code(table_files), timestamps=tpl.mapping_code(timestamps), events=plan.events,
        row_id=plan.row_id, row_id_note="" if row_id_present else " (made from the keys and the event time)",
        entity_keys=[k for k in spec.entities if k in profiles[plan.events].columns],
        request_features=plan.request_features, label_name=label.name, dayfirst=spec.dayfirst,
        text_columns=tpl.mapping_code(plan.text_columns),
    )
    if later:
        text += tpl.LATER_LABEL.format(table=label.table, on=list(label.on), condition=label.condition,
                                       columns=plan.label_columns, horizon=tpl.timedelta_code(label.horizon))
    else:
        text += tpl.SAME_TABLE_LABEL.format(condition=label.condition, columns=plan.label_columns)
    # build_entity_frame gives keys as strings, so the Feast join keys are strings too.
    entities = "\n".join(f"        Entity({k!r}, 'string')," for k in spec.entities
                         if any(k in v.keys for v in plan.views))
    views = []
    for view in plan.views:
        features = "".join(
            f"\n                Feature({name!r}, {dtype!r}" + (f", column={column!r}" if column != name else "") + "),"
            for name, dtype, column in view.features)
        views.append(
            f"        # TTL: {view.ttl_why}.\n"
            f"        View({view.name!r}, keys={view.keys!r}, table={view.table!r}, timestamp={view.timestamp!r},\n"
            f"             ttl={tpl.timedelta_code(view.ttl)}, features=[{features}\n             ]),")
    text += tpl.FEATURES_BLOCK.format(entities=entities, views="\n".join(views))
    later_filter = ""
    later_doc = ""
    if later:
        later_filter = ("\n        elif name == LABEL_TABLE:  # the label looks HORIZON past the window's end"
                        "\n            frame = frame[(frame[column] >= start) & (frame[column] < end + HORIZON)]")
        later_doc = ",\n    LABEL_TABLE those up to HORIZON after it (for the label)"
    if row_id_present:
        row_id_expr = "ROW_ID: events[ROW_ID].astype(str)"
    else:
        row_id_expr = "ROW_ID: make_row_ids(events)"
    text += tpl.LOADER.format(later_filter=later_filter, later_doc=later_doc, row_id_expr=row_id_expr)
    if not row_id_present:
        text += tpl.MADE_ROW_ID.format(time_format=plan.row_id_time_format)
    text += tpl.LATER_LABEL_FUNCTION if later else tpl.SAME_TABLE_LABEL_FUNCTION
    text += tpl.CONDITION_FUNCTION
    text += tpl.WRITER
    return text


def _yaml(value: str | list[str]) -> str:
    """``value`` as a YAML flow scalar or sequence that reads back as the same strings: column names
    come from the user's data and may hold ``?``, ``,``, ``:``, ``#`` or read as YAML booleans (``no``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 30)
    return text.removesuffix("\n...\n").rstrip("\n")


def _config_text(plan: Scaffold, spec: InitSpec, source_dir: Path | str, label_band: tuple[float, float] | None,
                 events: prof.TableProfile) -> str:
    string_request = [c for c in plan.request_features if events.columns[c].kind in ("string", "bool")]
    # A slice per value is judged against the champion: with many values each slice is small, and
    # the worst of their noisy AUC changes would refuse every challenger.
    few_values = [c for c in string_request if events.columns[c].distinct <= MAX_SLICE_VALUES]
    slices = few_values[:1]
    slice_note = ("" if slices else f"  # no string request feature has at most {MAX_SLICE_VALUES} values: "
                  "name a column of few values (a region, a channel)")
    band = f"[{label_band[0]}, {label_band[1]}]" if label_band else "[0.0, 1.0]"
    observed = f"  # observed label rate {plan.label_rate:.3f}: half to twice it" if label_band else ""
    if label_band and plan.unknown_labels:
        observed += f" ({plan.unknown_labels:,} events with an unknown label left out)"
    event_time = next(t.timestamp for t in spec.tables if t.name == plan.events)
    lines = [
        f"# kfops configuration for {plan.project}, drafted by `kfops init` from the data: review it.",
        "# Every key: docs/configuration.md. Override with KFOPS__SECTION__KEY=value or --set section.key=value.",
        f"project: {_yaml(plan.project)}",
        "data_dir: .kfops            # local state: MLflow, Feast, snapshots, logs",
        "",
        "dataset:",
        f"  loader: {plan.module}:load_tables",
        f"  entity_builder: {plan.module}:build_entity_frame",
        f"  feast_sources_writer: {plan.module}:write_feature_sources",
        f"  source_dir: {_yaml(str(source_dir))}",
        f"  start: {plan.start}         # first day with events",
        f"  end: {plan.end}           # last day whose events have a complete label",
        f"  label: {_yaml(plan.label.name)}",
        f"  row_id: {_yaml(plan.row_id)}",
        *([f"  request_time_field: {_yaml(event_time)}   # a raw request's event time (ISO 8601; default now), "
           f"named as {plan.events} names it"] if event_time != "event_timestamp" else []),
        "",
        "validation:",
        "  suites_dir: expectations",
        f"  tables: {_yaml([t.name for t in spec.tables])}",
        "  window_timezone: UTC       # dataset.start/end are UTC days",
        f"  label_rate_band: {band}{observed}",
        "",
        "features:",
        "  repo_path: feature_repo",
        "  definitions: definitions:build",
        f"  project: {_slug(plan.project)}",
        f"  feature_set: {plan.module}:FEATURES   # feature_refs and categorical features follow from it",
        f"  request_features: {_yaml(plan.request_features)}   # columns of {plan.events} known at request time",
        *([f"  # left out, as no model can learn from them: "
           f"{', '.join(f'{name} ({why})' for name, why in plan.left_out.items())}"] if plan.left_out else []),
        f"  categorical: {_yaml(string_request)}   # string request features (declared ones follow)",
        f"  forbidden_columns: {_yaml(plan.forbidden)}   # outcomes: refused as features",
        "  materialize_online: true   # the deployed server answers raw requests from the online store",
        "",
        "train:",
        "  trainer: xgboost",
        "  xgboost: {n_estimators: 200, max_depth: 4, learning_rate: 0.1}",
        "",
        "evaluate:",
        "  invariant_columns: []       # columns that must not change a prediction",
        "  non_decreasing_columns: []  # columns whose increase must not lower it",
        "  gate:",
        "    min_roc_auc: 0.6",
        "    min_improvement: 0.0",
        "    max_slice_regression: 0.05",
        f"    slices: {_yaml(slices)}{slice_note}",
        "    min_slice_rows: 50",
        "",
        "registry:",
        f"  experiment: kfops-{_slug(plan.project).replace('_', '-')}",
        f"  model_name: {_slug(plan.project).replace('_', '-')}-{_slug(plan.label.name).replace('_', '-')}",
        "",
        "serving:",
        "  host: 127.0.0.1",
        f"  http_port: {spec.http_port}",
        "",
        "drift:",
        f"  label_column: {_yaml(plan.label.name)}   # the label, when a window has it: the drift check scores "
        "the champion on it",
        "",
        "retrain:",
    ]
    if plan.label.table is not None and plan.label.horizon is not None:
        # A label from a later table is final only when its horizon has passed: training,
        # monitoring and `kfops backtest` must not read it sooner.
        lines.append(f"  label_delay: {format_duration(plan.label.horizon)}   # the label is final "
                     f"{plan.label.horizon_text} after the event ({plan.label.text})")
    else:
        lines.append("  label_delay: 0s   # how long after an event its label exists (e.g. 1d): set it, so "
                     "monitoring and `kfops backtest` never read a label before it exists")
    return "\n".join([*lines, ""])


def _raw_suite(plan: Scaffold, table: TableSpec, frame: pd.DataFrame, profile: prof.TableProfile) -> dict:
    columns = [str(c) for c in frame.columns]
    checks = [prof.columns_check(columns, True, f"the {len(columns)} columns of {table.file_name}: a column added, "
                                 "dropped or renamed upstream fails here"), prof.rows_check()]
    meta: dict[str, Any] = {}
    days = _days(frame, table.timestamp)
    if table.name == plan.events:
        # Per day of the window, of the events in it: times left out of it (far from the rest) do not count.
        days_of = frame[table.timestamp].dt.date
        in_window = int(((days_of >= plan.start) & (days_of <= plan.end)).sum())
        per_day = in_window / float((plan.end - plan.start).days + 1)
        meta["volume"] = {"per_day": "window", "min_rows_per_day": _floor2(MIN_VOLUME_SHARE * per_day)}
        meta["max_staleness_hours"] = 48
        checks[-1]["meta"]["why"] += (f"; {per_day:,.1f} rows per day observed, at least "
                                      f"{MIN_VOLUME_SHARE:.0%} of that per day of the window")
    elif table.name == plan.label.table:
        horizon_days = math.ceil((plan.label.horizon or dt.timedelta(0)) / dt.timedelta(days=1))
        per_day = profile.rows / days
        meta["volume"] = {"per_day": "context", "min_rows_per_day": _floor2(MIN_VOLUME_SHARE * per_day * 0.5)}
        meta["context_days"] = horizon_days
    elif table.timestamp:
        meta["volume"] = {"min_rows": 1}
        checks[-1]["meta"]["why"] += "; history up to the window's end, so it grows with the window: at least a row"
    else:
        meta["volume"] = {"min_rows": max(1, math.floor(MIN_VOLUME_SHARE * profile.rows))}
        checks[-1]["meta"]["why"] += f"; {profile.rows:,} rows observed, at least half of that"
    keys = plan_keys(plan, table)
    view = next((v for v in plan.views if v.table == table.name), None)
    if view is not None:
        checks.append(_one_row_per_key(plan, view, profile.rows))
    elif keys and table.timestamp and not frame.duplicated([*keys, table.timestamp]).any():
        checks.append(prof.expect("compound_columns_to_be_unique",
                                  f"one row per {', '.join(keys)} and {table.timestamp} in all {profile.rows:,} rows",
                                  column_list=[*keys, table.timestamp]))
    for item in profile.columns.values():
        checks += prof.column_checks(item, table.name, nulls=True) if item.kind != "timestamp" else []
        if item.unique and item.name == plan.row_id:
            checks.append(prof.expect("column_values_to_be_unique",
                                      f"unique over all {profile.rows:,} rows: one row per {item.name}",
                                      column=item.name))
        if item.kind == "timestamp":
            checks += _timestamp_checks(plan, table, item)
    notes = f"Profiled by `kfops init` from {table.file_name} ({profile.rows:,} rows)."
    return prof.suite(table.name, notes, meta, checks)


def repeated_keys(frame: pd.DataFrame, view: ViewPlan) -> str:
    """What repeats in a view's table: keys (at one time, for a timestamped table) with several rows,
    which give a feature two values at once; '' when there are none."""
    columns = [*view.keys, view.timestamp] if view.timestamp else view.keys
    repeated = frame[frame.duplicated(columns, keep=False)]
    if repeated.empty:
        return ""
    groups = repeated.groupby(columns, sort=False, dropna=False)
    sources = [source for _, _, source in view.features]
    conflicting = int((groups[sources].nunique(dropna=False) > 1).any(axis=1).sum())
    examples = ", ".join(repr(_plain(k)) for k in list(groups.groups)[:3])
    at = f" at one {view.timestamp}" if view.timestamp else ""
    return (f"{groups.ngroups:,} {'/'.join(view.keys)} value(s){at} with several rows ({conflicting:,} of them with "
            f"different feature values), e.g. {examples}")


def _one_row_per_key(plan: Scaffold, view: ViewPlan, rows: int) -> dict:
    """A view's table holds one row per key (per key and time, when timestamped): else a feature has
    two values at once, and training and serving may each take a different one."""
    columns = [*view.keys, view.timestamp] if view.timestamp else view.keys
    why = f"one row per {', '.join(columns)}: a feature has one value per key at a time"
    repeated = plan.repeated_keys.get(view.table)
    why += (f"; {repeated} observed: validation refuses them until {plan.module}.py or the source keeps one row each"
            if repeated else f" (so in all {rows:,} rows)")
    if len(columns) == 1:
        return prof.expect("column_values_to_be_unique", why, column=columns[0])
    return prof.expect("compound_columns_to_be_unique", why, column_list=columns)


def plan_keys(plan: Scaffold, table: TableSpec) -> list[str]:
    view = next((v for v in plan.views if v.table == table.name), None)
    if view is not None:
        return view.keys
    if table.name == plan.label.table:
        return list(plan.label.on)
    return []


def _timestamp_checks(plan: Scaffold, table: TableSpec, item: prof.ColumnProfile) -> list[dict]:
    checks = prof.column_checks(item, table.name)
    if item.name != table.timestamp:
        return checks
    if table.name == plan.events:
        checks += [
            prof.expect("column_values_to_be_between", "the loader keeps the window's events: every row inside it "
                        "(bounds are suite parameters set from the config)", column=item.name,
                        min_value=prof.param("window_start"), max_value=prof.param("window_end"), strict_max=True),
            prof.expect("column_max_to_be_between", "freshness: the newest event is within 48 h of the window's end",
                        column=item.name, min_value=prof.param("fresh_after"), max_value=prof.param("window_end")),
        ]
    elif table.name == plan.label.table:
        checks.append(prof.expect(
            "column_values_to_be_between", f"the loader keeps rows from the window's start to {plan.label.horizon_text} "
            "past its end (meta.kfops.context_days)", column=item.name,
            min_value=prof.param("window_start"), max_value=prof.param("context_end"), strict_max=True))
    else:
        checks.append(prof.expect(
            "column_values_to_be_between", f"history known before the window ends (observed from {item.minimum})",
            column=item.name, max_value=prof.param("window_end"), strict_max=True))
    return checks


def _days(frame: pd.DataFrame, timestamp: str | None) -> float:
    if not timestamp or frame.empty:
        return 1.0
    stamps = frame[timestamp].dropna()
    return max(1.0, (stamps.max().normalize() - stamps.min().normalize()).days + 1.0)


def _floor2(value: float) -> float:
    return math.floor(value * 100) / 100


def _training_suite(plan: Scaffold, frame: pd.DataFrame, profiles: dict[str, prof.TableProfile]) -> dict:
    entity = prof.profile_table("training_set", frame)
    days = max(1, (plan.end - plan.start).days + 1)
    per_day = len(frame) / days
    columns = list(map(str, frame.columns))
    checks = [
        prof.columns_check(columns, False, "the entity frame's columns (from the config: row id, event time, keys, "
                           "request features, label); joined features add more"),
        prof.expect("table_columns_to_not_contain", "leakage: outcomes (features.forbidden_columns) never reach "
                    "training", column_set=plan.forbidden),
        prof.rows_check(),
        prof.expect("column_values_to_not_be_null", "the row id, dataset.row_id", column=plan.row_id),
        prof.expect("column_values_to_be_unique", "one row per event", column=plan.row_id),
        prof.expect("column_type_to_be", "UTC timestamps; naive ones would shift the point-in-time join",
                    column="event_timestamp", type_=prof.TIMESTAMP_TYPE),
        prof.expect("column_values_to_not_be_null", "every event has a time", column="event_timestamp"),
        prof.expect("column_values_to_be_between", "every row lies inside the run's window", column="event_timestamp",
                    min_value=prof.param("window_start"), max_value=prof.param("window_end"), strict_max=True),
        prof.expect("column_values_to_be_in_type_list", "an integer 0/1 label", column=plan.label.name,
                    type_list=["int64", "int32", "Int64"]),
        prof.expect("column_values_to_not_be_null", "every event has a label", column=plan.label.name),
        prof.expect("column_values_to_be_in_set", f"binary label: {plan.label.text}", column=plan.label.name,
                    value_set=[0, 1]),
        prof.expect("column_mean_to_be_between", f"label rate inside validation.label_rate_band (observed "
                    f"{plan.label_rate:.3f}); all-0 or all-1 labels mean a broken label", column=plan.label.name,
                    min_value=prof.param("label_rate_min"), max_value=prof.param("label_rate_max")),
    ]
    for name in plan.request_features:
        checks += prof.column_checks(entity.columns[name], "training_set")
    for view in plan.views:
        for name, _, column in view.features:
            source = profiles[view.table].columns[column]
            item = prof.ColumnProfile(**{**source.__dict__, "name": name})
            checks += prof.column_checks(item, view.table, when_present=True, nulls=False)
    meta = {"volume": {"per_day": "window", "min_rows_per_day": _floor2(MIN_VOLUME_SHARE * per_day)},
            "max_staleness_hours": 48}
    checks[2]["meta"]["why"] += f"; {per_day:,.1f} events per day observed, at least half of that"
    return prof.suite("training_set", f"The entity frame of {plan.events}, with the features of "
                      f"{', '.join(v.name for v in plan.views) or 'no view'} joined point-in-time.", meta, checks)
