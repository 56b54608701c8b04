"""The Discord frontend: slash commands and buttons in, job messages out. Translates, nothing more.

Only this module imports discord. Annotations are evaluated (no `from __future__ import annotations`):
the slash options' ranges come from [limits] at start-up, and discord.py reads them off the signatures.
"""

import asyncio
import contextlib
import io
import logging
import time
from pathlib import Path

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.utils import MISSING

from bot import commands
from bot.commands import Cancel, Command, Help, ShowHistory, ShowQueue
from bot.config import Config
from bot.connection import TokenRefused, reach
from bot.limits import MAX_SEED, PSI_RANGE, CommandError
from bot.pacing import Paced, Pending, clip, status_line
from bot.results import fitted
from bot.service import Attachment, Reply, Service, describe, title
from generation.queue import JobEvent
from generation.schedulers import SCHEDULERS
from storage.errors import EaselError
from storage.images import png_bytes
from storage.records import JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)

PLATFORM = "discord"
EDIT_EVERY = 1.5  # seconds between progress edits of one message: Discord's edit rate limit allows about this
TOKEN_LIFETIME = 14 * 60  # an interaction token lasts 15 minutes; after this, results go to the channel
CONTENT_LIMIT = 2000  # characters in a Discord message
AUTHENTICATION_FAILED = 4004  # the gateway's close code for a bad token
# easel never joins voice channels: without this, every start warns that PyNaCl and davey are missing.
discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False


def _token_refused() -> TokenRefused:
    return TokenRefused("Discord", "EASEL_DISCORD_TOKEN",
                        "copy it again from the developer portal (Bot → Reset Token)")


def _unreachable(exc: BaseException) -> bool:
    """Worth trying again: no network, DNS, a refused or reset connection, a timeout, Discord's own 5xx."""
    if isinstance(exc, discord.HTTPException):
        return exc.status >= 500
    return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))


def _text(text: str, limit: int = CONTENT_LIMIT) -> str:
    return clip(text, limit)


def _help(name: str) -> str:
    """An option's description for Discord (at most 100 characters), from the shared grammar's table."""
    return _text(commands.option(name).help, 100)


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"easel:(?P<action>more|seed|cancel):(?P<job>\d+)"):
    """A button under a job's message. The job id lives in the custom_id, so it works after a restart."""

    LABELS = {"more": ("5× steps", discord.ButtonStyle.primary), "seed": ("New seed", discord.ButtonStyle.secondary),
              "cancel": ("Cancel", discord.ButtonStyle.danger)}

    def __init__(self, action: str, job_id: int) -> None:
        label, style = self.LABELS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"easel:{action}:{job_id}"))
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match, /) -> "JobButton":
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.easel.on_button(interaction, self.action, self.job_id)


def _buttons(job: JobRecord) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if job.status.finished:
        if job.status is JobStatus.DONE:
            if hasattr(job.params, "steps"):  # a face has no steps to multiply
                view.add_item(JobButton("more", job.id))
            view.add_item(JobButton("seed", job.id))
    else:
        view.add_item(JobButton("cancel", job.id))
    return view


class _Live:
    """A job being shown in Discord: the interaction whose message shows it, and its paced progress."""

    def __init__(self, interaction: discord.Interaction, show) -> None:
        self.interaction = interaction
        self.since = time.monotonic()
        self.progress = Paced(EDIT_EVERY, show)

    @property
    def token_alive(self) -> bool:
        return time.monotonic() - self.since < TOKEN_LIFETIME


class _Client(discord.Client):
    def __init__(self, frontend: "DiscordFrontend") -> None:
        super().__init__(intents=discord.Intents(guilds=True))
        self.easel = frontend
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:
        await self.easel.setup()


