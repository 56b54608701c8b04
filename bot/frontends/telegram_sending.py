"""Sending to Telegram: at Telegram's pace, healed when a send fails on the way, results at most twice.

Each chat's sends go through that chat's own queue (pacing.Outbox, in the frontend), so whatever waits
here (a flood wait, a retry) holds up only that chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from bot.frontends.chat import ending, result_buttons
from bot.frontends.pacing import Throttled, clip, retried
from bot.frontends.results import Video, animation_state, fitted, fitted_video, is_animation, too_large
from bot.formatting import describe, title
from bot.service import Service
from storage.records import JobRecord, JobStatus

log = logging.getLogger(__name__)

PHOTO_LIMIT = 10 * 1024 * 1024  # sendPhoto
DOCUMENT_LIMIT = 50 * 1024 * 1024  # sendDocument
VIDEO_LIMIT = 50_000_000  # sendVideo and sendAnimation: what bots may upload to Telegram's own servers
OWN_SERVER_VIDEO_LIMIT = 2000 * 1000 * 1000  # your own Bot API server (--local) takes 2000 MB
CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096
RETRY_DELAYS = (1.0, 4.0)  # before the second and third try of a send that failed (a 5xx, a reset, a timeout)

Answer = TypeVar("Answer")


def unreachable(exc: BaseException) -> bool:
    """Worth trying again: no network, DNS, a refused connection, a timeout, a 5xx (not a request Telegram refused)."""
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _answer_lost(exc: BaseException) -> bool:
    """Whether Telegram may have done what was asked though its answer never came (the connection dropped or
    timed out while waiting for it), rather than never got the request or answered it with an error."""
    return isinstance(exc.__cause__, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError))


def _flood_wait(exc: BaseException) -> float | None:
    """The seconds a 429 asks to wait before the next try; None for any other failure."""
    if not isinstance(exc, RetryAfter):
        return None
    with warnings.catch_warnings():  # PTB 22 warns that retry_after becomes a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class MaybeSent(Exception):
    """Two sends of a result got no answer: it may be in the chat twice already, so it is not sent again."""


class Pace(BaseRateLimiter[None]):
    """Telegram's published pace for a bot's messages: about 30 a second in all and 20 a minute per group.

    A 429 is not waited out here, where AIORateLimiter's retries would hold every chat; it goes back to
    the chat's own sender (TelegramSender.sent), so only that chat waits. Only the chat's sender waits
    here, too."""

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


def answering(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True) if message_id else None


def _buttons(job: JobRecord, image: int) -> InlineKeyboardMarkup:
    """The keyboard under picture `image` (1-based) of a job, each picture in a message of its own: its own U, V,
    V strong, zoom and pan (chat.result_buttons for that picture alone), then 5× steps, New seed and PNG. An
    animation's video gets 5× steps and New seed alone (PNG would send every frame)."""
    rows = [[InlineKeyboardButton(button.label, callback_data=button.data) for button in row]
            for row in result_buttons(job, (image,))] or [[]]
    if not is_animation(job):
        rows[-1].append(InlineKeyboardButton("PNG", callback_data=f"png:{job.id}"))
    return InlineKeyboardMarkup([row for row in rows if row])


def _caption(job: JobRecord, seed: int, note: str = "") -> str:
    settings = f"{describe(job.params, seed)} · job #{job.id}"  # kept whole: the seed and job id matter most
    if note:
        settings += f"\n{note}"
    return f"{clip(title(job.params), CAPTION_LIMIT - len(settings) - 1)}\n{settings}"


