"""What frontends do beside answering: pace progress edits to what a platform allows, and let sends finish."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Generic, TypeVar

log = logging.getLogger(__name__)

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
