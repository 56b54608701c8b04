"""Helpers shared by the test packages: polling for a condition without sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable

TIMEOUT = 60.0  # generous: a 2-core CI runner under load is slow, and a passing test never waits this long


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float = TIMEOUT, what: str = "",
                     every: float = 0.01) -> Any:
    """Poll check() (plain or async) on the event loop until it returns something truthy, and return that.

    Fails the test, naming `what`, once `timeout` seconds pass; never loops for ever. The poll yields to
    the loop between tries, so the code under test runs in between.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or 'the condition'}")
        await asyncio.sleep(every)
