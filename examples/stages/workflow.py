"""A pipeline of stages: each stage runs its units in parallel, stages run in order.

This is the shape of "prepare, then compute the parts side by side, then
finalise, then announce completion". Each unit is a checkpointed `@task`; a
stage is one `ctx.gather` over its units. It fails fast: the first unit that
fails for good (after its retries) stops the pipeline, later stages never
start and the completion task does not run.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from examples.fakes import FakeService
from ratline import RetryPolicy, StepFailedError, WorkflowContext, task, workflow


class Stage(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    units: list[str] = Field(min_length=1, max_length=100)


class StagesInput(BaseModel):
    job_id: str = Field(min_length=1, max_length=64)
    stages: list[Stage] = Field(min_length=1, max_length=20)


class StageOutcome(BaseModel):
    name: str
    outputs: list[str]


class StagesResult(BaseModel):
    job_id: str
    stages: list[StageOutcome]
    completion: str


class StageFailed(Exception):
    """A stage could not finish; the pipeline stops there."""


class UnitCrashed(Exception):
    pass


class ComputeCluster(FakeService):
    """Runs units; `fail("unit", f"{job}/{stage}/{unit}", n)` fails one `n` times."""

    def __init__(self) -> None:
        super().__init__("compute")

    def run(self, job_id: str, stage: str, unit: str) -> str:
        if self.should_fail("unit", f"{job_id}/{stage}/{unit}"):
            self.record("unit-failed", job_id, stage=stage, unit=unit)
            raise UnitCrashed(f"unit {unit} of stage {stage} crashed")
        self.record("unit", job_id, stage=stage, unit=unit)
        return f"{stage}/{unit}:ok"

    def complete(self, job_id: str, stages: list[str]) -> str:
        self.record("complete", job_id, stages=stages)
        return f"{job_id} done after {len(stages)} stage(s)"


cluster = ComputeCluster()


@task(name="stages.run-unit", retry=RetryPolicy(max_attempts=2, initial_interval="10s"))
def run_unit(job_id: str, stage: str, unit: str) -> str:
    return cluster.run(job_id, stage, unit)


@task(name="stages.complete")
def complete_job(job_id: str, stages: list[str]) -> str:
    return cluster.complete(job_id, stages)


@workflow(name="stages", max_duration="1d")
async def stages(ctx: WorkflowContext, inp: StagesInput) -> StagesResult:
    done: list[StageOutcome] = []
    for number, stage in enumerate(inp.stages, start=1):
        await ctx.set("stage", f"{number}/{len(inp.stages)} {stage.name}")
        handles = [ctx.schedule_async(run_unit, inp.job_id, stage.name, u) for u in stage.units]
        try:
            outputs = await ctx.gather(*handles)  # the first failure ends the stage
        except StepFailedError as exc:
            raise StageFailed(f"stage {stage.name!r} failed: {exc}") from exc
        done.append(StageOutcome(name=stage.name, outputs=outputs))
    completion = await ctx.schedule(complete_job, inp.job_id, [s.name for s in done])
    return StagesResult(job_id=inp.job_id, stages=done, completion=completion)
