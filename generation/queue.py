"""One queue, one worker, one GPU thread: jobs persisted first, fair turns, progress, cancel, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Awaitable, Callable, Mapping, TypeVar

from PIL import Image

from generation.engine import Engine, EngineResult, EngineUnavailable, JobCancelled
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore, infotext
from storage.records import ImageRecord, JobKind, JobParams, JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueFull(EaselError):
    """A per-user or global queue limit would be exceeded."""


class CancelError(EaselError):
    """A cancel that cannot be done: unknown job, not yours, already finished."""


class EventKind(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    STALLED = "stalled"  # back in the queue because its end could not be recorded (a full disk); error says why
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job; frontends turn these into messages."""

    kind: EventKind
    job: JobRecord
    position: int | None = None
    step: int = 0
    total: int = 0
    preview: Image.Image | None = None
    error: str | None = None
    recovered: bool = False
    replayed: bool = False  # a finished job's end, sent again because its platform had not had it

    @classmethod
    def ending(cls, job: JobRecord, replayed: bool = False) -> JobEvent:
        """The event that tells how a finished job ended."""
        kind = {JobStatus.DONE: EventKind.DONE, JobStatus.FAILED: EventKind.FAILED,
                JobStatus.CANCELLED: EventKind.CANCELLED}[job.status]
        return cls(kind, job, error=job.error, replayed=replayed)

    @property
    def finished(self) -> bool:
        return self.kind in (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED)


@dataclass(frozen=True)
class QueueLimits:
    """How much may wait: per person (queued + running) and in total."""

    max_per_user: int = 5
    max_total: int = 50


Listener = Callable[[JobEvent], None]

MAX_CRASHES = 3  # a job the process died under this many times is failed, not retried
STORAGE_RETRY_SECONDS = 30.0  # how long the worker waits for room on a full disk before trying again


def storage_trouble(exc: BaseException) -> bool:
    """Whether a job could not be recorded for reasons of the disk or database, not of the job itself."""
    return isinstance(exc, (OSError, sqlite3.Error))


def _next_turn(queues: dict[str, deque[JobRecord]], served: dict[str, int]) -> str:
    """Whose turn it is: whoever was served least recently (never = first); ties go to the oldest job."""
    return min(queues, key=lambda key: (served.get(key, 0), queues[key][0].id))


