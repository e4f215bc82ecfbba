"""Feast's online store read directly (Redis and SQLite): the lookup on serving's hot path.

Feast's ``get_online_features`` resolves the references against the registry, turns every entity
value into a protobuf, groups and sorts the entities per view, runs one pipelined HMGET per view
and entity, decodes each value into a protobuf, copies it into a response protobuf, and
``to_dict`` decodes that again: about 1 ms for a batch of a few rows, most of a raw request's
server time. This module reads the same bytes with everything but the values resolved once, and
returns what :meth:`OnlineResponse.to_dict(include_event_timestamps=True)` would (tests compare the
two on random entities, missing ones and the TTL edges).

The layout, from Feast 0.67 (``infra/online_stores/{redis,sqlite,helpers}.py`` and
``infra/key_encoding_utils.py``), with ``entity_key_serialization_version`` 3:

* entity key (``serialize_entity_key``): ``<u32 n>``, then for each join key sorted by name
  ``<u32 STRING><u32 len><name>``, then for each value in the same order
  ``<u32 value type><u32 len><bytes>`` (text as UTF-8, int64 ``<q``, int32 ``<i``);
* Redis: one hash per entity key, named ``entity key + project``; field ``mmh3("view:feature")``
  (the 32-bit hash, little endian) holds a serialized ``ValueProto``, field ``_ts:view`` the view's
  event time as a ``Timestamp`` protobuf. Views on the same join keys share the hash, so one HMGET
  per distinct entity reads them all, and one pipeline reads the batch;
* SQLite: table ``<project>_<view>`` with rows ``(entity_key, feature_name, value, event_ts, ...)``
  keyed by ``(entity_key, feature_name)``; ``value`` a serialized ``ValueProto``, ``event_ts`` the
  epoch of the naive UTC time taken as local time (Feast's sqlite3 adapter), which Feast reads back
  with ``datetime.fromtimestamp`` and labels UTC. One statement (a UNION ALL over the views) reads
  the batch.

:func:`direct_reader` returns ``None`` for anything else (another online store, Redis Cluster or
Sentinel, versioned views, join-key aliases, entity types other than text and integers), and the
caller keeps Feast's own call. A batch holding a key value of an unexpected type also goes to
Feast (:class:`Unsupported`). One deliberate difference: an entity row whose join key is None
(or NaN) reads as not found, where Feast fails the whole batch with a TypeError; the offline join
leaves such rows without features too.
"""

from __future__ import annotations

import calendar
import datetime as dt
import numbers
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

# Feast's ValueType numbers (feast/protos/feast/types/Value.proto), for the entity key encoding.
_BYTES, _STRING, _INT32, _INT64 = 1, 2, 3, 4
# ValueProto fields read with a plain getattr, as feast_value_type_to_python_type does for them.
_SCALARS = frozenset(("double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val", "bytes_val"))
_CACHE_LIMIT = 100_000  # decoded values kept per reader (keyed by their bytes: never stale)


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep ``value`` under ``key``; a full cache starts over (bounded memory, no eviction order)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value

Values = dict[str, list[Any]]  # feature name -> one Python value (None: missing) per entity row
Stamps = dict[str, list[int]]  # view name -> the row's event time in epoch seconds (0: missing)


class Unsupported(Exception):
    """A batch the direct reader does not encode as Feast would: the caller asks Feast instead."""


@dataclass(frozen=True)
class ViewLayout:
    """One referenced view: its stored name, join keys (sorted, as encoded) and wanted features."""

    name: str
    join_keys: tuple[str, ...]
    key_types: tuple[int, ...]
    features: tuple[str, ...]

    def key_prefix(self) -> bytes:
        parts = [struct.pack("<I", len(self.join_keys))]
        for key in self.join_keys:
            encoded = key.encode("utf8")
            parts.append(struct.pack("<II", _STRING, len(encoded)) + encoded)
        return b"".join(parts)


