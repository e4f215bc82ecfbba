"""The ASGI front of the model server: size limits, the inference fast path, reload, lifespan.

It wraps KServe's FastAPI app. Everything goes to KServe (health, readiness, model lists,
``/metrics``, CloudEvents) except:

* ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>/infer`` for kfops models: the
  same decode -> :class:`InferenceEngine` -> encode as :class:`KfopsModel`'s KServe handlers, minus
  the per-request pydantic models, middleware and logging that would otherwise cost more CPU than
  a batched XGBoost call (turn off with ``--no-fast-path``);
* ``POST /v1/models/<name>/reload``: hot-swap the model (body: ``{}`` to reload the same source,
  e.g. an alias that moved; ``{"model_version": "7"}`` or ``{"model_uri": "models:/<name>/7"}`` of
  the served registered model, from the server's own tracking server; or ``{"model_dir": ...}``
  under a reload root: see :class:`ReloadPolicy`);
* ``/v2/repository/...`` (KServe's model repository: load, unload): 404 unless turned on;
* ``GET /v2/models/<name>``: V2 metadata including the served version.

The control routes (reload, the model repository) need ``Authorization: Bearer <token>``
(:mod:`kfops.serving.protocol.auth`), else 401. Every request body, on any route, is limited to
``max_payload_bytes`` (413 beyond) and must be JSON (415 otherwise), except a V2 body in the
binary tensor extension (``Inference-Header-Content-Length``: :mod:`kfops.serving.protocol.binary`),
which the fast path decodes to the same request and whose outputs it answers in binary on request. Client mistakes get a 4xx
with ``{"error": "..."}``; nothing a client sends can take the server down. A failing dependency
(the online store) is a 503 and a request past ``request_timeout_s`` a 504, both logged at most
once per interval per kind.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import signal
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from kfops.core.redaction import redact_uri
from kfops.errors import EXIT_INFRA, KfopsError
from kfops.serving.protocol import auth, binary
from kfops.serving.protocol.asgi import ClientGone, read_body, send_json
from kfops.serving.protocol.payloads import (
    DependencyUnavailable,
    RequestError,
    check_json_content_type,
    decode_v1,
    decode_v2,
    error_body,
    parse_json,
    v1_response,
    v2_response,
)
from kfops.serving.runtime.loading import ReloadPolicy
from kfops.serving.runtime.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from kfops.serving.kserve.predictor import KfopsModel
    from kfops.serving.runtime.metrics import ServingMetrics

log = logging.getLogger(__name__)

# /v1/models/<name>[:verb|/...] and /v2/models/<name>[/...]: which model a request is for.
MODEL_PATH = re.compile(r"^/v[12]/models/(?P<name>[^/:]*)")
VERSIONED_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/ready|/infer|)$")
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REPOSITORY_PREFIX = "/v2/repository"


class ServingFront:
    def __init__(
        self,
        inner: Any,
        models: list[KfopsModel],
        *,
        max_payload_bytes: int,
        metrics: ServingMetrics | None = None,
        fast_path: bool = True,
        reload_policy: ReloadPolicy | None = None,
        control_token: str | None = None,
        model_repository: bool = False,
        request_timeout_s: float | None = None,
        workers: int = 1,
    ):
        self.inner = inner
        self.models = {m.name: m for m in models}
        self.max_payload_bytes = max_payload_bytes
        self.metrics = metrics
        self.reload_policy = reload_policy or ReloadPolicy(tracking_uri=None, model_names=())
        self.control_token = control_token
        self.model_repository = model_repository
        self.request_timeout_s = request_timeout_s
        self.workers = workers
        self.failures = RateLimitedLog(log)
        self._post: dict[str, tuple[KfopsModel, str]] = {}
        self._get: dict[str, KfopsModel] = {}
        for model in models:
            if fast_path:
                self._post[f"/v1/models/{model.name}:predict"] = (model, "v1")
                self._post[f"/v2/models/{model.name}/infer"] = (model, "v2")
            self._post[f"/v1/models/{model.name}/reload"] = (model, "reload")
            self._get[f"/v2/models/{model.name}"] = model
        self._observers: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._stopped = False
        # Request ids: unique per server run without a syscall per request (uuid4 reads urandom).
        prefix, counter = uuid.uuid4().hex[:12], itertools.count(1)
        self._next_id = lambda: f"{prefix}-{next(counter)}"

    def _unknown_model(self, path: str) -> str | None:
        """The 404 message for a request to a model this server does not serve, else None."""
        match = MODEL_PATH.match(path)
        if match is None or match["name"] in self.models:
            return None
        served = ", ".join(sorted(self.models)) or "none"
        # The name is quoted as repr (no raw newline reaches a log line or a client), and cut short.
        return f"model {match['name'][:80]!r} is not served here (served: {served})"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind != "http":
            await self.inner(scope, receive, send)
            return
        method = scope["method"]
        unknown = self._unknown_model(scope["path"])
        if unknown is not None:  # answered here: KServe logs a 20-line traceback for each such request
            await send_json(send, 404, error_body(unknown))
            return
        if "/versions/" in scope["path"]:
            versioned = self._versioned(scope)
            if isinstance(versioned, str):  # a version this server does not serve
                await send_json(send, 404, error_body(versioned))
                return
            scope = versioned
        if scope["path"].startswith(REPOSITORY_PREFIX) and not await self._repository_allowed(scope, send):
            return
        if method in BODYLESS_METHODS:
            model = self._get.get(scope["path"]) if method == "GET" else None
            if model is not None:
                await send_json(send, 200, model.metadata())
            elif method == "HEAD":  # what GET would answer, without its body (KServe's routes take GET only)
                await self.inner({**scope, "method": "GET"}, receive, _headers_only(send))
            else:
                await self.inner(scope, receive, send)
            return
        route = self._post.get(scope["path"]) if method == "POST" else None
        if route is not None and route[1] == "reload":
            why = auth.check(scope, self.control_token)
            if why is not None:  # before reading the body: an anonymous caller gets nothing read
                await auth.refuse(send, why)
                return
        # One pass over the headers: this runs for every request.
        content_type = binary_header = request_id = None
        cloudevent = False
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
                cloudevent = cloudevent or value.startswith(b"application/cloudevents")
            elif key == binary.HEADER:
                binary_header = value.decode("latin-1")
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")
            elif key.startswith(b"ce-"):
                cloudevent = True
        try:
            if not cloudevent and binary_header is None:  # a binary-extension body is not JSON
                check_json_content_type(content_type)
            body = await read_body(scope, receive, self.max_payload_bytes)
        except RequestError as err:
            await send_json(send, err.status, error_body(err.message))
            return
        except ClientGone:
            return
        if route is None or cloudevent:  # CloudEvents: KServe's decoder knows them
            await self.inner(scope, _replay(body, receive), send)
            return
        model, action = route
        if action == "reload":
            await self._reload(model, body, send)
        else:
            await self._infer(model, action, body, send, request_id, binary_header)

    async def _repository_allowed(self, scope: dict, send: Any) -> bool:
        """KServe's model repository (load, unload) is off unless turned on, and then token-only."""
        if not self.model_repository:
            await send_json(send, 404, error_body("the model repository extension is off on this server "
                                                  "(serving.model_repository); use the reload route"))
            return False
        why = auth.check(scope, self.control_token)
        if why is not None:
            await auth.refuse(send, why)
            return False
        return True

    def _versioned(self, scope: dict) -> dict | str:
        """``/v2/models/<name>/versions/<v>/...``: the unversioned scope when ``v`` is being served,
        else the error message (KServe itself answers 501 for any version)."""
        match = VERSIONED_PATH.match(scope["path"])
        model = self.models.get(match["name"]) if match else None
        if model is None:
            return scope  # not one of ours: KServe answers
        if match["version"] != model.version:
            return f"model {model.name} version {match['version']} is not served here; version {model.version} is"
        return {**scope, "path": f"/v2/models/{model.name}{match['rest']}"}

    # -- inference ------------------------------------------------------------------------------

    async def _infer(self, model: KfopsModel, protocol: str, body: bytes, send: Any, header_id: str | None,
                     binary_header: str | None) -> None:
        started = time.perf_counter()
        reason = None
        engine = model.inference
        binary_out = binary.NO_BINARY_OUTPUTS
        try:
            snapshot = engine.current
            raw = engine.raw_source(snapshot.spec)
            if binary_header is None:
                request = parse_json(body)
            elif protocol == "v2":
                request = binary.decode_request(body, binary.header_length(binary_header, len(body)))
            else:
                raise RequestError("Inference-Header-Content-Length (the binary tensor extension) is for V2 "
                                   "requests (/v2/models/<name>/infer); send V1 as JSON")
            if protocol == "v1":
                parsed = decode_v1(request, snapshot.spec, raw)
            else:
                parsed = decode_v2(request, snapshot.spec, raw)
                binary_out = binary.binary_outputs(request)
            request_id = parsed.request_id or header_id or self._next_id()
            if self.request_timeout_s is None:
                prediction = await engine.infer(parsed, request_id)
            else:
                async with asyncio.timeout(self.request_timeout_s):
                    prediction = await engine.infer(parsed, request_id)
            if protocol == "v1":
                payload = v1_response(prediction.probabilities, prediction.threshold, model.name, prediction.version)
            else:
                payload = v2_response(prediction.probabilities, prediction.threshold, model.name,
                                      prediction.version, request_id, parsed.outputs)
            status = 200
        except DependencyUnavailable as err:  # every request fails alike while it lasts: log it rarely
            self.failures.warning("dependency", f"model {model.name}: 503: {err.message}")
            status, payload, reason = err.status, error_body(err.message), err.reason
        except RequestError as err:
            status, payload, reason = err.status, error_body(err.message), err.reason
        except TimeoutError:
            message = (f"no answer within {self.request_timeout_s:g}s (serving.request_timeout_s); "
                       "the server or a store it reads is overloaded or stuck")
            self.failures.warning("timeout", f"model {model.name}: 504: {message}")
            status, payload, reason = 504, error_body(message), "timeout"
        except KfopsError as err:  # the server's side: misconfigured store, broken model
            self.failures.warning(f"server:{type(err).__name__}", f"model {model.name}: {err}")
            status, payload, reason = 500, error_body(str(err)), "server_error"
        except Exception as err:  # the request boundary: log it, answer 500, keep serving
            self.failures.warning(f"internal:{type(err).__name__}", f"model {model.name}: unexpected error", exc_info=True)
            status, payload, reason = 500, error_body(f"internal error: {type(err).__name__}: {err}"), "internal"
        if status == 200 and binary_out:
            await binary.send_binary(send, *binary.encode_response(payload, binary_out))
        else:
            await send_json(send, status, payload)
        self._observe(model.name, protocol, status, reason, time.perf_counter() - started)

    def _observe(self, name: str, protocol: str, status: int, reason: str | None, seconds: float) -> None:
        if self.metrics is None:
            return
        key = (name, protocol)
        observers = self._observers.get(key)
        if observers is None:
            observers = self._observers[key] = (
                self.metrics.latency.labels(name, protocol).observe,
                self.metrics.requests.labels(name, protocol, "200").inc,
            )
        observers[0](seconds)
        if status == 200:
            observers[1]()
        else:
            self.metrics.requests.labels(name, protocol, str(status)).inc()
            self.metrics.errors.labels(name, reason or "unknown").inc()

    # -- hot swap -------------------------------------------------------------------------------

    async def _reload(self, model: KfopsModel, body: bytes, send: Any) -> None:
        previous = model.version
        if self.workers > 1:  # this request reaches one worker process of several
            await send_json(send, 409, error_body(
                f"this server runs {self.workers} worker processes (serving.workers) and a reload over HTTP "
                "would swap the model in one of them; send SIGHUP to the server to reload every worker "
                "from its source, or restart it to serve another model"))
            return
        try:
            request = parse_json(body) if body.strip() else {}
            if type(request) is not dict:
                raise RequestError("reload body must be a JSON object: {}, {\"model_version\": ...}, "
                                   "{\"model_uri\": ...} or {\"model_dir\": ...}")
            source = self.reload_policy.source(request, model.source)
            result = await model.reload(source)
        except RequestError as err:
            await send_json(send, err.status, error_body(err.message))
            return
        except (KfopsError, OSError, ValueError) as err:  # a bad new model: keep serving the old one
            self._count_reload(model.name, "failed")
            # A registry that failed (RegistryError, ServiceUnavailable) is the upstream's fault, not the request's.
            status = 502 if getattr(err, "exit_code", None) == EXIT_INFRA else 400
            await send_json(send, status, error_body(redact_uri(f"reload failed, still serving version {previous}: {err}")))
            return
        except Exception as err:  # e.g. the registry unreachable: still JSON, still the old model
            self._count_reload(model.name, "failed")
            log.exception("model %s: reload failed", model.name)
            # MLflow's errors quote the request URL, the tracking URI's password included.
            await send_json(send, 502, error_body(redact_uri(f"reload failed, still serving version {previous}: "
                                                             f"{type(err).__name__}: {err}")))
            return
        self._count_reload(model.name, "swapped")
        await send_json(send, 200, result)

    def _count_reload(self, name: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(name, outcome).inc()

    async def reload_all(self) -> None:
        """SIGHUP: reload every model from its current source."""
        for model in self.models.values():
            try:
                result = await model.reload()
            except (KfopsError, OSError, ValueError) as err:
                self._count_reload(model.name, "failed")
                log.error("SIGHUP reload of %s failed, still serving version %s: %s", model.name, model.version, err)
            else:
                self._count_reload(model.name, "swapped")
                log.info("SIGHUP reload of %s: %s", model.name, result)

    # -- lifespan -------------------------------------------------------------------------------

    async def _lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        async def watched_receive() -> dict:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._startup()
            elif message["type"] == "lifespan.shutdown":
                self.stop_models()
            return message

        await self.inner(scope, watched_receive, send)

    def _startup(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload_all()))
            from kfops.serving.kserve.workers import EARLY_RELOAD

            if EARLY_RELOAD.is_set():  # asked for before this handler existed: reload once started
                EARLY_RELOAD.clear()
                self._early_reload = loop.create_task(self.reload_all())
        except (NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread / Windows
            log.info("SIGHUP reload is not available in this process; use POST /v1/models/<name>/reload")
        for model in self.models.values():
            warm = getattr(model.lookup, "warm", None)
            if warm is not None:  # import Feast and resolve views now, not on the first request
                threading.Thread(target=warm, name="kfops-lookup-warm", daemon=True).start()

    def stop_models(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for model in self.models.values():
            model.stop()


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _headers_only(send: Any) -> Any:
    """``send`` for a HEAD request: the response's start, its body dropped."""

    async def send_head(message: dict) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b"", "more_body": False} if not message.get("more_body") else None
            if message is None:
                return
        await send(message)

    return send_head
