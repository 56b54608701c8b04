"""The Telegram frontend: photos with captions and commands in, one status message and the result out.

Only this module imports telegram. It translates between Telegram's updates and easel's Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bot import commands
from bot.commands import Rerun
from bot.config import Config
from bot.connection import TokenRefused, reach
from bot.limits import CommandError
from bot.pacing import Paced, Pending, clip, status_line
from bot.results import fitted
from bot.service import Attachment, Reply, Service, describe, title
from generation.queue import JobEvent
from storage.records import JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)

PLATFORM = "telegram"
EDIT_EVERY = 3.0  # seconds between edits of one status message, well inside Telegram's limits
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile on Telegram's own servers
PHOTO_LIMIT = 10 * 1024 * 1024  # sendPhoto
CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096
IMAGE_TYPES = "a photo, or a PNG, JPEG, WebP, GIF or BMP file"
COMMANDS = (
    ("imagine", "draw a picture: /imagine a red lighthouse --seed 42"),
    ("sketch", "send a photo of a drawing with a caption: a small house"),
    ("face", "a person who does not exist: /face --seed 42"),
    ("rerun", "redraw: reply to a result with /rerun steps=350"),
    ("history", "your last jobs; /history #17 sends one again"),
    ("cancel", "stop your latest job, or /cancel 17"),
    ("queue", "what is running and waiting"),
    ("help", "how to use easel"),
)


def _unreachable(exc: BaseException) -> bool:
    """Worth trying again: no network, DNS, a refused connection, a timeout (not a request Telegram refused)."""
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _buttons(job: JobRecord) -> InlineKeyboardMarkup:
    row = [InlineKeyboardButton("5× steps", callback_data=f"more:{job.id}")] if hasattr(job.params, "steps") else []
    row += [InlineKeyboardButton("New seed", callback_data=f"seed:{job.id}"),
            InlineKeyboardButton("PNG", callback_data=f"png:{job.id}")]
    return InlineKeyboardMarkup([row])


class _Status:
    """A job's status message in its chat, edited as the job goes, at Telegram's pace."""

    def __init__(self, bot, chat_id: int, message_id: int) -> None:
        self.chat_id, self.message_id = chat_id, message_id
        self.progress = Paced(EDIT_EVERY, lambda text: _edit(bot, chat_id, message_id, text))


async def _edit(bot, chat_id: int, message_id: int, text: str) -> None:
    try:
        await bot.edit_message_text(clip(text, TEXT_LIMIT), chat_id=chat_id, message_id=message_id)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():  # the same text again is not an error
            raise


class TelegramFrontend:
    """Runs the Telegram bot in easel's event loop: `async with frontend: await frontend.start()`."""

    def __init__(self, service: Service, config: Config) -> None:
        self.service = service
        self.config = config.telegram
        self.limits = config.limits
        builder = (
            ApplicationBuilder()
            .token(self.config.token.get_secret_value())
            .concurrent_updates(True)  # a slow download or upload never holds up other chats
            # Flood control: a 429 waits its retry_after and tries again (the default is not to retry).
            .rate_limiter(AIORateLimiter(max_retries=3))
        )
        if self.config.base_url:
            builder = builder.base_url(self.config.base_url).base_file_url(self.config.base_file_url)
        self.app: Application = builder.build()
        self.app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, self._on_file))
        self.app.add_handler(MessageHandler(filters.TEXT, self._on_text))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self._status: dict[int, _Status] = {}
        self._refused: set[tuple[int, int]] = set()  # (chat, user) already told no, once
        self._failed_chats: set[int] = set()
        self._unsubscribe = None
        self._stopped = asyncio.Event()
        self._deliveries = Pending()
        if not self.config.allowed_users and not self.config.allowed_chats:
            # Bots are found by name; say so at every start rather than serve strangers silently.
            log.warning("[telegram] allowed_users and allowed_chats are empty: anyone who finds this bot can use "
                        "your GPU; list the user ids or chat ids that may")

    # ---- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> TelegramFrontend:
        return self  # Telegram is reached in start(), where an outage is waited out

    async def __aexit__(self, *exc: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for status in self._status.values():
            status.progress.close()
        await self._deliveries.finish()  # results being sent finish before storage closes
        with contextlib.suppress(Exception):
            if self.app.updater.running:
                await self.app.updater.stop()
            if self.app.running:
                await self.app.stop()
        await self.app.shutdown()

    async def start(self) -> None:
        """Reach Telegram (waiting while it cannot be reached) and register the commands, take the events
        (replays first), poll until stopped. A refused token raises TokenRefused."""
        await reach("Telegram", self._connect, _unreachable)
        self._unsubscribe = await self.service.subscribe(PLATFORM, self._on_event)
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])
        await self.app.start()
        await self._stopped.wait()  # until cancelled (easel stopping) or stop()

    async def _connect(self) -> None:
        try:
            await self.app.initialize()  # getMe: where a wrong token shows
            await self.app.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
        except InvalidToken:
            # Its text repeats the whole token; the one line easel prints names the key instead.
            raise TokenRefused("Telegram", "EASEL_TELEGRAM_TOKEN", "check it with @BotFather (/mybots → API Token)") from None

    def stop(self) -> None:
        self._stopped.set()

    # ---- who may do what --------------------------------------------------------------------
    def _owner(self, update: Update) -> Owner:
        user, chat = update.effective_user, update.effective_chat
        return Owner(platform=PLATFORM, user_id=str(user.id), chat_id=str(chat.id),
                     name=user.full_name or user.username or str(user.id), admin=user.id in self.config.admin_users)

    async def _allowed(self, update: Update) -> bool:
        """Whether this chat and person may use easel; everyone else hears one polite no, once."""
        chat, user = update.effective_chat, update.effective_user
        if user is None or chat is None:
            return False
        config = self.config
        if (not config.allowed_chats or chat.id in config.allowed_chats) and (
                not config.allowed_users or user.id in config.allowed_users):
            return True
        if (chat.id, user.id) not in self._refused:
            self._refused.add((chat.id, user.id))
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text("Sorry, this easel is private; ask its owner for access.")
        return False

    async def _bot_message(self, message: Message | None) -> JobRecord | None:
        """The job a message of ours shows, if `message` is one."""
        if message is None or message.from_user is None or message.from_user.id != self.app.bot.id:
            return None
        return await self.service.job_for_message(PLATFORM, str(message.chat_id), str(message.message_id))

    # ---- updates ----------------------------------------------------------------------------
    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        text = (message.text or "").strip()
        replied = await self._bot_message(message.reply_to_message)
        group = message.chat.type != "private"
        if not text.startswith("/"):
            if replied is None:
                if group:
                    return  # privacy: in groups, only commands and replies to our messages
                text = f"/imagine {text}"  # in a private chat, plain text is a prompt
            else:
                text = f"/rerun {text}"  # "steps=350" in reply to a result reruns that result
        if not await self._allowed(update):
            return
        owner = self._owner(update)
        try:
            command = commands.parse(text, self.service.config.defaults)
        except CommandError as exc:
            await self._reply(message, str(exc))
            return
        if isinstance(command, Rerun) and replied is not None and command.job_id is None and command.seed is None:
            command = Rerun(replied.id, None, command.settings)  # the result replied to, exactly
        await self._submitted(message, await self.service.execute(owner, command))

    async def _on_file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        caption = (message.caption or "").strip()
        replied = await self._bot_message(message.reply_to_message)
        if message.chat.type != "private" and not caption.startswith("/") and replied is None:
            return  # privacy: in groups, only commands and replies to our messages
        if not await self._allowed(update):
            return
        problem, file_id, name = self._file_problem(message)
        if problem:
            await self._reply(message, problem)
            return
        if not caption:
            if not self.config.default_prompt:
                await self._reply(message, "Add a caption saying what it shows, e.g. a red sports car "
                                           "(flags work too: a red sports car --seed 7).")
                return
            caption = self.config.default_prompt
        text = caption if caption.startswith("/") else f"/sketch {caption}"  # a photo of a drawing, as a rule
        try:
            data = await (await context.bot.get_file(file_id)).download_as_bytearray()
        except TelegramError as exc:
            await self._reply(message, f"could not download the image from Telegram: {exc.message}")
            return
        reply = await self.service.handle(self._owner(update), text, [Attachment(name, bytes(data))])
        await self._submitted(message, reply)

    def _file_problem(self, message: Message) -> tuple[str | None, str, str]:
        """(what is wrong, file id, file name), checked on the metadata before anything is downloaded."""
        if message.photo:
            photo = message.photo[-1]  # the largest size
            size, file_id, name = photo.file_size or 0, photo.file_id, "photo.jpg"
        else:
            document = message.document
            name = document.file_name or "file"
            if not (document.mime_type or "").startswith("image/"):
                kind = document.mime_type or "an unknown type"
                return f"{name} is not an image ({kind}); send {IMAGE_TYPES}", "", name
            size, file_id = document.file_size or 0, document.file_id
        limit = self.limits.max_upload_bytes
        if not self.config.base_url:  # Telegram's own servers hand out at most 20 MB
            limit = min(limit, DOWNLOAD_LIMIT)
        if size > limit:
            return f"{name} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB", "", name
        return None, file_id, name

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if not await self._allowed(update):
            with contextlib.suppress(TelegramError):
                await query.answer()
            return
        action, _, number = (query.data or "").partition(":")
        if not number.isdigit() or action not in ("more", "seed", "png"):
            await query.answer("this button no longer does anything")
            return
        owner, job_id = self._owner(update), int(number)
        await query.answer()
        if action == "png":
            reply = await self.service.execute(owner, commands.ShowHistory(10, job_id))
            if reply.shows is None:
                await self._reply(query.message, reply.text)
            else:
                await self._send_png(reply.shows, query.message)
            return
        reply = await (self.service.more_steps(owner, job_id) if action == "more" else self.service.new_seed(owner, job_id))
        await self._submitted(query.message, reply)

    async def _reply(self, message: Message, text: str) -> None:
        with contextlib.suppress(TelegramError):
            await message.reply_text(clip(text, TEXT_LIMIT))

    async def _submitted(self, message: Message, reply: Reply) -> None:
        """A command's answer; a queued job's answer is its status message, edited from then on."""
        if reply.shows is not None:
            await self._send_result(reply.shows, reply_to=message.message_id)
            return
        if reply.job is None:
            await self._reply(message, reply.text)
            return
        job = reply.job
        try:
            sent = await message.reply_text(clip(f"{reply.text} — {title(job.params)}", TEXT_LIMIT))
        except TelegramError:
            log.warning("could not post job #%d's status in Telegram chat %s", job.id, message.chat_id, exc_info=True)
            return
        status = self._status[job.id] = _Status(self.app.bot, sent.chat_id, sent.message_id)
        status.progress.touched()
        await self.service.remember_message(PLATFORM, str(sent.chat_id), str(sent.message_id), job.id)

    # ---- job events -------------------------------------------------------------------------
    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if event.finished:
            status = self._status.pop(job.id, None)
            if status is not None:
                status.progress.close()
            self._deliveries.start(self._deliver(job, status))
            return
        status = self._status.get(job.id)
        if status is None:
            return  # asked for before a restart: its result is sent when it ends
        status.progress.push(status_line(event))

    async def _deliver(self, job: JobRecord, status: _Status | None) -> None:
        try:
            if status is not None:
                end = {JobStatus.DONE: "done", JobStatus.FAILED: f"failed: {job.error}",
                       JobStatus.CANCELLED: "cancelled"}[job.status]
                with contextlib.suppress(TelegramError):
                    await _edit(self.app.bot, status.chat_id, status.message_id, f"#{job.id} {end}")
            await self._send_result(job, reply_to=status.message_id if status else None)
        except Exception:
            # Retried by the rate limiter already; the job stays undelivered in history: the next start
            # sends it again, and /history #N does on request. One line per chat, not per job.
            chat = int(job.owner.chat_id or 0)
            if chat not in self._failed_chats:
                self._failed_chats.add(chat)
                log.warning("could not send job #%d's result to Telegram chat %s", job.id, chat, exc_info=True)

    async def _send_result(self, job: JobRecord, reply_to: int | None) -> None:
        bot, chat = self.app.bot, int(job.owner.chat_id)
        answer = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        if job.status is not JobStatus.DONE:
            text = f"job #{job.id} failed: {job.error}" if job.status is JobStatus.FAILED else f"job #{job.id} cancelled"
            await bot.send_message(chat, text, reply_parameters=answer)
        for image in job.images:
            name, data = await asyncio.to_thread(fitted, Path(image.path), PHOTO_LIMIT)
            sent = await bot.send_photo(chat, photo=data, filename=name, caption=_caption(job, image.seed),
                                        reply_markup=_buttons(job), reply_parameters=answer)
            await self.service.remember_message(PLATFORM, str(chat), str(sent.message_id), job.id)
        if self.config.send_png and job.status is JobStatus.DONE:
            await self._send_png(job, None)
        await self.service.delivered(job)

    async def _send_png(self, job: JobRecord, message: Message | None) -> None:
        """The original PNGs, with their parameters (Telegram recompresses photos and drops them)."""
        answer = ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True) if message else None
        for image in job.images:
            path = Path(image.path)
            await self.app.bot.send_document(int(job.owner.chat_id), document=await asyncio.to_thread(path.read_bytes),
                                             filename=path.name, reply_parameters=answer)


def _caption(job: JobRecord, seed: int) -> str:
    settings = f"{describe(job.params, seed)} · job #{job.id}"  # kept whole: the seed and job id matter most
    return f"{clip(title(job.params), CAPTION_LIMIT - len(settings) - 1)}\n{settings}"
