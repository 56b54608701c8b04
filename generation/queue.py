"""The job queue: persisted first, one fair line, a runner that draws, events, cancel, saving, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Callable, Mapping

from PIL import Image

from generation.engine import Engine, EngineResult, JobCancelled
from generation.events import EventKind, JobEvent, Listener
from generation.line import MAX_CRASHES, Line, QueueFull, QueueLimits, sort_out
from generation.runners import LocalRunner, Runner
from generation.saving import STORAGE_RETRY_SECONDS, remove_images, save_images, storage_trouble
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore
from storage.params import JobParams
from storage.records import JobRecord, JobStatus, Owner

# Also what the rest of easel imports from here (events, limits), though defined beside it.
__all__ = ["MAX_CRASHES", "CancelError", "EventKind", "JobEvent", "JobQueue", "QueueFull", "QueueLimits"]

log = logging.getLogger(__name__)


class CancelError(EaselError):
    """A cancel that cannot be done: unknown job, not yours, already finished."""


class Stage(StrEnum):
    WAITING = "waiting"  # back in the line after its end could not be recorded; its drawing may be kept
    TURN = "turn"  # a job drawn in several turns (an animation), back in the line between two of them
    DRAWING = "drawing"
    SAVING = "saving"  # drawn, images being saved: too late to cancel


@dataclass(eq=False)
class _Job:
    """One job out of the line (or put back after a full disk): the queue's one record of it. It is also
    the engine's Progress: steps cross from the drawing thread to the event loop without blocking either."""

    record: JobRecord
    loop: asyncio.AbstractEventLoop
    emit: Listener
    wants_preview: bool  # someone shows previews of this job: the engine makes them
    stage: Stage = Stage.DRAWING
    steps: tuple[int, int] = (0, 0)  # (done, total), for /queue: one tuple swap, so readers see a whole pair
    where: str | None = None  # where it is drawn, when not in this process ("on gpu-box-1")
    by_user: bool = False  # a person asked to cancel (not a shutdown): the job must end cancelled
    sliced: bool = True  # its runner draws it a turn at a time (else all of it at once: Redis workers)
    result: EngineResult | None = None  # drawn; kept until it is on disk, so a retry saves rather than redraws
    # A job drawn in turns (params.slices > 1, an animation): what its earlier turns drew, and how.
    frames: list[Image.Image] = field(default_factory=list)
    frame_seeds: list[int] = field(default_factory=list)
    frame_run: object = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def drawn(self) -> tuple[Image.Image, ...]:
        """The frames earlier turns drew (the runner hands them to the engine after the job's inputs)."""
        return tuple(self.frames)

    def add_turn(self, result: EngineResult) -> None:
        self.frames += result.images
        self.frame_seeds += result.seeds
        self.frame_run = result.run

    def so_far(self) -> EngineResult:
        """What its turns drew, as one result."""
        return EngineResult(images=tuple(self.frames), seeds=tuple(self.frame_seeds), run=self.frame_run)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, by_user: bool) -> None:
        self.by_user = self.by_user or by_user
        self._cancel.set()

    def step(self, done: int, total: int, preview: Image.Image | None, detail: str = "") -> None:
        self.steps = (done, total)
        slices = self.record.params.slices
        frame = (len(self.frames) + 1, slices) if slices > 1 and self.sliced else (0, 0)
        event = JobEvent(EventKind.PROGRESS, self.record, step=done, total=total, preview=preview,
                         frame=frame[0], frames=frame[1], detail=detail)
        self.loop.call_soon_threadsafe(self.emit, event)


