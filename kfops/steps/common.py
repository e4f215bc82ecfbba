"""Helpers every pipeline step shares: the config a component passes as JSON, the raw-table
folder, the training set and the last validation stats.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kfops.core.tables import read_parquet
from kfops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from kfops.config import KfopsConfig


log = logging.getLogger(__name__)


def step_config(config: KfopsConfig | str) -> KfopsConfig:
    """The step's config: as given, or the compiled pipeline's JSON with its relative paths
    resolved where this task runs (see KfopsConfig.resolve_at_run_time)."""
    from kfops.config import KfopsConfig
    from kfops.core.redaction import install_log_redaction
    from kfops.errors import install_hint_printer

    install_log_redaction()  # a task's log is kept (and shown in the KFP UI): no password in it
    install_hint_printer()  # the fix a failed task's error names reaches `kfops run`
    return config if isinstance(config, KfopsConfig) else KfopsConfig.from_json(config).resolve_at_run_time()


def read_tables(raw_dir: Path) -> dict[str, pd.DataFrame]:

    raw_dir = Path(raw_dir)
    files = sorted(raw_dir.glob("*.parquet"))
    if not files:
        raise DataError(f"no raw tables (*.parquet) in {raw_dir}", hint="run the ingest step first")
    tables = {}
    for path in files:
        try:
            tables[path.stem] = read_parquet(path)
        except (OSError, ValueError) as err:
            raise DataError(f"raw table {path} could not be read: {err}") from err
    return tables


def load_training_set(path: Path) -> pd.DataFrame:

    try:
        return read_parquet(path)
    except (OSError, ValueError) as err:
        raise DataError(f"training set {path} could not be read: {err}") from err


def validation_baseline_key(name: str) -> str:
    """The state key of the last passed validation of ``name`` (``raw`` or ``training_set``)."""
    return f"validation/{name}.last.json"


def previous_validation(cfg: KfopsConfig, name: str) -> dict | None:
    """The stats of the last validation of ``name`` that passed, from the state store (the volume
    baseline the next run's row counts are held to); None before the first."""
    from kfops.adapters.state_store import state_store
    from kfops.core.state import read_json

    last = read_json(state_store(cfg), validation_baseline_key(name))
    return last.get("stats") if isinstance(last, dict) else None


def record_validation(cfg: KfopsConfig, name: str, summary: dict) -> None:
    """Make ``summary`` (a passed validation's JSON summary, with its ``stats``) the next baseline."""
    from kfops.adapters.state_store import state_store
    from kfops.core.state import write_json

    write_json(state_store(cfg), validation_baseline_key(name), summary)


def feature_views(cfg: KfopsConfig) -> str:
    return ",".join(sorted({ref.split(":", 1)[0] for ref in cfg.features.feature_refs}))


def definitions_hash(cfg: KfopsConfig) -> str:
    module = cfg.features.definitions.partition(":")[0]
    path = cfg.features.repo_path / f"{module}.py"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "unknown"

