"""Start a ``kserve.ModelServer`` serving :class:`KfopsModel`, bound to 127.0.0.1 by default.

KServe 0.21 hard-codes ``0.0.0.0`` for its REST server and turns gRPC on by default (also on
all interfaces). :class:`KfopsModelServer` binds ``host`` instead, leaves gRPC off, drops the
per-request access log, and puts :class:`ServingFront` in front of KServe's app. This module
imports kserve: only the server process imports it (see ``python -m kfops.serving``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import kserve
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.rest.server import RESTServer
from starlette.responses import JSONResponse

from kfops.serving.kserve.front import ServingFront
from kfops.serving.kserve.predictor import KfopsModel
from kfops.serving.protocol.payloads import RequestError
from kfops.serving.protocol.timeouts import DEFAULT_READ_TIMEOUT_S, read_timeout_protocol
from kfops.serving.runtime.loading import MODEL_URI, ModelSource, ReloadPolicy
from kfops.serving.runtime.metrics import serving_metrics

if TYPE_CHECKING:
    from kfops.config import KfopsConfig
    from kfops.core.requests import RequestSpec
    from kfops.serving.runtime.lookup import OnlineLookup

log = logging.getLogger(__name__)
GC_YOUNG_THRESHOLD = 50_000


@dataclass
class ServerOptions:
    """Everything the server process needs; :func:`options_from_config` fills it from kfops.yaml."""

    name: str
    source: ModelSource
    host: str = "127.0.0.1"
    http_port: int = 8080
    max_batch_size: int = 256
    max_latency_ms: float = 2.0
    max_payload_bytes: int = 1_000_000
    inference_log_dir: Path | None = None
    inference_log_flush_s: float = 10.0
    online_lookup: str = "feast"
    online_as_of: str = "event"
    fast_path: bool = True
    access_log: bool = False
    predict_threads: int = 1
    grace_period_s: int = 10
    default_tracking_uri: str | None = field(default=None, repr=False)
    registered_model: str | None = None  # the registry name a reload may take versions of
    reload_roots: list[Path] = field(default_factory=list)
    model_repository: bool = False
    request_timeout_s: float | None = 10.0
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    control_token: str | None = field(default=None, repr=False)
    workers: int = 1  # server processes on one port (SO_REUSEPORT): see workers.py
    trainer_plugins: tuple[str, ...] = ()  # train.plugins: the only plug-ins a model may make it import
    project_dir: Path | None = None  # where the plug-in's module lies (the folder of kfops.yaml)

    def reload_policy(self) -> ReloadPolicy:
        """Reloads stay on the registry and model the server was started with, or under the roots."""
        names = {self.registered_model} if self.registered_model else set()
        match = MODEL_URI.match(self.source.model_uri) if self.source.model_uri else None
        if match:
            names.add(match["name"])
        return ReloadPolicy(tracking_uri=self.source.tracking_uri or self.default_tracking_uri,
                            model_names=names, roots=tuple(self.reload_roots))


def options_from_config(cfg: KfopsConfig, name: str, source: ModelSource, **overrides) -> ServerOptions:
    options = ServerOptions(
        name=name,
        source=source,
        host=cfg.serving.host,
        http_port=cfg.serving.http_port,
        max_batch_size=cfg.serving.max_batch_size,
        max_latency_ms=cfg.serving.max_latency_ms,
        max_payload_bytes=cfg.serving.max_payload_bytes,
        inference_log_dir=cfg.inference_log_dir,
        default_tracking_uri=cfg.tracking_uri,
        registered_model=cfg.registry.model_name,
        reload_roots=[r if r.is_absolute() else cfg.data_dir / r for r in cfg.serving.reload_roots] or [cfg.data_dir],
        model_repository=cfg.serving.model_repository,
        request_timeout_s=cfg.serving.request_timeout_s,
        workers=cfg.serving.workers,
        trainer_plugins=cfg.train.plugins,
        project_dir=cfg.resolved_against,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(options, key, value)
    return options


class KfopsModelServer(kserve.ModelServer):
    def __init__(self, options: ServerOptions):
        super().__init__(
            http_port=options.http_port,
            workers=1,
            enable_grpc=False,
            enable_docs_url=False,
            enable_latency_logging=False,
            grace_period=options.grace_period_s,
        )
        self.options = options
        self.front: ServingFront | None = None

    def register_signal_handler(self) -> None:
        """SIGTERM, SIGINT and SIGQUIT stop the HTTP server, whenever they arrive.

        KServe's handler schedules a stop of its multi-process server on the running loop: before
        the loop runs it raises, and before uvicorn takes the signals over it only unloads the
        models, and uvicorn serves on. A worker told to stop in that window never did. uvicorn
        reads its flag after startup and on every tick, so setting it works at any moment."""
        server = self._rest_server._server

        def stop(_signum: int, _frame: object) -> None:
            server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(signum, stop)

    def start(self, models: list[KfopsModel]) -> None:
        """KServe's single-process start, with our bind address and front (gRPC stays off)."""
        from kserve.model_server import app

        self._register_and_check_atleast_one_model_is_ready(models)
        app.add_exception_handler(RequestError, _request_error_handler)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            workers=1, grace_period=self.grace_period, event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.front = ServingFront(
            app, models, max_payload_bytes=self.options.max_payload_bytes, metrics=serving_metrics(),
            fast_path=self.options.fast_path, reload_policy=self.options.reload_policy(),
            control_token=self.options.control_token, model_repository=self.options.model_repository,
            request_timeout_s=self.options.request_timeout_s, workers=self.options.workers,
        )
        config = self._rest_server.config
        config.app = self.front  # uvicorn loads an object as is; KServe still adds its routes to `app`
        config.host = self.options.host
        config.http = read_timeout_protocol(self.options.read_timeout_s)  # slow clients cannot hold connections
        if not self.options.access_log:
            # uvicorn logs a request only when this logger has handlers; KServe gave it one.
            access = logging.getLogger("uvicorn.access")
            access.handlers.clear()
            access.propagate = False
        config.proxy_headers = False
        if self.options.workers > 1:
            # Every worker listens on the port itself; the kernel spreads connections among them.
            self._rest_server.create_application()
            sock = reuse_port_socket(self.options.host, self.options.http_port)
            self.servers.append(self._rest_server._server.serve(sockets=[sock]))
        else:
            self.servers.append(self._rest_server.start())
        self.register_signal_handler()
        # Imports left ~10^6 long-lived objects (KServe, pandas, xgboost); without this every full
        # garbage collection rescans them all, a pause of tens of ms in the middle of requests.
        gc.collect()
        gc.freeze()
        # Requests free their objects by reference counting; collect cycles less often than the
        # default of every 700 net allocations, which at thousands of requests/s means constantly.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
        try:
            # KServe's asyncio.run() gets the default loop: uvicorn only installs uvloop in its own run().
            with asyncio.Runner(loop_factory=_loop_factory(self.event_loop)) as runner:
                runner.get_loop().set_exception_handler(self.default_exception_handler)
                runner.run(self._serve())
        finally:
            self.front.stop_models()


