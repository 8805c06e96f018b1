"""Where the control plane's Go binaries live, and a clear error when one is missing.

`tests/cluster/build.sh` builds kube-apiserver, kube-controller-manager,
kubectl, etcd and helm into `~/.cache/ratline/<tool>-<version>/bin`. The
versions and the cache root are read from that script (and the same
environment overrides it honours), so the script stays the one source of
truth and no Go toolchain is needed just to locate the binaries. Used by
`controlplane.py` and the pytest fixtures.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build.sh")

# tool -> (version variable in build.sh, binaries it provides)
_TOOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kubernetes": (
        "K8S_VERSION",
        (
            "kube-apiserver",
            "kube-controller-manager",
            "kubectl",
            "kubelet",
            "kube-proxy",
            "kube-scheduler",
        ),
    ),
    "etcd": ("ETCD_VERSION", ("etcd",)),
    "helm": ("HELM_VERSION", ("helm",)),
}


class MissingBinaryError(RuntimeError):
    """A control-plane binary is not built yet; the message says how to build it."""


@dataclass(frozen=True)
class BinDirs:
    """The three cache directories build.sh fills."""

    kube: Path
    etcd: Path
    helm: Path

    def path(self, binary: str) -> Path:
        """The binary's path, or MissingBinaryError naming the fix."""
        for tool, (_, names) in _TOOLS.items():
            if binary in names:
                candidate: Path = getattr(self, "kube" if tool == "kubernetes" else tool) / binary
                if not os.access(candidate, os.X_OK):
                    raise MissingBinaryError(missing_binary_message(binary, candidate))
                return candidate
        raise ValueError(f"unknown control-plane binary {binary!r}")


def missing_binary_message(binary: str, expected: Path) -> str:
    """One line that names the binary, where it was looked for and the command that builds it."""
    return f"{binary} not found at {expected}: run `make binaries` (builds it from its Go module)"


def _default_version(script: str, variable: str) -> str:
    match = re.search(rf'^{variable}="\$\{{(\w+):-([^}}]+)\}}"', script, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"cannot read {variable} from {BUILD_SCRIPT}")
    return os.environ.get(match.group(1)) or match.group(2)


def bin_dirs(build_script: Path = BUILD_SCRIPT) -> BinDirs:
    """Compute the bin dirs exactly as `build.sh paths` does (same env overrides)."""
    script = build_script.read_text()
    cache = Path(os.environ.get("RATLINE_CACHE") or Path.home() / ".cache" / "ratline")
    dirs = {
        tool: cache / f"{tool}-{_default_version(script, variable)}" / "bin"
        for tool, (variable, _) in _TOOLS.items()
    }
    return BinDirs(kube=dirs["kubernetes"], etcd=dirs["etcd"], helm=dirs["helm"])


def require(*binaries: str) -> dict[str, Path]:
    """Resolve each binary or fail with one clear line (the first missing one)."""
    dirs = bin_dirs()
    return {name: dirs.path(name) for name in binaries}
