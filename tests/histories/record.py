"""Record the history of every example as `kubectl ratline history RUN -o json` prints it.

`python -m tests.histories.record` runs each example's `run.yaml` input on the
time-skipping runner and writes `tests/histories/<example>.json`, plus
`hello.renamed-step.json`: hello's history as an older version of the code
(whose first step was called `upper`) would have recorded it, which today's
code must refuse to replay. Re-record after a deliberate change to an example.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from ratline.cli.output import dump, history_data
from ratline.engine import resolve_entrypoint
from ratline.testing import WorkflowTestEnv

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _manifest(example: Path, kind: str) -> dict[str, Any]:
    loaded = yaml.safe_load((example / f"{kind}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


async def record(example: Path) -> str:
    spec = resolve_entrypoint(_manifest(example, "workflow")["spec"]["entrypoint"])
    env = WorkflowTestEnv()
    run = await env.start(spec.name, _manifest(example, "run")["spec"]["input"])
    await run.result()
    return dump(history_data(await run.history()), "json")


async def main() -> None:
    for example in sorted(p.parent for p in (ROOT / "examples").glob("*/workflow.yaml")):
        text = await record(example)
        (HERE / f"{example.name}.json").write_text(text + "\n")
        if example.name == "hello":
            events = json.loads(text)
            for event in events:
                if event.get("name") == "shout":
                    event["name"] = "upper"
            (HERE / "hello.renamed-step.json").write_text(dump(events, "json") + "\n")


if __name__ == "__main__":
    asyncio.run(main())
