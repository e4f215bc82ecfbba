"""The time split of the training set, and its check that every split can be learned from and judged."""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.config import KfopsConfig
from kfops.core.splits import MIN_CLASS_ROWS, SPLIT_COLUMN, check_split_classes, split_by_time
from kfops.errors import DataError


def _training_set(labels: list[int]) -> tuple[pd.DataFrame, KfopsConfig]:
    cfg = KfopsConfig(dataset={"label": "readmitted"})
    frame = pd.DataFrame({"event_timestamp": pd.date_range("2024-01-01", periods=len(labels), freq="D", tz="UTC"),
                          "readmitted": labels})
    frame[SPLIT_COLUMN] = split_by_time(frame, cfg)
    return frame, cfg


def test_a_split_without_enough_of_a_class_is_named_before_training():
    """200 events at a 7% label rate left the last 30 days without a positive: the train step trained,
    then failed in its test AUC with 'ROC AUC needs at least two rows of each class'."""
    labels = [1 if i % 10 == 0 else 0 for i in range(170)] + [0] * 30
    frame, cfg = _training_set(labels)
    assert (frame[SPLIT_COLUMN] == "test").sum() == 30
    with pytest.raises(DataError, match=r"the test split \(30 rows, 2024-06-19\.\.2024-07-18\) has 0 row\(s\) of "
                                        r"class 1 in 'readmitted'") as raised:
        check_split_classes(frame, cfg)
    assert "split.train_fraction 0.7" in raised.value.hint


@pytest.mark.parametrize("positives", [MIN_CLASS_ROWS - 1, MIN_CLASS_ROWS])
def test_each_split_needs_two_rows_of_each_class(positives):
    frame, cfg = _training_set([int(i % 3 == 0) for i in range(100)])  # a third positive in every split
    validation = frame.index[frame[SPLIT_COLUMN] == "validation"]
    frame.loc[validation, "readmitted"] = 0
    frame.loc[validation[:positives], "readmitted"] = 1
    if positives < MIN_CLASS_ROWS:
        with pytest.raises(DataError, match=rf"the validation split \(15 rows.*has {positives} row\(s\) of class 1"):
            check_split_classes(frame, cfg)
    else:
        check_split_classes(frame, cfg)


def test_a_column_already_named_split_is_refused_by_name():
    """A request feature named 'split' was overwritten by the train/validation/test column, and the
    training set's validation then failed on 'train' not being one of its values."""
    frame, cfg = _training_set([int(i % 3 == 0) for i in range(100)])
    with pytest.raises(DataError, match="already has a column named 'split', the name of the train/validation/test"):
        split_by_time(frame, cfg)  # it holds the split made above
