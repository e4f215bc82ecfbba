from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kfops.steps.kfp_outputs import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    config: str,
    training_set: Input[Dataset],
    model: Input[Model],
    run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    verdict: Output[Artifact],
    plots: Output[HTML],
) -> bool:
    """Evaluate: score the challenger and the current @champion on the same frozen test split.

    Computes ROC AUC, PR AUC, log loss, F1 at the validation-chosen threshold and calibration,
    per-slice ROC AUC (`evaluate.gate.slices`) and behavioural checks (invariance, direction),
    then applies the gate (`evaluate.gate`): absolute floors, minimum improvement over the
    champion and the largest allowed slice regression. The gate fails closed: with no
    thresholds configured, nothing is blessed.

    Args:
        config: The kfops configuration (KfopsConfig) as JSON.
        training_set: Parquet training set with a `split` column.
        model: The challenger kfops model folder.
        run_id: The MLflow run to log test metrics and plots to.
        metrics: Scalar test metrics.
        classification: ROC curve and confusion matrix.
        verdict: JSON verdict: blessed, reasons, metrics of both models, slices.
        plots: HTML page with ROC, PR, calibration, confusion matrix and slice plots.

    Returns:
        Whether the gate blessed the model (a single output, so `kfp.local` can branch on it).
    """
    from kfops.steps.evaluate import evaluate as run
    from kfops.steps.kfp_outputs import log_kfp_metrics

    summary = run(config, training_set.path, model.path, run_id, verdict.path, plots.path)
    log_kfp_metrics(summary, metrics, classification)
    return summary["blessed"]