class JobQueue:
    """One fair line of jobs, each persisted before it is acknowledged, drawn by a runner: this process's
    GPU thread (give the engine for each kind) or `easel worker` processes (give a RedisRunner)."""

    def __init__(
        self, history: History, images: ImageStore, engines: Mapping[str, Engine] | Runner, limits: QueueLimits,
        storage_retry_seconds: float = STORAGE_RETRY_SECONDS,
    ) -> None:
        self.history = history
        self.images = images
        self.runner: Runner = LocalRunner(images, engines) if isinstance(engines, Mapping) else engines
        self.storage_retry_seconds = storage_retry_seconds
        self._line = Line(limits)
        self._jobs: dict[int, _Job] = {}  # out of the line: drawing, saving; or put back, its drawing kept
        self._submit_lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._preview_watchers: dict[str, int] = {}  # platform → frontends that show its jobs' previews
        self._wake = asyncio.Event()
        self._held_until = 0.0  # loop time before which nothing new goes out (an end could not be recorded)
        self._dispatcher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    @property
    def limits(self) -> QueueLimits:
        return self._line.limits

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> list[JobRecord]:
        """Requeue what was queued or running when the process last stopped, then start handing jobs out."""
        if self._dispatcher is not None:
            raise RuntimeError("JobQueue.start() called twice")
        await self.runner.start(self._wake.set, self._wants_end)
        # Jobs submitted before start() are unfinished in history too, but already waiting here.
        unfinished = [job for job in await self.history.unfinished() if self._line.find(job.id) is None]
        again, failed = sort_out(unfinished, died_here=self.runner.counts_crashes)
        running = [job.id for job in unfinished if job.status is JobStatus.RUNNING]
        if self.runner.counts_crashes:
            await self.history.mark_crashed(running)
        else:  # still drawing on a worker, or its end waits in Redis: it comes back under the same key
            await self.history.mark_requeued(running)
        for job in failed:
            await self.history.finish(job.id, JobStatus.FAILED, error=job.error)
            self._emit(JobEvent.ending(job))
        for job in again:
            self._line.add(job)
        for job in again:
            self._emit(JobEvent(EventKind.QUEUED, job, position=self.position(job.id)))
        if again:
            log.info("recovered %d unfinished job(s): %s", len(again), ", ".join(f"#{j.id}" for j in again))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="easel-queue")
        return again

    async def stop(self) -> None:
        """Interrupt what is drawing and wait for what is saving; unfinished jobs run on the next start."""
        self._stopping = True
        for state in self._jobs.values():
            if state.stage is Stage.DRAWING:
                state.cancel(by_user=False)
        self.runner.interrupt()
        self._wake.set()
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        between = [job_id for job_id, state in self._jobs.items() if state.stage is Stage.TURN]
        if between:  # waiting for their next turn: they start again on the next start, as a clean stop leaves them
            await self.history.mark_requeued(between)
            log.info("job(s) %s stopped between two frames; they run again on next start",
                     ", ".join(f"#{job_id}" for job_id in between))
        await self.runner.close()

    async def __aenter__(self) -> JobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_on_gpu(self, function: Callable, *args: object) -> object:
        """Run function on the queue's one torch thread, after any job in progress (tools, benchmarks)."""
        if not isinstance(self.runner, LocalRunner):
            raise RuntimeError("this queue's jobs are drawn by easel worker processes, not on a GPU here")
        return await self.runner.run_on_gpu(function, *args)

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
            self.check_available(params.kind)
            self._line.check_room(owner, self._out_for(owner), per_user_limit)
            job = await self.history.add_job(owner, params, parent_id)
            if not self._jobs and not len(self._line):
                self._line.new_round()
            self._line.add(job)
            self._emit(JobEvent(EventKind.QUEUED, job, position=self.position(job.id)))
            self._held_until = 0.0  # a new job: perhaps there is room on the disk again
            self._wake.set()
            return job

    def check_available(self, kind: str) -> None:
        """Raise EngineUnavailable, with what to configure, when jobs of this kind cannot run."""
        self.runner.check_available(kind)

    def loaded_models(self) -> list[str] | None:
        """The models in memory, the one in use last; None where the drawing happens elsewhere (workers)."""
        return self.runner.loaded_models()

    async def cancel(self, job_id: int, by: Owner, admin: bool = False) -> JobRecord:
        """Cancel a waiting job at once, or ask the running one to stop at its next step."""
        state = self._jobs.get(job_id)
        out = state is not None and state.stage in (Stage.DRAWING, Stage.SAVING)
        job = state.record if out else self._line.find(job_id)
        if job is None:
            stored = await self.history.get(job_id)
            if stored is None:
                raise CancelError(f"there is no job #{job_id}")
            raise CancelError(f"job #{job_id} has already finished ({stored.status})")
        if job.owner.key != by.key and not admin:
            raise CancelError(f"job #{job_id} is not yours; only its owner or an admin can cancel it")
        if out and state.stage is Stage.SAVING:  # its images exist: say so rather than "cancelling…"
            raise CancelError(f"job #{job_id} has already finished; its images are being saved")
        if out:
            state.cancel(by_user=True)
            self.runner.cancel(job_id)
            return job
        self._line.remove(job)
        if state is not None and state.stage is Stage.TURN:  # between two frames: it ends with what it drew
            state.cancel(by_user=True)
            self._start(self._keep_partial(state))
            return job
        if state is not None:  # put back after a full disk, its drawing kept: nothing will save it now
            await self._forget(job_id)
        await self.history.finish(job_id, JobStatus.CANCELLED)
        self._emit(JobEvent.ending(replace(job, status=JobStatus.CANCELLED)))
        return job

    # ---- looking --------------------------------------------------------------------------
    def waiting(self) -> list[JobRecord]:
        """Queued jobs in the order they will run, if nobody else arrives."""
        return self._line.order()

    def running_jobs(self) -> list[tuple[JobRecord, tuple[int, int], str | None]]:
        """Every job in progress, oldest first: (job, (steps done, steps in all), where it runs); for a job drawn
        in turns here (an animation), (frames done, frames in all).
        A job whose images are being saved is still in progress: its end is not on disk yet."""
        jobs = []
        for job_id in sorted(self._jobs):
            state = self._jobs[job_id]
            if state.stage in (Stage.DRAWING, Stage.TURN) and state.record.params.slices > 1 and state.sliced:
                jobs.append((state.record, (len(state.frames), state.record.params.slices), state.where))
            elif state.stage in (Stage.DRAWING, Stage.TURN):
                jobs.append((state.record, state.steps, state.where))
            elif state.stage is Stage.SAVING:
                jobs.append((state.record, (state.record.params.effective_steps,) * 2, None))
        return jobs

    def position(self, job_id: int) -> int | None:
        """1 = runs next; 0 = running now; None = not in the queue."""
        state = self._jobs.get(job_id)
        if state is not None and state.stage is not Stage.WAITING:
            return 0  # between two turns too: it has started
        return self._line.position(job_id)

    def count_for(self, owner: Owner) -> int:
        """The owner's jobs waiting or in progress, as the per-user limit counts them."""
        return self._line.count_for(owner) + self._out_for(owner)

    def _out_for(self, owner: Owner) -> int:
        # A job waiting between two turns is in the line too, and counted there.
        return sum(s.record.owner.key == owner.key and s.stage in (Stage.DRAWING, Stage.SAVING)
                   for s in self._jobs.values())

    # ---- handing jobs out -----------------------------------------------------------------
    def _emit(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a job event listener failed on %s of job #%d", event.kind, event.job.id)

    async def _sleep(self, timeout: float | None = None) -> None:
        """Until something changes (a job submitted, room freed, a stop) or timeout seconds pass."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _fits(self, job: JobRecord) -> bool:
        state = self._jobs.get(job.id)
        return (state is not None and state.result is not None) or self.runner.has_room(job)

    async def _dispatch(self) -> None:
        """Hand jobs out in fair turns while the runner has room; each goes on in a task of its own."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            held = self._held_until - loop.time()
            if held > 0:  # an end could not be recorded (a full disk): what comes next could not be either
                await self._sleep(held)
                continue
            job = self._line.take(self._fits)
            if job is None:
                await self._sleep()
                continue
            # Out of the line and in progress (for position, limits and cancel) from this moment on.
            state = self._jobs.get(job.id)
            if state is None:
                wants_preview = self._preview_watchers.get(job.owner.platform, 0) > 0
                state = self._jobs[job.id] = _Job(job, loop, self._emit, wants_preview,
                                                  steps=(0, job.params.effective_steps),
                                                  sliced=self.runner.draws_in_turns)
            state.record, state.stage = job, Stage.DRAWING
            reserved = state.result is None
            if reserved:
                self.runner.reserve(job)
            self._start(self._run(state, reserved), name=f"easel-job-{job.id}")

    def _start(self, coroutine, name: str | None = None) -> None:
        """Run a job's coroutine in a task stop() waits for."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, state: _Job, reserved: bool) -> None:
        """One job out of the line: drawn (unless its drawing was kept), saved and recorded."""
        try:
            try:
                ending = await self._draw(state)
            finally:
                if reserved:
                    self.runner.release(state.record.id)
                self._wake.set()  # room for the next one; its drawing overlaps this one's saving
            if ending is not None:
                await self._save(state, ending)
        except Exception as exc:
            await self._recover(state, exc)

    async def _keep_partial(self, state: _Job) -> None:
        """A job drawn in turns, cancelled by its owner: it ends cancelled with the frames it has, if any."""
        try:
            if not state.frames:
                await self._end(state, JobStatus.CANCELLED)
                return
            state.result, state.stage = state.so_far(), Stage.SAVING
            await self._save(state, JobStatus.CANCELLED)
        except Exception as exc:
            await self._recover(state, exc)

    async def _draw(self, state: _Job) -> JobStatus | None:
        """Record the job running and have the runner draw it (a job in turns: its next turn); the status to
        save it with (DONE, or CANCELLED with the frames it has), or None when it ended (failed, cancelled),
        went back for the next start, or back in the line for its next turn."""
        job = state.record
        try:
            if job.status is not JobStatus.RUNNING:  # its first turn
                job = state.record = replace(job, status=JobStatus.RUNNING,
                                             started_at=await self.history.mark_running(job.id))
                self._emit(JobEvent(EventKind.STARTED, job, position=0))
            if state.cancelled:  # while it was being recorded running
                raise JobCancelled("cancelled before it started")
            if state.result is None:
                drawn = await self.runner.draw(job, state)
                if job.params.slices == 1 and not drawn.more:
                    state.result = drawn
                else:
                    state.add_turn(drawn)
                    if (drawn.more or len(state.frames) < job.params.slices) and not state.by_user:
                        # Its next frame (or slice of training) takes a turn like anyone's job: whoever was served
                        # least recently goes first, and the job goes on when its turn comes round again.
                        state.stage = Stage.TURN
                        if job.params.BACKGROUND:
                            self._line.add(job)  # behind its owner's own waiting jobs too
                        else:
                            self._line.put_back(job)
                        return None
                    state.result = state.so_far()
            if state.by_user:
                # The cancel came after the last step the engine could stop at; the person was told
                # "cancelling…", so the job ends cancelled rather than delivering anyway (an animation
                # with the frames it has).
                raise JobCancelled("cancelled as it finished")
            state.stage = Stage.SAVING  # from here a cancel is refused: the images are as good as delivered
            return JobStatus.DONE
        except JobCancelled:
            if self._stopping and not state.by_user:
                # Shutting down, not a person's cancel: leave it unfinished so the next start runs it.
                self._jobs.pop(job.id, None)
                await self.history.mark_requeued([job.id])  # a clean stop, not a crash
                log.info("job #%d interrupted by shutdown; it will run again on next start", job.id)
                return None
            if state.frames:  # an animation keeps the frames drawn before the cancel
                state.result, state.stage = state.so_far(), Stage.SAVING
                return JobStatus.CANCELLED
            await self._end(state, JobStatus.CANCELLED)
        except EaselError as exc:
            await self._end(state, JobStatus.FAILED, error=str(exc))
        except Exception:
            log.exception("job #%d failed", job.id)
            await self._end(state, JobStatus.FAILED, error=f"something went wrong with job #{job.id}")
        return None

    async def _save(self, state: _Job, status: JobStatus = JobStatus.DONE) -> None:
        """Save a drawn job's images and record it done (or cancelled, with the frames an animation has); a
        storage problem is raised for _recover."""
        job, result = state.record, state.result
        try:
            images = await asyncio.to_thread(save_images, self.images, job, result)
        except Exception as exc:
            if storage_trouble(exc):  # drawn, but not saved: it waits for room, not fails
                raise
            log.exception("job #%d could not be saved", job.id)
            await self._end(state, JobStatus.FAILED, error=f"something went wrong with job #{job.id}")
            return
        try:
            await self.history.finish(job.id, status, run=result.run, images=images)
        except BaseException:  # not recorded: its files would be orphans, and the retry writes new ones
            remove_images(images)
            raise
        await self._forget(job.id)
        self._emit(JobEvent.ending(await self.history.get(job.id)))

    async def _end(self, state: _Job, status: JobStatus, error: str | None = None) -> None:
        """Record a job failed or cancelled, with how its engine was set up (what matters most when a job
        fails: out of memory, say)."""
        job = state.record
        await self.history.finish(job.id, status, error=error, run=self.runner.run_info(job))
        await self._forget(job.id)
        self._emit(JobEvent.ending(replace(job, status=status, error=error)))

    async def _forget(self, job_id: int) -> None:
        """The job's end is on disk: it is no longer in progress, and the runner may let go of it."""
        self._jobs.pop(job_id, None)
        await self.runner.ended(job_id)

    async def _wants_end(self, job_id: int) -> bool:
        """Whether a drawing that came back for a job not out now is still to be saved; else it is a second
        copy (at-least-once delivery) of one that is saved, or being saved."""
        state = self._jobs.get(job_id)
        if state is not None and state.result is not None:
            return False
        stored = await self.history.get(job_id)
        return stored is not None and not stored.status.finished

    async def _recover(self, state: _Job, exc: Exception) -> None:
        """A job whose end could not be recorded: back in line on a storage problem, else failed."""
        job_id = state.record.id
        if not storage_trouble(exc):
            log.error("could not record the end of job #%d", job_id, exc_info=exc)
            error = f"something went wrong with job #{job_id}"
            with contextlib.suppress(Exception):
                await self.history.finish(job_id, JobStatus.FAILED, error=error)
            with contextlib.suppress(Exception):
                await self._forget(job_id)
            self._emit(JobEvent.ending(replace(state.record, status=JobStatus.FAILED, error=error)))
            return
        # A full disk, a database that cannot be written: it waits at the head of its owner's line, and
        # nothing new goes out until the retry (a new job ends the wait early: room again?).
        reason = getattr(exc, "strerror", None) or str(exc)
        message = (f"job #{job_id} could not be saved ({reason}); it waits in the queue and runs again "
                   f"in {self.storage_retry_seconds:g} s — free some space in {self.images.root}")
        log.error(message)  # once per attempt, not per line of a traceback
        with contextlib.suppress(Exception):  # may fail too on a full disk; the job is safe in memory
            await self.history.mark_requeued([job_id])
        state.record = replace(state.record, status=JobStatus.QUEUED, started_at=None)
        state.stage, state.where = Stage.WAITING, None
        self._line.put_back(state.record)
        self._held_until = asyncio.get_running_loop().time() + self.storage_retry_seconds
        self._wake.set()
        self._emit(JobEvent(EventKind.STALLED, state.record, position=self.position(job_id), error=message))
