"""Run one activation of a stored run: resolve its code, take the lease, replay.

The worker process and the testing runner both call `activate`; it owns the
lease for exactly as long as the activation lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging

from ratline.engine.execution import Execution
from ratline.engine.outcome import Activation
from ratline.engine.parts import ExecutionOptions
from ratline.errors import FencedError, PermanentError, RunNotFoundError
from ratline.sdk.definition import WorkflowSpec, registered_workflow, spec_of
from ratline.store.base import Lease, RunStatus, Store

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
    """Advance `run_id` until it finishes or waits; finished runs are left untouched."""
    run = await store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"run {run_id!r} does not exist in the store")
    if run.status.finished or run.status is RunStatus.BLOCKED:
        return Activation(run.status, result=run.result, error=run.error)
    if spec is None:
        spec = resolve_entrypoint(run.entrypoint or run.workflow)
    lease = await store.acquire_lease(run_id, owner, lease_ttl_s)
    renewer = asyncio.create_task(_keep_lease(store, lease, lease_ttl_s))
    try:
        history = await store.load_history(run_id)
        execution = Execution(store, lease, run, spec, history, options)
        return await execution.activate()
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewer
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
