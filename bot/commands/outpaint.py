"""/zoom and /pan: a picture on a larger canvas, the new part drawn around it (outpainting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, get_args

from bot.commands import action, drawing
from bot.commands.action import Action, read_source
from bot.commands.grammar import Option, choice, number, register_option
from bot.commands.registry import CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError, register_rules
from storage.params import PanParams, ZoomParams
from storage.params.outpaint import FACTOR, Direction, pan_layout

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

DIRECTIONS: tuple[str, ...] = get_args(Direction)  # left, right, up, down, as the params record them
ZOOM_FACTOR = 2.0  # /zoom's default, and the zoom-out button's (Midjourney's "Zoom Out 2x")
register_option(Option("factor", (), number("factor"), f"/zoom: how far to zoom out, {FACTOR.text()}", "factor",
                       FACTOR, value="float"))
register_option(Option("direction", (), choice("direction", DIRECTIONS), "/pan: which side the picture grows on",
                       choices=DIRECTIONS))


@dataclass(frozen=True)
class Zoom(Action):
    name = "zoom"
    factor: float = ZOOM_FACTOR


@dataclass(frozen=True)
class Pan(Action):
    name = "pan"
    direction: str = ""


def parse_zoom(words: list[str], defaults: DefaultsConfig) -> Zoom:
    source, _, values = read_source("zoom", words)
    only_options_of(ZOOM, values)
    return Zoom(source, values.get("factor", ZOOM_FACTOR), model=values.get("model"))


def parse_pan(words: list[str], defaults: DefaultsConfig) -> Pan:
    source, words, values = read_source("pan", words, loose=DIRECTIONS)
    only_options_of(PAN, values)
    chosen = {*words, *([values["direction"]] if "direction" in values else [])}
    if len(chosen) != 1:
        raise CommandError("/pan takes one direction: left, right, up or down; e.g. /pan #12 right")
    return Pan(source, chosen.pop(), model=values.get("model"))


async def run(service: Service, owner: Owner, command: Zoom | Pan, attachments: Sequence[Attachment]) -> Reply:
    job, _, picture = await action.source_picture(service, owner, command.source, command.name, diffusion_only=True)
    common = dict(**action.carried(job, service.config.defaults, service.random_seed(), command.model), source_job=job.id,
                  source_image=command.source.image, input_sha256="")
    if isinstance(command, Zoom):  # the canvas keeps the picture's size
        params = ZoomParams(**common, width=picture.width, height=picture.height, factor=command.factor)
    else:
        (width, height), _ = pan_layout(picture.size, command.direction)
        problems = drawing.size_problems(f"{picture.width}x{picture.height} panned {command.direction}", width, height,
                                        service.config.limits, "direction")
        if problems:
            raise CommandError(problems[0].message)
        params = PanParams(**common, width=width, height=height, direction=command.direction)
    return await action.submit(service, owner, job, picture, params)


register_rules("zoom", drawing.drawing_problems)
register_rules("pan", drawing.drawing_problems)
_SOURCE = (Param("job", "text", "#job number (default: your last job)"),
           Param("image_number", "int", "which image of the batch, from 1", low=1, high=64))
ZOOM = register(CommandSpec(
    name="zoom",
    usage="/zoom [#JOB] [IMAGE] [--factor F] — zoom out: the picture shrunk F times (default 2) in the middle, "
          "the border drawn around it",
    summary="zoom out of a picture: /zoom #12 --factor 2",
    parse=parse_zoom, run=run, options=("factor", "model"), from_options=action.from_options("zoom"), params=_SOURCE,
))
PAN = register(CommandSpec(
    name="pan",
    usage="/pan [#JOB] [IMAGE] left|right|up|down — the picture grown by half on that side, the new part drawn",
    summary="extend a picture sideways: /pan #12 right",
    parse=parse_pan, run=run, options=("direction", "model"), from_options=action.from_options("pan"), params=_SOURCE,
))
