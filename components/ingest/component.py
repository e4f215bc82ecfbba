from kfp import dsl
from kfp.dsl import Dataset, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def ingest(config: str, raw_tables: Output[Dataset]) -> str:
    """Ingest: read the dataset's raw tables for the configured window and snapshot them.

    Calls the loader named by `dataset.loader` (the dataset plug-in's `module:function`), writes one
    parquet file per table plus `manifest.json` (content hash, window, row counts, snapshot time).
    The Feast offline sources are derived from this snapshot by featurize, after validation.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        raw_tables: Output folder of raw tables, `<table>.parquet` and `manifest.json`.

    Returns:
        The sha256 content hash of the raw tables.
    """
    from kfops.steps.ingest import ingest as run

    manifest = run(config, raw_tables.path)
    raw_tables.metadata.update({"data_hash": manifest["data_hash"], "rows": manifest["rows"]})
    return manifest["data_hash"]
