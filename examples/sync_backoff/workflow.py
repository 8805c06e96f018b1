"""Copy every page of a rate-limited partner API, in batches, backing off when throttled.

A throttled page fetch raises `RateLimited`; the step's `RetryPolicy` retries it
with exponential backoff, and each attempt and wait is recorded, so a worker
replaced mid-backoff neither forgets the attempt count nor refetches finished
pages. A rejected credential cannot get better by waiting: the step raises
`NonRetryableError` and the run fails at once. Between batches the run sleeps
durably; `ctx.set("progress", ...)` shows how far it got in the run's status.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from examples.fakes import FakeService
from ratline import NonRetryableError, RetryPolicy, WorkflowContext, workflow


class SyncInput(BaseModel):
    source: str = Field(min_length=1, max_length=64)
    credential: str = Field(min_length=1)
    pages: int = Field(ge=1, le=1000)
    batch_size: int = Field(default=5, ge=1, le=100)
    pause: str = Field(default="1m", description="durable sleep between batches, e.g. 30s, 5m")


class Page(BaseModel):
    number: int
    items: list[str]


class SyncResult(BaseModel):
    source: str
    pages: int
    records: int
    batches: int


class RateLimited(Exception):
    """HTTP 429: come back later."""


class BadCredential(Exception):
    """HTTP 401: the token is revoked or wrong."""


class PartnerApi(FakeService):
    """Three records per page. Credentials starting with `revoked-` are refused;
    `fail("fetch", f"{source}:{page}", n)` throttles a page `n` times."""

    ITEMS_PER_PAGE = 3

    def __init__(self) -> None:
        super().__init__("partner-api")

    def fetch(self, source: str, credential: str, page: int) -> Page:
        if credential.startswith("revoked-"):
            self.record("refused", source, page=page)
            raise BadCredential("401 Unauthorized: token revoked")
        if self.should_fail("fetch", f"{source}:{page}"):
            self.record("throttled", source, page=page)
            raise RateLimited(f"429 Too Many Requests on page {page}")
        self.record("fetch", source, page=page)
        items = [f"{source}-{page}-{i}" for i in range(self.ITEMS_PER_PAGE)]
        return Page(number=page, items=items)


class Warehouse(FakeService):
    """Where synced records land."""

    def __init__(self) -> None:
        super().__init__("sync-sink")

    def write(self, source: str, batch: int, items: list[str]) -> int:
        self.record("write", source, batch=batch, count=len(items))
        return len(items)


api = PartnerApi()
sink = Warehouse()

#: 30 s, 1 min, 2 min, 4 min, 8 min between the six attempts a throttled page gets.
RATE_LIMIT_RETRY = RetryPolicy(
    max_attempts=6, initial_interval="30s", backoff_coefficient=2.0, max_interval="10m"
)


def fetch_page(source: str, credential: str, page: int) -> Page:
    try:
        return api.fetch(source, credential, page)
    except BadCredential as exc:
        raise NonRetryableError(f"{source} refused the credential: {exc}") from exc


@workflow(name="sync-backoff", max_duration="2d")
async def sync_backoff(ctx: WorkflowContext, inp: SyncInput) -> SyncResult:
    records = 0
    batches = 0
    for first in range(1, inp.pages + 1, inp.batch_size):
        if batches:
            await ctx.sleep(inp.pause)  # be polite between batches; no pod waits meanwhile
        last = min(first + inp.batch_size, inp.pages + 1)
        items: list[str] = []
        for number in range(first, last):
            page = await ctx.run(
                f"fetch-page-{number}",
                fetch_page,
                inp.source,
                inp.credential,
                number,
                retry=RATE_LIMIT_RETRY,
            )
            items.extend(page.items)
        batches += 1
        records += await ctx.run(f"store-batch-{batches}", sink.write, inp.source, batches, items)
        progress = {"pages_done": last - 1, "pages": inp.pages, "records": records}
        await ctx.set("progress", progress)
    return SyncResult(source=inp.source, pages=inp.pages, records=records, batches=batches)
