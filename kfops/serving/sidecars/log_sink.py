"""The cluster's inference log: a sink for KServe's logger CloudEvents, written to S3 (or a folder).

On a cluster the InferenceService's ``logger`` (``serving.kserve.logger_url``) posts every
request and every response as a CloudEvent in binary mode (``ce-type``
``org.kubeflow.serving.inference.request`` / ``.response``, both with the same ``ce-id``). This
sink pairs them by id, turns each pair into inference-log rows (the layout and columns of
:mod:`.inference_log`, so :func:`.inference_log.read_inference_logs` and the drift job read
both), and writes one parquet file per flush under ``<store>/date=YYYY-MM-DD/``.

The logger sees only the request, so a raw-request row (``input_kind`` ``raw``) carries its
``input`` (JSON) without the online features the server looked up; feature-vector rows carry
every feature. A request is a feature vector when it holds every model feature
(``--feature-names``, else ``features`` of the config in ``$KFOPS_CONFIG_JSON``); without the
names, every request is taken as a feature vector.

``--mode`` follows the logger's ``serving.kserve.logger_mode``: ``all`` pairs requests with
responses; ``request`` and ``response`` write each event alone at once (a request's rows have no
probability, a response's no inputs). Events waiting for their pair are held as raw bytes, at most
``--pending-bytes`` of them (the oldest go first) for at most ``--pending-ttl-s``; what is dropped
is counted (``GET /``: ``dropped``).

    python -m kfops.serving.sidecars.log_sink --store s3://kfops-logs/inference --port 8080

It binds 127.0.0.1 unless told otherwise (``--host 0.0.0.0`` in a cluster's pod).

A malformed event is a 400 naming the problem; the sink never answers 5xx for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from kfops.adapters.s3 import split_s3_uri
from kfops.serving.protocol.asgi import ClientGone, lifespan, read_body, send_json
from kfops.serving.protocol.payloads import PayloadTooLarge, RequestError
from kfops.serving.runtime.inference_log import write_log_table

log = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
PENDING_TTL_S = 60.0  # a request whose response never comes (timeout, crash) is dropped after this
PENDING_BYTES = 64_000_000  # unpaired events held at most, as raw bodies
MAX_EVENT_BYTES = 10_000_000
MODES = ("all", "request", "response")


class BadEvent(ValueError):
    pass


# --- events to rows ----------------------------------------------------------------------------


def _columns_of_request(body: Any) -> dict[str, list]:
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        rows = body["instances"]
        if not all(isinstance(r, dict) for r in rows):
            raise BadEvent("V1 instances must be objects of field -> value")
        names = list(dict.fromkeys(k for r in rows for k in r))
        return {n: [r.get(n) for r in rows] for n in names}
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        columns = {}
        for item in body["inputs"]:
            if not isinstance(item, dict) or "name" not in item or not isinstance(item.get("data"), list):
                raise BadEvent("each V2 input needs a name and a data list")
            columns[str(item["name"])] = item["data"]
        return columns
    raise BadEvent("the request is neither V1 ({'instances': [...]}) nor V2 ({'inputs': [...]})")


def _outputs_of_response(body: Any) -> tuple[list[float], list[int], str | None, str | None]:
    if not isinstance(body, dict):
        raise BadEvent("the response is not a JSON object")
    if isinstance(body.get("predictions"), list):
        rows = body["predictions"]
        probabilities = [float(r["probability"]) for r in rows]
        labels = [int(r["label"]) for r in rows]
    elif isinstance(body.get("outputs"), list):
        named = {o.get("name"): o.get("data") for o in body["outputs"] if isinstance(o, dict)}
        if not isinstance(named.get("probability"), list):
            raise BadEvent("the V2 response has no probability output")
        probabilities = [float(v) for v in named["probability"]]
        labels = [int(v) for v in named.get("label") or [0] * len(probabilities)]
    else:
        raise BadEvent("the response has neither predictions (V1) nor outputs (V2)")
    version = body.get("model_version")
    return probabilities, labels, body.get("model_name"), str(version) if version is not None else None


def event_rows(event_id: str, at: float, request: Any, response: Any, service: str | None,
               feature_names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Inference-log rows of one request/response pair (an error response has no rows). Either may
    be None (a logger in request or response mode): its columns are then missing. With the
    model's ``feature_names``, a request lacking one of them is a raw request."""
    columns = _columns_of_request(request) if request is not None else {}
    if response is not None:
        probabilities, labels, model_name, version = _outputs_of_response(response)
    else:
        model_name = version = None
        n = {len(v) for v in columns.values()}
        probabilities = [float("nan")] * (n.pop() if len(n) == 1 else 0)
        labels = [None] * len(probabilities)
    sizes = {len(v) for v in columns.values()}
    if request is not None and (len(sizes) != 1 or sizes.pop() != len(probabilities)):
        raise BadEvent(f"request {event_id}: the request's rows do not match the {len(probabilities)} predictions")
    raw = bool(columns) and feature_names is not None and not all(name in columns for name in feature_names)
    kind = "raw" if raw else "features" if columns else "unknown"
    rows = []
    for i, (probability, label) in enumerate(zip(probabilities, labels, strict=True)):
        values = {name: column[i] for name, column in columns.items()}
        row: dict[str, Any] = {
            "timestamp": at, "request_id": event_id, "model_name": model_name or service or "",
            "model_version": version or "", "input_kind": kind,
            "input": json.dumps(values, default=str) if raw else None,
        }
        if not raw:
            row.update(values)
        row.update(probability=probability, label=label)
        rows.append(row)
    return rows