class TelegramSender:
    """Sends a chat's messages and results for the frontend, each send healed by sent()."""

    def __init__(self, bot: Bot, service: Service, failures: Throttled, send_png: bool,
                 remember: Callable[[int, int, int], Awaitable[None]], own_server: bool = False) -> None:
        self.bot = bot
        self.service = service
        self.send_png = send_png
        self.own_server = own_server  # a Bot API server of your own: larger uploads
        self._failures = failures
        self._remember = remember  # (chat, message, job): a message that shows the job

    async def sent(self, send: Callable[[], Awaitable[Answer]], job_id: int | None = None) -> Answer:
        """send(), healed. A flood wait (429) is waited out, holding up only this chat's queue; another
        failure that is not a refusal is tried again after each of RETRY_DELAYS. With job_id, each try is
        recorded before it starts, and one whose answer never came (a timeout, a dropped connection) counts
        as maybe sent: after two of those there is no third (MaybeSent), so a result arrives at most twice."""
        lost = 0

        async def attempt() -> Answer:
            nonlocal lost
            if job_id is not None:  # a kill mid-send leaves this counted, and the next start knows
                lost = await self.service.sending(job_id) - 1
            try:
                answer = await send()
            except TelegramError as exc:
                if _answer_lost(exc):
                    lost += 1
                elif job_id is not None:
                    await self.service.answered(job_id)
                if lost >= 2 and not isinstance(exc, RetryAfter):
                    raise MaybeSent(f"Telegram did not answer twice ({exc})") from exc
                raise
            if job_id is not None:
                await self.service.answered(job_id)
            return answer

        def failed(exc: BaseException, pause: float | None) -> None:
            if pause is not None and not isinstance(exc, RetryAfter):
                log.info("a send to Telegram failed (%s); trying again in %g s", exc, pause)

        return await retried(attempt, delays=RETRY_DELAYS, transient=unreachable, wait=_flood_wait, failed=failed)

    async def text(self, chat_id: int, text: str, reply_to: int | None = None) -> Message:
        return await self.sent(lambda: self.bot.send_message(chat_id, clip(text, TEXT_LIMIT),
                                                             reply_parameters=answering(reply_to)))

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        try:
            await self.sent(lambda: self.bot.edit_message_text(clip(text, TEXT_LIMIT), chat_id=chat_id,
                                                               message_id=message_id))
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():  # the same text again is not an error
                raise

    async def result(self, job: JobRecord, chat_id: int, reply_to: int | None, note: str) -> None:
        """A job's pictures, each with its settings and buttons (as a file where a photo fails), or why there
        are none; `note` goes under each caption. Each message that shows the job is remembered."""
        bot, answer = self.bot, answering(reply_to)
        if is_animation(job):  # done, or cancelled with the frames drawn so far
            await self.video(job, chat_id, reply_to, note)
            return
        if job.status is not JobStatus.DONE:
            await self.sent(lambda: bot.send_message(chat_id, clip(f"{ending(job)} {note}".strip(), TEXT_LIMIT),
                                                     reply_parameters=answer), job.id)
        for number, image in enumerate(job.images, 1):
            path, caption, buttons = Path(image.path), _caption(job, image.seed, note), _buttons(job, number)
            name, data = await asyncio.to_thread(fitted, path, PHOTO_LIMIT)
            try:
                sent = await self.sent(lambda: bot.send_photo(chat_id, photo=data, filename=name, caption=caption,
                                                              reply_markup=buttons, reply_parameters=answer), job.id)
            except (Forbidden, MaybeSent):
                raise
            except TelegramError as exc:
                # Refused as a photo, or a photo kept failing: the same picture as a file often goes through.
                self._failures.warning(chat_id, "could not send job #%d's picture to Telegram chat %s as a photo (%s); "
                                                "sending it as a file", job.id, chat_id, exc)
                name, data = await asyncio.to_thread(fitted, path, DOCUMENT_LIMIT)
                sent = await self.sent(lambda: bot.send_document(chat_id, document=data, filename=name, caption=caption,
                                                                 reply_markup=buttons, reply_parameters=answer), job.id)
            await self._remember(chat_id, sent.message_id, job.id)
        if self.send_png and job.status is JobStatus.DONE:
            await self.pngs(job, chat_id, None)

    async def video(self, job: JobRecord, chat_id: int, reply_to: int | None, note: str) -> None:
        """An animation as one video with its settings (how far it got, how it was made to fit) and its buttons:
        the MP4 as a streamable video, a GIF or WebP as an animation, a file where those are refused; where no
        form of it fits, a line saying where it is on disk. The message is remembered as showing the job."""
        bot, answer = self.bot, answering(reply_to)
        limit = OWN_SERVER_VIDEO_LIMIT if self.own_server else VIDEO_LIMIT
        video = await asyncio.to_thread(fitted_video, job, limit)
        buttons = _buttons(job, 1)
        if video is None:
            text = clip(f"{too_large(job, limit, self.service.images.root)} {note}".strip(), TEXT_LIMIT)
            sent = await self.sent(lambda: bot.send_message(chat_id, text, reply_markup=buttons,
                                                            reply_parameters=answer), job.id)
            await self._remember(chat_id, sent.message_id, job.id)
            return
        extra = "\n".join(line for line in (animation_state(job), video.note, note) if line)
        caption = _caption(job, job.params.seed, extra)
        try:
            sent = await self.sent(lambda: self._send_video(chat_id, video, caption, buttons, answer), job.id)
        except (Forbidden, MaybeSent):
            raise
        except TelegramError as exc:
            # Refused as a video (its encoding, its size on this server): the same file often goes through.
            self._failures.warning(chat_id, "could not send job #%d's video to Telegram chat %s as a video (%s); "
                                            "sending it as a file", job.id, chat_id, exc)
            sent = await self.sent(lambda: bot.send_document(chat_id, document=video.data, filename=video.name,
                                                             caption=caption, reply_markup=buttons,
                                                             reply_parameters=answer), job.id)
        await self._remember(chat_id, sent.message_id, job.id)

    def _send_video(self, chat_id: int, video: Video, caption: str, buttons: InlineKeyboardMarkup,
                    answer: ReplyParameters | None) -> Awaitable[Message]:
        """sendVideo for an MP4 (played as it streams), sendAnimation for a GIF or WebP (looped, silent)."""
        send = self.bot.send_video if video.format == "mp4" else self.bot.send_animation
        extra = {"supports_streaming": True} if video.format == "mp4" else {}
        return send(chat_id, video.data, filename=video.name, caption=caption, width=video.width, height=video.height,
                    duration=timedelta(seconds=max(1, round(video.seconds))), reply_markup=buttons,
                    reply_parameters=answer, **extra)

    async def pngs(self, job: JobRecord, chat_id: int, reply_to: int | None) -> None:
        """The original PNGs, with their parameters (Telegram recompresses photos and drops them)."""
        for image in job.images:
            path = Path(image.path)
            data = await asyncio.to_thread(path.read_bytes)
            await self.sent(lambda: self.bot.send_document(chat_id, document=data, filename=path.name,
                                                           reply_parameters=answering(reply_to)))