class KeyEncoder:
    """``serialize_entity_key`` (version 3) for one set of join keys, from plain Python values."""

    def __init__(self, join_keys: tuple[str, ...], key_types: tuple[int, ...]):
        self.join_keys = join_keys
        self.key_types = key_types
        self.prefix = ViewLayout("", join_keys, key_types, ()).key_prefix()
        self._single = join_keys[0] if len(join_keys) == 1 else None
        # Single keys repeat (a handful of distinct values): their bytes are cached per exact type, so that
        # 1, True and 1.0, equal as dict keys, never share an entry.
        self._caches: dict[type, dict[Any, bytes]] = {str: {}, int: {}}

    def encode(self, row: dict[str, Any]) -> bytes | None:
        """The key bytes, or None when a join key value is missing (None or NaN)."""
        if self._single is None:
            return self._encode(tuple(row[name] for name in self.join_keys))
        value = row[self._single]
        cache = self._caches.get(type(value))
        if cache is None:
            return self._encode((value,))
        key = cache.get(value)
        if key is None:
            key = self._encode((value,))
            if key is not None and len(cache) < _CACHE_LIMIT:
                cache[value] = key
        return key

    def _encode(self, values: tuple[Any, ...]) -> bytes | None:
        parts = [self.prefix]
        for kind, value in zip(self.key_types, values, strict=True):
            if value is None or (isinstance(value, float) and value != value):
                return None
            parts.append(_encode_value(kind, value))
        return b"".join(parts)


def _encode_value(kind: int, value: Any) -> bytes:
    if kind == _STRING and isinstance(value, str):
        raw = value.encode("utf8")
    elif kind == _STRING and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        raw = str(int(value)).encode()  # a JSON 237 for a string key: Feast's own conversion is str(x)
    elif kind == _INT64 and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        raw = struct.pack("<q", int(value))
    elif kind == _INT32 and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        raw = struct.pack("<i", int(value))
    elif kind == _BYTES and isinstance(value, bytes):
        raw = value
    else:
        raise Unsupported(f"join key value {value!r} for value type {kind}")
    return struct.pack("<II", kind, len(raw)) + raw


class _Decoder:
    """ValueProto bytes -> the Python value ``feast_value_type_to_python_type`` gives, cached by bytes."""

    def __init__(self) -> None:
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        self._value_class = Value
        self._general = feast_value_type_to_python_type
        self._cache: dict[bytes, Any] = {}

    def __call__(self, raw: bytes | None) -> Any:
        if not raw:
            return None
        try:
            return self._cache[raw]
        except KeyError:
            pass
        message = self._value_class()
        message.ParseFromString(raw)
        kind = message.WhichOneof("val")
        if kind is None:
            value = None
        elif kind in _SCALARS:
            value = getattr(message, kind)
        else:  # lists, maps, timestamps...: Feast's own conversion, not cached (mutable results)
            return self._general(message)
        _remember(self._cache, raw, value)
        return value


class DirectReader:
    """Reads the wanted features of a batch of entity rows in one round trip to the store."""

    def __init__(self, layouts: list[ViewLayout]):
        self.layouts = layouts
        self.decode = _Decoder()
        self._encoders: dict[tuple[str, ...], KeyEncoder] = {}
        for layout in layouts:
            self._encoders.setdefault(layout.join_keys, KeyEncoder(layout.join_keys, layout.key_types))

    def _entity_slots(self, rows: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[list[bytes], list[int]]]:
        """Per join-key set: the distinct key bytes, and each row's index in them (-1: no key)."""
        slots = {}
        for join_keys, encoder in self._encoders.items():
            distinct: dict[bytes, int] = {}
            where = []
            for row in rows:
                key = encoder.encode(row)
                if key is None:
                    where.append(-1)
                    continue
                slot = distinct.get(key)
                if slot is None:
                    slot = distinct[key] = len(distinct)
                where.append(slot)
            slots[join_keys] = (list(distinct), where)
        return slots

    def read(self, rows: list[dict[str, Any]]) -> tuple[Values, Stamps]:
        raise NotImplementedError


def _fan_out(
    layout: ViewLayout, where: list[int], found: list[tuple[int, list[Any]] | None], values: Values, stamps: Stamps,
) -> None:
    """Copy each distinct entity's (stamp, values) to the rows that asked for it."""
    n = len(where)
    columns = [[None] * n for _ in layout.features]
    times = [0] * n
    for i, slot in enumerate(where):
        if slot < 0:
            continue
        hit = found[slot]
        if hit is None:
            continue
        times[i] = hit[0]
        for column, value in zip(columns, hit[1], strict=True):
            column[i] = value
    for name, column in zip(layout.features, columns, strict=True):
        values[name] = column
    stamps[layout.name] = times