def rows_table(rows: list[dict[str, Any]]) -> Any:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    for name in frame.columns:
        if name in ("probability", "label", "timestamp"):
            continue
        values = frame[name]
        if values.map(lambda v: (isinstance(v, int | float) and not isinstance(v, bool)) or v is None).all():
            frame[name] = values.astype(np.float32)  # the model's input precision, as the server logs it
    labels = frame["label"]
    frame["label"] = labels.astype("Int8") if labels.isna().any() else labels.astype(np.int8)
    return pa.Table.from_pandas(frame, preserve_index=False)


# --- the sink ----------------------------------------------------------------------------------


@dataclass
class CloudEventSink:
    """ASGI app: POST CloudEvents in, parquet files out every ``flush_s`` (and on shutdown)."""

    store: str
    flush_s: float = 10.0
    mode: str = "all"
    pending_ttl_s: float = PENDING_TTL_S
    pending_bytes: int = PENDING_BYTES
    feature_names: tuple[str, ...] | None = None  # the model's features: requests lacking one are raw
    # event id -> (received at, raw body, service); raw bytes: parsed JSON takes many times more memory
    requests: dict[str, tuple[float, bytes, str | None]] = field(default_factory=dict)
    responses: dict[str, tuple[float, bytes, str | None]] = field(default_factory=dict)
    held_bytes: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"events": 0, "rows": 0, "rejected": 0, "files": 0, "dropped": 0})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
    _sequence: Any = field(default_factory=itertools.count)
    _flusher: Any = None

    def receive(self, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
        """Take one event; raises BadEvent naming what is wrong with it."""
        kind, event_id = headers.get("ce-type"), headers.get("ce-id")
        if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
            raise BadEvent(f"ce-type must be {REQUEST_TYPE} or {RESPONSE_TYPE}, got {kind!r}")
        if not event_id:
            raise BadEvent("the event has no ce-id")
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise BadEvent(f"the event body is not JSON: {err}") from err
        now = time.time() if now is None else now
        service = headers.get("ce-inferenceservicename")
        if kind == REQUEST_TYPE:
            _columns_of_request(payload)  # refuse a bad request now, not at pairing time
        self.counts["events"] += 1
        if self.mode != "all":  # the logger sends one side only: nothing will ever pair
            if (kind == REQUEST_TYPE) == (self.mode == "request"):
                self._add_rows(event_id, now, payload if kind == REQUEST_TYPE else None,
                               payload if kind == RESPONSE_TYPE else None, service)
            return
        mine, other = (self.requests, self.responses) if kind == REQUEST_TYPE else (self.responses, self.requests)
        if event_id not in other:
            self._hold(mine, event_id, (now, body, service), now)  # the raw bytes, not the parsed payload
            return
        held = other.pop(event_id)
        self.held_bytes -= len(held[1])
        if kind == REQUEST_TYPE:
            self._add_rows(event_id, now, payload, json.loads(held[1]), service or held[2])
        else:
            self._add_rows(event_id, held[0], json.loads(held[1]), payload, held[2] or service)

    def _add_rows(self, event_id: str, at: float, request: Any, response: Any, service: str | None) -> None:
        if isinstance(response, dict) and "error" in response:
            return  # an error answer scored nothing
        new = event_rows(event_id, at, request, response, service, self.feature_names)
        self.rows.extend(new)
        self.counts["rows"] += len(new)

    def _hold(self, pending: dict[str, tuple[float, bytes, str | None]], event_id: str,
              entry: tuple[float, bytes, str | None], now: float) -> None:
        previous = pending.pop(event_id, None)
        if previous is not None:
            self.held_bytes -= len(previous[1])
        pending[event_id] = entry
        self.held_bytes += len(entry[1])
        self._expire(now)
        while self.held_bytes > self.pending_bytes and (self.requests or self.responses):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        firsts = [(next(iter(p.values()))[0], i) for i, p in enumerate((self.requests, self.responses)) if p]
        pending = (self.requests, self.responses)[min(firsts)[1]]
        _, (_, body, _) = next(iter(pending.items()))
        del pending[next(iter(pending))]
        self.held_bytes -= len(body)
        self.counts["dropped"] += 1

    def _expire(self, now: float) -> None:
        for pending in (self.requests, self.responses):
            while pending:
                key, (at, body, _) = next(iter(pending.items()))
                if now - at <= self.pending_ttl_s:
                    break  # insertion order is arrival order: the rest are younger
                del pending[key]
                self.held_bytes -= len(body)
                self.counts["dropped"] += 1

    def flush(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        self._expire(now)
        rows, self.rows = self.rows, []
        if not rows:
            return []
        written = []
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(dt.datetime.fromtimestamp(row["timestamp"], dt.UTC).date(), []).append(row)
        days = sorted(by_day)
        for i, day in enumerate(days):
            try:
                written.append(write_log_table(self.store, day, rows_table(by_day[day]), self._sequence))
            except Exception:
                # Keep the unwritten rows for the next flush: a store outage must not lose predictions.
                self.rows = [row for later in days[i:] for row in by_day[later]] + self.rows
                self.counts["files"] += len(written)
                raise
        self.counts["files"] += len(written)
        return written

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup, self._shutdown)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await send_json(send, 200, {"status": "ok", **self.counts, "pending": len(self.requests) + len(self.responses),
                                        "pending_bytes": self.held_bytes})
            return
        try:
            body = await read_body(scope, receive, MAX_EVENT_BYTES)
        except ClientGone:
            return
        except RequestError as err:
            self.counts["rejected"] += 1
            message = f"event over {MAX_EVENT_BYTES} bytes" if isinstance(err, PayloadTooLarge) else err.message
            await send_json(send, err.status, {"error": message})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self.receive(headers, body)
        except (BadEvent, KeyError, TypeError, ValueError) as err:
            self.counts["rejected"] += 1
            await send_json(send, 400, {"error": f"{type(err).__name__}: {err}" if not isinstance(err, BadEvent) else str(err)})
            return
        await send_json(send, 202, {"accepted": True})

    async def _startup(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _shutdown(self) -> None:
        self._flusher.cancel()
        await asyncio.to_thread(self._flush_logged)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await asyncio.to_thread(self._flush_logged)

    def _flush_logged(self) -> None:
        try:
            for path in self.flush():
                log.info("wrote %s", path)
        except Exception:  # keep receiving; the rows wait for the next flush
            log.exception("could not write the inference log to %s; %d rows wait for the next flush", self.store,
                          len(self.rows))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if args.store.startswith("s3://"):
        try:
            split_s3_uri(args.store)
        except ValueError as err:
            print(f"kfops.serving.sidecars.log_sink: error: {err}", file=sys.stderr)
            return 2
    import uvicorn

    from kfops.serving.protocol.timeouts import read_timeout_protocol

    sink = CloudEventSink(args.store, args.flush_s, mode=args.mode, pending_ttl_s=args.pending_ttl_s,
                          pending_bytes=args.pending_bytes, feature_names=_feature_names(args.feature_names))
    uvicorn.run(sink, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on",
                http=read_timeout_protocol())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfops.serving.sidecars.log_sink", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="s3://<bucket>/<prefix> or a folder")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a cluster's pod)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--flush-s", type=float, default=10.0)
    p.add_argument("--mode", choices=MODES, default="all", help="the logger's mode (serving.kserve.logger_mode)")
    p.add_argument("--pending-ttl-s", type=float, default=PENDING_TTL_S, help="how long an event waits for its pair")
    p.add_argument("--pending-bytes", type=int, default=PENDING_BYTES, help="unpaired event bytes held at most")
    p.add_argument("--feature-names", help="the model's features, comma-separated: a request lacking one is a raw "
                   "request (default: features of the config in $KFOPS_CONFIG_JSON, else every request is a "
                   "feature vector)")
    return p


def _feature_names(given: str | None) -> tuple[str, ...] | None:
    import os

    if given:
        return tuple(n.strip() for n in given.split(",") if n.strip())
    from kfops.config import CONFIG_JSON_ENV, load_config_json

    if os.environ.get(CONFIG_JSON_ENV):
        return tuple(load_config_json(os.environ[CONFIG_JSON_ENV]).feature_columns)
    return None


if __name__ == "__main__":
    sys.exit(main())
