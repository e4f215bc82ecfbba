"""Step 2, validate: the raw tables against their Great Expectations suites; fails the run on a
broken contract, so nothing downstream trains, registers or deploys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfops.steps.common import previous_validation, read_tables, record_validation, step_config

if TYPE_CHECKING:

    from kfops.config import KfopsConfig



def validate(config: KfopsConfig | str, raw_dir: Path, report_html: Path, summary_json: Path) -> dict[str, Any]:
    """Run the expectation suites on the raw tables; raise ValidationFailed, with examples, on failure."""
    from kfops.adapters import gx_validation as validation
    from kfops.reports.validation import write_reports

    cfg = step_config(config)
    tables = read_tables(raw_dir)
    previous = previous_validation(cfg, "raw")
    result = validation.validate_tables(tables, cfg, previous=previous)
    write_reports(result, Path(report_html), Path(summary_json))
    if not result.success:
        print(validation.format_failures(result), flush=True)
        validation.raise_if_failed(result, summary_path=str(summary_json))
    summary = json.loads(Path(summary_json).read_text())
    record_validation(cfg, "raw", summary)
    return summary
