"""A fake of Discord's REST API v10 and gateway on 127.0.0.1, good enough for the real discord.py client.

Start it, point discord.py at it and run a real client against it:

    async with FakeDiscord(heartbeat_interval_ms=1000) as fake, fake.pointed_at():
        async with running(client):                      # client.start("fake-token") in a task
            await tree.sync(guild=discord.Object(fake.guild.id))
            exchange = await fake.interact(fake.slash("imagine", {"prompt": "a cat"}))
            assert (await exchange.callback()).json["type"] == 5
            reply = await exchange.message(lambda m: m.attachments)

or use the ``fake_discord`` fixture (import it into the test module). Everything the client sends is
recorded (``fake.requests``, ``fake.gateway_frames``, ``fake.heartbeats``); every message it creates
lives in ``fake.messages``. All times are ``time.perf_counter()`` seconds, the clock discord.py's
keep-alive thread uses too. Waiting helpers are bounded by timeouts and raise ``TimeoutError`` with
the last requests in the message.

What discord.py 2.7 needs from a server, learnt from its source (the traps):

- JSON responses need ``Content-Type: application/json`` exactly: ``json_or_text`` compares the header
  with ``==``, so aiohttp's ``json_response`` (``; charset=utf-8``) makes every answer a string.
- The gateway URL carries ``compress=zlib-stream`` (``zstd-stream`` when ``zstandard`` or Python 3.14's
  ``compression.zstd`` is importable). discord.py only decompresses *binary* frames, so text frames
  always work; with zlib-stream we compress like Discord does (one ``compressobj`` per connection,
  every message ending in a ``Z_SYNC_FLUSH``). Other compressions fall back to text frames.
- ``Client.login`` calls ``GET /users/@me`` and then ``GET /oauth2/applications/@me`` (owner, verify_key,
  bot_public, ... are required keys). ``Client.connect`` goes straight to ``DEFAULT_GATEWAY``;
  only ``AutoShardedClient`` asks ``GET /gateway/bot``.
- ``on_ready`` fires ``guild_ready_timeout`` (default 2 s) after the last GUILD_CREATE; pass
  ``guild_ready_timeout=0.05`` to the client in tests.
- Interactions need ``version``, ``application_id``, ``token`` and ``attachment_size_limit``; members
  need ``flags`` and ``roles``; users ``discriminator`` and ``avatar``; messages ``type``, ``content``.
- The callback always goes out with ``?with_response=1`` and must answer 200 with a body holding
  ``interaction`` (204 breaks ``InteractionCallbackResponse``).
- A ``DynamicItem`` is only called when the clicked component is really in ``message.components``
  of the interaction, so ``click`` copies the stored message (and refuses an unknown custom_id).
- A 429 without a ``Via`` header is taken for a Cloudflare ban and raised at once, not retried.
- Slash commands synced per guild are looked up with ``data.guild_id``; ``slash`` sets it when the
  command was synced to that guild.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import mimetypes
import re
import secrets
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import yarl
from aiohttp import WSMsgType, web

from tests.bot.frontends.fake_server import FakeServer

__all__ = [
    "Exchange",
    "FakeChannel",
    "FakeDiscord",
    "FakeFile",
    "FakeGuild",
    "FakeMessage",
    "FakeRequest",
    "FakeUser",
    "Heartbeat",
    "RESET",
    "Upload",
    "fake_discord",
    "running",
    "snowflake",
]

DISCORD_EPOCH_MS = 1420070400000
MISSING: Any = object()

# Interaction callback types (InteractionResponseType).
PONG, MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE, AUTOCOMPLETE, MODAL = 1, 4, 5, 6, 7, 8, 9
RESET = 0  # the "status" of a request the fake hung up on without answering (see reset_next)
# Message flags.
EPHEMERAL, LOADING = 1 << 6, 1 << 7
# What the bot may do in a channel (sent as app_permissions): view, send, embed, attach, history, app commands.
BOT_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
SEND_PERMISSIONS = (1 << 11) | (1 << 14) | (1 << 15)
MEMBER_PERMISSIONS = BOT_PERMISSIONS
OPTION_TYPES = {"subcommand": 1, "group": 2, "string": 3, "integer": 4, "boolean": 5, "user": 6, "number": 10,
                "attachment": 11}
COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")

_last_snowflake = 0


def snowflake() -> int:
    """A new Discord-style id, increasing and time-based like Discord's."""
    global _last_snowflake
    _last_snowflake = max(_last_snowflake + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
    return _last_snowflake


def _iso(at: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.timezone.utc).isoformat()


# --------------------------------------------------------------------------------------------- world


@dataclass(eq=False)
class FakeUser:
    """A Discord user (or the bot); ``payload()`` is the user object, ``member_payload()`` the member object."""

    name: str
    id: int = field(default_factory=snowflake)
    bot: bool = False
    locale: str = "en-US"

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "username": self.name, "global_name": None if self.bot else self.name,
                "discriminator": "0", "avatar": None, "bot": self.bot, "public_flags": 0, "flags": 0}

    def member_payload(self, permissions: int | None = MEMBER_PERMISSIONS, roles: Sequence[int] = ()) -> dict[str, Any]:
        member = {"user": self.payload(), "roles": [str(r) for r in roles], "joined_at": "2024-01-01T00:00:00+00:00",
                  "deaf": False, "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None,
                  "premium_since": None, "communication_disabled_until": None}
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel (type 0) or a DM channel (type 1)."""

    name: str
    id: int = field(default_factory=snowflake)
    type: int = 0
    guild_id: int | None = None
    recipients: list[FakeUser] = field(default_factory=list)
    position: int = 0

    def payload(self) -> dict[str, Any]:
        if self.type == 1:
            return {"id": str(self.id), "type": 1, "last_message_id": None, "flags": 0,
                    "recipients": [u.payload() for u in self.recipients]}
        return {"id": str(self.id), "type": self.type, "name": self.name, "position": self.position,
                "guild_id": str(self.guild_id), "permission_overwrites": [], "nsfw": False, "parent_id": None,
                "topic": None, "last_message_id": None, "rate_limit_per_user": 0, "flags": 0}


@dataclass(eq=False)
class FakeGuild:
    """A guild with text channels, members and roles; the bot is added as a member by FakeDiscord.

    ``roles`` maps role ids to names (besides @everyone); ``member_roles`` maps user ids to the role ids
    they hold here. ``add_role`` makes both at once.
    """

    name: str
    channels: list[FakeChannel] = field(default_factory=lambda: [FakeChannel("general")])
    members: list[FakeUser] = field(default_factory=list)
    id: int = field(default_factory=snowflake)
    roles: dict[int, str] = field(default_factory=dict)
    member_roles: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for position, channel in enumerate(self.channels):
            channel.guild_id, channel.position = self.id, position

    def add_role(self, name: str, *holders: FakeUser) -> int:
        """A new role held by ``holders``; returns its id. (Holders must be members to be seen as such.)"""
        role_id = snowflake()
        self.roles[role_id] = name
        for user in holders:
            self.member_roles.setdefault(user.id, []).append(role_id)
        return role_id

    def member(self, user: FakeUser, permissions: int | None = MEMBER_PERMISSIONS) -> dict[str, Any]:
        """``user``'s member object here, with the roles they hold."""
        return user.member_payload(permissions, self.member_roles.get(user.id, ()))

    @staticmethod
    def _role(role_id: int, name: str, position: int) -> dict[str, Any]:
        return {"id": str(role_id), "name": name, "permissions": str(MEMBER_PERMISSIONS), "position": position,
                "color": 0, "colors": {"primary_color": 0}, "hoist": False, "managed": False,
                "mentionable": False, "icon": None, "unicode_emoji": None, "flags": 0}

    def payload(self) -> dict[str, Any]:
        """The GUILD_CREATE payload: minimal but everything Guild._from_data and its channels/members read."""
        owner = next((m for m in self.members if not m.bot), self.members[0] if self.members else None)
        roles = [self._role(self.id, "@everyone", 0)]
        roles += [self._role(role_id, name, position) for position, (role_id, name) in enumerate(self.roles.items(), 1)]
        return {
            "id": str(self.id), "name": self.name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": str(owner.id) if owner else None,
            "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
            "system_channel_id": str(self.channels[0].id) if self.channels else None, "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "vanity_url_code": None, "features": [], "roles": roles, "emojis": [], "stickers": [],
            "application_id": None, "joined_at": "2024-01-01T00:00:00+00:00", "large": False,
            "unavailable": False, "member_count": len(self.members),
            "channels": [{k: v for k, v in c.payload().items() if k != "guild_id"} for c in self.channels],
            "members": [self.member(m, permissions=None) for m in self.members],
            "threads": [], "presences": [], "voice_states": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [], "premium_progress_bar_enabled": False,
        }


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request: ``files[n]`` (index n), its filename, content type and bytes."""

    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FakeFile:
    """An attachment: uploaded by the bot (on a message) or registered by a test (for a slash option)."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    width: int | None = None
    height: int | None = None
    declared_size: int | None = None  # what the attachment object says, when it lies
    chunked: bool = False  # served without a Content-Length, in chunks, like a stream of unknown length

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        size = self.size if self.declared_size is None else self.declared_size
        out = {"id": str(self.id), "filename": self.filename, "size": size, "url": self.url,
               "proxy_url": self.url, "content_type": self.content_type}
        if self.description is not None:
            out["description"] = self.description
        if self.width is not None:
            out["width"], out["height"] = self.width, self.height
        return out


