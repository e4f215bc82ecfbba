"""The local canary rollout: the same decision as on a cluster, with real processes.

The stable server (``kfops serve start``) keeps running. :func:`run_local_canary` starts the
new model in a second server process (``serving.canary.canary_port``) and a traffic split in
front of both (``serving.canary.split_port``, :mod:`.split`); clients send traffic to the split
while it lasts. Both servers' ``/metrics`` feed :func:`kfops.core.rollout.analyse_canary`:

- promote: the stable server hot-swaps to the new model (no dropped requests);
- roll back: the split sends every request to the stable server at once.

Either way the canary server and the split then stop, and the outcome is written to the
rollout log (``<data_dir>/serving/rollouts.jsonl``) and, for a registered version, as tags on it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.redaction import redact_uri
from kfops.core.signals import raising_interrupt
from kfops.errors import KfopsError, ServingError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig
    from kfops.core.rollout import MetricsSnapshot, RolloutDecision

log = logging.getLogger(__name__)
CANARY_INSTANCE = "canary"
SPLIT_READY_TIMEOUT_S = 60.0


def canary_port(cfg: KfopsConfig) -> int:
    return cfg.serving.canary.canary_port or cfg.serving.http_port + 1


def split_url(cfg: KfopsConfig) -> str:
    return f"http://{cfg.serving.host}:{cfg.serving.canary.split_port}"


def _instance(cfg: KfopsConfig) -> str:
    return f"{cfg.registry.model_name}-{CANARY_INSTANCE}"


def run_local_canary(
    cfg: KfopsConfig,
    *,
    model_dir: Path | None = None,
    model_uri: str | None = None,
    model_version: str | None = None,
    name: str | None = None,
    online_lookup: str = "feast",
    on_event: Callable[[str], None] = log.info,
    on_decision: Callable[[RolloutDecision], None] | None = None,
) -> dict[str, Any]:
    """Canary the given model against the running stable server; promote it or roll it back.

    Returns the outcome (``action`` "promoted", the decision and both versions). Raises
    :class:`ServingError` after a rollback, naming why, with the stable version still serving.
    """
    from kfops.core.rollout import RolloutAction, analyse_canary, windows_from
    from kfops.serving.local import process

    if model_version is not None:
        from kfops.adapters.mlflow_registry import model_version as registered

        # Before any process starts: a missing version is the caller's mistake (exit 2), as in `serve start`.
        if registered(cfg, version=model_version) is None:
            raise KfopsError(f"model '{cfg.registry.model_name}' has no version {model_version}",
                             hint="list versions with `kfops history` or the MLflow UI")
    name = name or cfg.registry.model_name
    stable = process.server_status(cfg, name)
    if not stable["healthy"]:
        raise ServingError(f"no healthy stable server for {name} to canary against",
                           hint="start one with `kfops serve start`, then run the canary")
    stop_leftover_split(cfg, on_event)
    if process.port_in_use(cfg.serving.host, cfg.serving.canary.split_port):
        raise ServingError(f"{cfg.serving.host}:{cfg.serving.canary.split_port} (serving.canary.split_port) is in use",
                           hint="another rollout may be running; or set serving.canary.split_port")
    instance = _instance(cfg)
    split = None
    outcome: dict[str, Any] = {"model": name, "stable_version": stable["model_version"], "split_url": split_url(cfg)}
    stack = contextlib.ExitStack()
    # `kill` of the canary raises from here on, so the finally below stops whatever was started so far.
    stack.enter_context(raising_interrupt(signal.SIGTERM))
    try:
        on_event(f"starting the canary server on port {canary_port(cfg)}")
        canary = process.start_server(cfg, model_dir=model_dir, model_uri=model_uri, model_version=model_version,
                                      name=name, port=canary_port(cfg), online_lookup=online_lookup, replace=True,
                                      instance=instance)
        outcome.update(canary_version=canary["model_version"], canary_source=canary["model_source"])
        split = start_split(cfg, stable["url"], canary["url"], cfg.serving.canary.traffic_percent)
        on_event(f"{cfg.serving.canary.traffic_percent}% of the requests to {split_url(cfg)} go to version "
                 f"{canary['model_version']}, the rest to {stable['model_version']}; watching for up to "
                 f"{cfg.serving.canary.timeout_s:g}s")

        def scrape() -> tuple[dict[str, MetricsSnapshot], dict[str, MetricsSnapshot]]:
            return {"canary": _scrape(canary["url"], name)}, {"stable": _scrape(stable["url"], name)}

        try:
            decision = analyse_canary(windows_from(scrape), cfg.serving.canary, on_decision=on_decision)
        except Exception as err:  # the evidence is gone (a server died): no promotion without it
            _set_split(cfg, 0)
            outcome.update(action="rolled_back", reasons=[f"canary analysis failed: {err}"])
            raise ServingError(f"canary analysis failed, rolled back: {err}") from err
        outcome["decision"] = decision.summary()
        if decision.action is RolloutAction.PROMOTE:
            process.start_server(cfg, name=name, **_source_kwargs(canary["model_source"]),
                                 online_lookup=online_lookup)  # a hot swap: the stable server runs on
            outcome.update(action="promoted", reasons=list(decision.reasons))
            on_event(f"promoted version {canary['model_version']}: {'; '.join(decision.reasons)}")
            return outcome
        _set_split(cfg, 0)
        outcome.update(action="rolled_back", reasons=list(decision.reasons))
        raise ServingError(
            f"canary version {canary['model_version']} rolled back: {'; '.join(decision.reasons)}",
            hint=f"version {stable['model_version']} kept serving at {stable['url']}; the rollout log is "
                 f"{rollout_log(cfg)}",
        )
    finally:
        stack.close()
        if split is not None:
            stop_split(split)
            _split_state(cfg).unlink(missing_ok=True)
        else:  # interrupted while the split started: its pid is in the state file
            stop_leftover_split(cfg, on_event)
        process.stop_server(cfg, name, instance=instance)
        outcome.setdefault("action", "aborted")
        record_rollout(cfg, outcome)


def stop_leftover_split(cfg: KfopsConfig, on_event: Callable[[str], None] = log.info) -> bool:
    """Stop a traffic split an earlier canary left running (it was killed with SIGKILL, say)."""
    import os

    from kfops.serving.local.process import _terminate, pid_alive

    try:
        pid = json.loads(_split_state(cfg).read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    try:
        ours = pid_alive(pid) and b"kfops.serving.sidecars.split" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        ours = False
    if ours:
        on_event(f"stopping the traffic split (pid {pid}) an earlier canary left running")
        _terminate(int(pid), timeout_s=10)
    with contextlib.suppress(OSError):
        os.remove(_split_state(cfg))
    return bool(ours)


def _source_kwargs(source: dict[str, Any]) -> dict[str, Any]:
    if source.get("model_dir"):
        return {"model_dir": Path(source["model_dir"])}
    return {"model_uri": source["model_uri"], "tracking_uri": source.get("tracking_uri")}


def _scrape(url: str, model: str) -> MetricsSnapshot:
    import httpx

    from kfops.core.rollout import parse_metrics

    try:
        with httpx.Client(timeout=10, trust_env=False) as http:
            response = http.get(f"{url}/metrics")
            response.raise_for_status()
    except httpx.HTTPError as err:
        raise ServingError(f"could not read the metrics of {url}: {err}") from err
    return parse_metrics(response.text, model)


def start_split(cfg: KfopsConfig, stable_url: str, canary_url: str, percent: int) -> subprocess.Popen:
    """Start the traffic split process and wait until it answers."""
    from kfops.core.files import atomic_write_text
    from kfops.serving.local.process import server_environment
    from kfops.serving.protocol.auth import TOKEN_ENV, new_token

    folder = cfg.data_dir / "serving"
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "split.log"
    token = new_token()  # POST /-/split needs it; kept owner-only beside the servers' state
    command = [sys.executable, "-m", "kfops.serving.sidecars.split", "--host", cfg.serving.host,
               "--port", str(cfg.serving.canary.split_port), "--stable", stable_url, "--canary", canary_url,
               "--canary-percent", str(percent)]  # fmt: skip
    split = None
    try:
        with log_path.open("ab") as out:
            split = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**server_environment(), TOKEN_ENV: token})
        _split_state(cfg).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_split_state(cfg), json.dumps({"token": token, "pid": split.pid}), mode=0o600)
        _wait_split_ready(cfg, split, log_path)
        return split
    except BaseException:  # not ready, or interrupted while waiting: nothing is left listening
        if split is not None:
            stop_split(split)
            _split_state(cfg).unlink(missing_ok=True)
        raise


def _wait_split_ready(cfg: KfopsConfig, split: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + SPLIT_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if split.poll() is not None:
            from kfops.serving.local.process import log_tail

            raise ServingError(f"the traffic split exited with code {split.returncode}:\n{log_tail(log_path)}")
        try:
            with httpx.Client(timeout=2, trust_env=False) as http:
                if http.get(f"{split_url(cfg)}/-/split").status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServingError(f"the traffic split did not answer within {SPLIT_READY_TIMEOUT_S:g}s (log: {log_path})")


def _split_state(cfg: KfopsConfig) -> Path:
    # Its own folder: serving/<name>.json are the model servers' states (`kfops serve stop --name split`).
    return cfg.data_dir / "serving" / "canary" / "split.json"


def split_headers(cfg: KfopsConfig) -> dict[str, str]:
    """The Authorization header for the running split's ``POST /-/split``."""
    from kfops.serving.protocol.auth import bearer_headers

    try:
        return bearer_headers(json.loads(_split_state(cfg).read_text()).get("token"))
    except (OSError, ValueError):
        return {}


