"""`make demo` / `make down`: a local Ratline installation with an example run.

`up` starts the local control plane on the real node (containerd, kubelet,
kube-proxy, kube-scheduler; the images built by `worker-image/build.sh`), a
private Postgres the pods reach, installs the Helm chart (the operator runs
from its image, Pod Security `restricted` enforced in the namespace), applies
the `hello` example (its worker runs from the examples image) and prints
`kubectl get workflowruns` as the run progresses until it succeeds. Everything
stays up (with a kubeconfig to poke at) until `down`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.binaries import MissingBinaryError, bin_dirs

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello"
CHART = REPO / "charts" / "ratline"
NAMESPACE = "default"
RUN_NAME = "hello-world"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def _python(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DemoError(f"`python {' '.join(args)}` failed:\n{done.stderr.strip()}")
    return done.stdout


class Demo:
    def __init__(self, state: Path) -> None:
        self.state = state.resolve()
        self.cluster = self.state / "cluster"
        self.pg = self.state / "pg"
        self.kubeconfig = self.cluster / "kubeconfig"
        self.operator_pid = self.state / "operator.pid"  # demos before the real node

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def kubectl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [str(bin_dirs().path("kubectl")), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def up(self, timeout_s: float) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        step(
            "building the images (worker-image/build.sh, cached) and starting the control plane "
            "with a real node (etcd, kube-apiserver, controller-manager, scheduler, containerd, "
            "kubelet, kube-proxy)"
        )
        _python(
            "-m", "tests.cluster.controlplane", "up", "--real-node", "--state", str(self.cluster)
        )
        host_ip = json.loads((self.cluster / "ready").read_text())["host_ip"]
        step(f"starting a private Postgres (also on {host_ip}, where pods reach the host)")
        self.pg.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)  # the postgres OS user must reach its data dir
        dsn = _python(
            "-m", "tests.cluster.pg", "up", "--state", str(self.pg),
            "--listen", f"127.0.0.1,{host_ip}", "--client-network", "172.30.0.0/16",
        ).strip()  # fmt: skip
        pod_dsn = dsn.replace("127.0.0.1", host_ip)
        step(f"namespace {NAMESPACE}: Pod Security `restricted`, the database Secret")
        self.kubectl(
            "label", "--overwrite", "namespace", NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
        )  # fmt: skip
        self.kubectl("delete", "secret", "ratline-db", "--ignore-not-found")
        self.kubectl("create", "secret", "generic", "ratline-db", f"--from-literal=dsn={pod_dsn}")
        step("helm install ratline charts/ratline (the operator from ghcr.io/ratline/operator)")
        self.helm(
            "upgrade", "--install", "ratline", str(CHART), "-n", NAMESPACE,
            "--set", "database.existingSecret=ratline-db",
            "--wait", "--timeout", "300s",
        )  # fmt: skip
        step("applying examples/hello (Workflow + WorkflowRun; the worker from the examples image)")
        self.kubectl("delete", "workflowrun", RUN_NAME, "--ignore-not-found", "--wait=true")
        self.kubectl("apply", "-f", str(EXAMPLE / "workflow.yaml"), "-f", str(EXAMPLE / "run.yaml"))
        self._watch(timeout_s)
        result = self.kubectl("get", "workflowrun", RUN_NAME, "-o", "jsonpath={.status.result}")
        print(f"\nresult: {result}\n")
        print(f"export KUBECONFIG={self.kubeconfig}")
        print("kubectl get workflowruns       # try the other examples in examples/")
        print("make down                      # stops everything")

    def helm(self, *args: str) -> str:
        done = subprocess.run(
            [str(bin_dirs().path("helm")), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            raise DemoError(f"helm {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def _watch(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            table = self.kubectl("get", "workflowruns", check=False)
            if table and table != last:
                print(table.rstrip(), flush=True)
                last = table
            phase = self.kubectl(
                "get", "workflowrun", RUN_NAME, "-o", "jsonpath={.status.phase}", check=False
            )
            if phase in ("Succeeded", "Failed", "Cancelled", "TimedOut"):
                final = self.kubectl("get", "workflowruns", check=False)
                if final and final != last:  # the last table shows the final row
                    print(final.rstrip(), flush=True)
                if phase == "Succeeded":
                    return
                raise DemoError(f"the example run ended {phase}; see `kubectl logs deploy/ratline`")
            time.sleep(0.5)
        raise DemoError(
            f"the example run did not finish in {timeout_s:g}s; see `kubectl logs deploy/ratline`"
        )

    def _stop_operator(self) -> None:
        if not self.operator_pid.exists():
            return
        pid = int(self.operator_pid.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.operator_pid.unlink(missing_ok=True)

    def down(self) -> None:
        self._stop_operator()
        if self.pg.exists():
            _python("-m", "tests.cluster.pg", "down", "--state", str(self.pg))
        if self.cluster.exists():
            _python("-m", "tests.cluster.controlplane", "down", "--state", str(self.cluster))
        step("stopped")


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.demo")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state", default=".ratline/demo", type=Path)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    demo = Demo(args.state)
    try:
        if args.command == "up":
            demo.up(args.timeout)
        else:
            demo.down()
    except (DemoError, MissingBinaryError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
