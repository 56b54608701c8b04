"""The seam between the queue and whatever draws pictures: one Protocol, typed in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from storage.errors import EaselError
from storage.records import JobParams, RunInfo


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


class Progress(Protocol):
    """Called from the engine's thread; must be cheap and thread-safe."""

    @property
    def cancelled(self) -> bool: ...

    # Optional: False when nobody shows this job's previews, so the engine skips making them.
    wants_preview: bool

    def step(self, done: int, total: int, preview: Image.Image | None) -> None: ...


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
