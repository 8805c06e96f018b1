"""The process kubelet's list-and-watch loop: it re-lists when the apiserver says the
resourceVersion is gone (410) and otherwise resumes from the last version it saw. The apiserver
side is a scripted stand-in: what is tested is the kubelet's own loop, not Kubernetes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.cluster.kubelet import Api, ProcessKubelet


def pod_event(kind: str, uid: str, rv: str) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"uid": uid, "resourceVersion": rv}}}


class ScriptedApi(Api):
    """Answers lists and watches from scripts, recording the resourceVersions asked for; once
    the watch scripts are used up it stops the kubelet."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]]) -> None:
        self.lists, self.watches = lists, watches
        self.watched_from: list[str] = []
        self.kubelet: ProcessKubelet | None = None
        self.ca_file = Path("/ca.crt")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        patch: str = "strategic-merge",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        assert (method, path) == ("GET", "/api/v1/pods")
        return self.lists.pop(0)

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        self.watched_from.append(query["resourceVersion"])
        if not self.watches:
            assert self.kubelet is not None
            self.kubelet.stopping.set()
            return
        yield from self.watches.pop(0)


def listing(rv: str, *uids: str) -> dict[str, Any]:
    items = [{"metadata": {"uid": uid, "resourceVersion": rv}} for uid in uids]
    return {"metadata": {"resourceVersion": rv}, "items": items}


def run_loop(api: ScriptedApi) -> tuple[list[list[str]], list[str]]:
    """Run the loop over the scripts; returns the uids of each re-list and the events handled."""
    kubelet = ProcessKubelet(api, "n1", Path("/nonexistent"))
    api.kubelet = kubelet
    resyncs: list[list[str]] = []
    handled: list[str] = []

    def resync(pods: list[dict[str, Any]]) -> None:
        resyncs.append([p["metadata"]["uid"] for p in pods])

    def handle(pod: dict[str, Any], deleted: bool) -> None:
        handled.append(("-" if deleted else "+") + pod["metadata"]["uid"])

    kubelet.watch_pods(api, "spec.nodeName=n1", handle, resync)
    return resyncs, handled


def test_a_410_makes_the_kubelet_list_again() -> None:
    expired = {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}
    api = ScriptedApi(
        lists=[listing("10", "a"), listing("20", "a", "b")],
        watches=[[pod_event("MODIFIED", "a", "11"), expired]],
    )
    resyncs, handled = run_loop(api)
    assert resyncs == [["a"], ["a", "b"]]
    assert handled == ["+a"]
    assert api.watched_from == ["10", "20"]


def test_an_ended_watch_resumes_from_the_last_version_seen() -> None:
    api = ScriptedApi(
        lists=[listing("10")],
        watches=[
            [
                pod_event("ADDED", "a", "11"),
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [pod_event("DELETED", "a", "16")],
        ],
    )
    resyncs, handled = run_loop(api)
    assert resyncs == [[]]
    assert handled == ["+a", "-a"]
    assert api.watched_from == ["10", "15", "16"]
