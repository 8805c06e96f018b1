"""`ratline history|describe|signal|reject|cancel|retry`: look at and steer WorkflowRuns.

The WorkflowRun (and its uid, the run's key in the store) comes from the
Kubernetes API; history comes from the store. Steering goes through the
Kubernetes API only (merge patches of `spec.signals`, `spec.rejections`,
`spec.cancel`), so the operator stays the one writer of the inbox, except for
`retry`, which seeds a new run's history in the store (see `retry_plan`).
Also usable as `kubectl ratline ...` when `kubectl-ratline` is on PATH.

Exit codes: 0 done, 1 the operation failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ratline.cli import output
from ratline.errors import LeaseHeldError, RatlineError
from ratline.sdk.durations import parse_duration
from ratline.store import Event, EventType, NewEvent, NewRun, RunStatus, Store, open_store

GROUP, VERSION, RUNS, WORKFLOWS = "ratline.dev", "v1alpha1", "workflowruns", "workflows"
MERGE = "application/merge-patch+json"
TIMEOUT = 30
RETRY_OF = "ratline.dev/retry-of"
RETRY_OF_UID = "ratline.dev/retry-of-uid"
RETRY_FROM = "ratline.dev/retry-from-step"
_RUN_LEVEL = {
    EventType.CANCEL_REQUESTED,
    EventType.COMPENSATION_STARTED,
    EventType.RUN_COMPLETED,
    EventType.RUN_FAILED,
    EventType.RUN_CANCELLED,
    EventType.RUN_TIMED_OUT,
    EventType.RUN_BLOCKED,
}
# Labels a retried run must not inherit: the operator's (a parent-uid label would make it a
# child run) and GitOps tools' ownership (Argo CD would prune a run that is not in Git).
_NOT_INHERITED = (
    "ratline.dev/",
    "app.kubernetes.io/instance",
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
)
_STEP_EVENTS = {EventType.STEP_STARTED, EventType.STEP_COMPLETED, EventType.STEP_FAILED}


class CliError(Exception):
    """What went wrong, phrased for the user; the command exits 1."""


# -- wiring ---------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add history, describe, signal, reject, cancel and retry."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the run's namespace (default: the context's)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument(
        "--dsn",
        default=os.environ.get("RATLINE_DSN"),
        help="store DSN (default: $RATLINE_DSN, else the Secret --dsn-secret in the namespace)",
    )
    common.add_argument("--dsn-secret", default="ratline-db", help="Secret holding the DSN")
    common.add_argument("--dsn-key", default="dsn", help="key of the DSN in that Secret")
    common.add_argument("-o", "--output", choices=output.FORMATS, default="table")

    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_, description=help_, parents=[common]
        )
        parser.add_argument("run", metavar="RUN", help="the WorkflowRun's name")
        parser.set_defaults(func=lambda args: _guard(func, args))
        return parser

    add("history", "the run's recorded events, oldest first", cmd_history)
    add("describe", "the run's state and its steps as a timeline", cmd_describe)
    signal = add("signal", "resolve a promise of the run (patches spec.signals)", cmd_signal)
    signal.add_argument("name", metavar="NAME", help="the promise's name")
    signal.add_argument("--data", default="true", help="the payload as JSON (default: true)")
    reject = add("reject", "reject a promise of the run (patches spec.rejections)", cmd_reject)
    reject.add_argument("name", metavar="NAME", help="the promise's name")
    reject.add_argument("--error", required=True, help="the error message the workflow sees")
    add("cancel", "cancel the run; compensations run (sets spec.cancel)", cmd_cancel)
    retry = add("retry", "re-run a failed run from a step, keeping the steps before", cmd_retry)
    retry.add_argument(
        "--from-step", help="first step to run again (default: the step that failed)"
    )
    retry.add_argument("--name", dest="new_name", help="the new run's name (default: RUN-retry-N)")


def _guard(func: Any, args: argparse.Namespace) -> int:
    """Turn the expected failures into one line on stderr and exit code 1."""
    try:
        code: int = func(args, Session(args))
        return code
    except CliError as exc:
        print(f"ratline {args.command}: {exc}", file=sys.stderr)
    except ApiException as exc:
        print(f"ratline {args.command}: Kubernetes API: {_api_message(exc)}", file=sys.stderr)
    except (RatlineError, OSError, ValueError) as exc:
        print(f"ratline {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _api_message(exc: ApiException) -> str:
    try:
        message = str(json.loads(exc.body or "").get("message"))
    except (TypeError, ValueError, AttributeError):
        message = str(exc.reason)
    return f"{exc.status} {message}"


# -- Kubernetes and store access -------------------------------------------------------------------


class Session:
    """One command's clients: the Kubernetes API (lazily) and the namespace it acts in."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._api: client.ApiClient | None = None
        self.namespace: str = args.namespace or self._default_namespace()

    def _default_namespace(self) -> str:
        if _in_cluster(self.args.kubeconfig):
            path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
            try:
                with open(path) as file:
                    return file.read().strip() or "default"
            except OSError:
                return "default"
        try:
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=self.args.kubeconfig
            )
        except config.ConfigException as exc:
            raise CliError(f"no usable kubeconfig: {exc}") from None
        chosen = active
        if self.args.context:
            chosen = next((c for c in contexts if c["name"] == self.args.context), active)
        return str((chosen or {}).get("context", {}).get("namespace") or "default")

    @property
    def api(self) -> client.ApiClient:
        if self._api is None:
            if _in_cluster(self.args.kubeconfig):
                configuration = client.Configuration()
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
                self._api = client.ApiClient(configuration)
            else:
                self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=self.args.kubeconfig, context=self.args.context
                )
        return self._api

    def _custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    def get_run(self, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self._custom().get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, RUNS, name, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                raise CliError(
                    f"workflowrun {name!r} not found in namespace {self.namespace!r}"
                ) from None
            raise
        return obj

    def get_workflow(self, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self._custom().get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKFLOWS, name, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                raise CliError(
                    f"workflow {name!r} not found in namespace {self.namespace!r}"
                ) from None
            raise
        return obj

    def patch_run(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.get_run(name)  # a clear "not found" rather than the API's
        obj: dict[str, Any] = self._custom().patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, RUNS, name, patch,
            _content_type=MERGE, _request_timeout=TIMEOUT,
        )  # fmt: skip
        return obj

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self._custom().create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, RUNS, body, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                name = body["metadata"]["name"]
                raise CliError(f"workflowrun {name!r} exists already; pick --name") from None
            raise
        return obj

    def delete_run(self, name: str) -> None:
        self._custom().delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, RUNS, name, _request_timeout=TIMEOUT
        )

    def run_names(self) -> set[str]:
        listing = self._custom().list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, RUNS, _request_timeout=TIMEOUT
        )
        return {str(item["metadata"]["name"]) for item in listing.get("items") or []}

    def dsn(self) -> str:
        """--dsn / $RATLINE_DSN, else the workers' Secret in the run's namespace."""
        if self.args.dsn:
            return str(self.args.dsn)
        secret_name, key = self.args.dsn_secret, self.args.dsn_key
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(
                secret_name, self.namespace, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            raise CliError(
                f"no store DSN: pass --dsn or set RATLINE_DSN (reading Secret {secret_name!r} "
                f"in {self.namespace!r} failed: {_api_message(exc)})"
            ) from None
        data = secret.data or {}
        if key not in data:
            raise CliError(f"Secret {secret_name!r} in {self.namespace!r} has no key {key!r}")
        return base64.b64decode(data[key]).decode()


def _in_cluster(kubeconfig: str | None) -> bool:
    return bool(
        kubeconfig is None
        and os.environ.get("KUBERNETES_SERVICE_HOST")
        and not os.environ.get("KUBECONFIG")
    )


async def _with_store(dsn: str, work: Any) -> Any:
    store = await open_store(dsn)
    try:
        return await work(store)
    finally:
        await store.close()


def _uid(run: dict[str, Any]) -> str:
    return str(run["metadata"]["uid"])


# -- read commands ---------------------------------------------------------------------------------


def _run_to_read(session: Session, name: str) -> dict[str, Any]:
    """The WorkflowRun, or (once it is gone: TTL, history limit) the store's record of it."""
    try:
        return session.get_run(name)
    except CliError:
        from ratline.cli.list_runs import stored_run  # imports this module

        found = stored_run(session, name)
        if found is None:
            raise
        return found


def cmd_history(args: argparse.Namespace, session: Session) -> int:
    run = _run_to_read(session, args.run)

    async def load(store: Store) -> list[Event]:
        return await store.load_history(_uid(run))

    events: list[Event] = asyncio.run(_with_store(session.dsn(), load))
    if args.output != "table":
        print(output.dump(output.history_data(events), args.output))
    elif not events:
        print(f"no history yet for {args.run} (the operator has not started it)")
    else:
        print(output.table(output.HISTORY_HEADERS, output.history_rows(events)))
    return 0


def cmd_describe(args: argparse.Namespace, session: Session) -> int:
    run = _run_to_read(session, args.run)

    async def load(store: Store) -> tuple[Any, list[Event]]:
        return await store.get_run(_uid(run)), await store.load_history(_uid(run))

    record, events = asyncio.run(_with_store(session.dsn(), load))
    data = output.describe_data(run, record, output.timeline(events))
    print(output.describe_text(data) if args.output == "table" else output.dump(data, args.output))
    return 0


# -- steering commands -------------------------------------------------------------------------


def _report(args: argparse.Namespace, obj: dict[str, Any], what: str) -> int:
    if args.output == "table":
        print(f"workflowrun/{obj['metadata']['name']} {what}")
    else:
        print(output.dump(obj, args.output))
    return 0


def cmd_signal(args: argparse.Namespace, session: Session) -> int:
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc}") from None
    if data is None:
        raise CliError("--data must not be null (a merge patch deletes null keys); use {} or true")
    existing = ((session.get_run(args.run).get("spec") or {}).get("signals") or {}).get(args.name)
    if existing is not None and existing != data:
        raise CliError(
            f"promise {args.name!r} was already signalled with {output.preview(existing)}; "
            "a promise resolves once"
        )
    obj = session.patch_run(args.run, {"spec": {"signals": {args.name: data}}})
    return _report(args, obj, f"signalled ({args.name})")


