"""The promotion controller: MLflow says an alias moved, the controller serves the new version.

Someone moves ``@champion`` (the MLflow UI, its REST API, ``kfops promote``); MLflow sends a
signed ``model_version_alias.created`` webhook; :meth:`Controller.handle` checks it
(:mod:`kfops.core.webhook`: signature, age, replay) and queues the move; one worker per
controller writes the audit entry and runs the deploy step's rollout
(:func:`kfops.steps.deploy.serve_version`: the KServe canary on a cluster, the local server
otherwise, or the local canary with ``canary=True``), under a lease so that one rollout at a
time touches the model. The outcome is tagged on the version (``kfops.deploy.status`` and
``kfops.deploy.reason``), where the MLflow UI shows it.

The registry is the source of truth, the webhook only the trigger: the worker rolls out whatever
the alias points to when it starts, so a burst of moves ends with the last one serving and the
moves in between marked ``superseded``. :meth:`Controller.reconcile` compares the alias with what
serves, on start and every few minutes (or every poll interval where MLflow sends no webhooks),
so a missed delivery or a restart never leaves them apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from kfops.core.redaction import install_log_redaction, redact_uri
from kfops.core.webhook import ALIAS_CREATED, ALIAS_DELETED, SeenDeliveries, WebhookRejected, verify
from kfops.errors import KfopsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

log = logging.getLogger(__name__)
STATUS_TAG = "kfops.deploy.status"
REASON_TAG = "kfops.deploy.reason"
SECRET_ENV = "KFOPS_WEBHOOK_SECRET"
WEBHOOK_PATH = "/webhooks/mlflow"
MAX_BODY_BYTES = 64_000
READ_TIMEOUT_S = 15.0  # for a delivery's headers and body, as the model server allows
VERSION = re.compile(r"[0-9]{1,12}")  # a registry version number, in ASCII digits
AUDIT_GRACE_S = 1.0  # how long a kfops move may take between setting the alias and writing its entry
WHO = "mlflow-ui"  # MLflow's events name no user: the move came through MLflow (its UI or REST API)


@dataclass(frozen=True)
class Move:
    """An alias move to act on: from a webhook, or noticed by the reconciler."""

    version: str | None  # None: the alias was deleted
    via: str  # "webhook" or "reconcile"
    delivery_id: str | None = None


# --- leases: one rollout at a time per model -----------------------------------------------------


@contextlib.contextmanager
def file_lease(cfg: KfopsConfig, timeout_s: float) -> Iterator[None]:
    """An exclusive lock file per model under ``data_dir``: local controllers take turns."""
    path = cfg.data_dir / "serving" / f"rollout-{cfg.registry.model_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KfopsError(f"another rollout of {cfg.registry.model_name} holds {path}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def kube_lease(cfg: KfopsConfig, timeout_s: float, lease: Any = None) -> Iterator[None]:
    """The rollout Lease in the serving namespace, renewed while the rollout lasts."""
    from kfops.adapters.kube import KubeLease

    namespace = cfg.cluster.serving_namespace or cfg.cluster.namespace or "default"
    lease = lease or KubeLease(namespace, f"kfops-rollout-{cfg.registry.model_name}",
                               holder=f"{socket.gethostname()}-{os.getpid()}")
    lease.acquire(timeout_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(max(lease.duration_s / 3, 1)):
            if not lease.renew():
                log.error("lost the rollout Lease %s/%s", lease.namespace, lease.name)

    renewer = threading.Thread(target=renew, daemon=True, name="lease-renewer")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        lease.release()


# --- what serves, and the rollout ---------------------------------------------------------------


def served_version(cfg: KfopsConfig) -> str | None:
    """The version serving now: the local server's, or the InferenceService's annotation."""
    from kfops.steps.deploy import serving_target

    if serving_target(cfg) == "kserve":
        from kfops.adapters.kserve_cluster import VERSION_ANNOTATION, ClusterServing, service_name

        namespace = cfg.cluster.serving_namespace or cfg.cluster.namespace or "default"
        obj = ClusterServing(namespace).get(service_name(cfg))
        return ((obj or {}).get("metadata") or {}).get("annotations", {}).get(VERSION_ANNOTATION)
    if serving_target(cfg) == "docker":  # no state file: ask the container's server itself
        import httpx

        url = f"http://{cfg.serving.host}:{cfg.serving.http_port}/v2/models/{cfg.registry.model_name}"
        try:
            with httpx.Client(timeout=5, trust_env=False) as http:
                response = http.get(url)
        except httpx.HTTPError:
            return None
        return str((response.json().get("versions") or [None])[0]) if response.status_code == 200 else None
    from kfops.serving.local.process import server_status

    status = server_status(cfg)
    return str(status["model_version"]) if status.get("healthy") and status.get("model_version") else None


def default_rollout(canary: bool) -> Callable[[KfopsConfig, str], dict[str, Any]]:
    """The deploy step's rollout; ``canary`` also canaries locally (it needs live traffic to judge)."""

    def roll(cfg: KfopsConfig, version: str) -> dict[str, Any]:
        from kfops.steps.deploy import serve_version, serving_target

        if canary and serving_target(cfg) == "local":
            from kfops.serving.local.canary import run_local_canary
            from kfops.serving.local.process import server_status

            if server_status(cfg)["healthy"]:
                return run_local_canary(cfg, model_version=version, on_event=log.info)
        return serve_version(cfg, version)

    return roll


