"""Pytest fixtures for the real node: a session cluster whose pods are containerd containers.

- `real_cluster` (session): a `ControlPlane(real_node=True)` with the CRDs installed, the
  images from `worker-image/build.sh` imported into its containerd; started once (the
  image import and the node's start cost tens of seconds) and shared by every real-node test.
- `real_postgres` (session): a private Postgres that also listens on the node's host-side
  address, so pods reach it.
- `real_namespace`: a fresh namespace labelled to enforce Pod Security `restricted`.
- `real_db`: a migrated database, as (host DSN, DSN for pods).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s_client

from ratline.store.postgres import PostgresStore
from tests.cluster.binaries import MissingBinaryError
from tests.cluster.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError
from tests.cluster.kube_fixtures import Cluster, wait_for_default_service_account
from tests.cluster.node_net import NodeNetError
from tests.cluster.pg import FAST_UNSAFE_SETTINGS, PostgresServer, private_server

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass(frozen=True)
class RealCluster:
    """The session's real-node cluster: how tests reach it and its node's addresses."""

    cluster: Cluster
    plane: ControlPlane
    host_ip: str  # the host end of the node's veth: pods reach the host here
    containerd_socket: Path


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    state = tmp_path_factory.mktemp("realnode")
    try:
        plane = ControlPlane(state, real_node=True, crds=[REPO_ROOT / "crds"]).start()
    except (MissingBinaryError, ControlPlaneError, NodeNetError) as err:
        pytest.fail(str(err), pytrace=False)
    try:
        assert plane.slot is not None
        yield RealCluster(
            Cluster.from_state(state, plane.node_name),
            plane,
            plane.slot.host_ip,
            plane.slot.run_dir / "containerd.sock",
        )
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def real_postgres(real_cluster: RealCluster) -> Iterator[PostgresServer]:
    settings = {**FAST_UNSAFE_SETTINGS, "listen_addresses": f"127.0.0.1,{real_cluster.host_ip}"}
    with private_server(
        "ratline-pg-node-", settings=settings, client_networks=["172.30.0.0/16"]
    ) as server:
        yield server


@pytest.fixture
def real_namespace(real_cluster: RealCluster) -> Iterator[str]:
    name = f"n-{uuid.uuid4().hex[:12]}"
    with real_cluster.cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        meta = k8s_client.V1ObjectMeta(name=name, labels=RESTRICTED)
        core.create_namespace(k8s_client.V1Namespace(metadata=meta))
        wait_for_default_service_account(core, name)
        try:
            yield name
        finally:
            core.delete_namespace(name, propagation_policy="Background")


async def _migrate(dsn: str) -> None:
    store = await PostgresStore.connect(dsn, max_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture
def real_db(real_postgres: PostgresServer, real_cluster: RealCluster) -> Iterator[tuple[str, str]]:
    """A fresh migrated database: (DSN on loopback, the same database as pods reach it)."""
    name = f"t_{uuid.uuid4().hex}"
    dsn = real_postgres.create_database(name)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _migrate(dsn)).result()
    try:
        yield dsn, dsn.replace("127.0.0.1", real_cluster.host_ip)
    finally:
        real_postgres.drop_database(name)
