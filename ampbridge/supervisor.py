"""Background jobs that can fail without taking the server with them.

A job (the config watcher, model discovery, ...) is a coroutine function that normally runs
forever. If it raises, the failure is logged once with the job's name (the same failure again is
not logged again), and the job is started afresh after a pause. Nothing a job does can end the
task group it runs in, so the shared HTTP client and the serving app stay up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

logger = logging.getLogger("ampbridge")


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[], Awaitable[None]]
    restart_after: float = 30.0


async def supervise(job: Job) -> None:
    """Run ``job`` until it returns; restart it after each failure."""
    last_failure: str | None = None
    while True:
        try:
            await job.run()
            return
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
            if failure != last_failure:
                logger.error(
                    "background job '%s' failed (%s); serving goes on, the job restarts in %.0f s",
                    job.name,
                    failure,
                    job.restart_after,
                )
            last_failure = failure
        await anyio.sleep(job.restart_after)


async def run_jobs(jobs: Sequence[Job]) -> None:
    """Run every job under supervision until cancelled."""
    async with anyio.create_task_group() as tasks:
        for job in jobs:
            tasks.start_soon(supervise, job, name=job.name)
