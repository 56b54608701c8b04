"""The Telegram frontend: photos and clips with captions and commands in, one status message and the result out.

Only the bot/frontends/telegram*.py modules import telegram: this one (updates in, jobs shown) and
telegram_sending (what goes out, healed and paced). No handler waits on Telegram's pace: whatever is said
in a chat goes through that chat's own queue (pacing.Outbox), so a flooded group slows only itself, and
a stop never waits for a chat's turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, Awaitable, Callable

import httpx
from telegram import BotCommand, Message, Update
from telegram.error import Forbidden, InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.commands import COMMANDS, ShowHistory
from bot.config import Config
from bot.frontends.chat import NO_LONGER, ChatFrontend, Shown, action_command, pressed_job
from bot.frontends.connection import TokenRefused
from bot.frontends.pacing import Gate, Outbox, Verdict, clip, settle, status_line
from bot.frontends.telegram_access import PRIVATE_EASEL, Allowed, Press
from bot.frontends.telegram_sending import MaybeSent, Pace, TelegramSender, unreachable
from bot.frontends.telegram_uploads import TelegramUploads, TooBig
from bot.limits import CommandError
from bot.formatting import title
from bot.replies import Attachment, Reply
from bot.service import Service
from generation.queue import JobEvent
from storage.records import JobRecord, JobStatus, Owner

log = logging.getLogger(__name__)

EDIT_EVERY = 3.0  # seconds between edits of one status message in a private chat
GROUP_EDIT_EVERY = 6.0  # a group gets about 20 messages a minute, edits included
ANSWER_LIMIT = 200  # a button press's answer (answerCallbackQuery)
STOP_GRACE = 2.0  # seconds that handlers, then sends in flight, get to finish when easel stops
ROOM = 20  # replies and progress edits that may wait in one chat
ANSWER_ROOM = 100  # answers to button presses that may wait for one person (sent one at a time)
FAILURE_LOG_EVERY = 60.0  # seconds: at most one warning per chat this often, counting the ones left out
SLOW_DOWN = ("{name}, in a group easel takes {burst} commands at once from each person, then one every {every:g} s; "
             "the others are ignored (a private chat with the bot has no such limit)")
PRESS_SLOW_DOWN = "too many presses at once; try again in a few seconds"
SENT_AGAIN = "(sent again after a restart: it may have arrived before)"
WENT_WRONG = "something went wrong with that command; the details are in the log"
_BUTTON = re.compile(r"(more|seed|png):([0-9]+)")
_UPLOADS = filters.PHOTO | filters.Document.ALL | filters.VIDEO | filters.ANIMATION


class _Status(Shown):
    """A job's status message: posted through its chat's queue, then edited as the job goes."""

    def __init__(self, chat_id: int, every: float, show: Callable[[JobEvent], Awaitable[None]]) -> None:
        super().__init__(every, show)
        self.chat_id = chat_id
        self.message_id: int | None = None  # once it is posted


class TelegramFrontend(ChatFrontend[_Status]):
    """Runs the Telegram bot in easel's event loop: `async with frontend: await frontend.start()`."""

    PLATFORM = "telegram"
    NAME = "Telegram"

    def __init__(self, service: Service, config: Config) -> None:
        super().__init__(service, log, FAILURE_LOG_EVERY)
        self.config = config.telegram
        builder = (
            ApplicationBuilder()
            .token(self.config.token.get_secret_value())
            .concurrent_updates(True)  # a slow download never holds up other chats
            .rate_limiter(Pace())
        )
        if self.config.base_url:
            builder = builder.base_url(self.config.base_url).base_file_url(self.config.base_file_url)
        self.app: Application = builder.build()
        self.sender = TelegramSender(self.app.bot, service, self._failures, self.config.send_png, self._remember,
                                     own_server=bool(self.config.base_url))
        self.uploads = TelegramUploads(self.app.bot, self.limits, own_server=bool(self.config.base_url))
        self._add_handlers(Allowed(self.config.allowed_chats, self.config.allowed_users))
        self._refused: set[tuple[int, int]] = set()  # (chat, user) already told no, once
        self._outbox = Outbox(ROOM)
        self._answers = Outbox(ANSWER_ROOM)  # button presses' answers, queued per person who pressed
        self._gate = Gate()
        self._handling: set[asyncio.Task] = set()
        self._closing = False
        self._stopped = asyncio.Event()
        if not self.config.allowed_users and not self.config.allowed_chats:
            # Bots are found by name; say so at every start rather than serve strangers silently.
            log.warning("[telegram] allowed_users and allowed_chats are empty: anyone who finds this bot can use "
                        "your GPU; list the user ids or chat ids that may")

    def _add_handlers(self, allowed: Allowed) -> None:
        """PTB routes each update to the first handler that takes it: the access check is in the filters, so
        only those `allowed` lets in reach a command; everyone else reaches the polite no."""
        add, guarded = self.app.add_handler, self._guarded
        add(MessageHandler(allowed & _UPLOADS, guarded(self._on_file)))
        add(MessageHandler(allowed & filters.TEXT, guarded(self._on_text)))
        add(Press(allowed, guarded(self._on_button)))
        add(MessageHandler(~allowed & (_UPLOADS | filters.TEXT), guarded(self._on_stranger)))
        add(CallbackQueryHandler(guarded(self._on_stranger)))
        self.app.add_error_handler(self._on_error)

    # ---- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> TelegramFrontend:
        return self  # Telegram is reached in start(), where an outage is waited out

    async def __aexit__(self, *exc: object) -> None:
        """Stops within a few seconds whatever is pending: a result not sent yet stays undelivered in history
        and goes out on the next start."""
        self._closing = True
        self._stop_events()
        with contextlib.suppress(Exception):
            if self.app.updater.running:
                await self.app.updater.stop()
        await settle(self._handling, STOP_GRACE)
        await asyncio.gather(self._outbox.close(STOP_GRACE), self._answers.close(STOP_GRACE))
        with contextlib.suppress(Exception):
            if self.app.running:
                await self.app.stop()  # quick now: every handler has finished
        await self.app.shutdown()
        await self.uploads.close()

    def _unreachable(self, exc: BaseException) -> bool:
        return unreachable(exc)

    async def _connect(self) -> None:
        try:
            await self.app.initialize()  # getMe: where a wrong token shows
            await self._register_commands()
        except InvalidToken:
            # Its text repeats the whole token; the one line easel prints names the key instead.
            raise TokenRefused("Telegram", "EASEL_TELEGRAM_TOKEN", "check it with @BotFather (/mybots → API Token)") from None

    async def _register_commands(self) -> None:
        """The command menu Telegram shows beside the text field (setMyCommands), from the command registry."""
        await self.app.bot.set_my_commands([BotCommand(spec.name, spec.summary) for spec in COMMANDS.values()
                                            if "telegram" in spec.frontends])

    async def _serve(self) -> None:
        """Poll until stopped (stop(), or easel cancelling start())."""
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])
        await self.app.start()
        await self._stopped.wait()

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

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB's hook for a handler that raised (a bug, a broken disk): logged once with its traceback, and the
        person hears that something went wrong."""
        log.error("could not handle a Telegram update", exc_info=context.error)
        if self._closing or not isinstance(update, Update) or update.effective_chat is None:
            return
        if update.callback_query is not None:
            self._answer(update, WENT_WRONG, alert=True)
        elif update.effective_message is not None:
            self._say(update.effective_chat.id, WENT_WRONG, update.effective_message.message_id)

    # ---- who may do what --------------------------------------------------------------------
    def _owner(self, update: Update) -> Owner:
        user, chat = update.effective_user, update.effective_chat
        return Owner(platform=self.PLATFORM, user_id=str(user.id), chat_id=str(chat.id),
                     name=user.full_name or user.username or str(user.id), admin=user.id in self.config.admin_users,
                     private=chat.type == chat.PRIVATE)

    async def _on_stranger(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Someone the access filters keep out: a press is answered in the press; a message meant for easel
        (see _for_us) gets one polite no per chat, then nothing."""
        if update.callback_query is not None:
            self._answer(update, PRIVATE_EASEL, kept=False)
            return
        chat, user, message = update.effective_chat, update.effective_user, update.effective_message
        if await self._for_us(message, message.text or message.caption) is None:
            return
        if chat is not None and user is not None and (chat.id, user.id) not in self._refused:
            self._refused.add((chat.id, user.id))
            self._say(chat.id, PRIVATE_EASEL, message.message_id)

    async def _for_us(self, message: Message, said: str | None) -> tuple[str, JobRecord | None] | None:
        """(what was said, the job of ours it replies to) where a message is meant for easel: in a private
        chat anything, in a group only commands and replies to our messages (privacy); else None."""
        said = (said or "").strip()
        replied = await self._bot_message(message.reply_to_message)
        if message.chat.type != "private" and not said.startswith("/") and replied is None:
            return None
        return said, replied

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
        return await self.service.job_for_message(self.PLATFORM, str(message.chat_id), str(message.message_id))

    # ---- updates (from people the access filters let in) ---------------------------------------
    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        meant = await self._for_us(message, message.text)
        if meant is None:
            return
        text, replied = meant
        if not text.startswith("/"):
            # In a private chat plain text is a prompt; "steps=350" in reply to a result reruns that result.
            text = f"/imagine {text}" if replied is None else f"/rerun {text}"
        if not self._let_through(update, text):
            return
        owner = self._owner(update)
        try:
            command = self.service.parse(text)
        except CommandError as exc:
            self._say(message.chat_id, str(exc), message.message_id)
            return
        if replied is not None:
            command = command.replying_to(replied.id)  # /rerun in reply to a result: that result's job
        self._submitted(owner, message.message_id, await self.service.execute(owner, command))

    async def _on_file(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        meant = await self._for_us(message, message.caption)
        if meant is None:
            return
        caption = meant[0]
        sent = message.photo[-1] if message.photo else message.video or message.animation or message.document
        if not self._let_through(update, f"{caption} {sent.file_unique_id}"):
            return
        problem, upload = self.uploads.problem(message)
        if problem:
            self._say(message.chat_id, problem, message.message_id)
            return
        if not caption:
            if not self.config.default_prompt:
                self._say(message.chat_id, "Add a caption saying what it shows, e.g. a red sports car "
                                           "(flags work too: a red sports car --seed 7).", message.message_id)
                return
            caption = self.config.default_prompt
        if not caption.startswith("/"):  # a photo (a GIF file too) is of a drawing, as a rule; a video is redrawn
            video = message.video or message.animation or (upload.mime or "").startswith("video/")
            caption = f"/animate {caption}" if video else f"/sketch {caption}"
        try:
            data = await self.uploads.download(upload)
        except TooBig as exc:
            self._say(message.chat_id, str(exc), message.message_id)
            return
        except (TelegramError, httpx.HTTPError) as exc:
            # httpx's text names the URL, which holds the token: the kind of failure is enough here.
            why = exc.message if isinstance(exc, TelegramError) else type(exc).__name__
            what = "clip" if upload.clip else "zip" if upload.archive else "image"
            self._say(message.chat_id, f"could not download the {what} from Telegram: {why}", message.message_id)
            return
        owner = self._owner(update)
        reply = await self.service.handle(owner, caption, [Attachment(upload.name, data)])
        self._submitted(owner, message.message_id, reply)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A press is answered with Telegram's own answer to it (a toast, an alert for a problem), never with
        a chat message of its own; a job it queues gets its status message like any other."""
        query, chat, user = update.callback_query, update.effective_chat, update.effective_user
        verdict = self._gate.check(chat.id, user.id, f"button {query.data}", shared=chat.type != chat.PRIVATE)
        if verdict is not Verdict.GO:
            self._answer(update, "already on it" if verdict is Verdict.REPEAT else PRESS_SLOW_DOWN, kept=False)
            return
        owner, pressed_on = self._owner(update), query.message.message_id if query.message else None
        try:
            reply = await self._press(owner, query.data or "")
        except CommandError as exc:  # a forged job number
            self._answer(update, str(exc), alert=True)
            return
        if reply is None:
            self._answer(update, NO_LONGER)
            return
        if reply.shows is not None:  # PNG
            self._answer(update, "sending the PNG")
            self._outbox.reply(chat.id, lambda: self.sender.pngs(reply.shows, chat.id, pressed_on))
            return
        self._answer(update, reply.text, alert=reply.error)
        if reply.job is not None:
            self._submitted(owner, pressed_on, reply)

    async def _press(self, owner: Owner, data: str) -> Reply | None:
        """What a button does: 5× steps, New seed, PNG (a reply that shows the job) or one picture's U, V, zoom
        or pan (run as the typed command, refused as it is); None for data no button of easel's carries."""
        match = _BUTTON.fullmatch(data)
        if match is None:
            command = action_command(data)
            return None if command is None else await self.service.execute(owner, command)
        action, job_id = match[1], pressed_job(match[2])
        if action == "png":
            return await self.service.execute(owner, ShowHistory(10, job_id))
        if action == "more":
            return await self.service.more_steps(owner, job_id)
        return await self.service.new_seed(owner, job_id)

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
        self._outbox.reply(chat_id, lambda: self.sender.text(chat_id, text, reply_to))

    async def _tell_privately(self, owner: Owner, chat_id: int, text: str, reply_to: int | None) -> None:
        """A private answer to a command given in a group: in the person's own chat with the bot, and a note in
        the group that it went there (or, where the bot may not write to them yet, how to let it)."""
        try:
            await self.sender.text(int(owner.user_id), text)
        except Forbidden:
            self._say(chat_id, "I can only send that privately: open a chat with me (press Start), then ask again",
                      reply_to)
            return
        self._say(chat_id, "sent you a private message", reply_to)

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
        if reply.private and not owner.private:  # in a group: to the person's private chat with the bot
            self._outbox.reply(int(owner.user_id), lambda: self._tell_privately(owner, chat_id, reply.text, reply_to))
            return
        if reply.job is None:
            self._say(chat_id, reply.text, reply_to)
            return
        job = reply.job
        every = EDIT_EVERY if owner.private else GROUP_EDIT_EVERY
        status = self._show(job.id, _Status(chat_id, every, lambda event: self._progress(status, event)))

        async def post() -> None:
            sent = await self.sender.text(chat_id, f"{reply.text} — {title(job.params)}", reply_to)
            status.message_id = sent.message_id
            status.progress.touched()
            await self._remember(chat_id, sent.message_id, job.id)
        self._outbox.result(chat_id, post)  # in order with the job's result, and never dropped

    async def _progress(self, status: _Status, event: JobEvent) -> None:
        line = status_line(event)
        self._outbox.progress(status.chat_id, event.job.id, lambda: self._edit(status, line))

    async def _edit(self, status: _Status, text: str) -> None:
        if status.message_id is not None:  # else its status message could not be posted
            await self.sender.edit(status.chat_id, status.message_id, text)

    # ---- job events -------------------------------------------------------------------------
    def _finished(self, event: JobEvent, status: _Status | None) -> None:
        job = event.job
        if status is not None:
            self._outbox.forget(status.chat_id, job.id)  # the final state follows
        chat_id = int(job.owner.chat_id)
        note = SENT_AGAIN if event.replayed and job.unsure_sends else ""  # a send a stop or kill cut short
        self._outbox.result(chat_id, lambda: self._deliver(job, chat_id, None, status=status, note=note))

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
            await self.sender.result(job, chat_id, reply_to, note)
        except Exception as exc:
            self._failures.warning(chat_id, "could not send job #%d's result to Telegram chat %s",
                                   job.id, chat_id, exc_info=True)
            if isinstance(exc, Forbidden):
                return  # blocked, or no longer in the group: nothing gets through
            if isinstance(exc, MaybeSent):
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
            await self._delivered(job)
