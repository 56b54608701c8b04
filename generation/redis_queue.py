"""The same queue with GPU work on `easel worker` processes, over Redis (SAQ for transport and leases).

easel stays the source of truth: SQLite holds every job, and the fair turn-taking of JobQueue picks
what goes out next. SAQ carries a job to a worker, keeps its lease alive by heartbeats and hands it to
another worker when one dies (up to MAX_CRASHES attempts). Progress and results come back over a Redis
Stream read with a consumer group, so nothing is dropped while the bot restarts; a result is
acknowledged only once its images and history row are on disk, and a second result for the same job
(at-least-once delivery) is ignored.

Workers form pools by the job kinds they take (one SAQ queue per pool): at most two jobs per live
worker of a pool are out at a time, one drawing and one prefetched, so turns stay fair however long
the line is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis.exceptions
from PIL import Image

from generation.engine import EngineResult, JobCancelled
from generation.queue import MAX_CRASHES, STORAGE_RETRY_SECONDS, JobQueue, QueueLimits, storage_trouble
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore
from storage.records import JobKind, JobRecord, JobStatus, RunInfo, params_to_json

log = logging.getLogger(__name__)

GROUP = "bot"  # the stream's one consumer group: the bot process
TERMINAL = ("done", "failed", "cancelled")
PER_WORKER = 2  # jobs out per live worker: one drawing, one prefetched
INPUT_TTL = 7 * 24 * 3600  # an input image waits this long in Redis for a worker that needs it
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True)
class RedisSettings:
    url: str = dataclasses.field(repr=False)  # may hold a password
    prefix: str = "easel"
    lease_seconds: int = 30  # a worker silent this long has died; its job goes to another one
    sweep_seconds: int = 5  # how often workers look for jobs whose lease ran out (SAQ locks in whole seconds)

    def key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    @property
    def events(self) -> str:
        return self.key("events")

    def pool(self, kinds: Iterable[JobKind]) -> str:
        """The SAQ queue of the workers that take exactly these kinds (no ':' in SAQ names)."""
        return f"{self.prefix}-" + "+".join(sorted(str(kind) for kind in kinds))


async def retried(call, tries: int = 4):
    """await call(), again on a dropped connection: the first command after Redis restarts meets the
    pooled connection the old server closed."""
    for attempt in range(tries):
        try:
            return await call()
        except REDIS_DOWN:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.1 * 2**attempt)


def job_key(job_id: int) -> str:
    return f"job-{job_id}"


def run_to_json(run: RunInfo | None) -> str:
    return json.dumps(dataclasses.asdict(run) if run is not None else None)


def run_from_json(text: str | bytes) -> RunInfo | None:
    data = json.loads(text)
    return RunInfo(**data) if data is not None else None


@dataclass(frozen=True)
class WorkerInfo:
    """One `easel worker` as it last said: name, GPU, kinds, pool, jobs done, running job, heartbeat."""

    name: str
    gpu: str
    kinds: tuple[str, ...]
    pool: str
    done: int
    running: int | None
    seen: float  # unix time of its last heartbeat

    @classmethod
    def parse(cls, fields: Mapping[bytes, bytes]) -> WorkerInfo:
        text = {k.decode(): v.decode() for k, v in fields.items()}
        return cls(name=text["name"], gpu=text.get("gpu", "?"), kinds=tuple(text["kinds"].split(",")),
                   pool=text["pool"], done=int(text.get("done", 0)),
                   running=int(text["running"]) if text.get("running") else None, seen=float(text["seen"]))


async def live_workers(redis, settings: RedisSettings) -> list[WorkerInfo]:
    """Workers whose registration has not expired, by name."""
    workers = []
    async for key in redis.scan_iter(match=settings.key("worker", "*")):
        fields = await redis.hgetall(key)
        if fields:
            workers.append(WorkerInfo.parse(fields))
    return sorted(workers, key=lambda worker: worker.name)


class _RemoteEngine:
    """What the queue asks an engine about, answered for a kind drawn on workers."""

    def __init__(self, kind: JobKind) -> None:
        self.kind = kind
        self.last_run: RunInfo | None = None

    def unavailable(self) -> str | None:
        return None  # a job waits for a worker that takes its kind; workers come and go

    def run_info(self) -> RunInfo | None:
        return self.last_run

    def run(self, params, inputs, progress):  # pragma: no cover - the queue sends these to workers
        raise RuntimeError("remote jobs are drawn by easel worker processes")


class RedisQueue(JobQueue):
    """JobQueue whose jobs are drawn by `easel worker` processes; history, turns and events stay here."""

    def __init__(self, history: History, images: ImageStore, limits: QueueLimits, settings: RedisSettings,
                 storage_retry_seconds: float = STORAGE_RETRY_SECONDS, poll_seconds: float = 1.0) -> None:
        engines = {kind: _RemoteEngine(kind) for kind in JobKind}
        super().__init__(history, images, engines, limits, storage_retry_seconds)
        self.settings = settings
        self.poll_seconds = poll_seconds
        self._redis = None
        self._saq: dict[str, object] = {}  # pool → saq.Queue
        self._workers: list[WorkerInfo] = []
        self._pool_of: dict[int, str] = {}  # out on a worker pool: job id → pool
        self._results: dict[int, asyncio.Future] = {}  # out: job id → (entry id, fields) of its end
        self._unclaimed: dict[int, tuple[bytes, dict]] = {}  # an end read before its job was sent again
        self._gone: dict[int, float] = {}  # job id → when SAQ first said it ended without sending an end
        self._sent: set[int] = set()  # out and accepted by Redis
        self._missing: dict[int, int] = {}  # sent, but SAQ has no record (Redis lost its data): polls in a row
        self._trouble = False  # Redis unreachable: said once in the log, not on every poll
        # The end each job came back with, until it is on disk: acknowledged then, or kept to save again
        # (not redraw) after a full disk.
        self._ends: dict[int, tuple[bytes, dict]] = {}
        self._held = 0  # jobs waiting for room on a full disk: nothing new goes out meanwhile
        self._tasks: set[asyncio.Task] = set()
        self._reader: asyncio.Task | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> list[JobRecord]:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self.settings.url)
        try:
            await self._redis.ping()
        except Exception as exc:
            await self._redis.aclose()
            raise EaselError(f"cannot reach Redis at {safe_url(self.settings.url)} ([queue] redis_url): {exc}") from exc
        with contextlib.suppress(Exception):  # BUSYGROUP: it exists from an earlier run
            await self._redis.xgroup_create(self.settings.events, GROUP, id="0", mkstream=True)
        await self._read_pending()  # ends that arrived while the bot was down, before anything is sent
        self._workers = await live_workers(self._redis, self.settings)
        self._reader = asyncio.create_task(self._read_events(), name="easel-redis-events")
        return await super().start()

    async def _recover_unfinished(self, unfinished: list[JobRecord]) -> list[JobRecord]:
        # The bot stopping does not stop a worker: a job history calls running may still be drawing,
        # or done with its result waiting in the stream. It goes out again under the same SAQ key,
        # which SAQ refuses while the job is in flight, so it is drawn once; the sweep counts crashes.
        running = [job.id for job in unfinished if job.status is JobStatus.RUNNING]
        await self.history.mark_requeued(running)
        return [dataclasses.replace(job, status=JobStatus.QUEUED, started_at=None) for job in unfinished]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        # Jobs out on workers keep drawing there; here they go back to "queued", and their ends wait in
        # the stream for the next start. Images being saved now are saved first.
        for waiter in self._results.values():
            if not waiter.done():
                waiter.set_exception(JobCancelled("the bot is stopping"))
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=30)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for queue in self._saq.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        if self._redis is not None:
            await self._redis.aclose()
        await asyncio.to_thread(self._gpu.shutdown, wait=True)

    # ---- dispatching ---------------------------------------------------------------------
    def _room(self) -> dict[str, int]:
        """Free slots per pool: PER_WORKER per live worker, less the jobs out on it."""
        room: dict[str, int] = {}
        for worker in self._workers:
            room[worker.pool] = room.get(worker.pool, 0) + PER_WORKER
        for pool in self._pool_of.values():
            if pool in room:
                room[pool] -= 1
        return room

    async def _work(self) -> None:
        next_poll = 0.0
        while not self._stopping:
            if time.monotonic() >= next_poll:
                await self._poll()
                next_poll = time.monotonic() + self.poll_seconds
            if self._held:  # a full disk: what would come back could not be saved either
                await self._wait_for_wake(self.poll_seconds)
                continue
            room, kinds = self._room(), self._kinds_by_pool()
            chosen: dict[int, str] = {}

            def fits(job: JobRecord) -> bool:
                pools = [pool for pool, free in room.items() if free > 0 and str(job.params.kind) in kinds[pool]]
                if pools:
                    chosen[job.id] = max(pools, key=lambda pool: room[pool])
                return bool(pools)

            job = self._take_next(fits)
            if job is None:
                await self._wait_for_wake(max(0.05, next_poll - time.monotonic()))
                continue
            self._pool_of[job.id] = chosen[job.id]
            task = asyncio.create_task(self._one(job), name=f"easel-job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _kinds_by_pool(self) -> dict[str, set[str]]:
        kinds: dict[str, set[str]] = {}
        for worker in self._workers:
            kinds.setdefault(worker.pool, set()).update(worker.kinds)
        return kinds

    async def _one(self, job: JobRecord) -> None:
        try:
            try:
                drawn = await self._settle(job, self._draw(job))
            finally:
                self._pool_of.pop(job.id, None)
                self._wake.set()  # a slot is free
            if drawn is not None:
                await self._settle(job, self._complete(*drawn))
        except asyncio.CancelledError:
            pass  # the bot is stopping; the job stays unfinished in history and in Redis

    async def _execute(self, engine, job: JobRecord, progress) -> EngineResult:
        loop = asyncio.get_running_loop()
        waiter = self._results[job.id] = loop.create_future()
        progress.on_cancel = lambda: self._spawn(self._abort(job.id))
        progress.where = "waiting for a worker"  # sent, or about to be: next in line on its worker pool
        sender = None
        try:
            if job.id in self._unclaimed:
                waiter.set_result(self._unclaimed.pop(job.id))
            else:
                sender = asyncio.create_task(self._send_until_sent(job, waiter))
            entry, fields = await waiter
        finally:
            if sender is not None:
                sender.cancel()
            self._results.pop(job.id, None)
            self._gone.pop(job.id, None)
            self._sent.discard(job.id)
            self._missing.pop(job.id, None)
        self._ends[job.id] = (entry, fields)
        return self._result(job, engine, fields)

    async def _recover(self, job: JobRecord, exc: Exception) -> None:
        if not storage_trouble(exc):
            await super()._recover(job, exc)
            return
        end = self._ends.pop(job.id, None)
        if end is not None:  # drawn already: the retry saves these images instead of drawing it again
            self._unclaimed[job.id] = end
        self._held += 1
        try:
            await super()._recover(job, exc)  # back at the head of the line, STALLED, a wait for room
        finally:
            self._held -= 1
            self._wake.set()

    async def _send_until_sent(self, job: JobRecord, waiter: asyncio.Future) -> None:
        """Send a job, waiting out a Redis outage (it stays running here, nothing is lost)."""
        delay, refused = 0.5, 0
        while not waiter.done():
            try:
                await self._send(job)
                self._sent.add(job.id)
                return
            except (*REDIS_DOWN, redis.exceptions.RedisError) as exc:
                # Down, restarting or still loading: wait. An error reply that persists is not an outage.
                refused += not isinstance(exc, REDIS_DOWN)
                if refused > 5:
                    log.error("job #%d could not be sent to Redis", job.id, exc_info=exc)
                    if not waiter.done():
                        waiter.set_exception(exc)
                    return
                log.error("job #%d could not be sent: Redis at %s said %s: %s; trying again in %g s",
                          job.id, safe_url(self.settings.url), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 15.0)
            except Exception as exc:
                log.error("job #%d could not be sent", job.id, exc_info=exc)
                if not waiter.done():
                    waiter.set_exception(exc)
                return

    async def _send(self, job: JobRecord) -> None:
        # A job sent before keeps its pool: SAQ's key is per queue, so another pool would draw it twice.
        pool_key = self.settings.key("pool", job.id)
        await self._redis.set(pool_key, self._pool_of[job.id], nx=True, ex=INPUT_TTL)
        pinned = await self._redis.get(pool_key)  # None only if Redis lost it in between: keep this choice
        pool = pinned.decode() if pinned is not None else self._pool_of[job.id]
        self._pool_of[job.id] = pool
        for sha in job.params.inputs:
            key = self.settings.key("input", sha)
            if not await self._redis.exists(key):
                path = self.images.input_path(sha)
                await self._redis.set(key, await asyncio.to_thread(path.read_bytes), ex=INPUT_TTL)
        queued = await self._queue(pool).enqueue(
            "draw", key=job_key(job.id), timeout=0, heartbeat=self.settings.lease_seconds,
            retries=MAX_CRASHES, ttl=INPUT_TTL, job_id=job.id, params=params_to_json(job.params),
            previews=self._progress[job.id].wants_preview if job.id in self._progress else False,
        )
        if queued is None:
            log.info("job #%d is already out on a worker; waiting for its result", job.id)

    def _queue(self, pool: str):
        if pool not in self._saq:
            from saq import Queue

            self._saq[pool] = Queue.from_url(self.settings.url, name=pool)
        return self._saq[pool]

    def _result(self, job: JobRecord, engine: _RemoteEngine, fields: dict) -> EngineResult:
        kind = fields[b"type"].decode()
        run = run_from_json(fields[b"run"]) if fields.get(b"run") else None
        if run is not None:
            engine.last_run = run
        if kind == "cancelled":
            raise JobCancelled("cancelled on its worker")
        if kind == "failed":
            raise EaselError(fields[b"error"].decode())
        count = int(fields[b"images"])
        images = tuple(Image.open(io.BytesIO(fields[f"image{k}".encode()])).convert("RGB") for k in range(count))
        seeds = tuple(json.loads(fields[b"seeds"]))
        return EngineResult(images=images, seeds=seeds, run=run)

    async def _abort(self, job_id: int) -> None:
        """A person's cancel: mark it for the worker, then have SAQ stop the job there."""
        pool = self._pool_of.get(job_id)
        if pool is None:
            return
        if job_id not in self._sent:  # not in Redis yet (it is down, say): it ends here
            self._resolve(job_id, b"", {b"type": b"cancelled"})
        try:
            await retried(lambda: self._redis.set(self.settings.key("cancel", job_id), 1, ex=INPUT_TTL))
            saq_job = await retried(lambda: self._queue(pool).job(job_key(job_id)))
            if saq_job is None:
                return
            waiting = saq_job.status in ("queued", "new")  # not started: it ends cancelled without a worker
            await retried(lambda: saq_job.abort("cancelled"))
            if waiting:
                self._resolve(job_id, b"", {b"type": b"cancelled"})
        except (*REDIS_DOWN, redis.exceptions.RedisError) as exc:
            # The job still ends cancelled: its result, when it comes, is not delivered (progress.by_user).
            log.warning("the cancel of job #%d did not reach Redis (%s); it ends cancelled all the same", job_id, exc)

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ended(self, job_id: int) -> None:
        # The end is on disk: what follows is housekeeping, and failing it must not fail the job. An entry
        # left unacknowledged is read again on the next start and dropped then, as a duplicate.
        entry, _ = self._ends.pop(job_id, (b"", None))
        try:
            if entry:  # b"": a cancel decided here, with nothing in the stream
                await self._forget(entry)
            await retried(lambda: self._redis.delete(self.settings.key("pool", job_id),
                                                     self.settings.key("cancel", job_id)))
        except (*REDIS_DOWN, redis.exceptions.RedisError) as exc:
            log.warning("job #%d is recorded; tidying its Redis keys failed (%s), the next start will", job_id, exc)

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
                await self._on_event(entry, fields)
            last = entries[-1][0]

    async def _read_events(self) -> None:
        while True:
            try:
                reply = await self._redis.xreadgroup(GROUP, "bot", {self.settings.events: ">"}, count=100,
                                                     block=1000)
                for _, entries in reply or ():
                    for entry, fields in entries:
                        await self._on_event(entry, fields)
                self._trouble = False
            except asyncio.CancelledError:
                raise
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

    async def _on_event(self, entry: bytes, fields: dict) -> None:
        job_id, kind = int(fields[b"job"]), fields[b"type"].decode()
        if kind not in TERMINAL:
            progress = self._progress.get(job_id)
            if progress is not None:
                worker = fields.get(b"worker", b"?").decode()
                progress.where = f"on {worker}"
                if kind == "progress":
                    preview = fields.get(b"preview")
                    image = Image.open(io.BytesIO(preview)).convert("RGB") if preview else None
                    progress.step(int(fields[b"step"]), int(fields[b"total"]), image)
                elif kind == "started" and int(fields.get(b"attempt", 1)) > 1:
                    log.warning("job #%d started again on %s (attempt %s): the worker before it stopped",
                                job_id, worker, fields[b"attempt"].decode())
            await self._redis.xack(self.settings.events, GROUP, entry)
            return
        if self._resolve(job_id, entry, fields):
            return
        stored = await self.history.get(job_id)
        if stored is None or stored.status.finished or job_id in self._saving:
            # A second end of a job already recorded (at-least-once delivery): ignore it.
            log.info("ignored a duplicate %s of job #%d", kind, job_id)
            await self._forget(entry)
            return
        self._unclaimed[job_id] = (entry, fields)  # claimed when the job is sent again after a restart

    async def _forget(self, *entries: bytes) -> None:
        """Acknowledge ends that are on disk and delete them: they carry the images, megabytes each."""
        async def both():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.settings.events, GROUP, *entries)
                pipe.xdel(self.settings.events, *entries)
                await pipe.execute()
        await retried(both)

    def _resolve(self, job_id: int, entry: bytes, fields: dict) -> bool:
        waiter = self._results.get(job_id)
        if waiter is None or waiter.done():
            return False
        waiter.set_result((entry, fields))
        return True

    async def _poll(self) -> None:
        """Refresh the live workers, and fail jobs SAQ gave up on (every attempt's worker died)."""
        try:
            self._workers = await live_workers(self._redis, self.settings)
            now = time.monotonic()
            for job_id, pool in list(self._pool_of.items()):
                if job_id not in self._results:
                    continue
                saq_job = await self._queue(pool).job(job_key(job_id))
                if saq_job is None and job_id in self._sent:
                    # Sent, but Redis has no record of it (restarted without its data): send it again.
                    self._missing[job_id] = self._missing.get(job_id, 0) + 1
                    if self._missing[job_id] >= 3:
                        log.warning("job #%d is gone from Redis; sending it again", job_id)
                        self._sent.discard(job_id)
                        self._missing.pop(job_id)
                        self._spawn(self._send_until_sent(self._running[job_id], self._results[job_id]))
                    continue
                self._missing.pop(job_id, None)
                # SAQ's sweep marks a job aborted for up to 5 s before it hands it to the next attempt: only
                # a job with no attempt left has ended.
                if saq_job is None or saq_job.status not in ("aborted", "failed") or saq_job.retryable:
                    self._gone.pop(job_id, None)
                    continue
                # A worker sends its end before SAQ records it; allow a moment for it to be read.
                first = self._gone.setdefault(job_id, now)
                if now - first < 3 * self.poll_seconds:
                    continue
                progress = self._progress.get(job_id)
                if progress is not None and progress.by_user:
                    self._resolve(job_id, b"", {b"type": b"cancelled"})
                    continue
                error = (f"the workers drawing job #{job_id} stopped {saq_job.attempts} times "
                         f"({saq_job.error or 'lease ran out'}), so it is not retried; their logs may say why")
                self._resolve(job_id, b"", {b"type": b"failed", b"error": error.encode()})
        except REDIS_DOWN as exc:
            self._say_trouble(exc)
        except Exception:
            log.exception("could not read worker state from Redis")

    # ---- looking --------------------------------------------------------------------------
    @property
    def workers(self) -> list[WorkerInfo]:
        return list(self._workers)


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
