"""RedisRunner: the queue's jobs drawn by `easel worker` processes, over Redis (SAQ for transport and leases).

easel stays the source of truth: SQLite holds every job, and the queue's fair line picks what goes out
next. SAQ carries a job to a worker, keeps its lease alive by heartbeats and hands it to another worker
when one dies (up to MAX_CRASHES attempts). Progress and results come back over a Redis Stream read with
a consumer group, so nothing is dropped while the bot restarts; a result is acknowledged only once its
images and history row are on disk, and a second result for the same job (at-least-once delivery) is
ignored.

Workers form pools by the job kinds they take (one SAQ queue per pool): at most two jobs per live
worker of a pool are out at a time, one drawing and one prefetched, so turns stay fair however long
the line is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import redis.exceptions
from PIL import Image

from generation.engine import EngineResult, EngineUnavailable, JobCancelled
from generation.engines import ENGINES
from generation.line import MAX_CRASHES
from generation.redis_link import REDIS_DOWN, connect, live_workers, retried, safe_url
from generation.runners import Drawing
from generation.wire import (DRAW, Cancelled, Done, End, Failed, Progressed, RedisSettings, Started,
                             WorkerInfo, event_from_fields, is_end, saq_key)
from storage.errors import EaselError
from storage.images import ImageStore
from storage.params import params_to_json
from storage.records import JobRecord, RunInfo

log = logging.getLogger(__name__)

GROUP = "bot"  # the stream's one consumer group: the bot process
PER_WORKER = 2  # jobs out per live worker: one drawing, one prefetched
INPUT_TTL = 7 * 24 * 3600  # an input image waits this long in Redis for a worker that needs it
REDIS_TROUBLE = (*REDIS_DOWN, redis.exceptions.RedisError)


@dataclass(eq=False)
class _Out:
    """A job handed to the workers: the runner's one record of it, from reserve() until ended()."""

    job: JobRecord
    pool: str
    drawing: bool = True  # holds a slot on its pool until its drawing is back (release)
    progress: Drawing | None = None
    waiter: asyncio.Future | None = None  # resolved with (stream entry, end) when the end is known
    sent: bool = False  # Redis accepted it
    missing: int = 0  # polls in a row SAQ had no record of it although sent (Redis lost its data)
    gone_since: float | None = None  # when SAQ first said its last attempt ended with no end in the stream
    by_user: bool = False  # a person cancelled it
    entry: bytes = b""  # the stream entry of its end: acknowledged once that end is on disk
    run: RunInfo | None = None  # how the worker's engine was set up, from its end


