"""`easel worker`: draws jobs from Redis on this machine's GPU, one at a time, models kept resident.

The bot decides what runs next; a worker takes what SAQ hands it from its pool's queue, sends
progress and the finished images (PNG bytes) back over the events stream (generation/wire.py), and
heartbeats while it draws so that a worker that dies hands its job on. It needs no database and no
shared disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PIL import Image

from generation.engine import EngineResult, JobCancelled, draw_whole
from generation.engines import EngineConfig, build_engines
from generation.redis_link import REDIS_DOWN, connect, retried
from generation.wire import (DRAW, Cancelled, Done, Event, Failed, Progressed, RedisSettings, Started, WorkerInfo,
                             is_end)
from storage.errors import EaselError
from storage.images import png_bytes
from storage.params import JobParams, params_from_json

log = logging.getLogger(__name__)

EVENTS_KEPT = 10_000  # the stream is trimmed to about this many entries
ENDED_KEPT = 7 * 24 * 3600  # how long a job's "ended" mark stops a second delivery of it from being drawn


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}".replace(":", "-")


class _Progress:
    """The engine's Progress on a worker: steps go to the stream, a cancel comes from the bot."""

    def __init__(self, loop: asyncio.AbstractEventLoop, job_id: int, worker: str,
                 send: Callable[[Event], object], wants_preview: bool) -> None:
        self._loop, self._job_id, self._worker, self._send = loop, job_id, worker, send
        self.wants_preview = wants_preview
        self._cancel = threading.Event()
        self.last = (0, 0)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def step(self, done: int, total: int, preview: Image.Image | None, detail: str = "") -> None:
        self.last = (done, total)
        data = png_bytes(preview, compress_level=1) if preview is not None else None
        event = Progressed(self._job_id, self._worker, done, total, data, detail)
        asyncio.run_coroutine_threadsafe(self._send(event), self._loop)