def _set_split(cfg: KfopsConfig, percent: int) -> None:
    import httpx

    try:
        with httpx.Client(timeout=10, trust_env=False) as http:
            http.post(f"{split_url(cfg)}/-/split", json={"canary_percent": percent},
                      headers=split_headers(cfg)).raise_for_status()
    except httpx.HTTPError as err:
        log.warning("could not set the canary share to %d%%: %s (the split is stopped next anyway)", percent, err)


def stop_split(split: subprocess.Popen) -> None:
    split.terminate()
    try:
        split.wait(timeout=10)
    except subprocess.TimeoutExpired:
        split.kill()
        split.wait(timeout=10)


def rollout_log(cfg: KfopsConfig) -> Path:
    return cfg.data_dir / "serving" / "rollouts.jsonl"


def record_rollout(cfg: KfopsConfig, outcome: dict[str, Any]) -> None:
    """Append the outcome to the rollout log; tag a registered canary version with it."""
    entry = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **outcome}
    path = rollout_log(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")
    source = outcome.get("canary_source") or {}
    version = outcome.get("canary_version")
    if source.get("model_uri") and version and str(version).isdigit():
        try:
            from kfops.adapters.mlflow_registry import tag_version

            reasons = "; ".join(outcome.get("reasons") or [])[:4000]
            tag_version(cfg.with_credentials(source.get("tracking_uri")) or cfg.tracking_uri, outcome["model"], version,
                        {"kfops.rollout": outcome["action"], "kfops.rollout.reasons": reasons})
        except Exception as err:  # the rollout itself is done; the tag is a courtesy
            log.warning("could not tag version %s with the rollout outcome: %s", version, redact_uri(str(err)))
