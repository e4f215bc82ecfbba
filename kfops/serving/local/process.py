"""Run the model server as a local background process that outlives whoever started it.

State lives under ``<data_dir>/serving/``: ``<name>.json`` (pid, address, model source and the
server's control-plane token, so owner-only),
``<name>.log`` (the server's stdout and stderr) and ``<name>.config.json`` (the resolved config
the server reads). Starting a model name that is already being served hot-swaps the new model
into the running server (no dropped requests) unless ``replace=True`` or the address changed.

Starts and stops hold one lock per data dir (``serving/.lock``), so concurrent deploys on one
data dir hot-swap one tracked server instead of killing each other's. A state file is only
removed by whoever stopped its own pid; readiness counts only when the process we started is
the one listening on the port; a replacement must come up (on a free port) before the healthy
server it replaces is stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.files import LockTimeout, atomic_write_text, file_lock
from kfops.core.redaction import strip_password
from kfops.errors import ConfigError, KfopsError, ServingError
from kfops.serving.protocol.auth import TOKEN_ENV, TOKEN_FILE_ENV, bearer_headers, new_token
from kfops.serving.runtime.loading import ModelSource

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

LOG_TAIL_LINES = 40
POLL_S = 0.2
STOP_TIMEOUT_S = 15.0


def state_dir(cfg: KfopsConfig) -> Path:
    return cfg.data_dir / "serving"


@contextmanager
def serving_lock(cfg: KfopsConfig, what: str) -> Iterator[None]:
    """One start or stop at a time per data dir (re-entrant: a start may stop the old server)."""
    wait_s = 2 * cfg.serving.startup_timeout_s + 2 * STOP_TIMEOUT_S + 60
    try:
        with file_lock(state_dir(cfg) / ".lock", wait_s, what):
            yield
    except LockTimeout as err:
        raise ServingError(f"could not {what}: {err}",
                           hint="another kfops process is starting or stopping a server here; wait for it") from err


def _paths(cfg: KfopsConfig, name: str) -> dict[str, Path]:
    folder = state_dir(cfg)
    return {"state": folder / f"{name}.json", "log": folder / f"{name}.log", "config": folder / f"{name}.config.json"}


def _read_state(cfg: KfopsConfig, name: str) -> dict[str, Any] | None:
    path = _paths(cfg, name)["state"]
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn or foreign file: treat as no server


def _write_state(cfg: KfopsConfig, name: str, state: dict[str, Any]) -> None:
    # Owner-only: the pid in it is what `stop` signals.
    atomic_write_text(_paths(cfg, name)["state"], json.dumps(state, indent=2), mode=0o600)


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` runs a kfops model server (not a zombie, not a recycled pid)."""
    if not pid:
        return False
    try:
        # Reap it if it is our own child that already exited (tests, long-lived callers).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():  # Linux: rule out zombies and pids reused by another program
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            return b"kfops.serving" in proc.joinpath("cmdline").read_bytes()
        except (OSError, IndexError):
            return False
    return True


def _http(timeout_s: float):
    import httpx

    return httpx.Client(timeout=timeout_s, trust_env=False)  # local server: never through a proxy


def _probe(url: str, name: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """The served model's V2 metadata when it is ready, else None."""
    import httpx

    try:
        with _http(timeout_s) as http:
            ready = http.get(f"{url}/v2/models/{name}/ready")
            if ready.status_code != 200:
                return None
            meta = http.get(f"{url}/v2/models/{name}")
            return meta.json() if meta.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def port_in_use(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log)"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64_000))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _source_for(
    cfg: KfopsConfig, model_dir: Path | None, model_uri: str | None, model_version: str | None,
    tracking_uri: str | None,
) -> ModelSource:
    if sum(x is not None for x in (model_dir, model_uri, model_version)) > 1:
        raise ServingError("give one of model_dir, model_uri or model_version")
    if model_dir is not None:
        return ModelSource(model_dir=Path(model_dir).resolve())
    if model_uri is None:
        name = cfg.registry.model_name
        model_uri = (f"models:/{name}/{model_version}" if model_version is not None
                     else f"models:/{name}@{cfg.serving.model_alias or 'champion'}")
    return ModelSource(model_uri=model_uri, tracking_uri=cfg.with_credentials(tracking_uri) or cfg.tracking_uri)