# --- the controller -------------------------------------------------------------------------------


class Controller:
    """Receives webhooks, queues alias moves, and rolls them out one at a time (one worker thread).

    ``rollout``, ``served``, ``lease`` and ``clock`` default to the real ones (see the module
    docstring); tests pass a cluster API-backed ``served``/``rollout`` or a scripted Lease.
    """

    def __init__(
        self,
        cfg: KfopsConfig,
        secret: str,
        *,
        max_age_s: float = 300.0,
        canary: bool = False,
        rollout: Callable[[KfopsConfig, str], dict[str, Any]] | None = None,
        served: Callable[[KfopsConfig], str | None] | None = None,
        lease: Callable[[KfopsConfig, float], contextlib.AbstractContextManager[None]] | None = None,
        lease_timeout_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[str], None] = log.info,
    ):
        from kfops.adapters import mlflow_registry as registry
        from kfops.steps.deploy import serving_target

        self.cfg, self.secret, self.max_age_s = cfg, secret, max_age_s
        self.alias = cfg.serving.model_alias or registry.CHAMPION
        self.rollout = rollout or default_rollout(canary)
        self.served = served or served_version
        self.lease = lease or (kube_lease if serving_target(cfg) == "kserve" else file_lease)
        self.lease_timeout_s, self.clock, self.on_event = lease_timeout_s, clock, on_event
        self.seen = SeenDeliveries(max_age_s)
        self._moves: list[Move] = []
        self._cond = threading.Condition()
        self._busy = False
        self._stopped = False
        self._worker: threading.Thread | None = None
        self.outcomes: list[dict[str, Any]] = []  # what each rollout ended as, in order

    # -- the webhook ---------------------------------------------------------------------------

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one delivery: 401 when it is not authentic or stale, 202 when a move is queued."""
        try:
            delivery = verify(self.secret, headers, body, self.clock(), self.max_age_s)
        except WebhookRejected as err:
            self.on_event(f"refused a webhook: {err.reason}")
            return 401, {"error": err.reason}
        if not self.seen.first_time(delivery.delivery_id, self.clock()):
            self.on_event(f"ignored a replayed webhook delivery {delivery.delivery_id}")
            return 200, {"ignored": "replayed delivery", "delivery_id": delivery.delivery_id}
        try:
            event = json.loads(body)
            kind, data = f"{event['entity']}.{event['action']}", event.get("data") or {}
            if not isinstance(data, dict):
                raise TypeError(f"'data' is {type(data).__name__}, not an object")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return 400, {"error": f"not an MLflow webhook payload: {err}"}
        if kind not in (ALIAS_CREATED, ALIAS_DELETED):
            return 200, {"ignored": f"event {kind}"}
        if data.get("name") != self.cfg.registry.model_name or data.get("alias") != self.alias:
            return 200, {"ignored": f"{data.get('name')}@{data.get('alias')} is not served here"}
        raw_version = data.get("version") if kind == ALIAS_CREATED else None
        if raw_version is not None and not VERSION.fullmatch(str(raw_version)):
            return 400, {"error": f"'data.version' must be a version number, got {str(raw_version)[:40]!r}"}
        version = str(raw_version) if raw_version is not None else None
        self.submit(Move(version, "webhook", delivery.delivery_id))
        return 202, {"accepted": kind, "version": version, "delivery_id": delivery.delivery_id}

    # -- the queue and its worker --------------------------------------------------------------

    def submit(self, move: Move) -> None:
        with self._cond:
            self._moves.append(move)
            self._cond.notify_all()

    def start(self) -> Controller:
        self._worker = threading.Thread(target=self._work, daemon=True, name="kfops-controller")
        self._worker.start()
        return self

    def stop(self, timeout_s: float = 600.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until nothing is queued or rolling out; False if that took longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._moves or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._moves and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                moves, self._moves = self._moves, []
                self._busy = True
            try:
                self.process(moves)
            except Exception as err:  # the worker outlives any one failure; the reconciler retries
                log.exception("the rollout of %s failed", moves)  # masked: run_controller redacts every record
                self.on_event(redact_uri(f"rollout failed: {err}"))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    # -- one round: audit every move, roll out the alias's version -------------------------------

    def process(self, moves: list[Move]) -> dict[str, Any] | None:
        from kfops.adapters import mlflow_registry as registry

        for move in moves:
            self._audit(move)
        current = registry.model_version(self.cfg, alias=self.alias)
        target = str(current.version) if current is not None else None
        for move in moves:
            if move.version is not None and move.version != target:
                self._tag(move.version, "superseded", f"@{self.alias} moved on to v{target or '-'} before this "
                          "version's rollout began")
                self._record({"version": move.version, "action": "superseded", "by": target})
        if target is None:
            self.on_event(f"@{self.alias} points nowhere; the endpoint keeps serving what it serves")
            return None
        with self.lease(self.cfg, self.lease_timeout_s):
            served = self.served(self.cfg)
            if served == target:
                self._tag(target, "serving", f"already serving as @{self.alias}")
                return self._record({"version": target, "action": "unchanged"})
            self.on_event(f"rolling out v{target} (@{self.alias}; serving v{served or '-'})")
            try:
                result = self.rollout(self.cfg, target)
            except KfopsError as err:
                reason = f"{err}" + (f" ({err.hint})" if getattr(err, "hint", None) else "")
                rolled_back = "rolled back" in str(err)
                self._tag(target, "rolled_back" if rolled_back else "failed", reason)
                self.on_event(f"v{target} {'rolled back' if rolled_back else 'failed'}: {err}")
                return self._record({"version": target, "action": "rolled_back" if rolled_back else "failed",
                                     "reason": str(err)})
        detail = result.get("rollout") or result
        reasons = "; ".join(detail.get("reasons") or (detail.get("decision") or {}).get("reasons")
                            or [str(detail.get("action") or "started")])
        self._tag(target, "serving", f"serving at {result.get('endpoint') or result.get('split_url') or '-'}: "
                  f"{reasons}")
        if served is not None:
            self._tag(served, "replaced", f"v{target} serves in its place")
        self.on_event(f"v{target} serves (was v{served or '-'})")
        return self._record({"version": target, "action": "deployed", "from": served})

    def _record(self, outcome: dict[str, Any]) -> dict[str, Any]:
        self.outcomes.append(outcome)
        return outcome

    def _audit(self, move: Move) -> None:
        from kfops.adapters import mlflow_registry as registry

        def last_move() -> str | None:
            moves = [e for e in registry.audit_trail(self.cfg) if e.get("alias") == self.alias]
            return moves[-1].get("to_version") if moves else None

        last = last_move()
        if move.version is not None and last != move.version and move.via == "webhook":
            # kfops's own moves (`kfops promote`, `kfops rollback`, auto-promotion) write their
            # entry just after setting the alias, which is when MLflow sends the webhook.
            time.sleep(AUDIT_GRACE_S)
            last = last_move()
        if move.version is not None and last == move.version:
            return  # kfops moved it and wrote the entry already
        how = (f"webhook delivery {move.delivery_id}" if move.via == "webhook"
               else "noticed by the controller's reconcile loop")
        registry.record_audit(self.cfg, {
            "action": "alias", "alias": self.alias, "from_version": last, "to_version": move.version,
            "reason": f"moved in MLflow (UI or REST API); {how}", "forced": False, "who": WHO, "via": move.via,
        })

    def _tag(self, version: str, status: str, reason: str) -> None:
        from kfops.adapters.mlflow_registry import tag_version

        try:
            tag_version(self.cfg.tracking_uri, self.cfg.registry.model_name, version,
                        {STATUS_TAG: status, REASON_TAG: reason[:4000]})
        except Exception as err:  # the rollout is done either way; the tag only reports it
            log.warning("could not tag v%s with %s=%s: %s", version, STATUS_TAG, status, err)

    # -- the reconcile loop --------------------------------------------------------------------

    def reconcile(self) -> Move | None:
        """Queue the alias's version when it is not what serves (and was not rolled back before)."""
        from kfops.adapters import mlflow_registry as registry

        with self._cond:
            if self._moves or self._busy:
                return None  # a rollout is under way; the next round looks again
        current = registry.model_version(self.cfg, alias=self.alias)
        if current is None:
            return None
        target = str(current.version)
        if target == self.served(self.cfg) or (current.tags or {}).get(STATUS_TAG) in ("rolled_back", "failed"):
            return None  # in place, or known bad: a rolled-back canary is not retried every few minutes
        move = Move(target, "reconcile")
        self.submit(move)
        return move


