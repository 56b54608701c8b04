"""What every job kind's recorded parameters share, the ranges their numbers must keep, and the registry of kinds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar, Protocol, Self, Union

from pydantic import Field, TypeAdapter

from storage.infotext import plain_number
from storage.records import JobRecord, RunInfo

MAX_SEED = 2**32 - 1


class Limits(Protocol):
    """The configured [limits] a range may take its upper end from (the bot's LimitsConfig is one)."""

    def __getattr__(self, name: str) -> Any: ...


@dataclass(frozen=True)
class Range:
    """Where a number must lie: the one place a range is written, read by the config, the grammar, Discord's
    option ranges and the checks before a job is queued. `limit` names a [limits] key that sets the top."""

    name: str  # as people type it and messages show it ("n" for the count)
    low: float
    high: float | None = None
    limit: str = ""
    above_low: bool = False  # the low end itself is not allowed (strength: above 0)

    def bounds(self, limits: Limits | None = None) -> tuple[float, float]:
        """(lowest, highest); the highest from [limits] when the range says so (and limits are given)."""
        high = getattr(limits, self.limit) if self.limit and limits is not None else self.high
        return self.low, float("inf") if high is None else high

    def holds(self, value: float, limits: Limits | None = None) -> bool:
        low, high = self.bounds(limits)
        return (low < value if self.above_low else low <= value) and value <= high

    def text(self, limits: Limits | None = None) -> str:
        """The range in words as every message shows it: "1–500", "above 0 and at most 1"."""
        low, high = self.bounds(limits)
        if self.above_low:
            return f"above {plain_number(low)} and at most {plain_number(high)}"
        return f"{plain_number(low)}–{plain_number(high)}"


# The ranges several kinds share. A kind's own ranges sit on its params class (RANGES).
SEED = Range("seed", 0, MAX_SEED)
COUNT = Range("n", 1, limit="max_count")
STEPS = Range("steps", 1, limit="max_steps")
CFG = Range("cfg", 0, limit="max_cfg")


@dataclass(frozen=True, kw_only=True)
class JobParams:
    """What every kind of job has: the first seed and how many images (seeds s, s+1, …).

    A kind subclasses this (or DiffusionParams) with a `kind` literal field, and says here what the
    rest of easel needs to know of it: its ranges, what a rerun may change, a title, a summary and
    its infotext. The registry below turns the classes into the history codec.
    """

    seed: int
    count: int = 1

    # Field → the range its value must keep. Checked before a job is queued; Discord's options use them too.
    RANGES: ClassVar[dict[str, Range]] = {"seed": SEED, "count": COUNT}
    # The settings a /rerun of such a job may change (field names); anything else is refused.
    RERUN_SETTINGS: ClassVar[frozenset[str]] = frozenset({"seed", "count"})
    # Why a rerun may not change a setting that is not in RERUN_SETTINGS ("*": any other); {job} is its number.
    RERUN_REFUSALS: ClassVar[dict[str, str]] = {}
    LABEL: ClassVar[str] = "job"  # what the job is, after "a"/"an": "text→image job"
    # Whether /rerun may redraw such a job at all (RERUN_REFUSALS["*"] says why not).
    RERUNNABLE: ClassVar[bool] = True
    # A job in turns that runs in the background (a training): between its turns, its owner's other jobs go first,
    # not only other people's (an animation's next frame goes before its owner's later jobs).
    BACKGROUND: ClassVar[bool] = False
    # Whether its input images are someone's own uploads (only they may rerun it), not pictures drawn here.
    PRIVATE_INPUTS: ClassVar[bool] = True

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
    def slices(self) -> int:
        """How many turns in the fair line the job is drawn in: 1, or an animation's frames (one a turn)."""
        return 1

    def for_image(self, index: int, count: int) -> JobParams:
        """The params image `index` of the job's `count` was drawn with: its own (an animation's frame: the
        /imagine job that draws that frame)."""
        return self

    def order(self, count: int) -> list[int]:
        """The images as drawn (0…count−1) in the order they are kept: as drawn, or an animation played backwards."""
        return list(range(count))

    def image_fields(self, index: int, count: int) -> list[tuple[str, object]]:
        """Infotext fields image `index` of `count` adds to for_image's (an animation's frame: which one)."""
        return []

    @property
    def has_steps(self) -> bool:
        """Whether the job has denoising steps a rerun can add to."""
        return False

    @property
    def inputs(self) -> tuple[str, ...]:
        """sha256 of each kept input image the job needs, in the order its engine takes them."""
        return ()

    @property
    def drawn_from(self) -> int | None:
        """The job whose picture this one starts from (an action's source), which its parent then is not a rerun of."""
        return None

    @property
    def shown_inputs(self) -> tuple[tuple[str, str], ...]:
        """(label, sha256) of kept images worth showing beside the result (what a sketch's model saw)."""
        return ()

    def rerun_refusal(self, setting: str, value: object, job_id: int) -> str | None:
        """Why a rerun of this job may not set `setting` to `value`; None when it may."""
        if setting in self.RERUN_SETTINGS or getattr(self, setting, None) == value:
            return None
        template = self.RERUN_REFUSALS.get(setting) or self.RERUN_REFUSALS.get("*")
        if template is None:
            return f"job #{job_id} is a {self.LABEL}; a rerun of it cannot change {setting.replace('_', ' ')}"
        return template.format(job=job_id)

    def rerun_of(self, parent: JobRecord) -> Self:
        """These params as a rerun of `parent` should run them (the machine-side choices it made kept)."""
        return self

    def title(self) -> str:
        """What the job is of, in a few words: its prompt, or what kind of picture it makes."""
        raise NotImplementedError

    def summary(self) -> list[str]:
        """The settings after the seed in the short line people see: ["30 steps", "cfg 7", "512x512"]."""
        return []

    def infotext(self, seed: int, run: RunInfo | None) -> tuple[list[str], list[tuple[str, object]]]:
        """The PNG's `parameters` text as (heading lines, settings fields); storage.infotext writes it out."""
        raise NotImplementedError


_KINDS: dict[str, type[JobParams]] = {}


def register(cls: type[JobParams]) -> type[JobParams]:
    """Class decorator: the params class of a job kind, known to the history codec by its `kind` field."""
    kind = cls.__dataclass_fields__["kind"].default
    if kind in _KINDS:
        raise ValueError(f"two job kinds are called {kind!r}")
    _KINDS[str(kind)] = cls
    _codec.cache_clear()
    return cls


def kinds() -> dict[str, type[JobParams]]:
    """Every registered kind name → its params class, in registration order."""
    return dict(_KINDS)


@cache
def _codec() -> TypeAdapter:
    union = Union[tuple(_KINDS.values())] if len(_KINDS) > 1 else next(iter(_KINDS.values()))  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="kind")])


def params_to_json(params: JobParams) -> str:
    """The params as stored in history: JSON, with every number at full precision."""
    return _codec().dump_json(params).decode()


def params_from_json(text: str | bytes) -> JobParams:
    """Stored params back into their typed class; raises pydantic.ValidationError on a bad row."""
    return _codec().validate_json(text)