def cmd_reject(args: argparse.Namespace, session: Session) -> int:
    obj = session.patch_run(args.run, {"spec": {"rejections": {args.name: args.error}}})
    return _report(args, obj, f"rejected ({args.name})")


def cmd_cancel(args: argparse.Namespace, session: Session) -> int:
    obj = session.patch_run(args.run, {"spec": {"cancel": True}})
    return _report(args, obj, "cancel requested")


# -- retry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPlan:
    """What a retried run starts with: the events before `cut` (a command id)."""

    from_step: str
    cut: int
    events: list[NewEvent]
    kept_steps: list[str]


def retry_plan(history: Sequence[Event], status: RunStatus, from_step: str | None) -> RetryPlan:
    """Choose where a retry restarts and which events the new run inherits.

    Commands are numbered in the order the workflow issues them, so the new run
    inherits RunStarted and every event of a command numbered before the first
    command of `from_step` (default: the first step that failed for good).
    Replay then returns the recorded results of those commands and runs the
    rest for real. Run-level events (cancel, compensation, the outcome) are
    left behind. Steps whose compensation already ran cannot be kept: their
    effect was undone.
    """
    if not (status.finished or status is RunStatus.BLOCKED):
        raise CliError(
            f"the run is {status.value}; only finished (failed, cancelled, timed out) or "
            "blocked runs can be retried"
        )
    steps = [e for e in history if e.type in _STEP_EVENTS and e.command_id is not None]
    if from_step is None:
        failed = [
            e for e in steps if e.type is EventType.STEP_FAILED and not e.payload.get("retry_at")
        ]
        if not failed:
            raise CliError(
                "the run has no failed step: name the step to restart at with --from-step"
            )
        from_step = str(failed[0].name)
    starts = [e.command_id for e in steps if e.name == from_step and e.command_id is not None]
    if not starts:
        names = list(dict.fromkeys(str(e.name) for e in steps)) or ["(none)"]
        raise CliError(f"the run has no step {from_step!r}; its steps: {', '.join(names)}")
    cut = min(starts)
    kept = [
        e
        for e in history
        if (e.command_id is None and e.type is EventType.RUN_STARTED)
        or (e.command_id is not None and e.command_id < cut and e.type not in _RUN_LEVEL)
    ]
    kept_steps = list(
        dict.fromkeys(str(e.name) for e in kept if e.type is EventType.STEP_COMPLETED)
    )
    undone = _compensated(history) & set(kept_steps)
    if undone:
        raise CliError(
            f"steps {', '.join(sorted(undone))} were compensated (undone) when the run ended; "
            "restart at or before the first of them with --from-step"
        )
    if not kept or kept[0].type is not EventType.RUN_STARTED:
        raise CliError("the run's history has no RunStarted event; nothing to retry from")
    events = [
        NewEvent(type=e.type, command_id=e.command_id, name=e.name, payload=e.payload) for e in kept
    ]
    return RetryPlan(from_step, cut, events, kept_steps)


