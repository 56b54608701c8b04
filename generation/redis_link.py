"""The connection to Redis that the bot and its workers share: connecting, riding out an outage, who is there."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions

from generation.wire import RedisSettings, WorkerInfo
from storage.errors import EaselError

T = TypeVar("T")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(settings: RedisSettings):
    """A client that has answered a PING; an unreachable Redis is one EaselError without the password."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise EaselError(f"cannot reach Redis at {safe_url(settings.url)} ([queue] redis_url): {exc}") from exc
    return client


async def retried(call: Callable[[], Awaitable[T]], tries: int = 4) -> T:
    """await call(), again on a dropped connection: the first command after Redis restarts meets the
    pooled connection the old server closed."""
    for attempt in range(tries):
        try:
            return await call()
        except REDIS_DOWN:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


async def live_workers(client, settings: RedisSettings) -> list[WorkerInfo]:
    """Workers whose registration has not expired, by name."""
    workers = []
    async for key in client.scan_iter(match=settings.worker_key("*")):
        fields = await client.hgetall(key)
        if fields:
            workers.append(WorkerInfo.from_fields(fields))
    return sorted(workers, key=lambda worker: worker.name)