def start_server(
    cfg: KfopsConfig,
    *,
    model_dir: Path | None = None,
    model_uri: str | None = None,
    model_version: str | None = None,
    name: str | None = None,
    port: int | None = None,
    tracking_uri: str | None = None,
    online_lookup: str = "feast",
    replace: bool = False,
    extra_args: list[str] | tuple[str, ...] = (),
    instance: str | None = None,
) -> dict[str, Any]:
    """Serve a model folder, a registry URI, a registered version, or (none given) the alias
    ``serving.model_alias`` / ``@champion``; wait until it is ready; return :func:`server_status`.

    A healthy server already serving ``name`` on the same address gets the model hot-swapped in.
    Raises ServingError with the server log's tail if it does not come up within
    ``serving.startup_timeout_s``. ``instance`` names a second server of the same model (its
    state and log files; a canary, say); by default the model name does.
    """
    name = name or cfg.registry.model_name
    key = instance or name
    host, port = cfg.serving.host, int(cfg.serving.http_port if port is None else port)
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is not a TCP port (1..65535)", hint="pass --port 1..65535 or set serving.http_port")
    source = _source_for(cfg, model_dir, model_uri, model_version, tracking_uri)
    paths = _paths(cfg, key)
    paths["state"].parent.mkdir(parents=True, exist_ok=True)
    launch = {"name": name, "host": host, "online_lookup": online_lookup, "source": source,
              "extra_args": list(extra_args)}

    with serving_lock(cfg, f"start the model server {key}"):
        state = _read_state(cfg, key)
        if state and pid_alive(state.get("pid")):
            same_address = state.get("host") == host and state.get("port") == port
            if not same_address and port_in_use(host, port):
                # Before anything is stopped: a move to a taken port must leave the running server serving.
                raise ServingError(f"{host}:{port} is already in use by another process; the server at "
                                   f"{state['url']} is untouched",
                                   hint="set serving.http_port (or --port), or stop whatever listens there")
            healthy = _probe(state["url"], name) is not None
            # A hot swap keeps the running process's config: a model whose trainer that config does not
            # name (train.trainer changed since it started) needs a process started with this one.
            same_plug_ins = state.get("plug_ins", _plug_ins(cfg)) == _plug_ins(cfg)
            if not replace and same_address and healthy and same_plug_ins:
                swapped = _hot_swap(cfg, key, state, source)
                if swapped is not None:
                    return swapped
            if healthy:
                # Prove the new server comes up before taking the healthy one down.
                _trial_start(cfg, key, launch)
            _stop_locked(cfg, name, key, STOP_TIMEOUT_S)
        elif _our_listener(cfg, key, host, port) is not None:
            _stop_locked(cfg, name, key, STOP_TIMEOUT_S)  # an untracked server of ours (state lost)
        if port_in_use(host, port):
            raise ServingError(f"{host}:{port} is already in use by another process",
                               hint="set serving.http_port (or --port), or stop whatever listens there")

        token = new_token()  # this server's control-plane token: in its environment and the 0600 state file
        process = _launch(cfg, key, port, launch, paths, token)
        url = f"http://{host}:{port}"
        _write_state(cfg, key, {
            "name": name, "pid": process.pid, "host": host, "port": port, "url": url, "source": source.to_dict(),
            "log_file": str(paths["log"]), "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "inference_log_dir": str(cfg.inference_log_dir), "token": token, "plug_ins": _plug_ins(cfg),
        })
        try:
            _wait_ready(cfg, name, process, host, port, paths["log"])
        except ServingError:
            _remove_state_of(cfg, key, process.pid)
            raise
        return server_status(cfg, name, instance=key)


