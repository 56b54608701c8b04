"""The Telegram frontend: photos with captions and commands in, one status message and the result out.

Only this module imports telegram. It translates between Telegram's updates and easel's Service. No
handler waits on Telegram's pace: whatever is said in a chat goes through that chat's own queue
(pacing.Outbox), so a flooded group slows only itself, and a stop never waits for a chat's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from bot import commands
from bot.commands import MAX_JOB_ID, Rerun
from bot.config import Config
from bot.connection import TokenRefused, reach
from bot.limits import CommandError
from bot.pacing import Gate, Outbox, Paced, Throttled, Verdict, clip, settle, status_line
from bot.results import fitted, read_capped
from bot.service import Attachment, Reply, Service, describe, title
from generation.queue import JobEvent
from storage.records import JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)

PLATFORM = "telegram"
EDIT_EVERY = 3.0  # seconds between edits of one status message in a private chat
GROUP_EDIT_EVERY = 6.0  # a group gets about 20 messages a minute, edits included
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile on Telegram's own servers
PHOTO_LIMIT = 10 * 1024 * 1024  # sendPhoto
DOCUMENT_LIMIT = 50 * 1024 * 1024  # sendDocument
CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096
ANSWER_LIMIT = 200  # a button press's answer (answerCallbackQuery)
RETRY_DELAYS = (1.0, 4.0)  # before the second and third try of a send that failed (a 5xx, a reset, a timeout)
STOP_GRACE = 2.0  # seconds that handlers, then sends in flight, get to finish when easel stops
ROOM = 20  # replies and progress edits that may wait in one chat
ANSWER_ROOM = 100  # answers to button presses that may wait for one person (sent one at a time)
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
IMAGE_TYPES = "a photo, or a PNG, JPEG, WebP, GIF or BMP file"
PRIVATE_EASEL = "Sorry, this easel is private; ask its owner for access."
SLOW_DOWN = ("{name}, in a group easel takes {burst} commands at once from each person, then one every {every:g} s; "
             "the others are ignored (a private chat with the bot has no such limit)")
PRESS_SLOW_DOWN = "too many presses at once; try again in a few seconds"
SENT_AGAIN = "(sent again after a restart: it may have arrived before)"
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
_BUTTON = re.compile(r"(more|seed|png):([0-9]+)")

Answer = TypeVar("Answer")


def _unreachable(exc: BaseException) -> bool:
    """Worth trying again: no network, DNS, a refused connection, a timeout, a 5xx (not a request Telegram refused)."""
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _answer_lost(exc: BaseException) -> bool:
    """Whether Telegram may have done what was asked though its answer never came (the connection dropped or
    timed out while waiting for it), rather than never got the request or answered it with an error."""
    return isinstance(exc.__cause__, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError))


def _seconds(wait: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that retry_after becomes a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = wait.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _MaybeSent(Exception):
    """Two sends of a result got no answer: it may be in the chat twice already, so it is not sent again."""


class _TooBig(Exception):
    """A download went past the size limit, whatever size was declared for it."""


class _Pace(BaseRateLimiter[None]):
    """Telegram's published pace for a bot's messages: about 30 a second in all and 20 a minute per group.

    A 429 is not waited out here, where AIORateLimiter's retries would hold every chat; it goes back to
    the chat's own sender (_sent), so only that chat waits. Only the chat's sender waits here, too."""

    def __init__(self) -> None:
        self._all = AsyncLimiter(30, 1)
        self._groups: dict[int | str, AsyncLimiter] = {}

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def process_request(self, callback: Callable[..., Awaitable[Any]], args: Any, kwargs: dict[str, Any],
                              endpoint: str, data: dict[str, Any], rate_limit_args: None) -> Any:
        chat = data.get("chat_id")
        if chat is None:  # answerCallbackQuery, getFile…: no chat's messages to pace
            return await callback(*args, **kwargs)
        with contextlib.suppress(ValueError, TypeError):
            chat = int(chat)
        group = self._group(chat) if isinstance(chat, str) or chat < 0 else contextlib.nullcontext()
        async with group, self._all:
            return await callback(*args, **kwargs)

    def _group(self, chat: int | str) -> AsyncLimiter:
        if len(self._groups) > 512:  # groups that have been quiet a minute need no memory
            self._groups = {key: pace for key, pace in self._groups.items() if not pace.has_capacity(pace.max_rate)}
        return self._groups.setdefault(chat, AsyncLimiter(20, 60))


def _buttons(job: JobRecord) -> InlineKeyboardMarkup:
    row = [InlineKeyboardButton("5× steps", callback_data=f"more:{job.id}")] if hasattr(job.params, "steps") else []
    row += [InlineKeyboardButton("New seed", callback_data=f"seed:{job.id}"),
            InlineKeyboardButton("PNG", callback_data=f"png:{job.id}")]
    return InlineKeyboardMarkup([row])


def _answering(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True) if message_id else None


@dataclass(eq=False)
class _Status:
    """A job's status message: posted through its chat's queue, then edited as the job goes."""

    chat_id: int
    progress: Paced[str] | None = None
    message_id: int | None = None  # once it is posted


class TelegramFrontend:
    """Runs the Telegram bot in easel's event loop: `async with frontend: await frontend.start()`."""

    def __init__(self, service: Service, config: Config) -> None:
        self.service = service
        self.config = config.telegram
        self.limits = config.limits
        builder = (
            ApplicationBuilder()
            .token(self.config.token.get_secret_value())
            .concurrent_updates(True)  # a slow download never holds up other chats
            .rate_limiter(_Pace())
        )
        if self.config.base_url:
            builder = builder.base_url(self.config.base_url).base_file_url(self.config.base_file_url)
        self.app: Application = builder.build()
        self.app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, self._guarded(self._on_file)))
        self.app.add_handler(MessageHandler(filters.TEXT, self._guarded(self._on_text)))
        self.app.add_handler(CallbackQueryHandler(self._guarded(self._on_button)))
        self._status: dict[int, _Status] = {}
        self._refused: set[tuple[int, int]] = set()  # (chat, user) already told no, once
        self._outbox = Outbox(ROOM)
        self._answers = Outbox(ANSWER_ROOM)  # button presses' answers, queued per person who pressed
        self._gate = Gate()
        self._failures = Throttled(log, every=60.0)
        self._handling: set[asyncio.Task] = set()
        self._closing = False
        self._http: httpx.AsyncClient | None = None  # for downloads, made on the first
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = asyncio.Event()
        if not self.config.allowed_users and not self.config.allowed_chats:
            # Bots are found by name; say so at every start rather than serve strangers silently.
            log.warning("[telegram] allowed_users and allowed_chats are empty: anyone who finds this bot can use "
                        "your GPU; list the user ids or chat ids that may")

    # ---- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> TelegramFrontend:
        return self  # Telegram is reached in start(), where an outage is waited out

    async def __aexit__(self, *exc: object) -> None:
        """Stops within a few seconds whatever is pending: a result not sent yet stays undelivered in history
        and goes out on the next start."""
        self._closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for status in self._status.values():
            if status.progress is not None:
                status.progress.close()
        with contextlib.suppress(Exception):
            if self.app.updater.running:
                await self.app.updater.stop()
        await settle(self._handling, STOP_GRACE)
        await asyncio.gather(self._outbox.close(STOP_GRACE), self._answers.close(STOP_GRACE))
        with contextlib.suppress(Exception):
            if self.app.running:
                await self.app.stop()  # quick now: every handler has finished
        await self.app.shutdown()
        if self._http is not None:
            await self._http.aclose()

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

    def _guarded(self, handle: Callable[[Update, Any], Awaitable[None]]) -> Callable[[Update, Any], Awaitable[None]]:
        """A handler that does nothing once easel is stopping, and that a stop may cut short."""
        async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            if self._closing:
                return
            task = asyncio.current_task()
            self._handling.add(task)
            try:
                await handle(update, context)
            finally:
                self._handling.discard(task)
        return guarded

    # ---- who may do what --------------------------------------------------------------------
    def _owner(self, update: Update) -> Owner:
        user, chat = update.effective_user, update.effective_chat
        return Owner(platform=PLATFORM, user_id=str(user.id), chat_id=str(chat.id),
                     name=user.full_name or user.username or str(user.id), admin=user.id in self.config.admin_users,
                     private=chat.type == chat.PRIVATE)

    def _allowed(self, update: Update) -> bool:
        """Whether this chat and person may use easel."""
        chat, user, config = update.effective_chat, update.effective_user, self.config
        return user is not None and chat is not None and (
            not config.allowed_chats or chat.id in config.allowed_chats) and (
            not config.allowed_users or user.id in config.allowed_users)

    def _refuse_once(self, update: Update) -> None:
        """Everyone who may not use easel hears one polite no (per chat), then nothing."""
        chat, user, message = update.effective_chat, update.effective_user, update.effective_message
        if chat is not None and user is not None and (chat.id, user.id) not in self._refused:
            self._refused.add((chat.id, user.id))
            self._say(chat.id, PRIVATE_EASEL, message.message_id if message else None)

    def _let_through(self, update: Update, command: str) -> bool:
        """Whether to answer this command now (pacing.Gate); whoever goes past the pace hears why, once."""
        chat, user = update.effective_chat, update.effective_user
        verdict = self._gate.check(chat.id, user.id, command, shared=chat.type != chat.PRIVATE)
        if verdict is Verdict.SLOW_DOWN:
            notice = SLOW_DOWN.format(name=user.first_name, burst=self._gate.burst, every=self._gate.every)
            self._say(chat.id, notice, update.effective_message.message_id)
        return verdict is Verdict.GO

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
        if not self._allowed(update):
            self._refuse_once(update)
            return
        if not self._let_through(update, text):
            return
        owner = self._owner(update)
        try:
            command = commands.parse(text, self.service.config.defaults)
        except CommandError as exc:
            self._say(message.chat_id, str(exc), message.message_id)
            return
        if isinstance(command, Rerun) and replied is not None and command.job_id is None and command.seed is None:
            command = Rerun(replied.id, None, command.settings)  # the result replied to, exactly
        self._submitted(owner, message.message_id, await self.service.execute(owner, command))

    async def _on_file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        caption = (message.caption or "").strip()
        replied = await self._bot_message(message.reply_to_message)
        if message.chat.type != "private" and not caption.startswith("/") and replied is None:
            return  # privacy: in groups, only commands and replies to our messages
        if not self._allowed(update):
            self._refuse_once(update)
            return
        upload = message.photo[-1] if message.photo else message.document
        if not self._let_through(update, f"{caption} {upload.file_unique_id}"):
            return
        problem, file_id, name = self._file_problem(message)
        if problem:
            self._say(message.chat_id, problem, message.message_id)
            return
        if not caption:
            if not self.config.default_prompt:
                self._say(message.chat_id, "Add a caption saying what it shows, e.g. a red sports car "
                                           "(flags work too: a red sports car --seed 7).", message.message_id)
                return
            caption = self.config.default_prompt
        text = caption if caption.startswith("/") else f"/sketch {caption}"  # a photo of a drawing, as a rule
        try:
            data = await self._download(file_id, name)
        except _TooBig as exc:
            self._say(message.chat_id, str(exc), message.message_id)
            return
        except (TelegramError, httpx.HTTPError) as exc:
            # httpx's text names the URL, which holds the token: the kind of failure is enough here.
            why = exc.message if isinstance(exc, TelegramError) else type(exc).__name__
            self._say(message.chat_id, f"could not download the image from Telegram: {why}", message.message_id)
            return
        owner = self._owner(update)
        self._submitted(owner, message.message_id, await self.service.handle(owner, text, [Attachment(name, data)]))

    def _upload_limit(self) -> int:
        if self.config.base_url:
            return self.limits.max_upload_bytes
        return min(self.limits.max_upload_bytes, DOWNLOAD_LIMIT)  # Telegram's own servers hand out at most 20 MB

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
        limit = self._upload_limit()
        if size > limit:
            return f"{name} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB", "", name
        return None, file_id, name

    async def _download(self, file_id: str, name: str) -> bytes:
        """The file's bytes, streamed and cut off past the upload limit whatever size was declared for it
        (PTB's own download reads the whole file first)."""
        limit = self._upload_limit()
        too_big = _TooBig(f"{name} is over the {limit / 1e6:.1f} MB limit; send a smaller image")
        file = await self.app.bot.get_file(file_id)
        if (file.file_size or 0) > limit:
            raise too_big
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT)
        # identity: a compressed answer could unpack to far more than the limit before it is counted
        async with self._http.stream("GET", file.file_path, headers={"Accept-Encoding": "identity"}) as response:
            response.raise_for_status()
            data = await read_capped(response.aiter_raw(), int(response.headers.get("content-length") or 0), limit)
            if data is None:
                raise too_big  # leaving the stream hangs up: the rest is never read
        return data

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A press is answered with Telegram's own answer to it (a toast, an alert for a problem), never with
        a chat message of its own; a job it queues gets its status message like any other."""
        query, chat, user = update.callback_query, update.effective_chat, update.effective_user
        if not self._allowed(update):
            self._answer(update, PRIVATE_EASEL, kept=False)
            return
        verdict = self._gate.check(chat.id, user.id, f"button {query.data}", shared=chat.type != chat.PRIVATE)
        if verdict is not Verdict.GO:
            self._answer(update, "already on it" if verdict is Verdict.REPEAT else PRESS_SLOW_DOWN, kept=False)
            return
        match = _BUTTON.fullmatch(query.data or "")
        if match is None:
            self._answer(update, "this button no longer does anything")
            return
        action, number = match.groups()
        if len(number) > 19 or int(number) > MAX_JOB_ID:  # as typed job numbers: past SQLite's range, nothing
            self._answer(update, f"there is no job #{clip(number, 24)}", alert=True)
            return
        owner, job_id = self._owner(update), int(number)
        pressed_on = query.message.message_id if query.message else None
        if action == "png":
            reply = await self.service.execute(owner, commands.ShowHistory(10, job_id))
            if reply.shows is None:
                self._answer(update, reply.text, alert=True)
                return
            self._answer(update, "sending the PNG")
            self._outbox.reply(chat.id, lambda: self._send_png(reply.shows, chat.id, pressed_on))
            return
        reply = await (self.service.more_steps(owner, job_id) if action == "more" else self.service.new_seed(owner, job_id))
        self._answer(update, reply.text, alert=reply.error)
        if reply.job is not None:
            self._submitted(owner, pressed_on, reply)

    def _answer(self, update: Update, text: str | None = None, alert: bool = False, kept: bool = True) -> None:
        """A press's answer, queued per person: a flood of presses holds up only the presser's own answers,
        and of those, the ones that only say it was pressed too often (not `kept`) are dropped first."""
        query = update.callback_query

        async def answer() -> None:
            try:
                await query.answer(clip(text, ANSWER_LIMIT) if text else None, show_alert=alert)
            except TelegramError as exc:  # too late (15 s), or answered already: nothing left to tell
                log.info("could not answer a button press: %s", exc)
        who = (update.effective_chat.id, update.effective_user.id)
        (self._answers.result if kept else self._answers.reply)(who, answer)

    # ---- what goes into chats ---------------------------------------------------------------
    def _say(self, chat_id: int, text: str, reply_to: int | None = None) -> None:
        """A reply, queued behind what its chat waits for already (in a flood, replies are dropped first)."""
        self._outbox.reply(chat_id, lambda: self._sent(lambda: self.app.bot.send_message(
            chat_id, clip(text, TEXT_LIMIT), reply_parameters=_answering(reply_to))))

    def _submitted(self, owner: Owner, reply_to: int | None, reply: Reply) -> None:
        """A command's answer where it was asked: a finished job's result again, a line of text, or a queued
        job's status message, edited from then on."""
        chat_id = int(owner.chat_id)
        if reply.shows is not None:
            job = reply.shows
            # The owner has it now, or the job's own chat has it: either way it need not be replayed.
            delivers = owner.key == job.owner.key or owner.chat_id == job.owner.chat_id
            self._outbox.result(chat_id, lambda: self._deliver(job, chat_id, reply_to, delivers=delivers))
            return
        if reply.job is None:
            self._say(chat_id, reply.text, reply_to)
            return
        job = reply.job
        status = self._status[job.id] = _Status(chat_id)
        every = EDIT_EVERY if owner.private else GROUP_EDIT_EVERY
        status.progress = Paced(every, lambda line: self._progress(status, job.id, line))

        async def post() -> None:
            sent = await self._sent(lambda: self.app.bot.send_message(
                chat_id, clip(f"{reply.text} — {title(job.params)}", TEXT_LIMIT), reply_parameters=_answering(reply_to)))
            status.message_id = sent.message_id
            status.progress.touched()
            await self.service.remember_message(PLATFORM, str(chat_id), str(sent.message_id), job.id)
        self._outbox.result(chat_id, post)  # in order with the job's result, and never dropped

    async def _progress(self, status: _Status, job_id: int, line: str) -> None:
        self._outbox.progress(status.chat_id, job_id, lambda: self._edit(status, line))

    async def _edit(self, status: _Status, text: str) -> None:
        if status.message_id is None:
            return  # its status message could not be posted
        try:
            await self._sent(lambda: self.app.bot.edit_message_text(
                clip(text, TEXT_LIMIT), chat_id=status.chat_id, message_id=status.message_id))
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():  # the same text again is not an error
                raise

    async def _sent(self, send: Callable[[], Awaitable[Answer]], job_id: int | None = None) -> Answer:
        """send(), healed. A flood wait (429) is waited out, holding up only this chat's queue; another
        failure that is not a refusal is tried again after each of RETRY_DELAYS. With job_id, each try is
        recorded before it starts, and one whose answer never came (a timeout, a dropped connection) counts
        as maybe sent: after two of those there is no third (_MaybeSent), so a result arrives at most twice."""
        delays, lost = iter(RETRY_DELAYS), 0
        while True:
            if job_id is not None:  # a kill mid-send leaves this counted, and the next start knows
                lost = await self.service.sending(job_id) - 1
            try:
                answer = await send()
            except TelegramError as exc:
                if _answer_lost(exc):
                    lost += 1
                elif job_id is not None:
                    await self.service.answered(job_id)
                if isinstance(exc, RetryAfter):
                    await asyncio.sleep(_seconds(exc))
                    continue
                if lost >= 2:
                    raise _MaybeSent(f"Telegram did not answer twice ({exc})") from exc
                delay = next(delays, None) if _unreachable(exc) else None
                if delay is None:
                    raise
                log.info("a send to Telegram failed (%s); trying again in %g s", exc, delay)
                await asyncio.sleep(delay)
                continue
            if job_id is not None:
                await self.service.answered(job_id)
            return answer

    # ---- job events -------------------------------------------------------------------------
    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        if event.finished:
            status = self._status.pop(job.id, None)
            if status is not None and status.progress is not None:
                status.progress.close()
                self._outbox.forget(status.chat_id, job.id)  # the final state follows
            chat_id = int(job.owner.chat_id)
            note = SENT_AGAIN if event.replayed and job.unsure_sends else ""  # a send a stop or kill cut short
            self._outbox.result(chat_id, lambda: self._deliver(job, chat_id, None, status=status, note=note))
            return
        status = self._status.get(job.id)
        if status is None or status.progress is None:
            return  # asked for before a restart: its result is sent when it ends
        status.progress.push(status_line(event))

    async def _deliver(self, job: JobRecord, chat_id: int, reply_to: int | None, *, status: _Status | None = None,
                       delivers: bool = True, note: str = "") -> None:
        """How a job ended, in chat_id; marked delivered (when `delivers`) only once Telegram took it all.
        If it cannot be sent, the status message says so (the next start and /history #N try again)."""
        if status is not None and status.message_id is not None:
            reply_to = status.message_id
            end = {JobStatus.DONE: "done", JobStatus.FAILED: f"failed: {job.error}",
                   JobStatus.CANCELLED: "cancelled"}[job.status]
            with contextlib.suppress(TelegramError):
                await self._edit(status, f"#{job.id} {end}")
        try:
            await self._send_result(job, chat_id, reply_to, note)
        except Exception as exc:
            self._failures.warning(chat_id, "could not send job #%d's result to Telegram chat %s",
                                   job.id, chat_id, exc_info=True)
            if isinstance(exc, Forbidden):
                return  # blocked, or no longer in the group: nothing gets through
            if isinstance(exc, _MaybeSent):
                problem = (f"#{job.id} {job.status}, but Telegram did not confirm that its result arrived; "
                           f"if it is not here, /history #{job.id} sends it again")
            else:
                why = exc.message if isinstance(exc, TelegramError) else "see the log"
                problem = f"#{job.id} {job.status}, but its result could not be sent ({why}); /history #{job.id} tries again"
            if status is not None and status.message_id is not None:
                with contextlib.suppress(TelegramError):
                    await self._edit(status, problem)
            else:
                self._say(chat_id, problem, reply_to)
            return
        if delivers:
            await self.service.delivered(job)

    async def _send_result(self, job: JobRecord, chat_id: int, reply_to: int | None, note: str) -> None:
        """A job's pictures, each with its settings and buttons (as a file where a photo fails), or why there
        are none; `note` goes under each caption."""
        bot, answer = self.app.bot, _answering(reply_to)
        if job.status is not JobStatus.DONE:
            text = f"job #{job.id} failed: {job.error}" if job.status is JobStatus.FAILED else f"job #{job.id} cancelled"
            await self._sent(lambda: bot.send_message(chat_id, clip(f"{text} {note}".strip(), TEXT_LIMIT),
                                                      reply_parameters=answer), job.id)
        for image in job.images:
            path, caption, buttons = Path(image.path), _caption(job, image.seed, note), _buttons(job)
            name, data = await asyncio.to_thread(fitted, path, PHOTO_LIMIT)
            try:
                sent = await self._sent(lambda: bot.send_photo(chat_id, photo=data, filename=name, caption=caption,
                                                               reply_markup=buttons, reply_parameters=answer), job.id)
            except (Forbidden, _MaybeSent):
                raise
            except TelegramError as exc:
                # Refused as a photo, or a photo kept failing: the same picture as a file often goes through.
                self._failures.warning(chat_id, "could not send job #%d's picture to Telegram chat %s as a photo (%s); "
                                                "sending it as a file", job.id, chat_id, exc)
                name, data = await asyncio.to_thread(fitted, path, DOCUMENT_LIMIT)
                sent = await self._sent(lambda: bot.send_document(chat_id, document=data, filename=name, caption=caption,
                                                                  reply_markup=buttons, reply_parameters=answer), job.id)
            await self.service.remember_message(PLATFORM, str(chat_id), str(sent.message_id), job.id)
        if self.config.send_png and job.status is JobStatus.DONE:
            await self._send_png(job, chat_id, None)

    async def _send_png(self, job: JobRecord, chat_id: int, reply_to: int | None) -> None:
        """The original PNGs, with their parameters (Telegram recompresses photos and drops them)."""
        for image in job.images:
            path = Path(image.path)
            data = await asyncio.to_thread(path.read_bytes)
            await self._sent(lambda: self.app.bot.send_document(chat_id, document=data, filename=path.name,
                                                                reply_parameters=_answering(reply_to)))


def _caption(job: JobRecord, seed: int, note: str = "") -> str:
    settings = f"{describe(job.params, seed)} · job #{job.id}"  # kept whole: the seed and job id matter most
    if note:
        settings += f"\n{note}"
    return f"{clip(title(job.params), CAPTION_LIMIT - len(settings) - 1)}\n{settings}"