class _Progress:
    """Handed to the engine: crosses from the GPU thread to the event loop without blocking either."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job: JobRecord, emit: Listener,
                 wants_preview: bool = True) -> None:
        self._loop = loop
        self.wants_preview = wants_preview  # someone shows previews of this job: the engine makes them
        self._job = job
        self._emit = emit
        self._cancel = threading.Event()
        self.by_user = False  # a person asked to cancel (not a shutdown): the job must end cancelled
        self.last: tuple[int, int] = (0, job.params.effective_steps)  # (done, total), for /queue
        self.where: str | None = None  # where it runs, when not in this process ("on gpu-box-1")
        self.on_cancel: Callable[[], None] | None = None  # called on the loop when a cancel is asked

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, by_user: bool) -> None:
        self.by_user = self.by_user or by_user
        self._cancel.set()
        if self.on_cancel is not None:
            self.on_cancel()

    def step(self, done: int, total: int, preview: Image.Image | None) -> None:
        self.last = (done, total)  # one tuple swap: readers on the loop see the old or the new pair
        event = JobEvent(EventKind.PROGRESS, self._job, step=done, total=total, preview=preview)
        self._loop.call_soon_threadsafe(self._emit, event)


class JobQueue:
    """Runs jobs one at a time on a single owned thread, taking turns between people."""

    def __init__(
        self, history: History, images: ImageStore, engines: Mapping[JobKind, Engine], limits: QueueLimits,
        storage_retry_seconds: float = STORAGE_RETRY_SECONDS,
    ) -> None:
        self.storage_retry_seconds = storage_retry_seconds
        self.history = history
        self.images = images
        self.engines = dict(engines)  # the engine for each kind; one engine may serve several kinds
        self.limits = limits
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")
        self._waiting: dict[str, deque[JobRecord]] = {}  # each person's waiting jobs, oldest first
        self._served: dict[str, int] = {}  # person → when they last had a turn, since the queue was idle
        self._turns_taken = 0
        self._submit_lock = asyncio.Lock()
        self._running: dict[int, JobRecord] = {}  # drawing now, oldest first (one locally, one per remote slot)
        self._progress: dict[int, _Progress] = {}
        self._saving: dict[int, JobRecord] = {}  # drawn, images being saved: too late to cancel
        self._listeners: list[Listener] = []
        self._preview_watchers: dict[str, int] = {}  # platform → frontends that show its jobs' previews
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> list[JobRecord]:
        """Requeue what was queued or running when the process last died, then start the worker."""
        if self._worker is not None:
            raise RuntimeError("JobQueue.start() called twice")
        # The torch thread runs long stretches of Python (schedulers, module calls) holding the GIL;
        # the default 5 ms switch interval let the event loop wait 10–20 ms behind it, 1 ms keeps
        # it under 10 (benchmarks/queue_overhead.py).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        # Jobs submitted before start() are unfinished in history too, but already waiting here.
        known = {job.id for queue in self._waiting.values() for job in queue}
        unfinished = [job for job in await self.history.unfinished() if job.id not in known]
        recovered = await self._recover_unfinished(unfinished)
        for job in recovered:
            self._waiting.setdefault(job.owner.key, deque()).append(job)
        for job in recovered:
            self._emit(JobEvent(EventKind.QUEUED, job, position=self.position(job.id), recovered=True))
        if recovered:
            log.info("recovered %d unfinished job(s): %s", len(recovered), ", ".join(f"#{j.id}" for j in recovered))
        self._worker = asyncio.create_task(self._work(), name="easel-queue-worker")
        self._wake.set()
        return recovered

    async def _recover_unfinished(self, unfinished: list[JobRecord]) -> list[JobRecord]:
        """What to queue again of the jobs history left unfinished; here the process died under the running one."""
        # A job still marked running means the process died under it; one that keeps doing so must
        # not take easel down on every start, so after MAX_CRASHES it fails instead.
        crashed = [job for job in unfinished if job.status is JobStatus.RUNNING]
        await self.history.mark_crashed(job.id for job in crashed)
        recovered = []
        for job in unfinished:
            crashes = job.crashes + (job.status is JobStatus.RUNNING)
            if crashes >= MAX_CRASHES:
                error = (f"easel stopped {crashes} times while job #{job.id} ran, so it is not retried; "
                         "the log (data/easel.log) may say why")
                await self.history.finish(job.id, JobStatus.FAILED, error=error)
                self._emit(JobEvent.ending(replace(job, status=JobStatus.FAILED, error=error)))
                continue
            recovered.append(replace(job, status=JobStatus.QUEUED, started_at=None, crashes=crashes))
        return recovered

    async def stop(self) -> None:
        """Stop after interrupting the running job; it stays unfinished in history and runs on next start."""
        self._stopping = True
        for progress in list(self._progress.values()):
            progress.cancel(by_user=False)
        if self._worker is not None:
            self._wake.set()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._gpu.shutdown, wait=True)

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_on_gpu(self, function: Callable, *args: object) -> object:
        """Run function on the queue's one torch thread, after any job in progress (tools, benchmarks)."""
        return await asyncio.get_running_loop().run_in_executor(self._gpu, function, *args)

    def watch_previews(self, platform: str) -> Callable[[], None]:
        """Have the engine draw previews for this platform's jobs (nobody else shows them, and each costs
        a wait for the GPU); returns a function that stops it."""
        self._preview_watchers[platform] = self._preview_watchers.get(platform, 0) + 1

        def unwatch() -> None:
            self._preview_watchers[platform] -= 1
        return unwatch

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener (on the event loop) for every job event; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # ---- submitting and cancelling --------------------------------------------------------
    async def submit(
        self, owner: Owner, params: JobParams, parent_id: int | None = None, per_user_limit: bool = True
    ) -> JobRecord:
        """Check limits, persist the job, then queue it. Nothing is acknowledged before it is on disk."""
        # The check and the append straddle a database write; without the lock, commands arriving
        # together (a Discord burst) would all pass the check before any of them was counted.
        async with self._submit_lock:
            return await self._submit(owner, params, parent_id, per_user_limit)

    def check_available(self, kind: JobKind) -> None:
        """Raise EngineUnavailable, with what to configure, when jobs of this kind cannot run."""
        engine = self.engines.get(kind)
        if engine is None:
            raise EngineUnavailable(f"{kind} jobs are not set up on this easel")
        reason = engine.unavailable()
        if reason:
            raise EngineUnavailable(reason)

    async def _submit(self, owner: Owner, params: JobParams, parent_id: int | None, per_user_limit: bool) -> JobRecord:
        self.check_available(params.kind)
        mine = self.count_for(owner)
        if per_user_limit and mine >= self.limits.max_per_user:
            raise QueueFull(
                f"you already have {mine} job(s) waiting or running (limit {self.limits.max_per_user}); "
                "wait for one to finish or /cancel one"
            )
        total = sum(len(q) for q in self._waiting.values())
        if total >= self.limits.max_total:
            raise QueueFull(f"the queue is full ({total} jobs waiting); try again in a few minutes")
        job = await self.history.add_job(owner, params, parent_id)
        self._waiting.setdefault(owner.key, deque()).append(job)
        self._emit(JobEvent(EventKind.QUEUED, job, position=self.position(job.id)))
        self._wake.set()
        return job

    async def cancel(self, job_id: int, by: Owner, admin: bool = False) -> JobRecord:
        """Cancel a waiting job at once, or ask the running one to stop at its next step."""
        job = self._find(job_id)
        if job is None:
            stored = await self.history.get(job_id)
            if stored is None:
                raise CancelError(f"there is no job #{job_id}")
            raise CancelError(f"job #{job_id} has already finished ({stored.status})")
        if job.owner.key != by.key and not admin:
            raise CancelError(f"job #{job_id} is not yours; only its owner or an admin can cancel it")
        if job_id in self._saving:  # its images exist and are being saved: say so rather than "cancelling…"
            raise CancelError(f"job #{job_id} has already finished; its images are being saved")
        if job_id in self._running:
            self._progress[job_id].cancel(by_user=True)
            return job
        queue = self._waiting[job.owner.key]
        queue.remove(job)
        if not queue:
            del self._waiting[job.owner.key]
        await self.history.finish(job_id, JobStatus.CANCELLED)
        self._emit(JobEvent.ending(replace(job, status=JobStatus.CANCELLED)))
        return job

    # ---- looking --------------------------------------------------------------------------
    def waiting(self) -> list[JobRecord]:
        """Queued jobs in the order they will run, if nobody else arrives."""
        queues = {key: deque(jobs) for key, jobs in self._waiting.items()}
        served, turn = dict(self._served), self._turns_taken
        order: list[JobRecord] = []
        while queues:
            key = _next_turn(queues, served)
            order.append(queues[key].popleft())
            if not queues[key]:
                del queues[key]
            turn += 1
            served[key] = turn
        return order

    @property
    def running(self) -> JobRecord | None:
        """The oldest job in progress (drawing, or its images being saved), or None when idle."""
        jobs = self.running_jobs()
        return jobs[0][0] if jobs else None

    def running_jobs(self) -> list[tuple[JobRecord, tuple[int, int], str | None]]:
        """Every job in progress, oldest first: (job, (steps done, steps in all), where it runs).
        A job whose images are being saved is still in progress: its end is not on disk yet."""
        saving = [(job, (job.params.effective_steps,) * 2, None) for job in self._saving.values()]
        drawing = [(job, self._progress[job.id].last, self._progress[job.id].where) for job in self._running.values()]
        return sorted(saving + drawing, key=lambda entry: entry[0].id)

    def position(self, job_id: int) -> int | None:
        """1 = runs next; 0 = running now; None = not in the queue."""
        if job_id in self._running:
            return 0
        for index, job in enumerate(self.waiting(), start=1):
            if job.id == job_id:
                return index
        return None

    def count_for(self, owner: Owner) -> int:
        running = sum(job.owner.key == owner.key for job in self._running.values())
        saving = sum(job.owner.key == owner.key for job in self._saving.values())
        return len(self._waiting.get(owner.key, ())) + running + saving

    def _find(self, job_id: int) -> JobRecord | None:
        if job_id in self._running:
            return self._running[job_id]
        if job_id in self._saving:
            return self._saving[job_id]
        return next((job for q in self._waiting.values() for job in q if job.id == job_id), None)

    # ---- the worker -----------------------------------------------------------------------
    def _emit(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a job event listener failed on %s of job #%d", event.kind, event.job.id)

    def _take_next(self, fits: Callable[[JobRecord], bool] | None = None) -> JobRecord | None:
        """The next job by fair turns; with `fits`, among the people whose next job fits somewhere now."""
        if not self._waiting:
            self._served.clear()  # idle: everyone starts the next round equal
            return None
        candidates = self._waiting if fits is None else {k: q for k, q in self._waiting.items() if fits(q[0])}
        if not candidates:
            return None
        key = _next_turn(candidates, self._served)
        job = self._waiting[key].popleft()
        if not self._waiting[key]:
            del self._waiting[key]
        self._turns_taken += 1
        self._served[key] = self._turns_taken
        return job

    async def _work(self) -> None:
        # The images of one job are saved and recorded while the next one draws: the GPU does not
        # wait for PNG encoding, fsync and SQLite between queued jobs (benchmarks/gpu.py, "idle").
        saving: tuple[JobRecord, asyncio.Task] | None = None
        try:
            while not self._stopping:
                job = self._take_next()
                if job is None:
                    if saving is not None:  # nothing else to draw: let the last save end first
                        await self._settle(*saving)
                        saving = None
                        continue
                    await self._wait_for_wake()
                    continue
                drawn = await self._settle(job, self._draw(job))
                if saving is not None:
                    await self._settle(*saving)
                    saving = None
                if drawn is not None:
                    saving = (drawn[0], asyncio.create_task(self._complete(*drawn)))
        finally:
            if saving is not None:
                await self._settle(*saving)

    async def _settle(self, job: JobRecord, step: Awaitable[T]) -> T | None:
        """Await one step of a job (drawing, saving); a failure goes to _recover and gives None."""
        try:
            return await step
        except Exception as exc:
            await self._recover(job, exc)
            return None

    async def _wait_for_wake(self, timeout: float | None = None) -> None:
        """Sleep until something changes (a job submitted, a slot or a stop) or timeout seconds pass."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _recover(self, job: JobRecord, exc: Exception) -> None:
        """A job whose end could not be recorded: wait for room on a storage problem, else fail it."""
        if storage_trouble(exc):  # a full disk, a database that cannot be written
            await self._wait_for_storage(job, exc)
            return
        log.error("could not record the end of job #%d", job.id, exc_info=exc)
        error = f"something went wrong with job #{job.id}"
        with contextlib.suppress(Exception):
            await self.history.finish(job.id, JobStatus.FAILED, error=error)
        self._emit(JobEvent.ending(replace(job, status=JobStatus.FAILED, error=error)))

    async def _wait_for_storage(self, job: JobRecord, exc: Exception) -> None:
        """Put a job whose end could not be recorded back at the head of the line, then wait for room."""
        reason = getattr(exc, "strerror", None) or str(exc)
        message = (f"job #{job.id} could not be saved ({reason}); it waits in the queue and runs again "
                   f"in {self.storage_retry_seconds:g} s — free some space in {self.images.root}")
        log.error(message)  # once per attempt, not per line of a traceback
        with contextlib.suppress(Exception):  # may fail too on a full disk; the job is safe in memory
            await self.history.mark_requeued([job.id])
        job = replace(job, status=JobStatus.QUEUED, started_at=None)
        self._waiting.setdefault(job.owner.key, deque()).appendleft(job)
        self._emit(JobEvent(EventKind.STALLED, job, position=self.position(job.id), error=message))
        await self._wait_for_wake(self.storage_retry_seconds)  # a stop, or a new job (room again?), ends it early

    async def _draw(self, job: JobRecord) -> tuple[JobRecord, Engine, EngineResult] | None:
        """Run one job on the GPU; returns what to save, or None when it already ended (failed, cancelled)."""
        loop = asyncio.get_running_loop()
        job = replace(job, status=JobStatus.RUNNING)
        engine = self.engines[job.params.kind]
        # Running (for position, limits and cancel) from the moment it leaves the line, not only
        # once the database write below returns: in between it would be nowhere.
        self._running[job.id] = job
        self._progress[job.id] = progress = _Progress(
            loop, job, self._emit, wants_preview=self._preview_watchers.get(job.owner.platform, 0) > 0)
        try:
            job = self._running[job.id] = replace(job, started_at=await self.history.mark_running(job.id))
            self._emit(JobEvent(EventKind.STARTED, job, position=0))
            result = await self._execute(engine, job, progress)
            if progress.by_user:
                # The cancel came after the last step the engine could stop at; the person was told
                # "cancelling…", so the job ends cancelled rather than delivering anyway.
                raise JobCancelled("cancelled as it finished")
            self._saving[job.id] = job  # from here a cancel is refused: the images are as good as delivered
            return job, engine, result
        except JobCancelled:
            if self._stopping and not progress.by_user:
                # Shutting down, not a person's cancel: leave it unfinished so the next start runs it.
                await self.history.mark_requeued([job.id])  # a clean stop, not a crash
                log.info("job #%d interrupted by shutdown; it will run again on next start", job.id)
                return None
            await self._finish(job, engine, JobStatus.CANCELLED)
        except EaselError as exc:
            await self._finish(job, engine, JobStatus.FAILED, error=str(exc))
        except Exception:
            log.exception("job #%d failed", job.id)
            await self._finish(job, engine, JobStatus.FAILED, error=f"something went wrong with job #{job.id}")
        finally:
            self._running.pop(job.id, None)
            self._progress.pop(job.id, None)
        return None

    async def _execute(self, engine: Engine, job: JobRecord, progress: _Progress) -> EngineResult:
        """Draw a job: here on the one GPU thread; the Redis queue sends it to a worker instead."""
        inputs = tuple([await asyncio.to_thread(self.images.load_input, sha) for sha in job.params.inputs])
        return await self.run_on_gpu(engine.run, job.params, inputs, progress)

    async def _complete(self, job: JobRecord, engine: Engine, result: EngineResult) -> None:
        """Save a drawn job's images and record it done; a storage problem is raised for _recover."""
        try:
            try:
                images = await asyncio.to_thread(self._save, job, result)
            except Exception as exc:
                if storage_trouble(exc):  # drawn, but not saved: it waits for room, not fails
                    raise
                log.exception("job #%d could not be saved", job.id)
                await self._finish(job, engine, JobStatus.FAILED, error=f"something went wrong with job #{job.id}")
                return
            try:
                await self.history.finish(job.id, JobStatus.DONE, run=result.run, images=images)
            except BaseException:  # not recorded: its files would be orphans, and the retry writes new ones
                _remove(images)
                raise
            await self._ended(job.id)
            self._emit(JobEvent.ending(await self.history.get(job.id)))
        finally:
            self._saving.pop(job.id, None)

    async def _finish(self, job: JobRecord, engine: Engine, status: JobStatus, error: str | None = None) -> None:
        # How the engine was set up matters most when a job fails (out of memory, say): keep it.
        await self.history.finish(job.id, status, error=error, run=engine.run_info())
        await self._ended(job.id)
        self._emit(JobEvent.ending(replace(job, status=status, error=error)))

    async def _ended(self, job_id: int) -> None:
        """A job's end is on disk (the Redis queue acknowledges its result message here)."""

    def _save(self, job: JobRecord, result) -> list[ImageRecord]:
        records = []
        try:
            for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
                path = self.images.save_output(job.id, index, image, infotext(job.params, seed, result.run))
                records.append(ImageRecord(job_id=job.id, index=index, seed=seed, path=str(path)))
        except BaseException:
            _remove(records)  # all of a job's images or none: the rerun writes them all again
            raise
        return records


def _remove(images: list[ImageRecord]) -> None:
    """Delete the files of images that will not be recorded; one already gone is fine."""
    for image in images:
        with contextlib.suppress(OSError):
            os.unlink(image.path)
