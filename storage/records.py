"""Typed rows that travel between the layers: who asked, what they asked for, what came of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


def is_hub_id(model: str) -> bool:
    """True for "org/name" as the Hugging Face hub names a repo; False for anything path-like."""
    return not model.startswith((".", "/", "~", "\\")) and model.count("/") == 1 and "\\" not in model


class JobKind(StrEnum):
    """What a job generates; sketch and face jobs join here in their own issues."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Owner:
    """The person who asked for a job, and where the answer goes."""

    platform: str
    user_id: str
    chat_id: str = ""
    name: str = ""

    @property
    def key(self) -> str:
        """One string per person, used for fair turn-taking and limits."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class JobParams:
    """Everything that decides the pixels of a job; enough to redraw it."""

    kind: JobKind
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    cfg: float
    width: int
    height: int
    count: int
    scheduler: str
    strength: float | None = None
    input_sha256: str | None = None

    def replace(self, **changes: object) -> JobParams:
        return dataclasses.replace(self, **changes)

    @property
    def seeds(self) -> tuple[int, ...]:
        """One seed per image: s, s+1, …, so image k can be redrawn on its own."""
        return tuple(self.seed + k for k in range(self.count))

    @property
    def effective_steps(self) -> int:
        """Denoising steps actually run: img2img runs int(steps × strength)."""
        if self.kind is JobKind.IMG2IMG and self.strength is not None:
            return max(1, int(self.steps * self.strength))
        return self.steps


@dataclass(frozen=True)
class RunInfo:
    """How a job was run: the model and the machine-side choices, for reproducing it later."""

    model: str
    model_hash: str | None
    memory_profile: str
    attention: str
    dtype: str
    device: str
    diffusers_version: str
    torch_version: str


@dataclass(frozen=True)
class ImageRecord:
    """One output image of a job."""

    job_id: int
    index: int
    seed: int
    path: str


@dataclass(frozen=True)
class JobRecord:
    """A job as history remembers it."""

    id: int
    owner: Owner
    params: JobParams
    status: JobStatus
    parent_id: int | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    run: RunInfo | None = None
    images: tuple[ImageRecord, ...] = ()
    crashes: int = 0  # times the process died while this job ran
