"""What a finished command prints: what happened and where to look next."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kfops.core.redaction import redact_uri

if TYPE_CHECKING:
    from kfops.config import KfopsConfig
    from kfops.runners.local import LocalRun


def _read_json(path: str | Path | None) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        return None


# What the deploy component prints: "serving my-model v1 (@champion) at http://127.0.0.1:8080".
_DEPLOY_LINE = re.compile(r"serving (?P<name>\S+) v(?P<version>\S+) \(@(?P<alias>[^)\s]+)\) at (?P<endpoint>\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def served_model(cfg: KfopsConfig, endpoint: str | None, log_path: str | Path | None) -> dict[str, Any]:
    """Which version the run's endpoint serves, and under which alias: deploy serves an alias
    (@champion unless serving.model_alias), not the version this run registered.

    Asked of the live local server first; else what the deploy task printed in the run log.
    ``version`` is None when neither says.
    """
    found: dict[str, Any] = {"version": None, "alias": cfg.serving.model_alias or "champion", "source": None}
    if not endpoint:
        return found
    for match in reversed(_deploy_lines(log_path)):
        if match["endpoint"].rstrip("/") == endpoint.rstrip("/"):
            found.update(version=match["version"], alias=match["alias"], source="deploy step")
            break
    try:
        from kfops.serving.local.process import server_status

        server = server_status(cfg)
    except (ImportError, OSError):  # a summary never fails the run it describes
        server = None
    if server and server.get("healthy") and str(server.get("url", "")).rstrip("/") == endpoint.rstrip("/") \
            and server.get("model_version") is not None:
        found.update(version=str(server["model_version"]), source="model server")
    return found


def _deploy_lines(log_path: str | Path | None) -> list[dict[str, str]]:
    if not log_path:
        return []
    try:
        text = _ANSI.sub("", Path(log_path).read_text(errors="replace"))
    except OSError:
        return []
    return [match.groupdict() for match in _DEPLOY_LINE.finditer(text)]


def run_summary(cfg: KfopsConfig, run: LocalRun) -> dict[str, Any]:
    """Collect the facts of a finished local training run from its task outputs."""
    outputs = run.outputs
    train = outputs.get("train", {})
    evaluate = outputs.get("evaluate", {})
    verdict = _read_json(evaluate.get("verdict")) or {}
    register = outputs.get("register", {})
    deploy = outputs.get("deploy", {})
    served = served_model(cfg, deploy.get("Output"), run.log_path)
    drift = outputs.get("drift", {})
    decision = _read_json(drift.get("decision")) or {}
    drift_metrics = decision.get("metrics") or {}
    return {
        "retrain": decision.get("retrain"),
        "retrain_code": decision.get("code"),
        "retrain_reason": decision.get("reason"),
        "drift": decision.get("drift"),
        "drifted_columns": drift_metrics.get("drifted_columns"),
        "tested_columns": drift_metrics.get("tested_columns"),
        "checked": _what_was_checked(decision),
        "drift_report": drift.get("report"),
        "pipeline_run": run.run_dir.name if run.run_dir else None,
        "seconds": round(run.seconds, 1),
        "mlflow_run_id": train.get("Output"),
        "metrics": verdict.get("metrics", {}),
        "blessed": verdict.get("blessed"),
        "reasons": verdict.get("verdict", {}).get("reasons", []),
        "model_name": cfg.registry.model_name,
        "registered_version": register.get("Output"),
        "served_version": served["version"],
        "served_alias": served["alias"],
        "endpoint": deploy.get("Output"),
        "validation_report": outputs.get("validate", {}).get("report"),
        "evaluation_report": evaluate.get("plots"),
        "run_dir": str(run.run_dir) if run.run_dir else None,
        "compiled": str(run.compiled),
        "log": str(run.log_path),
    }


def _what_was_checked(decision: dict[str, Any]) -> str | None:
    """'3,000 predictions logged 2026-12-06..2026-12-08 against v1's data 2013-01-01..2013-01-14'."""
    rows, current = (decision.get("metrics") or {}).get("current_rows"), decision.get("current_window")
    reference, champion = decision.get("reference_window"), decision.get("champion_version")
    if rows is None or not current or not reference:
        return None
    what = "predictions logged" if decision.get("current_source") == "inference_logs" else "rows of"
    return f"{rows:,.0f} {what} {'..'.join(current)} against v{champion}'s data {'..'.join(reference)}"


