from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(config: str, training_set: Input[Dataset], data_hash: str, pipeline_run: str, model: Output[Model]) -> str:
    """Train: fit the configured trainer (`train.trainer`: xgboost, torch or your own module:Class) on the train split.

    XGBoost uses hist trees with native categorical splits and early stopping on the validation
    split; torch trains a tabular network with DistributedDataParallel under torchrun; a plug-in
    trainer gets the encoded splits and `train.params` (docs/trainers.md). The
    decision threshold is chosen on validation (max F1). Params, metrics and the model (a
    pyfunc over native weights, with signature and input example) are logged to MLflow.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        training_set: Parquet training set with a `split` column, from featurize.
        data_hash: Content hash of the raw tables, recorded on the run.
        pipeline_run: The pipeline run's name, recorded on the run for lineage.
        model: Output kfops model folder (`kfops_model.json` + native weights).

    Returns:
        The MLflow run id.
    """
    from kfops.steps.train import train as run

    run_id = run(config, training_set.path, model.path, pipeline_run, data_hash)
    model.metadata.update({"mlflow_run_id": run_id})
    return run_id
