"""Turns the benchmark's measurements into `bench/results/engine.md`.

Kept apart from the measuring code so the table, the targets and the machine
description can change without touching how anything is timed.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: The goals of issue #3; the report says plainly which ones are met.
TARGETS = {
    "per_step_ms": 0.6,
    "per_step_ratio": 8.0,
    "workflows_per_s": 400.0,
    "workflows_ratio": 8.0,
    "replay_ms": 150.0,
}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    packages = {}
    for name in ("ratline", "asyncpg", "pydantic", "dbos"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs)",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in packages.items()),
        "git": commit or "unknown",
        "load average at start (1/5/15 min)": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.0f} ms"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _samples(values: list[float], unit: str) -> str:
    return ", ".join(f"{v:.3f}" if v < 10 else f"{v:.0f}" for v in values) + f" {unit}"


def results_table(r: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    seq, dseq = r["ratline_sequential"], r["dbos_sequential"]
    fan, dfan = r["ratline_fanout"], r["dbos_fanout"]
    rep = r["ratline_replay"]
    step_ms, dbos_step_ms = seq["median_per_step_ms"], dseq["median_per_step_ms"]
    step_ratio = dbos_step_ms / step_ms
    wfs, dbos_wfs = fan["median_workflows_per_s"], dfan["median_workflows_per_s"]
    wf_ratio = wfs / dbos_wfs
    reps, steps, n, events = cfg["reps"], cfg["steps"], cfg["workflows"], cfg["events"]
    return [
        "| scenario | Ratline | DBOS Transact | Ratline vs DBOS | target | met |",
        "|---|---:|---:|---:|---|---|",
        f"| a) per-step overhead: one workflow of {steps:,} no-op steps "
        f"(median of {reps}) | {_ms(step_ms)} | {_ms(dbos_step_ms)} | "
        f"{step_ratio:.1f}x faster | <= {TARGETS['per_step_ms']} ms and >= "
        f"{TARGETS['per_step_ratio']:.0f}x | "
        f"{_met(step_ms <= TARGETS['per_step_ms'])} / "
        f"{_met(step_ratio >= TARGETS['per_step_ratio'])} |",
        f"| b) {n} three-step workflows started at once, pool {cfg['pool']} "
        f"(median of {cfg['fanout_reps']}) | {wfs:.0f} wf/s | {dbos_wfs:.0f} wf/s | "
        f"{wf_ratio:.1f}x | >= {TARGETS['workflows_per_s']:.0f} wf/s and >= "
        f"{TARGETS['workflows_ratio']:.0f}x | {_met(wfs >= TARGETS['workflows_per_s'])} / "
        f"{_met(wf_ratio >= TARGETS['workflows_ratio'])} |",
        f"| c) replay of {events:,} recorded steps ({rep['events']:,} events) by a fresh "
        f"activation from Postgres (median of {reps}) | {_ms(rep['median_replay_ms'])} | - | - "
        f"| <= {TARGETS['replay_ms']:.0f} ms | "
        f"{_met(rep['median_replay_ms'] <= TARGETS['replay_ms'])} |",
        f"| c) the same replay, history preloaded in memory (engine only) | "
        f"{_ms(rep['median_memory_replay_ms'])} | - | - | - | - |",
        f"| c) loading those events alone (`load_history`) | "
        f"{_ms(rep['median_load_history_ms'])} | - | - | - | - |",
        f"| d) commits per step (scenario a) | {seq['commits_per_step']:.2f} | "
        f"{dseq['commits_per_step']:.2f} | - | - | - |",
        f"| d) rows written per step (scenario a) | {seq['rows_written_per_step']:.2f} | "
        f"{dseq['rows_written_per_step']:.2f} | - | - | - |",
        f"| d) WAL bytes per step (scenario a) | {seq['wal_bytes_per_step']:.0f} | "
        f"{dseq['wal_bytes_per_step']:.0f} | - | - | - |",
        f"| d) CPU of the benchmark process per step (scenario a) | "
        f"{_ms(seq['cpu_ms_per_step'])} | {_ms(dseq['cpu_ms_per_step'])} | - | - | - |",
        f"| d) CPU of the benchmark process per workflow (scenario b) | "
        f"{_ms(fan['cpu_ms_per_workflow'])} | {_ms(dfan['cpu_ms_per_workflow'])} | - | - | - |",
        f"| d) commits per workflow (scenario b) | {fan['commits_per_workflow']:.1f} | "
        f"{dfan['commits_per_workflow']:.1f} | - | - | - |",
        *_async_commit_rows(r),
    ]


def _async_commit_rows(r: dict[str, Any]) -> list[str]:
    """The opt-in `synchronous_commit=off` knob, not the default: shown for comparison."""
    rows = []
    seq = r.get("ratline_sequential_async_commit")
    if seq is not None:
        rows.append(
            "| a') per step with the opt-in `synchronous_commit=off` (not the default; a "
            "Postgres crash may lose the last few hundred ms of checkpoints) | "
            f"{_ms(seq['median_per_step_ms'])} | - | "
            f"{r['dbos_sequential']['median_per_step_ms'] / seq['median_per_step_ms']:.1f}x "
            "faster | - | - |"
        )
    fan = r.get("ratline_fanout_async_commit")
    if fan is not None:
        rows.append(
            "| b') workflows per second with the same opt-in knob | "
            f"{fan['median_workflows_per_s']:.0f} wf/s | - | "
            f"{fan['median_workflows_per_s'] / r['dbos_fanout']['median_workflows_per_s']:.1f}x"
            " | - | - |"
        )
    return rows


def context_table(r: dict[str, Any]) -> list[str]:
    floor = r["floor"]
    server = floor["server"]
    settings = ", ".join(f"{k}={v}" for k, v in server.items() if k != "server_version")
    return [
        "| reference point | value |",
        "|---|---:|",
        "| one durable single-row INSERT commit on this server (asyncpg, no engine) | "
        f"{_ms(floor['commit_ms'])} |",
        "| single-row commits/s from 16 connections at once (asyncpg, no engine) | "
        f"{floor['concurrent_commits_per_s']:.0f} |",
        "| the same with a `pg_notify` in each transaction | "
        f"{floor['concurrent_notify_commits_per_s']:.0f} |",
        "| Ratline per step on the in-memory store (engine + MemoryStore copies, no I/O) | "
        f"{_ms(r['ratline_memory']['median_per_step_ms'])} |",
        f"| Postgres | {server.get('server_version', '?')}: {settings} |",
    ]


def _profile_rows(rows: list[dict[str, Any]], limit: int, only: str | None) -> list[str]:
    picked = [row for row in rows if only is None or only in row["function"]][:limit]
    lines = ["| function | calls | own s | with callees s |", "|---|---:|---:|---:|"]
    for row in picked:
        func = row["function"].replace("|", "\\|")
        lines.append(
            f"| `{func}` | {row['calls']} | {row['tottime_s']:.3f} | {row['cumtime_s']:.3f} |"
        )
    return lines


def profile_section(profile: dict[str, Any]) -> list[str]:
    lines = [
        "## Where Ratline's time goes",
        "",
        "cProfile of one run of each scenario (profiling slows everything down: read the",
        "shares, not the absolute times; coroutine call counts include resumptions).",
    ]
    for name, data in profile.items():
        lines += [
            "",
            f"### {name} ({data['seconds_profiled']:.2f} s under the profiler)",
            "",
            "Most time spent in the function itself:",
            "",
            *_profile_rows(data["by_tottime"], 12, None),
            "",
            "Ratline functions by time including callees:",
            "",
            *_profile_rows(data["by_cumtime"], 14, "ratline/"),
        ]
    return lines


def render(
    r: dict[str, Any], cfg: dict[str, Any], info: dict[str, str], findings: list[str]
) -> str:
    seq, dseq = r["ratline_sequential"], r["dbos_sequential"]
    fan, dfan = r["ratline_fanout"], r["dbos_fanout"]
    rep = r["ratline_replay"]
    lines = [
        "# Ratline engine benchmark",
        "",
        f"Recorded by `python -m bench` (`make bench`) on {info['date']}, git `{info['git']}`.",
        "A private Postgres runs with its durable defaults (fsync and synchronous_commit on),",
        "so every commit below waits for the disk, as it would in production. Ratline and",
        "DBOS Transact use separate databases of the same server, one after the other, each",
        "in a fresh process.",
        "",
        "## Results",
        "",
        *results_table(r, cfg),
        "",
        *context_table(r),
        "",
    ]
    if findings:
        lines += ["## Findings", "", *[f"- {f}" for f in findings], ""]
    lines += [
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Method",
        "",
        f"- a) One workflow calls `ctx.run` on a no-op function {cfg['steps']:,} times; the",
        "  whole activation (lease, history load, every step's commit, the final commit) is",
        "  timed and divided by the step count. DBOS: a `@DBOS.workflow` calling a no-op",
        "  `@DBOS.step` as often, called directly. One warm-up run of 50 steps each.",
        f"- b) {cfg['workflows']} runs of a three-step workflow: Ratline creates the runs",
        "  and activates them all with `asyncio.gather` in one process on a PostgresStore",
        f"  pool of {cfg['pool']}; DBOS starts {cfg['workflows']} `DBOS.start_workflow`",
        f"  handles (system-database pool of {cfg['pool']}) and waits for every result.",
        "  Workflows per second from the first creation to the last result.",
        f"- c) Runs whose history holds {cfg['events']:,} completed steps (written in bulk),",
        "  then a fresh activation that replays every step and completes the run; also the",
        "  engine alone on the preloaded history (`Execution` on a memory store) and the",
        "  `load_history` call alone. One extra run warms up.",
        "- d) `pg_stat_database.xact_commit` of the benchmark's database and",
        "  `pg_current_wal_lsn()` read before the process opens its connections and after it",
        "  closed them (a backend publishes its last statistics when it exits), divided by",
        "  all steps (warm-up included). xact_commit counts read-only transactions too.",
        "",
        "## Raw samples",
        "",
        f"- a) Ratline per step: {_samples(seq['per_step_ms'], 'ms')}",
        f"- a) DBOS per step: {_samples(dseq['per_step_ms'], 'ms')}",
        f"- b) Ratline: {_samples(fan['workflows_per_s'], 'wf/s')}",
        f"- b) DBOS: {_samples(dfan['workflows_per_s'], 'wf/s')}",
        f"- c) replay from Postgres: {_samples(rep['replay_ms'], 'ms')}",
        f"- c) replay from memory: {_samples(rep['memory_replay_ms'], 'ms')}",
        f"- c) load_history: {_samples(rep['load_history_ms'], 'ms')}",
        "",
    ]
    if "ratline_profile" in r:
        lines += profile_section(r["ratline_profile"])
    return "\n".join(lines).rstrip() + "\n"
