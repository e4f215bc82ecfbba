"""Which columns the config names, and whether the data has them: checked before training.

A config names columns in several places (the row id, the label, request-time features, the
gate's slices and behavioural checks). One the data lacks would otherwise surface late: a
behavioural check on a missing column fails the gate after the model is trained, and the run
ends NOT BLESSED. :func:`check_config_columns` lists every missing name at once, early.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kfops.errors import MissingColumnsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def feature_names(cfg: KfopsConfig) -> list[str]:
    """The column each ``view:feature`` reference adds to the entity frame."""
    return [ref.split(":", 1)[1] for ref in cfg.features.feature_refs]


def missing_config_columns(columns: Iterable[str], cfg: KfopsConfig,
                           joined: Iterable[str] = ()) -> dict[str, list[str]]:
    """``{config key: [column names it gives that are not in columns]}``, empty when all are there.

    ``columns`` are the entity frame's (or the training set's); ``joined`` the columns a later join
    adds (the Feast features): the keys of the entity frame itself (row id, event time, label and
    request features) must be in ``columns``, the columns the model and the gate use may be in either.
    """
    have = set(columns)
    later = have | set(joined)
    dataset, evaluate = cfg.dataset, cfg.evaluate
    wanted: dict[str, tuple[list[str], set[str]]] = {
        "dataset.row_id": ([dataset.row_id] if dataset.row_id else [], have),
        "dataset.event_timestamp": ([dataset.event_timestamp], have),
        "dataset.label": ([dataset.label], have),
        "features.request_features": (list(cfg.features.request_features), have),
        "features.categorical": (list(cfg.features.categorical), later),
        "evaluate.gate.slices": (list(evaluate.gate.slices), later),
    }
    if evaluate.behavioural_checks:
        wanted["evaluate.invariant_columns"] = (list(evaluate.invariant_columns), later)
        wanted["evaluate.non_decreasing_columns"] = (list(evaluate.non_decreasing_columns), later)
    missing = {key: [name for name in names if name not in where] for key, (names, where) in wanted.items()}
    return {key: names for key, names in missing.items() if names}


def check_config_columns(columns: Iterable[str], cfg: KfopsConfig, where: str = "the entity frame",
                         joined: Iterable[str] = ()) -> None:
    """Raise :class:`~kfops.errors.MissingColumnsError` listing every column the config names that
    ``columns`` (plus ``joined``) lack; nothing when all are there."""
    columns = list(columns)
    missing = missing_config_columns(columns, cfg, joined)
    if not missing:
        return
    listed = "; ".join(f"{key}: {', '.join(names)}" for key, names in missing.items())
    shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
    raise MissingColumnsError(
        f"the configuration names columns {where} does not have: {listed} (it has: {shown})",
        missing=missing,
    )
