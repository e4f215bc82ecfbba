from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def predict(config: str, rows: Input[Dataset], feast_sources: Input[Dataset], predictions: Output[Dataset],
            raw: bool = True, model_uri: str = "", log_predictions: bool = False, log_event_time: bool = False) -> int:
    """Predict: batch-score a file of rows with a registered model.

    With `raw` (the default) each row is what a client sends the server (`dataset.request_builder`):
    it is checked as the server checks a request, its request features are derived, and the
    feature views are joined point-in-time from `feast_sources` at the row's event time, as the
    featurize step joined them for training. Without it, the rows hold every model feature.
    Every input column is kept beside `probability` and `prediction`; a refused row (named by its
    row number) fails the step and nothing is written.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        rows: Parquet or CSV file of rows to score.
        feast_sources: Folder of Feast offline source parquet files (the featurize step's output).
        predictions: Output parquet file: the input columns, probability and prediction.
        raw: The rows are raw requests (True) or full feature rows (False).
        model_uri: models:/<name>/<version> or models:/<name>@<alias>; empty: serving.model_alias
            (default @champion) of registry.model_name.
        log_predictions: Also append the predictions to the inference log (the cluster's log
            store), as the server logs what it serves, once every row is scored: a retraining
            run with drift.current_source=inference_logs then checks them for drift.
        log_event_time: With log_predictions, stamp each logged row with its own time (a raw
            row's event time, a feature row's dataset.event_timestamp), not the time it was
            scored: a backfill of past rows lands in the days they are about.

    Returns:
        The number of rows scored.
    """
    from pathlib import Path

    from kfops.steps.predict import predict as run

    result = run(config, Path(rows.path), Path(predictions.path), raw=raw, feature_sources=Path(feast_sources.path),
                 model_uri=model_uri or None, log_predictions=log_predictions, log_event_time=log_event_time)
    predictions.metadata.update(result)
    return result["rows"]
