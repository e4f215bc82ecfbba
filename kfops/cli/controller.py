"""``kfops controller``: the promotion controller (MLflow webhooks -> rollout) and its webhook."""

from __future__ import annotations

from typing import Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config

app = typer.Typer(
    help=(
        "The promotion controller: MLflow sends a webhook when @champion moves, the controller serves it.\n\n"
        "Examples:\n\n"
        "  kfops controller run --port 8095\n\n"
        "  kfops controller register-webhook --url http://kfops-controller:8095/webhooks/mlflow"
    ),
    no_args_is_help=True,
)

SecretOption = Annotated[str | None, typer.Option(
    "--secret", envvar="KFOPS_WEBHOOK_SECRET", show_envvar=True,
    help="HMAC secret shared with MLflow (prefer the environment variable).")]
UrlOption = Annotated[str | None, typer.Option(
    "--url", help="The URL MLflow posts to (default: http://HOST:PORT/webhooks/mlflow).")]


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Bind address (0.0.0.0 in a pod).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port for webhooks.", min=1, max=65535)] = 8095,
    url: UrlOption = None,
    secret: SecretOption = None,
    register: Annotated[bool, typer.Option(help="Register (create or update) the webhook with MLflow on start.")] = True,
    reconcile_interval: Annotated[float, typer.Option(help="Seconds between reconcile rounds with webhooks.",
                                                      min=1)] = 180.0,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls where MLflow sends no webhooks.",
                                                 min=0.1)] = 5.0,
    max_age: Annotated[float, typer.Option(help="Refuse deliveries whose timestamp is further off than this.",
                                           min=1)] = 300.0,
    canary: Annotated[bool, typer.Option(help="Canary locally too (needs live traffic to judge).")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Receive MLflow's alias webhooks and roll the new version out; reconcile on start and every few minutes.

    The secret comes from KFOPS_WEBHOOK_SECRET. Example:

      kfops controller run --host 0.0.0.0 --url http://ctl.svc:8095/webhooks/mlflow
    """
    from kfops.cli import echo
    from kfops.errors import ConfigError
    from kfops.runners.controller import run_controller

    if not secret:
        raise ConfigError("the controller needs the webhook secret MLflow signs with",
                          hint="set KFOPS_WEBHOOK_SECRET (on a cluster it comes from a Kubernetes secret)")
    run_controller(cli_config(config, set_), host=host, port=port, public_url=url, secret=secret, register=register,
                   poll_interval_s=poll_interval, reconcile_interval_s=reconcile_interval, max_age_s=max_age,
                   canary=canary, max_seconds=max_seconds, on_event=echo)


@app.command("register-webhook")
def register_webhook(
    url: Annotated[str, typer.Option("--url", help="The URL MLflow posts to.")],
    secret: SecretOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Create or update (idempotently, by name) the MLflow webhook for alias moves of registry.model_name.

    The secret comes from KFOPS_WEBHOOK_SECRET. Example:

      kfops controller register-webhook --url http://ctl.svc:8095/webhooks/mlflow
    """
    from kfops.adapters import mlflow_registry as registry
    from kfops.cli import echo
    from kfops.errors import ConfigError

    if not secret:
        raise ConfigError("no webhook secret", hint="set KFOPS_WEBHOOK_SECRET")
    cfg = cli_config(config, set_)
    webhook_id, how = registry.register_webhook(cfg, url, secret)
    echo(f"webhook {registry.webhook_name(cfg)} ({webhook_id}) {how}: {', '.join(registry.ALIAS_EVENTS)} -> {url}")
