"""`easel worker`: draws jobs from Redis on this machine's GPU, one at a time, models kept resident.

The bot decides what runs next; a worker takes what SAQ hands it from its pool's queue, sends
progress and the finished images (PNG bytes) back over the events stream, and heartbeats while it
draws so that a worker that dies hands its job on. It needs no database and no shared disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from bot.config import Config, require_redis_backend
from generation.diffusion import device_name
from generation.engines import build_engines
from generation.engine import JobCancelled
from generation.redis_queue import REDIS_DOWN, RedisSettings, live_workers, retried, safe_url, run_to_json
from storage.errors import EaselError
from storage.images import png_bytes
from storage.records import JobKind, params_from_json

log = logging.getLogger(__name__)

EVENTS_KEPT = 10_000  # the stream is trimmed to about this many entries


def settings_of(config: Config) -> RedisSettings:
    """Where the Redis queue is; refuses a config that does not use it, since nothing would be sent."""
    queue = config.queue
    require_redis_backend(queue)
    return RedisSettings(url=queue.redis_url.get_secret_value(), prefix=queue.redis_prefix, lease_seconds=queue.lease_seconds,
                         sweep_seconds=queue.sweep_seconds)


class _Progress:
    """The engine's Progress on a worker: steps go to the stream, a cancel comes from the bot."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send) -> None:
        self._loop, self._send = loop, send
        self._cancel = threading.Event()
        self.last = (0, 0)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def step(self, done: int, total: int, preview: Image.Image | None) -> None:
        self.last = (done, total)
        fields = {"type": "progress", "step": done, "total": total}
        if preview is not None:
            fields["preview"] = png_bytes(preview, compress_level=1)
        asyncio.run_coroutine_threadsafe(self._send(fields), self._loop)


