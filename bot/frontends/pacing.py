"""What frontends do beside answering: pace progress edits to what a platform allows, and let sends finish."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from enum import StrEnum
from typing import Awaitable, Callable, Generic, Hashable, Iterable, Sequence, TypeVar

from bot.formatting import title
from generation.queue import EventKind, JobEvent

log = logging.getLogger(__name__)

BAR_CELLS = 10


def clip(text: str, limit: int) -> str:
    """text, cut to `limit` characters with "…" where it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pieces(text: str, limit: int) -> list[str]:
    """text in messages of at most `limit` characters, broken between lines (a longer line is clipped)."""
    parts: list[str] = []
    for line in text.split("\n"):
        line = clip(line, limit)
        if parts and len(parts[-1]) + 1 + len(line) <= limit:
            parts[-1] += "\n" + line
        else:
            parts.append(line)
    return parts


def progress_bar(done: int, total: int) -> str:
    filled = BAR_CELLS * done // max(total, 1)
    return "█" * filled + "░" * (BAR_CELLS - filled)


def status_line(event: JobEvent) -> str:
    """A job's state in one line for its status message: queued, started, step and percentage, or waiting."""
    job, prompt = event.job, clip(title(event.job.params), 300)
    if event.kind is EventKind.PROGRESS and event.frames:  # an animation: the frame, then its steps
        return (f"#{job.id} frame {event.frame}/{event.frames} · step {event.step}/{event.total} "
                f"{progress_bar(event.frame - 1, event.frames)} — {prompt}")
    if event.kind is EventKind.PROGRESS:
        percent = 100 * event.step // max(event.total, 1)
        detail = f" · {event.detail}" if event.detail else ""  # a training's epoch, losses and time left
        return (f"#{job.id} {progress_bar(event.step, event.total)} {event.step}/{event.total} ({percent}%){detail}"
                f" — {prompt}")
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


Sent = TypeVar("Sent")


async def retried(send: Callable[[], Awaitable[Sent]], *, delays: Sequence[float],
                  transient: Callable[[BaseException], bool],
                  failed: Callable[[BaseException, float | None], None] | None = None,
                  wait: Callable[[BaseException], float | None] | None = None,
                  timeout: float | None = None) -> Sent:
    """send()'s result, tried again while its failure looks passing; the last failure is raised.

    A failure `transient` holds for (a reset, a timeout, a 5xx) is tried again after each pause in `delays`;
    one that wait(exc) gives a pause for (a platform's flood wait: "retry after 30 s") is waited out as often
    as the platform asks, without using up `delays`. Each failure goes to failed(exc, pause) first, to be
    logged; pause is None where it is given up."""
    pauses = iter(delays)
    while True:
        try:
            return await asyncio.wait_for(send(), timeout)
        except Exception as exc:
            pause = wait(exc) if wait is not None else None
            if pause is None and transient(exc):
                pause = next(pauses, None)
            if failed is not None:
                failed(exc, pause)
            if pause is None:
                raise
            await asyncio.sleep(pause)


class Throttled:
    """Warnings about one thing (a chat, say) at most every `every` seconds; the next one that gets through
    says how many were left out, so repeated failures stay visible without flooding the log."""

    def __init__(self, logger: logging.Logger, every: float = 600.0) -> None:
        self.every = every
        self._log = logger
        self._seen: dict[object, tuple[float, int]] = {}  # key -> (when last logged, left out since)

    def warning(self, key: object, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last, left_out = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.every:
            self._seen[key] = (last, left_out + 1)
            return
        if len(self._seen) > 10_000:  # forget old keys rather than grow for ever
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every}
        self._seen[key] = (now, 0)
        if left_out:
            message += f" ({left_out} more like it not logged since)"
        self._log.warning(message, *args, exc_info=exc_info)


async def settle(tasks: Iterable[asyncio.Task], grace: float) -> None:
    """Give tasks `grace` seconds to finish, then cancel the rest and wait until they have stopped."""
    tasks = set(tasks)
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=grace)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


Send = Callable[[], Awaitable[None]]


class _ChatSends:
    """What waits to be sent to one chat, and the task sending it."""

    def __init__(self) -> None:
        self.results: deque[Send] = deque()
        self.replies: deque[Send] = deque()
        self.progress: dict[Hashable, Send] = {}  # the newest edit per message, oldest first
        self.task: asyncio.Task | None = None

    def next(self) -> Send | None:
        if self.results:
            return self.results.popleft()
        if self.replies:
            return self.replies.popleft()
        if self.progress:
            return self.progress.pop(next(iter(self.progress)))
        return None

    def make_room(self, room: int) -> None:
        while len(self.replies) + len(self.progress) > room:
            if self.progress:
                del self.progress[next(iter(self.progress))]
            else:
                self.replies.popleft()

    def clear(self) -> None:
        self.results.clear()
        self.replies.clear()
        self.progress.clear()