def _loop_factory(event_loop: str):
    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    return None


def reuse_port_socket(host: str, port: int):
    """A listening TCP socket that other workers may bind too (SO_REUSEPORT)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _request_error_handler(_request, err: RequestError) -> JSONResponse:
    return JSONResponse(status_code=err.status, content={"error": err.message})


def build_model(options: ServerOptions, lookup: OnlineLookup | None,
                builder: RequestSpec = None) -> KfopsModel:
    model = KfopsModel(
        options.name, options.source, max_batch_size=options.max_batch_size, max_latency_ms=options.max_latency_ms,
        lookup=lookup, builder=builder, inference_log_dir=options.inference_log_dir,
        inference_log_flush_s=options.inference_log_flush_s, predict_threads=options.predict_threads,
        metrics=serving_metrics(), plugins=options.trainer_plugins, project_dir=options.project_dir,
    )
    model.load()
    return model


def serve(options: ServerOptions, cfg: KfopsConfig) -> None:
    """Load the model and serve until SIGTERM/SIGINT (blocks).

    With ``options.workers`` > 1 this process becomes the supervisor of that many forked workers
    (before anything heavy is loaded or any thread started), each a whole server on the same port.
    """
    from kfops.core.requests import load_request_builder
    from kfops.serving.runtime.lookup import build_lookup

    if options.workers > 1:
        from kfops.serving.kserve.workers import fork_workers

        # A worker gets the grace period to drain, and some time to flush its inference log.
        if fork_workers(options.workers, stop_timeout_s=options.grace_period_s + 20) is None:
            return  # the supervisor: every worker has exited

    builder = load_request_builder(cfg.dataset.request_builder, cfg.resolved_against, cfg.dataset.request_time_field)
    lookup = build_lookup(options.online_lookup, cfg, options.online_as_of)
    warm = getattr(lookup, "warm", None)
    if warm is not None:
        # Import Feast and resolve its views before answering ready: otherwise the first seconds of
        # traffic queue behind an import of several seconds.
        try:
            warm()
        except Exception as err:  # feature-vector requests still work; raw requests retry
            log.warning("the online feature lookup is not usable yet (%s); raw requests will retry it", err)
    model = build_model(options, lookup, builder)
    log.info("serving %s version %s from %s on http://%s:%d", options.name, model.version,
             options.source.describe(), options.host, options.http_port)
    KfopsModelServer(options).start([model])
