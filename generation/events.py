"""What happens to a job, as the queue tells it to frontends: one JobEvent each."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Callable

from PIL import Image

from storage.records import JobRecord, JobStatus


class EventKind(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    STALLED = "stalled"  # back in the queue because its end could not be recorded (a full disk); error says why
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job; frontends turn these into messages."""

    kind: EventKind
    job: JobRecord
    position: int | None = None
    step: int = 0
    total: int = 0
    preview: Image.Image | None = None
    error: str | None = None
    replayed: bool = False  # a finished job's end, sent again because its platform had not had it
    frame: int = 0  # an animation's frame being drawn (1-based) of `frames`; 0 for a job of one picture
    frames: int = 0
    detail: str = ""  # where a long job is, in words of its own (a training's epoch, losses, time left)

    @classmethod
    def ending(cls, job: JobRecord, replayed: bool = False) -> JobEvent:
        """The event that tells how a finished job ended."""
        kind = {JobStatus.DONE: EventKind.DONE, JobStatus.FAILED: EventKind.FAILED,
                JobStatus.CANCELLED: EventKind.CANCELLED}[job.status]
        return cls(kind, job, error=job.error, replayed=replayed)

    @property
    def finished(self) -> bool:
        return self.kind in (EventKind.DONE, EventKind.FAILED, EventKind.CANCELLED)


Listener = Callable[[JobEvent], None]
