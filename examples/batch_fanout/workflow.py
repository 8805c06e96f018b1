"""Process a batch of documents in parallel; report failures instead of failing the run.

Every document is its own checkpointed step (`ctx.schedule_async` of a `@task`),
so a worker that dies half way through re-runs only the documents that had not
finished. `ctx.gather(..., return_exceptions=True)` hands back each failure as a
value: the run succeeds and its result lists what failed and why, so the caller
can resubmit just those documents.
"""

from __future__ import annotations

import asyncio
import hashlib

from pydantic import BaseModel, Field

from examples.fakes import FakeService
from ratline import RetryPolicy, StepFailedError, WorkflowContext, task, workflow


class BatchInput(BaseModel):
    batch_id: str = Field(min_length=1, max_length=64)
    documents: list[str] = Field(min_length=1, max_length=500)


class Processed(BaseModel):
    document: str
    pages: int
    checksum: str


class Failure(BaseModel):
    document: str
    error: str
    attempts: int


class BatchResult(BaseModel):
    batch_id: str
    processed: int
    failed: int
    results: list[Processed]
    failures: list[Failure]


class OcrBusy(Exception):
    """The OCR service is overloaded right now: retry later."""


class Unreadable(Exception):
    """The document itself is broken: no retry will help."""


class OcrService(FakeService):
    """Documents whose name ends in `.corrupt` are unreadable;
    `fail("ocr", f"{batch}/{document}", n)` makes the service busy `n` times."""

    def __init__(self) -> None:
        super().__init__("ocr")

    async def process(self, batch_id: str, document: str) -> Processed:
        digest = hashlib.sha256(document.encode()).hexdigest()
        pages = 1 + int(digest[:2], 16) % 9
        for _ in range(pages):  # bigger documents take longer (loop turns, no wall time)
            await asyncio.sleep(0)
        if document.endswith(".corrupt"):
            self.record("unreadable", batch_id, document=document)
            raise Unreadable(f"{document}: not a PDF")
        if self.should_fail("ocr", f"{batch_id}/{document}"):
            self.record("busy", batch_id, document=document)
            raise OcrBusy("503 Service Unavailable")
        self.record("ocr", batch_id, document=document)
        return Processed(document=document, pages=pages, checksum=digest[:16])


ocr = OcrService()


@task(
    name="batch-fanout.process-document",
    retry=RetryPolicy(max_attempts=3, initial_interval="5s", non_retryable=(Unreadable,)),
)
async def process_document(batch_id: str, document: str) -> Processed:
    return await ocr.process(batch_id, document)


@workflow(name="batch-fanout", max_duration="1d")
async def batch_fanout(ctx: WorkflowContext, inp: BatchInput) -> BatchResult:
    handles = [ctx.schedule_async(process_document, inp.batch_id, doc) for doc in inp.documents]
    outcomes = await ctx.gather(*handles, return_exceptions=True)
    results: list[Processed] = []
    failures: list[Failure] = []
    for document, outcome in zip(inp.documents, outcomes, strict=True):
        if isinstance(outcome, StepFailedError):
            error = f"{outcome.error_type}: {outcome.message}"
            failures.append(Failure(document=document, error=error, attempts=outcome.attempts))
        elif isinstance(outcome, BaseException):
            raise outcome  # not a step failure: a bug in this workflow, let it fail the run
        else:
            results.append(outcome)
    await ctx.set("summary", {"processed": len(results), "failed": len(failures)})
    return BatchResult(
        batch_id=inp.batch_id,
        processed=len(results),
        failed=len(failures),
        results=results,
        failures=failures,
    )
