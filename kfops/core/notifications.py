"""What a run-end notification says (pure): which of ``notify.events`` a run's end is, and the
JSON a webhook gets: ``text`` (what Slack's and Mattermost's incoming webhooks show) and ``kfops``
(the same facts as fields, for a service of your own). Nothing secret goes in: no URI with a
password, no webhook URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def run_events(state: str, decision: Mapping[str, Any]) -> list[str]:
    """The events a local run's end is: ``failed`` or ``interrupted`` by its state; else ``retrained``,
    ``refused`` and ``registered`` by what it decided."""
    if state in ("failed", "interrupted"):
        return [state]
    events = []
    if decision.get("retrain"):
        events.append("retrained")
    if decision.get("blessed") is False:
        events.append("refused")
    if decision.get("registered_version"):
        events.append("registered")
    return events


def decision_text(decided: Mapping[str, Any]) -> str:
    """What a run decided, in a few words: ``retrain (drift), not blessed: <checks>, registered v3``."""
    parts = []
    if "retrain" in decided:
        code = f" ({decided['code']})" if decided.get("code") else ""
        parts.append(f"retrain{code}" if decided["retrain"] else f"no retrain{code}")
    if "blessed" in decided:
        parts.append("blessed" if decided["blessed"] else "not blessed: " + "; ".join(decided.get("failed_checks") or []))
    if decided.get("registered_version"):
        parts.append(f"registered v{decided['registered_version']}")
    return ", ".join(parts)


def run_message(project: str, model: str, run: Mapping[str, Any], events: list[str], said: str) -> dict[str, Any]:
    """The webhook's JSON for a run that ended as ``events``; ``said`` is its one-line outcome."""
    icon = ":x:" if set(events) & {"failed", "refused"} else ":warning:" if "interrupted" in events else ":white_check_mark:"
    where = f"{run.get('pipeline', '?')} run {run.get('id') or run.get('run_name') or '?'}"
    text = f"{icon} kfops {project} ({model}): {where} {', '.join(events)}" + (f": {said}" if said else "")
    facts = {key: run.get(key) for key in ("id", "pipeline", "state", "started_at", "ended_at", "seconds",
                                            "window", "run_name", "failed_task", "error") if run.get(key) is not None}
    return {"text": text[:3000], "kfops": {"project": project, "model": model, "events": events, **facts,
                                           "outcome": said}}
