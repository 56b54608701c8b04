"""Typed rows that travel between the layers: who asked, what they asked for, what came of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, TypeAdapter


def is_hub_id(model: str) -> bool:
    """True for "org/name" as the Hugging Face hub names a repo; False for anything path-like."""
    return not model.startswith((".", "/", "~", "\\")) and model.count("/") == 1 and "\\" not in model


class JobKind(StrEnum):
    """What a job generates; sketch and face jobs join here in their own issues."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    SKETCH = "sketch"
    FACE = "face"


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


@dataclass(frozen=True, kw_only=True)
class _CommonParams:
    """What every kind of job has: the first seed and how many images (seeds s, s+1, …)."""

    seed: int
    count: int = 1

    def replace(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)

    @property
    def seeds(self) -> tuple[int, ...]:
        """One seed per image: s, s+1, …, so image k can be redrawn on its own."""
        return tuple(self.seed + k for k in range(self.count))

    @property
    def effective_steps(self) -> int:
        """The steps the engine reports progress over."""
        return 1

    @property
    def inputs(self) -> tuple[str, ...]:
        """sha256 of each kept input image the job needs, in the order its engine takes them."""
        return ()

    @property
    def shown_inputs(self) -> tuple[tuple[str, str], ...]:
        """(label, sha256) of kept images worth showing beside the result (what a sketch's model saw)."""
        return ()

    @property
    def has_steps(self) -> bool:
        """Whether the job has denoising steps a rerun can add to."""
        return False


@dataclass(frozen=True, kw_only=True)
class DiffusionParams(_CommonParams):
    """The Stable Diffusion settings every diffusion kind shares."""

    prompt: str
    negative_prompt: str = ""
    steps: int
    cfg: float
    width: int
    height: int
    scheduler: str
    # Whether the VAE decodes in tiles (which changes the pixels): None lets the engine decide, and
    # the engine records what it did so a rerun can ask for the same.
    vae_tiling: bool | None = None

    @property
    def effective_steps(self) -> int:
        return self.steps

    @property
    def has_steps(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Txt2ImgParams(DiffusionParams):
    """Text → image."""

    kind: Literal[JobKind.TXT2IMG] = JobKind.TXT2IMG


@dataclass(frozen=True, kw_only=True)
class Img2ImgParams(DiffusionParams):
    """Image + text → image: `strength` of the way from the input towards noise, then denoised."""

    kind: Literal[JobKind.IMG2IMG] = JobKind.IMG2IMG
    strength: float
    input_sha256: str

    @property
    def effective_steps(self) -> int:
        """img2img runs int(steps × strength) steps."""
        return max(1, int(self.steps * self.strength))

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input_sha256,)


SketchMode = Literal["scribble", "pix2pix"]


@dataclass(frozen=True, kw_only=True)
class SketchParams(DiffusionParams):
    """A drawing → a photo-like image: Stable Diffusion steered by a ControlNet through the cleaned drawing
    (scribble), or a pix2pix edges→photo generator. The cleaned control image is kept with the job."""

    kind: Literal[JobKind.SKETCH] = JobKind.SKETCH
    mode: SketchMode = "scribble"
    control_scale: float = 1.0  # how strongly the drawing steers (A1111's ControlNet "Weight")
    guidance_start: float = 0.0  # the share of the steps before the ControlNet starts steering
    guidance_end: float = 1.0  # … and after which it stops
    input_sha256: str  # the photo as sent
    control_sha256: str  # what the model saw: white lines on black (scribble) or dark on white (pix2pix)

    @property
    def effective_steps(self) -> int:
        return 1 if self.mode == "pix2pix" else self.steps

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.control_sha256,)

    @property
    def shown_inputs(self) -> tuple[tuple[str, str], ...]:
        return (("control image", self.control_sha256),)


@dataclass(frozen=True, kw_only=True)
class FaceParams(_CommonParams):
    """A StyleGAN2 face: z from the seed as NVIDIA's tools make it, truncated towards the average face by
    psi; optionally the styles of `layers` taken from `mix_seed`, and moves along latent directions."""

    kind: Literal[JobKind.FACE] = JobKind.FACE
    psi: float = 0.7
    mix_seed: int | None = None
    layers: str = "coarse"  # coarse, middle, fine or FROM-TO: which styles come from mix_seed
    edits: tuple[tuple[str, float], ...] = ()  # (direction, amount): "dir0" (found in the weights) or a named one


# One class per kind; a new kind adds its class here and nothing to the database schema.
JobParams = Txt2ImgParams | Img2ImgParams | SketchParams | FaceParams
_PARAMS = TypeAdapter(Annotated[JobParams, Field(discriminator="kind")])


def params_to_json(params: JobParams) -> str:
    """The params as stored in history: JSON, with every number at full precision."""
    return _PARAMS.dump_json(params).decode()


def params_from_json(text: str | bytes) -> JobParams:
    """Stored params back into their typed class; raises pydantic.ValidationError on a bad row."""
    return _PARAMS.validate_json(text)


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
