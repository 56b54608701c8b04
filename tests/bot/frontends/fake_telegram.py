"""A fake Telegram Bot API server on 127.0.0.1, good enough for the real python-telegram-bot (22.x) client.

Start it, point an ``ApplicationBuilder`` at it and run the real Application in the test's own loop:

    async with FakeTelegram() as fake:
        app = (fake.builder()                    # ApplicationBuilder().token(..).base_url(..).base_file_url(..)
               .rate_limiter(AIORateLimiter(max_retries=3)).concurrent_updates(True).build())
        app.add_handler(CommandHandler("start", start))
        async with polling(app):                 # async with app; start_polling(poll_interval=0, timeout=1); start
            await fake.push(fake.text("/start"))
            reply = await fake.wait_for_message(lambda m: m.chat is fake.alice_chat)

or use the ``fake_telegram`` fixture (import it into the test module). The URLs are the real API's shape:
``POST {base_url}{token}/{method}`` (PTB appends the token to ``base_url`` unless it holds ``{token}``,
then ``/`` and the method) and ``GET {base_file_url}{token}/{file_path}`` for downloads (``getFile``
answers a relative ``file_path``; PTB prefixes it with ``base_file_url + token + "/"``).

Everything the client sends is recorded (``fake.requests``: method, decoded params, uploaded files,
perf_counter time, status, response); every message the bot makes lives in ``fake.messages`` with the
history of its edits; ``fake.commands`` is the last default-scope ``setMyCommands``. Waiting helpers are
bounded and raise ``TimeoutError`` naming the last requests. Faults on demand: ``fail_next`` (an error
answer), ``delay_next`` (a slow answer; the call is still carried out), ``drop_next`` (the connection closed
without an answer, before or after the call is carried out) and files whose declared ``file_size`` lies
(served chunked, so only counting the bytes tells). Errors look like the real API's:
``{"ok": false, "error_code": 400, "description": "Bad Request: ..."}`` (429 adds
``"parameters": {"retry_after": s}``), with ``Content-Type: application/json``.

What python-telegram-bot 22.8 sends and needs, learnt from its source (the traps):

- Requests are ``application/x-www-form-urlencoded`` (no files) or ``multipart/form-data`` (files), never
  JSON. Every non-string value is ``json.dumps``-ed into its form field (ints and bools too: ``chat_id=42``,
  ``disable_notification=true``, ``reply_markup={"inline_keyboard": ...}``); strings go as they are. The
  fake decodes by field name (``text``/``caption``/ids stay strings) so ``params`` hold real values.
- An upload in a plain parameter (``sendPhoto(photo=bytes)``) is a file part named after the parameter;
  inside ``media`` (``sendMediaGroup``, ``editMessageMedia``) it is ``"media": "attach://attached<hex>"``
  with a file part of that name. Both are recorded as ``Upload`` s with their filename and bytes.
- Status codes become exceptions in ``BaseRequest._request_wrapper``: 400 BadRequest (its message loses
  the ``"Bad Request: "`` prefix and is capitalised), 403 Forbidden, **401 and 404 InvalidToken** (an
  unknown method answers 404 "Not Found" like Telegram, so a method the fake lacks looks like a bad token),
  409 Conflict, anything else NetworkError (413 too). ``parameters.retry_after`` makes RetryAfter whatever
  the status, but only when it is truthy: ``retry_after=0`` is not a flood wait.
- ``getUpdates`` goes through its own connection pool (size 1) with ``read_timeout = 5 s + timeout``; the
  updater sends ``offset = last update_id + 1`` to confirm. ``Updater.stop()`` abandons the pending long
  poll (the fake notices the closed connection) and then calls ``getUpdates(offset, timeout=0)`` once
  more to confirm what it fetched. Two pollers at once get 409 Conflict, like Telegram.
- ``AIORateLimiter`` never sees ``getUpdates`` or file downloads. With ``max_retries=0`` (its default) a
  429 is raised to the handler at once; with ``max_retries=n`` it sleeps ``retry_after + 0.1`` s and
  re-posts the same data (upload bytes included), and while it waits *every* rate-limited request of the
  bot waits too. Its default 20-per-minute group limiter slows a test that sends many messages to a
  group (``group_max_rate=0`` turns it off).
- Transport failures keep the httpx exception as ``__cause__``: a dropped connection is NetworkError
  ("httpx.RemoteProtocolError: Server disconnected without sending a response."), a slow answer TimedOut
  (cause ``httpx.ReadTimeout``, after the request's read timeout, 5 s by default). Only the cause tells
  "the call may have been done" (read) from "it never arrived" (connect, pool).
- ``concurrent_updates(True)`` runs each update in its own task; ``Application.stop()`` waits for every
  running handler (``update_queue.join()``), so a handler that awaits something endless blocks shutdown.
- The HTTPX client trusts proxy environment variables: set ``NO_PROXY=127.0.0.1`` where a proxy is set.

What Telegram does that the fake does too: per-chat message ids (two chats can both have message 5);
``editMessage*`` without ``reply_markup`` removes the inline keyboard; an edit that changes nothing is 400
"message is not modified"; text/caption are trimmed and parsed (HTML, MarkdownV2, Markdown) into entities,
so ``<lora:x>`` in an HTML caption is 400 "can't parse entities"; limits (text 4096, caption 1024,
callback_data 1-64 bytes, photo upload 10 MB, upload 50 MB, download 20 MB, 2-10 items per album); photos
must be real images within Telegram's dimension rules; a callback query can be answered once; a user's
video message carries ``video``, a GIF sent from the app ``animation`` (an MP4, as Telegram converts it) with a
``document`` beside it; ``sendVideo``/``sendAnimation`` keep what they were sent (``message.video`` /
``message.animation``) and the width, height and duration they were told.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.bot.frontends.fake_server import FakeServer

__all__ = [
    "FakeChat",
    "FakeFile",
    "FakeMessage",
    "FakeRequest",
    "FakeTelegram",
    "FakeUser",
    "FloodLimit",
    "TELEGRAM_FLOOD_LIMITS",
    "Upload",
    "fake_telegram",
    "polling",
]

MB = 1024 * 1024
TEXT_LIMIT, CAPTION_LIMIT = 4096, 1024
PHOTO_UPLOAD_LIMIT, UPLOAD_LIMIT, DOWNLOAD_LIMIT = 10 * MB, 50 * MB, 20 * MB
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CONFLICT_POLL = ("Conflict: terminated by other getUpdates request; make sure that only one bot instance "
                 "is running")
CHAT_ACTIONS = {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
                "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note"}
# Update kinds Telegram leaves out unless allowed_updates names them.
OPT_IN_UPDATES = {"chat_member", "message_reaction", "message_reaction_count"}
# Form fields holding JSON (PTB json.dumps them) and fields that are strings even when they look like numbers.
JSON_FIELDS = {"reply_markup", "reply_parameters", "entities", "caption_entities", "media", "commands", "scope",
               "allowed_updates", "link_preview_options", "results", "menu_button", "rights", "reaction",
               "suggested_post_parameters", "input_message_content"}
STRING_FIELDS = {"text", "caption", "parse_mode", "callback_query_id", "file_id", "photo", "document", "action",
                 "url", "language_code", "inline_message_id", "business_connection_id", "message_effect_id",
                 "emoji", "name", "description", "short_description", "secret_token", "ip_address",
                 "filename", "title", "thumbnail", "video", "animation"}
COUNTED_METHODS = {"sendmessage", "sendphoto", "senddocument", "sendmediagroup", "editmessagetext",
                   "editmessagecaption", "editmessagemedia", "editmessagereplymarkup", "copymessage",
                   "forwardmessage", "sendanimation", "sendvideo", "sendaudio", "sendvoice", "sendsticker"}


def _u16(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets."""
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------------------------- world


@dataclass(eq=False)
class FakeUser:
    """A Telegram user (or the bot); ``payload()`` is the User object."""

    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False
    language_code: str | None = "en"
    last_name: str | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            out["last_name"] = self.last_name
        if self.username:
            out["username"] = self.username
        if self.language_code and not self.is_bot:
            out["language_code"] = self.language_code
        return out


