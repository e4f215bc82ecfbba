"""Step 1, ingest: call the dataset loader for the window and snapshot one parquet per table.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.core.files import import_callable
from kfops.core.splits import table_hash
from kfops.steps.common import step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig


log = logging.getLogger(__name__)


RAW_MANIFEST = "manifest.json"


def ingest(config: KfopsConfig | str, raw_dir: Path) -> dict[str, Any]:
    """Read the raw tables and write a dated parquet snapshot with its content hash."""
    cfg = step_config(config)
    started = time.perf_counter()
    tables = import_callable(cfg.require("dataset.loader"), project_dir=cfg.resolved_against)(cfg)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    from kfops.progress import progress

    with progress("ingest: snapshot", total=len(tables), unit="table", every=1) as bar:
        for name, frame in tables.items():
            frame.to_parquet(raw_dir / f"{name}.parquet", index=False)
            bar.advance(message=f"{name}: {len(frame):,} rows")
    manifest = {
        "data_hash": table_hash(tables),
        "snapshot_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "window": [str(day) for day in cfg.window],
        "rows": {name: len(frame) for name, frame in tables.items()},
    }
    (raw_dir / RAW_MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("ingested %s in %.1fs (hash %s)", manifest["rows"], time.perf_counter() - started, manifest["data_hash"][:12])
    return manifest
