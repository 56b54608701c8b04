"""/sketch: a drawing (attached) → a picture that follows its lines."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence, get_args

from bot.commands import drawing, imagine
from bot.commands.grammar import DRAWING_OPTIONS, Option, Settings, choice, number, prompt_and_values, \
    register_option, settings, split_options
from bot.commands.registry import Command, CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError, register_rules
from generation.config import pix2pix_model_file
from generation.models import NATIVE_SIDE
from storage.params import SketchParams
from storage.params.animate import Mode as AnimationMode
from storage.params.sketch import CONTROL_SCALE
from storage.params.train import NAME, NAME_RULE

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

MODES = ("scribble", "img2img", "pix2pix")
# /animate's modes share the option: the grammar reads any of them, and each command refuses the others.
ANIMATION_MODES: tuple[str, ...] = get_args(AnimationMode)
register_option(Option("mode", (), choice("mode", MODES + ANIMATION_MODES),
                       "/sketch: scribble (follow the lines), img2img (coloured drawings) or pix2pix; "
                       "/animate: sweep, zoom or video", choices=MODES + ANIMATION_MODES))
def model_name(text: str) -> str:
    """A name of a pix2pix model trained here (a folder name: nothing that could step out of the folder)."""
    if not NAME.fullmatch(text):
        raise CommandError(f"a model name is {NAME_RULE}, got {text[:70]!r}")
    return text


register_option(Option("pix2pix", (), model_name, "/sketch: the pix2pix model trained here (easel train-pix2pix, "
                       "/train) to draw with; implies --mode pix2pix", "pix2pix"))
register_option(Option("control", ("control_scale",), number("control"),
                       f"/sketch: how strongly the drawing steers, {CONTROL_SCALE.text()}; /animate video: how "
                       "strongly each frame's edges steer (off unless given)", "control_scale",
                       CONTROL_SCALE, value="float"))


@dataclass(frozen=True)
class Sketch(Command):
    """A drawing (the attached image) → a picture that follows its lines."""

    name = "sketch"
    queues_job = True
    prompt: str
    settings: Settings
    mode: str | None = None


def parse(words: list[str], defaults: DefaultsConfig) -> Sketch:
    free, values = split_options(words, loose_keys=True)
    prompt = " ".join(free).strip()
    if not prompt:
        raise CommandError("the prompt is empty; describe what to draw, e.g. /sketch a red lighthouse at dusk")
    return _sketch(prompt, values, defaults)


def from_options(prompt: str, given: Mapping[str, object], defaults: DefaultsConfig) -> Sketch:
    """/sketch from a slash command, read as /imagine's is."""
    return _sketch(*prompt_and_values(prompt, given), defaults)


def _sketch(prompt: str, values: dict[str, object], defaults: DefaultsConfig) -> Sketch:
    if "ar" in values or "size" in values:
        raise CommandError("/sketch takes its size from the drawing; leave out --ar and --size")
    only_options_of(SPEC, values)
    mode = values.pop("mode", None)
    if mode is not None and mode not in MODES:
        raise CommandError(f"/sketch's mode is scribble, img2img or pix2pix, got {mode!r} (that is /animate's)")
    if "pix2pix" in values:  # a model trained here: its mode goes without saying
        if mode not in (None, "pix2pix"):
            raise CommandError(f"--pix2pix is a model for --mode pix2pix, not --mode {mode}")
        mode = "pix2pix"
    return Sketch(prompt, settings(values, defaults), mode)


async def run(service: Service, owner: Owner, command: Sketch, attachments: Sequence[Attachment]) -> Reply:
    """A drawing → a picture: the drawing is cleaned into the control image the model sees, kept with the job."""
    from generation.scribble import control_image, is_coloured, pix2pix_input  # numpy and OpenCV, no torch

    if len(attachments) != 1:
        raise CommandError("attach the drawing: a photo of it or the file (console: /sketch a house --image house.jpg)")
    photo = await service.decode(attachments[0])
    mode = command.mode or ("img2img" if await asyncio.to_thread(is_coloured, photo) else "scribble")
    given = command.settings
    if mode == "img2img":  # filled colour areas steer image→image well; lines alone do not
        if given.get("control_scale") is not None:
            raise CommandError("--control is for --mode scribble; image→image follows colours, not lines")
        reply = await imagine.draw(service, owner, command.prompt, given, photo)
        why = "" if command.mode else ", a coloured drawing: drawn by image→image (--mode scribble to follow its lines)"
        return dataclasses.replace(reply, text=reply.text + why)
    if given.get("strength") is not None:
        raise CommandError("--strength is for --mode img2img; scribble and pix2pix follow the lines")
    trained = given.get("pix2pix")
    if trained:
        models = service.config.training.models_dir(service.config.storage.data_dir)
        if not pix2pix_model_file(models, trained).is_file():
            known = sorted(p.parent.name for p in models.glob("*/latest_net_G.pth")) if models.is_dir() else []
            raise CommandError(f"there is no pix2pix model {trained!r} here; "
                               + (f"trained ones: {', '.join(known)}" if known else
                                  "train one with easel train-pix2pix PHOTOS --name NAME"))
    elif mode == "pix2pix" and not service.config.sketch.pix2pix:
        raise CommandError("--mode pix2pix needs a pix2pix generator: set [sketch] pix2pix to its .pth file, or "
                           "--pix2pix NAME of a model trained here")
    if mode == "pix2pix":
        control = await asyncio.to_thread(pix2pix_input, photo)
    else:  # the drawing at the model's own pixel count: SDXL's ControlNets want 1024², SD 1.x's 512²
        model = service.model(given.get("model"))
        if model.family == "sdxl" and not service.config.sketch.controlnet_sdxl:
            raise CommandError(f"model {model.name} is SDXL: sketches with it need [sketch] controlnet_sdxl (an SDXL "
                               "scribble ControlNet); pick an SD 1.x model with --model, or --mode img2img")
        control = await asyncio.to_thread(control_image, photo, NATIVE_SIDE[model.family] ** 2)
    params = given.apply(SketchParams(
        **{**drawing.fresh(command.prompt, service.config.defaults, service.random_seed()),
           "width": control.width, "height": control.height},
        mode=mode, control_scale=service.config.sketch.control_scale, input_sha256="", control_sha256="",
    ))
    service.check(params)
    reply = await service.submit_with_inputs(
        owner, (photo, control), lambda sha: params.replace(input_sha256=sha[0], control_sha256=sha[1])
    )
    return dataclasses.replace(reply, text=f"{reply.text} · {mode}")


register_rules("sketch", drawing.drawing_problems)
SPEC = register(CommandSpec(
    name="sketch",
    usage="/sketch <prompt> [--mode scribble|img2img|pix2pix] [--control F] — a drawing (attached) → a picture",
    summary="send a photo of a drawing with a caption: a small house",
    parse=parse, run=run,
    from_options=lambda values, defaults: from_options(
        str(values.get("prompt") or ""), {k: v for k, v in values.items() if k != "prompt"}, defaults),
    options=tuple(name for name in DRAWING_OPTIONS if name not in ("ar", "size")) + ("strength", "mode", "control",
                                                                                   "pix2pix"),
    params=(Param("prompt", "text", "what it shows; flags work here too", required=True, limit="max_prompt_chars"),),
    image="required", image_help="a photo of the drawing, or the file",
    menus={"mode": MODES},
))