@dataclass(eq=False)
class FakeChat:
    """A private chat (id = the user's id), a basic ``group`` or a ``supergroup`` (negative ids)."""

    id: int
    type: str  # "private", "group", "supergroup", "channel"
    title: str | None = None
    user: FakeUser | None = None  # the other side of a private chat

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            out["first_name"] = self.user.first_name
            if self.user.username:
                out["username"] = self.user.username
        else:
            out["title"] = self.title or f"chat {self.id}"
        if self.type == "group":
            out["all_members_are_administrators"] = True
        return out


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request: its form field name, filename, content type and bytes."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class FakeFile:
    """A file Telegram stores: sent by a user (``fake.photo``/``fake.document``) or uploaded by the bot."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str  # relative, e.g. "photos/file_3.jpg"; served at /file/bot<token>/<file_path>
    mime_type: str
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    # What updates and getFile say its size is: True = the real size, False = nothing (the field is optional),
    # a number = that number (a lying server: the download then comes chunked, without Content-Length).
    declared: int | bool = True
    duration: int | None = None  # seconds, for a video or an animation

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def declared_size(self) -> int | None:
        return self.size if self.declared is True else None if self.declared is False else int(self.declared)

    def with_size(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.declared_size is not None:
            out["file_size"] = self.declared_size
        return out

    def photo_size(self) -> dict[str, Any]:
        return self.with_size({"file_id": self.file_id, "file_unique_id": self.file_unique_id,
                            "width": self.width or 0, "height": self.height or 0})

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file_id": self.file_id, "file_unique_id": self.file_unique_id,
                               "mime_type": self.mime_type}
        if self.filename:
            out["file_name"] = self.filename
        return self.with_size(out)

    def video(self) -> dict[str, Any]:
        """A Video or Animation object (the two have the same fields)."""
        return {**self.document(), "width": self.width or 0, "height": self.height or 0,
                "duration": self.duration or 0}


@dataclass
class FakeRequest:
    """One Bot API call as the fake received it (params decoded, uploads kept) and what it answered.

    ``method`` is as sent (``"sendPhoto"``); file downloads are recorded with method ``"file"`` and
    ``params={"file_path": ...}``.
    """

    method: str
    params: dict[str, Any]
    files: list[Upload]
    time: float  # perf_counter when it arrived
    http_method: str = "POST"
    content_type: str = ""
    status: int = 0
    response: Any = None  # the JSON answer (for downloads: the bytes)
    answered: float = 0.0  # perf_counter when it was answered
    web_request: Any = field(default=None, repr=False, compare=False)

    @property
    def client_gone(self) -> bool:
        """Whether the client closed the connection (PTB abandoning a long poll on stop)."""
        transport = getattr(self.web_request, "transport", None)
        return self.web_request is not None and (transport is None or transport.is_closing())

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        return self.response.get("result") if isinstance(self.response, dict) else None

    @property
    def description(self) -> str | None:
        return self.response.get("description") if isinstance(self.response, dict) else None

    def file(self, field_name: str) -> Upload | None:
        return next((f for f in self.files if f.field == field_name), None)

    def __repr__(self) -> str:
        files = f" files={[(f.field, f.filename, f.size) for f in self.files]}" if self.files else ""
        shown = {k: (v if len(repr(v)) < 80 else repr(v)[:77] + "...") for k, v in self.params.items()}
        error = f" {self.description!r}" if self.status != 200 and self.description else ""
        return f"<FakeRequest {self.method} {shown} -> {self.status}{error}{files}>"


@dataclass(eq=False)
class FakeMessage:
    """A message in a chat: the bot's (``fake.messages``) or a user's (made by the builders).

    Kept current through edits; ``history`` holds one snapshot per state (first = as sent) with its
    perf_counter ``time``; ``edits`` are the later ones.
    """

    chat: FakeChat
    message_id: int
    from_user: FakeUser
    method: str  # "sendMessage", "sendPhoto", ... for the bot's; "user" for a user's
    date: int = field(default_factory=lambda: int(time.time()))
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption: str | None = None
    caption_entities: list[dict[str, Any]] = field(default_factory=list)
    photo_sizes: list[FakeFile] = field(default_factory=list)  # smallest first
    document_file: FakeFile | None = None
    video_file: FakeFile | None = None
    animation_file: FakeFile | None = None  # a user's also has document_file, the same file, as on Telegram
    reply_markup: dict[str, Any] | None = None  # as sent (inline keyboards are also in payload())
    reply_to_message: FakeMessage | None = None
    media_group_id: str | None = None
    edit_date: int | None = None
    deleted: bool = False
    created: float = field(default_factory=time.perf_counter)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def from_bot(self) -> bool:
        return self.from_user.is_bot

    @property
    def reply_to(self) -> int | None:
        """The message_id this message answers (in the same chat), if any."""
        return self.reply_to_message.message_id if self.reply_to_message else None

    @property
    def photo(self) -> bytes | None:
        """The bytes of the largest photo size."""
        return self.photo_sizes[-1].data if self.photo_sizes else None

    @property
    def document(self) -> bytes | None:
        return self.document_file.data if self.document_file else None

    @property
    def video(self) -> bytes | None:
        return self.video_file.data if self.video_file else None

    @property
    def animation(self) -> bytes | None:
        return self.animation_file.data if self.animation_file else None

    @property
    def media_file(self) -> FakeFile | None:
        """The file of a document, video or animation message."""
        return self.animation_file or self.video_file or self.document_file

    @property
    def filename(self) -> str | None:
        return self.media_file.filename if self.media_file else None

    @property
    def content(self) -> str:
        """The text, or the caption of a media message ("" when neither)."""
        return self.text if self.text is not None else (self.caption or "")

    @property
    def edits(self) -> list[dict[str, Any]]:
        return self.history[1:]

    @property
    def inline_keyboard(self) -> list[list[dict[str, Any]]]:
        return list((self.reply_markup or {}).get("inline_keyboard") or [])

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every inline button, row by row."""
        return [button for row in self.inline_keyboard for button in row]

    @property
    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons if "callback_data" in b]

    def snapshot(self) -> dict[str, Any]:
        return {"time": time.perf_counter(), "text": self.text, "caption": self.caption,
                "entities": json.loads(json.dumps(self.entities or self.caption_entities)),
                "reply_markup": json.loads(json.dumps(self.reply_markup)), "photo": self.photo,
                "document": self.document, "video": self.video, "animation": self.animation,
                "filename": self.filename, "deleted": self.deleted}

    def payload(self, *, nested: bool = True) -> dict[str, Any]:
        """The Message object Telegram would send (the replied-to message nested one level deep)."""
        out: dict[str, Any] = {"message_id": self.message_id, "from": self.from_user.payload(),
                               "chat": self.chat.payload(), "date": self.date}
        if self.edit_date is not None:
            out["edit_date"] = self.edit_date
        if self.text is not None:
            out["text"] = self.text
            if self.entities:
                out["entities"] = self.entities
        if self.photo_sizes:
            out["photo"] = [f.photo_size() for f in self.photo_sizes]
        if self.document_file is not None:
            out["document"] = self.document_file.document()
        if self.video_file is not None:
            out["video"] = self.video_file.video()
        if self.animation_file is not None:
            out["animation"] = self.animation_file.video()
        if self.caption is not None:
            out["caption"] = self.caption
            if self.caption_entities:
                out["caption_entities"] = self.caption_entities
        if self.media_group_id is not None:
            out["media_group_id"] = self.media_group_id
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            out["reply_markup"] = {"inline_keyboard": self.reply_markup["inline_keyboard"]}
        if nested and self.reply_to_message is not None:
            out["reply_to_message"] = self.reply_to_message.payload(nested=False)
        return out

    def __repr__(self) -> str:
        what = ("photo " if self.photo_sizes else "animation " if self.animation_file else "video " if self.video_file
                else "document " if self.document_file else "")
        return (f"<FakeMessage {self.chat.id}/{self.message_id} {self.method} {what}{self.content[:40]!r}"
                f" edits={len(self.edits)}{' deleted' if self.deleted else ''}>")


@dataclass(frozen=True)
class FloodLimit:
    """At most ``max_count`` counted calls (sends and edits) per ``window`` seconds.

    scope "chat": per chat; "group": per group chat; "all": the whole bot.
    """

    scope: str
    window: float
    max_count: int


# Telegram's published guidance (approximate: the real limits are not published exactly).
TELEGRAM_FLOOD_LIMITS = (FloodLimit("all", 1.0, 30), FloodLimit("group", 60.0, 20), FloodLimit("chat", 1.0, 1))


