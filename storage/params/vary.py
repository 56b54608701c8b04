"""A variation of a finished picture: image→image of it with its own prompt and settings and a new seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from storage.infotext import plain_number
from storage.params.action import ActionParams
from storage.params.base import Range, register
from storage.params.img2img import STRENGTH
from storage.records import RunInfo

Variation = Literal["subtle", "strong"]


@register
@dataclass(frozen=True, kw_only=True)
class VaryParams(ActionParams):
    """Image K of job N redrawn by image→image at `strength` (the [actions] number for a subtle or a strong
    variation, fixed when it was queued) with a new seed: what /imagine <its prompt> --image <that PNG>
    --strength S --seed <that seed> at its size draws."""

    kind: Literal["vary"] = "vary"
    variation: Variation = "subtle"
    strength: float

    RANGES: ClassVar[dict[str, Range]] = {**ActionParams.RANGES, "strength": STRENGTH}
    RERUN_SETTINGS: ClassVar[frozenset[str]] = ActionParams.RERUN_SETTINGS | {"count", "strength"}
    LABEL: ClassVar[str] = "variation"

    @property
    def effective_steps(self) -> int:
        return max(1, int(self.steps * self.strength))  # as image→image runs

    def action(self) -> str:
        return f"{self.variation} variation"

    def summary(self) -> list[str]:
        return [*super().summary(), f"strength {plain_number(self.strength)}"]

    def infotext_extra(self, run: RunInfo | None) -> list[tuple[str, object]]:
        return [("Denoising strength", plain_number(self.strength)), ("Variation", self.variation)]
