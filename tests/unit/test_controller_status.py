"""Status merge patches: what the single status writer sends (pure part)."""

from __future__ import annotations

from ratline.controller.status import merge_patch


def test_unchanged_status_sends_nothing() -> None:
    status = {"phase": "Running", "lastExit": {"pod": "p-w1", "exitCode": 0}}
    assert merge_patch(status, dict(status)) == {}


def test_nested_key_that_disappeared_is_removed() -> None:
    old = {"lastExit": {"pod": "p-w1", "exitCode": 1, "reason": "Error"}}
    new = {"lastExit": {"pod": "p-w2", "reason": "PodDeleted"}}
    assert merge_patch(old, new) == {
        "lastExit": {"pod": "p-w2", "reason": "PodDeleted", "exitCode": None}
    }


def test_only_owned_top_level_keys_are_deleted() -> None:
    old = {"phase": "Running", "waiting": "signal x", "foreign": 1}
    new = {"phase": "Suspended"}
    patch = merge_patch(old, new, removable={"phase", "waiting"})
    assert patch == {"phase": "Suspended", "waiting": None}


def test_lists_are_replaced_whole() -> None:
    old = {"steps": [{"name": "a"}, {"name": "b"}]}
    new = {"steps": [{"name": "b"}]}
    assert merge_patch(old, new) == {"steps": [{"name": "b"}]}
