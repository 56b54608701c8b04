"""Typed rows that travel between the layers: who asked, what they asked for, what came of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.params import JobParams


def is_hub_id(model: str) -> bool:
    """True for "org/name" as the Hugging Face hub names a repo; False for anything path-like."""
    return not model.startswith((".", "/", "~", "\\")) and model.count("/") == 1 and "\\" not in model


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
    # An admin where they asked (a Discord admin role, say): decided by the frontend, never stored.
    admin: bool = dataclasses.field(default=False, compare=False)
    # Only this person sees the answers where they asked (a private chat, the console, an ephemeral
    # reply): decided by the frontend, never stored. A group's answers show only what belongs to the group.
    private: bool = dataclasses.field(default=False, compare=False)

    @property
    def key(self) -> str:
        """One string per person, used for fair turn-taking and limits."""
        return f"{self.platform}:{self.user_id}"


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
    vae_tiling: bool = False  # whether the VAE decoded in tiles; it changes the pixels, so reruns repeat it
    controlnet: str | None = None  # the ControlNet (or pix2pix file) that steered a sketch job
    family: str | None = None  # the model's family: sd1, sd2 or sdxl
    loras: str | None = None  # the LoRAs it drew with, as A1111's "Lora hashes": "name: hash, name: hash"
    embeddings: str | None = None  # the embeddings its prompts used, as A1111's "TI hashes"
    vae: str | None = None  # how the VAE decoded when it differs from the model's dtype (SDXL's float32 upcast)
    refiner: str | None = None  # the SDXL refiner that finished the picture


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
    delivered: bool = False  # whether its platform has been sent how it ended
    unsure_sends: int = 0  # sends of its result that never got an answer: it may have arrived that often
