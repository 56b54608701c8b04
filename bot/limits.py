"""Every limit in one place: the [limits] config section and the rules a job is checked against before it is queued."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from generation.prompts import PromptError, parse_attention
from generation.schedulers import SCHEDULERS, scheduler_help
from storage.errors import EaselError
from storage.images import MAX_UPLOAD_PIXELS, plain_number
from storage.records import FaceParams, Img2ImgParams, JobParams, SketchParams

MAX_SEED = 2**32 - 1
PSI_RANGE = (-1, 2)  # /face --psi: one range for the check and for /help


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


@dataclass(frozen=True)
class LimitProblem:
    """One limit a job would break: the setting at fault, what to tell the person, the [limits] key."""

    setting: str
    message: str
    limit: str = ""


def limit_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    """Every configured limit the params break, in the order people should fix them; [] if none."""
    if isinstance(params, FaceParams):
        return _face_problems(params, limits)
    problems: list[LimitProblem] = []
    for setting, label, text in (("prompt", "prompt", params.prompt),
                                 ("negative_prompt", "negative prompt", params.negative_prompt)):
        if len(text) > limits.max_prompt_chars:
            problems.append(LimitProblem(
                setting, f"the {label} is {len(text)} characters; the limit is {limits.max_prompt_chars}",
                "max_prompt_chars",
            ))
        try:
            parse_attention(text)  # a weight like (word:1.2.3) is refused now, not when the job runs
        except PromptError as exc:
            problems.append(LimitProblem(setting, str(exc)))
    problems += _out_of_range((
        ("steps", "steps", params.steps, 1, limits.max_steps, "max_steps"),
        ("cfg", "cfg", params.cfg, 0, limits.max_cfg, "max_cfg"),
        ("count", "n", params.count, 1, limits.max_count, "max_count"),
        ("seed", "seed", params.seed, 0, MAX_SEED - params.count + 1, ""),
    ))
    if isinstance(params, Img2ImgParams) and not 0 < params.strength <= 1:
        problems.append(LimitProblem("strength", f"strength must be above 0 and at most 1, got {plain_number(params.strength)}"))
    elif isinstance(params, Img2ImgParams) and int(params.steps * params.strength) < 1:
        problems.append(LimitProblem("strength", _too_few_img2img_steps(params.steps, params.strength, limits.max_steps)))
    if isinstance(params, SketchParams) and not 0 <= params.control_scale <= 2:
        problems.append(LimitProblem("control_scale", f"control must be 0–2, got {plain_number(params.control_scale)}"))
    for side, value in (("width", params.width), ("height", params.height)):
        if value % 8 or not 64 <= value <= limits.max_side:
            problems.append(LimitProblem(
                side, f"{side} must be a multiple of 8 from 64 to {limits.max_side}, got {value}", "max_side",
            ))
    if params.width * params.height > limits.max_pixels:
        problems.append(LimitProblem(
            "size",
            f"{params.width}x{params.height} is {params.width * params.height:,} pixels; "
            f"the limit is {limits.max_pixels:,} (e.g. {math.isqrt(limits.max_pixels) // 8 * 8} square)",
            "max_pixels",
        ))
    if params.scheduler not in SCHEDULERS:
        problems.append(LimitProblem(
            "scheduler", f"unknown scheduler {params.scheduler!r}; choose one of: {scheduler_help()}",
        ))
    return problems


def _out_of_range(checks: tuple[tuple[str, str, float, float, float, str], ...]) -> list[LimitProblem]:
    """(setting, name shown, value, lowest, highest, [limits] key) → a problem for each value outside its range."""
    return [
        LimitProblem(setting, f"{name} must be {plain_number(low)}–{plain_number(high)}, got {plain_number(value)}",
                     limit)
        for setting, name, value, low, high, limit in checks
        if not low <= value <= high
    ]


def _face_problems(params: FaceParams, limits: LimitsConfig) -> list[LimitProblem]:
    problems = _out_of_range((
        ("count", "n", params.count, 1, limits.max_count, "max_count"),
        ("seed", "seed", params.seed, 0, MAX_SEED - params.count + 1, ""),
        ("psi", "psi", params.psi, *PSI_RANGE, ""),
    ))
    if len(params.edits) > 16:
        problems.append(LimitProblem("edits", f"at most 16 moves at once, got {len(params.edits)}"))
    for direction, amount in params.edits:
        if not -20 <= amount <= 20:
            problems.append(LimitProblem("edits", f"a move must be -20–20, got {direction}={plain_number(amount)}"))
    return problems


def check_params(params: JobParams, limits: LimitsConfig) -> None:
    """Enforce the configured limits on a job about to be queued; the message names the range."""
    problems = limit_problems(params, limits)
    if problems:
        raise CommandError(problems[0].message)


def _too_few_img2img_steps(steps: int, strength: float, max_steps: int) -> str:
    message = f"image→image runs int(steps × strength) steps: {steps} × {plain_number(strength)} gives 0; "
    enough = max(1, math.floor(1 / strength))
    while int(enough * strength) < 1:  # counted as the pipeline counts, in floats
        enough += 1
    if enough <= max_steps:
        return message + f"use at least {enough} steps or a higher strength"
    return message + f"use a higher strength (at most {max_steps} steps are allowed)"
