"""Run one activation of a stored run: resolve its code, take the lease, replay.

The worker process and the testing runner both call `activate`; it owns the
lease for exactly as long as the activation lasts. One `Store.begin` call takes
the lease and loads the run, its history and its inbox; a finished run gives the
lease back in its last append, so a short run costs no extra round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging

from ratline.engine.execution import Execution
from ratline.engine.outcome import Activation
from ratline.engine.parts import Abort, ExecutionOptions
from ratline.errors import FencedError, PermanentError, StoreError
from ratline.sdk.definition import WorkflowSpec, registered_workflow, spec_of
from ratline.store.base import Lease, Store

log = logging.getLogger(__name__)


class EntrypointError(PermanentError):
    """The entrypoint cannot be imported or does not name a workflow."""


def resolve_entrypoint(entrypoint: str) -> WorkflowSpec:
    """`module:attribute` (imported) or the name of an already registered workflow."""
    if ":" not in entrypoint:
        found = registered_workflow(entrypoint)
        if found is None:
            raise EntrypointError(
                f"entrypoint {entrypoint!r} is not `module:attribute` and no workflow is "
                "registered under that name"
            )
        return found
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointError(
            f"entrypoint {entrypoint!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise EntrypointError(f"entrypoint {entrypoint!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    try:
        return spec_of(target)
    except TypeError as exc:
        raise EntrypointError(f"entrypoint {entrypoint!r}: {exc}") from exc


async def activate(
    store: Store,
    run_id: str,
    *,
    owner: str,
    spec: WorkflowSpec | None = None,
    options: ExecutionOptions | None = None,
    lease_ttl_s: float = 30.0,
) -> Activation:
    """Advance `run_id` until it finishes or waits; finished runs are left untouched.

    `RunNotFoundError` when the store has no such run, `LeaseHeldError` when another
    live worker has it, `EntrypointError` when its code cannot be found.
    """
    begun = await store.begin(run_id, owner, lease_ttl_s)
    run, lease = begun.run, begun.lease
    if lease is None:  # finished or blocked: nothing to do, and no lease was taken
        return Activation(run.status, result=run.result, error=run.error)
    renewer: asyncio.Task[None] | None = None
    execution: Execution | None = None
    store_gave_up = False
    try:
        if spec is None:
            spec = resolve_entrypoint(run.entrypoint or run.workflow)
        renewer = asyncio.create_task(_keep_lease(store, lease, lease_ttl_s))
        execution = Execution(store, lease, run, spec, begun.history, options, begun.inbox)
        try:
            return await execution.activate()
        except Abort as exc:  # a commit outside the body failed: fenced, or the store gave up
            raise exc.cause from None
    except StoreError as exc:
        # The store failed (typically: out of its retry budget). Releasing would wait out
        # a second budget; the lease expires by itself.
        store_gave_up = type(exc) is StoreError
        raise
    finally:
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewer
        if not store_gave_up and (execution is None or not execution.released):
            with contextlib.suppress(Exception):
                await store.release_lease(lease)


async def _keep_lease(store: Store, lease: Lease, ttl_s: float) -> None:
    """Renew well before expiry; a fenced renewal means someone newer took over."""
    while True:
        await asyncio.sleep(ttl_s / 3)
        try:
            lease = await store.renew_lease(lease, ttl_s)
        except FencedError:
            log.warning("lost the lease of run %s to a newer worker", lease.run_id)
            return
        except Exception as exc:  # transient: the next append will tell for sure
            log.warning("renewing the lease of run %s failed: %s", lease.run_id, exc)
