"""The Discord frontend: slash commands and buttons in, job messages out. Translates, nothing more.

Only this module imports discord. Annotations are evaluated (no `from __future__ import annotations`):
the slash options' ranges come from [limits] at start-up, and discord.py reads them off the signatures.
"""

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Awaitable
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
from bot.logs import one_line
from bot.pacing import Paced, Pending, Throttled, clip, retried, status_line
from bot.results import fitted, read_capped
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
ANSWER_WITHIN = 2.0  # seconds: Discord drops an interaction left unanswered for 3; slower work is deferred first
MEMBERSHIP_TTL = 60  # seconds a DM sender's roles in easel's servers are trusted before they are looked up again
SEND_RETRIES = (1.0, 4.0, 15.0)  # pauses between tries of a result whose send failed on the way (reset, 5xx)
SEND_TIMEOUT = 120  # seconds one try of sending a result may take: several MB on a slow home line
FAILURE_LOG_EVERY = 600  # seconds: at most one warning per channel this often, counting the ones left out
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_read=30)
# What a send can fail with besides Discord's own answers: the connection reset or dropped, a timeout.
SEND_ERRORS = (discord.HTTPException, aiohttp.ClientError, OSError, asyncio.TimeoutError)
MENTION_USERS = discord.AllowedMentions(users=True, roles=False, everyone=False)  # a result pings its owner only
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


def _reason(exc: BaseException) -> str:
    """A failure in a few words for a log line: Discord's status and text, or the exception's type."""
    if isinstance(exc, discord.HTTPException):
        return f"{exc.status} {exc.text}".strip()
    return one_line(exc)


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

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await interaction.client.easel.admit(interaction)

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


