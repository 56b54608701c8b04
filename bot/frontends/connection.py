"""Reaching a chat platform at start-up: a refused token stops easel, an unreachable server is waited for.

A home server often starts before its network is up (a boot, a router restart), so "cannot reach
Telegram" is said once on the terminal and retried with a growing pause, while the console and the
other frontends keep serving; a refused token will not fix itself, so it ends easel with one line
naming the platform and the config key.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from bot.logs import one_line
from storage.errors import EaselError

log = logging.getLogger(__name__)

FIRST_PAUSE = 5.0  # seconds before the second try
LONGEST_PAUSE = 300.0  # the pause doubles up to this


class TokenRefused(EaselError):
    """The platform answered that the bot token is wrong; the text names the config key, never the token."""

    def __init__(self, platform: str, key: str, fix: str) -> None:
        super().__init__(f"{platform} refused the bot token ([{platform.lower()}] token, or {key}); {fix}")


async def reach(
    platform: str,
    attempt: Callable[[], Awaitable[None]],
    unreachable: Callable[[BaseException], bool],
    first_pause: float = FIRST_PAUSE,
) -> None:
    """Run `attempt` until it succeeds; errors for which `unreachable` holds are retried, others raised.

    The first failure is one warning line (its traceback goes to easel.log), later ones go to the log
    file only, and success after failures is one line again: a long outage never floods the terminal.
    """
    pause, failures = first_pause, 0
    while True:
        try:
            await attempt()
        except Exception as exc:
            if not unreachable(exc):
                raise
            failures += 1
            reason = _reason(exc)
            if failures == 1:
                log.warning("cannot reach %s (%s); trying again in %g s, then less often, until it answers",
                            platform, reason, pause)
                log.info("the first failure to reach %s in full:", platform, exc_info=exc)  # easel.log only
            else:
                log.info("still cannot reach %s (%s, try %d); next try in %g s", platform, reason, failures, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        else:
            if failures:
                log.warning("reached %s after %d failed tries", platform, failures)
            return


def _reason(exc: BaseException) -> str:
    """The innermost cause in one line: "ConnectionRefusedError: [Errno 111] Connect call failed"."""
    while exc.__cause__ is not None and str(exc.__cause__):
        exc = exc.__cause__
    return one_line(exc)
