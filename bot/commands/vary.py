"""/vary #N [K] [subtle|strong]: image→image of image K of job N with its own prompt and settings, a new seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, get_args

from bot.commands import action, imagine
from bot.commands.action import Action, read_source
from bot.commands.grammar import Option, choice, register_option
from bot.commands.registry import CommandSpec, Param, only_options_of, register
from bot.config import DefaultsConfig
from bot.limits import CommandError, register_rules
from storage.params import VaryParams
from storage.params.vary import Variation

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

VARIATIONS: tuple[str, ...] = get_args(Variation)  # subtle, strong, as the params record them
register_option(Option("variation", (), choice("variation", VARIATIONS),
                       "/vary: subtle keeps the picture close, strong lets it change more", choices=VARIATIONS))


@dataclass(frozen=True)
class Vary(Action):
    name = "vary"
    variation: str = "subtle"
    count: int | None = None
    steps: int | None = None


def parse(words: list[str], defaults: DefaultsConfig) -> Vary:
    source, words, values = read_source("vary", words, loose=VARIATIONS)
    only_options_of(SPEC, values)
    chosen = {*words, *([values["variation"]] if "variation" in values else [])}
    if len(chosen) > 1:
        raise CommandError("/vary is subtle or strong, not both")
    return Vary(source, chosen.pop() if chosen else "subtle", values.get("n"), values.get("steps"),
                model=values.get("model"))


async def run(service: Service, owner: Owner, command: Vary, attachments: Sequence[Attachment]) -> Reply:
    job, _, picture = await action.source_picture(service, owner, command.source, "vary", diffusion_only=True)
    strengths = service.config.actions
    strength = strengths.vary_strong if command.variation == "strong" else strengths.vary_subtle
    carried = {**action.carried(job, service.config.defaults, service.random_seed(), command.model), "count": command.count or 1}
    if command.steps is not None:  # image→image runs steps × strength of them: a few-step source may need more
        carried["steps"] = command.steps
    params = VaryParams(**carried, width=picture.width, height=picture.height, source_job=job.id,
                        source_image=command.source.image, input_sha256="", variation=command.variation,
                        strength=strength)
    return await action.submit(service, owner, job, picture, params)


register_rules("vary", imagine.img2img_problems)
SPEC = register(CommandSpec(
    name="vary",
    usage="/vary [#JOB] [IMAGE] [subtle|strong] [--n N] [--steps N] — image IMAGE (default 1) of a job redrawn with a new "
          "seed: subtle stays close, strong changes more",
    summary="a variation of a picture: /vary #12 2 strong",
    parse=parse, run=run, options=("variation", "n", "steps", "model"), from_options=action.from_options("vary"),
    params=(Param("job", "text", "#job number (default: your last job)"),
            Param("image_number", "int", "which image of the batch, from 1", low=1, high=64)),
))
