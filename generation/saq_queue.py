"""The SAQ queue a worker takes jobs from, with a sweep that does not take a job from the worker handed it.

A worker takes a job by moving its id onto the queue's active list and only then writes the job as
active. SAQ's sweep (run by one worker every `sweep_seconds`) retries every job on the active list that
is not written active, as abandoned, so a sweep that lands in that instant (milliseconds, more on a busy
machine) sends a job that is being drawn to a second worker: it is drawn twice, or cut off half way and
drawn again (tobymao/saq#277). Here a job found that way is left alone until a sweep at least `settle`
seconds later still finds it so; a job whose heartbeat ran out is swept at once, as in SAQ.

Imported by `easel worker` only: SAQ is the optional `redis` extra.
"""

from __future__ import annotations

import asyncio
import logging
import time

from saq.job import Status
from saq.queue.redis import RedisQueue

log = logging.getLogger(__name__)


class SettlingQueue(RedisQueue):
    """RedisQueue whose sweep gives a job just taken by a worker `settle` seconds to be written active."""

    def __init__(self, *args, settle: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settle = settle
        self._unsettled: dict[bytes, float] = {}  # active-list id → when a sweep here first found it not active

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if not await self.redis.set(self._sweep, 1, ex=max(1, int(lock)), nx=True):
            return []  # another worker swept less than `lock` seconds ago
        now, swept, unsettled = time.monotonic(), [], {}
        for job_id in await self.redis.lrange(self._active, 0, -1):
            job = self.deserialize(await self.redis.get(job_id))
            if job is None:  # its record expired: nothing to run, only the lists to tidy
                async with self.redis.pipeline(transaction=True) as pipe:
                    await pipe.lrem(self._active, 0, job_id).zrem(self._incomplete, job_id).execute()
                swept.append(job_id.decode())
                continue
            if job.status in (Status.ACTIVE, Status.ABORTING):
                if not job.stuck:
                    continue  # drawing, or being cancelled by its worker, with a live heartbeat
            else:  # on the active list, not written active: just taken, or its worker died taking it
                first = unsettled[job_id] = self._unsettled.get(job_id, now)
                if now - first < self.settle:
                    continue
            log.info("sweeping %s (status %s)", job.key, job.status)
            await self.abort(job, error=self.swept_error_message)
            try:
                await job.refresh(abort)
            except asyncio.TimeoutError:
                log.info("%s did not end when aborted", job.key)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            unsettled.pop(job_id, None)
            swept.append(job_id.decode())
        self._unsettled = unsettled
        return swept
