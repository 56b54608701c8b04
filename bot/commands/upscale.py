"""/upscale #N [K]: enlarge image K of job N (a network from [upscale] model, else Lanczos), optionally redrawn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bot.commands import action, drawing
from bot.commands.action import Action, read_source
from bot.commands.grammar import Option, number, register_option
from bot.commands.registry import CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError, LimitProblem, LimitsConfig, register_rules
from storage.infotext import plain_number
from storage.params import JobParams, UpscaleParams
from storage.params.txt2img import scaled_size
from storage.params.upscale import DENOISE, SCALE

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

register_option(Option("scale", (), number("scale"), f"/upscale: how many times larger, {SCALE.text()} "
                       "(default: the upscaler's own scale, or 2)", "scale", SCALE, value="float"))
register_option(Option("denoise", (), number("denoise"), f"/upscale: redraw the enlarged picture this far, "
                       f"{DENOISE.text()} (0: no redraw)", "denoise", DENOISE, value="float"))


@dataclass(frozen=True)
class Upscale(Action):
    name = "upscale"
    scale: float | None = None
    denoise: float = 0.0


def parse(words: list[str], defaults: DefaultsConfig) -> Upscale:
    source, _, values = read_source("upscale", words)
    only_options_of(SPEC, values)
    return Upscale(source, values.get("scale"), values.get("denoise") or 0.0, model=values.get("model"))


async def upscaler_of(service: Service) -> tuple[str, int]:
    """(name, native scale) of what enlarges pictures here: the [upscale] network, read now so a file that is no
    upscaler is refused before a job is queued, or Lanczos (2× by default)."""
    model = service.config.upscale.model
    return ("Lanczos", 2) if not model else (Path(model).name, await _native_scale(model))


async def run(service: Service, owner: Owner, command: Upscale, attachments: Sequence[Attachment]) -> Reply:
    upscaler, native = await upscaler_of(service)
    scale = command.scale if command.scale is not None else float(native)
    job, seed, picture = await action.source_picture(service, owner, command.source, "upscale",
                                                     diffusion_only=command.denoise > 0)
    # A redraw runs the model, which draws multiples of 8; a plain enlargement keeps the exact ratio.
    width, height = (scaled_size(*picture.size, scale) if command.denoise
                     else (round(picture.width * scale), round(picture.height * scale)))
    what = f"{plain_number(scale)}× of {picture.width}x{picture.height}"
    problems = drawing.size_problems(what, width, height, service.config.limits, "scale") if SCALE.holds(scale) else []
    if problems:
        raise CommandError(problems[0].message)
    params = UpscaleParams(**action.carried(job, service.config.defaults, seed, command.model), width=width, height=height,
                           source_job=job.id, source_image=command.source.image, input_sha256="", scale=scale,
                           denoise=command.denoise, upscaler=upscaler)
    return await action.submit(service, owner, job, picture, params)


async def _native_scale(model: str) -> int:
    path = Path(model).expanduser()
    try:
        return await asyncio.to_thread(_scale_of, path, path.stat().st_mtime_ns)
    except OSError as exc:
        raise CommandError(f"[upscale] model {path.name} cannot be read ({exc.strerror or exc}); "
                           "fix the setting, or empty it to enlarge with Lanczos") from None


@lru_cache(maxsize=4)
def _scale_of(path: Path, mtime: int) -> int:
    from generation.upscale import load_upscaler  # torch: only when a network is configured

    return load_upscaler(path).scale


def upscale_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    assert isinstance(params, UpscaleParams)
    return drawing.size_problems("the enlarged picture", params.width, params.height, limits, "scale")


register_rules("upscale", upscale_problems)
SPEC = register(CommandSpec(
    name="upscale",
    usage="/upscale [#JOB] [IMAGE] [--scale F] [--denoise F] — enlarge image IMAGE (default 1) of a job "
          "(default: your last); --denoise 0.3 redraws it a little at the new size",
    summary="enlarge a picture: /upscale #12 2 --scale 2",
    parse=parse, run=run, options=("scale", "denoise", "model"), from_options=action.from_options("upscale"),
    params=(Param("job", "text", "#job number (default: your last job)"),
            Param("image_number", "int", "which image of the batch, from 1", low=1, high=64)),
))
