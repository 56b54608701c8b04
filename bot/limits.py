"""Every limit in one place: the [limits] config section, and the checks a job passes before it is queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from storage.errors import EaselError
from storage.infotext import plain_number
from storage.params import MAX_SEED, JobParams
from storage.uploads import MAX_UPLOAD_PIXELS

__all__ = ["MAX_SEED", "CommandError", "LimitProblem", "LimitsConfig", "check_params", "limit_problems", "register_rules"]


class CommandError(EaselError):
    """The command cannot be run as written; the text says what to change."""


class LimitsConfig(BaseModel):
    """Enforced before any work starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Upper bounds too: every number a job can carry must stay far inside what SQLite, JSON and the
    # pipelines handle, whatever the config says.
    max_steps: int = Field(500, ge=1, le=10_000)
    max_cfg: float = Field(30.0, gt=0, le=1000)
    max_side: int = Field(2048, ge=64, le=16_384)
    max_pixels: int = Field(1536 * 1536, ge=64 * 64, le=16_384 * 16_384)
    max_count: int = Field(4, ge=1, le=64)
    max_prompt_chars: int = Field(1000, ge=1, le=100_000)
    max_upload_bytes: int = Field(10_000_000, ge=1, le=1_000_000_000)
    # A few hundred kilobytes of PNG can declare a 14000x14000 canvas; refuse before decoding it.
    max_upload_pixels: int = Field(MAX_UPLOAD_PIXELS, ge=64 * 64, le=1_000_000_000)
    # Animations: frames per job, the clip a /animate --mode video may send, and the work one animation may
    # ask (frames × steps, counted at 512×512: a 768×768 frame counts 2.25 times).
    max_frames: int = Field(48, ge=1, le=10_000)
    max_clip_bytes: int = Field(20_000_000, ge=1, le=2_000_000_000)  # Telegram's bots can fetch at most 20 MB
    max_clip_seconds: float = Field(10.0, gt=0, le=3600)
    max_animation_steps: int = Field(1500, ge=1, le=10_000_000)
    # /train in a chat: a zip of photos (unpacked, at most ten times this; Telegram's bots fetch at most 20 MB).
    max_zip_bytes: int = Field(20_000_000, ge=1, le=2_000_000_000)


@dataclass(frozen=True)
class LimitProblem:
    """One limit a job would break: the setting at fault, what to tell the person, the [limits] key."""

    setting: str
    message: str
    limit: str = ""


Rules = Callable[[JobParams, LimitsConfig], list[LimitProblem]]
_RULES: dict[str, Rules] = {}


def register_rules(kind: str, rules: Rules) -> None:
    """A kind's own checks, beyond the ranges its params class declares (a prompt's length, a size)."""
    _RULES[kind] = rules


def limit_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    """Every configured limit the params break, in the order people should fix them; [] if none."""
    problems = []
    for setting, allowed in type(params).RANGES.items():
        value = getattr(params, setting)
        if value is None:  # a setting that is off (no hires fix)
            continue
        if setting == "seed":  # seeds s … s+n-1 must all fit, so the top of the range shrinks with the count
            allowed = type(allowed)(allowed.name, allowed.low, MAX_SEED - max(params.count, 1) + 1)
        if not allowed.holds(value, limits):
            problems.append(LimitProblem(setting, f"{allowed.name} must be {allowed.text(limits)}, got {plain_number(value)}",
                                         allowed.limit))
    rules = _RULES.get(params.kind)
    return problems + (rules(params, limits) if rules else [])


def check_params(params: JobParams, limits: LimitsConfig) -> None:
    """Enforce the configured limits on a job about to be queued; the message names the range."""
    problems = limit_problems(params, limits)
    if problems:
        raise CommandError(problems[0].message)
