from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def featurize(config: str, raw_tables: Input[Dataset], feast_sources: Output[Dataset], training_set: Output[Dataset]):
    """Featurize: build the training set with Feast point-in-time joins, split by time.

    Writes the Feast offline sources from the validated raw tables (`dataset.feast_sources_writer`),
    builds the entity frame (`dataset.entity_builder`), applies the feature definitions in
    `feature_repo/`, joins `features.feature_refs` with `get_historical_features`, leaves out the
    rows whose labels are not final yet (younger than `retrain.label_delay`), adds a `split`
    column (train / validation / test by event time) and validates the result against
    `expectations/training_set.json` (label rate, leakage, keys).

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        raw_tables: Folder of raw tables from the ingest step.
        feast_sources: Output folder of Feast offline source parquet files (from dataset.feast_sources_writer).
        training_set: Output parquet file: entity columns, features, label and split.
    """
    from kfops.steps.featurize import featurize as run

    stats = run(config, raw_tables.path, feast_sources.path, training_set.path)
    training_set.metadata.update(stats)