def _launch(cfg: KfopsConfig, key: str, port: int, launch: dict[str, Any], paths: dict[str, Path],
            token: str) -> subprocess.Popen:
    # No secret in the file (to_json leaves them out), and owner-only all the same; the secrets
    # reach the server through its environment, never its command line.
    atomic_write_text(paths["config"], cfg.to_json(), mode=0o600)
    command = [
        sys.executable, "-m", "kfops.serving", "--name", launch["name"], "--host", launch["host"],
        "--http-port", str(port), "--config-json", str(paths["config"]), "--online-lookup", launch["online_lookup"],
        *_source_args(launch["source"]), *launch["extra_args"],
    ]
    with paths["log"].open("ab") as log:
        log.write(f"\n=== {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**server_environment(), **cfg.secret_environment(serving=True), TOKEN_ENV: token, **_project_environment(cfg)},
        )


def _plug_ins(cfg: KfopsConfig) -> list[str]:
    """The trainer plug-ins a server started with ``cfg`` may import, and where from."""
    return [*sorted(cfg.train.plugins), str(cfg.resolved_against)] if cfg.train.plugins else []


def _project_environment(cfg: KfopsConfig) -> dict[str, str]:
    """The project folder (of kfops.yaml), where the server imports the config's plug-ins from:
    the config JSON carries absolute paths, not the folder they were resolved against."""
    from kfops.config import PROJECT_DIR_ENV

    return {PROJECT_DIR_ENV: str(cfg.resolved_against)} if cfg.resolved_against is not None else {}


def _trial_start(cfg: KfopsConfig, key: str, launch: dict[str, Any]) -> None:
    """Start the new server on a free port, wait until it serves, stop it; ServingError if it never does."""
    import socket

    with socket.socket() as probe_socket:
        probe_socket.bind((launch["host"], 0))
        trial_port = probe_socket.getsockname()[1]
    trial = _paths(cfg, f"{key}.trial")
    process = _launch(cfg, f"{key}.trial", trial_port, launch, trial, new_token())
    try:
        _wait_ready(cfg, launch["name"], process, launch["host"], trial_port, trial["log"])
    except ServingError as err:
        raise ServingError(f"the new model server did not come up, so the running one keeps serving: {err}") from err
    finally:
        _terminate(process.pid, timeout_s=STOP_TIMEOUT_S)
        trial["config"].unlink(missing_ok=True)


# Importing Feast sets these (prometheus_client's multiprocess mode, in a temp dir it deletes at
# exit); a server must not inherit them: it is one process, and outlives whoever started it.
_INHERITED_NOT = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR", TOKEN_ENV, TOKEN_FILE_ENV)