def print_run_summary(cfg: KfopsConfig, run: LocalRun, verbose: bool = False, same: str = "") -> dict[str, Any]:
    """``same``: the options that address this project again (``-c``, ``--set``), added to the
    commands the summary suggests, so they act on this run's project and not the nearest kfops.yaml."""
    facts = run_summary(cfg, run)
    m = facts["metrics"]
    echo = typer.echo
    echo("")
    echo(f"kfops: '{run.name}' finished in {facts['seconds']}s")
    echo(f"  pipeline run   {facts['pipeline_run']}")
    if facts["retrain"] is not None:  # the retraining pipeline's drift step decided
        echo(f"  decision       {'RETRAIN' if facts['retrain'] else 'no retrain'} ({facts['retrain_code']})")
        echo(f"                   {facts['retrain_reason']}")
        if facts["drifted_columns"] is not None and facts["tested_columns"] is not None:
            echo(f"  drift          {'drift' if facts['drift'] else 'no drift'}: {facts['drifted_columns']:.0f} of "
                 f"{facts['tested_columns']:.0f} columns drifted")
        if facts["checked"]:
            echo(f"  checked        {facts['checked']}")
    if facts["mlflow_run_id"]:
        echo(f"  MLflow run     {facts['mlflow_run_id']}  (experiment {cfg.registry.experiment})")
    if m:
        echo(f"  test metrics   roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  log_loss {m['log_loss']:.4f}  "
             f"f1 {m['f1']:.4f} @ {m['threshold']:.3f}  ece {m['ece']:.4f}  ({m['rows']} rows)")
    if facts["blessed"] is not None:
        echo(f"  gate           {'BLESSED' if facts['blessed'] else 'NOT BLESSED'}")
        for reason in facts["reasons"]:
            echo(f"                   {reason}")
    registered, served = facts["registered_version"], facts["served_version"]
    if registered:
        echo(f"  registered     {facts['model_name']} v{registered}  (kfops lineage {registered}{same})")
    elif facts["blessed"] is False:
        echo("  registered     nothing: the gate refused the model")
    if facts["endpoint"]:
        if served:
            echo(f"  serving        {facts['model_name']} v{served} (@{facts['served_alias']})")
        else:
            echo(f"  serving        @{facts['served_alias']} (version unknown: kfops serve status{same})")
        if registered and served and str(served) != str(registered):
            how = (f"`kfops promote {registered}{same}` makes it @champion, then `kfops deploy{same}`"
                   if facts["served_alias"] == "champion" else f"deploy serves @{facts['served_alias']}")
            echo(f"                 v{registered} is not serving: {how}")
        echo(f"  endpoint       {facts['endpoint']}")
        echo(f"                 POST {facts['endpoint']}/v2/models/{cfg.registry.model_name}/infer")
    reports = [f"{what}: {path}" for what, path in (("drift", facts["drift_report"]),
                                                     ("validation", facts["validation_report"]),
                                                     ("evaluation", facts["evaluation_report"])) if path]
    for i, line in enumerate(reports):  # only the steps that ran: a retraining that did not retrain validated nothing
        echo(f"  {'reports' if i == 0 else '':<15}{line}")
    echo(f"  compiled YAML  {facts['compiled']}")
    echo(f"  log            {facts['log']}")
    echo(f"  MLflow UI      kfops ui{same}   (= mlflow ui --backend-store-uri {redact_uri(cfg.tracking_uri)})")
    if verbose:
        echo(json.dumps(facts, indent=2, default=str))
    return facts


