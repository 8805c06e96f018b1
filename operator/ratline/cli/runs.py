"""`ratline history|describe|signal|reject|cancel|retry`: look at and steer WorkflowRuns.

The WorkflowRun (and its uid, the run's key in the store) comes from the
Kubernetes API; history comes from the store. Steering goes through the
Kubernetes API only (merge patches of `spec.signals`, `spec.rejections`,
`spec.cancel`), so the operator stays the one writer of the inbox, except for
`retry`, which reads the old run's history to validate, then creates a run with
`spec.retryOf` whose history the operator seeds.
Also usable as `kubectl ratline ...` when `kubectl-ratline` is on PATH.

Exit codes: 0 done, 1 the operation failed (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ratline.cli import output
from ratline.controller.kube import in_cluster, load_api_client
from ratline.controller.retry import RetryRefused, retry_plan
from ratline.errors import RatlineError
from ratline.protocol import GROUP as GROUP  # re-exported: the UI builds on the CLI
from ratline.protocol import RUNS as RUNS
from ratline.protocol import VERSION as VERSION
from ratline.protocol import WORKFLOWS as WORKFLOWS
from ratline.store import Event, Store, open_store

MERGE = "application/merge-patch+json"
TIMEOUT = 30
RETRY_OF = "ratline.dev/retry-of"
RETRY_OF_UID = "ratline.dev/retry-of-uid"
RETRY_FROM = "ratline.dev/retry-from-step"
# Labels a retried run must not inherit: the operator's (a parent-uid label would make it a
# child run) and GitOps tools' ownership (Argo CD would prune a run that is not in Git).
_NOT_INHERITED = (
    "ratline.dev/",
    "app.kubernetes.io/instance",
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
)


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
        if in_cluster(self.args.kubeconfig):
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
            self._api = load_api_client(self.args.kubeconfig, self.args.context)
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


def retry_manifest(old: dict[str, Any], new_name: str, from_step: str) -> dict[str, Any]:
    """The new WorkflowRun: same workflow, input, priority and budget, `spec.retryOf`
    naming the run and step to restart at; lineage also in metadata for selectors."""
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
        "spec": {
            **{k: spec[k] for k in keep if k in spec},
            "retryOf": {"uid": _uid(old), "fromStep": from_step},
        },
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
    """Validate against the store (read only), then create the WorkflowRun with
    `spec.retryOf`: the operator creates the new run's row and seeds its history."""
    record = await store.get_run(_uid(old))
    if record is None:
        raise CliError(f"{args.run} has no record in the store (it never started)")
    try:
        plan = retry_plan(await store.load_history(record.id), record.status, args.from_step)
    except RetryRefused as exc:
        raise CliError(str(exc)) from None
    new_name = args.new_name or _new_name(session, args.run)
    new = session.create_run(retry_manifest(old, new_name, plan.from_step))
    if args.output != "table":
        print(output.dump(new, args.output))
        return 0
    kept = ", ".join(plan.kept_steps) or "none"
    print(
        f"workflowrun/{new_name} created: retries {args.run} from step {plan.from_step!r} "
        f"(kept steps: {kept})"
    )
    return 0
