"""`ratline schedule trigger NAME`: fire a WorkflowSchedule once, now.

Creates the run a firing would create (`schedules.run_body`, so labels, input
template, owner and TTL are the schedule's) under the manual name
`NAME-m<unix seconds>`, whatever the cron string, `suspend` or the concurrency
policy say, as `kubectl create job --from=cronjob/...` does for a CronJob.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from ratline.cli.runs import TIMEOUT, CliError, Session, _guard
from ratline.controller.lifecycle_api import GROUP, RUNS, SCHEDULES, VERSION
from ratline.controller.schedules import run_body
from ratline.controller.units import utcnow


def register(subparsers: Any) -> None:
    """Add `schedule trigger`."""
    schedule = subparsers.add_parser("schedule", help="act on WorkflowSchedules")
    verbs = schedule.add_subparsers(dest="verb", metavar="VERB", required=True)
    trigger = verbs.add_parser(
        "trigger", help="create one run of the schedule now", description=__doc__
    )
    trigger.add_argument("schedule", metavar="NAME", help="the WorkflowSchedule's name")
    trigger.add_argument("-n", "--namespace", help="the schedule's namespace")
    trigger.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    trigger.add_argument("--context", help="kubeconfig context (default: the current one)")
    trigger.set_defaults(func=lambda args: _guard(cmd_trigger, args))


def cmd_trigger(args: argparse.Namespace, session: Session) -> int:
    custom: Any = CustomObjectsApi(session.api)
    try:
        schedule: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, session.namespace, SCHEDULES, args.schedule, _request_timeout=TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            raise CliError(
                f"workflowschedule {args.schedule!r} not found in namespace {session.namespace!r}"
            ) from None
        raise
    body = run_body(schedule, utcnow(), manual=_who())
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, session.namespace, RUNS, body, _request_timeout=TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 409:
            raise CliError(f"{body['metadata']['name']} exists already; try again") from None
        raise
    print(f"workflowrun/{body['metadata']['name']} created")
    return 0


def _who() -> str:
    try:
        return f"ratline-cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "ratline-cli"
