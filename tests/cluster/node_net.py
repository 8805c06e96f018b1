"""The real node's private corner of the host: a slot, a network namespace, cgroups, dirs.

Each real node (`node.py`) holds one slot `i` (0..31) for its lifetime through an flock
on `/run/ratline-node/slot-<i>.lock`, so several clusters run side by side and a slot whose
holder died is known to be stale. The slot names everything the node owns:

- the network namespace `ratline-n<i>`, joined to the host by a veth pair: the host end
  is `172.30.<i>.1/30` (the API server and the test Postgres are reached there), the node
  end `172.30.<i>.2/30` (the node's InternalIP; the kubelet listens there). containerd,
  the kubelet and kube-proxy run inside it, so the pod bridge, kube-proxy's iptables
  chains and the pods' routes never touch the host's tables or another cluster's;
- the cgroup `/ratline-n<i>` in every cgroup hierarchy (the kubelet's cgroup root);
- `/var/lib/ratline-node/<i>` and `/run/ratline-node/<i>` (containerd's root and state,
  the kubelet's root, pod logs, CNI's IP allocations).

`release` (on stop) and `acquire` (when the previous holder was killed) sweep all of it:
processes in the cgroups and the containerd shims, mounts under the dirs, the dirs,
the cgroups, the namespace and orphaned pod namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR = Path("/run/ratline-node")
VAR_DIR = Path("/var/lib/ratline-node")
CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
SLOTS = 32
POD_CIDR = "10.244.0.0/24"  # inside the node's namespace, so every cluster can use it


class NodeNetError(RuntimeError):
    """The host could not give the node what it needs; the message names the command."""


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A host command; with `check`, a failure raises with its stderr."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise NodeNetError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")
    return done


@dataclass
class Slot:
    """One node's names and addresses, and the lock that makes them its own."""

    index: int
    lock_fd: int

    @property
    def netns(self) -> str:
        return f"ratline-n{self.index}"

    @property
    def host_ip(self) -> str:
        return f"172.30.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"172.30.{self.index}.2"

    @property
    def host_veth(self) -> str:
        return f"rlh{self.index}"

    @property
    def cgroup(self) -> str:
        return f"ratline-n{self.index}"

    @property
    def var_dir(self) -> Path:
        return VAR_DIR / str(self.index)

    @property
    def run_dir(self) -> Path:
        return LOCK_DIR / str(self.index)

    def nsenter(self) -> list[str]:
        """argv prefix that runs a command in the node's network namespace (only)."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--"]


def acquire() -> Slot:
    """Take the first free slot, sweep what a dead previous holder left, build its network."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for index in range(SLOTS):
        fd = os.open(LOCK_DIR / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.set_inheritable(fd, False)
        slot = Slot(index, fd)
        try:
            sweep(slot)
            _make_network(slot)
            _make_cgroups(slot)
        except BaseException:
            release(slot)
            raise
        return slot
    raise NodeNetError(f"all {SLOTS} real-node slots are taken (see {LOCK_DIR})")


def release(slot: Slot) -> None:
    """Remove everything the slot's node made, then give the slot back."""
    try:
        sweep(slot)
    finally:
        with contextlib.suppress(OSError):
            os.close(slot.lock_fd)


# -- setup ----------------------------------------------------------------------------------


def _make_network(slot: Slot) -> None:
    ns, node_veth = slot.netns, f"rln{slot.index}"
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", slot.host_veth, "type", "veth", "peer", "name", node_veth)
    run("ip", "link", "set", node_veth, "netns", ns)
    run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_veth)
    run("ip", "link", "set", slot.host_veth, "up")
    inside = ["ip", "netns", "exec", ns]
    run(*inside, "ip", "addr", "add", f"{slot.node_ip}/30", "dev", node_veth)
    run(*inside, "ip", "link", "set", node_veth, "up")
    run(*inside, "ip", "link", "set", "lo", "up")
    run(*inside, "ip", "route", "add", "default", "via", slot.host_ip)
    # Per-namespace settings: the bridge's traffic goes through kube-proxy's rules.
    for key in (
        "net.ipv4.ip_forward",
        "net.bridge.bridge-nf-call-iptables",
        "net.ipv4.conf.all.route_localnet",
    ):
        run(*inside, "sysctl", "-q", "-w", f"{key}=1", check=False)


def _hierarchies() -> list[Path]:
    """Every mounted cgroup v1 hierarchy (and the v2 root on a unified host)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [p for p in sorted(CGROUP_FS.iterdir()) if p.is_dir() and p.name != "unified"]


def _make_cgroups(slot: Slot) -> None:
    for hierarchy in _hierarchies():
        group = hierarchy / slot.cgroup
        group.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # empty cpusets accept no task
            if (group / name).exists() and not (group / name).read_text().strip():
                (group / name).write_text((hierarchy / name).read_text())


# -- sweep ----------------------------------------------------------------------------------


def _cgroup_dirs(slot: Slot) -> list[Path]:
    """The slot's cgroup dirs, deepest first."""
    found: list[Path] = []
    for hierarchy in _hierarchies():
        top = hierarchy / slot.cgroup
        if top.is_dir():
            found.extend(Path(p) for p, _, _ in os.walk(top))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for group in dirs:
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (group / "cgroup.procs").read_text().split())
    return pids


def _shim_pids(slot: Slot) -> set[int]:
    """containerd and its shims for this slot (they name its socket on their command line)."""
    marker = f"{slot.run_dir}/".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
    pids.discard(os.getpid())
    return pids


def _kill_all(slot: Slot) -> None:
    dirs = _cgroup_dirs(slot)
    for _ in range(50):
        pids = _pids_in(dirs) | _shim_pids(slot)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _unmount_under(*roots: Path) -> None:
    prefixes = tuple(str(r) + "/" for r in roots)
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes) or point in {str(r) for r in roots}:
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        run("umount", "-l", point, check=False)


def _orphan_pod_netns() -> None:
    """containerd's pod namespaces (`cni-*`) that no process uses any more."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.glob("cni-*"):
        if not run("ip", "netns", "pids", entry.name, check=False).stdout.strip():
            run("ip", "netns", "delete", entry.name, check=False)


def sweep(slot: Slot) -> None:
    """Kill, unmount, remove: leaves the host as if the slot's node had never run."""
    _kill_all(slot)
    _unmount_under(slot.var_dir, slot.run_dir)
    for group in _cgroup_dirs(slot):
        with contextlib.suppress(OSError):
            group.rmdir()
    for directory in (slot.var_dir, slot.run_dir):
        # Gigabytes of unpacked image layers: slow on a busy disk.
        run("rm", "-rf", "--one-file-system", str(directory), check=False, timeout=900)
    if (NETNS_DIR / slot.netns).exists():
        run("ip", "netns", "delete", slot.netns, check=False)
    run("ip", "link", "delete", slot.host_veth, check=False)
    _orphan_pod_netns()
