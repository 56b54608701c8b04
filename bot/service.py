"""Runs commands for any frontend: defaults and limits, history look-ups, the queue, and replies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from PIL import Image

from bot import commands
from bot.commands import Cancel, Command, Face, Help, Imagine, Rerun, Settings, ShowHistory, ShowQueue, Sketch
from bot.config import Config
from bot.limits import MAX_SEED, CommandError, LimitsConfig, check_params
from generation.queue import JobEvent, JobQueue
from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore, open_upload, plain_number
from storage.records import (
    DiffusionParams,
    FaceParams,
    ImageRecord,
    Img2ImgParams,
    JobParams,
    JobRecord,
    JobStatus,
    Owner,
    SketchParams,
    Txt2ImgParams,
)

log = logging.getLogger(__name__)
_seeds = random.SystemRandom()


@dataclass(frozen=True)
class Attachment:
    """A file someone sent along with a command."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class Reply:
    """What to tell the person now; job is set when a job was queued (its events follow); shows is a
    finished job whose result the frontend should send again (/history #N)."""

    text: str
    job: JobRecord | None = None
    error: bool = False
    shows: JobRecord | None = None


def title(params: JobParams) -> str:
    """What a job is of, in a few words: its prompt, or what kind of picture it makes."""
    if isinstance(params, FaceParams):
        return "a face (StyleGAN2)"
    return params.prompt


def describe(params: JobParams, seed: int | None = None) -> str:
    """The short settings line people see: seed 42 · 30 steps · cfg 7 · 512x512."""
    parts = [f"seed {params.seed if seed is None else seed}"]
    if isinstance(params, DiffusionParams):
        parts += [f"{params.steps} steps", f"cfg {plain_number(params.cfg)}", f"{params.width}x{params.height}"]
    if isinstance(params, Img2ImgParams):
        parts.append(f"strength {plain_number(params.strength)}")
    if isinstance(params, SketchParams):
        parts.append(f"{params.mode} {plain_number(params.control_scale)}" if params.mode == "scribble" else params.mode)
    if isinstance(params, FaceParams):
        parts.append(f"ψ {plain_number(params.psi)}")
        if params.mix_seed is not None:
            parts.append(f"mixed with {params.mix_seed} ({params.layers})")
        parts += [f"{name} {amount:+g}" for name, amount in params.edits]
    return " · ".join(parts)


