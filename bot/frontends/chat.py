"""What the chat frontends (Discord, Telegram) share: reaching the platform, taking the Service's job
events, paced progress for the jobs they show, and recording which results reached their chat.

A chat frontend runs as `async with frontend: await frontend.start()`. start() reaches the platform
(waiting while it cannot be reached; a refused token raises TokenRefused), subscribes to the events of
its platform's jobs, then serves until it is stopped. The Service replays first the end of every job
whose result was never delivered (a job recovered after a restart, a send that failed), so the frontend
sends it as it sends any other; only once the platform took all of it does it call delivered(), and a
result it could not send is replayed on the next start.
"""

from __future__ import annotations

import abc
import logging
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, ClassVar, Generic, Sequence, TypeVar

from bot.commands import Command
from bot.commands.action import Source
from bot.commands.outpaint import DIRECTIONS, ZOOM_FACTOR, Pan, Zoom
from bot.commands.rerun import MAX_JOB_ID
from bot.commands.upscale import Upscale
from bot.commands.vary import VARIATIONS, Vary
from bot.frontends.connection import reach
from bot.frontends.pacing import Paced, Throttled, clip
from bot.limits import CommandError
from bot.service import Service
from generation.queue import JobEvent
from storage.params import DiffusionParams
from storage.records import JobRecord, JobStatus


class Shown:
    """A job a chat shows while it runs: its progress, paced to the edits the platform allows."""

    def __init__(self, every: float, show: Callable[[JobEvent], Awaitable[None]]) -> None:
        self.progress: Paced[JobEvent] = Paced(every, show)


S = TypeVar("S", bound=Shown)


class ChatFrontend(abc.ABC, Generic[S]):
    """The platform-neutral half of a chat frontend; a subclass translates to and from its platform."""

    PLATFORM: ClassVar[str]  # the Owner.platform of the jobs it asks for: "discord"
    NAME: ClassVar[str]  # the platform's name for people: "Discord"
    PREVIEWS: ClassVar[bool] = False  # whether its progress events carry preview images

    def __init__(self, service: Service, log: logging.Logger, failures_every: float) -> None:
        self.service = service
        self.limits = service.limits
        self._shown: dict[int, S] = {}  # job id -> how the chat shows it, while it runs
        self._unsubscribe: Callable[[], None] | None = None
        self._failures = Throttled(log, failures_every)  # sends that failed, logged at most so often per chat

    # ---- what a platform fills in -----------------------------------------------------------
    @abc.abstractmethod
    async def _connect(self) -> None:
        """Log in and register the commands; raises TokenRefused for a refused token."""

    @abc.abstractmethod
    def _unreachable(self, exc: BaseException) -> bool:
        """Whether `exc` means the platform cannot be reached just now (worth trying again)."""

    @abc.abstractmethod
    async def _serve(self) -> None:
        """Take updates until stopped."""

    @abc.abstractmethod
    def _finished(self, event: JobEvent, shown: S | None) -> None:
        """A job ended (or its undelivered end is replayed): send its result without waiting for it.
        `shown` is how the chat showed it while it ran, if it did (not after a restart)."""

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Reach the platform, take the job events (replays first), serve until stopped."""
        await reach(self.NAME, self._connect, self._unreachable)
        self._unsubscribe = await self.service.subscribe(self.PLATFORM, self._on_event, previews=self.PREVIEWS)
        await self._serve()

    def _stop_events(self) -> None:
        """No more events, and no more progress edits; results being sent are the subclass's to finish."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for shown in self._shown.values():
            shown.progress.close()

    # ---- job events -------------------------------------------------------------------------
    def _show(self, job_id: int, shown: S) -> S:
        """From now on the job's progress goes to `shown`."""
        self._shown[job_id] = shown
        return shown

    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if event.finished:
            shown = self._shown.pop(job.id, None)
            if shown is not None:
                shown.progress.close()
            self._finished(event, shown)
            return
        shown = self._shown.get(job.id)
        if shown is not None:  # else a job asked for before a restart: its result is sent when it ends
            shown.progress.push(event)

    # ---- what reached the chat --------------------------------------------------------------
    async def _remember(self, chat_id: object, message_id: object, job_id: int) -> None:
        """A message in the chat now shows this job: replies and buttons on it find the job after a restart."""
        await self.service.remember_message(self.PLATFORM, str(chat_id), str(message_id), job_id)

    async def _delivered(self, job: JobRecord) -> None:
        """The platform took all of the job's result: it is not replayed on the next start."""
        await self.service.delivered(job)


def ending(job: JobRecord) -> str:
    """How a job that drew nothing ended, in a line of its own."""
    if job.status is JobStatus.FAILED:
        return f"job #{job.id} failed: {job.error}"
    return f"job #{job.id} cancelled"


