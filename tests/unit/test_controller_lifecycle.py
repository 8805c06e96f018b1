"""TTL after finished and retention: the pure parts, the settings and the chart values."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from ratline.controller.config import Settings, add_arguments, settings_from_args
from ratline.controller.retention import Retention
from ratline.controller.ttl import expires_at, ttl_seconds
from tests.unit.test_chart_templates import EXTERNAL, container, merged, render

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(["--dsn", "postgresql://db/x", *argv]))


@pytest.mark.parametrize(
    ("run", "workflow", "expected"),
    [
        ({}, None, None),
        ({}, {"defaults": {"ttlSecondsAfterFinished": 60}}, 60),
        ({"ttlSecondsAfterFinished": 5}, {"defaults": {"ttlSecondsAfterFinished": 60}}, 5),
        ({"ttlSecondsAfterFinished": 0}, None, 0),
        ({"ttlSecondsAfterFinished": -1}, {"defaults": {}}, None),
    ],
)
def test_the_runs_ttl_wins_over_the_workflows(
    run: dict[str, int], workflow: dict[str, dict[str, int]] | None, expected: int | None
) -> None:
    assert ttl_seconds(run, workflow) == expected


def test_expiry_counts_from_finished_at_of_final_runs_only() -> None:
    done = {"phase": "Succeeded", "finishedAt": "2026-12-02T01:00:00Z"}
    assert expires_at(done, 30) == T0 + timedelta(seconds=30)
    assert expires_at(done, None) is None
    assert expires_at({"phase": "Suspended", "finishedAt": "2026-12-02T01:00:00Z"}, 30) is None
    assert expires_at({"phase": "Failed"}, 30) is None  # not projected yet


async def test_a_sweep_prunes_batches_until_one_comes_back_short() -> None:
    calls: list[tuple[datetime, int]] = []
    pauses: list[float] = []
    backlog = [3, 3, 1, 0]

    async def prune(before: datetime, batch: int) -> int:
        calls.append((before, batch))
        return backlog.pop(0)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    retention = Retention(
        prune, timedelta(days=7), batch=3, pause=0.5, clock=lambda: T0, sleep=sleep
    )
    assert await retention.sweep() == 7
    assert calls == [(T0 - timedelta(days=7), 3)] * 3
    assert pauses == [0.5, 0.5]  # between full batches, not after the last one
    assert await retention.sweep() == 0


def test_retention_settings() -> None:
    assert parse().retention is None
    settings = parse("--retention", "30d", "--retention-batch", "100")
    assert settings.retention == 30 * 86400
    assert settings.retention_batch == 100
    for bad in (["--retention", "soon"], ["--retention", "0s"], ["--retention-batch", "0"]):
        with pytest.raises(ValueError, match=r"retention|duration"):
            parse(*bad)


def test_chart_retention_value_becomes_flags() -> None:
    assert not any("--retention" in a for a in container(render(EXTERNAL))["command"])
    values = merged(EXTERNAL, {"operator": {"retention": {"keep": "14d", "batch": 250}}})
    command = container(render(values))["command"]
    assert "--retention=14d" in command
    assert "--retention-batch=250" in command
