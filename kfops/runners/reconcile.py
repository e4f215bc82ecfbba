"""Follow the registry: whatever @champion points to is what the local server serves.

Promotion can happen in the MLflow UI, with `kfops promote`, or by auto-promotion; this loop
notices the alias moved and redeploys, within one poll interval. A move made outside kfops (the
UI calls MLflow's REST API directly) is written into the audit trail when it is noticed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def record_outside_moves(cfg: KfopsConfig, alias: str, current_version: str) -> bool:
    """If the audit trail's last move of ``alias`` does not end at ``current_version``, record one that does."""
    from kfops.adapters import mlflow_registry as registry

    moves = [e for e in registry.audit_trail(cfg) if e.get("alias") == alias]
    if moves and moves[-1].get("to_version") == current_version:
        return False
    registry.record_audit(cfg, {
        "action": "alias", "alias": alias, "from_version": moves[-1]["to_version"] if moves else None,
        "to_version": current_version, "reason": "moved outside kfops (MLflow UI or API); noticed by the reconciler",
        "forced": False, "who": "mlflow-ui",
    })
    return True


def reconcile_once(cfg: KfopsConfig, served_version: str | None) -> str | None:
    """Deploy the alias's version if it differs from ``served_version``; return what now serves."""
    from kfops.adapters import mlflow_registry as registry
    from kfops.steps.deploy import deploy

    alias = cfg.serving.model_alias or registry.CHAMPION
    target = registry.model_version(cfg, alias=alias)
    if target is None or str(target.version) == served_version:
        return served_version
    record_outside_moves(cfg, alias, str(target.version))
    deploy(cfg)
    return str(target.version)


def watch_champion(
    cfg: KfopsConfig,
    interval_s: float = 5.0,
    max_seconds: float | None = None,
    on_event: Callable[[str], None] = print,
) -> None:
    from kfops.errors import ConfigError, KfopsError
    from kfops.serving.local.process import server_status

    status = server_status(cfg)
    served = str(status.get("model_version")) if status.get("healthy") else None
    on_event(f"watching @{cfg.serving.model_alias or 'champion'} of {cfg.registry.model_name} every {interval_s}s "
             f"(serving v{served or '-'})")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while deadline is None or time.monotonic() < deadline:
        try:
            now = reconcile_once(cfg, served)
        except ConfigError:
            raise
        except KfopsError as err:  # the registry or server failed, or @champion names a bad model: keep serving
            on_event(f"reconcile failed, will retry: {err}")
            now = served
        if now != served:
            on_event(f"deployed v{now} (was v{served or '-'})")
            served = now
        time.sleep(interval_s)
