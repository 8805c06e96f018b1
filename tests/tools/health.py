"""Python side of the Go health evaluators (tests/tools/health): build once, then ask.

`tool()` runs tests/tools/build.sh (cached by source hash under
~/.cache/ratline/tools-<hash>/) and returns the binary; `verdict` feeds it one
live object and returns the status kstatus or an Argo CD health Lua gives it.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GITOPS = HERE.parents[1] / "docs" / "gitops.md"


@functools.cache
def tool() -> Path:
    result = subprocess.run(
        ["bash", str(HERE / "build.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"tests/tools/build.sh failed:\n{result.stderr}")
    return Path(result.stdout.strip()) / "health"


def argo_lua(kind: str, directory: Path) -> Path:
    """The Argo CD health Lua for `kind`, exactly as docs/gitops.md prints it."""
    text = GITOPS.read_text()
    pattern = rf"resource\.customizations\.health\.ratline\.dev_{kind}: \|\n((?:    .*\n|\n)+)"
    match = re.search(pattern, text)
    if match is None:
        raise AssertionError(f"docs/gitops.md has no health Lua for {kind}")
    script = directory / f"{kind}.lua"
    script.write_text("".join(line[4:] + "\n" for line in match.group(1).splitlines()))
    return script


def verdict(obj: dict[str, Any], *evaluator: str) -> str:
    """`verdict(obj, "kstatus")` or `verdict(obj, "argo", "script.lua")`."""
    result = subprocess.run(
        [str(tool()), *evaluator],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"health {' '.join(evaluator)}: {result.stderr}")
    status: str = json.loads(result.stdout)["status"]
    return status
