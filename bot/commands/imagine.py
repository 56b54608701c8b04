"""/imagine: text → image, or image + text → image with an attached picture."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from bot.commands import drawing
from bot.commands.grammar import DRAWING_OPTIONS, Option, Settings, number, prompt_and_values, register_option, \
    settings, size_for_aspect, split_options
from bot.commands.registry import Command, CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError, LimitProblem, LimitsConfig, register_rules
from storage.infotext import plain_number
from storage.params import Img2ImgParams, JobParams, Txt2ImgParams, VaryParams
from storage.params.img2img import STRENGTH
from storage.params.txt2img import HIRES, HIRES_STRENGTH, REFINER, REFINER_SWITCH

if TYPE_CHECKING:
    from PIL import Image

    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

register_option(Option("strength", (), number("strength"),
                       "image→image: just above 0 stays close to the input, 1 ignores it", "strength", STRENGTH,
                       value="float"))
register_option(Option("hires", (), number("hires"), f"hires fix: draw, enlarge this many times ({HIRES.text()}), "
                       "then redraw in part at the larger size", "hires", HIRES, value="float"))
register_option(Option("hires-strength", ("hires_strength",), number("hires-strength"),
                       f"hires fix: how far the second pass redraws, {HIRES_STRENGTH.text()} (default 0.5)",
                       "hires_strength", HIRES_STRENGTH, value="float"))
register_option(Option("refiner", (), number("refiner"),
                       f"SDXL with a refiner: the share of the steps the model draws before its refiner finishes the "
                       f"picture, {REFINER.text()} (default {REFINER_SWITCH}; 0 turns it off)", "refiner", REFINER,
                       value="float"))


@dataclass(frozen=True)
class Imagine(Command):
    name = "imagine"
    queues_job = True
    prompt: str
    settings: Settings


def parse(words: list[str], defaults: DefaultsConfig) -> Imagine:
    free, values = split_options(words, loose_keys=True)
    prompt = " ".join(free).strip()
    if not prompt:
        raise CommandError("the prompt is empty; describe what to draw, e.g. /imagine a red lighthouse at dusk")
    only_options_of(SPEC, values)
    return Imagine(prompt, settings(values, defaults))


def from_options(prompt: str, given: Mapping[str, object], defaults: DefaultsConfig) -> Imagine:
    """/imagine from a slash command: typed options, plus inline flags in the prompt ("a cat --seed 4")."""
    text, values = prompt_and_values(prompt, given)
    only_options_of(SPEC, values)
    return Imagine(text, settings(values, defaults))


async def run(service: Service, owner: Owner, command: Imagine, attachments: Sequence[Attachment]) -> Reply:
    if len(attachments) > 1:
        raise CommandError("attach one image at most")
    image = await service.decode(attachments[0]) if attachments else None
    return await draw(service, owner, command.prompt, command.settings, image)


async def draw(service: Service, owner: Owner, prompt: str, given: Settings, image: Image.Image | None) -> Reply:
    """Queue text → image, or image → image when there is an image (its aspect ratio at the default area)."""
    defaults = service.config.defaults
    model = service.model(given.get("model"))
    base = drawing.fresh(prompt, defaults, service.random_seed())
    params: JobParams
    if image is not None:
        width, height = size_for_aspect(*_clamped_aspect(image.size), drawing.area(model, defaults))
        # The input's hash is known once it is kept, below; until then the job is only checked.
        params = Img2ImgParams(**{**base, "width": width, "height": height}, strength=defaults.strength,
                               input_sha256="")
    elif given.get("strength") is not None:
        raise CommandError("--strength is for image→image; attach an image to use it")
    else:
        params = Txt2ImgParams(**base)
    if image is not None and (given.get("hires") is not None or given.get("hires_strength") is not None):
        raise CommandError("--hires is for text→image; with an image, /upscale the result instead")
    if given.get("hires_strength") is not None and given.get("hires") is None:
        raise CommandError("--hires-strength is the hires fix's second pass; add --hires 2 to turn it on")
    params = drawing.sized_for(model, given.apply(params), given)
    if isinstance(params, Txt2ImgParams):  # a model with a refiner finishes with it unless told otherwise
        chosen = given.get("refiner")
        if chosen and not model.refiner:
            raise CommandError(f"--refiner is for an SDXL model with a refiner; {model.name} has none "
                               f"(set [models.{model.name}] refiner)")
        switch = chosen if chosen is not None else REFINER_SWITCH if model.refiner else 0
        params = params.replace(refiner=switch or None)
    elif given.get("refiner") is not None:
        raise CommandError("--refiner is for text→image")
    if isinstance(params, Txt2ImgParams) and params.hires:  # what enlarges it, kept so a rerun does the same
        from bot.commands.upscale import upscaler_of  # here: at the top it would register /upscale before /imagine

        params = params.replace(hires_upscaler=(await upscaler_of(service))[0])
    service.check(params)
    if image is None:
        return await service.submit(owner, params)
    return await service.submit_with_inputs(owner, (image,), lambda sha: params.replace(input_sha256=sha[0]))


def _clamped_aspect(size: tuple[int, int]) -> tuple[int, int]:
    # A panorama photo still works: fit it to the widest ratio we draw rather than refusing it.
    width, height = size
    if width > 4 * height:
        return 4, 1
    if height > 4 * width:
        return 1, 4
    return width, height


def img2img_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    """Image→image's checks (a /vary's too): a drawing's, and at least one step at its strength."""
    assert isinstance(params, (Img2ImgParams, VaryParams))
    problems = drawing.drawing_problems(params, limits)
    if STRENGTH.holds(params.strength) and int(params.steps * params.strength) < 1:
        problems.append(LimitProblem("strength", _too_few_steps(params.steps, params.strength, limits.max_steps)))
    return problems


