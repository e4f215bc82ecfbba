"""A trainer of your own: logistic regression, fitted with scikit-learn, saved as JSON, served with numpy.

kfops.yaml:

    train:
      trainer: logistic_trainer:LogisticTrainer
      params: {C: [0.01, 0.1, 1.0]}

kfops hands ``fit`` the splits as the float32 matrix its server will send ``predict_proba``:
``spec.columns`` in order, a categorical column as its index in ``spec.categorical[column]``,
missing or unseen values as NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WEIGHTS = "logistic.json"


class LogisticTrainer:
    def __init__(self, numeric: list[int], means: list[float], scales: list[float],
                 categorical: list[int], sizes: list[int], coef: list[float], intercept: float):
        self.numeric, self.means, self.scales = numeric, np.asarray(means), np.asarray(scales)
        self.categorical, self.sizes = categorical, sizes
        self.coef, self.intercept = np.asarray(coef), float(intercept)

    @classmethod
    def fit(cls, data, params: dict) -> LogisticTrainer:
        from sklearn.linear_model import LogisticRegression

        spec = data.spec
        numeric = [i for i, name in enumerate(spec.columns) if name not in spec.categorical]
        categorical = [i for i, name in enumerate(spec.columns) if name in spec.categorical]
        sizes = [len(spec.categorical[spec.columns[i]]) for i in categorical]
        columns = data.train[:, numeric].astype(np.float64)
        means = np.nan_to_num(np.nanmean(columns, axis=0)) if len(data.train) else np.zeros(len(numeric))
        scales = np.nan_to_num(np.nanstd(columns, axis=0), nan=1.0)
        scales[scales == 0] = 1.0
        # C is chosen on the validation split, by log loss.
        best = None
        for c in params.get("C", [0.1, 1.0]):
            model = cls(numeric, list(means), list(scales), categorical, sizes, [], 0.0)
            fitted = LogisticRegression(C=float(c), max_iter=int(params.get("max_iter", 300)))
            fitted.fit(model.design(data.train), data.train_labels)
            model.coef, model.intercept = fitted.coef_[0], float(fitted.intercept_[0])
            p = np.clip(model.predict_proba(data.validation), 1e-7, 1 - 1e-7)
            y = data.validation_labels
            loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            if best is None or loss < best[0]:
                best = (loss, model)
        assert best is not None, "params.C lists no value"
        return best[1]

    def design(self, matrix: np.ndarray) -> np.ndarray:
        numbers = matrix[:, self.numeric].astype(np.float64)
        numbers = np.where(np.isnan(numbers), self.means, numbers)
        parts = [(numbers - self.means) / self.scales]
        for index, size in zip(self.categorical, self.sizes, strict=True):
            codes = matrix[:, index]
            onehot = np.zeros((len(matrix), size))
            known = np.flatnonzero(~np.isnan(codes))
            onehot[known, codes[known].astype(int)] = 1.0
            parts.append(onehot)
        return np.hstack(parts)

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        z = self.design(matrix) @ self.coef + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow

    def save(self, folder: Path) -> None:
        (folder / WEIGHTS).write_text(json.dumps({
            "numeric": self.numeric, "means": self.means.tolist(), "scales": self.scales.tolist(),
            "categorical": self.categorical, "sizes": self.sizes,
            "coef": self.coef.tolist(), "intercept": self.intercept,
        }))

    @classmethod
    def load(cls, folder: Path, spec) -> LogisticTrainer:
        return cls(**json.loads((folder / WEIGHTS).read_text()))