class RedisRunner:
    """Sends jobs to `easel worker` processes through SAQ and reads what comes back from the stream."""

    counts_crashes = False
    draws_in_turns = False  # a worker draws a whole animation: other jobs go to other workers meanwhile
 # the bot stopping does not stop a worker: SAQ counts the workers' crashes

    def __init__(self, settings: RedisSettings, images: ImageStore, poll_seconds: float = 1.0) -> None:
        self.settings = settings
        self.images = images
        self.poll_seconds = poll_seconds
        self._redis = None
        self._saq: dict[str, object] = {}  # pool → saq.Queue
        self._workers: list[WorkerInfo] = []
        self._out: dict[int, _Out] = {}
        self._unclaimed: dict[int, tuple[bytes, End]] = {}  # an end read before its job was sent again
        self._trouble = False  # Redis unreachable: said once in the log, not on every poll
        self._tasks: set[asyncio.Task] = set()
        self._closing = False  # the loops below end on it: a client library may swallow a cancel
        self._wake: Callable[[], None] = lambda: None
        self._wants_end: Callable[[int], Awaitable[bool]] | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self, wake: Callable[[], None], wants_end: Callable[[int], Awaitable[bool]]) -> None:
        self._wake, self._wants_end = wake, wants_end
        self._redis = await connect(self.settings)
        with contextlib.suppress(Exception):  # BUSYGROUP: it exists from an earlier run
            await self._redis.xgroup_create(self.settings.events, GROUP, id="0", mkstream=True)
        await self._read_pending()  # ends that arrived while the bot was down, before anything is sent
        self._workers = await live_workers(self._redis, self.settings)
        self._spawn(self._read_events())
        self._spawn(self._watch())

    def interrupt(self) -> None:
        # Jobs out on workers keep drawing there; here they go back to "queued", and their ends wait in
        # the stream for the next start.
        for out in self._out.values():
            if out.waiter is not None and not out.waiter.done():
                out.waiter.set_exception(JobCancelled("the bot is stopping"))

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in self._saq.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def workers(self) -> list[WorkerInfo]:
        """The live workers, as last polled."""
        return list(self._workers)

    # ---- room ----------------------------------------------------------------------------
    def check_available(self, kind: str) -> None:
        if kind not in ENGINES:  # else it waits for a worker that takes its kind: workers come and go
            raise EngineUnavailable(f"{kind} jobs are not set up on this easel")

    def _room(self, job: JobRecord) -> dict[str, int]:
        """Free slots of the pools that take this job (its kind and model): PER_WORKER per live worker, less
        the jobs drawing."""
        room: dict[str, int] = {}
        for worker in self._workers:
            if worker.draws(job.params):
                room[worker.pool] = room.get(worker.pool, 0) + PER_WORKER
        for out in self._out.values():
            if out.drawing and out.pool in room:
                room[out.pool] -= 1
        return {pool: free for pool, free in room.items() if free > 0}

    def has_room(self, job: JobRecord) -> bool:
        return bool(self._room(job))

    def loaded_models(self) -> list[str] | None:
        return None  # each worker holds its own

    def reserve(self, job: JobRecord) -> None:
        room = self._room(job)
        self._out[job.id] = _Out(job, pool=max(room, key=lambda pool: room[pool]))

    def release(self, job_id: int) -> None:
        if job_id in self._out:
            self._out[job_id].drawing = False

    # ---- drawing -------------------------------------------------------------------------
    async def draw(self, job: JobRecord, progress: Drawing) -> EngineResult:
        out = self._out[job.id]
        out.job, out.progress = job, progress
        waiter = out.waiter = asyncio.get_running_loop().create_future()
        progress.where = "waiting for a worker"  # sent, or about to be: next in line on its worker pool
        sender = None
        try:
            if job.id in self._unclaimed:
                waiter.set_result(self._unclaimed.pop(job.id))
            else:
                sender = asyncio.create_task(self._send_until_sent(out))
            out.entry, end = await waiter
        finally:
            if sender is not None:
                sender.cancel()
            out.waiter, out.sent, out.missing, out.gone_since = None, False, 0, None
        out.run = end.run if isinstance(end, (Done, Failed)) else None
        if isinstance(end, Cancelled):
            raise JobCancelled("cancelled on its worker")
        if isinstance(end, Failed):
            raise EaselError(end.error)
        images = tuple(Image.open(io.BytesIO(data)).convert("RGB") for data in end.images)
        return EngineResult(images=images, seeds=end.seeds, run=end.run)

    def run_info(self, job: JobRecord) -> RunInfo | None:
        out = self._out.get(job.id)
        return out.run if out is not None else None

    async def ended(self, job_id: int) -> None:
        # The end is on disk: what follows is housekeeping, and failing it must not fail the job. An entry
        # left unacknowledged is read again on the next start and dropped then, as a duplicate.
        out = self._out.pop(job_id, None)
        late = self._unclaimed.pop(job_id, None)  # a second end that came while this one was being saved
        entries = [entry for entry in (out.entry if out else b"", late[0] if late else b"") if entry]
        try:
            if entries:  # none: an end decided here, with nothing in the stream
                await self._forget(*entries)
            await retried(lambda: self._redis.delete(self.settings.pool_key(job_id), self.settings.cancel_key(job_id)))
        except REDIS_TROUBLE as exc:
            log.warning("job #%d is recorded; tidying its Redis keys failed (%s), the next start will", job_id, exc)

    async def _send_until_sent(self, out: _Out) -> None:
        """Send a job, waiting out a Redis outage (it stays running here, nothing is lost)."""
        delay, refused, waiter = 0.5, 0, out.waiter
        while not waiter.done():
            try:
                await self._send(out)
                out.sent = True
                return
            except REDIS_TROUBLE as exc:
                # Down, restarting or still loading: wait. An error reply that persists is not an outage.
                refused += not isinstance(exc, REDIS_DOWN)
                if refused > 5:
                    log.error("job #%d could not be sent to Redis", out.job.id, exc_info=exc)
                    if not waiter.done():
                        waiter.set_exception(exc)
                    return
                log.error("job #%d could not be sent: Redis at %s said %s: %s; trying again in %g s",
                          out.job.id, safe_url(self.settings.url), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 15.0)
            except Exception as exc:
                log.error("job #%d could not be sent", out.job.id, exc_info=exc)
                if not waiter.done():
                    waiter.set_exception(exc)
                return

    async def _send(self, out: _Out) -> None:
        job = out.job
        # A job sent before keeps its pool: SAQ's key is per queue, so another pool would draw it twice.
        pool_key = self.settings.pool_key(job.id)
        await self._redis.set(pool_key, out.pool, nx=True, ex=INPUT_TTL)
        pinned = await self._redis.get(pool_key)  # None only if Redis lost it in between: keep this choice
        out.pool = pinned.decode() if pinned is not None else out.pool
        for sha in job.params.inputs:
            key = self.settings.input_key(sha)
            if not await self._redis.exists(key):
                path = self.images.input_path(sha)
                await self._redis.set(key, await asyncio.to_thread(path.read_bytes), ex=INPUT_TTL)
        queued = await self._queue(out.pool).enqueue(
            DRAW, key=saq_key(job.id), timeout=0, heartbeat=self.settings.lease_seconds,
            retries=MAX_CRASHES, ttl=INPUT_TTL, job_id=job.id, params=params_to_json(job.params),
            previews=bool(out.progress and out.progress.wants_preview),
        )
        if queued is None:
            log.info("job #%d is already out on a worker; waiting for its result", job.id)

    def _queue(self, pool: str):
        if pool not in self._saq:
            from saq import Queue

            self._saq[pool] = Queue.from_url(self.settings.url, name=pool)
        return self._saq[pool]

    def cancel(self, job_id: int) -> None:
        if job_id in self._out:
            self._out[job_id].by_user = True
            self._spawn(self._abort(job_id))

    async def _abort(self, job_id: int) -> None:
        """A person's cancel: mark it for the worker, then have SAQ stop the job there."""
        out = self._out.get(job_id)
        if out is None:
            return
        if not out.sent:  # not in Redis yet (it is down, say): it ends here
            self._resolve(job_id, b"", Cancelled(job_id))
        try:
            await retried(lambda: self._redis.set(self.settings.cancel_key(job_id), 1, ex=INPUT_TTL))
            saq_job = await retried(lambda: self._queue(out.pool).job(saq_key(job_id)))
            if saq_job is None:
                return
            waiting = saq_job.status in ("queued", "new")  # not started: it ends cancelled without a worker
            await retried(lambda: saq_job.abort("cancelled"))
            if waiting:
                self._resolve(job_id, b"", Cancelled(job_id))
        except REDIS_TROUBLE as exc:
            # The job still ends cancelled: its result, when it comes, is not delivered (a person's cancel).
            log.warning("the cancel of job #%d did not reach Redis (%s); it ends cancelled all the same", job_id, exc)

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resolve(self, job_id: int, entry: bytes, end: End) -> bool:
        out = self._out.get(job_id)
        if out is None or out.waiter is None or out.waiter.done():
            return False
        out.waiter.set_result((entry, end))
        return True

    # ---- what comes back -----------------------------------------------------------------
    async def _read_pending(self) -> None:
        """Entries delivered to the bot before it stopped but never acknowledged: ends not yet on disk."""
        last = "0"
        while True:
            reply = await self._redis.xreadgroup(GROUP, "bot", {self.settings.events: last}, count=100)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry, fields in entries:
                await self._on_entry(entry, fields)
            last = entries[-1][0]

    async def _read_events(self) -> None:
        while not self._closing:
            try:
                reply = await self._redis.xreadgroup(GROUP, "bot", {self.settings.events: ">"}, count=100,
                                                     block=1000)
                for _, entries in reply or ():
                    for entry, fields in entries:
                        await self._on_entry(entry, fields)
                self._trouble = False
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted without its data: the stream and group are new, and so is every entry.
                with contextlib.suppress(redis.exceptions.ResponseError):
                    await self._redis.xgroup_create(self.settings.events, GROUP, id="0", mkstream=True)
            except REDIS_DOWN as exc:
                self._say_trouble(exc)
                await asyncio.sleep(1)
            except Exception:
                log.exception("reading worker events from Redis failed; trying again")
                await asyncio.sleep(1)

    def _say_trouble(self, exc: BaseException) -> None:
        if not self._trouble:
            log.error("Redis at %s is unreachable (%s); jobs wait in the history until it is back",
                      safe_url(self.settings.url), exc)
        self._trouble = True

    async def _on_entry(self, entry: bytes, fields: dict) -> None:
        event = event_from_fields(fields)
        if not is_end(event):
            self._on_news(event)
            await self._redis.xack(self.settings.events, GROUP, entry)
            return
        if self._resolve(event.job, entry, event):
            return
        if not await self._wants_end(event.job):  # a second end of a job recorded (at-least-once delivery)
            log.info("ignored a duplicate %s of job #%d", event.TYPE, event.job)
            await self._forget(entry)
            return
        self._unclaimed[event.job] = (entry, event)  # claimed when the job is sent again after a restart

    def _on_news(self, event: Started | Progressed) -> None:
        out = self._out.get(event.job)
        if out is None or out.progress is None:
            return
        out.progress.where = f"on {event.worker}"
        if isinstance(event, Progressed):
            preview = Image.open(io.BytesIO(event.preview)).convert("RGB") if event.preview else None
            out.progress.step(event.step, event.total, preview, event.detail)
        elif event.attempt > 1:
            log.warning("job #%d started again on %s (attempt %d): the worker before it stopped",
                        event.job, event.worker, event.attempt)

    async def _forget(self, *entries: bytes) -> None:
        """Acknowledge ends that are on disk and delete them: they carry the images, megabytes each."""
        async def both():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.settings.events, GROUP, *entries)
                pipe.xdel(self.settings.events, *entries)
                await pipe.execute()
        await retried(both)

    # ---- watching the workers ------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._closing:
            await self._poll()
            await asyncio.sleep(self.poll_seconds)

    async def _poll(self) -> None:
        """Refresh the live workers, and end jobs SAQ gave up on (every attempt's worker died)."""
        try:
            workers = await live_workers(self._redis, self.settings)
            if [(w.pool, w.kinds, w.models) for w in workers] != [(w.pool, w.kinds, w.models) for w in self._workers]:
                self._wake()  # room came or went
            self._workers = workers
            for job_id, out in list(self._out.items()):
                if out.waiter is not None and not out.waiter.done():
                    await self._check(job_id, out)
        except REDIS_DOWN as exc:
            self._say_trouble(exc)
        except Exception:
            log.exception("could not read worker state from Redis")

    async def _check(self, job_id: int, out: _Out) -> None:
        """What SAQ says of a job out: lost with Redis's data (send again), or given up on (ended here)."""
        saq_job = await self._queue(out.pool).job(saq_key(job_id))
        if saq_job is None and out.sent:
            # Sent, but Redis has no record of it (restarted without its data): send it again.
            out.missing += 1
            if out.missing >= 3:
                log.warning("job #%d is gone from Redis; sending it again", job_id)
                out.sent, out.missing = False, 0
                self._spawn(self._send_until_sent(out))
            return
        out.missing = 0
        # SAQ's sweep marks a job aborted for up to 5 s before it hands it to the next attempt: only a job
        # with no attempt left has ended.
        if saq_job is None or saq_job.status not in ("aborted", "failed") or saq_job.retryable:
            out.gone_since = None
            return
        # A worker sends its end before SAQ records it; allow a moment for it to be read.
        now = time.monotonic()
        if out.gone_since is None:
            out.gone_since = now
        if now - out.gone_since < 3 * self.poll_seconds:
            return
        if out.by_user:
            self._resolve(job_id, b"", Cancelled(job_id))
            return
        error = (f"the workers drawing job #{job_id} stopped {saq_job.attempts} times "
                 f"({saq_job.error or 'lease ran out'}), so it is not retried; their logs may say why")
        self._resolve(job_id, b"", Failed(job_id, "", error))
