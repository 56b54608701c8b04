"""What every action on a finished picture shares: which job's image it started from (image K of job N)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from storage.params.diffusion import DiffusionParams


@dataclass(frozen=True, kw_only=True)
class ActionParams(DiffusionParams):
    """An action on image `source_image` (1-based) of job `source_job`: that image is kept as the job's input
    (by hash, like an upload), and the prompt and settings are the source job's, so a rerun redraws it alone.
    width and height are the result's size."""

    source_job: int
    source_image: int = 1
    input_sha256: str

    PRIVATE_INPUTS: ClassVar[bool] = False  # its input is a result anyone in the chat could see
    # Actions take their size from the picture they start from: a rerun may not change it or the count.
    RERUN_SETTINGS: ClassVar[frozenset[str]] = frozenset({"seed", "negative_prompt", "steps", "cfg", "scheduler"})

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input_sha256,)

    @property
    def drawn_from(self) -> int | None:
        return self.source_job

    def action(self) -> str:
        """What was done, in a few words ("zoom out 2×"), for titles and the queued reply."""
        return self.LABEL

    def title(self) -> str:
        source = f"{self.action()} of #{self.source_job} image {self.source_image}"
        return f"{source}: {self.prompt}" if self.prompt else source
