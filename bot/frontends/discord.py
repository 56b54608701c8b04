"""The Discord frontend: slash commands and buttons in, job messages out. Translates, nothing more.

Only the bot/frontends/discord*.py modules import discord: this one (the client, answers and results),
discord_commands (the slash commands and buttons) and discord_access (who may use easel).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Callable

import aiohttp
import discord
import yarl
from discord.utils import MISSING

from bot.commands import Cancel, Command, ShowHistory
from bot.commands.rerun import MAX_JOB_ID
from bot.config import Config
from bot.frontends.chat import NO_LONGER, ChatFrontend, Shown, action_command, ending
from bot.frontends.connection import TokenRefused
from bot.frontends.discord_access import DiscordAccess
from bot.frontends.discord_commands import ActionButton, CommandTree, JobButton, buttons, register_commands
from bot.frontends.pacing import Pending, clip, pieces, retried, status_line
from bot.frontends.results import (
    animation_state,
    fitted,
    fitted_video,
    is_animation,
    is_archive,
    is_clip,
    over_limit,
    read_capped,
    too_large,
    upload_problem,
)
from bot.limits import CommandError
from bot.logs import one_line
from bot.formatting import describe, title
from bot.replies import Attachment, Reply
from bot.service import Service
from generation.queue import JobEvent
from storage.errors import EaselError
from storage.images import png_bytes
from storage.records import JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)

EDIT_EVERY = 1.5  # seconds between progress edits of one message: Discord's edit rate limit allows about this
TOKEN_LIFETIME = 14 * 60  # an interaction token lasts 15 minutes; after this, results go to the channel
CONTENT_LIMIT = 2000  # characters in a Discord message
AUTHENTICATION_FAILED = 4004  # the gateway's close code for a bad token
ANSWER_WITHIN = 2.0  # seconds: Discord drops an interaction left unanswered for 3; slower work is deferred first
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


def _text(text: str, limit: int = CONTENT_LIMIT) -> str:
    return clip(text, limit)


def _reason(exc: BaseException) -> str:
    """A failure in a few words for a log line: Discord's status and text, or the exception's type."""
    if isinstance(exc, discord.HTTPException):
        return f"{exc.status} {exc.text}".strip()
    return one_line(exc)


class _Live(Shown):
    """A job shown in Discord: the interaction whose message shows it, while its token lives."""

    def __init__(self, interaction: discord.Interaction, show: Callable[[JobEvent], Awaitable[None]]) -> None:
        super().__init__(EDIT_EVERY, show)
        self.interaction = interaction
        self.since = time.monotonic()

    @property
    def token_alive(self) -> bool:
        return time.monotonic() - self.since < TOKEN_LIFETIME


class _Client(discord.Client):
    def __init__(self, frontend: DiscordFrontend) -> None:
        # Guilds (with their roles) only: DM senders are looked up with fetch_member, no privileged intent.
        super().__init__(intents=discord.Intents(guilds=True))
        self.frontend = frontend
        self.tree = CommandTree(self)

    async def setup_hook(self) -> None:
        await self.frontend.sync_commands()


class DiscordFrontend(ChatFrontend[_Live]):
    """Runs the Discord bot in easel's event loop: `async with frontend: await frontend.start()`."""

    PLATFORM = "discord"
    NAME = "Discord"
    PREVIEWS = True

    def __init__(self, service: Service, config: Config) -> None:
        super().__init__(service, log, FAILURE_LOG_EVERY)
        self.config = config.discord
        # discord.py reads these class attributes; set only when configured, so tests that point the
        # client elsewhere themselves are left alone.
        if self.config.api_base:
            discord.http.Route.BASE = self.config.api_base.rstrip("/")
        if self.config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        self.client = _Client(self)
        self.client.add_dynamic_items(JobButton, ActionButton)
        self.access = DiscordAccess(self.config, self.client)
        self._deliveries = Pending()
        self._downloads: aiohttp.ClientSession | None = None
        if not self.config.allowed_guilds:
            open_dms = self.config.dms and not self.config.allowed_roles  # else DMs need an allowed role
            log.warning("[discord] allowed_guilds is empty: any server this bot is invited to can use your GPU%s; "
                        "list your server ids (or untick Public Bot in the developer portal)",
                        " (and anyone can DM it: dms = true)" if open_dms else "")
        register_commands(self.client.tree, self, self.limits, config.defaults)

    # ---- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> DiscordFrontend:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop_events()
        await self._deliveries.finish()  # results being posted finish before storage closes
        if self._downloads is not None:
            await self._downloads.close()
        await self.client.__aexit__(*exc)

    def _unreachable(self, exc: BaseException) -> bool:
        """Worth trying again: no network, DNS, a refused or reset connection, a timeout, Discord's own 5xx."""
        if isinstance(exc, discord.HTTPException):
            return exc.status >= 500
        return isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError))

    async def _connect(self) -> None:
        """Log in; the client's setup_hook syncs the commands before the gateway is reached."""
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

    async def _serve(self) -> None:
        """Stay connected until the client is closed; once connected, discord.py reconnects by itself."""
        try:
            await self.client.connect(reconnect=True)
        except discord.ConnectionClosed as exc:
            if exc.code == AUTHENTICATION_FAILED:
                raise _token_refused() from None
            raise

    async def sync_commands(self) -> None:
        """After login, before the gateway: the slash commands, in each configured server or globally."""
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

    # ---- who may do what --------------------------------------------------------------------
    def _owner(self, interaction: discord.Interaction) -> Owner:
        user = interaction.user
        return Owner(
            platform=self.PLATFORM, user_id=str(user.id), chat_id=str(interaction.channel_id or ""),
            name=user.display_name, admin=self.access.is_admin(interaction),
            private=interaction.guild_id is None,  # a DM; ephemeral answers are private too (see answer)
        )

    async def admit(self, interaction: discord.Interaction) -> bool:
        """The one gate: every slash command (the tree's interaction_check) and every button (JobButton's)
        passes here before it runs. Someone refused is told why, privately."""
        try:
            refusal = await self.access.refusal(interaction)
        except Exception as exc:  # Discord did not answer the membership look-up: refuse rather than guess
            log.warning("could not check whether Discord user %s may use easel: %s", interaction.user.id, _reason(exc),
                        exc_info=not isinstance(exc, SEND_ERRORS))
            refusal = "easel could not check your roles just now; try again in a minute"
        if refusal:
            await self._private(interaction, refusal)
        return refusal is None

    async def _private(self, interaction: discord.Interaction, text: str) -> None:
        """A reply only this person sees, whether or not the interaction was answered already; a long one (/help,
        /describe) in as many messages as Discord's 2000 characters need."""
        with contextlib.suppress(*SEND_ERRORS):
            for part in pieces(text, CONTENT_LIMIT):
                if interaction.response.is_done():
                    await interaction.followup.send(part, ephemeral=True)
                else:
                    await interaction.response.send_message(part, ephemeral=True)

    async def refuse(self, interaction: discord.Interaction, text: str) -> None:
        """An error only the asker sees; a public "thinking…" already shown for it is removed first."""
        if interaction.response.is_done():
            with contextlib.suppress(*SEND_ERRORS):
                await interaction.delete_original_response()
        await self._private(interaction, text)

    # ---- commands ---------------------------------------------------------------------------
    async def answer(self, interaction: discord.Interaction, command: Command) -> None:
        """A command that queues nothing: its reply only to the person who asked, so asked as private."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        owner = dataclasses.replace(self._owner(interaction), private=True)
        await self._private(interaction, (await self.service.execute(owner, command)).text)

    async def queue_job(self, interaction: discord.Interaction, build: Callable[[], Command],
                        image: discord.Attachment | None = None) -> None:
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
                await self.refuse(interaction, str(exc))
                return
        await self._submitted(interaction, await self.service.execute(self._owner(interaction), command, attachments))

    async def _submitted(self, interaction: discord.Interaction, reply: Reply) -> None:
        """The interaction's own response (or its deferred message) shows the queued job from now on."""
        if reply.error or reply.job is None:
            await self.refuse(interaction, reply.text)
            return
        job = reply.job
        live = self._show(job.id, _Live(interaction, lambda event: self._edit_progress(live, event)))
        live.progress.touched()  # this edit counts towards the pace of progress edits
        content, view = _text(f"{reply.text} — {title(job.params)}"), buttons(job)
        try:
            if interaction.response.is_done():
                message = await interaction.edit_original_response(content=content, view=view)
            else:
                sent = await interaction.response.send_message(content, view=view)
                message = sent.resource if isinstance(sent.resource, discord.Message) \
                    else await interaction.original_response()
            await self._remember(interaction.channel_id, message.id, job.id)
        except SEND_ERRORS as exc:
            log.warning("could not show job #%d in Discord (%s); its result will still be posted", job.id, _reason(exc))

    def _attachment_problem(self, image: discord.Attachment) -> str | None:
        """Checked before anything is downloaded: the type and size Discord reports (the download has its own cap).
        A clip (a video, a GIF) passes within max_clip_bytes: the command says whether it takes one."""
        return upload_problem(image.filename, image.content_type, image.size, self.limits.max_upload_bytes,
                              unknown="unknown type", instead="attach a PNG, JPEG, WebP, GIF or BMP",
                              clip_limit=self.limits.max_clip_bytes, zip_limit=self.limits.max_zip_bytes)

    async def _download(self, image: discord.Attachment) -> bytes:
        """The attachment's bytes, streamed from its URL and cut off past [limits] max_upload_bytes (a clip's:
        max_clip_bytes) whatever size it declared; every failure is a CommandError to show."""
        clip = is_clip(image.content_type)
        archive = not clip and is_archive(image.filename, image.content_type)
        limit = self.limits.max_clip_bytes if clip else self.limits.max_zip_bytes if archive \
            else self.limits.max_upload_bytes
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT)
        try:
            async with self._downloads.get(image.url) as response:
                response.raise_for_status()
                data = await read_capped(response.content.iter_chunked(1 << 16), response.content_length, limit)
                if data is None:
                    response.close()  # hang up: the rest is never read
                    raise CommandError(over_limit(image.filename, limit, clip, archive))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            why = exc.status if isinstance(exc, aiohttp.ClientResponseError) else type(exc).__name__
            raise CommandError(f"could not download {image.filename} ({why})") from None
        return data

    # ---- buttons ----------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        """A press is answered with its own interaction response: the new job's message, or a note only the
        presser sees (a refusal, a cancel). The access check ran already (JobButton.interaction_check)."""
        if job_id > MAX_JOB_ID:  # a forged custom_id: bounded like a typed job number
            await self._private(interaction, f"there is no job #{job_id}")
            return
        owner = self._owner(interaction)
        if action == "cancel":
            reply = await self._in_time(interaction, self.service.execute(owner, Cancel(job_id)), ephemeral=True)
            await self._private(interaction, reply.text)
            return
        run = self.service.more_steps(owner, job_id) if action == "more" else self.service.new_seed(owner, job_id)
        await self._submitted(interaction, await self._in_time(interaction, run, ephemeral=False))

    async def on_action(self, interaction: discord.Interaction, data: str) -> None:
        """An image's button (U2, V1 strong, zoom, pan), run as the typed command: the new job's message, or
        that command's refusal only the presser sees. The access check ran already (ActionButton's)."""
        try:
            command = action_command(data)
        except CommandError as exc:  # a forged job number
            await self._private(interaction, str(exc))
            return
        if command is None:
            await self._private(interaction, NO_LONGER)
            return
        run = self.service.execute(self._owner(interaction), command)
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
    def _finished(self, event: JobEvent, live: _Live | None) -> None:
        alive = live is not None and live.token_alive
        self._deliveries.start(self._deliver(event.job, live.interaction if alive else None))

    async def _edit_progress(self, live: _Live, event: JobEvent) -> None:
        if not live.token_alive:
            return
        files = []
        if event.preview is not None:
            files.append(discord.File(io.BytesIO(await asyncio.to_thread(png_bytes, event.preview)), "preview.png"))
        await live.interaction.edit_original_response(content=_text(status_line(event)), attachments=files,
                                                      view=buttons(event.job))

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
        await self._remember(message.channel.id, message.id, job.id)
        await self._delivered(job)

    async def _send(self, job: JobRecord, channel_id: int, text: str, limit: int, post) -> discord.Message | None:
        """post(text, files, view) with the job's images and buttons, tried again after each of SEND_RETRIES
        while it fails in a passing way (a reset, a timeout, a 5xx); None once it gives up. Every failure is
        logged, at most once per channel every FAILURE_LOG_EVERY seconds (the next line counts the rest)."""
        def failed(exc: BaseException, pause: float | None) -> None:
            self._failures.warning(
                channel_id, "could not post job #%d's result in Discord channel %s (%s)%s", job.id, channel_id,
                _reason(exc), "; trying again" if pause is not None else "", exc_info=not isinstance(exc, SEND_ERRORS))

        try:
            images, more = await asyncio.to_thread(self._result_files, job, limit)
        except OSError as exc:  # its files are gone from disk
            failed(exc, None)
            return None
        text = "\n".join(line for line in (text, more) if line)
        try:  # files are read as they are sent: each try gets its own
            return await retried(
                lambda: post(_text(text), [discord.File(io.BytesIO(data), name) for name, data in images], buttons(job)),
                delays=SEND_RETRIES, transient=self._unreachable, failed=failed, timeout=SEND_TIMEOUT)
        except Exception:  # logged by failed()
            return None

    def _result_files(self, job: JobRecord, limit: int) -> tuple[list[tuple[str, bytes]], str]:
        """The files of a job's result message within `limit` bytes, and a line to add to its text: an
        animation's video (with how it was made to fit), or where it is on disk when no form of it fits."""
        if not is_animation(job):
            return _result_images(job, limit), ""
        video = fitted_video(job, limit)
        if video is None:
            return [], too_large(job, limit, self.service.images.root)
        return [(video.name, video.data)], video.note or ""

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

    async def send_again(self, interaction: discord.Interaction, job_id: int) -> None:
        """/history job:N: the job's result once more, where it was asked (not in the job's own channel)."""
        await interaction.response.defer(thinking=True)
        reply = await self.service.execute(self._owner(interaction), ShowHistory(10, job_id))
        if reply.shows is None:
            await self.refuse(interaction, reply.text)
            return
        await self._post_result(reply.shows, interaction, int(interaction.channel_id or 0), interaction.user.id)


def _result_text(job: JobRecord) -> str:
    if is_animation(job):  # one seed (each frame's is in its PNG); a cancelled one says how far it got
        state = animation_state(job)
        return (f"**{_text(title(job.params), 1200)}**\n{describe(job.params)} · job #{job.id}"
                + (f"\n{state}" if state else ""))
    if job.status is not JobStatus.DONE:
        return ending(job)
    seeds = ", ".join(str(image.seed) for image in job.images)
    first = job.images[0].seed if job.images else None
    many = f" · seeds {seeds}" if len(job.images) > 1 else ""
    return f"**{_text(title(job.params), 1200)}**\n{describe(job.params, first)}{many} · job #{job.id}"


def _result_images(job: JobRecord, limit: int) -> list[tuple[str, bytes]]:
    """The job's images for one message (all of a batch goes in one), each within Discord's upload limit."""
    share = max(limit // max(len(job.images), 1) - 1024, 1024)
    return [fitted(Path(image.path), share) for image in job.images]