class Service:
    """The frontends' one entry point; knows nothing of any platform."""

    def __init__(self, config: Config, history: History, images: ImageStore, queue: JobQueue) -> None:
        self.config = config
        self.history = history
        self.images = images
        self.queue = queue
        # Held from "is this input file on disk?" to the job that refers to it being queued, so a
        # refused job's freshly saved input can be removed without pulling it from under another job.
        self._inputs = asyncio.Lock()

    def is_admin(self, owner: Owner) -> bool:
        # Whoever sits at the terminal owns the machine.
        return owner.admin or owner.platform == "console" or owner.key in self.config.access.admins

    async def subscribe(self, platform: str, listener: Callable[[JobEvent], None],
                        previews: bool = False) -> Callable[[], None]:
        """Deliver this platform's job events to listener, on the event loop; returns an unsubscribe function.

        First come the ends of its jobs that finished while nobody listened (recovered jobs, a result
        that beat the frontend's connection), each once. The frontend calls delivered() once it has
        sent one, so that it is not replayed after a restart.
        """
        ended: set[int] = set()

        def forward(event: JobEvent) -> None:
            if event.job.owner.platform != platform:
                return
            if platform != "console":
                event = _for_chat(event)
            if event.finished:  # a job that ends while the replay is read must not be sent twice
                if event.job.id in ended:
                    return
                ended.add(event.job.id)
            listener(event)

        unsubscribe = self.queue.subscribe(forward)  # before the read below, so nothing falls between
        unwatch = self.queue.watch_previews(platform) if previews else (lambda: None)
        for job in await self.history.undelivered(platform):
            forward(JobEvent.ending(job, replayed=True))

        def stop() -> None:
            unsubscribe()
            unwatch()
        return stop

    async def delivered(self, job: JobRecord) -> None:
        """The frontend has told its person how this job ended; it is not replayed again."""
        await self.history.mark_delivered(job.id)

    async def sending(self, job_id: int) -> int:
        """A send of the job's result starts; returns how many sends are in doubt, this one included (a send
        whose answer was lost may have arrived)."""
        return await self.history.mark_sending(job_id)

    async def answered(self, job_id: int) -> None:
        """The platform answered a send of the job's result: that send is no longer in doubt."""
        await self.history.mark_answered(job_id)

    @property
    def limits(self) -> LimitsConfig:
        """The configured limits (upload bytes, prompt length…), for a frontend's own checks and help."""
        return self.config.limits

    def parse(self, text: str) -> Command:
        """A command line as typed; raises CommandError with what to change."""
        return commands.parse(text, self.config.defaults)

    def waiting(self) -> list[JobRecord]:
        """Queued jobs in the order they will run."""
        return self.queue.waiting()

    def position(self, job_id: int) -> int | None:
        """A job's place in the line: 0 while it runs, None once it ended."""
        return self.queue.position(job_id)

    def shown_inputs(self, job: JobRecord) -> list[tuple[str, Path]]:
        """Kept input images worth naming beside a result at the terminal: (label, file)."""
        return [(label, self.images.input_path(sha256)) for label, sha256 in job.params.shown_inputs]

    def pending(self, platform: str) -> list[JobRecord]:
        """This platform's unfinished jobs, running first."""
        jobs = [job for job, _, _ in self.queue.running_jobs()] + self.queue.waiting()
        return [job for job in jobs if job.owner.platform == platform]

    async def handle(self, owner: Owner, text: str, attachments: Sequence[Attachment] = ()) -> Reply:
        """Run one command line; every error becomes a one-line reply and the bot keeps serving."""
        return await self._reply(
            owner, repr(text), lambda: self._run(owner, commands.parse(text, self.config.defaults), attachments)
        )

    async def execute(self, owner: Owner, command: Command, attachments: Sequence[Attachment] = ()) -> Reply:
        """Run a command that is already typed (a slash command's options); its text is never parsed again."""
        return await self._reply(owner, repr(command), lambda: self._run(owner, command, attachments))

    async def _reply(self, owner: Owner, what: str, run: Callable[[], Awaitable[Reply]]) -> Reply:
        try:
            return await run()
        except EaselError as exc:
            return Reply(str(exc), error=True)
        except Exception:
            # A bug or a broken disk: one person's command must not take the bot down for everyone.
            log.exception("command from %s failed: %s", owner.key, what)
            return Reply("something went wrong with that command; the details are in the log", error=True)

    async def _run(self, owner: Owner, command: Command, attachments: Sequence[Attachment]) -> Reply:
        if isinstance(command, Imagine):
            return await self.imagine(owner, command, attachments)
        if isinstance(command, Sketch):
            return await self.sketch(owner, command, attachments)
        if isinstance(command, Face):
            if attachments:
                raise CommandError("/face does not take an image")
            return await self.face(owner, command)
        if attachments:
            raise CommandError("only /imagine takes an image")
        if isinstance(command, Rerun):
            return await self.rerun(owner, command)
        if isinstance(command, ShowHistory) and command.job_id is not None:
            return await self.show_again(owner, command.job_id)
        if isinstance(command, ShowHistory):
            return Reply(await self.history_text(owner, command.limit))
        if isinstance(command, Cancel):
            return await self.cancel(owner, command.job_id)
        if isinstance(command, ShowQueue):
            return Reply(self.queue_text(owner))
        if isinstance(command, Help):
            return Reply(commands.help_text(self.config.limits))
        raise AssertionError(command)

    async def imagine(self, owner: Owner, command: Imagine, attachments: Sequence[Attachment]) -> Reply:
        if len(attachments) > 1:
            raise CommandError("attach one image at most")
        return await self._imagine(owner, command, await self._decode(attachments[0]) if attachments else None)

    async def _decode(self, attachment: Attachment) -> Image.Image:
        # Decoding a phone photo takes a fifth of a second: off the event loop, like every file.
        limits = self.config.limits
        return await asyncio.to_thread(
            open_upload, attachment.data, limits.max_upload_bytes, limits.max_upload_pixels, limits.max_side
        )

    async def _imagine(self, owner: Owner, command: Imagine, image: Image.Image | None) -> Reply:
        defaults, settings = self.config.defaults, command.settings
        if settings.mode is not None or settings.control_scale is not None:
            raise CommandError("--mode and --control are for /sketch")
        if settings.psi is not None or settings.layers is not None:
            raise CommandError("--psi and --layers are for /face")
        drawing = dict(
            prompt=command.prompt, negative_prompt=defaults.negative_prompt,
            seed=_seeds.randrange(0, MAX_SEED - self.config.limits.max_count + 1), steps=defaults.steps,
            cfg=defaults.cfg, width=defaults.width, height=defaults.height, count=1, scheduler=defaults.scheduler,
        )
        params: JobParams
        if image is not None:
            width, height = commands.size_for_aspect(*_clamped_aspect(image.size), defaults.width * defaults.height)
            # The input's hash is known once it is kept, below; until then the job is only checked.
            params = Img2ImgParams(**{**drawing, "width": width, "height": height}, strength=defaults.strength,
                                   input_sha256="")
        elif settings.strength is not None:
            raise CommandError("--strength is for image→image; attach an image to use it")
        else:
            params = Txt2ImgParams(**drawing)
        params = _without_controls(settings.apply(params))
        check_params(params, self.config.limits)
        self.queue.check_available(params.kind)
        if image is None:
            return await self._submit(owner, params, None, "")
        return await self._submit_with_inputs(owner, (image,), lambda sha: params.replace(input_sha256=sha[0]))

    async def _submit_with_inputs(
        self, owner: Owner, images: Sequence[Image.Image], with_hashes: Callable[[list[str]], JobParams]
    ) -> Reply:
        """Keep the job's input images, then queue it; a refusal removes the files this command wrote."""
        async with self._inputs:
            kept = [await asyncio.to_thread(self.images.add_input, image) for image in images]
            try:
                return await self._submit(owner, with_hashes([sha256 for sha256, _ in kept]), None, "")
            except EaselError:
                for sha256, new in kept:
                    if new:  # nobody else refers to a file this command wrote: a refusal leaves nothing behind
                        await asyncio.to_thread(self.images.discard_input, sha256)
                raise

    async def sketch(self, owner: Owner, command: Sketch, attachments: Sequence[Attachment]) -> Reply:
        """A drawing → a picture: the drawing is cleaned into the control image the model sees, kept with the job."""
        from generation.scribble import control_image, is_coloured, pix2pix_input  # numpy and OpenCV, no torch

        defaults, settings, limits = self.config.defaults, command.settings, self.config.limits
        if len(attachments) != 1:
            raise CommandError("attach the drawing: a photo of it or the file (console: /sketch a house --image house.jpg)")
        if settings.width is not None:
            raise CommandError("/sketch takes its size from the drawing; leave out --ar and --size")
        if settings.psi is not None or settings.layers is not None:
            raise CommandError("--psi and --layers are for /face")
        photo = await self._decode(attachments[0])
        mode = settings.mode or ("img2img" if await asyncio.to_thread(is_coloured, photo) else "scribble")
        if mode == "img2img":  # filled colour areas steer image→image well; lines alone do not
            plain = dataclasses.replace(settings, mode=None, control_scale=None)
            reply = await self._imagine(owner, Imagine(command.prompt, plain), photo)
            why = "" if settings.mode else ", a coloured drawing: drawn by image→image (--mode scribble to follow its lines)"
            return dataclasses.replace(reply, text=reply.text + why)
        if mode == "pix2pix" and not self.config.sketch.pix2pix:
            raise CommandError("--mode pix2pix needs a pix2pix generator: set [sketch] pix2pix to its .pth file")
        control = await asyncio.to_thread(pix2pix_input if mode == "pix2pix" else control_image, photo)
        params: JobParams = SketchParams(
            prompt=command.prompt, negative_prompt=defaults.negative_prompt,
            seed=_seeds.randrange(0, MAX_SEED - limits.max_count + 1), steps=defaults.steps, cfg=defaults.cfg,
            width=control.width, height=control.height, count=1, scheduler=defaults.scheduler, mode=mode,
            control_scale=self.config.sketch.control_scale, input_sha256="", control_sha256="",
        )
        params = _without_controls(dataclasses.replace(settings, mode=mode).apply(params))
        check_params(params, limits)
        self.queue.check_available(params.kind)
        reply = await self._submit_with_inputs(
            owner, (photo, control), lambda sha: params.replace(input_sha256=sha[0], control_sha256=sha[1])
        )
        return dataclasses.replace(reply, text=f"{reply.text} · {mode}")

    async def face(self, owner: Owner, command: Face) -> Reply:
        """A StyleGAN2 face; with no [faces] checkpoint, a portrait from Stable Diffusion, saying so."""
        settings, faces = command.settings, self.config.faces
        extra = [name for name in _DRAWING_SETTINGS if getattr(settings, name) is not None]
        if extra:
            raise CommandError("/face takes --seed, --psi and --n (and --layers with mix); "
                               f"{extra[0].replace('_', ' ')} is for /imagine")
        seed = settings.seed if settings.seed is not None else _seeds.randrange(0, MAX_SEED - self.config.limits.max_count + 1)
        if not faces.checkpoint:
            # A Stable Diffusion portrait has no ψ, second seed or latent directions to move along.
            if command.mix_seed is not None or command.edits:
                raise CommandError(f"mixing and editing faces need {_STYLEGAN_CHECKPOINT}")
            if settings.psi is not None:
                raise CommandError(f"--psi needs {_STYLEGAN_CHECKPOINT}; "
                                   "without one /face draws a Stable Diffusion portrait")
            portrait = Imagine(FACE_PROMPT, Settings(seed=seed, count=settings.count,
                                                     negative_prompt=FACE_NEGATIVE_PROMPT))
            reply = await self.imagine(owner, portrait, ())
            return dataclasses.replace(reply, text=reply.text + " · no [faces] checkpoint: a portrait by Stable Diffusion")
        unknown = [name for name, _ in command.edits
                   if name not in faces.directions and not (name.startswith("dir") and name[3:].isdigit())]
        if unknown:
            named = ", ".join(sorted(faces.directions)) or "none configured"
            raise CommandError(f"no direction {unknown[0]!r}; use dir0 … dir9 (found in the weights) or one of: {named}")
        params: JobParams = FaceParams(
            seed=seed, count=settings.count or 1, psi=faces.psi if settings.psi is None else settings.psi,
            mix_seed=command.mix_seed, layers=settings.layers or "coarse", edits=command.edits,
        )
        check_params(params, self.config.limits)
        self.queue.check_available(params.kind)
        return await self._submit(owner, params, None, "")

    async def rerun(self, owner: Owner, command: Rerun) -> Reply:
        if command.job_id is not None:
            parent = await self.visible_job(owner, command.job_id)  # another chat's jobs are not even named
            if parent.params.inputs and parent.owner.key != owner.key:
                # Its input is someone's own photo: at a low strength a rerun would hand it back.
                raise CommandError(
                    f"job #{parent.id} is someone else's image→image job; its input image is theirs to rerun"
                )
            base = parent.params
        elif command.seed is not None:
            found = await self.history.latest_with_seed(owner, command.seed)
            if found is None:
                raise CommandError(f"you have no job with seed {command.seed}; /history shows your seeds")
            parent, index = found
            # A seed from inside a batch redraws that one image; the batch's first seed redraws the batch.
            base = parent.params if index == 0 else parent.params.replace(seed=command.seed, count=1)
        else:
            latest = await self.history.recent(owner, 1)
            if not latest:
                raise CommandError("you have no jobs to rerun yet; start with /imagine")
            parent = latest[0]
            base = parent.params
        if command.settings.strength is not None and not isinstance(base, Img2ImgParams):
            # Applied to a text→image job it would be stored and silently ignored.
            raise CommandError(f"strength is for image→image; job #{parent.id} had no input image")
        drawing_only = [name for name in _DRAWING_SETTINGS if getattr(command.settings, name) is not None]
        if isinstance(base, FaceParams) and drawing_only:
            raise CommandError(f"job #{parent.id} is a face; /rerun takes seed, n, psi (and layers for a mix)")
        if not isinstance(base, FaceParams) and (command.settings.psi is not None or command.settings.layers):
            if base.prompt == FACE_PROMPT:  # how a /face drawn without a checkpoint is recorded
                raise CommandError(f"job #{parent.id} is a /face portrait by Stable Diffusion (no [faces] checkpoint "
                                   "was set); psi and layers are for StyleGAN2 faces")
            raise CommandError("psi and layers are for /face")
        if command.settings.control_scale is not None and not isinstance(base, SketchParams):
            raise CommandError(f"control is for /sketch; job #{parent.id} had no drawing")
        if command.settings.mode is not None and getattr(base, "mode", None) != command.settings.mode:
            # Each mode sees the drawing cleaned its own way: that needs the drawing, not this job's control image.
            raise CommandError("a rerun keeps its mode; send the drawing again with /sketch --mode …")
        params = command.settings.apply(base)
        if isinstance(params, DiffusionParams):
            params = _without_controls(params).replace(vae_tiling=_tiling_to_repeat(parent, params))
        check_params(params, self.config.limits)
        note = f", rerun of #{parent.id}"
        if isinstance(params, DiffusionParams) and params.steps != base.steps \
                and not SCHEDULERS[params.scheduler].step_stable:
            note += f" ({params.scheduler} is ancestral: at another step count the picture changes)"
        if not params.inputs:
            return await self._submit(owner, params, parent.id, note)
        async with self._inputs:
            if not all(self.images.input_path(sha256).exists() for sha256 in params.inputs):
                raise CommandError(f"the input image of job #{parent.id} is no longer on disk")
            return await self._submit(owner, params, parent.id, note)

    async def more_steps(self, owner: Owner, job_id: int, factor: int = 5) -> Reply:
        """Redraw a job at `factor` × its steps (at most [limits] max_steps): a rerun button."""
        async def run() -> Reply:
            parent = await self.visible_job(owner, job_id)
            steps = getattr(parent.params, "steps", None)
            if steps is None:
                raise CommandError(f"job #{job_id} has no steps to add to")
            more = min(steps * factor, self.config.limits.max_steps)
            if more == steps:
                raise CommandError(f"job #{job_id} already ran {steps} steps, the most allowed")
            return await self.rerun(owner, Rerun(job_id, None, Settings(steps=more)))
        return await self._reply(owner, f"more steps for #{job_id}", run)

    async def new_seed(self, owner: Owner, job_id: int) -> Reply:
        """Redraw a job with a fresh random seed and every other setting kept: a button."""
        seed = _seeds.randrange(0, MAX_SEED - self.config.limits.max_count + 1)
        return await self.execute(owner, Rerun(job_id, None, Settings(seed=seed)))

    async def visible_job(self, owner: Owner, job_id: int) -> JobRecord:
        """A job this person could see (theirs, or asked for in the same chat); anything else does not exist."""
        job = await self.history.get(job_id)
        if job is None or not _visible(job, owner):
            raise CommandError(f"there is no job #{job_id}")
        return job

    async def show_again(self, owner: Owner, job_id: int) -> Reply:
        """A finished job's result once more, for someone who could see it (a post that failed, say)."""
        job = await self.visible_job(owner, job_id)
        if not job.status.finished:
            raise CommandError(f"job #{job.id} is {job.status}; its result comes when it ends")
        lines = [f"#{job.id} {job.status}: {title(job.params)} — {describe(job.params)}"]
        lines += [f"    {_file(image, owner)}  seed {image.seed}" for image in job.images]
        if job.error:
            lines.append(f"    {job.error if owner.platform == 'console' else without_paths(job.error)}")
        return Reply("\n".join(lines), shows=job)

    async def remember_message(self, platform: str, chat_id: str, message_id: str, job_id: int) -> None:
        """A chat message now shows this job; after a restart, replies and buttons on it find the job."""
        await self.history.link_message(platform, chat_id, message_id, job_id)

    async def job_for_message(self, platform: str, chat_id: str, message_id: str) -> JobRecord | None:
        return await self.history.job_for_message(platform, chat_id, message_id)

    async def _submit(self, owner: Owner, params: JobParams, parent_id: int | None, note: str) -> Reply:
        # Whoever sits at the terminal owns the machine: only the queue's total limit applies to them.
        job = await self.queue.submit(owner, params, parent_id, per_user_limit=owner.platform != "console")
        return Reply(f"queued #{job.id} (position {self.queue.position(job.id)}){note}", job=job)

    async def cancel(self, owner: Owner, job_id: int | None) -> Reply:
        if job_id is None:
            mine = [job for job in self.pending(owner.platform) if job.owner.key == owner.key]
            if not mine:
                raise CommandError("you have no waiting or running jobs to cancel")
            job_id = mine[-1].id
        job = await self.queue.cancel(job_id, owner, admin=self.is_admin(owner))
        running = any(running.id == job.id for running, _, _ in self.queue.running_jobs())
        return Reply(f"cancelling #{job.id}…" if running else f"cancelled #{job.id}")

    async def history_text(self, owner: Owner, limit: int) -> str:
        """This person's latest jobs: all of them where only they read the answer, else this chat's only."""
        jobs = await self.history.recent(owner, limit, chat_only=not owner.private)
        if not jobs:
            here = "" if owner.private else " in this chat"
            return f"no jobs{here} yet; start with /imagine a red lighthouse at dusk"
        lines = []
        for job in jobs:
            prompt = title(job.params) if len(title(job.params)) <= 60 else title(job.params)[:59] + "…"
            parent = f" · rerun of #{job.parent_id}" if job.parent_id else ""
            lines.append(f"#{job.id} {job.status}: {prompt} — {describe(job.params)}{parent}")
            # Every image's own seed: "/rerun SEED" of one image inside a batch needs it.
            lines += [f"    {_file(image, owner)}  seed {image.seed}" for image in job.images]
        return "\n".join(lines)

    def queue_text(self, owner: Owner) -> str:
        """Running and waiting jobs in order; another person's prompt and name only for an admin reading
        privately. Everyone else sees "someone's" job with its place and kind."""
        running, waiting = self.queue.running_jobs(), self.queue.waiting()
        if not running and not waiting:
            return "the queue is empty"
        sees_all = owner.private and self.is_admin(owner)

        def job_text(job: JobRecord, steps: str = "") -> str:
            if job.owner.key == owner.key or sees_all:
                return f"#{job.id} ({_who(job)}) {steps}{title(job.params)[:50]}"
            return f"someone's {job.params.kind} job {steps}".rstrip()

        lines = [f"running: {job_text(job, f'{done}/{total} ')}" + (f" · {where}" if where else "")
                 for job, (done, total), where in running]
        lines += [f"{n}. {job_text(job)}" for n, job in enumerate(waiting, 1)]
        return "\n".join(lines)


