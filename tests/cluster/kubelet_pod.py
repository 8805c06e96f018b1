"""One pod on the process kubelet: its containers as local processes, from bind to its end.

`kubelet.py` starts a `PodWorker` thread per pod bound to its node; the worker resolves each
container's env/envFrom/valueFrom, writes a ServiceAccount kubeconfig (a bound TokenRequest
token) when the admission plugin mounted a token and points KUBECONFIG at it, runs init
containers one by one and then the containers (`command` + `args`; `python` is the project's
virtualenv interpreter, the image is only recorded), reports real pod status, restarts per
restartPolicy with a short backoff (0.5 s doubling to 10 s) and honours deletion (SIGTERM,
grace period, SIGKILL, then the final delete). Each container logs to
`<work_dir>/<ns>_<pod>/<container>.log`.

Simplifications: all pods share the host network (podIP = hostIP = 127.0.0.1); volumes other
than the token, security contexts and resources are recorded, not enforced; liveness and
startup probes are not run; readiness probes (httpGet, tcpSocket, exec on 127.0.0.1) are, and
until their first success they are retried every second whatever periodSeconds says. The base
environment is PATH (venv bin first), HOME, LANG, HOSTNAME, PYTHONPATH (the repository root)
and PYTHONUNBUFFERED=1, standing in for the image's own.

This module never imports `kubelet.py` (which runs as `__main__`): what a pod needs of its
node is the `PodHost` protocol.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

log = logging.getLogger("kubelet")

MARKER_ENV = "RATLINE_KUBELET_PODS"  # on every pod process: the work dir, for leak sweeps
HOST_IP = "127.0.0.1"
TERMINAL = ("Succeeded", "Failed")
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['([^']*)'\]")
_VAR_REF = re.compile(r"\$\$|\$\(([^)]*)\)")
Obj = dict[str, Any]


class ConfigError(Exception):
    """The pod's env cannot be resolved yet (CreateContainerConfigError); retried."""


