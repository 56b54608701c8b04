"""Pictures people send easel in Telegram: checked on what Telegram says of them, then streamed under a cap."""

from __future__ import annotations

import httpx
from telegram import Bot, Message

from bot.frontends.results import over_limit, read_capped, upload_problem
from bot.limits import LimitsConfig

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile on Telegram's own servers
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
IMAGE_TYPES = "a photo, or a PNG, JPEG, WebP, GIF or BMP file"


class TooBig(Exception):
    """A download went past the size limit, whatever size was declared for it."""


class TelegramUploads:
    """Photos and image files sent to the bot, within [limits] max_upload_bytes (and, on Telegram's own
    servers, the 20 MB they hand out at most; your own Bot API server has no such limit)."""

    def __init__(self, bot: Bot, limits: LimitsConfig, own_server: bool) -> None:
        self.bot = bot
        self.limit = limits.max_upload_bytes if own_server else min(limits.max_upload_bytes, DOWNLOAD_LIMIT)
        self._http: httpx.AsyncClient | None = None  # made on the first download

    def problem(self, message: Message) -> tuple[str | None, str, str]:
        """(what is wrong, file id, file name), checked on the metadata before anything is downloaded."""
        if message.photo:
            photo = message.photo[-1]  # the largest size
            name, mime, size, file_id = "photo.jpg", "image/jpeg", photo.file_size or 0, photo.file_id
        else:
            document = message.document
            name, mime = document.file_name or "file", document.mime_type
            size, file_id = document.file_size or 0, document.file_id
        problem = upload_problem(name, mime, size, self.limit, unknown="an unknown type", instead=f"send {IMAGE_TYPES}")
        return problem, "" if problem else file_id, name

    async def download(self, file_id: str, name: str) -> bytes:
        """The file's bytes, streamed and cut off past the limit whatever size was declared for it (PTB's own
        download reads the whole file first); TooBig past it."""
        file = await self.bot.get_file(file_id)
        if (file.file_size or 0) > self.limit:
            raise TooBig(over_limit(name, self.limit))
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT)
        # identity: a compressed answer could unpack to far more than the limit before it is counted
        async with self._http.stream("GET", file.file_path, headers={"Accept-Encoding": "identity"}) as response:
            response.raise_for_status()
            data = await read_capped(response.aiter_raw(), int(response.headers.get("content-length") or 0),
                                     self.limit)
            if data is None:
                raise TooBig(over_limit(name, self.limit))  # leaving the stream hangs up: the rest is never read
        return data

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
