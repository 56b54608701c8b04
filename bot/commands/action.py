"""What the actions on a finished picture share (/upscale, /vary, /zoom, /pan): "#N [K]" to name image K of
job N, the checks on it, its image kept as the new job's input, and the source's settings carried over."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from bot.commands.grammar import split_options
from bot.commands.registry import Command
from bot.commands.rerun import job_number, positive
from bot.config import DefaultsConfig
from bot.limits import CommandError
from storage.params import DiffusionParams, JobParams
from storage.records import JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.replies import Reply
    from bot.service import Service
    from storage.records import Owner


@dataclass(frozen=True)
class Source:
    """Image `image` (1-based) of job `job_id`; no job: the one replied to, else your last one."""

    job_id: int | None
    image: int = 1


@dataclass(frozen=True)
class Action(Command):
    """An action on a picture: the image it starts from, and the words and options that say how."""

    queues_job = True
    source: Source
    model: str | None = dataclasses.field(default=None, kw_only=True)  # --model: another than the source's

    def replying_to(self, job_id: int) -> Command:
        # "/upscale 2" in reply to a result: image 2 of that result's job.
        if self.source.job_id is not None:
            return self
        return dataclasses.replace(self, source=Source(job_id, self.source.image))


def read_source(name: str, words: list[str], loose: tuple[str, ...] = ()) -> tuple[Source, list[str], dict[str, object]]:
    """"#N [K] [word] [--options]" → the source, the other free words (those in `loose`, lower-cased) and the
    option values."""
    free, values = split_options(words, loose_keys=False)
    job_id, image, rest = None, None, []
    for word in free:
        if word.startswith("#") and job_id is None and image is None:
            job_id = job_number(word[1:])
        elif word.isdigit() and image is None:
            image = positive("image number", word)
        elif word.lower() in loose:
            rest.append(word.lower())
        else:
            hint = f" or {'/'.join(loose)}" if loose else ""
            raise CommandError(f"/{name} takes #job, an image number{hint}, got {word!r}; e.g. /{name} #12 2")
    return Source(job_id, image or 1), rest, values


def from_options(spec_name: str):
    """A slash command's values → the typed line: the job as "#N" (typed bare or with its #), then the image."""
    def read(values, defaults: DefaultsConfig) -> Command:
        from bot.commands.registry import COMMANDS

        values = dict(values)
        job, image = values.pop("job", None), values.pop("image_number", None)
        words = [f"#{str(job).strip().lstrip('#')}"] if job not in (None, "") else []
        words += [str(image)] if image is not None else []
        words += [f"--{key}={value}" for key, value in values.items() if value is not None]
        return COMMANDS[spec_name].parse(words, defaults)
    return read


async def source_picture(service: Service, owner: Owner, source: Source, name: str,
                         diffusion_only: bool = False) -> tuple[JobRecord, int, Image.Image]:
    """The job, the seed of its image and the image itself; refusals name what is wrong, in one line."""
    if source.job_id is None:
        latest = await service.history.recent(owner, 1)
        if not latest:
            raise CommandError(f"you have no pictures yet; /{name} #N works on one (start with /imagine)")
        job = latest[0]
    else:
        job = await service.visible_job(owner, source.job_id)  # another chat's jobs are not even named
    if job.status is not JobStatus.DONE:
        raise CommandError(f"job #{job.id} is {job.status}; /{name} works on a finished picture")
    if not 1 <= source.image <= len(job.images):
        count = len(job.images)
        raise CommandError(f"job #{job.id} has {count} image{'s' if count != 1 else ''}; "
                           f"there is no image {source.image}")
    if diffusion_only and not isinstance(job.params, DiffusionParams):
        raise CommandError(f"job #{job.id} is a {job.params.LABEL} without a prompt; /{name} redraws with the "
                           "prompt of a Stable Diffusion picture")
    record = job.images[source.image - 1]
    try:
        picture = await asyncio.to_thread(_open, Path(record.path))
    except OSError:
        raise CommandError(f"image {source.image} of job #{job.id} is no longer on disk") from None
    return job, record.seed, picture


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def carried(job: JobRecord, defaults: DefaultsConfig, seed: int, model: str | None = None) -> dict[str, object]:
    """The source's prompt, settings and model (the [defaults] where it had none: a StyleGAN2 face), with `seed`;
    `model` (an action's --model) in place of the source's."""
    params = job.params
    if isinstance(params, DiffusionParams):
        return dict(prompt=params.prompt, negative_prompt=params.negative_prompt, steps=params.steps, cfg=params.cfg,
                    scheduler=params.scheduler, seed=seed, count=1, model=model or params.model)
    return dict(prompt="", negative_prompt="", steps=defaults.steps, cfg=defaults.cfg, scheduler=defaults.scheduler,
                seed=seed, count=1, model=model or "")


async def submit(service: Service, owner: Owner, job: JobRecord, picture: Image.Image, params: JobParams) -> Reply:
    """Check the job, keep the picture as its input and queue it as a child of `job`."""
    service.check(params)
    return await service.submit_with_inputs(owner, (picture,), lambda sha: params.replace(input_sha256=sha[0]),
                                            parent_id=job.id, note=f", {params.action()} of #{job.id}")
