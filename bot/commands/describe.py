"""/describe #N: everything recorded about a job, and the A1111 parameters text its PNGs carry. No GPU work."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bot.commands.registry import Command, CommandSpec, Param, no_more, register
from bot.formatting import is_rerun
from bot.commands.rerun import job_number
from bot.config import DefaultsConfig
from bot.limits import CommandError
from bot.replies import Reply
from storage.infotext import infotext, plain_number, read_parameters

if TYPE_CHECKING:
    from bot.replies import Attachment
    from bot.service import Service
    from storage.records import JobRecord, Owner


@dataclass(frozen=True)
class Describe(Command):
    name = "describe"
    job_id: int


def parse(words: list[str], defaults: DefaultsConfig) -> Describe:
    if not words:
        raise CommandError("/describe takes a job number, e.g. /describe #12 (/history lists yours)")
    no_more("describe", words[1:])
    return Describe(job_number(words[0].lstrip("#")))


async def run(service: Service, owner: Owner, command: Describe, attachments: Sequence[Attachment]) -> Reply:
    job = await service.visible_job(owner, command.job_id)  # another chat's jobs are not even named
    lines = [f"#{job.id} {job.status}: a {job.params.LABEL}"
             + (f", rerun of #{job.parent_id}" if is_rerun(job) else ""),
             "recorded parameters:"]
    lines += [f"  {name}: {_value(value)}" for name, value in _fields(job)]
    if job.run is not None:
        run = job.run
        model = service.shown_path(run.model, owner) + (f" (hash {run.model_hash[:10]})" if run.model_hash else "")
        extra = (" · VAE decoded in tiles" if run.vae_tiling else "") + (
            f" · steered by {service.shown_path(run.controlnet, owner)}" if run.controlnet else "")
        lines.append(f"ran with: {model} · {run.device} {run.dtype} · memory {run.memory_profile} · "
                     f"attention {run.attention} · diffusers {run.diffusers_version} · torch {run.torch_version}{extra}")
    if job.error:
        lines.append(f"error: {service.shown_text(job.error, owner)}")
    images, count = list(job.images), len(job.images)
    if job.params.slices > 1 and count > 2:  # an animation: its first and last frames say how every one was drawn
        images = [images[0], images[-1]]
        lines.append(f"{count} frames; the first's and the last's parameters (each frame's PNG has its own):")
    for image in images:
        text = await asyncio.to_thread(_png_parameters, Path(image.path))
        where = service.shown_path(image.path, owner)
        if text is None:  # the file is gone or was rewritten: what it carried, rebuilt from the record
            params = job.params.for_image(image.index, count)
            text = infotext(params, image.seed, job.run, job.params.image_fields(image.index, count))
            where = f"{where}, no longer on disk; as it was written"
        lines += [f"A1111 parameters of image {image.index + 1} ({where}):", text]
    if not job.images and not job.status.finished:
        lines.append(f"not drawn yet ({job.status}); its PNG parameters come with the result")
    return Reply("\n".join(lines))


def _fields(job: JobRecord) -> list[tuple[str, object]]:
    """Every recorded field of the job's params, the kind first."""
    params = dataclasses.asdict(job.params)
    return [("kind", params.pop("kind")), *params.items()]


def _value(value: object) -> str:
    if isinstance(value, float):
        return plain_number(value)
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() or "\n" in value else value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
        return f"{len(value)}: " + " ".join(item[:12] for item in value[:3]) + (" …" if len(value) > 3 else "")
    if isinstance(value, (list, tuple)):
        return " ".join(f"{name}={plain_number(amount)}" for name, amount in value) if value else "none"
    return "default" if value is None else str(value)


def _png_parameters(path: Path) -> str | None:
    try:
        return read_parameters(path)
    except OSError:
        return None


SPEC = register(CommandSpec(
    name="describe",
    usage="/describe #JOB — every recorded setting of a job and its PNG's A1111 parameters text",
    summary="every setting of a job and its A1111 parameters: /describe #17",
    parse=parse, run=run,
    params=(Param("job", "int", "the job number", required=True, low=1, high=2**53),),
))
