"""Pictures and clips people send easel in Telegram: checked on what Telegram says of them, then streamed under a cap."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from telegram import Bot, Message

from bot.frontends.results import is_archive, is_clip, over_limit, read_capped, upload_problem
from bot.limits import LimitsConfig

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile on Telegram's own servers
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
IMAGE_TYPES = "a photo, or a PNG, JPEG, WebP, GIF or BMP file"


class TooBig(Exception):
    """A download went past the size limit, whatever size was declared for it."""


@dataclass(frozen=True)
class Upload:
    """A file someone sent, as Telegram describes it: what to fetch, its name, the cap on its download."""

    file_id: str
    name: str
    limit: int
    clip: bool = False  # a video or an animation (a GIF), capped by [limits] max_clip_bytes
    mime: str | None = None  # as Telegram says it is
    archive: bool = False  # a zip (of photos, for /train), capped by [limits] max_zip_bytes


class TelegramUploads:
    """Photos and image files sent to the bot, within [limits] max_upload_bytes, and clips (videos, animations,
    video or GIF files) within max_clip_bytes (and, on Telegram's own servers, the 20 MB they hand out at most;
    your own Bot API server has no such limit)."""

    def __init__(self, bot: Bot, limits: LimitsConfig, own_server: bool) -> None:
        self.bot = bot
        self.limit = limits.max_upload_bytes if own_server else min(limits.max_upload_bytes, DOWNLOAD_LIMIT)
        self.clip_limit = limits.max_clip_bytes if own_server else min(limits.max_clip_bytes, DOWNLOAD_LIMIT)
        self.zip_limit = limits.max_zip_bytes if own_server else min(limits.max_zip_bytes, DOWNLOAD_LIMIT)
        self._http: httpx.AsyncClient | None = None  # made on the first download

    def problem(self, message: Message) -> tuple[str | None, Upload]:
        """(what is wrong, what to download), checked on the metadata before anything is downloaded. A clip
        passes whatever the command: the command says whether it takes one."""
        if message.photo:
            photo = message.photo[-1]  # the largest size
            name, mime, size, file_id = "photo.jpg", "image/jpeg", photo.file_size or 0, photo.file_id
        else:
            # A GIF sent from the app comes as an animation (Telegram made it an MP4), with a document beside it.
            sent = message.video or message.animation or message.document
            name = sent.file_name or ("clip.mp4" if sent is not message.document else "file")
            mime = sent.mime_type or ("video/mp4" if sent is not message.document else None)
            size, file_id = sent.file_size or 0, sent.file_id
        problem = upload_problem(name, mime, size, self.limit, unknown="an unknown type", instead=f"send {IMAGE_TYPES}",
                                 clip_limit=self.clip_limit, zip_limit=self.zip_limit)
        clip = is_clip(mime)
        archive = not clip and is_archive(name, mime)
        limit = self.clip_limit if clip else self.zip_limit if archive else self.limit
        return problem, Upload("" if problem else file_id, name, limit, clip, mime, archive)

    async def download(self, upload: Upload) -> bytes:
        """The file's bytes, streamed and cut off past the limit whatever size was declared for it (PTB's own
        download reads the whole file first); TooBig past it."""
        file = await self.bot.get_file(upload.file_id)
        if (file.file_size or 0) > upload.limit:
            raise TooBig(over_limit(upload.name, upload.limit, upload.clip, upload.archive))
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT)
        # identity: a compressed answer could unpack to far more than the limit before it is counted
        async with self._http.stream("GET", file.file_path, headers={"Accept-Encoding": "identity"}) as response:
            response.raise_for_status()
            data = await read_capped(response.aiter_raw(), int(response.headers.get("content-length") or 0),
                                     upload.limit)
            if data is None:
                raise TooBig(over_limit(upload.name, upload.limit, upload.clip, upload.archive))  # hanging up: the rest is never read
        return data

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
