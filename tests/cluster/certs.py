"""The local control plane's PKI, made with the `openssl` CLI (no Python crypto dependency).

`controlplane.py` calls `generate_pki` once per state directory: a CA, the
apiserver's serving certificate, client certificates for the admin, the
controller manager, the scheduler (the process kubelet binds pods with it:
NodeRestriction forbids nodes to) and the process kubelet (it carries the
`system:node:<name>` identity the Node authorizer expects), the kubelet's
serving certificate and the apiserver's client certificate for it (used by
`kubectl logs`), and the RSA key pair that signs ServiceAccount tokens.
TLS keys are ECDSA P-256 because they are generated in milliseconds.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The first address of --service-cluster-ip-range=10.0.0.0/24: the `kubernetes` Service.
SERVICE_IP = "10.0.0.1"
APISERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    f"IP:{SERVICE_IP}",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)
_REQ_CONFIG = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"
_DAYS = "3650"


class CertificateError(RuntimeError):
    """openssl failed; the message carries its stderr."""


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file the control plane and the kubelet need, all under one directory."""

    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair  # the process kubelet binds pods under this identity
    kubelet_client: CertPair
    kubelet_serving: CertPair
    apiserver_kubelet_client: CertPair
    kube_proxy: CertPair  # system:kube-proxy (the real node's kube-proxy)
    service_account_key: Path  # RSA private key: signs tokens (controller manager, apiserver)
    service_account_pub: Path  # its public half: verifies tokens (apiserver)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _make_ca(directory: Path) -> CertPair:
    pair = CertPair(directory / "ca.crt", directory / "ca.key")
    config = directory / "ca.cnf"
    config.write_text(
        _REQ_CONFIG + "CN = ratline-local-ca\n[v3]\n"
        "basicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier = hash\n"
    )
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(pair.key),
        "-out", str(pair.cert), "-days", _DAYS, "-config", str(config), "-extensions", "v3",
        cwd=directory,
    )  # fmt: skip
    pair.key.chmod(0o600)
    return pair


@dataclass(frozen=True)
class _Leaf:
    """What one leaf certificate says; `usage` is serverAuth or clientAuth."""

    name: str
    common_name: str
    usage: str
    organization: str | None = None
    sans: tuple[str, ...] = ()


def _make_leaf(directory: Path, ca: CertPair, leaf: _Leaf) -> CertPair:
    """Key + CSR + CA signature."""
    pair = CertPair(directory / f"{leaf.name}.crt", directory / f"{leaf.name}.key")
    csr, config = directory / f"{leaf.name}.csr", directory / f"{leaf.name}.cnf"
    subject = (
        f"O = {leaf.organization}\n" if leaf.organization else ""
    ) + f"CN = {leaf.common_name}\n"
    extensions = (
        "[v3]\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage = {leaf.usage}\n"
        "authorityKeyIdentifier = keyid\n"
    )
    if leaf.sans:
        extensions += f"subjectAltName = {','.join(leaf.sans)}\n"
    config.write_text(_REQ_CONFIG + subject + extensions)
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(pair.key), "-out", str(csr), "-config", str(config),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", "0x" + secrets.token_hex(16), "-days", _DAYS, "-out", str(pair.cert),
        "-extfile", str(config), "-extensions", "v3",
        cwd=directory,
    )  # fmt: skip
    pair.key.chmod(0o600)
    return pair


def _make_service_account_keys(directory: Path) -> tuple[Path, Path]:
    key, pub = directory / "sa.key", directory / "sa.pub"
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key),
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub), cwd=directory)
    return key, pub


def generate_pki(directory: Path, node_name: str, extra_ips: Sequence[str] = ()) -> Pki:
    """Create (or overwrite) the whole PKI in `directory`; leaves run in parallel.

    `extra_ips` are added to the API server's and the kubelet's serving certificates: the
    real node reaches the API server, and the API server its kubelet, on those addresses."""
    directory.mkdir(parents=True, exist_ok=True)
    extra = tuple(f"IP:{ip}" for ip in extra_ips)
    local = ("IP:127.0.0.1", "DNS:localhost", *extra)
    node = f"system:node:{node_name}"
    leaves = (
        _Leaf("apiserver", "kube-apiserver", "serverAuth", sans=(*APISERVER_SANS, *extra)),
        _Leaf("admin", "ratline-admin", "clientAuth", "system:masters"),
        _Leaf("controller-manager", "system:kube-controller-manager", "clientAuth"),
        _Leaf("scheduler", "system:kube-scheduler", "clientAuth"),
        _Leaf("kubelet-client", node, "clientAuth", "system:nodes"),
        _Leaf("kubelet-serving", node, "serverAuth", sans=(*local, f"DNS:{node_name}")),
        _Leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "clientAuth"),
        _Leaf("kube-proxy", "system:kube-proxy", "clientAuth"),
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        sa = pool.submit(_make_service_account_keys, directory)  # RSA: the slow one, start first
        ca = _make_ca(directory)
        futures = {leaf.name: pool.submit(_make_leaf, directory, ca, leaf) for leaf in leaves}
        pairs = {name: future.result() for name, future in futures.items()}
        sa_key, sa_pub = sa.result()
    return Pki(
        ca=ca,
        apiserver=pairs["apiserver"],
        admin=pairs["admin"],
        controller_manager=pairs["controller-manager"],
        scheduler=pairs["scheduler"],
        kubelet_client=pairs["kubelet-client"],
        kubelet_serving=pairs["kubelet-serving"],
        apiserver_kubelet_client=pairs["apiserver-kubelet-client"],
        kube_proxy=pairs["kube-proxy"],
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )
