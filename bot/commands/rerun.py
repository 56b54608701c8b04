"""/rerun: redraw a job by number, by seed or your last one, with any of its settings changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from bot.commands.drawing import rerun_note
from bot.commands.face import FACE_PROMPT, seed
from bot.commands.grammar import Settings, settings, split_options, typed_values
from bot.commands.registry import EVERY_OPTION, Command, CommandSpec, Param, register
from bot.config import DefaultsConfig
from bot.limits import CommandError
from storage.params import MAX_SEED

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import JobRecord, Owner

MAX_JOB_ID = 2**63 - 1  # SQLite's largest row id


@dataclass(frozen=True)
class Rerun(Command):
    """Redraw a job: by id, by seed (your latest with it) or, with neither, your last job."""

    name = "rerun"
    queues_job = True
    job_id: int | None
    seed: int | None
    settings: Settings

    def replying_to(self, job_id: int) -> Rerun:
        # Said in reply to a result without a seed or number: that result's job, exactly.
        return self if self.job_id is not None or self.seed is not None else Rerun(job_id, None, self.settings)


def parse(words: list[str], defaults: DefaultsConfig) -> Rerun:
    free, values = split_options(words, loose_keys=False)
    if len(free) > 1:
        raise CommandError(f"/rerun takes one seed or #job and key=value settings, got {' '.join(free)!r}")
    return Rerun(*_target(free[0] if free else None), settings(values, defaults))


def from_options(given: Mapping[str, object], defaults: DefaultsConfig) -> Rerun:
    """/rerun from a slash command: `ref` is a seed, "#job" or nothing (your last job); `settings` the key=value
    text (every command's options are more than a slash command may have), and any typed options."""
    given = dict(given)
    ref, text = given.pop("ref", None), str(given.pop("settings", None) or "")
    free, typed = split_options(text.split(), loose_keys=False)
    if free:
        raise CommandError(f"settings are key=value, e.g. steps=350 cfg=8; got {' '.join(free)[:40]!r}")
    values = typed_values(given)
    for name in typed:
        if name in values:
            raise CommandError(f"{name} is given twice; keep one")
    return Rerun(*_target(str(ref).strip() if ref else None), settings({**typed, **values}, defaults))


def _target(target: str | None) -> tuple[int | None, int | None]:
    """(job id, seed) from "#17", "42" or nothing."""
    if not target:
        return None, None
    if target.startswith("#"):
        return job_number(target[1:]), None
    return None, seed(target)


def job_number(text: str) -> int:
    """A job number as typed ("17"): 1 or more, and one SQLite can hold."""
    value = positive("job number", text)
    if value > MAX_JOB_ID:
        raise CommandError(f"there is no job #{text if len(text) <= 24 else text[:20] + '…'}")
    return value


def positive(what: str, text: str) -> int:
    from bot.commands.grammar import whole

    value = whole(what)(text)
    if value < 1:
        raise CommandError(f"{what} must be 1 or more, got {value}")
    return value


async def run(service: Service, owner: Owner, command: Rerun, attachments: Sequence[Attachment]) -> Reply:
    parent, base = await _parent(service, owner, command)
    if not base.RERUNNABLE:
        raise CommandError(base.RERUN_REFUSALS["*"].format(job=parent.id))
    for setting, value in command.settings.given().items():
        refusal = base.rerun_refusal(setting, value, parent.id)
        if refusal is not None and setting in ("psi", "layers") and base.title() == FACE_PROMPT:
            refusal = (f"job #{parent.id} is a /face portrait by Stable Diffusion (no [faces] checkpoint was set); "
                       "psi and layers are for StyleGAN2 faces")
        if refusal is not None:
            raise CommandError(refusal)
    params = command.settings.apply(base).rerun_of(parent)
    note = f", rerun of #{parent.id}{rerun_note(params, base)}{_model_note(service, parent, base, params)}"
    service.check(params)
    return await service.submit(owner, params, parent.id, note)


def _model_note(service: Service, parent: JobRecord, base: object, params: object) -> str:
    """A rerun draws with the job's own model; one that is gone, or another one asked for, is said."""
    recorded = getattr(base, "model", "")
    chosen = getattr(params, "model", "")
    if not recorded or not chosen:
        return ""  # not a Stable Diffusion job, or one from before models had names
    if chosen != recorded:
        return f" (with model {chosen}, not {recorded}: the picture will differ)"
    if recorded not in service.models:
        raise CommandError(f"job #{parent.id} drew with model {recorded!r}, which is no longer configured "
                           f"(configured: {', '.join(service.models)}); add --model NAME to redraw it with another, "
                           "knowing the picture will differ")
    return ""


async def _parent(service: Service, owner: Owner, command: Rerun) -> tuple[JobRecord, object]:
    """The job to redraw and the params to start from."""
    if command.job_id is not None:
        parent = await service.visible_job(owner, command.job_id)  # another chat's jobs are not even named
        if parent.params.inputs and parent.params.PRIVATE_INPUTS and parent.owner.key != owner.key:
            # Its input is someone's own photo: at a low strength a rerun would hand it back.
            raise CommandError(f"job #{parent.id} is someone else's image→image job; its input image is theirs to rerun")
        return parent, parent.params
    if command.seed is not None:
        found = await service.history.latest_with_seed(owner, command.seed)
        if found is None:
            raise CommandError(f"you have no job with seed {command.seed}; /history shows your seeds")
        parent, index = found
        # A seed from inside a batch redraws that one image; the batch's first seed redraws the batch.
        return parent, (parent.params if index == 0 else parent.params.replace(seed=command.seed, count=1))
    latest = await service.history.recent(owner, 1)
    if not latest:
        raise CommandError("you have no jobs to rerun yet; start with /imagine")
    return latest[0], latest[0].params


SPEC = register(CommandSpec(
    name="rerun",
    usage="/rerun [SEED | #JOB] [key=value …] — redraw your last job, your latest with that seed, or job #N",
    summary="redraw: reply to a result with /rerun steps=350",
    parse=parse, run=run, options=EVERY_OPTION,
    from_options=from_options,
    params=(Param("ref", "text", f"a seed (0–{MAX_SEED}) or #job number; default: your last job"),
            Param("settings", "text", "what to change, as key=value: steps=350 cfg=8 seed=7", limit="max_prompt_chars")),
    # In Discord the settings most reruns change are options of their own; any other goes in `settings`.
    slash_options=("seed", "steps", "cfg", "n", "size", "scheduler", "model", "no"),
))
