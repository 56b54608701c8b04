"""The seam between the queue and whatever draws pictures: one Protocol, typed in and out."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from storage.errors import EaselError
from storage.records import RunInfo
from storage.params import JobParams


class JobCancelled(EaselError):
    """The job was cancelled while it ran."""


class ModelLoadError(EaselError):
    """The configured model could not be loaded; the text says which, why, and what to set."""


class EngineUnavailable(EaselError):
    """No engine is set up for this kind of job; the text says what to configure."""


@dataclass(frozen=True)
class EngineResult:
    """The images of one job, in seed order, and how they were made."""

    images: tuple[Image.Image, ...]
    seeds: tuple[int, ...]
    run: RunInfo
    # A job drawn in turns whose engine decides when it is done (a training): True while it wants another turn.
    # Its turns' images are put together; an animation's turns end after params.slices frames instead.
    more: bool = False


class Progress(Protocol):
    """Called from the engine's thread; must be cheap and thread-safe."""

    @property
    def cancelled(self) -> bool: ...

    # Optional: False when nobody shows this job's previews, so the engine skips making them.
    wants_preview: bool

    # `detail`: a line of its own about where the job is (a training's epoch, losses and time left), if any.
    def step(self, done: int, total: int, preview: Image.Image | None, detail: str = "") -> None: ...


def check_job(params: JobParams, inputs: tuple[Image.Image, ...], kinds: Collection[str]) -> None:
    """Refuse, before any work, a job of a kind the engine does not draw or one with the wrong number of inputs.

    Both are the caller's mistake (the queue routes by kind and loads params.inputs), so they raise ValueError
    naming what was wrong; a user never causes them.
    """
    if params.kind not in kinds:
        raise ValueError(f"a {params.kind} job was sent to an engine for {', '.join(map(str, kinds))} jobs")
    # A job drawn in turns (an animation) gets the frames of its earlier turns after its own inputs.
    if not 0 <= len(inputs) - len(params.inputs) < params.slices:
        raise ValueError(f"{params.kind} job with {len(inputs)} input images instead of {len(params.inputs)}")


class Engine(Protocol):
    """Something that turns job parameters into images. Runs only on the queue's GPU thread."""

    def unavailable(self) -> str | None:
        """Why it cannot take jobs (e.g. no weights configured), in words for the user; None when it can."""
        ...

    def run(self, params: JobParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        """Draw one job; `inputs` are the images named by params.inputs, in that order."""
        ...

    def run_info(self) -> RunInfo | None:
        """How jobs run now (model, profile, attention…), or None before the model is loaded."""
        ...


class PartOf:
    """The Progress of one part of a job (a pass, a turn): cancel and previews as the whole job's; a subclass says
    how its steps count in the whole's."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.wants_preview = getattr(progress, "wants_preview", True)

    @property
    def cancelled(self) -> bool:
        return self._progress.cancelled


class _Turn(PartOf):
    """Progress of one turn of a job drawn whole: its steps counted on after the earlier turns' (frame k of n
    runs from k/n to (k+1)/n of the bar)."""

    def __init__(self, progress: Progress, turn: int, turns: int) -> None:
        super().__init__(progress)
        self._turn, self._turns = turn, turns

    def step(self, done: int, total: int, preview: Image.Image | None, detail: str = "") -> None:
        self._progress.step(self._turn * total + done, self._turns * total, preview, detail)


def draw_whole(engine: Engine, params: JobParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
    """Every turn of a job drawn in turns (an animation) one after another, where nobody else's job waits for
    it (an `easel worker`): what the queue puts together turn by turn here."""
    images: list[Image.Image] = []
    seeds: list[int] = []
    result = None
    while result is None or result.more or len(images) < params.slices:
        result = engine.run(params, inputs + tuple(images), _Turn(progress, len(images), params.slices))
        images += result.images
        seeds += result.seeds
    return EngineResult(images=tuple(images), seeds=tuple(seeds), run=result.run)