def _compensated(history: Sequence[Event]) -> set[str]:
    """Names of steps whose compensation completed."""
    prefix = "compensate:"
    return {
        str(e.name)[len(prefix) :]
        for e in history
        if e.type is EventType.STEP_COMPLETED and str(e.name or "").startswith(prefix)
    }


def retry_manifest(old: dict[str, Any], new_name: str, from_step: str) -> dict[str, Any]:
    """The new WorkflowRun: same workflow, input, priority and budget; lineage in metadata."""
    spec = old.get("spec") or {}
    keep = ("workflowRef", "input", "priority", "maxDuration")
    labels = {
        k: v
        for k, v in (old["metadata"].get("labels") or {}).items()
        if not k.startswith(_NOT_INHERITED)
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkflowRun",
        "metadata": {
            "name": new_name,
            "namespace": old["metadata"]["namespace"],
            "labels": {**labels, RETRY_OF: str(old["metadata"]["name"])[:63].rstrip("-.")},
            "annotations": {RETRY_OF_UID: _uid(old), RETRY_FROM: from_step},
        },
        "spec": {k: spec[k] for k in keep if k in spec},
    }


def _new_name(session: Session, old: str) -> str:
    taken = session.run_names()
    for n in range(1, 1000):
        suffix = f"-retry-{n}"
        candidate = old[: 253 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise CliError(f"{old} was retried 999 times; pick --name")


def cmd_retry(args: argparse.Namespace, session: Session) -> int:
    old = session.get_run(args.run)
    return int(
        asyncio.run(_with_store(session.dsn(), lambda store: _retry(args, session, old, store)))
    )


async def _retry(
    args: argparse.Namespace, session: Session, old: dict[str, Any], store: Store
) -> int:
    record = await store.get_run(_uid(old))
    if record is None:
        raise CliError(f"{args.run} has no record in the store (it never started)")
    plan = retry_plan(await store.load_history(record.id), record.status, args.from_step)
    spec = old.get("spec") or {}
    workflow = session.get_workflow(str((spec.get("workflowRef") or {}).get("name")))
    wf_spec = workflow.get("spec") or {}
    budget = spec.get("maxDuration") or (wf_spec.get("defaults") or {}).get("maxDuration")
    new_name = args.new_name or _new_name(session, args.run)
    new = session.create_run(retry_manifest(old, new_name, plan.from_step))
    uid = _uid(new)
    try:
        # Seed the store before the operator starts a worker: the same row it would
        # write, then the inherited history under a lease, so a worker that starts
        # meanwhile waits (exit 75) instead of running the workflow from the start.
        await store.create_run(
            NewRun(
                id=uid,
                namespace=session.namespace,
                name=new_name,
                workflow=str((spec.get("workflowRef") or {}).get("name")),
                entrypoint=str(wf_spec.get("entrypoint") or ""),
                image=str(wf_spec.get("image") or ""),
                input=spec.get("input"),
                max_duration_s=parse_duration(str(budget)).total_seconds() if budget else None,
            )
        )
        lease = await store.acquire_lease(uid, f"ratline-retry@{socket.gethostname()}", 120.0)
        try:
            if await store.load_history(uid):
                raise CliError("a worker started the new run before its history was copied")
            await store.append(lease, _with_lineage(plan.events, _uid(old), plan.cut))
        finally:
            await store.release_lease(lease)
    except (CliError, LeaseHeldError, RatlineError) as exc:
        session.delete_run(new_name)
        raise CliError(f"{exc}; deleted {new_name}, try again") from None
    if args.output != "table":
        print(output.dump(new, args.output))
        return 0
    kept = ", ".join(plan.kept_steps) or "none"
    print(
        f"workflowrun/{new_name} created: retries {args.run} from step {plan.from_step!r} "
        f"(kept steps: {kept})"
    )
    return 0


def _with_lineage(events: list[NewEvent], old_uid: str, cut: int) -> list[NewEvent]:
    """Mark the inherited RunStarted with where it came from (shown by `history`)."""
    first = events[0]
    payload = {**first.payload, "retry_of": old_uid, "retry_from_command": cut}
    return [first.model_copy(update={"payload": payload}), *events[1:]]
