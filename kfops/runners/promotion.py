"""Moving @champion by hand: promote a version, or roll back to the one before.

Both only move the alias (with an audit-trail entry); whatever follows the alias (`kfops deploy
--watch`, see :mod:`kfops.runners.reconcile`) serves the new champion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kfops.errors import KfopsError

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def promote(cfg: KfopsConfig, version: str, reason: str, force: bool = False) -> dict[str, Any]:
    """Point @champion at ``version``; ``force`` allows a version the gate never blessed (recorded).

    Returns the audit event: ``from_version`` (None when there was no champion), ``to_version``.
    """
    from kfops.adapters import mlflow_registry as registry

    current = registry.champion(cfg)
    if current is not None and str(current.version) == str(version):
        # A move to itself would be an audit entry "v1 -> v1", which a rollback would then "undo".
        raise KfopsError(f"v{version} already holds @champion: nothing to move",
                         hint="`kfops deploy` serves the current champion again")
    return registry.move_alias(cfg, registry.CHAMPION, version, reason=reason, force=force)


def previous_champion(cfg: KfopsConfig) -> str:
    """The version @champion pointed to before its current one, from the audit trail.

    Raises KfopsError when there is no champion, no recorded move away from an earlier one, or the
    last recorded move does not end at the current champion (it moved unrecorded since).
    """
    from kfops.adapters import mlflow_registry as registry

    moves = [e for e in registry.audit_trail(cfg) if e.get("alias") == registry.CHAMPION and e.get("from_version")]
    current = registry.champion(cfg)
    if not moves or current is None:
        raise KfopsError("there is no previous champion to roll back to")
    if moves[-1]["to_version"] != str(current.version):
        raise KfopsError("the audit trail does not say which champion came before the current one")
    return moves[-1]["from_version"]


def rollback(cfg: KfopsConfig, reason: str) -> dict[str, Any]:
    """Put the previous champion back (forced: it was blessed once, it may not be now).

    The audit entry's reason is ``rollback: <reason>``. Returns the audit event.
    """
    from kfops.adapters import mlflow_registry as registry

    previous = previous_champion(cfg)
    return registry.move_alias(cfg, registry.CHAMPION, previous, reason=f"rollback: {reason}", force=True)