class _OneLineWhenRedisIsDown(logging.Filter):
    """SAQ logs a full traceback per loop and second while Redis is away; one line says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, REDIS_DOWN):
            record.msg, record.args = f"{record.getMessage()}: Redis is unreachable ({error})", ()
            record.exc_info = record.exc_text = None
        return True


class Worker:
    def __init__(self, config: Config, kinds: tuple[JobKind, ...], name: str) -> None:
        self.config, self.kinds, self.name = config, kinds, name
        self.settings = settings_of(config)
        self.pool = self.settings.pool(kinds)
        self.engines = build_engines(config, kinds)
        self.gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")
        self.device = device_name(config.generation.device)
        self.done = 0
        self.running: int | None = None
        self.free_since = time.time()  # when it last finished a job (or started): dispatch delay is measured from it
        self.redis = None

    async def send(self, job_id: int, fields: dict) -> None:
        fields = {"job": job_id, "worker": self.name, **fields}
        await retried(lambda: self.redis.xadd(self.settings.events, fields, maxlen=EVENTS_KEPT, approximate=True))

    async def draw(self, ctx: dict, *, job_id: int, params: str, previews: bool = False) -> dict:
        """One job, as SAQ hands it over; its end always goes back as one terminal event."""
        saq_job = ctx["job"]
        params = params_from_json(params)
        loop = asyncio.get_running_loop()
        progress = _Progress(loop, lambda fields: self.send(job_id, fields))
        progress.wants_preview = previews
        self.running = job_id
        await self.send(job_id, {"type": "started", "attempt": saq_job.attempts, "free_since": self.free_since})
        beat = asyncio.create_task(self._heartbeat(saq_job, progress, job_id))
        future = None
        try:
            inputs = []
            for sha in params.inputs:
                data = await self.redis.get(self.settings.key("input", sha))
                if data is None:
                    raise EaselError(f"the input image of job #{job_id} is no longer in Redis; send it again")
                inputs.append(Image.open(io.BytesIO(data)))
            engine = self.engines[params.kind]
            future = loop.run_in_executor(self.gpu, engine.run, params, tuple(inputs), progress)
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            # SAQ cancels for a person's cancel (abort) and for a shutdown of this worker; either way the
            # engine stops at its next step, and the slot is free only once the GPU thread is.
            progress.cancel()
            if future is not None:
                with contextlib.suppress(BaseException):
                    await future
            if await self.redis.exists(self.settings.key("cancel", job_id)):
                await self.send(job_id, {"type": "cancelled"})
            raise  # a shutdown: SAQ puts the job back for another worker
        except JobCancelled:
            await self.send(job_id, {"type": "cancelled"})
            return {"ended": "cancelled"}
        except Exception as exc:  # an EaselError says what to do in words; anything else is our bug, logged
            if not isinstance(exc, EaselError):
                log.exception("job #%d failed", job_id)
            error = str(exc) if isinstance(exc, EaselError) else f"something went wrong with job #{job_id}"
            await self.send(job_id, {"type": "failed", "error": error,
                                     "run": run_to_json(self.engines[params.kind].run_info())})
            return {"ended": "failed"}
        finally:
            beat.cancel()
            self.running = None
            self.free_since = time.time()
        fields = {"type": "done", "images": len(result.images), "seeds": json.dumps(list(result.seeds)),
                  "run": run_to_json(result.run)}
        encoded = await asyncio.to_thread(lambda: [png_bytes(image, compress_level=1) for image in result.images])
        fields.update({f"image{k}": data for k, data in enumerate(encoded)})
        await self.send(job_id, fields)
        self.done += 1
        return {"ended": "done", "images": len(result.images)}

    async def _heartbeat(self, saq_job, progress: _Progress, job_id: int) -> None:
        # SAQ's lease is kept by job.update(); it must beat while the model loads or the VAE decodes too.
        # A person's cancel is looked for ten times a second, so the engine stops within a few steps.
        every, beat = max(0.2, self.settings.lease_seconds / 4), time.monotonic()
        cancel_key = self.settings.key("cancel", job_id)
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
        key = self.settings.key("worker", self.name)
        every = max(0.5, min(5.0, self.settings.lease_seconds / 4))
        while True:
            fields = {"name": self.name, "gpu": self.device, "kinds": ",".join(map(str, self.kinds)),
                      "pool": self.pool, "done": self.done, "running": self.running or "", "seen": time.time()}
            with contextlib.suppress(Exception):
                await self.redis.hset(key, mapping=fields)
                await self.redis.expire(key, max(2, int(every * 3)))
            await asyncio.sleep(every)

    async def run(self) -> int:
        import redis.asyncio as aioredis
        from saq import Queue
        from saq import Worker as SaqWorker

        self.redis = aioredis.from_url(self.settings.url)
        try:
            await self.redis.ping()
        except Exception as exc:
            raise EaselError(f"cannot reach Redis at {safe_url(self.settings.url)} ([queue] redis_url): {exc}") from exc
        queue = Queue.from_url(self.settings.url, name=self.pool)
        saq = SaqWorker(queue, functions=[("draw", self.draw)], concurrency=1, id=self.name,
                        timers={"sweep": self.settings.sweep_seconds, "abort": 0.25, "worker_info": 5},
                        metadata={"kinds": [str(kind) for kind in self.kinds]})
        logging.getLogger("saq").addFilter(_OneLineWhenRedisIsDown())
        register = asyncio.create_task(self._register())
        log.info("worker %s takes %s jobs from %s", self.name, ", ".join(map(str, self.kinds)), self.pool)
        print(f"easel worker {self.name}: {', '.join(map(str, self.kinds))} on {self.device}", flush=True)
        try:
            await saq.start()  # until SIGINT/SIGTERM: a running job is put back for another worker
        finally:
            register.cancel()
            with contextlib.suppress(Exception):
                await self.redis.delete(self.settings.key("worker", self.name))
            await queue.disconnect()
            await self.redis.aclose()
            await asyncio.to_thread(self.gpu.shutdown, wait=True)
        return 0


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}".replace(":", "-")


async def list_workers(config: Config) -> str:
    import redis.asyncio as aioredis

    settings = settings_of(config)
    redis = aioredis.from_url(settings.url)
    try:
        workers = await live_workers(redis, settings)
    except REDIS_DOWN as exc:
        raise EaselError(f"cannot reach Redis at {safe_url(settings.url)} ([queue] redis_url): {exc}") from exc
    finally:
        await redis.aclose()
    if not workers:
        return "no easel workers are connected"
    now = time.time()
    lines = [f"{'worker':24} {'gpu':28} {'kinds':28} {'done':>5}  running  heartbeat"]
    for worker in workers:
        running = f"#{worker.running}" if worker.running else "-"
        lines.append(f"{worker.name:24} {worker.gpu[:28]:28} {','.join(worker.kinds)[:28]:28} {worker.done:5d}  "
                     f"{running:7}  {now - worker.seen:.0f} s ago")
    return "\n".join(lines)