def print_status(cfg: KfopsConfig) -> None:
    from kfops.adapters import mlflow_registry as registry

    echo = typer.echo
    echo(f"data dir       {cfg.data_dir}")
    # Read only: a database without MLflow's tables stays so (an MLflow client would create them).
    store_ready = registry.store_exists(cfg)
    echo(f"MLflow store   {redact_uri(cfg.tracking_uri)}"
         + ("" if store_ready else "  (empty: no MLflow tables yet; the first `kfops run` creates them)"))
    echo(f"Feast          offline duckdb, online {cfg.features.online_store} ({cfg.feast_dir})")
    try:
        from kfops.serving.local.process import server_status

        server = server_status(cfg)
    except ImportError:
        server = None
    if server and server.get("healthy"):
        echo(f"model server   {server.get('url')}  serving v{server.get('model_version')}  (pid {server.get('pid')})")
    else:
        echo("model server   not running  (kfops deploy)")
    echo(f"inference log  {_inference_log_line(cfg)}")
    last = _last_local_run(cfg)
    if last:
        echo(f"last local run {last}")
    if not store_ready:
        return
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        found = registry.model_version(cfg, alias=alias)
        text = f"v{found.version}  roc_auc {found.tags.get('kfops.test_roc_auc', '?')}" if found else "none"
        echo(f"@{alias:<13} {text}")
    runs = _recent_runs(cfg)
    if runs:
        echo("recent runs")
        for line in runs:
            echo(f"  {line}")


def _last_local_run(cfg: KfopsConfig) -> str | None:
    """The newest local run's state and outcome (`kfops runs list` has them all): a failed nightly
    run shows here, though it left no MLflow run."""
    from kfops.runners.run_records import outcome, read_records

    records = read_records(cfg)
    if not records:
        return None
    last = records[0]
    said = outcome(last)
    return f"{last['id']}  {last['state']}  {last.get('started_at') or '-'}" + (f"  {said[:160]}" if said else "")


def _inference_log_line(cfg: KfopsConfig, days: int = 7) -> str:
    """Where predictions are logged and, for a folder, how many in the last ``days`` UTC days: what
    a retraining run on ``drift.current_source=inference_logs`` would find."""
    import datetime as dt

    from kfops.serving.runtime.inference_log import logged_rows_by_day

    location = cfg.inference_log_location
    if str(location).startswith("s3://"):
        return redact_uri(str(location))
    today = dt.datetime.now(dt.UTC).date()
    counts = logged_rows_by_day(Path(location), today - dt.timedelta(days=days - 1))
    if not any(counts.values()):
        return f"{location}  nothing logged in the last {days} days (UTC)"
    newest = max(day for day, rows in counts.items() if rows)
    total = sum(counts.values())
    noun = "prediction" if total == 1 else "predictions"
    return f"{location}  {total:,} {noun} in the last {days} days (UTC), the newest on {newest}"


def _recent_runs(cfg: KfopsConfig, limit: int = 5) -> list[str]:
    from kfops.adapters import mlflow_registry as registry

    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs([experiment.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
    return [f"{item.info.run_name:<45} {item.info.status:<9} {_run_outcome(item.data.tags, item.data.metrics)}"
            for item in runs]


def _run_outcome(tags: dict[str, str], metrics: dict[str, float]) -> str:
    """A drift check's decision, else a training's test AUC and gate verdict ('-' where it has none yet)."""
    if "kfops.retrain" in tags:
        verb = "RETRAIN" if tags["kfops.retrain"] == "true" else "no retrain"
        return f"{verb} ({tags.get('kfops.retrain_code', '?')})"
    auc = metrics.get("test_roc_auc")
    return f"roc_auc {'-' if auc is None else round(auc, 4)}  blessed {tags.get('kfops.blessed', '-')}"