class RedisReader(DirectReader):
    """HMGET per distinct entity key (all wanted fields of every view on those keys), sent as one
    write on a connection of the client's pool and parsed here: redis-py's pipeline spends more
    time packing and parsing than Redis spends answering."""

    def __init__(self, layouts: list[ViewLayout], client: Any, project: str):
        from feast.infra.online_stores.helpers import _mmh3
        from google.protobuf.timestamp_pb2 import Timestamp

        super().__init__(layouts)
        self.client = client
        self.project = project.encode()
        self._timestamp_class = Timestamp
        self._stamp_cache: dict[bytes, int] = {}
        # Per join-key set: the fields to ask for, and per view where its fields start.
        self._groups: dict[tuple[str, ...], tuple[list[bytes], list[tuple[ViewLayout, int]]]] = {}
        for layout in layouts:
            fields, views = self._groups.setdefault(layout.join_keys, ([], []))
            views.append((layout, len(fields)))
            fields.extend(_mmh3(f"{layout.name}:{feature}") for feature in layout.features)
            fields.append(f"_ts:{layout.name}".encode())
        # Each group's HMGET in RESP, but for the key: "*n $5 HMGET" and the encoded fields.
        self._packed = {
            join_keys: (b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2),
                        b"".join(b"$%d\r\n%s\r\n" % (len(field), field) for field in fields))
            for join_keys, (fields, _) in self._groups.items()
        }

    def _stamp(self, raw: bytes | None) -> int:
        """The ``_ts`` field's seconds, as Feast rounds it (through a datetime, to the microsecond)."""
        if not raw:
            return 0
        seconds = self._stamp_cache.get(raw)
        if seconds is None:
            stamp = self._timestamp_class()
            stamp.ParseFromString(raw)
            seconds = stamp.seconds
            if stamp.nanos:
                moment = dt.datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, tz=dt.UTC)
                seconds = calendar.timegm(moment.utctimetuple())
            _remember(self._stamp_cache, raw, seconds)
        return seconds

    def read(self, rows: list[dict[str, Any]]) -> tuple[Values, Stamps]:
        slots = self._entity_slots(rows)
        commands = []
        for join_keys, (keys, _) in slots.items():
            head, fields = self._packed[join_keys]
            for key in keys:
                name = key + self.project
                commands.append(b"%s$%d\r\n%s\r\n%s" % (head, len(name), name, fields))
        replies = self._exchange(b"".join(commands), len(commands)) if commands else []
        values: Values = {}
        stamps: Stamps = {}
        decode, offset = self.decode, 0
        for join_keys, (keys, where) in slots.items():
            group_replies = replies[offset:offset + len(keys)]
            offset += len(keys)
            for layout, start in self._groups[join_keys][1]:
                stop = start + len(layout.features)
                # Feast answers a found-or-not hash alike: absent fields are None, no stamp is 0.
                found: list[tuple[int, list[Any]] | None] = [
                    (self._stamp(reply[stop]), [decode(raw) for raw in reply[start:stop]]) for reply in group_replies
                ]
                _fan_out(layout, where, found, values, stamps)
        return values, stamps

    def _exchange(self, payload: bytes, count: int) -> list[list[bytes | None]]:
        """Send ``payload`` (``count`` commands) and read their replies, on a pooled connection.

        A connection that fails is dropped; one that broke while idle in the pool (Redis
        restarted) is retried once on a new connection. Failures raise redis-py's
        ConnectionError or TimeoutError, within the client's socket timeouts."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        pool = self.client.connection_pool
        for attempt in (1, 2):
            connection = pool.get_connection()
            try:
                connection.send_packed_command([payload], check_health=False)
                return _read_replies(connection._sock, count)
            except RedisConnectionError:
                connection.disconnect()
                if attempt == 2:
                    raise
            except TimeoutError as err:  # socket.timeout: Redis paused or too slow
                connection.disconnect()
                raise RedisTimeoutError(f"Timeout reading from Redis: {err}") from err
            except OSError as err:
                connection.disconnect()
                raise RedisConnectionError(f"Error while reading from Redis: {err}") from err
            except BaseException:
                connection.disconnect()
                raise
            finally:
                pool.release(connection)
        raise AssertionError("unreachable")


def _read_replies(sock: Any, count: int) -> list[list[bytes | None]]:
    """``count`` RESP array replies of bulk strings (HMGET's) from ``sock``."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    replies: list[list[bytes | None]] = []
    data, pos = b"", 0
    while len(replies) < count:
        parsed = _parse_array(data, pos)
        if parsed is None:  # the next reply is not all here yet
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise RedisConnectionError("Redis closed the connection in the middle of a reply")
            data, pos = data[pos:] + chunk, 0
            continue
        reply, pos = parsed
        replies.append(reply)
    if pos != len(data):
        raise RedisConnectionError("Redis sent more than the replies asked for")
    return replies


def _parse_array(data: bytes, pos: int) -> tuple[list[bytes | None], int] | None:
    """One array of bulk strings at ``pos`` (RESP2, or RESP3 nulls): (items, next position), or
    None while incomplete. An error reply raises redis-py's ResponseError."""
    from redis.exceptions import ResponseError

    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = data[pos]
    if kind == 45:  # "-ERR ..."
        raise ResponseError(data[pos + 1:end].decode(errors="replace"))
    if kind != 42:  # "*"
        raise ResponseError(f"unexpected Redis reply {data[pos:end][:40]!r} to HMGET")
    items: list[bytes | None] = []
    size = int(data[pos + 1:end])
    pos = end + 2
    for _ in range(size):
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        if data[pos] == 36:  # "$<length>"
            length = int(data[pos + 1:end])
            if length < 0:
                items.append(None)
                pos = end + 2
                continue
            start = end + 2
            pos = start + length + 2
            if pos > len(data):
                return None
            items.append(data[start:start + length])
        elif data[pos] == 95:  # RESP3 "_" null
            items.append(None)
            pos = end + 2
        else:
            raise ResponseError(f"unexpected Redis reply element {data[pos:end][:40]!r}")
    return items, pos


class SqliteReader(DirectReader):
    """One SELECT (UNION ALL over the views) on the primary key ``(entity_key, feature_name)``."""

    _MAX_PARAMETERS = 30_000  # under SQLite's 32,766 host parameters per statement

    def __init__(self, layouts: list[ViewLayout], path: str, project: str):
        super().__init__(layouts)
        self.path = path
        self._tables = [_quote_id(f"{project}_{layout.name}") for layout in layouts]
        self._features = [", ".join(_quote_text(f) for f in layout.features) for layout in layouts]
        self._local = threading.local()
        self._stamp_cache: dict[Any, int] = {}

    def _connection(self) -> Any:
        import sqlite3

        connection = getattr(self._local, "connection", None)
        if connection is None:  # one per thread, no type converters: raw epochs come back as ints
            connection = self._local.connection = sqlite3.connect(self.path, check_same_thread=False,
                                                                  cached_statements=512)
        return connection

    def _stamp(self, raw: Any) -> int:
        """``event_ts`` as Feast reads it: the stored epoch as a naive local time, labelled UTC."""
        if raw is None:
            return 0
        seconds = self._stamp_cache.get(raw)
        if seconds is None:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                moment = dt.datetime.fromtimestamp(int(text))
            except ValueError:
                moment = dt.datetime.fromisoformat(text)
            moment = moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
            seconds = calendar.timegm(moment.utctimetuple())
            _remember(self._stamp_cache, raw, seconds)
        return seconds

    def read(self, rows: list[dict[str, Any]]) -> tuple[Values, Stamps]:
        slots = self._entity_slots(rows)
        parts: list[tuple[str, list[bytes]]] = []
        for index, layout in enumerate(self.layouts):
            keys = slots[layout.join_keys][0]
            for start in range(0, len(keys), self._MAX_PARAMETERS):
                chunk = _padded(keys[start:start + self._MAX_PARAMETERS], self._MAX_PARAMETERS)
                parts.append((
                    f"SELECT {index}, entity_key, feature_name, value, event_ts FROM {self._tables[index]} "
                    f"WHERE entity_key IN ({','.join('?' * len(chunk))}) AND feature_name IN ({self._features[index]})",
                    chunk,
                ))
        found_rows: list[dict[bytes, list[Any]]] = [{} for _ in self.layouts]
        connection = self._connection()
        statement: list[str] = []
        parameters: list[bytes] = []
        for position, (sql, chunk) in enumerate(parts):
            statement.append(sql)
            parameters.extend(chunk)
            last = position == len(parts) - 1
            if last or len(parameters) + len(parts[position + 1][1]) > self._MAX_PARAMETERS:
                for index, key, feature, raw, stamp in connection.execute(" UNION ALL ".join(statement), parameters):
                    entry = found_rows[index].get(key)
                    if entry is None:
                        found_rows[index][key] = [stamp, {feature: raw}]
                    else:  # Feast keeps the stamp of the entity's last row read
                        entry[0] = stamp
                        entry[1][feature] = raw
                statement, parameters = [], []
        values: Values = {}
        stamps: Stamps = {}
        decode = self.decode
        for index, layout in enumerate(self.layouts):
            keys, where = slots[layout.join_keys]
            by_key = found_rows[index]
            found: list[tuple[int, list[Any]] | None] = []
            for key in keys:
                entry = by_key.get(key)
                if entry is None:
                    found.append(None)
                else:
                    stored = entry[1]
                    found.append((self._stamp(entry[0]), [decode(stored.get(f)) for f in layout.features]))
            _fan_out(layout, where, found, values, stamps)
        return values, stamps


def _padded(keys: list[bytes], limit: int) -> list[bytes]:
    """``keys`` repeated up to the next power of two (at most ``limit``): a key twice in an IN list
    reads the same rows, and batches of similar sizes then share one prepared statement instead of
    compiling a new UNION for each count of distinct entities."""
    size = 1 << (len(keys) - 1).bit_length()
    return keys + keys[:1] * (min(size, limit) - len(keys)) if size > len(keys) else keys


def _quote_id(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _quote_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_layouts(views: Sequence[FeatureView], wanted: dict[str, list[str]], versioned: bool) -> list[ViewLayout] | None:
    """The layouts of ``views`` (features in ``wanted`` order), or None when one is not read directly."""
    from feast.value_type import ValueType

    supported = {ValueType.STRING: _STRING, ValueType.INT64: _INT64, ValueType.INT32: _INT32, ValueType.BYTES: _BYTES}
    layouts = []
    for view in views:
        if versioned or view.projection.join_key_map or view.projection.name_alias:
            return None
        columns = sorted(view.entity_columns, key=lambda column: column.name)
        if not columns:
            return None  # an entityless view: Feast's dummy entity
        types = [supported.get(column.dtype.to_value_type()) for column in columns]
        if any(kind is None for kind in types):
            return None
        layouts.append(ViewLayout(
            name=view.name,
            join_keys=tuple(column.name for column in columns),
            key_types=tuple(kind for kind in types if kind is not None),
            features=tuple(wanted[view.name]),
        ))
    return layouts


def direct_reader(store: FeatureStore, views: Sequence[FeatureView], wanted: dict[str, list[str]]) -> DirectReader | None:
    """A reader of the store's online layout for ``views``, or None where Feast's own call must stay."""
    config = store.config
    online = config.online_store
    kind = getattr(online, "type", "")
    if config.entity_key_serialization_version != 3:
        return None
    layouts = view_layouts(views, wanted, bool(getattr(config.registry, "enable_online_feature_view_versioning", False)))
    if layouts is None:
        return None
    if kind == "redis" and getattr(online, "redis_type", "redis") == "redis":
        return RedisReader(layouts, redis_client(online.connection_string), config.project)
    if kind == "sqlite" or str(kind).endswith("SqliteOnlineStore"):
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        return SqliteReader(layouts, SqliteOnlineStore._get_db_path(config), config.project)
    return None


def redis_client(connection_string: str) -> Any:
    """A redis-py client built from Feast's connection string as Feast builds it (host:port first,
    then ``key=value`` options: password, db, ssl, the socket timeouts kfops adds)."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis import Redis

    nodes, options = RedisOnlineStore._parse_connection_string(connection_string)
    return Redis(host=nodes[0]["host"], port=nodes[0]["port"], **options)

