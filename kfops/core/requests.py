"""The raw-request contract: what a client sends instead of a full feature vector.

A raw request is one row per prediction holding the dataset's entity keys and its request-time
inputs; the server turns it into the model's features (derived request features plus the
online store's). A dataset describes its raw request with a :class:`RequestBuilder`, named in
``dataset.request_builder`` (``module:attr``): the fields a client sends (:class:`RawField`,
with types and validation rules) and a ``derive`` function over column lists.

Without a builder the server uses :func:`default_builder`: the raw fields are the feature
views' join keys plus the model features no feature view provides, passed through as they
are, and each row's event time is its optional time field (ISO 8601; ``event_timestamp`` unless
``dataset.request_time_field`` names another) or now.

Pure Python: no pandas, so completing a raw request stays cheap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

FieldKind = Literal["string", "number", "integer", "key"]
EVENT_TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class RawField:
    """One field of a raw request.

    ``kind``: ``string`` (JSON string; V2 ``BYTES``), ``number`` (int or float), ``integer``
    (int only; V2 integer datatypes), ``key`` (an entity key: string or integer). ``required``
    fields must be in every row; an optional field left out takes ``default``. ``nullable``
    allows JSON null. ``minimum``/``maximum`` bound numbers; ``non_empty`` refuses ``""``.
    ``parse`` converts a checked value (e.g. text to a datetime) and raises ``ValueError`` with
    a message naming what is wrong; the server answers 400 with it.
    """

    name: str
    kind: FieldKind = "string"
    required: bool = True
    nullable: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    non_empty: bool = False
    parse: Callable[[Any], Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("string", "number", "integer", "key"):
            raise ValueError(f"raw field '{self.name}': unknown kind {self.kind!r}")

    def describe(self) -> str:
        """``name`` plus its type, as error messages show it."""
        return f"{self.name} ({self.kind}{', optional' if not self.required else ''})"


@dataclass
class DerivedRows:
    """What ``derive`` returns: feature columns by name (each ``rows`` long) and per-row event times.

    ``columns`` may hold entity keys and model features; raw fields it leaves out are passed
    through as sent. ``event_times`` are timezone-aware datetimes, one per row (the time the
    online features must be valid at, as the training join's event timestamp), or None for now.
    """

    columns: dict[str, list[Any]]
    event_times: list[dt.datetime] | None = None


@runtime_checkable
class RequestBuilder(Protocol):
    """A dataset's raw request: its fields and how to derive the request features from them."""

    name: str  # what a raw request is called in messages, e.g. "a raw order"
    fields: Sequence[RawField]

    def derive(self, columns: dict[str, list[Any]], rows: int) -> DerivedRows:
        """Feature columns and event times from validated raw columns (optional ones filled)."""
        ...


@dataclass
class PassThroughBuilder:
    """The builder used without a plug-in: raw fields pass through; event time from ``event_field``."""

    fields: Sequence[RawField]
    name: str = "a raw request"
    event_field: str | None = EVENT_TIMESTAMP

    def derive(self, columns: dict[str, list[Any]], rows: int) -> DerivedRows:
        if self.event_field is None or self.event_field not in columns:
            return DerivedRows(columns={})
        now = dt.datetime.now(dt.UTC)
        return DerivedRows(columns={}, event_times=[now if v is None else v for v in columns[self.event_field]])


def parse_event_timestamp(value: str) -> dt.datetime:
    """An ISO 8601 date-time; naive means UTC."""
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time such as '2024-06-01T17:30:00Z'") from err
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


def default_builder(
    join_keys: Sequence[str], model_columns: Sequence[str], view_features: Sequence[str], categorical: Sequence[str],
    event_field: str = EVENT_TIMESTAMP,
) -> PassThroughBuilder:
    """Raw fields = the join keys + the model features no feature view provides (+ the optional
    ``event_field``, ``dataset.request_time_field``)."""
    provided = set(view_features)
    fields: list[RawField] = [RawField(k, "key", non_empty=True) for k in dict.fromkeys(join_keys)]
    keys = set(join_keys)
    categories = set(categorical)
    for name in model_columns:
        if name in provided or name in keys:
            continue
        kind: FieldKind = "string" if name in categories else "number"
        fields.append(RawField(name, kind, nullable=True))
    taken = {f.name for f in fields}
    if event_field in taken:
        from kfops.errors import ConfigError

        raise ConfigError(f"dataset.request_time_field '{event_field}' is also a key or a feature of the raw request",
                          hint="name the raw request's event time otherwise")
    fields.append(RawField(event_field, "string", required=False, nullable=True,
                           parse=parse_event_timestamp, description="ISO 8601; default: now"))
    return PassThroughBuilder(fields=tuple(fields), event_field=event_field)


@dataclass(frozen=True)
class RawSchema:
    """A builder's fields indexed for the request path."""

    builder: RequestBuilder
    by_name: dict[str, RawField] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, builder: RequestBuilder) -> RawSchema:
        fields = list(builder.fields)
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{builder.name}: a raw field is declared twice ({', '.join(names)})")
        return cls(builder=builder, by_name={f.name: f for f in fields},
                   required=frozenset(f.name for f in fields if f.required), allowed=frozenset(names))

    @property
    def name(self) -> str:
        return self.builder.name

    def hint(self) -> str:
        required = [f.name for f in self.builder.fields if f.required]
        optional = [f.name for f in self.builder.fields if not f.required]
        text = f"{self.name} ({', '.join(required)}"
        return text + (f", optional {', '.join(optional)})" if optional else ")")


@dataclass(frozen=True)
class DefaultRequest:
    """The raw request of a dataset without a builder of its own: :func:`default_builder`, made
    once the feature views' keys are known, with each row's event time in ``time_field``
    (``dataset.request_time_field``)."""

    time_field: str = EVENT_TIMESTAMP


# What a server is given for its raw request: the dataset's builder, or the default one (None: the
# default with ``event_timestamp``).
RequestSpec = RequestBuilder | DefaultRequest | None


def load_request_builder(spec: str | None, project_dir: Path | None = None,
                         time_field: str = EVENT_TIMESTAMP) -> RequestBuilder | DefaultRequest:
    """Resolve ``dataset.request_builder`` (``module:attr``): a builder, or a class or function making one.
    A module beside the project's kfops.yaml (``project_dir``) needs no PYTHONPATH. Without one, the
    default request with its event time in ``time_field`` (``dataset.request_time_field``)."""
    if spec is None:
        return DefaultRequest(time_field)
    from kfops.core.files import import_from_project
    from kfops.errors import ConfigError

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"dataset.request_builder '{spec}' must look like module:attr")
    try:
        module = import_from_project(module_name, project_dir)
    except (ImportError, SyntaxError) as err:
        raise ConfigError(f"cannot import '{module_name}' for dataset.request_builder '{spec}': {err}") from err
    found = getattr(module, attr, None)
    if found is not None and not isinstance(found, RequestBuilder) and callable(found):
        found = found()
    if not isinstance(found, RequestBuilder):
        raise ConfigError(
            f"dataset.request_builder '{spec}' is not a request builder",
            hint="it must have `name`, `fields` (RawField objects) and `derive(columns, rows)`; see kfops.core.requests",
        )
    try:
        RawSchema.of(found)
        if not all(isinstance(f, RawField) for f in found.fields):
            raise ValueError("every entry of `fields` must be a kfops.core.requests.RawField")
    except (TypeError, ValueError) as err:
        raise ConfigError(f"dataset.request_builder '{spec}': {err}") from err
    return found
