"""Operator settings from flags and environment."""

from __future__ import annotations

import argparse

import pytest

from ratline.controller.config import Settings, add_arguments, settings_from_args
from ratline.sdk.durations import parse_duration


def parse(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_defaults_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATLINE_DSN", raising=False)
    monkeypatch.delenv("RATLINE_NAMESPACES", raising=False)
    settings = parse("--dsn", "postgresql://db/x", "--namespace", "a", "--namespace", "b")
    assert settings.dsn == "postgresql://db/x"
    assert settings.namespaces == ("a", "b")
    assert not settings.clusterwide
    assert settings.worker_dsn_secret == "ratline-db"
    assert settings.status_interval == 1.0
    assert settings.peering is None
    assert settings.keep_finished_pods


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATLINE_DSN", "postgresql://env/db")
    monkeypatch.setenv("RATLINE_NAMESPACES", "x, y")
    monkeypatch.setenv("RATLINE_WORKER_DSN_SECRET", "creds")
    monkeypatch.setenv("RATLINE_PEERING", "ratline")
    settings = parse()
    assert settings.dsn == "postgresql://env/db"
    assert settings.namespaces == ("x", "y")
    assert settings.worker_dsn_secret == "creds"
    assert settings.peering == "ratline"
    assert parse("--standalone").peering is None
    assert parse("--all-namespaces").clusterwide


def test_missing_dsn_and_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATLINE_DSN", raising=False)
    with pytest.raises(ValueError, match="DSN"):
        parse()
    with pytest.raises(ValueError, match="status-interval"):
        parse("--dsn", "memory://", "--status-interval", "0")


def test_durations_are_the_sdks() -> None:
    """The operator reads maxDuration with the SDK's parser: weeks and decimals too."""
    assert parse_duration("30s").total_seconds() == 30
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("7d").total_seconds() == 7 * 86400
    assert parse_duration("2w").total_seconds() == 14 * 86400
    assert parse_duration("1.5h").total_seconds() == 5400
    assert parse_duration("250ms").total_seconds() == 0.25
    for bad in ("", "10", "5 m", "1x", "m5"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
