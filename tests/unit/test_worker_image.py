"""The worker and operator images, checked without Docker: what their Dockerfiles
promise (base, user, entrypoint, build context) holds in this repository."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "worker-image"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with comments dropped and continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def project_version() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    version: str = data["project"]["version"]
    return version


@pytest.mark.parametrize(
    ("dockerfile", "module"),
    [("Dockerfile", "ratline.worker"), ("operator.Dockerfile", "ratline.controller")],
)
def test_image_runs_non_root_on_python_311_slim(dockerfile: str, module: str) -> None:
    path = IMAGES / dockerfile
    steps = instructions(path)
    build_args = [arg for op, arg in steps if op == "ARG"]
    assert build_args == ["PYTHON_IMAGE=python:3.11-slim"]
    stage = final_stage(path)
    assert stage[0] == ("FROM", "${PYTHON_IMAGE}")
    users = [arg for op, arg in stage if op == "USER"]
    assert users == ["65532:65532"]
    (entrypoint,) = [arg for op, arg in stage if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", module]
    labels = " ".join(arg for op, arg in stage if op == "LABEL")
    assert f'org.opencontainers.image.version="{project_version()}"' in labels


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "operator.Dockerfile"])
def test_build_context_holds_what_the_dockerfile_copies(dockerfile: str) -> None:
    """Every COPY source exists in the repo and survives the file's .dockerignore."""
    path = IMAGES / dockerfile
    ignore = (IMAGES / f"{dockerfile}.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the context
    sources = [
        src
        for op, arg in instructions(path)
        if op == "COPY" and not arg.startswith("--from")
        for src in arg.split()[:-1]
    ]
    assert sources == ["pyproject.toml", "README.md", "operator"]
    for src in sources:
        assert (REPO / src).exists(), src
        assert src in kept, f"{src} is excluded by {dockerfile}.dockerignore"


@pytest.mark.parametrize("module", ["ratline.worker", "ratline.controller"])
def test_entrypoint_module_is_runnable_with_dash_m(module: str) -> None:
    assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_worker_help_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ratline.worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m ratline.worker" in proc.stdout
    for flag in ("--run-id", "--dsn", "--entrypoint", "--idle-threshold"):
        assert flag in proc.stdout


def test_worker_without_settings_exits_2_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-m", "ratline.worker"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 2
    assert "RATLINE_RUN_ID" in proc.stderr


def test_readme_shows_the_from_pattern_with_the_current_version() -> None:
    readme = (IMAGES / "README.md").read_text()
    assert f"FROM ghcr.io/ratline/worker:{project_version()}" in readme
    assert "COPY " in readme.split(f"FROM ghcr.io/ratline/worker:{project_version()}")[1]
