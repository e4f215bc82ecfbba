"""Kubernetes credentials (in-cluster config inside a pod, else the local kubeconfig), and a Lease."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from kfops.errors import KfopsError

log = logging.getLogger(__name__)


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


class KubeLease:
    """One holder at a time, as a ``coordination.k8s.io/v1`` Lease (the controller's rollout lease).

    :meth:`acquire` takes the Lease when nobody holds it, when its holder stopped renewing it for
    ``duration_s``, or when this holder already has it; it waits otherwise. :meth:`renew` keeps it,
    :meth:`release` gives it up. ``api`` is a ``CoordinationV1Api`` (or anything with its methods).
    """

    def __init__(self, namespace: str, name: str, holder: str, duration_s: int = 60, api: Any = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.namespace, self.name, self.holder, self.duration_s = namespace, name, holder, int(duration_s)
        self._api, self.clock, self.sleep = api, clock, sleep

    @property
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            load_kube_config()
            self._api = client.CoordinationV1Api()
        return self._api

    def _now(self) -> str:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _body(self, transitions: int, acquired: str | None = None, holder: str | None = None) -> dict[str, Any]:
        now = self._now()
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": self.duration_s,
                         "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}}

    def try_acquire(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise KfopsError(f"could not read Lease {self.namespace}/{self.name}: {err.status} {err.reason}") from err
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(0, holder=self.holder))
                return True
            except ApiException as create_err:
                if create_err.status == 409:  # another holder created it first
                    return False
                raise KfopsError(f"could not create Lease {self.namespace}/{self.name}: {create_err.status}") from create_err
        spec = _spec(lease)
        holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
        expired = renewed is None or _seconds(renewed) + (spec.get("leaseDurationSeconds") or self.duration_s) < self.clock()
        if holder not in (None, "", self.holder) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.holder else 1)
        body = self._body(transitions, spec.get("acquireTime") if holder == self.holder else None, self.holder)
        body["metadata"]["resourceVersion"] = _resource_version(lease)  # optimistic: a racing holder gets 409
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as err:
            if err.status == 409:
                return False
            raise KfopsError(f"could not take Lease {self.namespace}/{self.name}: {err.status} {err.reason}") from err
        return True

    def acquire(self, timeout_s: float, poll_s: float = 1.0) -> None:
        deadline = self.clock() + timeout_s
        while not self.try_acquire():
            if self.clock() >= deadline:
                raise KfopsError(f"Lease {self.namespace}/{self.name} is held by another controller",
                                 hint=f"waited {timeout_s:g}s; it frees itself {self.duration_s}s after its "
                                 "holder stops renewing it")
            self.sleep(poll_s)

    def renew(self) -> bool:
        return self.try_acquire()

    def release(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            spec = _spec(lease)
            if spec.get("holderIdentity") != self.holder:
                return
            body = self._body(int(spec.get("leaseTransitions") or 0), spec.get("acquireTime"), None)
            body["metadata"]["resourceVersion"] = _resource_version(lease)
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as err:  # it expires by itself after duration_s
            log.warning("could not release Lease %s/%s: %s %s", self.namespace, self.name, err.status, err.reason)


def _spec(lease: Any) -> dict[str, Any]:
    if isinstance(lease, dict):
        return dict(lease.get("spec") or {})
    spec = lease.spec
    return {"holderIdentity": spec.holder_identity, "leaseDurationSeconds": spec.lease_duration_seconds,
            "acquireTime": spec.acquire_time, "renewTime": spec.renew_time, "leaseTransitions": spec.lease_transitions}


def _resource_version(lease: Any) -> str | None:
    if isinstance(lease, dict):
        return (lease.get("metadata") or {}).get("resourceVersion")
    return lease.metadata.resource_version


def _seconds(stamp: Any) -> float:
    if isinstance(stamp, dt.datetime):
        return stamp.timestamp()
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