# What only a diffusion job has: a face job refuses these rather than silently ignore them.
_DRAWING_SETTINGS = ("negative_prompt", "steps", "cfg", "width", "strength", "scheduler", "mode", "control_scale")
_STYLEGAN_CHECKPOINT = "a StyleGAN2 checkpoint: set [faces] checkpoint"
# /face without a StyleGAN2 checkpoint: the closest Stable Diffusion gets to "a person who does not exist".
# The job is an ordinary text→image one; this prompt is what tells a rerun that it was a /face.
FACE_PROMPT = "a close-up portrait photo of a person, natural light, 85mm lens, sharp focus, detailed skin"
FACE_NEGATIVE_PROMPT = "cartoon, painting, illustration, deformed, blurry, text, watermark"

# Control characters (ESC, NUL, BEL…) mean nothing to a text encoder, can rewrite a terminal that
# prints them, and NUL cannot go into a PNG text chunk; newlines stay (A1111 prompts have them).
# Bidirectional overrides and isolates (U+202A–202E, U+2066–2069), the invisible marks (U+061C,
# U+200E/F) and zero-width characters (U+200B–200D, U+2060, U+FEFF) draw nothing either, but make a
# caption or /history line read as something else than what was asked: gone too.
_CONTROLS = (dict.fromkeys([*range(0, 9), *range(11, 32), *range(127, 160)]) | {9: " "}
             | dict.fromkeys([0x061C, *range(0x200B, 0x2010), *range(0x202A, 0x202F), 0x2060,
                              *range(0x2066, 0x206A), 0xFEFF]))


