"""Image + text → image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import plain_number
from storage.params.base import Range, register
from storage.params.diffusion import DiffusionParams
from storage.records import RunInfo

STRENGTH = Range("strength", 0, 1, above_low=True)


@register
@dataclass(frozen=True, kw_only=True)
class Img2ImgParams(DiffusionParams):
    """Image + text → image: `strength` of the way from the input towards noise, then denoised."""

    kind: Literal["img2img"] = "img2img"
    strength: float
    input_sha256: str

    RANGES: ClassVar[dict[str, Range]] = {**DiffusionParams.RANGES, "strength": STRENGTH}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = DiffusionParams.RERUN_SETTINGS | {"strength"}
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {
        key: text for key, text in DiffusionParams.RERUN_REFUSALS.items() if key != "strength"}
    LABEL: ClassVar[str] = "image→image job"

    @property
    def effective_steps(self) -> int:
        """img2img runs int(steps × strength) steps."""
        return max(1, int(self.steps * self.strength))

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input_sha256,)

    def summary(self) -> list[str]:
        return [*super().summary(), f"strength {plain_number(self.strength)}"]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        return [("Denoising strength", plain_number(self.strength))]