def _too_few_steps(steps: int, strength: float, max_steps: int, what: str = "image→image",
                   name: str = "strength") -> str:
    message = f"{what} runs int(steps × {name}) steps: {steps} × {plain_number(strength)} gives 0; "
    enough = max(1, math.floor(1 / strength))
    while int(enough * strength) < 1:  # counted as the pipeline counts, in floats
        enough += 1
    if enough <= max_steps:
        return message + f"use at least {enough} steps or a higher {name}"
    return message + f"use a higher {name} (at most {max_steps} steps are allowed)"


def txt2img_problems(params: JobParams, limits: LimitsConfig) -> list[LimitProblem]:
    assert isinstance(params, Txt2ImgParams)
    problems = drawing.drawing_problems(params, limits)
    if params.hires and HIRES.holds(params.hires) and not problems:
        problems += drawing.size_problems(f"--hires {plain_number(params.hires)} of {params.width}x{params.height}",
                                          *params.hires_size, limits, "hires")
        if HIRES_STRENGTH.holds(params.hires_strength) and int(params.steps * params.hires_strength) < 1:
            problems.append(LimitProblem("hires_strength", _too_few_steps(
                params.steps, params.hires_strength, limits.max_steps, "the hires fix's second pass", "hires-strength")))
    return problems


register_rules("txt2img", txt2img_problems)
register_rules("img2img", img2img_problems)
SPEC = register(CommandSpec(
    name="imagine",
    usage="/imagine <prompt> [options] — draw a picture; attach an image for image→image (console: --image PATH)",
    summary="draw a picture: /imagine a red lighthouse --seed 42",
    parse=parse, run=run, options=(*DRAWING_OPTIONS, "strength", "hires", "hires-strength", "refiner"),
    from_options=lambda values, defaults: from_options(
        str(values.get("prompt") or ""), {k: v for k, v in values.items() if k != "prompt"}, defaults),
    params=(Param("prompt", "text", "what to draw; (word:1.3) weights a word; --seed 42 and other flags work here too",
                  required=True, limit="max_prompt_chars"),),
    image="optional", image_help="start from this picture (image→image)",
))