# --- the HTTP service ---------------------------------------------------------------------------


def make_server(controller: Controller, host: str, port: int, path: str = WEBHOOK_PATH) -> ThreadingHTTPServer:
    """A small threaded HTTP server: POST ``path`` takes webhooks, GET /healthz answers."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "kfops-controller"

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def setup(self) -> None:
            super().setup()
            # A client that sends its headers or body slowly (or never) holds a thread: not for long.
            self.connection.settimeout(READ_TIMEOUT_S)

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != path:
                return self._reply(404, {"error": f"webhooks go to {path}"})
            declared = self.headers.get("Content-Length") or "0"
            if not declared.isascii() or not declared.isdigit():
                return self._reply(400, {"error": "Content-Length must be a non-negative integer"})
            length = int(declared)
            if length > MAX_BODY_BYTES:
                return self._reply(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                return self._reply(408, {"error": f"the body did not arrive within {READ_TIMEOUT_S:g}s"})
            try:
                status, answer = controller.handle(dict(self.headers.items()), body)
            except Exception:  # a delivery must never take the handler down with it
                log.exception("a webhook delivery failed")
                status, answer = 500, {"error": "the delivery could not be handled; see the controller's log"}
            self._reply(status, answer)

        def do_HEAD(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path == "/healthz":
                return self._reply(200, {"alias": controller.alias, "model": controller.cfg.registry.model_name})
            self._reply(404, {"error": "not found"})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("controller http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_background(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                              name="kfops-controller-http")
    thread.start()
    return thread


def webhook_secret(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get(SECRET_ENV) or None


def run_controller(
    cfg: KfopsConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8095,
    public_url: str | None = None,
    secret: str | None = None,
    register: bool = True,
    poll_interval_s: float = 5.0,
    reconcile_interval_s: float = 180.0,
    max_age_s: float = 300.0,
    canary: bool = False,
    webhooks: bool = True,
    max_seconds: float | None = None,
    on_event: Callable[[str], None] = print,
) -> None:
    """Serve webhooks and reconcile until stopped (``kfops controller run``, ``kfops deploy --watch``).

    Prefers webhooks: when the tracking server sends them and the webhook can be registered, the
    reconcile loop runs every ``reconcile_interval_s``; otherwise it polls every ``poll_interval_s``.
    Without ``secret`` (or $KFOPS_WEBHOOK_SECRET) a random one is made and registered.
    """
    install_log_redaction()  # a failing MLflow call's traceback quotes the tracking URI, password and all
    from kfops.adapters import mlflow_registry as registry
    from kfops.errors import ConfigError, RegistryError

    secret = webhook_secret(secret) or secrets.token_urlsafe(32)
    controller = Controller(cfg, secret, max_age_s=max_age_s, canary=canary, on_event=on_event).start()
    server, mode, interval = None, "poll", poll_interval_s
    registered = False
    if webhooks and registry.webhooks_supported(cfg):
        try:
            server = make_server(controller, host, port)
        except OSError as err:
            on_event(f"cannot listen on {host}:{port} for webhooks ({err}); polling instead")
        if server is not None:
            serve_in_background(server)
            url = public_url or f"http://{host}:{server.server_address[1]}{WEBHOOK_PATH}"
            try:
                if register:
                    webhook_id, how = registry.register_webhook(cfg, url, secret)
                    registered = True
                    on_event(f"webhook {registry.webhook_name(cfg)} ({webhook_id}) {how}: MLflow -> {url}")
                mode, interval = "webhook", reconcile_interval_s
            except RegistryError as err:
                on_event(f"{err}; polling instead")
    on_event(f"following @{controller.alias} of {cfg.registry.model_name} by {mode}"
             f" (reconciling every {interval:g}s)")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                controller.reconcile()
            except ConfigError:
                raise
            except KfopsError as err:  # the registry or server failed, or @champion names a bad model
                on_event(f"reconcile failed, will retry: {err}")
            wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            time.sleep(wait)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if registered and public_url is None:  # a local controller's address dies with it
            with contextlib.suppress(RegistryError):
                registry.disable_webhook(cfg)
        controller.stop()