class _OneLineWhenRedisIsDown(logging.Filter):
    """SAQ logs a full traceback per loop and second while Redis is away; one line says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, REDIS_DOWN):
            record.msg, record.args = f"{record.getMessage()}: Redis is unreachable ({error})", ()
            record.exc_info = record.exc_text = None
        return True


class Worker:
    """One worker process: the engines of its kinds, one GPU thread, one SAQ worker on its pool's queue."""

    def __init__(self, settings: RedisSettings, config: EngineConfig, kinds: tuple[str, ...], name: str,
                 models: tuple[str, ...] = ()) -> None:
        from generation.device import device_name  # imports torch

        self.settings, self.kinds, self.name, self.models = settings, kinds, name, models
        self.pool = settings.pool(kinds, models)
        self.engines = build_engines(config, kinds)
        self.gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")
        self.device = device_name(config.generation.device)
        self.done = 0
        self.running: int | None = None
        self.free_since = time.time()  # when it last finished a job (or started): dispatch delay is measured from it
        self.redis = None

    async def send(self, event: Event) -> None:
        """Add an event to the stream; an end also marks its job ended, in the same transaction."""
        fields = event.to_fields()

        async def add():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self.settings.events, fields, maxlen=EVENTS_KEPT, approximate=True)
                if is_end(event):
                    pipe.set(self.settings.ended_key(event.job), 1, ex=ENDED_KEPT)
                await pipe.execute()
        await retried(add)

    async def draw(self, ctx: dict, *, job_id: int, params: str, previews: bool = False) -> dict:
        """One job, as SAQ hands it over; its end always goes back as one end event."""
        saq_job = ctx["job"]
        if await retried(lambda: self.redis.exists(self.settings.ended_key(job_id))):
            # SAQ delivers at least once: a worker that died after sending the end, or a lease that ran out
            # on a stalled machine, hands a job over again. Its end is in the stream already.
            log.info("job #%d has ended already (SAQ handed it over again); not drawn twice", job_id)
            return {"ended": "before"}
        job = params_from_json(params)
        progress = _Progress(asyncio.get_running_loop(), job_id, self.name, self.send, previews)
        self.running = job_id
        await self.send(Started(job_id, self.name, saq_job.attempts, self.free_since))
        beat = asyncio.create_task(self._heartbeat(saq_job, progress, job_id))
        try:
            result = await self._run(job_id, job, progress)
        except JobCancelled:
            await self.send(Cancelled(job_id, self.name))
            return {"ended": "cancelled"}
        except Exception as exc:  # an EaselError says what to do in words; anything else is our bug, logged
            if not isinstance(exc, EaselError):
                log.exception("job #%d failed", job_id)
            error = str(exc) if isinstance(exc, EaselError) else f"something went wrong with job #{job_id}"
            await self.send(Failed(job_id, self.name, error, self.engines[job.kind].run_info()))
            return {"ended": "failed"}
        finally:
            beat.cancel()
            self.running = None
            self.free_since = time.time()
        encoded = await asyncio.to_thread(lambda: tuple(png_bytes(image, compress_level=1) for image in result.images))
        await self.send(Done(job_id, self.name, encoded, result.seeds, result.run))
        self.done += 1
        return {"ended": "done", "images": len(result.images)}

    async def _run(self, job_id: int, job: JobParams, progress: _Progress) -> EngineResult:
        """Fetch the job's inputs from Redis and draw it on the GPU thread."""
        future = None
        try:
            inputs = []
            for sha in job.inputs:
                data = await self.redis.get(self.settings.input_key(sha))
                if data is None:
                    raise EaselError(f"the input image of job #{job_id} is no longer in Redis; send it again")
                inputs.append(Image.open(io.BytesIO(data)))
            engine = self.engines[job.kind]
            future = asyncio.get_running_loop().run_in_executor(self.gpu, draw_whole, engine, job, tuple(inputs), progress)
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # SAQ cancels for a person's cancel (abort) and for a shutdown of this worker; either way the
            # engine stops at its next step, and the slot is free only once the GPU thread is.
            progress.cancel()
            if future is not None:
                with contextlib.suppress(BaseException):
                    await future
            if await self.redis.exists(self.settings.cancel_key(job_id)):
                await self.send(Cancelled(job_id, self.name))
            raise  # a shutdown: SAQ puts the job back for another worker

    async def _heartbeat(self, saq_job, progress: _Progress, job_id: int) -> None:
        # SAQ's lease is kept by job.update(); it must beat while the model loads or the VAE decodes too.
        # A person's cancel is looked for ten times a second, so the engine stops within a few steps.
        every, beat = max(0.2, self.settings.lease_seconds / 4), time.monotonic()
        cancel_key = self.settings.cancel_key(job_id)
        while True:
            await asyncio.sleep(0.1)
            with contextlib.suppress(Exception):
                if not progress.cancelled and await self.redis.exists(cancel_key):
                    progress.cancel()
                if time.monotonic() - beat >= every:
                    beat = time.monotonic()
                    done, total = progress.last
                    await saq_job.update(progress=done / total if total else 0.0)

    async def _register(self) -> None:
        key = self.settings.worker_key(self.name)
        every = max(0.5, min(5.0, self.settings.lease_seconds / 4))
        while True:
            info = WorkerInfo(name=self.name, gpu=self.device, kinds=self.kinds, pool=self.pool, done=self.done,
                              running=self.running, seen=time.time(), models=self.models)
            with contextlib.suppress(Exception):
                await self.redis.hset(key, mapping=info.to_fields())
                await self.redis.expire(key, max(2, int(every * 3)))
            await asyncio.sleep(every)

    async def run(self) -> int:
        """Take jobs until SIGINT/SIGTERM; a job drawing then is put back for another worker."""
        from saq import Worker as SaqWorker

        from generation.saq_queue import SettlingQueue

        self.redis = await connect(self.settings)
        queue = SettlingQueue.from_url(self.settings.url, name=self.pool, settle=self.settings.lease_seconds)
        saq = SaqWorker(queue, functions=[(DRAW, self.draw)], concurrency=1, id=self.name,
                        timers={"sweep": self.settings.sweep_seconds, "abort": 0.25, "worker_info": 5},
                        metadata={"kinds": list(self.kinds)})
        logging.getLogger("saq").addFilter(_OneLineWhenRedisIsDown())
        register = asyncio.create_task(self._register())
        log.info("worker %s takes %s jobs from %s", self.name, ", ".join(self.kinds), self.pool)
        models = f" with models {', '.join(self.models)}" if self.models else ""
        print(f"easel worker {self.name}: {', '.join(self.kinds)}{models} on {self.device}", flush=True)
        try:
            await saq.start()
        finally:
            register.cancel()
            with contextlib.suppress(Exception):
                await self.redis.delete(self.settings.worker_key(self.name))
            await queue.disconnect()
            await self.redis.aclose()
            await asyncio.to_thread(self.gpu.shutdown, wait=True)
        return 0