class _ApiError(Exception):
    """Raised inside a method to answer ``{"ok": false, ...}`` at once."""

    def __init__(self, code: int, description: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, description)
        self.code, self.description, self.parameters = code, description, dict(parameters or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def _bad(description: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {description}")


@dataclass
class _Failure:
    method: str  # lower-case, or "*"
    error: _ApiError
    times: int


@dataclass
class _Delay:
    method: str
    seconds: float
    times: int


@dataclass
class _Drop:
    method: str
    after: bool  # the call is carried out first (its answer is lost), else never (nothing was done)
    times: int


# --------------------------------------------------------------------------------------------- formatting

_HTML_TAGS = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
              "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
              "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
              "tg-emoji": "custom_emoji"}
_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _entities_error(message: str) -> _ApiError:
    return _bad(f"can't parse entities: {message}")


def _parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the plain text and its entities (UTF-16 offsets), or a 400 like Telegram's."""
    out: list[str] = []
    pos = 0  # UTF-16 offset in the output
    entities: list[dict[str, Any]] = []
    stack: list[tuple[str, int, dict[str, str]]] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "<":
            byte = len(source[:i].encode())
            if not source.startswith("</", i):
                name = re.match(r"[^\s/>]*", source[i + 1:]).group(0).lower()  # type: ignore[union-attr]
                if name not in _HTML_TAGS:  # "a < b" too: Telegram wants &lt;
                    raise _entities_error(f'Unsupported start tag "{name}" at byte offset {byte}')
            end = source.find(">", i)
            if end < 0:
                raise _entities_error(f"Unclosed start tag at byte offset {byte}")
            inner = source[i + 1:end]
            if inner.startswith("/"):
                name = inner[1:].strip().lower()
                if not stack:
                    raise _entities_error(f'Unexpected end tag at byte offset {byte}')
                tag, start, attrs = stack.pop()
                if name and name != tag:
                    raise _entities_error(f'Unmatched end tag at byte offset {byte}, expected "</{tag}>", '
                                          f'found "</{name}>"')
                kind = _HTML_TAGS[tag]
                entity: dict[str, Any] = {"type": kind, "offset": start, "length": pos - start}
                if tag == "a":
                    if not attrs.get("href"):
                        entity = {}
                    else:
                        entity["url"] = attrs["href"]
                elif tag == "tg-emoji":
                    entity["custom_emoji_id"] = attrs.get("emoji-id", "")
                elif tag == "blockquote" and "expandable" in attrs:
                    entity["type"] = "expandable_blockquote"
                elif tag == "code" and stack and stack[-1][0] == "pre" and stack[-1][1] == start:
                    language = attrs.get("class", "")
                    if language.startswith("language-"):
                        stack[-1][2]["language"] = language[len("language-"):]
                        entity = {}
                elif tag == "pre" and attrs.get("language"):
                    entity["language"] = attrs["language"]
                if entity and entity["length"] > 0:
                    entities.append(entity)
            else:
                attrs = {k.lower(): (v1 if v1 is not None else v2) for k, v1, v2 in
                         ((m.group(1), m.group(2), m.group(3)) for m in
                          re.finditer(r"([A-Za-z-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", inner[len(name):]))}
                for flag in re.findall(r"(?:^|\s)([A-Za-z-]+)(?=\s|$)", inner[len(name):]):
                    attrs.setdefault(flag.lower(), "")
                if name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _entities_error(f'Tag "span" must have class "tg-spoiler" at byte offset {byte}')
                if inner.rstrip().endswith("/"):
                    raise _entities_error(f'Unsupported start tag "{name}/" at byte offset {byte}')
                stack.append((name, pos, attrs))
            i = end + 1
            continue
        if char == "&":
            match = re.match(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);", source[i:])
            if match:
                ref = match.group(1)
                decoded = (chr(int(ref[2:], 16)) if ref.startswith("#x") else chr(int(ref[1:]))
                           if ref.startswith("#") else _HTML_ENTITIES.get(ref.lower()))
                if decoded is not None:
                    out.append(decoded)
                    pos += _u16(decoded)
                    i += len(match.group(0))
                    continue
        out.append(char)
        pos += _u16(char)
        i += 1
    if stack:
        raise _entities_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out), entities


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MD_KINDS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}
_MD_NAMES = {"bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
             "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "text_link": "TextUrl"}


def _parse_markdown(source: str, v2: bool) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 (``v2``) or legacy Markdown: plain text and entities, or a 400 like Telegram's."""
    out: list[str] = []
    pos = 0
    entities: list[dict[str, Any]] = []
    open_marks: dict[str, tuple[int, int]] = {}  # marker -> (output offset, byte offset)
    link: tuple[int, int] | None = None
    escapable = _MDV2_RESERVED | {"\\"} if v2 else set("_*`[\\")
    i, n = 0, len(source)

    def emit(text: str) -> None:
        nonlocal pos
        out.append(text)
        pos += _u16(text)

    def byte_at(index: int) -> int:
        return len(source[:index].encode())

    def unclosed(kind: str, byte: int) -> _ApiError:
        if v2:
            return _entities_error(f"Can't find end of {_MD_NAMES[kind]} entity at byte offset {byte}")
        return _entities_error(f"Can't find end of the entity starting at byte offset {byte}")

    while i < n:
        char = source[i]
        if char == "\\" and i + 1 < n and (source[i + 1] in escapable or (v2 and 0 < ord(source[i + 1]) < 127)):
            emit(source[i + 1])
            i += 2
            continue
        if char == "`":
            fence = "```" if source.startswith("```", i) else "`"
            start_byte = byte_at(i)
            j, body = i + len(fence), []
            language = ""
            if fence == "```":
                newline = source.find("\n", j)
                first = source[j:newline] if newline >= 0 else ""
                if newline >= 0 and first and " " not in first and "`" not in first:
                    language, j = first, newline + 1
            while j < n and not source.startswith(fence, j):
                if v2 and source[j] == "\\" and j + 1 < n and source[j + 1] in "`\\":
                    body.append(source[j + 1])
                    j += 2
                else:
                    body.append(source[j])
                    j += 1
            if j >= n:
                raise unclosed("pre" if fence == "```" else "code", start_byte)
            start = pos
            emit("".join(body))
            entity: dict[str, Any] = {"type": "pre" if fence == "```" else "code", "offset": start,
                                      "length": pos - start}
            if language:
                entity["language"] = language
            if entity["length"]:
                entities.append(entity)
            i = j + len(fence)
            continue
        if char == "[" and link is None:
            link = (pos, byte_at(i))
            i += 1
            continue
        if char == "]" and link is not None:
            if not source.startswith("(", i + 1):
                if v2:
                    raise _entities_error("Character ']' is reserved and must be escaped with the preceding '\\'")
                emit("]")
                i += 1
                continue
            close = source.find(")", i + 2)
            if close < 0:
                raise unclosed("text_link", link[1])
            url = source[i + 2:close].replace("\\)", ")").replace("\\\\", "\\")
            if pos > link[0]:
                entities.append({"type": "text_link", "offset": link[0], "length": pos - link[0], "url": url})
            link = None
            i = close + 1
            continue
        marker = ("__" if source.startswith("__", i) else "||" if source.startswith("||", i) else char) if v2 \
            else char
        if marker in _MD_KINDS and (v2 or marker in ("*", "_")):
            kind = _MD_KINDS[marker]
            if marker in open_marks:
                start, _ = open_marks.pop(marker)
                if pos > start:
                    entities.append({"type": kind, "offset": start, "length": pos - start})
            else:
                open_marks[marker] = (pos, byte_at(i))
            i += len(marker)
            continue
        if v2 and char == ">" and (i == 0 or source[i - 1] == "\n"):
            line_end = source.find("\n", i)
            line_end = n if line_end < 0 else line_end
            start = pos
            inner_text, inner_entities = _parse_markdown(source[i + 1:line_end], v2)
            emit(inner_text)
            entities.extend({**e, "offset": e["offset"] + start} for e in inner_entities)
            entities.append({"type": "blockquote", "offset": start, "length": pos - start})
            i = line_end
            continue
        if v2 and char in _MDV2_RESERVED:
            raise _entities_error(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
        emit(char)
        i += 1
    if open_marks:
        marker, (_, byte) = min(open_marks.items(), key=lambda item: item[1][1])
        raise unclosed(_MD_KINDS[marker], byte)
    if link is not None:
        raise unclosed("text_link", link[1])
    return "".join(out), entities


def _format(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[dict[str, Any]]]:
    """Parse ``text`` like Telegram: entities from parse_mode (or as given), then trim surrounding whitespace."""
    mode = (parse_mode or "").lower()
    if mode == "html":
        plain, found = _parse_html(text)
    elif mode == "markdownv2":
        plain, found = _parse_markdown(text, v2=True)
    elif mode == "markdown":
        plain, found = _parse_markdown(text, v2=False)
    elif mode:
        raise _bad("unsupported parse_mode")
    else:
        plain, found = text, [dict(e) for e in (entities or [])]
    stripped = plain.strip()
    lead = _u16(plain) - _u16(plain.lstrip())
    total = _u16(stripped)
    kept = []
    for entity in found:
        start = max(0, entity["offset"] - lead)
        end = min(total, entity["offset"] - lead + entity["length"])
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    kept.sort(key=lambda e: (e["offset"], -e["length"]))
    return stripped, kept


def _command_entities(text: str) -> list[dict[str, Any]]:
    """A bot_command entity for a leading "/command" or "/command@botname", as Telegram adds."""
    match = re.match(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?", text)
    if not match:
        return []
    return [{"type": "bot_command", "offset": 0, "length": _u16(match.group(0))}]


def _size_steps(longest: int) -> list[int]:
    """The longest sides of the PhotoSizes Telegram keeps: a thumbnail and a few sizes, smallest first."""
    return ([side for side in (90, 320, 800, 1280) if side < longest] or [max(1, longest // 2)]) + [longest]


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of image bytes (Pillow reads only the header), or None if they are no image."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency of easel
        return (512, 512) if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" else None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- the fake


class FakeTelegram(FakeServer):
    """Telegram's Bot API on 127.0.0.1 (random free port), recording what the bot does.

    Constructor arguments (all keyword):
      token: the bot token to accept (``"<bot id>:<secret>"``; the bot's id is its prefix); another token
        gets 401 "Unauthorized" (PTB raises InvalidToken).
      bot_name / bot_username: the bot's first name and @username (commands may say ``/start@<username>``).
      flood_limits: FloodLimits to enforce on sends and edits with 429s (default none; see
        TELEGRAM_FLOOD_LIMITS).
      max_poll_timeout: the longest a getUpdates is held (Telegram holds up to 50 s).

    People and chats: ``fake.alice`` and ``fake.bob`` (users), ``fake.alice_chat``/``fake.bob_chat``
    (their private chats with the bot, id = user id), ``fake.group`` (a supergroup, id -100...) and
    ``fake.basic_group`` (a "group", id -4...). ``fake.user(...)``/``fake.chat(...)`` make more.
    """

    def __init__(self, *, token: str = "123456789:TEST-fake-telegram-token", bot_name: str = "easel",
                 bot_username: str = "easel_bot", flood_limits: Sequence[FloodLimit] | None = None,
                 max_poll_timeout: float = 50.0) -> None:
        super().__init__()
        self.token = token
        prefix = token.split(":", 1)[0]
        self.bot = FakeUser(int(prefix) if prefix.isdigit() else 123456789, bot_name, bot_username, is_bot=True,
                            language_code=None)
        self.flood_limits = list(flood_limits or [])
        self.max_poll_timeout = max_poll_timeout

        self._ids = itertools.count(1001)
        self.users: dict[int, FakeUser] = {}
        self.chats: dict[int, FakeChat] = {}
        self.alice = self.user("Alice", "alice")
        self.bob = self.user("Bob", "bob")
        self.alice_chat = self.private_chat(self.alice)
        self.bob_chat = self.private_chat(self.bob)
        self.group = self.chat("easel friends", "supergroup", -1001000000001)
        self.basic_group = self.chat("easel family", "group", -4000000001)

        # Recorded data.
        self.requests: list[FakeRequest] = []
        self.messages: list[FakeMessage] = []  # the bot's messages, in the order they were sent
        self.user_messages: list[FakeMessage] = []  # the messages the builders made
        self.command_sets: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (scope JSON, language) -> commands
        self.callback_answers: list[dict[str, Any]] = []  # answerCallbackQuery params, with "time"
        self.chat_actions: list[tuple[float, int, str]] = []  # (time, chat id, action)
        self.updates: list[dict[str, Any]] = []  # every update pushed
        self.delivered: dict[int, int] = {}  # update_id -> how many getUpdates answers carried it
        self.confirmed: set[int] = set()  # update_ids confirmed by an offset past them
        self.files: dict[str, FakeFile] = {}  # file_id -> file
        self.webhook_url = ""
        self.blocked: set[int] = set()  # chat ids whose user blocked the bot

        self._pending: list[dict[str, Any]] = []  # pushed, not yet confirmed
        self._next_update_id = 700000001
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._store: dict[tuple[int, int], FakeMessage] = {}
        self._files_by_path: dict[str, FakeFile] = {}
        self._file_counter = itertools.count(1)
        self._callback_queries: dict[str, dict[str, Any]] = {}
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._drops: list[_Drop] = []
        self._flood: list[tuple[float, int, bool]] = []  # (time, chat id, is group) of counted calls
        self._allowed_updates: set[str] | None = None
        self._poll_generation = 0
        self._held_polls = 0
        self._stopping = False
        self._methods: dict[str, Callable[[FakeRequest], Any]] = {
            name.lower(): handler for name, handler in {
                "getMe": self._get_me, "logOut": lambda r: True, "close": lambda r: True,
                "getUpdates": self._get_updates, "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook, "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands, "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "sendMessage": self._send_message, "sendPhoto": self._send_photo,
                "sendDocument": self._send_document, "sendMediaGroup": self._send_media_group,
                "sendVideo": self._send_video, "sendAnimation": self._send_animation,
                "editMessageText": self._edit_message_text, "editMessageCaption": self._edit_message_caption,
                "editMessageMedia": self._edit_message_media,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message, "sendChatAction": self._send_chat_action,
                "answerCallbackQuery": self._answer_callback_query, "getFile": self._get_file,
                "getChat": self._get_chat,
            }.items()
        }

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url(...)``: PTB appends the token, then ``/method``."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url(...)``: PTB appends the token, then ``/file_path``."""
        return f"{self.url}/file/bot"

    def builder(self) -> Any:
        """An ``ApplicationBuilder`` with this fake's token, base_url and base_file_url set."""
        from telegram.ext import ApplicationBuilder

        return ApplicationBuilder().token(self.token).base_url(self.base_url).base_file_url(self.base_file_url)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=UPLOAD_LIMIT * 4)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        return app

    async def start(self) -> FakeTelegram:
        await super().start()
        self._stopping = False
        return self

    async def stop(self) -> None:
        """Answer held long polls (empty) and close the server."""
        self._stopping = True
        self._changed()
        await super().stop()

    # ----------------------------------------------------------------------------- people and chats

    def user(self, first_name: str, username: str | None = None, *, id: int | None = None,
             language_code: str | None = "en") -> FakeUser:
        """A new user (ids from 1001 up unless given)."""
        user = FakeUser(id if id is not None else next(self._ids), first_name, username,
                        language_code=language_code)
        self.users[user.id] = user
        return user

    def private_chat(self, user: FakeUser) -> FakeChat:
        """The user's private chat with the bot (its id is the user's id, as on Telegram)."""
        if user.id not in self.chats:
            self.chats[user.id] = FakeChat(user.id, "private", user=user)
        return self.chats[user.id]

    def chat(self, title: str, type: str = "supergroup", id: int | None = None) -> FakeChat:
        """A new group chat: "supergroup" ids look like -100..., "group" ids are small negatives."""
        if id is None:
            id = -(1001000000000 + next(self._ids)) if type in ("supergroup", "channel") else -next(self._ids)
        chat = FakeChat(id, type, title)
        self.chats[id] = chat
        return chat

    def block(self, user_or_chat: FakeUser | FakeChat | int) -> None:
        """From now on, sending to this private chat answers 403 "Forbidden: bot was blocked by the user"."""
        self.blocked.add(self._chat_id(user_or_chat))

    @staticmethod
    def _chat_id(target: FakeUser | FakeChat | int) -> int:
        return int(target.id if isinstance(target, (FakeUser, FakeChat)) else target)

    # ----------------------------------------------------------------------------- test controls

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The commands of the last setMyCommands for the default scope and no language."""
        return self.command_sets.get((json.dumps({"type": "default"}, sort_keys=True), ""), [])

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Pushed updates not yet confirmed by an offset past them."""
        return list(self._pending)

    @property
    def polling(self) -> bool:
        """Whether a getUpdates is being held right now (the bot is waiting for updates)."""
        return self._held_polls > 0

    def fail_next(self, method: str, error_code: int = 429, *, retry_after: float = 1,
                  description: str | None = None, parameters: Mapping[str, Any] | None = None,
                  times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` (case-insensitive; "*" for any) with an error.

        The call is refused before it does anything (nothing is sent). 429 is Telegram's flood control:
        ``"Too Many Requests: retry after N"`` with ``parameters.retry_after`` (PTB: RetryAfter). Other codes
        get a default description ("Bad Request", "Internal Server Error", ...) unless given; pass
        ``parameters={"migrate_to_chat_id": id}`` for ChatMigrated.
        """
        if error_code == 429:
            shown = int(retry_after) if float(retry_after).is_integer() else retry_after
            description = description or f"Too Many Requests: retry after {shown}"
            parameters = {"retry_after": shown, **(parameters or {})}
        elif description is None:
            description = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
                           404: "Not Found", 409: "Conflict", 413: "Request Entity Too Large",
                           500: "Internal Server Error", 502: "Bad Gateway",
                           503: "Service Unavailable", 504: "Gateway Timeout"}.get(error_code, f"Error {error_code}")
        self._failures.append(_Failure(method.lower(), _ApiError(error_code, description, parameters), times))

    def delay_next(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Hold the next ``times`` calls of ``method`` for ``seconds`` before doing them (a slow server).

        The call is still carried out when the client has given up (TimedOut): as on Telegram, a
        timed-out send may well have been sent.
        """
        self._delays.append(_Delay(method.lower(), seconds, times))

    def drop_next(self, method: str, *, after: bool = False, times: int = 1) -> None:
        """Close the connection of the next ``times`` calls of ``method`` without answering (a reset; httpx
        raises RemoteProtocolError, PTB NetworkError). ``after=False``: before doing the call (nothing was
        sent); ``after=True``: once it is done (it was sent; only the answer is lost). Recorded with status 0.
        """
        self._drops.append(_Drop(method.lower(), after, times))

    def requests_for(self, method: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.method.lower() == method.lower()]

    def message(self, chat: FakeChat | FakeUser | int, message_id: int) -> FakeMessage | None:
        """The message (bot's or user's) with this id in this chat."""
        return self._store.get((self._chat_id(chat), int(message_id)))

    def messages_in(self, chat: FakeChat | FakeUser | int) -> list[FakeMessage]:
        """The bot's messages in one chat, oldest first."""
        chat_id = self._chat_id(chat)
        return [m for m in self.messages if m.chat.id == chat_id]

    def register_file(self, data: bytes, *, kind: str = "document", filename: str | None = None,
                      mime_type: str | None = None, size: tuple[int, int] | None = None,
                      file_size: int | bool = True, duration: int | None = None) -> FakeFile:
        """Store bytes under a new file_id (served at its file_path), as if someone had sent them.

        ``kind``: "photo", "document", "video" or "animation". ``file_size`` is the size updates and getFile
        declare (FakeFile.declared): True for the real one."""
        number = next(self._file_counter)
        if kind == "photo":
            path, mime_type = f"photos/file_{number}.jpg", mime_type or "image/jpeg"
        elif kind in ("video", "animation"):
            path, mime_type = f"{kind}s/file_{number}.mp4", mime_type or "video/mp4"
        else:
            suffix = ""
            if filename and "." in filename:
                suffix = filename[filename.rfind("."):]
            elif mime_type:
                suffix = mimetypes.guess_extension(mime_type) or ""
            path = f"documents/file_{number}{suffix}"
            mime_type = mime_type or (mimetypes.guess_type(filename or "")[0]) or "application/octet-stream"
        unique = secrets.token_urlsafe(9)
        prefix = {"photo": "AgAC", "video": "BAAC", "animation": "CgAC"}.get(kind, "BQAC")  # as Telegram's ids start
        file_id = f"{prefix}{unique}{number:06d}"
        file = FakeFile(file_id, unique, bytes(data), path, mime_type, filename, *(size or (None, None)), file_size,
                        duration)
        self.files[file_id] = file
        self._files_by_path[path] = file
        return file

    # ----------------------------------------------------------------------------- updates and builders

    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (giving it the next update_id unless it has one); returns it."""
        if update.get("update_id") is None:
            update["update_id"] = self._next_update_id
        self._next_update_id = max(self._next_update_id, update["update_id"]) + 1
        self.updates.append(update)
        self._pending.append(update)
        self._changed()
        return update

    def _where(self, user: FakeUser | None, chat: FakeChat | FakeUser | int | None) -> tuple[FakeUser, FakeChat]:
        user = user or self.alice
        if chat is None:
            return user, self.private_chat(user)
        if isinstance(chat, FakeUser):
            return user, self.private_chat(chat)
        if isinstance(chat, int):
            if chat not in self.chats:
                raise ValueError(f"unknown chat {chat}")
            return user, self.chats[chat]
        return user, chat

    def _next_message_id(self, chat: FakeChat) -> int:
        return next(self._message_ids.setdefault(chat.id, itertools.count(1)))

    def _replied(self, chat: FakeChat, reply_to: FakeMessage | int | Mapping[str, Any] | None) -> FakeMessage | None:
        if reply_to is None:
            return None
        if isinstance(reply_to, FakeMessage):
            return reply_to
        message_id = int(reply_to["message_id"]) if isinstance(reply_to, Mapping) else int(reply_to)
        found = self.message(chat, message_id)
        if found is None:
            raise ValueError(f"no message {message_id} in chat {chat.id} to reply to")
        return found

    def _user_message(self, user: FakeUser | None, chat: FakeChat | FakeUser | int | None,
                      reply_to: FakeMessage | int | Mapping[str, Any] | None, **fields: Any) -> dict[str, Any]:
        user, where = self._where(user, chat)
        message = FakeMessage(where, self._next_message_id(where), user, "user",
                              reply_to_message=self._replied(where, reply_to), **fields)
        message.history.append(message.snapshot())
        self._store[(where.id, message.message_id)] = message
        self.user_messages.append(message)
        return {"message": message.payload()}

    def text(self, text: str, *, user: FakeUser | None = None, chat: FakeChat | FakeUser | int | None = None,
             reply_to: FakeMessage | int | Mapping[str, Any] | None = None,
             entities: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """A text message update (not pushed yet). A leading "/cmd" or "/cmd@bot" gets a bot_command entity.

        Defaults: from ``fake.alice`` in her private chat. ``chat`` may be a FakeChat (e.g. ``fake.group``),
        a user (their private chat) or a chat id; ``reply_to`` a message (or its id in that chat).
        """
        found = list(entities) if entities is not None else _command_entities(text)
        return self._user_message(user, chat, reply_to, text=text, entities=found)

    def photo(self, data: bytes | Sequence[bytes], *, caption: str | None = None, user: FakeUser | None = None,
              chat: FakeChat | FakeUser | int | None = None,
              reply_to: FakeMessage | int | Mapping[str, Any] | None = None,
              size: tuple[int, int] | None = None, file_size: int | bool = True) -> dict[str, Any]:
        """A photo message update: ``photo`` is a list of PhotoSizes of increasing size, each a stored file.

        ``data`` is the image (every size serves those bytes) or one bytes per size, smallest first. The
        size comes from the image header (``size`` overrides it). A caption starting with "/cmd" gets a
        bot_command caption entity, as on Telegram (PTB's CommandHandler still ignores captions).
        ``file_size``: the size declared for each (see ``register_file``).
        """
        sizes = [data] if isinstance(data, (bytes, bytearray)) else list(data)
        width, height = size or _image_size(bytes(sizes[-1])) or (1280, 960)
        if len(sizes) == 1:
            steps = _size_steps(max(width, height))
            sizes = sizes * len(steps)
        else:
            steps = [round(max(width, height) * (k + 1) / len(sizes)) for k in range(len(sizes))]
        files = []
        for chunk, side in zip(sizes, steps):
            scale = side / max(width, height)
            files.append(self.register_file(bytes(chunk), kind="photo", file_size=file_size,
                                            size=(max(1, round(width * scale)), max(1, round(height * scale)))))
        return self._user_message(user, chat, reply_to, photo_sizes=files, caption=caption,
                                  caption_entities=_command_entities(caption or ""))

    def document(self, data: bytes, filename: str, mime_type: str | None = None, *, caption: str | None = None,
                 user: FakeUser | None = None, chat: FakeChat | FakeUser | int | None = None,
                 reply_to: FakeMessage | int | Mapping[str, Any] | None = None,
                 file_size: int | bool = True) -> dict[str, Any]:
        """A document (file) message update; the file is stored and downloadable through getFile.
        ``file_size``: the size declared for it (see ``register_file``)."""
        file = self.register_file(data, kind="document", filename=filename, file_size=file_size,
                                  mime_type=mime_type or mimetypes.guess_type(filename)[0])
        return self._user_message(user, chat, reply_to, document_file=file, caption=caption,
                                  caption_entities=_command_entities(caption or ""))

    def video(self, data: bytes, *, filename: str | None = "clip.mp4", mime_type: str = "video/mp4",
              caption: str | None = None, user: FakeUser | None = None, chat: FakeChat | FakeUser | int | None = None,
              reply_to: FakeMessage | int | Mapping[str, Any] | None = None, size: tuple[int, int] = (64, 64),
              duration: int = 1, file_size: int | bool = True, animation: bool = False) -> dict[str, Any]:
        """A video message update (``animation=True``: a GIF sent from the app, which Telegram turned into an MP4
        without sound: ``animation`` with the same file as ``document``); the file is downloadable through getFile.
        ``file_size``: the size declared for it (see ``register_file``)."""
        kind = "animation" if animation else "video"
        file = self.register_file(data, kind=kind, filename=filename, mime_type=mime_type, size=size,
                                  file_size=file_size, duration=duration)
        fields = {"animation_file": file, "document_file": file} if animation else {"video_file": file}
        return self._user_message(user, chat, reply_to, caption=caption, caption_entities=_command_entities(caption or ""),
                                  **fields)

    def callback(self, data: str, message: FakeMessage | tuple[FakeChat | int, int], *,
                 user: FakeUser | None = None, forged: bool = False) -> dict[str, Any]:
        """A callback_query update: ``user`` presses the inline button carrying ``data`` on a bot message.

        The button must really be on the message (Telegram sends only what is there), unless ``forged``:
        then ``data`` is sent as it is (a modified client, or a button from another bot version).
        """
        if not isinstance(message, FakeMessage):
            chat, message_id = message
            found = self.message(chat, message_id)
            if found is None:
                raise ValueError(f"no message {message_id} in chat {self._chat_id(chat)}")
            message = found
        if data not in message.callback_data and not forged:
            raise ValueError(f"message {message.message_id} has no button with callback_data {data!r} "
                             f"(it has {message.callback_data})")
        user = user or (message.chat.user if message.chat.type == "private" and message.chat.user else self.alice)
        query_id = str(secrets.randbits(63))
        self._callback_queries[query_id] = {"time": time.perf_counter(), "answered": False, "data": data}
        query = {"id": query_id, "from": user.payload(), "message": message.payload(),
                 "chat_instance": str(abs(hash((message.chat.id, self.bot.id))) % 10 ** 18), "data": data}
        return {"callback_query": query}

    # ----------------------------------------------------------------------------- waiting

    async def wait_for_request(self, predicate: Callable[[FakeRequest], bool], timeout: float = 5.0, *,
                               start: int = 0, what: str = "a matching request") -> FakeRequest:
        """The first answered request (from index ``start`` of ``fake.requests``) that satisfies ``predicate``."""
        return await self._wait_until(lambda: next((r for r in self.requests[start:] if predicate(r)), None),
                                      timeout, what)

    async def wait_for_message(self, predicate: Callable[[FakeMessage], bool], timeout: float = 5.0, *,
                               what: str = "a matching bot message") -> FakeMessage:
        """The first bot message in ``fake.messages`` that satisfies ``predicate`` now (edits count)."""
        return await self._wait_until(lambda: next((m for m in self.messages if predicate(m)), None),
                                      timeout, what)

    async def wait_for_polling(self, timeout: float = 5.0) -> None:
        """Until the bot holds a long poll (getUpdates), i.e. its updater is running."""
        await self._wait_until(lambda: self.polling, timeout, "a getUpdates long poll")

    async def wait_confirmed(self, update: Mapping[str, Any], timeout: float = 5.0) -> None:
        """Until the bot confirmed ``update`` (a getUpdates with an offset past its update_id)."""
        await self._wait_until(lambda: update["update_id"] in self.confirmed, timeout,
                               f"update {update['update_id']} to be confirmed")

    # ----------------------------------------------------------------------------- HTTP plumbing

    @staticmethod
    def _decode(name: str, value: str) -> Any:
        if name in JSON_FIELDS:
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {name} JSON object") from None
        if name in STRING_FIELDS:
            return value
        if value in ("true", "false"):
            return value == "true"
        if re.fullmatch(r"-?\d+", value):
            return int(value)
        if re.fullmatch(r"-?\d+\.\d*(?:[eE][-+]?\d+)?", value):
            return float(value)
        return value

    async def _read(self, request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
        params: dict[str, Any] = {k: self._decode(k, v) for k, v in request.query.items()}
        uploads: list[Upload] = []
        if request.method != "POST" or not request.can_read_body:
            return params, uploads
        if request.content_type == "application/json":  # other clients; PTB never posts JSON
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
            return params, uploads
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                uploads.append(Upload(name, value.filename, value.content_type, value.file.read()))
            else:
                params[name] = self._decode(name, str(value))
        return params, uploads

    @staticmethod
    def _json(status: int, body: Any) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json"})

    @staticmethod
    def _take(entries: list[Any], method: str) -> Any:
        """The first entry (a failure, delay or drop) for ``method`` (or "*"), used up once; None if none."""
        for entry in entries:
            if entry.method in ("*", method):
                entry.times -= 1
                if entry.times <= 0:
                    entries.remove(entry)
                return entry
        return None

    async def _api(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        method = request.match_info["method"]
        record = FakeRequest(method, {}, [], arrived, request.method, request.content_type, web_request=request)
        drop = None
        try:
            try:
                record.params, record.files = await self._read(request)
            except web.HTTPRequestEntityTooLarge:
                raise _ApiError(413, "Request Entity Too Large") from None
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            handler = self._methods.get(method.lower())
            if handler is None:
                raise _ApiError(404, "Not Found")
            failure = self._take(self._failures, method.lower())
            if failure is not None:
                raise failure.error
            drop = self._take(self._drops, method.lower())
            if drop is not None and not drop.after:
                return self._dropped(request, record)
            delay = self._take(self._delays, method.lower())
            if delay is not None:
                await asyncio.sleep(delay.seconds)
            self._check_flood(method.lower(), record.params)
            result = handler(record)
            if asyncio.iscoroutine(result):
                result = await result
            status, body = 200, {"ok": True, "result": result}
        except _ApiError as error:
            status, body = error.code, error.body()
        record.response = body
        if drop is not None:  # done, and its answer lost
            return self._dropped(request, record)
        record.status, record.answered = status, time.perf_counter()
        record.web_request = None
        self.requests.append(record)
        self._changed()
        return self._json(status, body)

    def _dropped(self, request: web.Request, record: FakeRequest) -> web.StreamResponse:
        """Close the connection without an answer; recorded with status 0 (``response`` holds what a call
        that was carried out would have answered)."""
        record.status, record.answered, record.web_request = 0, time.perf_counter(), None
        self.requests.append(record)
        self._changed()
        if request.transport is not None:
            request.transport.abort()
        return web.Response()  # never written: the connection is gone

    async def _download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        record = FakeRequest("file", {"file_path": path}, [], time.perf_counter(), request.method)
        file = self._files_by_path.get(path) if request.match_info["token"] == self.token else None
        if file is None:
            record.status, record.response = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
            response = self._json(404, record.response)
        elif file.declared is not True:
            return await self._download_chunked(request, record, file)
        else:
            record.status, record.response = 200, file.data
            response = web.Response(body=file.data, content_type=file.mime_type)
        record.answered = time.perf_counter()
        self.requests.append(record)
        self._changed()
        return response

    async def _download_chunked(self, request: web.Request, record: FakeRequest, file: FakeFile) -> web.StreamResponse:
        """A file whose declared size is not its size, as a lying server sends it: chunked, no Content-Length.
        ``params["sent"]`` records how many bytes went out before the client stopped reading."""
        response = web.StreamResponse(headers={"Content-Type": file.mime_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        record.status, record.params["sent"] = 200, 0
        try:
            for start in range(0, file.size, 256 * 1024):
                await response.write(file.data[start:start + 256 * 1024])
                record.params["sent"] = min(file.size, start + 256 * 1024)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        finally:
            record.answered = time.perf_counter()
            self.requests.append(record)
            self._changed()
        return response

    def _check_flood(self, method: str, params: Mapping[str, Any]) -> None:
        if not self.flood_limits or method not in COUNTED_METHODS:
            return
        now = time.perf_counter()
        chat_id = params.get("chat_id")
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        is_group = bool(chat and chat.is_group)
        count = max(1, len(params.get("media") or [])) if method == "sendmediagroup" else 1
        for limit in self.flood_limits:
            if limit.scope == "group" and not is_group:
                continue
            relevant = [t for t, c, _ in self._flood if now - t < limit.window
                        and (limit.scope == "all" or c == chat_id)]
            if len(relevant) + count > limit.max_count:
                wait = max(1, math.ceil(min(relevant) + limit.window - now)) if relevant else 1
                raise _ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._flood = [f for f in self._flood if now - f[0] < max(l.window for l in self.flood_limits)]
        self._flood.extend((now, chat_id, is_group) for _ in range(count))  # type: ignore[misc]

    # ----------------------------------------------------------------------------- helpers for methods

    def _target_chat(self, params: Mapping[str, Any]) -> FakeChat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise _bad("chat not found")
        if chat.id in self.blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _reply_target(self, chat: FakeChat, params: Mapping[str, Any]) -> FakeMessage | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, Mapping):
            message_id, allow = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
            if reply.get("chat_id") not in (None, chat.id):
                other = self.chats.get(reply["chat_id"]) if isinstance(reply["chat_id"], int) else None
                chat = other or chat
        else:
            message_id = params.get("reply_to_message_id")
            allow = bool(params.get("allow_sending_without_reply"))
        if message_id is None:
            return None
        found = self.message(chat, int(message_id))
        if (found is None or found.deleted) and not allow:
            raise _bad("message to be replied not found")
        return found if found is not None and not found.deleted else None

    @staticmethod
    def _markup(params: Mapping[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard") or []:
            for button in row:
                if not button.get("text"):
                    raise _bad("text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _bad("BUTTON_DATA_INVALID")
                actions = {"url", "callback_data", "switch_inline_query", "switch_inline_query_current_chat",
                           "web_app", "login_url", "callback_game", "pay", "copy_text",
                           "switch_inline_query_chosen_chat"}
                if not actions & button.keys():
                    raise _bad("text buttons are unallowed in the inline keyboard")
        return markup

    @staticmethod
    def _caption(params: Mapping[str, Any], source: Mapping[str, Any] | None = None) -> tuple[str | None, list]:
        source = source if source is not None else params
        caption = source.get("caption")
        if caption is None or caption == "":
            return None, []
        text, entities = _format(str(caption), source.get("parse_mode"), source.get("caption_entities"))
        if len(text) > CAPTION_LIMIT:
            raise _bad("message caption is too long")
        return (text or None), entities

    def _new_message(self, chat: FakeChat, method: str, params: Mapping[str, Any], **fields: Any) -> FakeMessage:
        message = FakeMessage(chat, self._next_message_id(chat), self.bot, method,
                              reply_markup=self._markup(params), reply_to_message=self._reply_target(chat, params),
                              **fields)
        message.history.append(message.snapshot())
        self._store[(chat.id, message.message_id)] = message
        self.messages.append(message)
        return message

    def _upload(self, record: FakeRequest, value: Any, what: str) -> tuple[bytes, str | None, str] | FakeFile:
        """The file a parameter names: an upload (part named after the field or attach://name) or a file_id."""
        if value is None or value == "":
            upload = record.file(what)
            if upload is None:
                raise _bad(f"there is no {what} in the request")
            return upload.data, upload.filename, upload.content_type
        value = str(value)
        if value.startswith("attach://"):
            upload = record.file(value[len("attach://"):])
            if upload is None:
                raise _bad(f"file {value} not found")  # PTB always sends the part, so this is a fake misuse
            return upload.data, upload.filename, upload.content_type
        if value.startswith(("http://", "https://")):
            raise _bad("failed to get HTTP URL content")  # nothing outside can be reached
        if value not in self.files:
            raise _bad("wrong file identifier/HTTP URL specified")
        return self.files[value]

    def _check_upload_sizes(self, record: FakeRequest) -> None:
        if sum(upload.size for upload in record.files) > UPLOAD_LIMIT:
            raise _ApiError(413, "Request Entity Too Large")

    def _photo_files(self, source: tuple[bytes, str | None, str] | FakeFile) -> list[FakeFile]:
        if isinstance(source, FakeFile):  # a file_id sent again
            return [source]
        data = source[0]
        if not data:
            raise _bad("file must be non-empty")
        if len(data) > PHOTO_UPLOAD_LIMIT:
            raise _bad("PHOTO_SAVE_FILE_INVALID")
        size = _image_size(data)
        if size is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = size
        if width + height > 10000 or max(width, height) > 20 * min(width, height):
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        files = []
        # Telegram keeps a thumbnail and a few sizes (longest side at most 2560); all serve the uploaded bytes.
        longest = min(max(width, height), 2560)
        for side in _size_steps(longest):
            scale = side / max(width, height)
            files.append(self.register_file(data, kind="photo",
                                            size=(max(1, round(width * scale)), max(1, round(height * scale)))))
        return files

    def _document_file(self, source: tuple[bytes, str | None, str] | FakeFile, params: Mapping[str, Any]) -> FakeFile:
        if isinstance(source, FakeFile):
            return source
        data, filename, content_type = source
        if not data:
            raise _bad("file must be non-empty")
        filename = params.get("filename") or filename
        mime = content_type if content_type and content_type != "application/octet-stream" else \
            (mimetypes.guess_type(filename or "")[0] or "application/octet-stream")
        return self.register_file(data, kind="document", filename=filename, mime_type=mime)

    def _editable(self, params: Mapping[str, Any]) -> FakeMessage:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")  # inline messages are not faked
        chat = self._target_chat(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _bad("message identifier is not specified")
        message = self.message(chat, message_id)
        if message is None or message.deleted:
            raise _bad("message to edit not found")
        if not message.from_bot:
            raise _bad("message can't be edited")
        return message

    def _apply_edit(self, message: FakeMessage, changes: Mapping[str, Any]) -> dict[str, Any]:
        current = {key: getattr(message, key) for key in changes}
        if current == dict(changes):
            raise _bad(NOT_MODIFIED.removeprefix("Bad Request: "))
        for key, value in changes.items():
            setattr(message, key, value)
        message.edit_date = int(time.time())
        message.history.append(message.snapshot())
        self._changed()
        return message.payload()

    # ----------------------------------------------------------------------------- methods

    def _get_me(self, record: FakeRequest) -> Any:
        return {**self.bot.payload(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}

    def _get_chat(self, record: FakeRequest) -> Any:
        chat = self._target_chat(record.params)
        return {**chat.payload(), "accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": {
            "unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False, "premium_subscription": False}}

    async def _get_updates(self, record: FakeRequest) -> Any:
        if self.webhook_url:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use "
                                 "deleteWebhook to delete the webhook first")
        params = record.params
        offset, limit = params.get("offset"), params.get("limit") or 100
        limit = min(max(int(limit), 1), 100)
        timeout = min(max(float(params.get("timeout") or 0), 0.0), self.max_poll_timeout)
        if params.get("allowed_updates") is not None:
            allowed = params["allowed_updates"]
            self._allowed_updates = set(allowed) if allowed else None
        self._poll_generation += 1
        generation = self._poll_generation
        self._changed()  # an older held poll is now terminated with 409
        if isinstance(offset, int) and offset != 0:
            if offset > 0:
                kept = [u for u in self._pending if u["update_id"] >= offset]
            else:
                kept = self._pending[offset:]
            self.confirmed.update(u["update_id"] for u in self._pending if u not in kept)
            self._pending = kept
        allowed = self._allowed_updates
        self._pending = [u for u in self._pending
                         if (allowed is None and not OPT_IN_UPDATES & u.keys()) or (allowed and allowed & u.keys())
                         or not (u.keys() - {"update_id"})]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._held_polls += 1
        self._changed()
        try:
            while True:
                if record.client_gone:
                    batch = []  # nobody is listening: the updates stay pending, as on Telegram
                    break
                if generation != self._poll_generation:
                    raise _ApiError(409, CONFLICT_POLL)
                batch = self._pending[:limit]
                remaining = deadline - loop.time()
                if batch or remaining <= 0 or self._stopping:
                    break
                await self._wait_changed(min(remaining, 0.1))
        finally:
            self._held_polls -= 1
            self._changed()
        for update in batch:
            self.delivered[update["update_id"]] = self.delivered.get(update["update_id"], 0) + 1
        return batch

    def _set_webhook(self, record: FakeRequest) -> Any:
        self.webhook_url = str(record.params.get("url") or "")
        if record.params.get("drop_pending_updates"):
            self._pending.clear()
        self._changed()  # a held getUpdates now gets 409
        return True

    def _delete_webhook(self, record: FakeRequest) -> Any:
        self.webhook_url = ""
        if record.params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    def _get_webhook_info(self, record: FakeRequest) -> Any:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._pending)}

    @staticmethod
    def _scope_key(params: Mapping[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    def _set_my_commands(self, record: FakeRequest) -> Any:
        commands = record.params.get("commands")
        if not isinstance(commands, list):
            raise _bad("parameter \"commands\" is required")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        for entry in commands:
            if not isinstance(entry, dict) or not re.fullmatch(r"[a-z0-9_]{1,32}", str(entry.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(entry.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.command_sets[self._scope_key(record.params)] = [dict(c) for c in commands]
        return True

    def _get_my_commands(self, record: FakeRequest) -> Any:
        return self.command_sets.get(self._scope_key(record.params), [])

    def _delete_my_commands(self, record: FakeRequest) -> Any:
        self.command_sets.pop(self._scope_key(record.params), None)
        return True

    def _send_message(self, record: FakeRequest) -> Any:
        params = record.params
        chat = self._target_chat(params)
        text, entities = _format(str(params.get("text") or ""), params.get("parse_mode"), params.get("entities"))
        if not text:
            raise _bad("message text is empty")
        if len(text) > TEXT_LIMIT:
            raise _bad("message is too long")
        message = self._new_message(chat, record.method, params, text=text, entities=entities)
        self._changed()
        return message.payload()

    def _send_photo(self, record: FakeRequest) -> Any:
        params = record.params
        chat = self._target_chat(params)
        self._check_upload_sizes(record)
        caption, entities = self._caption(params)
        files = self._photo_files(self._upload(record, params.get("photo"), "photo"))
        message = self._new_message(chat, record.method, params, photo_sizes=files, caption=caption,
                                    caption_entities=entities)
        self._changed()
        return message.payload()

    def _send_document(self, record: FakeRequest) -> Any:
        params = record.params
        chat = self._target_chat(params)
        self._check_upload_sizes(record)
        caption, entities = self._caption(params)
        file = self._document_file(self._upload(record, params.get("document"), "document"), params)
        message = self._new_message(chat, record.method, params, document_file=file, caption=caption,
                                    caption_entities=entities)
        self._changed()
        return message.payload()

    def _send_video(self, record: FakeRequest) -> Any:
        return self._send_moving(record, "video")

    def _send_animation(self, record: FakeRequest) -> Any:
        return self._send_moving(record, "animation")

    def _send_moving(self, record: FakeRequest, kind: str) -> Any:
        """sendVideo / sendAnimation: the file kept as sent, with the width, height and duration the bot gave
        (Telegram reads them off the file where it can; the fake believes the bot)."""
        params = record.params
        chat = self._target_chat(params)
        self._check_upload_sizes(record)
        caption, entities = self._caption(params)
        source = self._upload(record, params.get(kind), kind)
        if isinstance(source, FakeFile):
            file = source
        else:
            data, filename, content_type = source
            if not data:
                raise _bad("file must be non-empty")
            mime = content_type if content_type and content_type != "application/octet-stream" else \
                (mimetypes.guess_type(params.get("filename") or filename or "")[0] or "video/mp4")
            file = self.register_file(data, kind=kind, filename=params.get("filename") or filename, mime_type=mime,
                                      size=(int(params.get("width") or 0), int(params.get("height") or 0)),
                                      duration=int(params.get("duration") or 0))
        message = self._new_message(chat, record.method, params, caption=caption, caption_entities=entities,
                                    **{f"{kind}_file": file})
        self._changed()
        return message.payload()

    def _send_media_group(self, record: FakeRequest) -> Any:
        params = record.params
        chat = self._target_chat(params)
        self._check_upload_sizes(record)
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("wrong number of media in the album: must be 2-10 items")  # the fake's wording
        kinds = {item.get("type") for item in media if isinstance(item, dict)}
        if not kinds <= {"photo", "document", "video", "audio"} or ("document" in kinds and len(kinds) > 1):
            raise _bad("documents can't be mixed with other media types in an album")
        if kinds & {"video", "audio"}:
            raise _bad("only photo and document albums are faked")
        group_id = str(secrets.randbits(60))
        prepared = []
        for item in media:
            source = self._upload(record, item.get("media"), "media")
            caption, entities = self._caption(params, item)
            if item["type"] == "photo":
                prepared.append({"photo_sizes": self._photo_files(source), "caption": caption,
                                 "caption_entities": entities})
            else:
                prepared.append({"document_file": self._document_file(source, {}), "caption": caption,
                                 "caption_entities": entities})
        reply_to = self._reply_target(chat, params)
        messages = []
        for fields in prepared:
            message = FakeMessage(chat, self._next_message_id(chat), self.bot, record.method,
                                  reply_to_message=reply_to, media_group_id=group_id, **fields)
            message.history.append(message.snapshot())
            self._store[(chat.id, message.message_id)] = message
            self.messages.append(message)
            messages.append(message.payload())
        self._changed()
        return messages

    def _edit_message_text(self, record: FakeRequest) -> Any:
        params = record.params
        message = self._editable(params)
        if message.text is None:
            raise _bad("there is no text in the message to edit")
        text, entities = _format(str(params.get("text") or ""), params.get("parse_mode"), params.get("entities"))
        if not text:
            raise _bad("message text is empty")
        if len(text) > TEXT_LIMIT:
            raise _bad("MESSAGE_TOO_LONG")
        return self._apply_edit(message, {"text": text, "entities": entities, "reply_markup": self._markup(params)})

    def _edit_message_caption(self, record: FakeRequest) -> Any:
        params = record.params
        message = self._editable(params)
        if not message.photo_sizes and message.media_file is None:
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._caption(params)
        return self._apply_edit(message, {"caption": caption, "caption_entities": entities,
                                          "reply_markup": self._markup(params)})

    def _edit_message_media(self, record: FakeRequest) -> Any:
        params = record.params
        message = self._editable(params)
        self._check_upload_sizes(record)
        media = params.get("media")
        if not isinstance(media, dict) or media.get("type") not in ("photo", "document"):
            raise _bad("can't parse InputMedia JSON object")
        if message.text is not None:
            raise _bad("there is no media in the message to edit")
        source = self._upload(record, media.get("media"), "media")
        caption, entities = self._caption(params, media)
        changes: dict[str, Any] = {"caption": caption, "caption_entities": entities,
                                   "reply_markup": self._markup(params)}
        if media["type"] == "photo":
            changes.update(photo_sizes=self._photo_files(source), document_file=None)
        else:
            changes.update(photo_sizes=[], document_file=self._document_file(source, {}))
        if isinstance(source, FakeFile) and source in (message.photo_sizes[-1:] + [message.document_file]):
            del changes["photo_sizes" if media["type"] == "photo" else "document_file"]  # the same file again
        return self._apply_edit(message, changes)

    def _edit_message_reply_markup(self, record: FakeRequest) -> Any:
        message = self._editable(record.params)
        return self._apply_edit(message, {"reply_markup": self._markup(record.params)})

    def _delete_message(self, record: FakeRequest) -> Any:
        params = record.params
        chat = self._target_chat(params)
        message = self.message(chat, int(params.get("message_id") or 0))
        if message is None or message.deleted:
            raise _bad("message to delete not found")
        if chat.is_group and not message.from_bot:
            raise _bad("message can't be deleted")  # the bot is no group admin here
        message.deleted = True
        message.history.append(message.snapshot())
        self._changed()
        return True

    def _send_chat_action(self, record: FakeRequest) -> Any:
        chat = self._target_chat(record.params)
        action = record.params.get("action")
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self.chat_actions.append((record.time, chat.id, action))
        return True

    def _answer_callback_query(self, record: FakeRequest) -> Any:
        query_id = str(record.params.get("callback_query_id") or "")
        query = self._callback_queries.get(query_id)
        if query is None or query["answered"]:
            raise _bad(QUERY_TOO_OLD.removeprefix("Bad Request: "))
        if len(str(record.params.get("text") or "")) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        query["answered"] = True
        self.callback_answers.append({**record.params, "time": record.time})
        return True

    def _get_file(self, record: FakeRequest) -> Any:
        file = self.files.get(str(record.params.get("file_id") or ""))
        if file is None:
            raise _bad("invalid file_id")
        if (file.declared_size or 0) > DOWNLOAD_LIMIT:
            raise _bad("file is too big")
        return file.with_size({"file_id": file.file_id, "file_unique_id": file.file_unique_id,
                            "file_path": file.file_path})


# --------------------------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def polling(app: Any, *, timeout: int = 1) -> AsyncIterator[Any]:
    """Run a PTB Application the way easel does, in the current loop (never ``run_polling``).

    ``async with app`` (initialize: getMe), ``updater.start_polling(poll_interval=0, timeout=timeout)``
    (deleteWebhook, then long polls), ``app.start()``; on the way out ``updater.stop()`` then ``app.stop()``
    (which waits for running handlers) and shutdown.
    """
    async with app:
        await app.updater.start_polling(poll_interval=0, timeout=timeout)
        try:
            await app.start()
            try:
                yield app
            finally:
                await app.updater.stop()
                await app.stop()
        finally:
            if app.updater.running:
                await app.updater.stop()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A started FakeTelegram with the default token, users and chats."""
    async with FakeTelegram() as fake:
        yield fake