def server_environment() -> dict[str, str]:
    """The environment for a detached server process."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_NOT}
    from kfops.adapters.kfp_local import RUN_TMP_PREFIX

    if Path(env.get("TMPDIR", "")).name.startswith(RUN_TMP_PREFIX):  # a pipeline run's, deleted when it ends
        env.pop("TMPDIR")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _source_args(source: ModelSource) -> list[str]:
    if source.model_dir is not None:
        return ["--model-dir", str(source.model_dir)]
    return ["--model-uri", source.model_uri, "--tracking-uri", strip_password(source.tracking_uri)]


def _wait_ready(cfg: KfopsConfig, name: str, process: subprocess.Popen, host: str, port: int, log: Path) -> None:
    """Until the process we started answers on ``host:port`` as ``name``; a server someone else
    runs on that port never counts. On failure the process is stopped and ServingError raised."""
    deadline = time.monotonic() + cfg.serving.startup_timeout_s
    url = f"http://{host}:{port}"
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServingError(f"the model server exited with code {code} while starting; its log ({log}) ends:\n"
                               f"{log_tail(log)}")
        if _probe(url, name) is not None and listening_pid(host, port, unknown=process.pid) in _family(process.pid):
            return
        time.sleep(POLL_S)
    _terminate(process.pid, timeout_s=5.0)
    raise ServingError(
        f"the model server was not ready after {cfg.serving.startup_timeout_s:g}s (serving.startup_timeout_s); "
        f"stopped it. Its log ({log}) ends:\n{log_tail(log)}"
    )


def listening_pid(host: str, port: int, unknown: int | None = None) -> int | None:
    """The pid of the process listening on ``host:port`` (or on all addresses at ``port``), if one is visible.

    ``unknown`` is returned where this system does not show sockets to an unprivileged user
    (macOS): then the caller's own check (readiness) has to do.
    """
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return unknown
    for conn in connections:
        if (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
                and conn.laddr.ip in (host, "0.0.0.0", "::")):
            return conn.pid
    return None


def _family(pid: int) -> set[int]:
    """``pid`` and its child processes: with serving.workers > 1 the workers listen, not the supervisor."""
    import psutil

    try:
        return {pid, *(child.pid for child in psutil.Process(pid).children())}
    except psutil.Error:
        return {pid}


def _our_listener(cfg: KfopsConfig, key: str, host: str, port: int) -> int | None:
    """The pid of a kfops server started from this data dir for ``key`` listening on the port, if any."""
    pid = listening_pid(host, port)
    if pid is None or not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if str(_paths(cfg, key)["config"]).encode() in cmdline else None


def _remove_state_of(cfg: KfopsConfig, key: str, pid: int | None) -> None:
    """Remove the state file only while it still names ``pid``: never another run's server."""
    state = _read_state(cfg, key)
    if state is not None and state.get("pid") == pid:
        _paths(cfg, key)["state"].unlink(missing_ok=True)


def control_headers(cfg: KfopsConfig, name: str | None = None, instance: str | None = None) -> dict[str, str]:
    """The Authorization header for the local server's control routes (from its state file)."""
    state = _read_state(cfg, instance or name or cfg.registry.model_name) or {}
    return bearer_headers(state.get("token"))


def _hot_swap(cfg: KfopsConfig, key: str, state: dict[str, Any], source: ModelSource) -> dict[str, Any] | None:
    """Reload ``source`` into the running server; None when its control plane does not allow that
    source (another registry, a folder outside serving.reload_roots): the caller restarts it then."""
    import httpx

    name = state["name"]
    try:
        with _http(cfg.serving.startup_timeout_s) as http:
            response = http.post(f"{state['url']}/v1/models/{name}/reload", json=source.to_dict(),
                                 headers=bearer_headers(state.get("token")))
    except httpx.HTTPError as err:
        raise ServingError(f"could not reach the model server at {state['url']} to swap models: {err}") from err
    if response.status_code in (403, 409):  # not allowed, or several workers (serving.workers): restart
        return None
    if response.status_code != 200:
        raise _refusal(response, "the model server refused the new model")
    state["source"] = source.to_dict()
    _write_state(cfg, key, state)
    return server_status(cfg, name, instance=key)


def reload_server(cfg: KfopsConfig, name: str | None = None, model_version: str | None = None) -> dict[str, Any]:
    """Reload the running local server: the same source (an alias that moved) or ``model_version``
    of the registered model; returns the server's answer (previous and new version)."""
    import httpx

    name = name or cfg.registry.model_name
    state = _read_state(cfg, name)
    if not state or not pid_alive(state.get("pid")):
        raise ServingError(f"no local model server for {name} to reload", hint="start one with `kfops serve start`")
    body = {"model_version": str(model_version)} if model_version is not None else {}
    try:
        with _http(cfg.serving.startup_timeout_s) as http:
            response = http.post(f"{state['url']}/v1/models/{state['name']}/reload", json=body,
                                 headers=bearer_headers(state.get("token")))
    except httpx.HTTPError as err:
        raise ServingError(f"could not reach the model server at {state['url']} to reload it: {err}") from err
    if response.status_code != 200:
        raise _refusal(response, "the model server refused the reload")
    result = response.json()
    state["source"] = result.get("source", state.get("source"))  # what a restart should serve
    _write_state(cfg, name, state)
    return result


