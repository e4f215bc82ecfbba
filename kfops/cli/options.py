"""Options the CLI's commands share, and the one way a command loads its configuration.

Every command takes ``--config/-c`` and ``--set/-s``; the cluster commands also take ``--host``,
``--namespace`` and ``--experiment``. Defining them once keeps their spelling and help the same
everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kfops.config import KfopsConfig

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default: nearest kfops.yaml).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a key: section.key=value.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and full logs.")]
HostOption = Annotated[str | None, typer.Option("--host", help="KFP endpoint (default: cluster.kfp_host).")]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", help="Kubeflow profile namespace "
                                                    "(default: cluster.namespace).")]
ExperimentOption = Annotated[str | None, typer.Option("--experiment", help="KFP experiment (default: registry.experiment).")]


def cli_config(config: Path | None, overrides: list[str] | None = None, *extra: str) -> KfopsConfig:
    """The configuration from ``--config`` (else the nearest kfops.yaml) with the ``--set`` overrides,
    then ``extra`` overrides a command derives from its own options (``--online-store``, ``--start``)."""
    from kfops.config import load_config

    return load_config(config, [*(overrides or []), *extra])
