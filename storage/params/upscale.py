"""Enlarge a finished picture: an upscaler network or Lanczos, then optionally a light image→image pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import plain_number
from storage.params.action import ActionParams
from storage.params.base import Range, register
from storage.records import RunInfo

SCALE = Range("scale", 1, 8, above_low=True)
DENOISE = Range("denoise", 0, 1)  # 0: no second pass


@register
@dataclass(frozen=True, kw_only=True)
class UpscaleParams(ActionParams):
    """Image K of job N enlarged `scale` times by `upscaler` ("Lanczos" or the network file's name, chosen
    when the job was queued so a rerun uses the same), then, with `denoise` above 0, redrawn that far by
    image→image at the new size with the source's prompt and settings."""

    kind: Literal["upscale"] = "upscale"
    scale: float
    denoise: float = 0.0
    upscaler: str = "Lanczos"

    RANGES: ClassVar[dict[str, Range]] = {**ActionParams.RANGES, "scale": SCALE, "denoise": DENOISE}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = ActionParams.RERUN_SETTINGS | {"denoise"}
    LABEL: ClassVar[str] = "upscale"

    @property
    def effective_steps(self) -> int:
        """One for the enlarging, then the redraw's int(steps × denoise)."""
        return 1 + max(1, int(self.steps * self.denoise)) if self.denoise else 1

    @property
    def has_steps(self) -> bool:
        return self.denoise > 0

    def action(self) -> str:
        return f"upscale {plain_number(self.scale)}×"

    def summary(self) -> list[str]:
        what = [f"{self.width}x{self.height}", self.upscaler]
        if self.denoise:
            what += [f"denoise {plain_number(self.denoise)}", f"{self.steps} steps", f"cfg {plain_number(self.cfg)}"]
        return what

    def infotext(self, seed: int, run: RunInfo | None) -> tuple[list[str], list[tuple[str, object]]]:
        # As A1111's extras tab writes an upscale ("Postprocess …"), after its img2img fields when redrawn.
        done = [("Postprocess upscale by", plain_number(self.scale)), ("Postprocess upscaler", self.upscaler)]
        if not self.denoise:  # a resize: no seed, steps or model had a part in it
            return ([self.prompt] if self.prompt else []), [*done, ("Size", f"{self.width}x{self.height}")]
        lines, fields = super().infotext(seed, run)
        return lines, [*fields[:-1], ("Denoising strength", plain_number(self.denoise)), *done, fields[-1]]