# ---- the buttons under a finished result ------------------------------------------------------
MORE_STEPS, NEW_SEED = "5× steps", "New seed"
MOST_IMAGES = 5  # per-image buttons for at most this many images of one message (Discord: 5 buttons a row)
NO_LONGER = "this button no longer does anything"
_ARROWS = {"left": "⬅", "right": "➡", "up": "⬆", "down": "⬇"}
# What an action button carries: "up:12:2", "vary:12:2:strong", "zoom:12:1", "pan:12:1:left" (job, image,
# variant); Discord's custom_id is the same with "easel:" in front. The longest easel makes, "vary:" + a
# 19-digit job + ":64:strong", is 34 characters: well within Telegram's 64 bytes of callback_data and
# Discord's 100 of custom_id.
_ACTION = re.compile(r"(?P<action>up|vary|zoom|pan):(?P<job>[0-9]+):(?P<image>[0-9]+)(?::(?P<variant>[a-z]+))?")
_VARIANTS: dict[str, tuple[str | None, ...]] = {"up": (None,), "vary": VARIATIONS, "zoom": (None,), "pan": DIRECTIONS}


@dataclass(frozen=True)
class ResultButton:
    """A button under a finished result: its label, what it does to which job, and for an action (up, vary,
    zoom, pan) which image (1-based) and how (strong, left…)."""

    label: str
    action: str  # "more", "seed" (the whole job) or one of _VARIANTS (one image)
    job_id: int
    image: int | None = None
    variant: str | None = None

    @property
    def data(self) -> str:
        """What the platform keeps on the button and hands back when it is pressed: "vary:12:2:strong"."""
        parts = (self.action, self.job_id, self.image, self.variant)
        return ":".join(str(part) for part in parts if part is not None)


def result_buttons(job: JobRecord, images: Sequence[int] | None = None) -> list[list[ResultButton]]:
    """The rows of buttons under a finished job's message showing `images` (1-based; default: the whole batch).

    As Midjourney lays them out: a row each of U k (upscale image k), V k and V k strong (vary it); for a
    message that shows one picture, U1 V1 "V1 strong" in one row, then 🔍 Zoom out 2×, then the pan arrows
    ⬅ ➡ ⬆ ⬇; last 5× steps (where it has steps) and New seed: four rows at most. A picture without a prompt
    (a StyleGAN2 face) gets only U k: the others redraw with the prompt. Of a larger batch only the first
    MOST_IMAGES images get buttons (Discord shows 5 a row); the others stay reachable as /upscale #N K. A job
    that drew nothing gets none. An animation (its frames one video, a cancelled one's too) gets only 5× steps
    and New seed: the others act on one picture."""
    again = [ResultButton(MORE_STEPS, "more", job.id)] if job.params.has_steps else []
    if job.params.slices > 1 and job.images:
        return [[*again, ResultButton(NEW_SEED, "seed", job.id)]]
    if job.status is not JobStatus.DONE:
        return []
    shown = list(images if images is not None else range(1, len(job.images) + 1))[:MOST_IMAGES]
    rows = [[ResultButton(f"U{k}", "up", job.id, k) for k in shown]]
    if isinstance(job.params, DiffusionParams):
        rows.append([ResultButton(f"V{k}", "vary", job.id, k, "subtle") for k in shown])
        rows.append([ResultButton(f"V{k} strong", "vary", job.id, k, "strong") for k in shown])
        if len(shown) == 1:  # one picture: U, V and V strong in one row, then zoom and pan
            [k] = shown
            rows = [[button for row in rows for button in row],
                    [ResultButton(f"🔍 Zoom out {ZOOM_FACTOR:g}×", "zoom", job.id, k)],
                    [ResultButton(_ARROWS[side], "pan", job.id, k, side) for side in DIRECTIONS]]
    rows.append([*again, ResultButton(NEW_SEED, "seed", job.id)])
    return [row for row in rows if row]


def pressed_job(number: str) -> int:
    """The job number a button carries, bounded as a typed one: past SQLite's range there is no such job
    (a forged button), said as the refusal of a typed number says it."""
    if len(number) > 19 or int(number) > MAX_JOB_ID:
        raise CommandError(f"there is no job #{clip(number, 24)}")
    return int(number)


def action_command(data: str) -> Command | None:
    """The command an action button's data stands for ("vary:12:2:strong" → /vary #12 2 strong), run as a
    typed one, so an image out of range or a job that is not yours is refused as /vary's own refusal;
    None for data no button of easel's carries; a CommandError for a job number past any job."""
    match = _ACTION.fullmatch(data)
    if match is None or match["variant"] not in _VARIANTS[match["action"]]:
        return None
    source = Source(pressed_job(match["job"]), int(match["image"]))
    action, variant = match["action"], match["variant"]
    if action == "up":
        return Upscale(source)
    if action == "vary":
        return Vary(source, variant)
    if action == "zoom":
        return Zoom(source, ZOOM_FACTOR)
    return Pan(source, variant)
