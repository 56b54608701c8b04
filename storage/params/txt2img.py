"""Text → image, with A1111's hires fix: drawn at its size, enlarged, then redrawn in part at the larger size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import model_name, plain_number
from storage.params.base import Range, register
from storage.params.diffusion import DiffusionParams
from storage.records import RunInfo

HIRES = Range("hires", 1, 4, above_low=True)
HIRES_STRENGTH = Range("hires-strength", 0, 1, above_low=True)
REFINER = Range("refiner", 0, 1)  # 0: off
REFINER_SWITCH = 0.8  # the default switch of a model with a refiner: the base draws 80 % of the steps


def scaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """A size enlarged `factor` times, each side rounded to a multiple of 8 (what the model draws)."""
    return max(8, round(width * factor / 8) * 8), max(8, round(height * factor / 8) * 8)


@register
@dataclass(frozen=True, kw_only=True)
class Txt2ImgParams(DiffusionParams):
    """Text → image. With `hires` (A1111's hires fix), the picture drawn at width×height is enlarged `hires`
    times by `hires_upscaler` (chosen when queued: a network's name or "Lanczos") and redrawn by image→image
    at `hires_strength` (A1111's "Denoising strength" of the second pass) with the same seed."""

    kind: Literal["txt2img"] = "txt2img"
    hires: float | None = None
    hires_strength: float = 0.5
    hires_upscaler: str = ""
    # An SDXL model's refiner finishes the picture after this share of the steps (A1111's "Refiner switch at");
    # None: the model draws every step itself.
    refiner: float | None = None

    RANGES: ClassVar[dict[str, Range]] = {**DiffusionParams.RANGES, "hires": HIRES, "hires_strength": HIRES_STRENGTH,
                                          "refiner": REFINER}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = DiffusionParams.RERUN_SETTINGS | {"hires", "hires_strength", "refiner"}
    LABEL: ClassVar[str] = "text→image job"

    @property
    def hires_size(self) -> tuple[int, int] | None:
        """The size of the finished picture when the hires fix is on."""
        return scaled_size(self.width, self.height, self.hires) if self.hires else None

    @property
    def hires_steps(self) -> int:
        """The steps the second pass runs (image→image runs that share of the steps)."""
        return max(1, int(self.steps * self.hires_strength)) if self.hires else 0

    @property
    def effective_steps(self) -> int:
        return self.steps + self.hires_steps

    def summary(self) -> list[str]:
        parts = super().summary()
        if self.refiner:
            parts.append(f"refiner at {plain_number(self.refiner)}")
        if not self.hires:
            return parts
        width, height = self.hires_size
        return [*parts, f"hires {plain_number(self.hires)}× → {width}x{height} at {plain_number(self.hires_strength)}"]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        fields: list[tuple[str, object]] = []
        if self.hires:
            # As A1111 writes its hires fix; "Size" stays the first pass's, as in A1111's files.
            fields += [("Denoising strength", plain_number(self.hires_strength)),
                       ("Hires upscale", plain_number(self.hires)), ("Hires steps", self.steps),
                       ("Hires upscaler", self.hires_upscaler or "Lanczos")]
        if self.refiner:  # as A1111 writes its refiner
            fields += [("Refiner", model_name(run.refiner) if run is not None and run.refiner else None),
                       ("Refiner switch at", plain_number(self.refiner))]
        return fields