class ApiError(Exception):
    """A non-2xx answer from the apiserver (raised by `kubelet.Api`; defined on this side so
    the pod code, which kubelet.py imports, never imports kubelet.py back)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


class PodApi(Protocol):
    """The apiserver calls a pod makes (`kubelet.Api` provides them)."""

    @property
    def server(self) -> str: ...
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        patch: str = "strategic-merge",
        query: Mapping[str, str] | None = None,
    ) -> Obj: ...


class PodHost(Protocol):
    """What a pod needs of its node (`kubelet.ProcessKubelet` provides it)."""

    @property
    def api(self) -> PodApi: ...
    @property
    def work_dir(self) -> Path: ...
    @property
    def python(self) -> Path: ...
    @property
    def repo_root(self) -> Path: ...
    @property
    def ca_file(self) -> Path: ...
    @property
    def base_env(self) -> Mapping[str, str]: ...
    def worker_done(self, worker: PodWorker) -> None: ...


# -- pure helpers (unit-tested) -----------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes a `$`."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, value)


def field_ref(pod: Obj, path: str) -> str:
    """The downward-API value of `fieldRef.fieldPath`."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": HOST_IP,
        "status.podIPs": HOST_IP,
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_REF.fullmatch(path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resolve_argv(container: Obj, env: Mapping[str, str], python: Path) -> list[str] | None:
    """command + args, expanded; `python*` is the venv interpreter. None: no command given."""
    command = container.get("command") or []
    if not command:
        return None
    argv = [expand(arg, env) for arg in [*command, *(container.get("args") or [])]]
    if _PYTHON.fullmatch(os.path.basename(argv[0])):
        argv[0] = str(python)
    return argv


def pod_phase(
    policy: str, init: list[tuple[bool, int | None]], main: list[tuple[bool, int | None]]
) -> str:
    """Phase from (running, last exit code) per container, as the kubelet computes it."""
    for running, code in init:
        if running or code is None:
            return "Pending"
        if code != 0:
            return "Failed" if policy == "Never" else "Pending"
    if any(running for running, _ in main):
        return "Running"
    if any(code is None for _, code in main):
        return "Pending"
    if all(code == 0 for _, code in main):
        return "Running" if policy == "Always" else "Succeeded"
    return "Failed" if policy == "Never" else "Running"


# -- one pod --------------------------------------------------------------------------------------


class _Container:
    """One container's runtime state; `state`/`last_state` are API ContainerState objects."""

    def __init__(self, spec: Obj, init: bool) -> None:
        self.spec, self.name, self.init = spec, spec["name"], init
        self.proc: subprocess.Popen[bytes] | None = None
        self.container_id = ""  # process://<pid> of the current or last run
        self.exit_code: int | None = None  # of the last run
        self.restarts = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.started = 0.0  # monotonic start of the current run
        self.not_before = 0.0  # monotonic time the next (re)start may happen
        self.backoff = 0.5
        self.ready = False
        self.ever_ready = False
        self.probe_at = 0.0
        self.probe_failures = 0

    @property
    def running(self) -> bool:
        return self.proc is not None

    def status(self, image: str) -> Obj:
        status: Obj = {
            "name": self.name,
            "image": image,
            "imageID": "",
            "ready": self.ready,
            "started": self.running,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


class PodWorker(threading.Thread):
    """Runs one pod from bind to its end (terminal phase, deletion or kubelet shutdown)."""

    def __init__(self, kubelet: PodHost, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet, self.pod, self.uid = kubelet, pod, meta["uid"]
        self.ns, self.pod_name = meta["namespace"], meta["name"]
        self.dir = kubelet.work_dir / f"{self.ns}_{self.pod_name}"
        self.wake = threading.Event()
        self.removed = False  # gone from the API: kill at once, report nothing
        self.shutdown = False  # the kubelet is stopping
        spec = pod["spec"]
        self.init = [_Container(c, True) for c in spec.get("initContainers") or []]
        self.main = [_Container(c, False) for c in spec["containers"]]
        self.policy: str = spec.get("restartPolicy", "Always")
        self.envs: dict[str, dict[str, str]] | None = None
        self.start_time = now_iso()
        # condition type -> (status, lastTransitionTime)
        self.since: dict[str, tuple[str, str]] = {}
        self.sent: Obj | None = None
        self.path = f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}"

    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.wake.set()

    def stop(self, *, removed: bool = False) -> None:
        if removed:
            self.removed = True
        else:
            self.shutdown = True
        self.wake.set()

    def is_running(self, container: str) -> bool:
        return any(c.running for c in [*self.init, *self.main] if c.name == container)

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: worker crashed", self.ns, self.pod_name)
            self._terminate(0.0)
        finally:
            self.kubelet.worker_done(self)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config_error = ""
        while True:
            self.wake.clear()
            pod = self.pod
            deletion = pod["metadata"].get("deletionTimestamp")
            if self.removed or self.shutdown or deletion:
                self._end(pod)
                return
            if self.envs is None:
                try:
                    self.envs = self._prepare(pod)
                    config_error = ""
                except (ConfigError, ApiError) as err:
                    config_error = str(err)
            self._reap()
            if self.envs is not None:
                self._advance(time.monotonic())
            phase, reported = self._report(config_error)
            if phase in TERMINAL and reported:
                return
            if not reported:  # the apiserver must learn it: retry soon
                self.wake.wait(1.0)
            else:
                self.wake.wait(2.0 if config_error else self._next_due())

    # -- configuration --

    def _prepare(self, pod: Obj) -> dict[str, dict[str, str]]:
        """Each container's environment; fetches Secrets/ConfigMaps and the SA token once."""
        kubeconfig = self._service_account_kubeconfig(pod)
        cache: dict[tuple[str, str], dict[str, str]] = {}
        envs = {}
        for c in [*self.init, *self.main]:
            env = dict(self.kubelet.base_env)
            env["HOSTNAME"] = self.pod_name
            if kubeconfig:
                env["KUBECONFIG"] = str(kubeconfig)
            for source in c.spec.get("envFrom") or []:
                env.update(self._env_from(source, cache))
            for var in c.spec.get("env") or []:
                value = self._env_value(pod, c.spec, var, env, cache)
                if value is not None:
                    env[var["name"]] = value
            env["PATH"] = f"{self.kubelet.python.parent}{os.pathsep}{env['PATH']}"
            paths = [str(self.kubelet.repo_root), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            env[MARKER_ENV] = str(self.kubelet.work_dir)
            envs[c.name] = env
        return envs

    def _object_data(
        self, kind: str, name: str, cache: dict[tuple[str, str], dict[str, str]], optional: bool
    ) -> dict[str, str] | None:
        if (kind, name) not in cache:
            resource = "secrets" if kind == "Secret" else "configmaps"
            path = f"/api/v1/namespaces/{self.ns}/{resource}/{name}"
            deadline = time.monotonic() + 5  # the Node authorizer learns the binding a bit later
            while True:
                try:
                    obj = self.kubelet.api.call("GET", path)
                    break
                except ApiError as err:
                    if err.status == 404:
                        if optional:
                            return None
                        raise ConfigError(f'{kind.lower()} "{name}" not found') from None
                    if err.status != 403 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            data: dict[str, str] = dict(obj.get("data") or {})
            if kind == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            cache[(kind, name)] = data
        return cache[(kind, name)]

    def _env_from(
        self, source: Obj, cache: dict[tuple[str, str], dict[str, str]]
    ) -> dict[str, str]:
        kind, ref = (
            ("Secret", source["secretRef"])
            if "secretRef" in source
            else ("ConfigMap", source["configMapRef"])
        )
        data = self._object_data(kind, ref["name"], cache, bool(ref.get("optional")))
        return {source.get("prefix", "") + k: v for k, v in (data or {}).items()}

    def _env_value(
        self,
        pod: Obj,
        container: Obj,
        var: Obj,
        env: Mapping[str, str],
        cache: dict[tuple[str, str], dict[str, str]],
    ) -> str | None:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return field_ref(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            resource = source["resourceFieldRef"]["resource"]  # e.g. limits.cpu; no divisor
            kind, _, name = resource.partition(".")
            return str(container.get("resources", {}).get(kind, {}).get(name, "0"))
        kind, ref = (
            ("Secret", source["secretKeyRef"])
            if "secretKeyRef" in source
            else ("ConfigMap", source["configMapKeyRef"])
        )
        data = self._object_data(kind, ref["name"], cache, bool(ref.get("optional")))
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
        return data[ref["key"]]

    def _service_account_kubeconfig(self, pod: Obj) -> Path | None:
        """A kubeconfig with a pod-bound token when admission mounted a ServiceAccount token
        (it does unless automountServiceAccountToken is false on the pod or its SA)."""
        sources = [
            s["serviceAccountToken"]
            for v in pod["spec"].get("volumes") or []
            for s in (v.get("projected") or {}).get("sources") or []
            if "serviceAccountToken" in s
        ]
        if not sources:
            return None
        sa = pod["spec"].get("serviceAccountName") or "default"
        spec: Obj = {
            "expirationSeconds": sources[0].get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.pod_name,
                "uid": self.uid,
            },
        }
        if sources[0].get("audience"):
            spec["audiences"] = [sources[0]["audience"]]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token"
        deadline = time.monotonic() + 5
        while True:
            try:
                token = self.kubelet.api.call("POST", path, body)["status"]["token"]
                break
            except ApiError as err:
                if err.status != 403 or time.monotonic() > deadline:
                    raise ConfigError(f"token for serviceaccount {sa}: {err}") from None
                time.sleep(0.2)
        sa_dir = self.dir / "serviceaccount"
        sa_dir.mkdir(exist_ok=True)
        ca = self.kubelet.ca_file.read_bytes()
        for name, content in (
            ("token", token.encode()),
            ("ca.crt", ca),
            ("namespace", self.ns.encode()),
        ):
            (sa_dir / name).write_bytes(content)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": sa,
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.kubelet.api.server,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [
                {"name": sa, "context": {"cluster": "local", "user": sa, "namespace": self.ns}}
            ],
        }
        kubeconfig = self.dir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        kubeconfig.chmod(0o600)
        return kubeconfig

    # -- processes --

    def _reap(self) -> None:
        """Record the exit of every container process that ended."""
        for c in [*self.init, *self.main]:
            if c.proc is None or c.proc.poll() is None:
                continue
            rc = c.proc.returncode
            code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)  # what it left behind dies with it
            self._exited(c, code, "Completed" if code == 0 else "Error", "")

    def _exited(self, c: _Container, code: int, reason: str, message: str) -> None:
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "finishedAt": now_iso(),
            "startedAt": c.state.get("running", {}).get("startedAt", now_iso()),
        }
        if message:
            terminated["message"] = message
        if c.container_id:
            terminated["containerID"] = c.container_id
        log.info(
            "pod %s/%s container %s exited %s (%s)", self.ns, self.pod_name, c.name, code, reason
        )
        c.proc, c.exit_code, c.ready, c.ever_ready = None, code, False, False
        restart = (self.policy == "Always" and not c.init) or (code != 0 and self.policy != "Never")
        if not restart:
            c.state = {"terminated": terminated}
            return
        ran = time.monotonic() - c.started
        delay = 0.5 if ran > 10 else c.backoff
        c.backoff = 0.5 if ran > 10 else min(c.backoff * 2, 10.0)
        c.not_before = time.monotonic() + delay
        c.last_state = {"terminated": terminated}
        c.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={c.name}",
            }
        }

    def _start(self, c: _Container) -> None:
        assert self.envs is not None
        env = self.envs[c.name]
        if c.exit_code is not None:
            c.restarts += 1
        c.started = time.monotonic()
        argv = resolve_argv(c.spec, env, self.kubelet.python)
        if argv is None:
            self._exited(
                c,
                128,
                "NoCommand",
                "the process kubelet runs only explicit commands: "
                "set `command` (images are not pulled, their entrypoint is unknown)",
            )
            return
        workdir = c.spec.get("workingDir") or ""
        cwd = Path(workdir) if os.path.isabs(workdir) else self.dir / workdir
        try:
            if not os.path.isabs(workdir):
                cwd.mkdir(parents=True, exist_ok=True)
            with (self.dir / f"{c.name}.log").open("ab") as out:
                c.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as err:
            self._exited(c, 128, "StartError", f"{argv[0]}: {err}")
            return
        c.state = {"running": {"startedAt": now_iso()}}
        c.container_id = f"process://{c.proc.pid}"
        c.probe_at = time.monotonic() + (c.spec.get("readinessProbe") or {}).get(
            "initialDelaySeconds", 0
        )
        log.info(
            "pod %s/%s container %s started pid %d", self.ns, self.pod_name, c.name, c.proc.pid
        )
        threading.Thread(target=self._await_exit, args=(c.proc,), daemon=True).start()

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.wake.set()

    def _startable(self) -> list[_Container]:
        """Containers due to (re)start now or after their backoff: init ones one at a time."""
        for c in self.init:
            if c.exit_code == 0 and not c.running:
                continue
            return [c] if not c.running and "terminated" not in c.state else []
        return [c for c in self.main if not c.running and "terminated" not in c.state]

    def _advance(self, now: float) -> None:
        for c in self._startable():
            if now >= c.not_before:
                self._start(c)
        for c in self.main:
            if c.running:
                self._probe(c, now)

    def _probe(self, c: _Container, now: float) -> None:
        probe = c.spec.get("readinessProbe")
        if not probe:
            c.ready = True
            return
        if now < c.probe_at:
            return
        ok = run_probe(probe, c.spec, self.envs[c.name] if self.envs else {}, self.dir)
        c.probe_failures = 0 if ok else c.probe_failures + 1
        if ok:
            c.ready = c.ever_ready = True
        elif not c.ever_ready or c.probe_failures >= probe.get("failureThreshold", 3):
            c.ready = False
        period = float(probe.get("periodSeconds", 10))
        c.probe_at = now + (period if c.ever_ready else min(period, 1.0))

    def _next_due(self) -> float | None:
        now = time.monotonic()
        due = [c.not_before for c in self._startable()]
        due += [c.probe_at for c in self.main if c.running and c.spec.get("readinessProbe")]
        return max(0.0, min(due) - now) if due else None

    def _end(self, pod: Obj) -> None:
        """Deletion or shutdown: SIGTERM, grace period, SIGKILL; a deleted pod is then removed."""
        if self.removed:
            grace = 0.0
        else:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            grace = float(grace)
            if self.shutdown:
                grace = min(grace, 5.0)
        self._terminate(grace)
        if not (self.removed or self.shutdown):
            options = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid},
            }
            with contextlib.suppress(ApiError):  # 404/409: already gone or replaced
                self.kubelet.api.call("DELETE", self.path, options)

    def _terminate(self, grace: float) -> None:
        procs = [c.proc for c in [*self.init, *self.main] if c.proc is not None]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
            if all(p.poll() is not None for p in procs):
                break
        self._reap()

    # -- status --

    def _report(self, config_error: str) -> tuple[str, bool]:
        """Patch the pod's status if it changed; returns the phase and whether it is reported."""
        containers = [*self.init, *self.main]
        if config_error:
            for c in containers:
                if not c.running and "terminated" not in c.state:
                    c.state = {
                        "waiting": {"reason": "CreateContainerConfigError", "message": config_error}
                    }
        phase = pod_phase(
            self.policy,
            [(c.running, c.exit_code) for c in self.init],
            [(c.running, c.exit_code) for c in self.main],
        )
        ready = all(c.ready for c in self.main) and phase == "Running"
        initialized = all(c.exit_code == 0 and not c.running for c in self.init)
        conditions = [
            self._condition(t, s)
            for t, s in (
                ("PodReadyToStartContainers", True),
                ("Initialized", initialized),
                ("ContainersReady", ready),
                ("Ready", ready),
                ("PodScheduled", True),
            )
        ]
        images = {
            c["name"]: c.get("image", "") for c in self.pod["spec"].get("initContainers") or []
        }
        images.update({c["name"]: c.get("image", "") for c in self.pod["spec"]["containers"]})
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time,
            "containerStatuses": [c.status(images[c.name]) for c in self.main],
        }
        if self.init:
            status["initContainerStatuses"] = [c.status(images[c.name]) for c in self.init]
        if status != self.sent:
            try:
                body = {"metadata": {"uid": self.uid}, "status": status}
                self.kubelet.api.call("PATCH", self.path + "/status", body)
                self.sent = status
            except ApiError as err:
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.pod_name, err)
                return phase, False
        return phase, True

    def _condition(self, kind: str, ok: bool) -> Obj:
        value = "True" if ok else "False"
        if self.since.get(kind, ("", ""))[0] != value:
            self.since[kind] = (value, now_iso())
        return {"type": kind, "status": value, "lastTransitionTime": self.since[kind][1]}