def _refusal(response, what: str) -> KfopsError:
    """A refused swap or reload: the request's mistake (no such version, a bad model folder) is
    exit 2 like `kfops promote 99`; the server or its registry failing is a ServingError (exit 3)."""
    message = f"{what}: HTTP {response.status_code}: {_error_text(response)}"
    return KfopsError(message) if response.status_code in (400, 404, 409, 422) else ServingError(message)


def _error_text(response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def _terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True once the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _exists(pid):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        if not _exists(pid):
            return True
        time.sleep(0.1)
    return False


def _exists(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_server(
    cfg: KfopsConfig, name: str | None = None, timeout_s: float = STOP_TIMEOUT_S, instance: str | None = None
) -> dict[str, Any]:
    """Stop the server for ``name`` (default ``registry.model_name``); a no-op when none runs.

    Stops the pid in the state file, or, when that is gone, a server of ours still listening on
    its port (one whose state was lost). Returns once the port is free.
    """
    name = name or cfg.registry.model_name
    with serving_lock(cfg, f"stop the model server {instance or name}"):
        return _stop_locked(cfg, name, instance or name, timeout_s)


def _stop_locked(cfg: KfopsConfig, name: str, key: str, timeout_s: float) -> dict[str, Any]:
    state = _read_state(cfg, key)
    paths = _paths(cfg, key)
    host, port = (state or {}).get("host", cfg.serving.host), (state or {}).get("port", cfg.serving.http_port)
    pid = (state or {}).get("pid")
    if not pid_alive(pid):
        orphan = _our_listener(cfg, key, host, int(port))
        if orphan is None:
            if state:
                _remove_state_of(cfg, key, pid)
                return {"name": name, "stopped": False, "pid": pid, "reason": "not running"}
            return {"name": name, "stopped": False, "reason": "no server state"}
        pid = orphan
    family = _family(pid)
    if not _terminate(pid, timeout_s):
        raise ServingError(f"model server pid {pid} did not exit after SIGTERM and SIGKILL")
    deadline = time.monotonic() + timeout_s
    while listening_pid(host, int(port)) in family and time.monotonic() < deadline:
        time.sleep(0.1)
    if state:
        _remove_state_of(cfg, key, state.get("pid"))
    return {"name": name, "stopped": True, "pid": pid, "log_file": str(paths["log"])}


def server_status(cfg: KfopsConfig, name: str | None = None, instance: str | None = None) -> dict[str, Any]:
    """pid, url, model name/version/source, running, healthy, log file, for ``name``."""
    name = name or cfg.registry.model_name
    state = _read_state(cfg, instance or name)
    if not state:
        return {"name": name, "running": False, "healthy": False, "pid": None, "url": None, "model_version": None,
                "log_file": str(_paths(cfg, instance or name)["log"])}
    running = pid_alive(state.get("pid"))
    meta = _probe(state["url"], name) if running else None
    versions = (meta or {}).get("versions") or [None]
    url = state["url"]
    return {
        "name": name,
        "pid": state.get("pid"),
        "running": running,
        "healthy": meta is not None,
        "url": url,
        "endpoints": {"v1": f"{url}/v1/models/{name}:predict", "v2": f"{url}/v2/models/{name}/infer",
                      "reload": f"{url}/v1/models/{name}/reload", "metrics": f"{url}/metrics"},
        "model_name": name,
        "model_version": versions[0],
        "model_source": state.get("source"),
        "started_at": state.get("started_at"),
        "log_file": state.get("log_file"),
        "inference_log_dir": state.get("inference_log_dir"),
    }