@dataclass
class FakeRequest:
    """One HTTP request as the fake received it (path without the /api/v10 prefix) and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # the JSON body, or the multipart payload_json; None when neither
    files: list[Upload]
    time: float  # perf_counter when it arrived
    status: int = 0
    response: Any = None
    raw: bytes = b""

    def __repr__(self) -> str:
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"<FakeRequest {self.method} {self.path} -> {self.status}{files}>"


@dataclass
class FakeMessage:
    """A message the bot made, in a channel or through an interaction; kept current through edits."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    via: str  # "callback" (type 4), "deferred" (type 5), "followup", "channel", "synthetic" (click on unknown)
    token: str | None = None
    interaction_id: int | None = None
    interaction_type: int | None = None
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeFile] = field(default_factory=list)
    flags: int = 0
    message_reference: dict[str, Any] | None = None
    created: float = field(default_factory=time.perf_counter)
    edited: float | None = None
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one snapshot per state, first = created

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def custom_ids(self) -> list[str]:
        """Every custom_id in the components, nested ones included."""
        found: list[str] = []

        def walk(items: Sequence[Mapping[str, Any]]) -> None:
            for item in items:
                if "custom_id" in item:
                    found.append(item["custom_id"])
                walk(item.get("components", []))
                if isinstance(item.get("accessory"), Mapping):
                    walk([item["accessory"]])

        walk(self.components)
        return found

    def snapshot(self) -> dict[str, Any]:
        return {"time": time.perf_counter(), "content": self.content, "flags": self.flags,
                "embeds": json.loads(json.dumps(self.embeds)), "components": json.loads(json.dumps(self.components)),
                "attachments": [(a.filename, a.size) for a in self.attachments]}

    def payload(self, app_id: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(self.id), "channel_id": str(self.channel_id), "author": self.author.payload(),
            "content": self.content, "timestamp": _iso(), "edited_timestamp": _iso() if self.edited else None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments], "embeds": self.embeds, "pinned": False,
            "type": 20 if self.interaction_type == 2 else 0, "flags": self.flags, "components": self.components,
        }
        if self.guild_id is not None:
            out["guild_id"] = str(self.guild_id)
        if self.token is not None:
            out["webhook_id"] = str(app_id)
            out["application_id"] = str(app_id)
        if self.message_reference is not None:
            out["message_reference"] = self.message_reference
        return out


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat (op 1) as it arrived: perf_counter time, the sequence it carried, which connection."""

    time: float
    seq: int | None
    connection: int


class Exchange:
    """One interaction pushed to the client; await what the client answers to it."""

    def __init__(self, fake: FakeDiscord, payload: dict[str, Any]) -> None:
        self.fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.channel_id = int(payload["channel_id"])
        self.guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.clicked_message_id = int(payload["message"]["id"]) if "message" in payload else None
        self.sent_at: float = 0.0
        self.response_type: int | None = None  # the first accepted callback's type
        self.original_id: int | None = self.clicked_message_id

    def __repr__(self) -> str:
        return f"<Exchange id={self.id} type={self.type} response_type={self.response_type}>"

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request that carried this interaction's token."""
        return [r for r in self.fake.requests if f"/{self.token}" in r.path]

    @property
    def original(self) -> FakeMessage | None:
        return self.fake.message_by_id(self.original_id) if self.original_id else None

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response (or the clicked message after a type 6/7) and every followup, oldest first."""
        return [m for m in self.fake.messages if m.token == self.token or m.id == self.original_id]

    @property
    def followups(self) -> list[FakeMessage]:
        return [m for m in self.fake.messages if m.token == self.token and m.via == "followup"]

    async def callback(self, timeout: float = 5.0) -> FakeRequest:
        """The first POST .../callback for this interaction (whatever status it got)."""
        return await self.fake.wait_for_request(
            lambda r: r.method == "POST" and r.path == f"/interactions/{self.id}/{self.token}/callback",
            timeout, what=f"the callback of interaction {self.id}")

    async def message(self, predicate: Callable[[FakeMessage], bool] | None = None,
                      timeout: float = 5.0) -> FakeMessage:
        """The first message of this interaction (original or followup) that satisfies ``predicate`` now."""
        return await self.fake._wait_until(
            lambda: next((m for m in self.messages if predicate is None or predicate(m)), None),
            timeout, f"a message of interaction {self.id}")


class _Reply(Exception):
    """Raised by a route to answer with an error (or any status) at once."""

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def _error(status: int, code: int, message: str) -> _Reply:
    return _Reply(status, {"message": message, "code": code})


def _check_components(body: Mapping[str, Any]) -> None:
    """Discord's limits on a message's (non-V2) components: at most 5 action rows of 1-5 buttons each, every
    custom_id 1-100 characters and unique in the message, labels at most 80; else 400 Invalid Form Body."""
    rows = body.get("components") or []
    errors: dict[str, str] = {}
    if len(rows) > 5:
        errors["components"] = "BASE_TYPE_MAX_LENGTH: Must be 5 or fewer in length."
    seen: set[str] = set()
    for r, row in enumerate(rows):
        items = row.get("components") or []
        if row.get("type") == 1 and not 1 <= len(items) <= 5:
            errors[f"components.{r}.components"] = "BASE_TYPE_BAD_LENGTH: Must be between 1 and 5 in length."
        for i, item in enumerate(items):
            where = f"components.{r}.components.{i}"
            custom_id = item.get("custom_id")
            if custom_id is not None and not 1 <= len(custom_id) <= 100:
                errors[f"{where}.custom_id"] = "BASE_TYPE_BAD_LENGTH: Must be between 1 and 100 in length."
            elif custom_id is not None and custom_id in seen:
                errors[f"{where}.custom_id"] = "COMPONENT_CUSTOM_ID_DUPLICATED: Component custom id cannot be duplicated"
            seen.add(custom_id)
            if len(item.get("label") or "") > 80:
                errors[f"{where}.label"] = "BASE_TYPE_MAX_LENGTH: Must be 80 or fewer in length."
    if errors:
        raise _Reply(400, {"message": "Invalid Form Body", "code": 50035, "errors": _nest_errors(errors)})


def _raising(reply: _Reply) -> Callable[[Any, Any], Any]:
    def route(record: Any, match: Any) -> Any:
        raise reply

    return route


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int
    matching: Callable[[FakeRequest], bool] | None = None


@dataclass
class _Session:
    id: str
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # dispatches, replayed after a RESUME


class _Connection:
    """One gateway websocket; sends in order (zlib-stream needs it) under a lock."""

    def __init__(self, ws: web.WebSocketResponse, index: int, compression: str | None) -> None:
        self.ws, self.index, self.compression = ws, index, compression
        self.zlib = zlib.compressobj() if compression == "zlib-stream" else None
        self.lock = asyncio.Lock()
        self.session: _Session | None = None
        self.ready = False

    async def send(self, payload: Mapping[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        async with self.lock:
            if self.zlib is not None:
                await self.ws.send_bytes(self.zlib.compress(text.encode()) + self.zlib.flush(zlib.Z_SYNC_FLUSH))
            else:
                await self.ws.send_str(text)


class _Pointing:
    """Sets discord.http.Route.BASE and DiscordWebSocket.DEFAULT_GATEWAY; puts the old values back on exit."""

    def __init__(self, api_base: str, gateway_url: str) -> None:
        self.api_base, self.gateway_url = api_base, gateway_url
        self.old: tuple[str, yarl.URL] | None = None

    def __enter__(self) -> _Pointing:
        import discord.gateway
        import discord.http

        self.old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        return self

    def __exit__(self, *exc: object) -> None:
        import discord.gateway
        import discord.http

        assert self.old is not None
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self.old

    async def __aenter__(self) -> _Pointing:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


# --------------------------------------------------------------------------------------------- the fake


class FakeDiscord(FakeServer):
    """Discord's REST API v10 and gateway on 127.0.0.1 (random free port), recording what the client does.

    Constructor arguments (all keyword):
      heartbeat_interval_ms: sent in HELLO (Discord sends 41250; tests want ~300-1000).
      token: the bot token to accept (``None`` accepts any); a wrong one gets 401 / gateway close 4004.
      application_id, bot_name: the application; the bot user has the application's id.
      guilds: the guilds sent as GUILD_CREATE after READY; default one guild "easel test" with
        channels #general and #art and members alice and bob (``fake.alice``, ``fake.bob``).
      compress: honour ``compress=zlib-stream`` on the gateway URL (False: always text frames).
      attachment_size_limit: sent in every interaction; bigger uploads get 413 / 40005 like Discord.
      application_flags: READY's ``application.flags`` and the app info's ``flags``.
    """

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 41250,
        token: str | None = None,
        application_id: int | None = None,
        bot_name: str = "easel",
        guilds: Sequence[FakeGuild] | None = None,
        compress: bool = True,
        attachment_size_limit: int = 10 * 1024 * 1024,
        application_flags: int = 0,
    ) -> None:
        super().__init__()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.token = token
        self.application_id = application_id or snowflake()
        self.bot = FakeUser(bot_name, id=self.application_id, bot=True)
        if guilds is None:
            guilds = [FakeGuild("easel test", channels=[FakeChannel("general"), FakeChannel("art")],
                                members=[FakeUser("alice"), FakeUser("bob")])]
        self.guilds: list[FakeGuild] = list(guilds)
        for guild in self.guilds:
            if self.bot not in guild.members:
                guild.members.append(self.bot)
        humans = list({m.id: m for g in self.guilds for m in g.members if not m.bot}.values())
        # The first two human members (made up when the guilds have fewer): who runs commands by default.
        self.alice: FakeUser = humans[0] if humans else FakeUser("alice")
        self.bob: FakeUser = humans[1] if len(humans) > 1 else FakeUser("bob")
        self.compress = compress
        self.attachment_size_limit = attachment_size_limit
        self.application_flags = application_flags
        self.ack_heartbeats = True  # set False to play a zombied gateway

        # Recorded data.
        self.requests: list[FakeRequest] = []
        self.messages: list[FakeMessage] = []
        self.heartbeats: list[Heartbeat] = []
        self.gateway_frames: list[tuple[float, int, Any]] = []  # (time, op, d) of every frame the client sent
        self.identifies: list[dict[str, Any]] = []
        self.gateway_connections: list[dict[str, str]] = []  # each connection's query: v, encoding, compress
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> synced commands
        self.exchanges: dict[str, Exchange] = {}  # token -> interaction pushed

        self._messages: dict[int, FakeMessage] = {}
        self._files: dict[str, FakeFile] = {}  # URL path -> file
        self.served: dict[int, int] = {}  # chunked file id -> bytes written before it ended or the client left
        self._dm_channels: dict[int, FakeChannel] = {}
        self._expired: dict[str, tuple[int, dict[str, Any]]] = {}
        self._forbidden: set[int] = set()
        self._failures: list[_Failure] = []
        self._sessions: dict[str, _Session] = {}
        self._connections: list[_Connection] = []
        self._connection_count = 0
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._route_table = self._routes()

    # ----------------------------------------------------------------------------- lifecycle

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def guild(self) -> FakeGuild:
        return self.guilds[0]

    @property
    def channel(self) -> FakeChannel:
        """The first text channel of the first guild."""
        return next(c for c in self.guild.channels if c.type == 0)

    @property
    def user(self) -> FakeUser:
        """The default user who runs commands and clicks buttons."""
        return self.alice

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_get("/", self._gateway)
        app.router.add_route("*", "/attachments/{tail:.*}", self._attachment)
        app.router.add_route("*", "/api/{version:v\\d+}/{tail:.*}", self._rest)
        return app

    async def stop(self) -> None:
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.ws.close(code=1001, message=b"fake discord stopping"), 2.0)
        await super().stop()

    def pointed_at(self) -> _Pointing:
        """Point discord.py's REST base and default gateway at this fake; restore them afterwards.

        A context manager usable with ``with`` or ``async with`` (so it fits in one ``async with`` line).
        """
        return _Pointing(self.api_base, self.gateway_url)

    # ----------------------------------------------------------------------------- test controls

    def expire(self, token: str, *, status: int = 401, code: int = 50027,
               message: str = "Invalid Webhook Token") -> None:
        """From now on, webhook and callback calls with this interaction token fail like Discord's."""
        self._expired[token] = (status, {"message": message, "code": code})

    def forbid_channel(self, channel_id: int) -> None:
        """POSTs to this channel answer 403 Missing Permissions; interactions there lack send permissions."""
        self._forbidden.add(int(channel_id))

    def fail_next(self, method: str, path_regex: str, status: int, body: Any = None, *,
                  retry_after: float = 0.05, is_global: bool = False, times: int = 1,
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer the next ``times`` requests matching (method or "*", re.search on the path) with ``status``.

        429 gets Discord's body (retry_after, global) and X-RateLimit-* headers, plus ``Via`` (discord.py
        treats a 429 without it as a Cloudflare ban and does not retry); 5xx gets a Discord-like body.
        """
        extra: dict[str, str] = {}
        if status == 429:
            body = body if body is not None else {"message": "You are being rate limited.",
                                                  "retry_after": retry_after, "global": is_global}
            extra = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                     "X-RateLimit-Reset-After": f"{retry_after:.3f}", "X-RateLimit-Bucket": "fake-bucket",
                     "X-RateLimit-Scope": "global" if is_global else "user",
                     "Retry-After": str(max(1, int(retry_after + 0.999))), "Via": "1.1 google"}
            if is_global:
                extra["X-RateLimit-Global"] = "true"
        elif body is None:
            body = {"message": f"{status}: Internal Server Error" if status >= 500 else f"{status}: Error", "code": 0}
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, body,
                                       {**extra, **(headers or {})}, times))

    def reset_next(self, method: str, path_regex: str, *, times: int = 1,
                   matching: Callable[[FakeRequest], bool] | None = None) -> None:
        """Hang up on the next ``times`` matching requests without answering, as a dropped connection does
        (aiohttp raises ``ServerDisconnectedError``, which is no ``discord.HTTPException``); recorded with
        status ``RESET`` (0). ``matching`` narrows it further, e.g. to requests that carry files."""
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), RESET, None, {}, times, matching))

    def attachment(self, filename: str, data: bytes, content_type: str | None = None, *,
                   description: str | None = None, declared_size: int | None = None,
                   chunked: bool = False) -> FakeFile:
        """Register bytes served at a /attachments/ URL; pass the result as a slash option value.

        ``declared_size`` makes the attachment object claim another size than the bytes served;
        ``chunked`` serves them without a Content-Length, 64 KiB at a time (``fake.served`` counts
        what went out before the client hung up).
        """
        file = self._store_file(filename, data, content_type, channel_id=0, description=description)
        file = dataclasses.replace(file, declared_size=declared_size, chunked=chunked)
        self._files[yarl.URL(file.url).path] = file
        return file

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        if user.id not in self._dm_channels:
            self._dm_channels[user.id] = FakeChannel(f"dm-{user.name}", type=1, recipients=[user])
        return self._dm_channels[user.id]

    def channel_by_id(self, channel_id: int) -> FakeChannel | None:
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel
        return next((c for c in self._dm_channels.values() if c.id == channel_id), None)

    def message_by_id(self, message_id: int | None) -> FakeMessage | None:
        return self._messages.get(int(message_id)) if message_id is not None else None

    def command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """The synced command called ``name`` (guild command when guild_id is given)."""
        return next((c for c in self.commands.get(guild_id, []) if c["name"] == name), None)

    def heartbeat_delays(self) -> list[float]:
        """For consecutive heartbeats on one connection: the gap between them minus the interval (seconds)."""
        interval = self.heartbeat_interval_ms / 1000
        delays = []
        for _, beats in itertools.groupby(self.heartbeats, key=lambda h: h.connection):
            times = [h.time for h in beats]
            delays += [b - a - interval for a, b in zip(times, times[1:])]
        return delays

    # ----------------------------------------------------------------------------- waiting

    async def wait_for_request(self, predicate: Callable[[FakeRequest], bool], timeout: float = 5.0, *,
                               start: int = 0, what: str = "a matching request") -> FakeRequest:
        """The first answered request (from index ``start`` of ``fake.requests``) that satisfies ``predicate``."""
        return await self._wait_until(lambda: next((r for r in self.requests[start:] if predicate(r)), None),
                                      timeout, what)

    async def wait_for_message(self, predicate: Callable[[FakeMessage], bool], timeout: float = 5.0) -> FakeMessage:
        """The first message in ``fake.messages`` that satisfies ``predicate`` now (edits count)."""
        return await self._wait_until(lambda: next((m for m in self.messages if predicate(m)), None),
                                      timeout, "a matching message")

    async def wait_for_heartbeats(self, count: int, timeout: float = 5.0) -> list[Heartbeat]:
        await self._wait_until(lambda: len(self.heartbeats) >= count, timeout, f"{count} heartbeats")
        return list(self.heartbeats)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Until a client has identified and been sent READY and its GUILD_CREATEs."""
        await self._wait_until(lambda: self._live(), timeout, "a client to IDENTIFY")

    # ----------------------------------------------------------------------------- gateway

    def _live(self) -> _Connection | None:
        return next((c for c in reversed(self._connections) if c.ready and not c.ws.closed), None)

    async def dispatch(self, event: str, data: Any) -> int:
        """Send a dispatch (op 0) on the live gateway connection; returns its sequence number."""
        await self.wait_ready()
        connection = self._live()
        assert connection is not None and connection.session is not None
        connection.session.seq += 1
        seq = connection.session.seq
        frame = {"op": 0, "t": event, "s": seq, "d": data}
        connection.session.sent.append(frame)
        await connection.send(frame)
        return seq

    async def interact(self, payload: dict[str, Any]) -> Exchange:
        """Push an INTERACTION_CREATE; the returned Exchange awaits the client's answer."""
        exchange = Exchange(self, payload)
        self.exchanges[exchange.token] = exchange
        exchange.sent_at = time.perf_counter()
        await self.dispatch("INTERACTION_CREATE", payload)
        return exchange

    async def send_reconnect(self) -> None:
        """Ask the client to reconnect (op 7); it comes back with RESUME and gets what it missed replayed."""
        connection = self._live()
        if connection is not None:
            connection.ready = False  # nothing more goes out on it; interact() waits for the resumed one
            await connection.send({"op": 7, "d": None, "s": None, "t": None})

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse(compress=False, timeout=2.0, max_msg_size=0)
        await ws.prepare(request)
        wanted = request.query.get("compress")
        self.gateway_connections.append(dict(request.query))
        self._connection_count += 1
        connection = _Connection(ws, self._connection_count, wanted if self.compress else None)
        self._connections.append(connection)
        try:
            if request.query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Only encoding=json is faked")
                return ws
            await connection.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms,
                                                   "_trace": ["fake-discord"]}, "s": None, "t": None})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                frame = json.loads(msg.data)
                await self._on_frame(connection, frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._connections.remove(connection)
            self._changed()
        return ws

    async def _on_frame(self, connection: _Connection, frame: dict[str, Any]) -> None:
        op, d = frame.get("op"), frame.get("d")
        now = time.perf_counter()
        self.gateway_frames.append((now, op, d))
        if op == 1:
            self.heartbeats.append(Heartbeat(now, d, connection.index))
            self._changed()
            if self.ack_heartbeats:
                await connection.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            self.identifies.append(d)
            if self.token is not None and d.get("token") != self.token:
                await connection.ws.close(code=4004, message=b"Authentication failed.")
                return
            session = _Session(secrets.token_hex(16))
            self._sessions[session.id] = session
            connection.session = session
            ready = {
                "v": 10, "user": {**self.bot.payload(), "verified": True, "mfa_enabled": False, "email": None},
                "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
                "session_id": session.id, "resume_gateway_url": self.gateway_url, "session_type": "normal",
                "application": {"id": str(self.application_id), "flags": self.application_flags},
                "private_channels": [], "relationships": [], "presences": [], "geo_ordered_rtc_regions": [],
                "user_settings": {}, "auth": {}, "_trace": ["fake-discord"],
            }
            if d.get("shard") is not None:
                ready["shard"] = d["shard"]
            for event, data in [("READY", ready)] + [("GUILD_CREATE", g.payload()) for g in self.guilds]:
                session.seq += 1
                await connection.send({"op": 0, "t": event, "s": session.seq, "d": data})
            connection.ready = True
            self._changed()
        elif op == 6:
            session = self._sessions.get(d.get("session_id"))
            if session is None or (self.token is not None and d.get("token") != self.token):
                await connection.send({"op": 9, "d": False, "s": None, "t": None})
                return
            connection.session = session
            for missed in [f for f in session.sent if f["s"] > (d.get("seq") or 0)]:
                await connection.send(missed)
            session.seq += 1
            await connection.send({"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake-discord"]}})
            connection.ready = True
            self._changed()
        elif op == 8 and connection.session is not None:
            guild = next((g for g in self.guilds if str(g.id) == str(d.get("guild_id"))), None)
            members = [guild.member(m, permissions=None) for m in guild.members] if guild else []
            chunk = {"guild_id": d.get("guild_id"), "members": members, "chunk_index": 0, "chunk_count": 1,
                     "not_found": [], "presences": []}
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            connection.session.seq += 1
            await connection.send({"op": 0, "t": "GUILD_MEMBERS_CHUNK", "s": connection.session.seq, "d": chunk})

    # ----------------------------------------------------------------------------- interaction builders

    def _place(self, user: FakeUser | None, channel_id: int | None,
               guild_id: Any) -> tuple[FakeUser, FakeChannel, FakeGuild | None]:
        user = user or self.user
        if channel_id is not None:
            channel = self.channel_by_id(int(channel_id))
            if channel is None:
                raise ValueError(f"unknown channel {channel_id}")
        elif guild_id is None:
            channel = self.dm_channel(user)
        elif guild_id is MISSING:
            channel = self.channel
        else:
            guild = next(g for g in self.guilds if g.id == int(guild_id))
            channel = next(c for c in guild.channels if c.type == 0)
        guild = next((g for g in self.guilds if g.id == channel.guild_id), None)
        return user, channel, guild

    def _base_interaction(self, kind: int, user: FakeUser, channel: FakeChannel, guild: FakeGuild | None,
                          data: dict[str, Any], locale: str | None) -> dict[str, Any]:
        app_permissions = BOT_PERMISSIONS & ~(SEND_PERMISSIONS if channel.id in self._forbidden else 0)
        payload: dict[str, Any] = {
            "id": str(snowflake()), "application_id": str(self.application_id), "type": kind, "data": data,
            "token": f"itoken-{secrets.token_urlsafe(24)}", "version": 1,
            "channel_id": str(channel.id), "channel": channel.payload(),
            "app_permissions": str(app_permissions), "locale": locale or user.locale,
            "entitlements": [], "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit,
        }
        if guild is not None:
            payload.update(guild_id=str(guild.id), guild_locale="en-US", context=0,
                           guild={"id": str(guild.id), "locale": "en-US", "features": []},
                           member=guild.member(user), authorizing_integration_owners={"0": str(guild.id)})
        else:
            payload.update(user=user.payload(), context=1, authorizing_integration_owners={"0": "0"})
        return payload

    def slash(self, name: str, options: Mapping[str, Any] | None = None, *, user: FakeUser | None = None,
              channel_id: int | None = None, guild_id: Any = MISSING,
              attachments: Mapping[str, FakeFile | tuple[Any, ...]] | None = None,
              locale: str | None = None) -> dict[str, Any]:
        """An APPLICATION_COMMAND (type 2) interaction payload for ``/name`` (``"group sub"`` for subcommands).

        Option types come from the synced command when there is one, else from the Python value:
        str 3, int 4, bool 5, FakeUser 6, float 10, FakeFile 11 (see ``fake.attachment``). ``attachments``
        maps option names to FakeFiles or (filename, bytes[, content_type]) tuples. ``guild_id=None`` with no
        channel makes it a DM; by default it runs in ``fake.channel`` as ``fake.user``.
        """
        user, channel, guild = self._place(user, channel_id, guild_id)
        values: dict[str, Any] = dict(options or {})
        for option_name, value in (attachments or {}).items():
            values[option_name] = value if isinstance(value, FakeFile) else self.attachment(*value)
        top, *path = name.split()
        command_guild = guild.id if guild is not None and self.command(top, guild.id) else None
        synced = self.command(top, command_guild)
        schema = synced.get("options", []) if synced else []
        resolved: dict[str, dict[str, Any]] = {}
        leaf_options = []
        for option_name, value in values.items():
            declared = next((o for o in schema_at(schema, path) if o["name"] == option_name), None)
            kind = declared["type"] if declared else _option_type(value)
            if isinstance(value, FakeFile):
                resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
                value = str(value.id)
            elif isinstance(value, FakeUser):
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                member = value.member_payload()
                member.pop("user")
                resolved.setdefault("members", {})[str(value.id)] = member
                value = str(value.id)
            leaf_options.append({"name": option_name, "type": kind, "value": value})
        nested = leaf_options
        for depth in range(len(path) - 1, -1, -1):
            nested = [{"name": path[depth], "type": 1 if depth == len(path) - 1 else 2, "options": nested}]
        key = (command_guild, top, 1)
        command_id = int(synced["id"]) if synced else self._command_ids.setdefault(key, snowflake())
        data: dict[str, Any] = {"id": str(command_id), "name": top, "type": 1, "options": nested}
        if command_guild is not None:
            data["guild_id"] = str(command_guild)
        if resolved:
            data["resolved"] = resolved
        return self._base_interaction(2, user, channel, guild, data, locale)

    def click(self, custom_id: str, message_id: int, *, user: FakeUser | None = None,
              channel_id: int | None = None, component_type: int = 2, values: Sequence[str] | None = None,
              locale: str | None = None) -> dict[str, Any]:
        """A MESSAGE_COMPONENT (type 3) interaction: ``user`` clicks ``custom_id`` on message ``message_id``.

        The message object is the stored one (it must carry that custom_id, as on Discord; otherwise
        discord.py drops DynamicItem clicks silently). For a message the fake never saw (a restart), a
        synthetic bot message holding just that button is made and stored.
        """
        message = self.message_by_id(message_id)
        if message is None:
            channel = self.channel_by_id(int(channel_id)) if channel_id is not None else self.channel
            assert channel is not None
            message = FakeMessage(id=int(message_id), channel_id=channel.id, guild_id=channel.guild_id,
                                  author=self.bot, via="synthetic",
                                  components=[{"type": 1, "components": [
                                      {"type": component_type, "custom_id": custom_id, "style": 1, "label": "?"}
                                      if component_type == 2 else
                                      {"type": component_type, "custom_id": custom_id, "options": []}]}])
            message.history.append(message.snapshot())
            self._add_message(message)
        elif custom_id not in message.custom_ids:
            raise ValueError(f"message {message_id} has no component {custom_id!r} (it has {message.custom_ids})")
        user, channel, guild = self._place(user, message.channel_id, MISSING)
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        payload = self._base_interaction(3, user, channel, guild, data, locale)
        payload["message"] = message.payload(self.application_id)
        return payload

    # ----------------------------------------------------------------------------- REST plumbing

    async def _read(self, request: web.Request) -> tuple[Any, list[Upload], bytes]:
        content_type = request.content_type
        if content_type.startswith("multipart/"):
            body: Any = None
            uploads: list[Upload] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = part.name or ""
                data = await part.read(decode=False)
                if name == "payload_json":
                    body = json.loads(data)
                    continue
                match = re.fullmatch(r"files?\[(\d+)\]|file(\d*)", name)
                index = int(next((g for g in match.groups() if g), 0)) if match else len(uploads)
                uploads.append(Upload(index, part.filename or name, part.headers.get("Content-Type", ""), data))
            return body, uploads, b""
        raw = await request.read()
        if content_type == "application/json" and raw:
            return json.loads(raw), [], raw
        return None, [], raw

    @staticmethod
    def _respond(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> web.Response:
        if body is None:
            return web.Response(status=status, headers=headers)
        # Exactly "application/json": discord.py compares the header with ==, a charset makes it a string.
        return web.Response(status=status, body=json.dumps(body).encode(),
                            headers={"Content-Type": "application/json", **(headers or {})})

    def _injected(self, record: FakeRequest) -> _Reply | None:
        for failure in self._failures:
            if failure.method in ("*", record.method) and failure.path.search(record.path) \
                    and (failure.matching is None or failure.matching(record)):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return _Reply(failure.status, failure.body, failure.headers)
        return None

    async def _record(self, request: web.Request, path: str,
                      route: Callable[[FakeRequest, re.Match[str]], Any] | None,
                      match: re.Match[str] | None) -> web.Response:
        arrived = time.perf_counter()
        body, uploads, raw = await self._read(request)
        record = FakeRequest(request.method, path, dict(request.query), dict(request.headers), body, uploads,
                             arrived, raw=raw)
        headers: dict[str, str] = {}
        try:
            injected = self._injected(record)
            if injected is not None and injected.status == RESET:
                # Hang up without an answer: the client sees its connection reset (ServerDisconnectedError).
                record.status = RESET
                self.requests.append(record)
                self._changed()
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=204)
            if injected is not None:
                raise injected
            if route is None or match is None:
                raise _error(404, 0, "404: Not Found")
            status, response = 200, route(record, match)
            if isinstance(response, tuple):
                status, response = response
        except _Reply as reply:
            status, response, headers = reply.status, reply.body, reply.headers
        record.status, record.response = status, response
        self.requests.append(record)
        self._changed()
        if isinstance(response, (bytes, bytearray)):
            return web.Response(status=status, body=bytes(response), headers=headers)
        return self._respond(status, response, headers)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        route, match = None, None
        for methods, pattern, handler in self._route_table:
            found = pattern.fullmatch(path)
            if found:
                if request.method in methods:
                    route, match = handler, found
                    break
                route, match = _raising(_error(405, 0, "405: Method Not Allowed")), found
        if self.token is not None and request.headers.get("Authorization", "Bot " + self.token) != "Bot " + self.token:
            route = _raising(_error(401, 0, "401: Unauthorized"))
        return await self._record(request, path, route, match)

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        file = self._files.get(request.path)
        if file is not None and file.chunked and request.method == "GET":
            return await self._stream(request, file)

        def serve(record: FakeRequest, match: re.Match[str]) -> Any:
            if file is None:
                raise _error(404, 0, "404: Not Found")
            raise _Reply(200, file.data, {"Content-Type": file.content_type})

        return await self._record(request, request.path, serve, re.match(".*", request.path))

    async def _stream(self, request: web.Request, file: FakeFile) -> web.StreamResponse:
        """Serve a file in 64 KiB chunks without a Content-Length; stop when the client hangs up.
        (fail_next and reset_next do not reach these.)"""
        self.requests.append(FakeRequest(request.method, request.path, dict(request.query), dict(request.headers),
                                         None, [], time.perf_counter(), status=200))
        self._changed()
        response = web.StreamResponse(headers={"Content-Type": file.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.served[file.id] = 0
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(file.data), 1 << 16):
                chunk = file.data[start:start + (1 << 16)]
                await response.write(chunk)
                self.served[file.id] += len(chunk)
            await response.write_eof()
        return response

    def _routes(self) -> list[tuple[tuple[str, ...], re.Pattern[str], Callable[[FakeRequest, re.Match[str]], Any]]]:
        table = [
            (("GET",), r"/users/@me", lambda r, m: {**self.bot.payload(), "verified": True, "mfa_enabled": False}),
            (("GET",), r"/users/(?P<user_id>\d+)", self._get_user),
            (("POST",), r"/users/@me/channels", self._open_dm),
            (("GET",), r"/guilds/(?P<guild>\d+)/members/(?P<user_id>\d+)", self._get_member),
            (("GET",), r"/(?:oauth2/)?applications/@me", self._get_application),
            (("GET",), r"/gateway(?P<bot>/bot)?", self._get_gateway),
            (("GET", "PUT", "POST"), r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands",
             self._commands),
            (("GET", "PATCH", "DELETE"),
             r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands/(?P<command>\d+)", self._command),
            (("POST",), r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback),
            (("POST",), r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._followup),
            (("GET", "PATCH", "DELETE"), r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)",
             self._webhook_message),
            (("GET",), r"/channels/(?P<channel>\d+)", self._get_channel),
            (("POST",), r"/channels/(?P<channel>\d+)/messages", self._post_message),
            (("GET", "PATCH", "DELETE"), r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)",
             self._channel_message),
            (("POST",), r"/channels/(?P<channel>\d+)/typing", lambda r, m: (204, None)),
        ]
        return [(methods, re.compile(pattern), handler) for methods, pattern, handler in table]

    # ----------------------------------------------------------------------------- REST routes

    def _get_user(self, record: FakeRequest, match: re.Match[str]) -> Any:
        user_id = int(match["user_id"])
        for user in [self.bot] + [m for g in self.guilds for m in g.members]:
            if user.id == user_id:
                return user.payload()
        raise _error(404, 10013, "Unknown User")

    def _open_dm(self, record: FakeRequest, match: re.Match[str]) -> Any:
        recipient = str((record.json or {}).get("recipient_id"))
        user = next((u for g in self.guilds for u in g.members if str(u.id) == recipient and not u.bot), None)
        if user is None:
            raise _error(400, 50007, "Cannot send messages to this user")
        return self.dm_channel(user).payload()

    def _get_member(self, record: FakeRequest, match: re.Match[str]) -> Any:
        guild = next((g for g in self.guilds if g.id == int(match["guild"])), None)
        if guild is None:
            raise _error(404, 10004, "Unknown Guild")
        user = next((u for u in guild.members if u.id == int(match["user_id"])), None)
        if user is None:
            raise _error(404, 10007, "Unknown Member")
        return guild.member(user, permissions=None)

    def _get_application(self, record: FakeRequest, match: re.Match[str]) -> Any:
        return {"id": str(self.application_id), "name": self.bot.name, "icon": None, "description": "",
                "summary": "", "type": None, "bot_public": True, "bot_require_code_grant": False,
                "verify_key": "0" * 64, "flags": self.application_flags, "owner": self.alice.payload(),
                "team": None, "bot": self.bot.payload(), "rpc_origins": [], "tags": [], "redirect_uris": [],
                "interactions_endpoint_url": None, "approximate_guild_count": len(self.guilds),
                "integration_types_config": {"0": {}}}

    def _get_gateway(self, record: FakeRequest, match: re.Match[str]) -> Any:
        if not match["bot"]:
            return {"url": self.gateway_url}
        return {"url": self.gateway_url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86400000,
                                        "max_concurrency": 1}}

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise _error(403, 50001, "Missing Access")

    def _command_payload(self, entry: Mapping[str, Any], guild_id: int | None, errors: dict[str, Any],
                         prefix: str) -> dict[str, Any]:
        kind = entry.get("type", 1)
        name = entry.get("name", "")
        description = entry.get("description", "")
        if not COMMAND_NAME.match(name) or (kind == 1 and name != name.lower()):
            errors[f"{prefix}.name"] = "APPLICATION_COMMAND_INVALID_NAME"
        if kind == 1 and not 1 <= len(description) <= 100:
            errors[f"{prefix}.description"] = "BASE_TYPE_BAD_LENGTH: Must be between 1 and 100 in length."
        _check_options(entry.get("options", []), errors, f"{prefix}.options")
        key = (guild_id, name, kind)
        command_id = self._command_ids.setdefault(key, snowflake())
        stored = {"id": str(command_id), "application_id": str(self.application_id), "version": str(snowflake()),
                  "type": kind, "name": name, "description": description, "default_member_permissions": None,
                  "dm_permission": True, "nsfw": False, "options": [],
                  **{k: v for k, v in entry.items() if k not in ("id", "application_id", "version", "guild_id")}}
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    def _commands(self, record: FakeRequest, match: re.Match[str]) -> Any:
        self._check_app(match["app"])
        guild_id = int(match["guild"]) if match["guild"] else None
        if record.method == "GET":
            return self.commands.get(guild_id, [])
        entries = record.json if record.method == "PUT" else [record.json]
        if not isinstance(entries, list) or (record.method == "PUT" and len(entries) > 100):
            raise _Reply(400, {"message": "Invalid Form Body", "code": 50035,
                               "errors": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                                       "message": "Must be 100 or fewer in length."}]}})
        errors: dict[str, Any] = {}
        stored = [self._command_payload(e, guild_id, errors, str(i)) for i, e in enumerate(entries)]
        if errors:
            raise _Reply(400, {"message": "Invalid Form Body", "code": 50035, "errors": _nest_errors(errors)})
        if record.method == "PUT":
            self.commands[guild_id] = stored
            return stored
        current = [c for c in self.commands.get(guild_id, []) if c["name"] != stored[0]["name"]]
        self.commands[guild_id] = current + stored
        return 201, stored[0]

    def _command(self, record: FakeRequest, match: re.Match[str]) -> Any:
        self._check_app(match["app"])
        guild_id = int(match["guild"]) if match["guild"] else None
        commands = self.commands.get(guild_id, [])
        found = next((c for c in commands if c["id"] == match["command"]), None)
        if found is None:
            raise _error(404, 10063, "Unknown application command")
        if record.method == "DELETE":
            commands.remove(found)
            return 204, None
        if record.method == "PATCH":
            found.update({k: v for k, v in (record.json or {}).items() if k not in ("id", "application_id")})
        return found

    def _exchange_for(self, token: str) -> Exchange:
        if token in self._expired:
            status, body = self._expired[token]
            raise _Reply(status, body)
        exchange = self.exchanges.get(token)
        if exchange is None:
            raise _error(401, 50027, "Invalid Webhook Token")
        return exchange

    def _callback(self, record: FakeRequest, match: re.Match[str]) -> Any:
        exchange = self._exchange_for(match["token"])
        if exchange.id != int(match["id"]):
            raise _error(404, 10062, "Unknown interaction")
        if exchange.response_type is not None:
            raise _error(400, 40060, "Interaction has already been acknowledged.")
        body = record.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        message: FakeMessage | None = None
        if kind in (MESSAGE, DEFERRED_MESSAGE):
            if kind == DEFERRED_MESSAGE:
                message = self._new_message(exchange.channel_id, {}, [], via="deferred", exchange=exchange)
                message.flags = LOADING | (data.get("flags", 0) & EPHEMERAL)
                message.history[-1] = message.snapshot()
            else:
                message = self._new_message(exchange.channel_id, data, record.files, via="callback",
                                            exchange=exchange)
            exchange.original_id = message.id
        elif kind in (DEFERRED_UPDATE, UPDATE):
            if exchange.type != 3:
                raise _Reply(400, {"message": "Invalid Form Body", "code": 50035, "errors": {"type": {
                    "_errors": [{"code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                 "message": "Only component interactions can update a message."}]}}})
            message = self.message_by_id(exchange.clicked_message_id)
            if kind == UPDATE and message is not None:
                self._edit_message(message, data, record.files)
        elif kind not in (PONG, AUTOCOMPLETE, MODAL):
            raise _Reply(400, {"message": "Invalid Form Body", "code": 50035})
        exchange.response_type = kind
        flags = message.flags if message is not None else data.get("flags", 0)
        interaction: dict[str, Any] = {"id": str(exchange.id), "type": exchange.type,
                                       "response_message_loading": kind == DEFERRED_MESSAGE,
                                       "response_message_ephemeral": bool(flags & EPHEMERAL)}
        answer: dict[str, Any] = {"interaction": interaction}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            if kind in (MESSAGE, DEFERRED_MESSAGE, UPDATE):
                answer["resource"] = {"type": kind, "message": message.payload(self.application_id)}
        return answer

    def _webhook_target(self, match: re.Match[str]) -> tuple[Exchange, FakeMessage]:
        exchange = self._exchange_for(match["token"])
        if int(match["app"]) != self.application_id:
            raise _error(404, 10015, "Unknown Webhook")
        wanted = match["message"]
        message_id = exchange.original_id if wanted == "@original" else int(wanted)
        message = self.message_by_id(message_id)
        if message is None or message.deleted or (
                message.id != exchange.original_id and message.token != exchange.token):
            raise _error(404, 10008, "Unknown Message")
        return exchange, message

    def _followup(self, record: FakeRequest, match: re.Match[str]) -> Any:
        exchange = self._exchange_for(match["token"])
        if int(match["app"]) != self.application_id or exchange.response_type is None:
            raise _error(404, 10015, "Unknown Webhook")
        message = self._new_message(exchange.channel_id, record.json or {}, record.files, via="followup",
                                    exchange=exchange)
        if record.query.get("wait", "false").lower() not in ("true", "1"):
            return 204, None
        return message.payload(self.application_id)

    def _webhook_message(self, record: FakeRequest, match: re.Match[str]) -> Any:
        exchange, message = self._webhook_target(match)
        return self._message_op(record, message)

    def _message_op(self, record: FakeRequest, message: FakeMessage) -> Any:
        if record.method == "DELETE":
            message.deleted = True
            message.history.append({**message.snapshot(), "deleted": True})
            return 204, None
        if record.method == "PATCH":
            self._edit_message(message, record.json or {}, record.files)
        return message.payload(self.application_id)

    def _get_channel(self, record: FakeRequest, match: re.Match[str]) -> Any:
        channel = self.channel_by_id(int(match["channel"]))
        if channel is None:
            raise _error(404, 10003, "Unknown Channel")
        return channel.payload()

    def _post_message(self, record: FakeRequest, match: re.Match[str]) -> Any:
        channel = self.channel_by_id(int(match["channel"]))
        if channel is None:
            raise _error(404, 10003, "Unknown Channel")
        if channel.id in self._forbidden:
            raise _error(403, 50013, "Missing Permissions")
        body = record.json or {}
        if not body.get("content") and not body.get("embeds") and not record.files and not body.get("components") \
                and not body.get("sticker_ids") and not body.get("poll"):
            raise _error(400, 50006, "Cannot send an empty message")
        message = self._new_message(channel.id, body, record.files, via="channel")
        return message.payload(self.application_id)

    def _channel_message(self, record: FakeRequest, match: re.Match[str]) -> Any:
        message = self.message_by_id(int(match["message"]))
        if message is None or message.deleted or message.channel_id != int(match["channel"]) or message.ephemeral:
            raise _error(404, 10008, "Unknown Message")
        if record.method != "GET" and message.author is not self.bot:
            raise _error(403, 50005, "Cannot edit a message authored by another user")
        return self._message_op(record, message)

    # ----------------------------------------------------------------------------- messages and files

    def _store_file(self, filename: str, data: bytes, content_type: str | None, *, channel_id: int,
                    description: str | None = None) -> FakeFile:
        file_id = snowflake()
        path = f"/attachments/{channel_id}/{file_id}/{filename}"
        guessed = mimetypes.guess_type(filename)[0]
        if not content_type or content_type == "application/octet-stream":
            content_type = guessed or content_type or "application/octet-stream"
        width = height = None
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            width, height = struct.unpack(">II", data[16:24])
        file = FakeFile(file_id, filename, bytes(data), content_type, f"{self.url}{yarl.URL.build(path=path).raw_path}",
                        description, width, height)
        self._files[yarl.URL.build(path=path).path] = file
        return file

    def _uploads_to_files(self, channel_id: int, body: Mapping[str, Any], uploads: Sequence[Upload]) -> list[FakeFile]:
        total = sum(len(u.data) for u in uploads)
        if total > self.attachment_size_limit:
            raise _error(413, 40005, "Request entity too large")
        described = {str(a.get("id")): a for a in body.get("attachments", []) or []}
        files = []
        for upload in uploads:
            meta = described.get(str(upload.index), {})
            files.append(self._store_file(meta.get("filename") or upload.filename, upload.data, upload.content_type,
                                          channel_id=channel_id, description=meta.get("description")))
        return files

    def _add_message(self, message: FakeMessage) -> None:
        self._messages[message.id] = message
        self.messages.append(message)
        self._changed()

    def _new_message(self, channel_id: int, body: Mapping[str, Any], uploads: Sequence[Upload], *, via: str,
                     exchange: Exchange | None = None) -> FakeMessage:
        _check_components(body)
        files = self._uploads_to_files(channel_id, body, uploads)
        channel = self.channel_by_id(channel_id)
        message = FakeMessage(
            id=snowflake(), channel_id=channel_id, guild_id=channel.guild_id if channel else None, author=self.bot,
            via=via, token=exchange.token if exchange else None, interaction_id=exchange.id if exchange else None,
            interaction_type=exchange.type if exchange else None, content=body.get("content") or "",
            embeds=list(body.get("embeds") or []), components=list(body.get("components") or []),
            attachments=files, flags=int(body.get("flags") or 0), message_reference=body.get("message_reference"))
        message.history.append(message.snapshot())
        self._add_message(message)
        return message

    def _edit_message(self, message: FakeMessage, body: Mapping[str, Any], uploads: Sequence[Upload]) -> None:
        _check_components(body)
        files = self._uploads_to_files(message.channel_id, body, uploads)
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = list(body["embeds"] or [])
        if "components" in body:
            message.components = list(body["components"] or [])
        flags = message.flags & EPHEMERAL  # an edit ends the "thinking…" state; ephemerality stays
        if body.get("flags") is not None:
            flags |= int(body["flags"]) & ~LOADING
        message.flags = flags
        if "attachments" in body and body["attachments"] is not None:
            keep = {str(a.get("id")) for a in body["attachments"]}
            message.attachments = [a for a in message.attachments if str(a.id) in keep] + files
        else:
            message.attachments = message.attachments + files
        message.edited = time.perf_counter()
        message.history.append(message.snapshot())
        self._changed()


# --------------------------------------------------------------------------------------------- helpers


def schema_at(options: Sequence[Mapping[str, Any]], path: Sequence[str]) -> list[Mapping[str, Any]]:
    """The option list of the (sub)command at ``path`` inside a synced command's options."""
    current = list(options)
    for name in path:
        current = next((list(o.get("options", [])) for o in current if o["name"] == name), [])
    return current


def _option_type(value: Any) -> int:
    if isinstance(value, FakeFile):
        return 11
    if isinstance(value, FakeUser):
        return 6
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, str):
        return 3
    raise TypeError(f"no option type for {value!r}")


def _check_options(options: Sequence[Mapping[str, Any]], errors: dict[str, Any], prefix: str) -> None:
    if len(options) > 25:
        errors[prefix] = "BASE_TYPE_MAX_LENGTH: Must be 25 or fewer in length."
    seen_optional = False
    for i, option in enumerate(options):
        where = f"{prefix}.{i}"
        if not COMMAND_NAME.match(option.get("name", "")) or option.get("name") != option.get("name", "").lower():
            errors[f"{where}.name"] = "APPLICATION_COMMAND_INVALID_NAME"
        if not 1 <= len(option.get("description", "")) <= 100:
            errors[f"{where}.description"] = "BASE_TYPE_BAD_LENGTH: Must be between 1 and 100 in length."
        if len(option.get("choices") or []) > 25:
            errors[f"{where}.choices"] = "BASE_TYPE_MAX_LENGTH: Must be 25 or fewer in length."
        if option.get("type") in (1, 2):
            _check_options(option.get("options", []), errors, f"{where}.options")
        elif option.get("required"):
            if seen_optional:
                errors[f"{where}.required"] = "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID"
        else:
            seen_optional = True


def _nest_errors(flat: Mapping[str, str]) -> dict[str, Any]:
    """{"0.options.1.name": "CODE: text"} -> Discord's nested {"0": {"options": {"1": {"name": {"_errors": ...}}}}}."""
    nested: dict[str, Any] = {}
    for dotted, text in flat.items():
        node = nested
        for part in dotted.split("."):
            node = node.setdefault(part, {})
        code, _, message = text.partition(": ")
        node["_errors"] = [{"code": code, "message": message or code}]
    return nested


@contextlib.asynccontextmanager
async def running(client: Any, token: str = "fake-token", *,
                  timeout: float = 10.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run a discord.py client the way the app does (``async with client`` + ``client.start`` in a task).

    Yields once ``on_ready`` fired (pass ``guild_ready_timeout=0.05`` to the client to make that quick);
    closes the client and awaits the task on the way out. A start that fails (bad token) raises here.
    """
    async with client:
        task = asyncio.create_task(client.start(token), name="fake-discord-client")
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what start() raised
                raise RuntimeError("client.start() returned before the client was ready")
            if ready not in done:
                raise TimeoutError(f"the client was not ready after {timeout}s")
            yield task
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord (heartbeats every 1000 ms) with discord.py pointed at it."""
    async with FakeDiscord(heartbeat_interval_ms=1000) as fake:
        with fake.pointed_at():
            yield fake