class Outbox:
    """Sends queued per chat, each chat drained by a task of its own: a chat that must wait (flood control,
    a slow upload, retries) holds up only itself, and whoever queues a send never waits at all.

    In each chat results go first, in order, and are never dropped; then replies; then progress edits
    (only the newest per message is kept). Replies and edits waiting in one chat are bounded by `room`:
    past it the oldest edit is dropped first, then the oldest reply. A send handles its own errors; what
    escapes is logged, throttled per chat."""

    def __init__(self, room: int = 20) -> None:
        self.room = room
        self._chats: dict[Hashable, _ChatSends] = {}
        self._closed = False
        self._failures = Throttled(log, every=60.0)

    def result(self, chat: Hashable, send: Send) -> None:
        self._add(chat, lambda sends: sends.results.append(send))

    def reply(self, chat: Hashable, send: Send) -> None:
        self._add(chat, lambda sends: sends.replies.append(send))

    def progress(self, chat: Hashable, key: Hashable, send: Send) -> None:
        """The newest state of one message (key): it replaces an edit of that message still waiting."""
        def put(sends: _ChatSends) -> None:
            sends.progress.pop(key, None)
            sends.progress[key] = send
        self._add(chat, put)

    def forget(self, chat: Hashable, key: Hashable) -> None:
        """Drop the progress edit of this message still waiting, if any (its final state follows)."""
        sends = self._chats.get(chat)
        if sends is not None:
            sends.progress.pop(key, None)

    def _add(self, chat: Hashable, put: Callable[[_ChatSends], None]) -> None:
        if self._closed:
            return
        sends = self._chats.setdefault(chat, _ChatSends())
        put(sends)
        sends.make_room(self.room)
        if sends.task is None:
            sends.task = asyncio.ensure_future(self._drain(chat, sends))

    async def _drain(self, chat: Hashable, sends: _ChatSends) -> None:
        while (send := sends.next()) is not None:
            try:
                await send()
            except Exception:
                self._failures.warning(chat, "could not send to chat %s", chat, exc_info=True)
        del self._chats[chat]  # nothing waits: the next send starts a new task

    async def close(self, grace: float) -> None:
        """Drop what waits and give the sends in flight `grace` seconds; from now on nothing is queued."""
        self._closed = True
        for sends in self._chats.values():
            sends.clear()
        await settle((sends.task for sends in self._chats.values() if sends.task is not None), grace)


class Verdict(StrEnum):
    """What to do with a command, as a Gate sees it."""

    GO = "go"  # answer it
    REPEAT = "repeat"  # the same command again within seconds: it is answered already
    SLOW_DOWN = "slow down"  # past the person's pace: say so, once
    QUIET = "quiet"  # past the pace, and told already


class Gate:
    """Which commands to answer, so that nobody can make the bot flood a chat: the same command from the
    same person in the same chat within `repeat` seconds is answered once, and in a shared chat each person
    gets `burst` commands, then one every `every` seconds, and a notice at most every `notice_every` s."""

    def __init__(self, repeat: float = 5.0, burst: int = 5, every: float = 12.0, notice_every: float = 60.0) -> None:
        self.repeat, self.burst, self.every, self.notice_every = repeat, burst, every, notice_every
        self._answered: dict[tuple[Hashable, Hashable, str], float] = {}  # (chat, person, command) -> when
        self._pace: dict[tuple[Hashable, Hashable], tuple[float, float, float]] = {}  # -> (tokens, when, told)

    def check(self, chat: Hashable, person: Hashable, command: str, shared: bool) -> Verdict:
        now = time.monotonic()
        self._forget(now)
        if now - self._answered.get((chat, person, command), -math.inf) < self.repeat:
            return Verdict.REPEAT
        if shared:
            tokens, when, told = self._pace.get((chat, person), (self.burst, now, -math.inf))
            tokens = min(self.burst, tokens + (now - when) / self.every)
            if tokens < 1:
                verdict = Verdict.QUIET if now - told < self.notice_every else Verdict.SLOW_DOWN
                self._pace[chat, person] = (tokens, now, told if verdict is Verdict.QUIET else now)
                return verdict
            self._pace[chat, person] = (tokens - 1, now, told)
        self._answered[chat, person, command] = now
        return Verdict.GO

    def _forget(self, now: float) -> None:
        """Memory stays bounded under a flood of distinct commands or people: what no longer matters goes."""
        if len(self._answered) > 1000:
            self._answered = {key: when for key, when in self._answered.items() if now - when < self.repeat}
        if len(self._pace) > 1000:
            self._pace = {key: (tokens, when, told) for key, (tokens, when, told) in self._pace.items()
                          if tokens + (now - when) / self.every < self.burst or now - told < self.notice_every}
