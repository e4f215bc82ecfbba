from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def validate(config: str, raw_tables: Input[Dataset], report: Output[HTML], summary: Output[Artifact]):
    """Validate: check the raw tables against the Great Expectations suites in `expectations/`.

    Schema, types, null rates, ranges, allowed categories, key uniqueness, window freshness and
    volume. On failure the step fails, so nothing downstream trains, registers or deploys; the
    failing expectations and example rows are printed and kept in `summary`.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        raw_tables: Folder of raw tables from the ingest step.
        report: Human-readable HTML report, shown in the KFP UI.
        summary: JSON summary: success, per-expectation results, failures with examples, stats.
    """
    from kfops.steps.validate import validate as run

    run(config, raw_tables.path, report.path, summary.path)
