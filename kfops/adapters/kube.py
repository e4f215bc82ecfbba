"""Kubernetes credentials: in-cluster config inside a pod, else the local kubeconfig."""

from __future__ import annotations

from kfops.errors import KfopsError


def load_kube_config(error: type[KfopsError] = KfopsError) -> None:
    """Configure the kubernetes client, or raise ``error`` saying that no credentials were found."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except (ConfigException, FileNotFoundError) as err:
            raise error(
                "no Kubernetes credentials: neither in-cluster config nor a kubeconfig was found",
                hint="run inside the cluster, or set KUBECONFIG",
            ) from err
