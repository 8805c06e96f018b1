"""The UI's actions, done exactly as `kubectl ratline` does them, as the user.

Each action calls the CLI's own command function (`ratline.cli.runs.cmd_*`) with a
`Session` whose Kubernetes client carries the user's bearer token, so the same
validation, the same merge patch and the same RBAC apply; nothing here rebuilds a
patch. The command's one-line report (what `kubectl ratline` would print) becomes
the page's notice. Commands are synchronous and print, so they run one at a time in
a worker thread with stdout captured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ratline.cli import runs
from ratline.errors import RatlineError

_ONE_AT_A_TIME = asyncio.Lock()


class ActionError(Exception):
    """The action was refused (bad input, the API said no); the message is for the user."""


class UserSession(runs.Session):
    """`runs.Session` bound to one namespace and an API client that is the user."""

    def __init__(self, namespace: str, api: client.ApiClient, dsn: str | None = None) -> None:
        self.args = _args(namespace, dsn=dsn)
        self._api = api
        self.namespace = namespace


def _args(namespace: str, **fields: Any) -> argparse.Namespace:
    base = {
        "namespace": namespace,
        "kubeconfig": None,
        "context": None,
        "dsn": None,
        "dsn_secret": "ratline-db",
        "dsn_key": "dsn",
        "output": "table",
    }
    return argparse.Namespace(**{**base, **fields})


async def signal(session: UserSession, run: str, promise: str, data: str) -> str:
    """Resolve `promise` with the JSON text `data` (spec.signals)."""
    _name(promise, "promise")
    args = _args(session.namespace, run=run, name=promise, data=data, command="signal")
    return await _call(runs.cmd_signal, args, session)


async def reject(session: UserSession, run: str, promise: str, error: str) -> str:
    _name(promise, "promise")
    if not error.strip():
        raise ActionError("error: say why the promise is rejected")
    args = _args(session.namespace, run=run, name=promise, error=error, command="reject")
    return await _call(runs.cmd_reject, args, session)


async def cancel(session: UserSession, run: str) -> str:
    return await _call(runs.cmd_cancel, _args(session.namespace, run=run), session)


async def retry(session: UserSession, run: str, from_step: str | None) -> str:
    """A new run from `from_step` (default: the failed step), as `kubectl ratline retry`;
    returns the new run's name (read from the command's `-o json` answer, the object)."""
    args = _args(
        session.namespace,
        run=run,
        from_step=from_step or None,
        new_name=None,
        dsn=session.args.dsn,
        command="retry",
        output="json",
    )
    answer = await _call(runs.cmd_retry, args, session)
    try:
        return str(json.loads(answer)["metadata"]["name"])
    except (ValueError, KeyError, TypeError):
        raise ActionError(f"retry answered something unexpected: {answer[:200]}") from None


def _name(value: str, field: str) -> None:
    if not value or len(value) > 253:
        raise ActionError(f"{field}: give a name of 1 to 253 characters")


async def _call(
    command: Callable[[argparse.Namespace, runs.Session], int],
    args: argparse.Namespace,
    session: UserSession,
) -> str:
    async with _ONE_AT_A_TIME:
        return await asyncio.to_thread(_captured, command, args, session)


def _captured(
    command: Callable[[argparse.Namespace, runs.Session], int],
    args: argparse.Namespace,
    session: UserSession,
) -> str:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            command(args, session)
    except runs.CliError as exc:
        raise ActionError(str(exc)) from None
    except ApiException as exc:
        raise ActionError(f"Kubernetes API: {runs._api_message(exc)}") from None
    except (RatlineError, ValueError) as exc:
        raise ActionError(f"{type(exc).__name__}: {exc}") from None
    return out.getvalue().strip()