class _Tree(app_commands.CommandTree):
    """Every slash command passes the frontend's one access check before it runs; none can skip it."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await self.client.easel.admit(interaction)


class _Client(discord.Client):
    def __init__(self, frontend: "DiscordFrontend") -> None:
        # Guilds (with their roles) only: DM senders are looked up with fetch_member, no privileged intent.
        super().__init__(intents=discord.Intents(guilds=True))
        self.easel = frontend
        self.tree = _Tree(self)

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
        self._failures = Throttled(log, FAILURE_LOG_EVERY)  # send failures, per channel
        self._members: dict[int, tuple[float, frozenset[int] | None]] = {}  # DM sender -> (when, roles or None)
        self._downloads: aiohttp.ClientSession | None = None
        if not self.config.allowed_guilds:
            open_dms = self.config.dms and not self.config.allowed_roles  # else DMs need an allowed role
            log.warning("[discord] allowed_guilds is empty: any server this bot is invited to can use your GPU%s; "
                        "list your server ids (or untick Public Bot in the developer portal)",
                        " (and anyone can DM it: dms = true)" if open_dms else "")
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
        if self._downloads is not None:
            await self._downloads.close()
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
        return Owner(
            platform=PLATFORM, user_id=str(user.id), chat_id=str(interaction.channel_id or ""),
            name=user.display_name, admin=bool(self._roles(interaction) & set(self.config.admin_roles)),
            private=interaction.guild_id is None,  # a DM; ephemeral answers are private too (see _answer)
        )

    def _roles(self, interaction: discord.Interaction) -> frozenset[int]:
        """The person's role ids: where they asked, or (in a DM) in the server that let them in."""
        if interaction.guild_id is not None:
            return frozenset(role.id for role in getattr(interaction.user, "roles", ()))
        _, roles = self._members.get(interaction.user.id, (0.0, None))
        return roles or frozenset()

    async def admit(self, interaction: discord.Interaction) -> bool:
        """The one gate: every slash command (the tree's interaction_check) and every button (JobButton's)
        passes here before it runs. Someone refused is told why, privately."""
        try:
            refusal = await self._refusal(interaction)
        except Exception as exc:  # Discord did not answer the membership look-up: refuse rather than guess
            log.warning("could not check whether Discord user %s may use easel: %s", interaction.user.id, _reason(exc),
                        exc_info=not isinstance(exc, SEND_ERRORS))
            refusal = "easel could not check your roles just now; try again in a minute"
        if refusal:
            await self._private(interaction, refusal)
        return refusal is None

    async def _refusal(self, interaction: discord.Interaction) -> str | None:
        """Why easel may not be used here, or None. A DM obeys the same rule as a server: with allowed_guilds
        or allowed_roles set, only a member of an allowed server holding an allowed role there may DM."""
        config = self.config
        if interaction.guild_id is None:
            if not config.dms:
                return "easel does not take commands in direct messages; use it in a server"
            restricted = config.allowed_guilds or config.allowed_roles
            if restricted and await self._member_roles(interaction.user.id) is None:
                return "easel takes direct messages only from people who may use it in its server; use it there"
            return None
        if config.allowed_guilds and interaction.guild_id not in config.allowed_guilds:
            return "easel is not enabled in this server"
        if config.allowed_channels and interaction.channel_id not in config.allowed_channels:
            places = ", ".join(f"<#{channel}>" for channel in config.allowed_channels[:5])
            return f"easel is not enabled in this channel; use it in {places}"
        if config.allowed_roles and not self._roles(interaction) & set(config.allowed_roles):
            needed = ", ".join(f"<@&{role}>" for role in config.allowed_roles[:5])
            return f"you need one of these roles to use easel here: {needed}"
        return None

    async def _member_roles(self, user_id: int) -> frozenset[int] | None:
        """A DM sender's roles in the first allowed server where they hold an allowed role; None if none.

        Looked up with GET /guilds/{id}/members/{user} in the servers the client has cached (the guilds
        intent brings their roles; no privileged intent is needed), then kept for MEMBERSHIP_TTL seconds."""
        now = time.monotonic()
        when, roles = self._members.get(user_id, (None, None))
        if when is not None and now - when < MEMBERSHIP_TTL:
            return roles
        config, wanted = self.config, set(self.config.allowed_roles)
        guilds = [guild for guild in self.client.guilds
                  if (not config.allowed_guilds or guild.id in config.allowed_guilds)
                  and (not wanted or any(guild.get_role(role) for role in wanted))]
        found = await asyncio.gather(*(_member_role_ids(guild, user_id) for guild in guilds))
        roles = next((held for held in found if held is not None and (not wanted or held & wanted)), None)
        if len(self._members) > 10_000:
            self._members.clear()
        self._members[user_id] = (now, roles)
        return roles

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        """A reply only this person sees, whether or not the interaction was answered already."""
        with contextlib.suppress(*SEND_ERRORS):
            if interaction.response.is_done():
                await interaction.followup.send(_text(text), ephemeral=True)
            else:
                await interaction.response.send_message(_text(text), ephemeral=True)

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        """An error only the asker sees; a public "thinking…" already shown for it is removed first."""
        if interaction.response.is_done():
            with contextlib.suppress(*SEND_ERRORS):
                await interaction.delete_original_response()
        await self._private(interaction, text)

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
        """A command that queues nothing: its reply only to the person who asked, so asked as private."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        owner = dataclasses.replace(self._owner(interaction), private=True)
        await self._private(interaction, (await self.service.execute(owner, command)).text)

    async def _queue_job(self, interaction: discord.Interaction, build, image: discord.Attachment | None = None) -> None:
        """Check, defer within Discord's 3 s, then queue; the deferred message becomes the job's message."""
        refusal = self._attachment_problem(image) if image else None
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
                attachments.append(Attachment(image.filename, await self._download(image)))
            except CommandError as exc:
                await self._refuse(interaction, str(exc))
                return
        await self._submitted(interaction, await self.service.execute(self._owner(interaction), command, attachments))

    async def _submitted(self, interaction: discord.Interaction, reply: Reply) -> None:
        """The interaction's own response (or its deferred message) shows the queued job from now on."""
        if reply.error or reply.job is None:
            await self._refuse(interaction, reply.text)
            return
        job = reply.job
        live = self._live[job.id] = _Live(interaction, lambda event: self._edit_progress(live, event))
        live.progress.touched()  # this edit counts towards the pace of progress edits
        content, view = _text(f"{reply.text} — {title(job.params)}"), _buttons(job)
        try:
            if interaction.response.is_done():
                message = await interaction.edit_original_response(content=content, view=view)
            else:
                sent = await interaction.response.send_message(content, view=view)
                message = sent.resource if isinstance(sent.resource, discord.Message) \
                    else await interaction.original_response()
            await self.service.remember_message(PLATFORM, str(interaction.channel_id), str(message.id), job.id)
        except SEND_ERRORS as exc:
            log.warning("could not show job #%d in Discord (%s); its result will still be posted", job.id, _reason(exc))

    def _attachment_problem(self, image: discord.Attachment) -> str | None:
        """Checked before anything is downloaded: the type and size Discord reports (the download has its own cap)."""
        if not (image.content_type or "").startswith("image/"):
            kind = image.content_type or "unknown type"
            return f"{image.filename} is not an image ({kind}); attach a PNG, JPEG, WebP, GIF or BMP"
        limit = self.limits.max_upload_bytes
        if image.size > limit:
            return f"{image.filename} is {image.size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"
        return None

    async def _download(self, image: discord.Attachment) -> bytes:
        """The attachment's bytes, streamed from its URL and cut off past [limits] max_upload_bytes whatever
        size it declared; every failure is a CommandError to show."""
        limit = self.limits.max_upload_bytes
        too_big = CommandError(f"{image.filename} is over the {limit / 1e6:.1f} MB limit; send a smaller image")
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT)
        try:
            async with self._downloads.get(image.url) as response:
                response.raise_for_status()
                data = await read_capped(response.content.iter_chunked(1 << 16), response.content_length, limit)
                if data is None:
                    response.close()  # hang up: the rest is never read
                    raise too_big
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            why = exc.status if isinstance(exc, aiohttp.ClientResponseError) else type(exc).__name__
            raise CommandError(f"could not download {image.filename} ({why})") from None
        return data

    # ---- buttons ----------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        """A press is answered with its own interaction response: the new job's message, or a note only the
        presser sees (a refusal, a cancel). The access check ran already (JobButton.interaction_check)."""
        if job_id > commands.MAX_JOB_ID:  # a forged custom_id: bounded like a typed job number
            await self._private(interaction, f"there is no job #{job_id}")
            return
        owner = self._owner(interaction)
        if action == "cancel":
            reply = await self._in_time(interaction, self.service.execute(owner, Cancel(job_id)), ephemeral=True)
            await self._private(interaction, reply.text)
            return
        run = self.service.more_steps(owner, job_id) if action == "more" else self.service.new_seed(owner, job_id)
        await self._submitted(interaction, await self._in_time(interaction, run, ephemeral=False))

    async def _in_time(self, interaction: discord.Interaction, work: Awaitable[Reply], ephemeral: bool) -> Reply:
        """work's reply; should it take longer than Discord waits for an answer, the press is deferred first."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=ANSWER_WITHIN)
        if not done:
            with contextlib.suppress(*SEND_ERRORS):
                await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        return await task

    # ---- job events -------------------------------------------------------------------------
    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if event.finished:
            live = self._live.pop(job.id, None)
            if live is not None:
                live.progress.close()
            alive = live is not None and live.token_alive
            self._deliveries.start(self._deliver(job, live.interaction if alive else None))
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

    async def _deliver(self, job: JobRecord, interaction: discord.Interaction | None) -> None:
        """The end of a job, where it was asked; nobody awaits this, so what goes wrong is logged here."""
        try:
            await self._post_result(job, interaction, int(job.owner.chat_id or 0), int(job.owner.user_id))
        except Exception:
            log.exception("could not deliver job #%d's result in Discord", job.id)

    async def _post_result(self, job: JobRecord, interaction: discord.Interaction | None, channel_id: int,
                           user_id: int) -> None:
        """A finished job's result: in the interaction's message (while its token lives), else, or should that
        fail, as a new message in channel_id mentioning user_id; each tried again while the failure looks
        passing. If neither works the job stays undelivered (the next start replays it; /history job:N sends
        it) and the person is told so."""
        message = None
        if interaction is not None:
            message = await self._send(
                job, channel_id, _result_text(job), interaction.filesize_limit,
                lambda text, files, view: interaction.edit_original_response(content=text, attachments=files,
                                                                             view=view))
        if message is None:
            channel = self.client.get_partial_messageable(channel_id)
            message = await self._send(
                job, channel_id, f"<@{user_id}> {_result_text(job)}", discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES,
                lambda text, files, view: channel.send(text, files=files, view=view, allowed_mentions=MENTION_USERS))
        if message is None:
            await self._tell(interaction, user_id, f"easel could not post the result of job #{job.id} in "
                                                   f"<#{channel_id}>; /history job:{job.id} sends it again")
            return
        await self.service.remember_message(PLATFORM, str(message.channel.id), str(message.id), job.id)
        await self.service.delivered(job)

    async def _send(self, job: JobRecord, channel_id: int, text: str, limit: int, post) -> discord.Message | None:
        """post(text, files, view) with the job's images and buttons, tried again after each of SEND_RETRIES
        while it fails in a passing way (a reset, a timeout, a 5xx); None once it gives up. Every failure is
        logged, at most once per channel every FAILURE_LOG_EVERY seconds (the next line counts the rest)."""
        def failed(exc: BaseException, again: bool) -> None:
            self._failures.warning(
                channel_id, "could not post job #%d's result in Discord channel %s (%s)%s", job.id, channel_id,
                _reason(exc), "; trying again" if again else "", exc_info=not isinstance(exc, SEND_ERRORS))

        try:
            images = await asyncio.to_thread(_result_images, job, limit)
        except OSError as exc:  # its files are gone from disk
            failed(exc, False)
            return None

        # Files are read as they are sent: each try gets its own.
        return await retried(
            lambda: post(_text(text), [discord.File(io.BytesIO(data), name) for name, data in images], _buttons(job)),
            delays=SEND_RETRIES, transient=_unreachable, failed=failed, timeout=SEND_TIMEOUT)

    async def _tell(self, interaction: discord.Interaction | None, user_id: int, text: str) -> None:
        """A note for one person: in the interaction while it lives, else in a DM; best effort, logged if lost."""
        try:
            if interaction is not None:
                with contextlib.suppress(*SEND_ERRORS):
                    await interaction.followup.send(_text(text), ephemeral=True)
                    return
            await (await self.client.create_dm(discord.Object(user_id))).send(_text(text))
        except SEND_ERRORS as exc:
            self._failures.warning(("dm", user_id), "could not tell Discord user %s: %s (%s)", user_id, text,
                                   _reason(exc))

    async def _send_again(self, interaction: discord.Interaction, job_id: int) -> None:
        """/history job:N: the job's result once more, where it was asked (not in the job's own channel)."""
        await interaction.response.defer(thinking=True)
        reply = await self.service.execute(self._owner(interaction), ShowHistory(10, job_id))
        if reply.shows is None:
            await self._refuse(interaction, reply.text)
            return
        await self._post_result(reply.shows, interaction, int(interaction.channel_id or 0), interaction.user.id)


async def _member_role_ids(guild: discord.Guild, user_id: int) -> frozenset[int] | None:
    """The role ids `user_id` holds in `guild`, or None if they are no member there."""
    try:
        member = await guild.fetch_member(user_id)
    except discord.NotFound:
        return None
    return frozenset(role.id for role in member.roles)


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


def _result_images(job: JobRecord, limit: int) -> list[tuple[str, bytes]]:
    """The job's images for one message (all of a batch goes in one), each within Discord's upload limit."""
    share = max(limit // max(len(job.images), 1) - 1024, 1024)
    return [fitted(Path(image.path), share) for image in job.images]
