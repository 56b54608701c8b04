"""Where the jobs the line hands out are drawn: the Runner seam, and LocalRunner (this process's GPU thread).

The other runner, RedisRunner (generation/redis_runner.py), sends them to `easel worker` processes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Mapping, Protocol

from PIL import Image

from generation.engine import Engine, EngineResult, EngineUnavailable, Progress
from storage.images import ImageStore
from storage.records import JobRecord, RunInfo

log = logging.getLogger(__name__)


class Drawing(Progress, Protocol):
    """What a runner gets with a job: the engine's Progress, where to say the job is drawn, and for a job drawn
    in turns (an animation) the frames its earlier turns drew."""

    where: str | None  # None: here; else words for /queue ("on gpu-box-1")
    drawn: tuple[Image.Image, ...]


class Runner(Protocol):
    """Draws what the queue hands it, as far as it has room; the queue keeps the line, history and events."""

    # True: a job history calls running died with this process (a crash to count); False: it may still
    # be drawing elsewhere, and will come back.
    counts_crashes: bool
    # True: draw() draws one turn of a job drawn in turns (one frame of an animation), so the queue hands the
    # next turn out fairly; False: draw() draws all of it (a worker elsewhere, which other jobs do not wait for).
    draws_in_turns: bool

    async def start(self, wake: Callable[[], None], wants_end: Callable[[int], Awaitable[bool]]) -> None:
        """Get ready; call `wake` when there is room again; `wants_end(job_id)` says whether a drawing
        that comes back for a job not out now is still wanted (else it is a second copy of one on disk)."""
        ...

    async def close(self) -> None: ...

    def check_available(self, kind: str) -> None:
        """Raise EngineUnavailable, with what to configure, when jobs of this kind cannot run."""
        ...

    def has_room(self, job: JobRecord) -> bool:
        """Whether this job could start drawing now (a worker for its kind and model has a free slot)."""
        ...

    def loaded_models(self) -> list[str] | None:
        """The Stable Diffusion models in memory, the one in use last; None when this runner cannot know."""
        ...

    def reserve(self, job: JobRecord) -> None:
        """The job leaves the line to be drawn: take the room has_room saw (release gives it back)."""
        ...

    def release(self, job_id: int) -> None:
        """Drawing is over (or never began): the room is free."""
        ...

    async def draw(self, job: JobRecord, progress: Drawing) -> EngineResult:
        """Draw one job; raises JobCancelled, EaselError (in words for people), or anything else (a bug)."""
        ...

    def cancel(self, job_id: int) -> None:
        """A person cancelled the job being drawn (progress.cancelled is already set)."""
        ...

    def interrupt(self) -> None:
        """The bot is stopping: every drawing still awaited ends now with JobCancelled."""
        ...

    def run_info(self, job: JobRecord) -> RunInfo | None:
        """How this job's engine was set up, kept with a failed or cancelled job."""
        ...

    async def ended(self, job_id: int) -> None:
        """The job's end is on disk: anything kept for it may go."""
        ...


class LocalRunner:
    """One job at a time on this process's one torch thread, with an engine for each kind."""

    counts_crashes = True
    draws_in_turns = True

    def __init__(self, images: ImageStore, engines: Mapping[str, Engine]) -> None:
        self.images = images
        self.engines = dict(engines)  # the engine for each kind; one engine may serve several kinds
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")
        self._busy = False
        self._closed = False
        self._kept: dict[int, tuple[Image.Image, ...]] = {}  # a job drawn in turns: its inputs, read once

    async def start(self, wake: Callable[[], None], wants_end: Callable[[int], Awaitable[bool]]) -> None:
        # The torch thread runs long stretches of Python (schedulers, module calls) holding the GIL;
        # the default 5 ms switch interval let the event loop wait 10–20 ms behind it, 1 ms keeps
        # it under 10 (benchmarks/queue_overhead.py).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))

    async def close(self) -> None:
        if self._closed:  # a queue stopped twice
            return
        self._closed = True
        # An engine that keeps a job in memory between its turns (a training) writes it down first, on the
        # thread that owns it.
        for engine in {id(engine): engine for engine in self.engines.values()}.values():
            keep = getattr(engine, "close", None)
            if keep is not None:
                try:
                    await self.run_on_gpu(keep)
                except Exception:
                    log.exception("%s could not save what it kept between turns", type(engine).__name__)
        await asyncio.to_thread(self._gpu.shutdown, wait=True)

    def check_available(self, kind: str) -> None:
        engine = self.engines.get(kind)
        if engine is None:
            raise EngineUnavailable(f"{kind} jobs are not set up on this easel")
        reason = engine.unavailable()
        if reason:
            raise EngineUnavailable(reason)

    def loaded_models(self) -> list[str] | None:
        engine = self.engines.get("txt2img")
        return engine.loaded if engine is not None else None

    def has_room(self, job: JobRecord) -> bool:
        return not self._busy  # one drawing at a time; the last one's images may still be being saved

    def reserve(self, job: JobRecord) -> None:
        self._busy = True

    def release(self, job_id: int) -> None:
        self._busy = False

    async def draw(self, job: JobRecord, progress: Drawing) -> EngineResult:
        self.check_available(job.params.kind)  # e.g. a job recovered from before its engine was unset
        inputs = self._kept.get(job.id)
        if inputs is None:
            inputs = tuple([await asyncio.to_thread(self.images.load_input, sha) for sha in job.params.inputs])
            if job.params.slices > 1:
                self._kept[job.id] = inputs
        return await self.run_on_gpu(self.engines[job.params.kind].run, job.params, inputs + progress.drawn, progress)

    def cancel(self, job_id: int) -> None:
        pass  # the engine stops at its next step: it reads progress.cancelled

    def interrupt(self) -> None:
        pass  # likewise

    def run_info(self, job: JobRecord) -> RunInfo | None:
        engine = self.engines.get(job.params.kind)
        return engine.run_info() if engine is not None else None

    async def ended(self, job_id: int) -> None:
        self._kept.pop(job_id, None)

    async def run_on_gpu(self, function: Callable, *args: object) -> object:
        """Run function on the one torch thread, after any job in progress (tools, benchmarks)."""
        return await asyncio.get_running_loop().run_in_executor(self._gpu, function, *args)