def run_probe(probe: Obj, container: Obj, env: Mapping[str, str], cwd: Path) -> bool:
    """One readiness check against 127.0.0.1 (httpGet, tcpSocket) or as a process (exec)."""
    timeout = float(probe.get("timeoutSeconds", 1))

    def port(value: Any) -> int:
        if isinstance(value, int):
            return value
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        return int(named.get(value, value))

    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            scheme = get.get("scheme", "HTTP").lower()
            url = f"{scheme}://{HOST_IP}:{port(get['port'])}{get.get('path', '/')}"
            context = ssl.create_default_context()
            context.check_hostname = False  # probes accept any serving certificate
            context.verify_mode = ssl.CERT_NONE
            no_proxy = urllib.request.ProxyHandler({})  # 127.0.0.1, whatever HTTP_PROXY says
            opener = urllib.request.build_opener(
                no_proxy, urllib.request.HTTPSHandler(context=context)
            )
            with opener.open(url, timeout=timeout) as resp:
                status: int = resp.status
                return 200 <= status < 400
        if "tcpSocket" in probe:
            with socket.create_connection((HOST_IP, port(probe["tcpSocket"]["port"])), timeout):
                return True
        if "exec" in probe:
            argv = list(probe["exec"].get("command") or [])
            done = subprocess.run(
                argv, env=dict(env), cwd=cwd, capture_output=True, timeout=timeout, check=False
            )
            return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    return True  # grpc and unknown probes: not run, treated as passing
