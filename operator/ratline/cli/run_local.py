"""`ratline run module:attr --input JSON`: run a workflow on this machine, no Kubernetes.

It plays the operator's and the worker's parts in one process: records the
run in a store (in memory by default, or a local Postgres with `--dsn`),
activates it with the engine, prints each event as history grows, sleeps
until durable timers are due and activates again. A run that waits for a
promise cannot be signalled from here, so it stops with a message; with a
Postgres DSN and `--name` the same command resumes it later (the run id is
derived from the name).

A lost Postgres is ridden out: every store call (above all the checkpoint of a
finished step) is retried with backoff for `--store-retry` seconds
(`RATLINE_STORE_RETRY`, default 600) before the command gives up.

Exit codes: 0 succeeded, 1 failed / cancelled / timed out / blocked,
2 usage (bad input JSON, unknown entrypoint, bad DSN), 3 waiting for a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from ratline.cli.output import event_line, preview
from ratline.engine import Activation, ExecutionOptions, activate, resolve_entrypoint
from ratline.engine.activate import EntrypointError
from ratline.engine.codec import to_json
from ratline.errors import RatlineError, StoreError
from ratline.sdk.definition import WorkflowSpec
from ratline.store import DEFAULT_STORE_RETRY_S, NewRun, RunStatus, Store, open_store
from ratline.worker.main import add_store_retry_flag

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WAITING = 0, 1, 2, 3
#: Namespace recorded for local runs, so they never collide with a cluster's.
LOCAL_NAMESPACE = "local"
_ID_NAMESPACE = uuid.UUID("5b1d3c0e-7a52-4f0e-9a43-7261746c696e")  # uuid5 base for --name


def register(subparsers: Any) -> None:
    """Add `ratline run`."""
    parser = subparsers.add_parser(
        "run",
        help="run a workflow locally (memory store or a local Postgres), printing each step",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("entrypoint", help="module:attribute of the workflow (or its name)")
    parser.add_argument("--input", default="null", help="the workflow's input as JSON")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("RATLINE_LOCAL_DSN", "memory://"),
        help="store DSN: memory:// (default) or postgresql://... (RATLINE_LOCAL_DSN)",
    )
    parser.add_argument(
        "--name", default=None, help="run name; with a Postgres DSN the same name resumes the run"
    )
    parser.add_argument(
        "--idle-threshold",
        type=float,
        default=2.0,
        help="seconds: shorter waits stay inside one activation (as in a worker pod)",
    )
    add_store_retry_flag(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        inp = json.loads(args.input)
    except json.JSONDecodeError as exc:
        print(f"ratline run: --input is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.getcwd() not in sys.path:  # like `python -m`: workflows in the current directory import
        sys.path.insert(0, os.getcwd())
    try:
        spec = resolve_entrypoint(args.entrypoint)
    except EntrypointError as exc:
        print(f"ratline run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    local = LocalRun(
        spec=spec,
        entrypoint=args.entrypoint,
        inp=inp,
        dsn=args.dsn,
        name=args.name,
        idle_threshold_s=args.idle_threshold,
        store_retry_s=args.store_retry,
    )
    try:
        return asyncio.run(local.run())
    except (ValueError, RatlineError) as exc:
        print(f"ratline run: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_id_for(name: str | None) -> str:
    """A stable id for a named run (so it can be resumed), else a fresh one."""
    if name:
        return str(uuid.uuid5(_ID_NAMESPACE, f"{LOCAL_NAMESPACE}/{name}"))
    return str(uuid.uuid4())


@dataclass
class LocalRun:
    """One local run driven to its end (or to a promise wait) with progress on `out`."""

    spec: WorkflowSpec
    entrypoint: str
    inp: Any
    dsn: str = "memory://"
    name: str | None = None
    idle_threshold_s: float = 2.0
    store_retry_s: float = DEFAULT_STORE_RETRY_S
    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], Any] = asyncio.sleep
    poll_s: float = 0.2
    printed_seq: int = 0
    activations: list[Activation] = field(default_factory=list)

    async def run(self, store: Store | None = None) -> int:
        """Open the store (unless given), drive the run, close what it opened."""
        own = store is None
        if store is None:
            store = await open_store(self.dsn, retry_s=self.store_retry_s)
        try:
            await store.migrate()
            return await self._drive(store)
        finally:
            if own:
                await store.close()

    async def _drive(self, store: Store) -> int:
        run_id = run_id_for(self.name)
        name = self.name or f"{self.spec.name.lower()}-{run_id[:8]}"
        max_duration = self.spec.max_duration
        record = await store.create_run(
            NewRun(
                id=run_id,
                namespace=LOCAL_NAMESPACE,
                name=name,
                workflow=self.spec.name,
                entrypoint=self.entrypoint,
                input=to_json(self.inp),
                max_duration_s=max_duration.total_seconds() if max_duration else None,
            )
        )
        if record.input != to_json(self.inp):
            self._say(f"run {name} exists with another input; resuming it with the recorded one")
        self._say(f"run {name} ({run_id}) in {self.dsn.split('://', 1)[0]}://")
        owner = f"ratline-run@{socket.gethostname()}:{os.getpid()}"
        while True:
            outcome = await self._activate_once(store, run_id, owner)
            code = self._verdict(outcome)
            if code is not None:
                return code
            assert outcome.wake_at is not None
            delay = (outcome.wake_at - self.clock()).total_seconds()
            self._say(f"sleeping until {outcome.wake_at.isoformat()} ({max(delay, 0):.1f}s)")
            if delay > 0:
                await self.sleep(delay)

    async def _activate_once(self, store: Store, run_id: str, owner: str) -> Activation:
        """One activation, printing history while it runs and once more at the end."""
        options = ExecutionOptions(
            idle_threshold_s=self.idle_threshold_s, attempt=len(self.activations) + 1
        )
        task = asyncio.create_task(
            activate(store, run_id, owner=owner, spec=self.spec, options=options)
        )
        try:
            while not task.done():
                try:
                    await self._print_new(store, run_id)
                except StoreError as exc:  # printing is no reason to stop the activation
                    self._say(f"(cannot show progress: {exc})")
                await asyncio.wait({task}, timeout=self.poll_s)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        outcome = task.result()
        await self._print_new(store, run_id)
        self.activations.append(outcome)
        return outcome

    async def _print_new(self, store: Store, run_id: str) -> None:
        for event in await store.load_history(run_id, after_seq=self.printed_seq):
            self._say(event_line(event))
            self.printed_seq = max(self.printed_seq, event.seq)

    def _verdict(self, outcome: Activation) -> int | None:
        """The exit code when the run stopped for good (or for a promise); None to sleep."""
        status = outcome.status
        if status is RunStatus.SUCCEEDED:
            self._say(f"succeeded: {json.dumps(outcome.result, default=str)}")
            return EXIT_OK
        if status.finished or status is RunStatus.BLOCKED:
            error = outcome.error or {}
            self._say(
                f"{status.value}: {error.get('type', '')}: {preview(error.get('message'), 500)}"
            )
            return EXIT_FAILED
        if outcome.waiting_for:
            deadline = f" (deadline {outcome.wake_at.isoformat()})" if outcome.wake_at else ""
            self._say(
                f"waiting for promise {', '.join(outcome.waiting_for)}{deadline}: a local run "
                "cannot receive signals, stopping here (run it on a cluster to signal it)"
            )
            return EXIT_WAITING
        if outcome.wake_at is None:
            self._say(f"stopped {status.value} with nothing to wait for")
            return EXIT_FAILED
        return None

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)
