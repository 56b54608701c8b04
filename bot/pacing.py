"""What frontends do beside answering: pace progress edits to what a platform allows, and let sends finish."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Generic, TypeVar

from bot.service import title
from generation.queue import EventKind, JobEvent

log = logging.getLogger(__name__)

BAR_CELLS = 10


def clip(text: str, limit: int) -> str:
    """text, cut to `limit` characters with "…" where it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(done: int, total: int) -> str:
    filled = BAR_CELLS * done // max(total, 1)
    return "█" * filled + "░" * (BAR_CELLS - filled)


def status_line(event: JobEvent) -> str:
    """A job's state in one line for its status message: queued, started, step and percentage, or waiting."""
    job, prompt = event.job, clip(title(event.job.params), 300)
    if event.kind is EventKind.PROGRESS:
        percent = 100 * event.step // max(event.total, 1)
        return f"#{job.id} {progress_bar(event.step, event.total)} {event.step}/{event.total} ({percent}%) — {prompt}"
    if event.kind is EventKind.STARTED:
        return f"#{job.id} started — {prompt}"
    if event.kind is EventKind.STALLED:
        return f"#{job.id} waits: {event.error}"
    return f"#{job.id} queued (position {event.position}) — {prompt}"

State = TypeVar("State")


class Paced(Generic[State]):
    """Calls `show` with the newest pushed state at most every `every` seconds; states in between are
    dropped, since only the latest matters to someone watching a progress message."""

    def __init__(self, every: float, show: Callable[[State], Awaitable[None]]) -> None:
        self.every = every
        self._show = show
        self._pending: State | None = None
        self._last = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def touched(self) -> None:
        """The message was just edited some other way; that counts towards the pace."""
        self._last = time.monotonic()

    def push(self, state: State) -> None:
        self._pending = state
        self._wake.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(max(0.0, self._last + self.every - time.monotonic()))
            state, self._pending = self._pending, None
            if state is None:
                continue
            self._last = time.monotonic()
            try:
                await self._show(state)
            except Exception as exc:  # a progress edit that fails is not worth more than a line
                log.info("could not show progress: %s", exc)


class Pending:
    """Work a frontend starts and does not wait for (sending a result), but lets finish before storage closes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, timeout: float = 30) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
