"""MLflow "models from code" entry point: MLflow executes this file to load a kfops model.

It is never imported by kfops itself; ``set_model`` at the bottom is how MLflow finds the model.
The pyfunc is for `mlflow models serve` and generic MLflow tools; kfops' server loads the
native weights directly.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class KfopsPyfunc(PythonModel):
    def load_context(self, context):
        from kfops.core.model import load_model, read_meta

        folder = context.artifacts["kfops_model"]
        # MLflow already runs this file's code to load the model; a plug-in trainer the folder names
        # (importable where it is loaded) adds no trust beyond that.
        self.model = load_model(folder, (str(read_meta(folder).get("trainer")),))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from kfops.core.model import predict_proba

        probability = predict_proba(self.model, model_input)
        return pd.DataFrame({"probability": probability, "prediction": (probability >= self.model.threshold).astype(int)})


mlflow.models.set_model(KfopsPyfunc())
