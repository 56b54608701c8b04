"""Runs commands for any frontend: dispatch to the command registry, and what every command needs (limits,
history look-ups, kept inputs, the queue, replies)."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from PIL import Image

from bot import commands
from bot.commands import Command, Settings
from bot.commands.rerun import Rerun
from bot.config import Config
from bot.formatting import describe, for_chat, job_line, queue_lines, shown_path, shown_text, title, without_paths
from bot.limits import MAX_SEED, CommandError, LimitsConfig, check_params
from bot.replies import Attachment, Reply
from generation.models import ModelSpec, catalog, default_name, loras_of, pick
from generation.queue import JobEvent, JobQueue
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore
from storage.params import DiffusionParams, JobParams
from storage.records import JobRecord, Owner
from storage.uploads import open_upload

log = logging.getLogger(__name__)
_seeds = random.SystemRandom()
# Frontends import these from here; they live in bot.formatting and bot.replies.
__all__ = ["Attachment", "Reply", "Service", "describe", "title", "without_paths"]


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
        self.models = catalog(config.generation, config.models)  # name → model, the default first
        self.default_model = default_name(config.generation, config.models)

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
                event = for_chat(event)
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
        spec = commands.COMMANDS[command.name]
        if attachments and spec.image == "none":
            *some, last = [f"/{other.name}" for other in commands.COMMANDS.values() if other.image != "none"]
            taking = f"{', '.join(some)} and {last}" if some else last
            raise CommandError(f"/{spec.name} does not take an image (only {taking} do)")
        return await spec.run(self, owner, command, attachments)

    # ---- what the commands share ----------------------------------------------------------
    def random_seed(self) -> int:
        """A fresh seed whose whole batch (up to [limits] max_count images) stays in range."""
        return _seeds.randrange(0, MAX_SEED - self.config.limits.max_count + 1)

    def model(self, name: str | None) -> ModelSpec:
        """The configured model called `name` (the default for none); an unknown name lists the known ones."""
        return pick(self.models, name or self.default_model)

    def models_text(self) -> str:
        from bot.commands.models import models_text

        models = self.config.models
        return models_text(self.models, self.default_model, self.queue.loaded_models(), models.lora_dir,
                           models.embeddings_dir)

    def check(self, params: JobParams) -> None:
        """Refuse a job the limits or this easel's engines cannot take, before anything is kept or queued."""
        check_params(params, self.config.limits)
        self.queue.check_available(params.kind)
        if isinstance(params, DiffusionParams):
            family = self.model(params.model).family
            # A LoRA that is not there, a bad tag, or a file plainly not a LoRA for this model: refused now.
            loras_of(params.prompt, self.config.models.lora_dir, params.negative_prompt, family)

    async def decode(self, attachment: Attachment) -> Image.Image:
        """An attached image decoded within the upload limits, or a refusal saying why."""
        # Decoding a phone photo takes a fifth of a second: off the event loop, like every file.
        limits = self.config.limits
        return await asyncio.to_thread(
            open_upload, attachment.data, limits.max_upload_bytes, limits.max_upload_pixels, limits.max_side
        )

    async def submit_with_inputs(
        self, owner: Owner, images: Sequence[Image.Image], with_hashes: Callable[[list[str]], JobParams],
        parent_id: int | None = None, note: str = "",
    ) -> Reply:
        """Keep the job's input images, then queue it; a refusal removes the files this command wrote."""
        async with self._inputs:
            kept = [await asyncio.to_thread(self.images.add_input, image) for image in images]
            try:
                return await self._queue(owner, with_hashes([sha256 for sha256, _ in kept]), parent_id, note)
            except EaselError:
                for sha256, new in kept:
                    if new:  # nobody else refers to a file this command wrote: a refusal leaves nothing behind
                        await asyncio.to_thread(self.images.discard_input, sha256)
                raise

    async def submit(self, owner: Owner, params: JobParams, parent_id: int | None = None, note: str = "") -> Reply:
        """Queue a job whose inputs (if any) are kept already: a rerun's, say."""
        if not params.inputs:
            return await self._queue(owner, params, parent_id, note)
        async with self._inputs:
            if not all(self.images.input_path(sha256).exists() for sha256 in params.inputs):
                raise CommandError(f"the input image of job #{parent_id} is no longer on disk")
            return await self._queue(owner, params, parent_id, note)

    def more_steps_target(self, params: JobParams, factor: int = 5) -> int | None:
        """The steps a "more steps" redraw of such a job runs: `factor` × its steps, at most [limits] max_steps;
        None where that is no more than it ran (or it has no steps)."""
        if not params.has_steps:
            return None
        more = min(params.steps * factor, self.config.limits.max_steps)
        return more if more > params.steps else None

    async def more_steps(self, owner: Owner, job_id: int, factor: int = 5) -> Reply:
        """Redraw a job at `factor` × its steps (at most [limits] max_steps): a rerun button."""
        async def run() -> Reply:
            parent = await self.visible_job(owner, job_id)
            if not parent.params.has_steps:
                raise CommandError(f"job #{job_id} has no steps to add to")
            more = self.more_steps_target(parent.params, factor)
            if more is None:
                raise CommandError(f"job #{job_id} already ran {parent.params.steps} steps, the most allowed")
            return await self._run(owner, Rerun(job_id, None, Settings(steps=more)), ())
        return await self._reply(owner, f"more steps for #{job_id}", run)

    async def new_seed(self, owner: Owner, job_id: int) -> Reply:
        """Redraw a job with a fresh random seed and every other setting kept: a button."""
        return await self.execute(owner, Rerun(job_id, None, Settings(seed=self.random_seed())))

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
        lines = job_line(job, owner, parent=False)
        lines[0] = f"#{job.id} {job.status}: {title(job.params)} — {describe(job.params)}"  # the whole prompt
        if job.error:
            lines.append(f"    {shown_text(job.error, owner)}")
        return Reply("\n".join(lines), shows=job)

    async def remember_message(self, platform: str, chat_id: str, message_id: str, job_id: int) -> None:
        """A chat message now shows this job; after a restart, replies and buttons on it find the job."""
        await self.history.link_message(platform, chat_id, message_id, job_id)

    async def job_for_message(self, platform: str, chat_id: str, message_id: str) -> JobRecord | None:
        return await self.history.job_for_message(platform, chat_id, message_id)

    async def _queue(self, owner: Owner, params: JobParams, parent_id: int | None, note: str) -> Reply:
        if isinstance(params, DiffusionParams) and not params.model:  # recorded by name, so a rerun draws with it
            params = params.replace(model=self.default_model)
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
        return "\n".join(line for job in jobs for line in job_line(job, owner))

    def queue_text(self, owner: Owner) -> str:
        """Running and waiting jobs in order; another person's prompt and name only for an admin reading
        privately. Everyone else sees "someone's" job with its place and kind."""
        return queue_lines(self.queue.running_jobs(), self.queue.waiting(), owner,
                           sees_all=owner.private and self.is_admin(owner))

    def shown_path(self, path: str, owner: Owner) -> str:
        return shown_path(path, owner)

    def shown_text(self, text: str, owner: Owner) -> str:
        return shown_text(text, owner)


def _visible(job: JobRecord, owner: Owner) -> bool:
    """Whether `owner` could have seen this job: their own, or asked for in the same chat of the same platform."""
    return job.owner.key == owner.key or (job.owner.platform, job.owner.chat_id) == (owner.platform, owner.chat_id)
