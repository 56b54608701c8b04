"""What the Stable Diffusion commands share: the checks on a prompt and a size, and a fresh job's settings."""

from __future__ import annotations

import math

from bot.config import DefaultsConfig
from bot.limits import LimitProblem, LimitsConfig
from generation.models import NATIVE_SIDE, ModelSpec, sdxl_size
from generation.prompts import PromptError, parse_attention
from generation.schedulers import SCHEDULERS, scheduler_help
from storage.params import DiffusionParams, JobParams


def drawing_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    """A diffusion job's prompt, size and scheduler against the limits (its numbers' ranges are checked apart)."""
    assert isinstance(params, DiffusionParams)
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


def size_problems(what: str, width: int, height: int, limits: LimitsConfig, setting: str) -> list[LimitProblem]:
    """A result's size against [limits] max_side and max_pixels: "4× of 1024x1024 is 4096x4096; the limit …"."""
    if max(width, height) > limits.max_side:
        return [LimitProblem(setting, f"{what} is {width}x{height}; the limit is {limits.max_side} per side",
                             "max_side")]
    if width * height > limits.max_pixels:
        return [LimitProblem(setting, f"{what} is {width}x{height}, {width * height:,} pixels; "
                                      f"the limit is {limits.max_pixels:,}", "max_pixels")]
    return []


def fresh(prompt: str, defaults: DefaultsConfig, seed: int) -> dict[str, object]:
    """A new diffusion job's settings before the command's own: the prompt and the [defaults]."""
    return dict(prompt=prompt, negative_prompt=defaults.negative_prompt, seed=seed, steps=defaults.steps,
                cfg=defaults.cfg, width=defaults.width, height=defaults.height, count=1, scheduler=defaults.scheduler)


def area(model: ModelSpec, defaults: DefaultsConfig) -> int:
    """The pixel count a new job of this model draws at: the [defaults] size's, and at least SDXL's 1024²."""
    native = NATIVE_SIDE["sdxl"] ** 2 if model.family == "sdxl" else 0
    return max(defaults.width * defaults.height, native)


def sized_for(model: ModelSpec, params: DiffusionParams, given) -> DiffusionParams:
    """A new SDXL text→image job at a size SDXL was trained at: 1024² unless a size was given, and --ar the
    closest of its trained sizes. Other models keep what the command made."""
    if model.family != "sdxl" or params.kind != "txt2img":
        return params
    if given.aspect is not None:
        width, height = sdxl_size(*given.aspect)
    elif given.get("width") is None and params.width * params.height < NATIVE_SIDE["sdxl"] ** 2:
        width = height = NATIVE_SIDE["sdxl"]
    else:
        return params
    return params.replace(width=width, height=height)


def rerun_note(params: JobParams, base: JobParams) -> str:
    """What a rerun at another step count should know: an ancestral sampler draws another picture."""
    if isinstance(params, DiffusionParams) and isinstance(base, DiffusionParams) and params.steps != base.steps \
            and not SCHEDULERS[params.scheduler].step_stable:
        return f" ({params.scheduler} is ancestral: at another step count the picture changes)"
    return ""
