"""The Kubernetes API calls the operator makes (kopf only watches): `Kube`, and its client.

`Kube` is the protocol the reconciler, the exit handler and the status writer
depend on; `KubeClient` implements it against a real API server and the unit
tests use a fake (tests/unit/kube_fake.py). The sync `kubernetes` client runs
in a small thread pool so the event loop never blocks; objects travel as plain
dicts (`_preload_content=False`), the same shape kopf hands to handlers. 404
becomes None / False, 409 on create becomes False: callers are idempotent and
need no exception handling for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ratline.controller.units import iso, utcnow
from ratline.protocol import GROUP, RUNS, VERSION, WORKFLOWS

log = logging.getLogger(__name__)
TIMEOUT = 30.0
T = TypeVar("T")


def in_cluster(kubeconfig: str | None = None) -> bool:
    """Inside a pod, with no kubeconfig asked for: use the ServiceAccount."""
    return bool(
        kubeconfig is None
        and os.environ.get("KUBERNETES_SERVICE_HOST")
        and not os.environ.get("KUBECONFIG")
    )


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials inside a pod, else `kubeconfig` / $KUBECONFIG / ~/.kube/config.
    The operator and the `ratline` CLI both connect through this."""
    if in_cluster(kubeconfig):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context
    )
    return api


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class Kube(Protocol):
    """What the operator asks of the Kubernetes API (objects are plain dicts)."""

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]: ...
    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...
    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...
    async def create_run(self, namespace: str, body: dict[str, Any]) -> bool: ...
    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    async def create_pod(self, namespace: str, body: Any) -> bool: ...
    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 10) -> bool: ...
    async def post_event(
        self, involved: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None: ...
    def close(self) -> None: ...


class KubeClient:
    """`Kube` over the sync client, in a thread pool; one instance per operator."""

    def __init__(self, api_client: client.ApiClient, threads: int = 8) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ratline-kube")
        self._instance = socket.gethostname()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _get(self, fn: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            return _json(await self._call(fn))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # WorkflowRuns and Workflows
    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                RUNS,
                name,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )

    async def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every WorkflowRun in `namespace` (all namespaces if None)."""
        if namespace is None:
            data = await self._get(
                lambda: self.custom.list_cluster_custom_object(
                    GROUP, VERSION, RUNS, _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        else:
            data = await self._get(
                lambda: self.custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    RUNS,
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                )
            )
        items: list[dict[str, Any]] = (data or {}).get("items") or []
        return items

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                WORKFLOWS,
                name,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch of `status` (None values delete keys); None if the run is gone."""
        body = {"status": status}
        return await self._get(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                RUNS,
                name,
                body,
                _preload_content=False,
                _request_timeout=TIMEOUT,
                _content_type="application/merge-patch+json",
            )
        )

    async def patch_workflow_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        body = {"status": status}
        return await self._get(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                WORKFLOWS,
                name,
                body,
                _preload_content=False,
                _request_timeout=TIMEOUT,
                _content_type="application/merge-patch+json",
            )
        )

    async def create_run(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a WorkflowRun; False if one with that name exists already."""
        try:
            await self._call(
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    RUNS,
                    body,
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # pods
    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            lambda: self.core.read_namespaced_pod(
                name, namespace, _preload_content=False, _request_timeout=TIMEOUT
            )
        )

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        data = await self._get(
            lambda: self.core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        )
        items: list[dict[str, Any]] = (data or {}).get("items") or []
        return items

    async def create_pod(self, namespace: str, body: Any) -> bool:
        """Create a pod; False if it exists already (a retried or repeated start)."""
        try:
            await self._call(
                lambda: self.core.create_namespaced_pod(
                    namespace, body, _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete_pod(self, namespace: str, name: str, grace_seconds: int = 10) -> bool:
        try:
            await self._call(
                lambda: self.core.delete_namespaced_pod(
                    name,
                    namespace,
                    grace_period_seconds=grace_seconds,
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # events
    async def post_event(
        self, involved: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """A core/v1 Event on `involved` ({kind, name, namespace, uid}); failures are logged."""
        now = iso(utcnow())
        namespace = involved["namespace"]
        body: Any = {
            "metadata": {"generateName": f"{involved['name'][:200]}.", "namespace": namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", **involved},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "ratline-operator", "host": self._instance},
            "reportingComponent": "ratline.dev/operator",
            "reportingInstance": self._instance,
        }
        try:
            await self._call(
                lambda: self.core.create_namespaced_event(
                    namespace, body, _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        except Exception as exc:  # events are best effort: never fail a reconcile
            log.debug("could not post event %s on %s: %s", reason, involved.get("name"), exc)
