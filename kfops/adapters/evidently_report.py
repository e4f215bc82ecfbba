"""Evidently adapter: its DataDriftPreset report as HTML, with kfops' tests and thresholds per column."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def data_drift_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numerical: list[str],
    tests: dict[str, str],
    thresholds: dict[str, float],
    drift_share: float,
) -> str:
    """Evidently 0.7's data drift report of ``current`` against ``reference`` as an HTML page.

    Every column of the frames is reported; those not in ``numerical`` are declared categorical.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from kfops.adapters import sqlite_timestamps

    sqlite_timestamps.install()  # Evidently imports IPython, whose converter breaks Feast's SQLite store

    columns = list(reference.columns)
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[n for n in columns if n not in numerical]
    )
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift_share,
        per_column_method=tests,
        per_column_threshold=thresholds,
    )
    snapshot = Report([preset]).run(
        current_data=Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
        reference_data=Dataset.from_pandas(reference.reset_index(drop=True), data_definition=definition),
    )
    return snapshot.get_html_str(as_iframe=False)
