"""Child processes and loopback ports for the control plane (`controlplane.py`).

Each component runs in its own process group with its output appended to a log file; it can
be told to die with the process that started it (PR_SET_PDEATHSIG), is waited for by polling a
readiness check, and is stopped with SIGTERM to its group, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ControlPlaneError(RuntimeError):
    """A component failed to start; the message has the last error and its log's tail."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now; callers retry if it is taken before they bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def local_open(
    url: str | urllib.request.Request, timeout: float, context: ssl.SSLContext | None = None
) -> Any:
    """urlopen for loopback URLs that never goes through an HTTP(S)_PROXY from the environment."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(url, timeout=timeout)


def tail(path: Path, lines: int = 25) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """preexec hook: the kernel sends `sig` to the child when its parent dies."""

    def hook() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return hook


@dataclass
class Component:
    """A started child: its process, its log, and how long `stop_process` waits after SIGTERM."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    grace: float


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    death_signal: signal.Signals | None = None,
) -> Component:
    """Start `argv` in a new process group, appending its output to `log`; with
    `death_signal` the kernel sends it that signal when the process that started it dies."""
    hook = _die_with_parent(death_signal) if death_signal is not None else None
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=hook,
        )
    return Component(name, proc, log, grace=5.0)


def wait_ready(component: Component, check: Callable[[], None], timeout: float) -> None:
    """Poll `check` (raises while not ready) until it passes, the process dies or time is up."""
    deadline = time.monotonic() + timeout
    last_error = "not checked yet"
    while True:
        code = component.proc.poll()
        if code is not None:
            raise ControlPlaneError(
                f"{component.name} exited with code {code} before it was ready "
                f"(last check: {last_error}); tail of {component.log}:\n{tail(component.log)}"
            )
        try:
            check()
            return
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"{component.name} not ready after {timeout:.0f}s (last error: {last_error}); "
                f"tail of {component.log}:\n{tail(component.log)}"
            )
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, wait `grace` seconds, then SIGKILL it; never raises."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # also stragglers left in the group
    proc.wait()


def pid_alive(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still exists."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid
