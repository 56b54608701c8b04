"""Start-up: we own the one event loop; storage, then the queue, then each frontend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from bot.config import Config, redis_settings, require_redis
from bot.frontends.console import ConsoleFrontend
from bot.logs import shown_elsewhere
from bot.service import Service
from generation.engines import build_engines
from generation.files import HASH_CACHE
from generation.queue import JobQueue
from storage.errors import EaselError
from storage.history import History, requeue_running
from storage.images import ImageStore
from storage.lock import DataDirLock

log = logging.getLogger(__name__)


async def serve(config: Config, console_only: bool = False) -> int:
    """Open storage, start the worker, run the frontends; on the way out the worker stops cleanly.

    The first SIGINT (Ctrl-C) or SIGTERM stops after the running job's current step, which goes back
    to the queue; a second one quits at once, after putting the running job back too. Neither counts
    as a crash. Returns the exit status.
    """
    if config.generation.compile:  # compiled kernels survive restarts (and /tmp cleaners) in the data folder
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(config.storage.data_dir / "torch-compile-cache"))
    os.environ.setdefault(HASH_CACHE, str(config.storage.data_dir / "model-hashes.json"))  # weights hashed once
    with DataDirLock(config.storage.data_dir):
        stopping = _StopOnSignal(asyncio.current_task(), config.database)
        try:
            return await _serve(config, console_only, stopping)
        except asyncio.CancelledError:
            if not stopping.received:
                raise
            print("easel: stopped; unfinished jobs run again on the next start", file=sys.stderr, flush=True)
            return 130 if stopping.received[0] == signal.SIGINT else 0  # SIGTERM is how services are stopped
        finally:
            stopping.close()


class _StopOnSignal:
    """SIGINT and SIGTERM: the first cancels the serving task (a clean stop), a second quits at once."""

    def __init__(self, task: asyncio.Task, database: Path) -> None:
        self._task = task
        self._database = database
        self._loop = asyncio.get_running_loop()
        self.received: list[int] = []
        self.busy: Callable[[], bool] = lambda: False  # whether a job is drawing (set once the queue exists)
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows; not the main thread
                self._loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            if self.busy():  # otherwise the stop is immediate and its one line says all
                print("easel: stopping after the current step; Ctrl-C again to quit at once "
                      "(unfinished jobs run on the next start)", file=sys.stderr, flush=True)
            self._task.cancel()
            return
        # The torch thread may be deep in a model load or a download, and a normal exit would wait for
        # it. Put the running job back first, so the next start does not count this as a crash.
        with contextlib.suppress(Exception):
            requeue_running(self._database)
        print("easel: stopped; unfinished jobs run again on the next start", file=sys.stderr, flush=True)
        sys.stdout.flush()
        logging.shutdown()
        os._exit(130 if signum == signal.SIGINT else 0)

    def close(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.remove_signal_handler(signum)


async def _serve(config: Config, console_only: bool, stopping: _StopOnSignal) -> int:
    async with await History.open(config.database) as history:
        images = ImageStore(config.storage.data_dir)
        limits = config.queue.limits()
        if config.queue.backend == "redis":
            require_redis()
            from generation.redis_runner import RedisRunner

            queue = JobQueue(history, images, RedisRunner(redis_settings(config.queue), images), limits)
        else:
            queue = JobQueue(history, images, build_engines(config), limits)
        service = Service(config, history, images, queue)
        stopping.busy = lambda: bool(queue.running_jobs())
        await queue.start()
        try:
            async with contextlib.AsyncExitStack() as running:
                if config.web.enabled:  # the gallery, in this same loop, beside the console or the chats
                    from bot.frontends.web import WebFrontend

                    await running.enter_async_context(WebFrontend(service, config.web))
                chats = [] if console_only else _chat_frontends(config, service)
                if not chats:
                    shown_elsewhere.console = True  # job failures reach the terminal as the console's own lines
                    console = ConsoleFrontend(service)
                    await console.run()
                    return 1 if console.failures else 0
                for frontend in chats:
                    await running.enter_async_context(frontend)
                # Each runs until it is closed or fails for good (a refused token); then the others stop
                # too. A signal cancels them all (a clean stop).
                try:
                    async with asyncio.TaskGroup() as group:
                        for frontend in chats:
                            group.create_task(frontend.start())
                except BaseExceptionGroup as failed:
                    raise _first_easel_error(failed) or failed from None
            return 0
        finally:
            await queue.stop()


def _first_easel_error(group: BaseExceptionGroup) -> EaselError | None:
    """The problem a person can fix (a refused token) among the frontends' failures, if there is one."""
    matched, _ = group.split(EaselError)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


def _chat_frontends(config: Config, service: Service) -> list:
    """The chat frontends with a token set; each imports its platform's library only when used."""
    frontends = []
    if config.discord.token is not None:
        from bot.frontends.discord import DiscordFrontend

        frontends.append(DiscordFrontend(service, config))
    if config.telegram.token is not None:
        from bot.frontends.telegram import TelegramFrontend

        frontends.append(TelegramFrontend(service, config))
    return frontends
