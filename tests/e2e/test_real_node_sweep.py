"""A real node that died leaves state the next one sweeps; a stopped one leaves nothing.

On the host itself (root), without a control plane: a slot is taken (network namespace,
veth, cgroups), given what a killed node leaves behind (a process in its cgroup, a mount
and files under its dirs), then its holder "dies" (the lock is dropped without a sweep).
The next `acquire` of that slot must clear all of it; `release` must leave nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import node_net

pytestmark = pytest.mark.e2e


def netns_exists(name: str) -> bool:
    return (node_net.NETNS_DIR / name).exists()


def mounted(path: Path) -> bool:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return str(path) in points


def test_stale_slot_is_swept_and_release_leaves_nothing() -> None:
    slot = node_net.acquire()
    memory_group = node_net.CGROUP_FS / "memory" / slot.cgroup
    assert netns_exists(slot.netns)
    assert memory_group.is_dir()
    # The node's end reaches the host's end of the veth (where the API server listens).
    with socket.create_server((slot.host_ip, 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(({slot.host_ip!r}, {port}), 5)"
        inside = ["ip", "netns", "exec", slot.netns, sys.executable, "-c", code]
        subprocess.run(inside, check=True, timeout=30)

    # What a SIGKILLed node leaves: a container process, a mount, files.
    stray = subprocess.Popen(["sleep", "600"])
    child_group = memory_group / "kubepods" / "pod-x"
    child_group.mkdir(parents=True)
    (child_group / "cgroup.procs").write_text(str(stray.pid))
    mount_point = slot.var_dir / "kubelet" / "pods" / "x" / "volumes" / "tmp"
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
    (mount_point / "secret").write_text("x")
    os.close(slot.lock_fd)  # the holder dies: lock gone, nothing cleaned

    again = node_net.acquire()
    try:
        assert again.index == slot.index
        assert stray.wait(timeout=30) == -9  # killed by the sweep
        assert not mounted(mount_point)
        assert not mount_point.exists()
        assert not child_group.exists()
        assert netns_exists(again.netns)  # rebuilt fresh for the new holder
    finally:
        node_net.release(again)

    assert not netns_exists(again.netns)
    assert not memory_group.exists()
    assert not again.var_dir.exists()
    assert not again.run_dir.exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f" {again.host_veth}@" not in links.stdout
