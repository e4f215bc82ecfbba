"""Secrets for a pipeline's pods: each task reads ``KFOPS__SECTION__KEY`` variables from the
Kubernetes Secret ``cluster.secrets_name``, so credentials never enter the compiled YAML, only the
Secret's name and keys do (see docs/security.md, "Where secrets go").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kfops.config import CREDENTIAL_KEYS, SECRET_KEYS, env_name

if TYPE_CHECKING:
    from kfops.config import KfopsConfig


def secret_variables() -> list[str]:
    """Every variable a secret of the config may come back from, whether or not it is set here."""
    return [env_name(key) for key in (*SECRET_KEYS, *CREDENTIAL_KEYS)]


def use_cluster_secrets(task: Any, cfg: KfopsConfig) -> Any:
    """With ``cluster.secrets_name`` set, give ``task`` each secret variable from that Secret.

    Optional keys: a Secret holds only the credentials its stores need (a Redis password, a
    Postgres URI with its password), and a pod must start without the others.
    """
    if not cfg.cluster.secrets_name:
        return task
    from kfp import kubernetes

    return kubernetes.use_secret_as_env(task, secret_name=cfg.cluster.secrets_name,
                                        secret_key_to_env={name: name for name in secret_variables()},
                                        optional=True)
