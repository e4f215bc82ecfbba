"""``kfops config``: configuration helpers, e.g. a cluster profile from Terraform outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.core.files import atomic_output
from kfops.core.redaction import redact_uri
from kfops.errors import ConfigError

app = typer.Typer(
    help=(
        "Configuration helpers.\n\n"
        "Examples:\n\n"
        "  terraform -chdir=infra/terraform/envs/aws-dev/platform output -json > outputs.json\n\n"
        "  kfops config from-terraform outputs.json\n\n"
        "  kfops config from-terraform infra/terraform/envs/aws-dev/platform --output kfops.cluster.yaml\n\n"
        "  kfops config from-terraform outputs.json --base kfops.yaml --output kfops.cluster.yaml --force"
    ),
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    # A callback keeps `config` a command group, so each command is spelled `kfops config <name>`.
    pass


@app.command("show")
def show(
    key: Annotated[str | None, typer.Argument(help="One section or key, e.g. retrain or train.trainer.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Print the effective configuration (kfops.yaml, then KFOPS__ variables, then --set), as YAML.

    Paths are resolved; passwords are left out, as in every config kfops writes. Examples:

      kfops config show

      kfops config show retrain --set retrain.cooldown=14d
    """
    import json

    import yaml

    cfg = cli_config(config, set_)
    tree = json.loads(cfg.to_json())
    if key:
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                raise ConfigError(f"the configuration has no key '{key}'",
                                  hint="see docs/configuration.md for every key")
            tree = tree[part]
    if not isinstance(tree, (dict, list)):  # one value: as YAML writes it, without a document marker
        typer.echo(json.dumps(tree) if tree is None or isinstance(tree, bool) else tree)
        return
    typer.echo(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True).rstrip("\n"))


# Keys echoed after writing, so the user sees where runs will go.
SUMMARY_KEYS = (
    ("cluster", "kfp_host"),
    ("cluster", "namespace"),
    ("cluster", "pipeline_root"),
    ("cluster", "gpu_node_selector"),
    ("cluster", "gpu_toleration_key"),
    ("cluster", "service_account"),
    ("registry", "tracking_uri"),
    ("registry", "artifact_location"),
    ("features", "online_store"),
    ("features", "redis_connection"),
    ("features", "registry"),
)


@app.command("from-terraform")
def from_terraform(
    source: Annotated[
        Path,
        typer.Argument(help="outputs.json from `terraform output -json`, or a folder holding outputs.json."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile to write.")] = Path("kfops.cluster.yaml"),
    base: Annotated[
        Path | None,
        typer.Option("--base", help="Existing kfops.yaml to lay the cluster settings over (default: defaults only)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
) -> None:
    """Write a cluster profile (a kfops config file) from the platform root's Terraform outputs.

    The profile is validated by loading it as a kfops config before it replaces --output.
    Terraform itself is not run: export the outputs first.

    Examples:

      terraform -chdir=infra/terraform/envs/aws-dev/platform output -json > outputs.json

      kfops config from-terraform outputs.json -o kfops.cluster.yaml --base kfops.yaml
    """
    import yaml

    from kfops.cluster.terraform_outputs import (
        load_outputs,
        merge_overlay,
        profile_from_terraform_outputs,
        profile_notes,
        render_profile,
    )
    from kfops.config import load_config

    outputs = load_outputs(source)
    tree = profile_from_terraform_outputs(outputs)
    if base is not None:
        if not base.is_file():
            raise ConfigError(f"--base {base} does not exist")
        try:
            base_tree = yaml.safe_load(base.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"--base {base} is not valid YAML: {err}") from err
        if not isinstance(base_tree, dict):
            raise ConfigError(f"--base {base} must hold a mapping at the top level")
        tree = merge_overlay(base_tree, tree)
    if output.exists() and not force:
        raise ConfigError(f"{output} already exists", hint="pass --force to overwrite it, or choose another --output")

    text = render_profile(tree, profile_notes(outputs), source=str(source))
    # Validate the exact bytes before they replace anything; environ={} keeps the shell's
    # KFOPS__* overrides out of the check. Mode 0600 as the profile has always been written.
    with atomic_output(output, mode=0o600) as staged:
        staged.write_text(text)
        config = load_config(staged, environ={})

    typer.echo(f"wrote {output}")
    for section, key in SUMMARY_KEYS:
        typer.echo(redact_uri(f"  {section}.{key} = {getattr(getattr(config, section), key)}"))
    typer.echo(f"next: kfops submit --config {output}   (or export KFOPS_CONFIG={output})")