def _without_controls(params: JobParams) -> JobParams:
    return params.replace(prompt=params.prompt.translate(_CONTROLS),
                          negative_prompt=params.negative_prompt.translate(_CONTROLS))


def _visible(job: JobRecord, owner: Owner) -> bool:
    """Whether `owner` could have seen this job: their own, or asked for in the same chat of the same platform."""
    return job.owner.key == owner.key or (job.owner.platform, job.owner.chat_id) == (owner.platform, owner.chat_id)


def _tiling_to_repeat(parent: JobRecord, params: DiffusionParams) -> bool | None:
    """A rerun at the parent's size tiles the VAE exactly as the parent did, so the pixels match."""
    if (params.width, params.height) != (parent.params.width, parent.params.height):
        return None  # another size: let the engine decide afresh
    if parent.status is JobStatus.DONE and parent.run is not None:
        return parent.run.vae_tiling
    return parent.params.vae_tiling


def _file(image: ImageRecord, owner: Owner) -> str:
    """Where an image is, for a message: the path at the terminal, only the file name in a chat (a
    server's folders are nobody else's business)."""
    return image.path if owner.platform == "console" else Path(image.path).name


# An absolute path (POSIX or Windows) that is not part of a URL: "/srv/easel/models/x", "C:\\models\\x".
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/|[A-Za-z]:\\)(?:[^\s'\"/\\<>|]+[/\\])+([^\s'\"/\\<>|:,;)]*)")


def without_paths(text: str) -> str:
    """A message for a chat: every absolute server path shortened to its last part (an error naming a
    model folder, say), so the server's layout stays its owner's business."""
    return _ABSOLUTE_PATH.sub(lambda match: match[1] or "…", text)


def _for_chat(event: JobEvent) -> JobEvent:
    """The event as a chat may show it: failure texts without server paths."""
    if not (event.error or event.job.error):
        return event
    job = dataclasses.replace(event.job, error=event.job.error and without_paths(event.job.error))
    return dataclasses.replace(event, job=job, error=event.error and without_paths(event.error))


def _who(job: JobRecord) -> str:
    return job.owner.name or job.owner.user_id


def _clamped_aspect(size: tuple[int, int]) -> tuple[int, int]:
    # A panorama photo still works: fit it to the widest ratio we draw rather than refusing it.
    width, height = size
    if width > 4 * height:
        return 4, 1
    if height > 4 * width:
        return 1, 4
    return width, height
