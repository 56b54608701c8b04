"""A Service over its own data folder and tiny model, with every job event recorded: what service and
command tests drive. The fixtures (`make_rig`, `rig`) are in tests/bot/conftest.py."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot.config import DefaultsConfig
from bot.replies import Attachment, Reply
from bot.service import Service
from generation.queue import EventKind, JobEvent
from storage.records import Owner
from tests.helpers import eventually

ALICE = Owner("discord", "111", chat_id="c1", name="alice")
BOB = Owner("discord", "222", chat_id="c1", name="bob")
CAROL = Owner("telegram", "333", name="carol")
CONSOLE = Owner("console", "local")

# Distinct from the built-in defaults, so a test can tell "the config's default" from "hard-coded".
DEFAULTS = DefaultsConfig(steps=3, cfg=5.5, width=128, height=128, scheduler="euler",
                          negative_prompt="blurry", strength=0.6)
FAST = "--size 64x64 --steps 2"


class Rig:
    """One service over its own data folder, with every job event recorded."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.queue = service.queue
        self.history = service.history
        self.events: list[JobEvent] = []
        self.queue.subscribe(self.events.append)

    async def say(self, owner: Owner, text: str, *attachments: Attachment) -> Reply:
        return await self.service.handle(owner, text, attachments)

    async def ok(self, owner: Owner, text: str, *attachments: Attachment) -> Reply:
        reply = await self.say(owner, text, *attachments)
        assert not reply.error, reply.text
        assert reply.job is not None
        return reply

    async def refused(self, owner: Owner, text: str, *attachments: Attachment) -> str:
        jobs_before = await self.all_jobs()
        reply = await self.say(owner, text, *attachments)
        assert reply.error, reply.text
        assert reply.job is None
        assert await self.all_jobs() == jobs_before, "a refused command must not persist a job"
        return reply.text

    async def all_jobs(self) -> list[int]:
        ids = []
        for owner in (ALICE, BOB, CAROL, CONSOLE):
            ids += [job.id for job in await self.history.recent(owner, 1000)]
        return sorted(ids)

    async def event(self, job_id: int, *kinds: EventKind, timeout: float = 60) -> JobEvent:
        def first() -> JobEvent | None:
            return next((event for event in self.events if event.job.id == job_id and event.kind in kinds), None)
        return await eventually(first, timeout, f"job #{job_id} to be {'/'.join(kinds)}")

    async def finished(self, job_id: int) -> JobEvent:
        return await self.event(job_id, EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED)


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