class DiscordFrontend:
    """Runs the Discord bot in easel's event loop: `async with frontend: await frontend.start()`."""

    def __init__(self, service: Service, config: Config) -> None:
        self.service = service
        self.config = config.discord
        # discord.py reads these class attributes; set only when configured, so tests that point the
        # client elsewhere themselves are left alone.
        if self.config.api_base:
            discord.http.Route.BASE = self.config.api_base.rstrip("/")
        if self.config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        self.limits = config.limits
        self.defaults = config.defaults
        self.client = _Client(self)
        self.client.add_dynamic_items(JobButton)
        self._live: dict[int, _Live] = {}
        self._unsubscribe = None
        self._deliveries = Pending()
        self._failed_channels: set[int] = set()  # warned about once each
        if not self.config.allowed_guilds:
            log.warning("[discord] allowed_guilds is empty: any server this bot is invited to can use your GPU%s; "
                        "list your server ids (or untick Public Bot in the developer portal)",
                        " (and anyone can DM it: dms = true)" if self.config.dms else "")
        self._register_commands()

    # ---- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> "DiscordFrontend":
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for live in self._live.values():
            live.progress.close()
        await self._deliveries.finish()  # results being posted finish before storage closes
        await self.client.__aexit__(*exc)

    async def start(self) -> None:
        """Log in (waiting while Discord cannot be reached) and stay connected until the client is closed;
        once connected, discord.py reconnects by itself. A refused token raises TokenRefused."""
        await reach("Discord", self._login, _unreachable)
        try:
            await self.client.connect(reconnect=True)
        except discord.ConnectionClosed as exc:
            if exc.code == AUTHENTICATION_FAILED:
                raise _token_refused() from None
            raise

    async def _login(self) -> None:
        try:
            await self.client.login(self.config.token.get_secret_value())
        except discord.LoginFailure:
            raise _token_refused() from None
        except Exception:
            # Each login opens a new HTTP session on the client's connector; close this one (and the
            # connector with it) and let the next try make both afresh, so no session is left open.
            await self.client.http.close()
            self.client.http.connector = MISSING
            raise

    async def setup(self) -> None:
        """After login, before the gateway: sync the commands, then take the events (replays first)."""
        tree = self.client.tree
        for guild_id in self.config.guild_ids:
            guild = discord.Object(id=guild_id)
            tree.copy_global_to(guild=guild)
            try:
                await tree.sync(guild=guild)
            except discord.Forbidden:
                raise EaselError(f"Discord refused easel's commands in server {guild_id} ([discord] guild_ids): "
                                 "invite the bot there with the applications.commands scope, or remove the id") from None
        if not self.config.guild_ids:
            await tree.sync()
        self._unsubscribe = await self.service.subscribe(PLATFORM, self._on_event, previews=True)

    # ---- who may do what --------------------------------------------------------------------
    def _owner(self, interaction: discord.Interaction) -> Owner:
        user = interaction.user
        roles = {role.id for role in getattr(user, "roles", ())}
        return Owner(
            platform=PLATFORM, user_id=str(user.id), chat_id=str(interaction.channel_id or ""),
            name=user.display_name, admin=bool(roles & set(self.config.admin_roles)),
        )

    def _refusal(self, interaction: discord.Interaction) -> str | None:
        """Why easel may not be used here, or None."""
        config = self.config
        if interaction.guild_id is None:
            return None if config.dms else "easel does not take commands in direct messages; use it in a server"
        if config.allowed_guilds and interaction.guild_id not in config.allowed_guilds:
            return "easel is not enabled in this server"
        if config.allowed_channels and interaction.channel_id not in config.allowed_channels:
            places = ", ".join(f"<#{channel}>" for channel in config.allowed_channels[:5])
            return f"easel is not enabled in this channel; use it in {places}"
        roles = {role.id for role in getattr(interaction.user, "roles", ())}
        if config.allowed_roles and not roles & set(config.allowed_roles):
            needed = ", ".join(f"<@&{role}>" for role in config.allowed_roles[:5])
            return f"you need one of these roles to use easel here: {needed}"
        return None

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        """A reply only this person sees, whether or not the interaction was answered already."""
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(_text(text), ephemeral=True)
            else:
                await interaction.response.send_message(_text(text), ephemeral=True)

    # ---- commands ---------------------------------------------------------------------------
    def _register_commands(self) -> None:
        limits, tree = self.limits, self.client.tree
        schedulers = [app_commands.Choice(name=name, value=name) for name in SCHEDULERS][:25]

        @tree.command(name="imagine", description="Draw a picture from a prompt; attach an image for image→image")
        @app_commands.describe(
            prompt="what to draw; (word:1.3) weights a word; --seed 42 and other flags work here too",
            image="start from this picture (image→image)", negative=_help("negative"), seed=_help("seed"),
            steps=_help("steps"), cfg=_help("cfg"), aspect=_help("aspect"), count=_help("count"),
            strength=_help("strength"), scheduler=_help("scheduler"),
        )
        @app_commands.choices(scheduler=schedulers)
        async def imagine(
            interaction: discord.Interaction,
            prompt: app_commands.Range[str, 1, limits.max_prompt_chars],
            image: discord.Attachment | None = None,
            negative: app_commands.Range[str, 1, limits.max_prompt_chars] | None = None,
            seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
            steps: app_commands.Range[int, 1, limits.max_steps] | None = None,
            cfg: app_commands.Range[float, 0.0, float(limits.max_cfg)] | None = None,
            aspect: str | None = None,
            count: app_commands.Range[int, 1, limits.max_count] | None = None,
            strength: app_commands.Range[float, 0.01, 1.0] | None = None,
            scheduler: str | None = None,
        ) -> None:
            options = dict(negative=negative, seed=seed, steps=steps, cfg=cfg, aspect=aspect, count=count,
                           strength=strength, scheduler=scheduler)
            await self._queue_job(interaction, lambda: commands.imagine_from_options(prompt, options, self.defaults),
                                  image)

        @tree.command(name="sketch", description="A drawing → a picture that follows its lines")
        @app_commands.describe(
            image="a photo of the drawing, or the file", prompt="what it shows; flags work here too",
            mode=_help("mode"), control=_help("control"), negative=_help("negative"), seed=_help("seed"),
            steps=_help("steps"), cfg=_help("cfg"), scheduler=_help("scheduler"),
        )
        @app_commands.choices(scheduler=schedulers,
                              mode=[app_commands.Choice(name=mode, value=mode) for mode in commands.SKETCH_MODES])
        async def sketch(
            interaction: discord.Interaction,
            image: discord.Attachment,
            prompt: app_commands.Range[str, 1, limits.max_prompt_chars],
            mode: str | None = None,
            control: app_commands.Range[float, 0.0, 2.0] | None = None,
            negative: app_commands.Range[str, 1, limits.max_prompt_chars] | None = None,
            seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
            steps: app_commands.Range[int, 1, limits.max_steps] | None = None,
            cfg: app_commands.Range[float, 0.0, float(limits.max_cfg)] | None = None,
            scheduler: str | None = None,
        ) -> None:
            options = dict(mode=mode, control=control, negative=negative, seed=seed, steps=steps, cfg=cfg,
                           scheduler=scheduler)
            await self._queue_job(
                interaction, lambda: commands.imagine_from_options(prompt, options, self.defaults, sketch=True), image
            )

        @tree.command(name="face", description="A portrait of someone who does not exist (StyleGAN2)")
        @app_commands.describe(
            seed=_help("seed"), psi=_help("psi"), count=_help("count"), mix="a second seed whose styles to mix in",
            layers=_help("layers"), edit="moves along latent directions, e.g. dir0=2 smile=-1.5",
        )
        @app_commands.choices(layers=[app_commands.Choice(name=name, value=name) for name in commands.LAYER_NAMES])
        async def face(
            interaction: discord.Interaction,
            seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
            psi: app_commands.Range[float, float(PSI_RANGE[0]), float(PSI_RANGE[1])] | None = None,
            count: app_commands.Range[int, 1, limits.max_count] | None = None,
            mix: app_commands.Range[int, 0, MAX_SEED] | None = None,
            layers: str | None = None,
            edit: app_commands.Range[str, 1, 300] | None = None,
        ) -> None:
            options = dict(seed=seed, psi=psi, count=count, layers=layers)
            await self._queue_job(interaction, lambda: commands.face_from_options(options, mix, edit, self.defaults))

        @tree.command(name="rerun", description="Redraw a job: your last one, your latest with a seed, or #job")
        @app_commands.describe(
            ref="a seed (your latest job with it) or #job; empty = your last job", steps=_help("steps"),
            cfg=_help("cfg"), seed=_help("seed"), negative=_help("negative"), aspect=_help("aspect"),
            count=_help("count"), strength=_help("strength"), scheduler=_help("scheduler"),
        )
        @app_commands.choices(scheduler=schedulers)
        async def rerun(
            interaction: discord.Interaction,
            ref: str | None = None,
            steps: app_commands.Range[int, 1, limits.max_steps] | None = None,
            cfg: app_commands.Range[float, 0.0, float(limits.max_cfg)] | None = None,
            seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
            negative: app_commands.Range[str, 1, limits.max_prompt_chars] | None = None,
            aspect: str | None = None,
            count: app_commands.Range[int, 1, limits.max_count] | None = None,
            strength: app_commands.Range[float, 0.01, 1.0] | None = None,
            scheduler: str | None = None,
        ) -> None:
            options = dict(steps=steps, cfg=cfg, seed=seed, negative=negative, aspect=aspect, count=count,
                           strength=strength, scheduler=scheduler)
            await self._queue_job(interaction, lambda: commands.rerun_from_options(ref, options, self.defaults))

        @tree.command(name="history", description="Your last jobs with their seeds; job: send one's images again")
        @app_commands.describe(count=f"how many jobs to list (at most {commands.MAX_HISTORY})", job="a job number whose images to send again")
        async def history(
            interaction: discord.Interaction,
            count: app_commands.Range[int, 1, commands.MAX_HISTORY] = 10,
            job: app_commands.Range[int, 1, 2**53] | None = None,
        ) -> None:
            if job is None:
                await self._answer(interaction, ShowHistory(count))
            else:
                await self._send_again(interaction, job)

        @tree.command(name="cancel", description="Stop a job: your latest, or the one with this number")
        @app_commands.describe(job="the job number (default: your latest waiting or running job)")
        async def cancel(interaction: discord.Interaction, job: app_commands.Range[int, 1, 2**53] | None = None) -> None:
            await self._answer(interaction, Cancel(job))

        @tree.command(name="queue", description="What is running and waiting, in the order it will run")
        async def queue(interaction: discord.Interaction) -> None:
            await self._answer(interaction, ShowQueue())

        @tree.command(name="help", description="How to use easel, with this server's limits")
        async def help_(interaction: discord.Interaction) -> None:
            await self._answer(interaction, Help())

    async def _answer(self, interaction: discord.Interaction, command: Command) -> None:
        """A command that queues nothing: its reply only to the person who asked."""
        refusal = self._refusal(interaction)
        if refusal:
            await self._private(interaction, refusal)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        reply = await self.service.execute(self._owner(interaction), command)
        await self._private(interaction, reply.text)

    async def _queue_job(self, interaction: discord.Interaction, build, image: discord.Attachment | None = None) -> None:
        """Check, defer within Discord's 3 s, then queue; the deferred message becomes the job's message."""
        refusal = self._refusal(interaction) or (self._attachment_problem(interaction, image) if image else None)
        try:
            command = build() if refusal is None else None
        except CommandError as exc:
            refusal = str(exc)
        if refusal:
            await self._private(interaction, refusal)
            return
        await interaction.response.defer(thinking=True)
        attachments = []
        if image is not None:
            try:
                attachments.append(Attachment(image.filename, await image.read()))
            except discord.HTTPException as exc:
                await self._refuse_after_defer(interaction, f"could not download {image.filename} ({exc.status})")
                return
        await self._submitted(interaction, await self.service.execute(self._owner(interaction), command, attachments))

    async def _submitted(self, interaction: discord.Interaction, reply: Reply) -> None:
        if reply.error or reply.job is None:
            await self._refuse_after_defer(interaction, reply.text)
            return
        job = reply.job
        live = self._live[job.id] = _Live(interaction, lambda event: self._edit_progress(live, event))
        live.progress.touched()  # this edit counts towards the pace of progress edits
        try:
            message = await interaction.edit_original_response(
                content=_text(f"{reply.text} — {title(job.params)}"),
                view=_buttons(job),
            )
            await self.service.remember_message(PLATFORM, str(interaction.channel_id), str(message.id), job.id)
        except discord.HTTPException:
            log.warning("could not show job #%d in Discord; its result will still be posted", job.id, exc_info=True)

    async def _refuse_after_defer(self, interaction: discord.Interaction, text: str) -> None:
        # The deferred "thinking…" message is public; an error is only the asker's business.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await self._private(interaction, text)

    def _attachment_problem(self, interaction: discord.Interaction, image: discord.Attachment) -> str | None:
        """Checked before anything is downloaded: the type Discord reports, and the size."""
        if not (image.content_type or "").startswith("image/"):
            kind = image.content_type or "unknown type"
            return f"{image.filename} is not an image ({kind}); attach a PNG, JPEG, WebP, GIF or BMP"
        # Ours, or what Discord lets this interaction carry, whichever is smaller.
        limit = min(self.limits.max_upload_bytes, interaction.filesize_limit or self.limits.max_upload_bytes)
        if image.size > limit:
            return f"{image.filename} is {image.size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"
        return None

    # ---- buttons ----------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        refusal = self._refusal(interaction)
        if refusal:
            await self._private(interaction, refusal)
            return
        owner = self._owner(interaction)
        if action == "cancel":
            await interaction.response.defer(ephemeral=True, thinking=True)
            await self._private(interaction, (await self.service.execute(owner, Cancel(job_id))).text)
            return
        await interaction.response.defer(thinking=True)
        if action == "more":
            reply = await self.service.more_steps(owner, job_id)
        else:
            reply = await self.service.new_seed(owner, job_id)
        await self._submitted(interaction, reply)

    # ---- job events -------------------------------------------------------------------------
    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if event.finished:
            live = self._live.pop(job.id, None)
            if live is not None:
                live.progress.close()
            self._deliveries.start(self._deliver(job, live))
            return
        live = self._live.get(job.id)
        if live is not None:  # else a job asked for before a restart: its result is posted when it ends
            live.progress.push(event)

    async def _edit_progress(self, live: _Live, event: JobEvent) -> None:
        if not live.token_alive:
            return
        files = []
        if event.preview is not None:
            files.append(discord.File(io.BytesIO(await asyncio.to_thread(png_bytes, event.preview)), "preview.png"))
        await live.interaction.edit_original_response(content=_text(status_line(event)), attachments=files,
                                                      view=_buttons(event.job))

    async def _deliver(self, job: JobRecord, live: _Live | None) -> None:
        """The end of a job: in its own message while the token lives, else a new one in its channel."""
        try:
            if live is not None and live.token_alive:
                with contextlib.suppress(discord.NotFound, discord.Forbidden, discord.HTTPException):
                    await self._final(job, live.interaction)
                    return
            await self._final(job, None)
        except Exception:
            # Missing permissions, a deleted channel…: the job stays undelivered in history, where a later
            # start replays it and /history job:N sends it again; log each channel once, not each job.
            channel = int(job.owner.chat_id or 0)
            if channel not in self._failed_channels:
                self._failed_channels.add(channel)
                log.warning("could not post job #%d's result in Discord channel %s", job.id, channel, exc_info=True)

    async def _final(self, job: JobRecord, interaction: discord.Interaction | None) -> None:
        limit = interaction.filesize_limit if interaction is not None else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        files = await asyncio.to_thread(_result_files, job, limit)
        mention = "" if interaction is not None else f"<@{job.owner.user_id}> "
        text = _text(mention + _result_text(job))
        view = _buttons(job)
        if interaction is None:
            channel = self.client.get_partial_messageable(int(job.owner.chat_id))
            message = await channel.send(text, files=files, view=view,
                                         allowed_mentions=discord.AllowedMentions(users=True, roles=False, everyone=False))
        else:
            message = await interaction.edit_original_response(content=text, attachments=files, view=view)
        await self.service.remember_message(PLATFORM, str(message.channel.id), str(message.id), job.id)
        await self.service.delivered(job)

    async def _send_again(self, interaction: discord.Interaction, job_id: int) -> None:
        refusal = self._refusal(interaction)
        if refusal:
            await self._private(interaction, refusal)
            return
        await interaction.response.defer(thinking=True)
        reply = await self.service.execute(self._owner(interaction), ShowHistory(10, job_id))
        if reply.shows is None:
            await self._refuse_after_defer(interaction, reply.text)
            return
        await self._final(reply.shows, interaction)


def _result_text(job: JobRecord) -> str:
    if job.status is JobStatus.DONE:
        seeds = ", ".join(str(image.seed) for image in job.images)
        first = job.images[0].seed if job.images else None
        prompt = title(job.params)
        many = f" · seeds {seeds}" if len(job.images) > 1 else ""
        return f"**{_text(prompt, 1200)}**\n{describe(job.params, first)}{many} · job #{job.id}"
    if job.status is JobStatus.FAILED:
        return f"job #{job.id} failed: {job.error}"
    return f"job #{job.id} cancelled"


def _result_files(job: JobRecord, limit: int) -> list[discord.File]:
    """The job's images for one message (all of a batch goes in one), each within Discord's upload limit."""
    share = max(limit // max(len(job.images), 1) - 1024, 1024)
    return [discord.File(io.BytesIO(data), name)
            for name, data in (fitted(Path(image.path), share) for image in job.images)]
