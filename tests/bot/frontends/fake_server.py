"""What the fakes of Discord and Telegram share: an aiohttp server on 127.0.0.1 (a random free port), and
waiting, without polling, until what it recorded satisfies a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web


class FakeServer:
    """Serves the app a subclass makes; `async with` starts and stops it. A subclass records every request
    it answers in `requests` and calls `_changed()` whenever it recorded something a test may wait for."""

    requests: list[Any]

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    def _app(self) -> web.Application:
        """The routes of the platform's API."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------------------- waiting

    def _changed(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_changed(self, timeout: float) -> None:
        """Until the next _changed(), or `timeout` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    async def _wait_until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """check()'s first answer that is neither None nor False; TimeoutError, naming the last requests, after
        `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = check()
            if found is not None and found is not False:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n  ".join(repr(r) for r in self.requests[-8:]) or "(none)"
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last requests:\n  {recent}")
            await self._wait_changed(remaining)
