"""The fake Discord server against the real discord.py client: login, gateway, commands, interactions."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import struct
import zlib

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.bot.frontends.fake_discord import FakeDiscord, fake_discord, running  # noqa: F401 (fixture)


def png(width: int = 2, height: int = 2) -> bytes:
    """A tiny valid PNG (black, RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RESULT = png(3, 2)


class Again(discord.ui.DynamicItem[discord.ui.Button], template=r"again:(?P<job>\d+)"):
    """A persistent "again" button: it survives restarts because its state lives in the custom_id."""

    clicked: list[tuple[int, int]] = []

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Again", custom_id=f"again:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: object) -> Again:
        return cls(int(match["job"]))  # type: ignore[index]

    async def callback(self, interaction: discord.Interaction) -> None:
        Again.clicked.append((self.job, interaction.user.id))
        await interaction.response.send_message(f"again {self.job}")


class Bot(discord.Client):
    """The smallest client the smoke test needs: /ping (defer, read the attachment, followup with a file) and /slow."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.downloaded: list[bytes] = []
        self.gate = asyncio.Event()
        self.late_error: asyncio.Future[BaseException] | None = None
        guild = discord.Object(guild_id)

        @self.tree.command(name="ping", description="Ping with options", guild=guild)
        async def ping(interaction: discord.Interaction, text: str, count: int, image: discord.Attachment) -> None:
            await interaction.response.defer(thinking=True)
            self.downloaded.append(await image.read())
            view = discord.ui.View(timeout=None)
            view.add_item(Again(count))
            await interaction.followup.send(f"pong {text} x{count} ({image.filename}, {image.size} bytes)",
                                            file=discord.File(io.BytesIO(RESULT), "pong.png"), view=view)

        @self.tree.command(name="slow", description="Answers after the token has expired", guild=guild)
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.gate.wait()
            try:
                await interaction.edit_original_response(content="done")
            except discord.HTTPException as exc:
                assert self.late_error is not None
                self.late_error.set_result(exc)
                await interaction.channel.send(f"{interaction.user.mention} done (the interaction had expired)")

    async def setup_hook(self) -> None:
        self.late_error = asyncio.get_running_loop().create_future()
        self.add_dynamic_items(Again)


async def test_the_real_client_logs_in_syncs_and_answers_interactions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with FakeDiscord(heartbeat_interval_ms=250, token="fake-token") as fake, fake.pointed_at():
        client = Bot(fake.guild.id)
        async with running(client, "fake-token"):
            # Login, READY, the guild and its channels known; the gateway spoke zlib-stream.
            assert client.user is not None and client.user.id == fake.application_id
            assert client.application_id == fake.application_id
            guild = client.get_guild(fake.guild.id)
            assert guild is not None and isinstance(guild.get_channel(fake.channel.id), discord.TextChannel)
            assert fake.identifies[0]["token"] == "fake-token"
            assert fake.gateway_connections[0]["compress"] == "zlib-stream"
            assert [r.path for r in fake.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]

            # Sync stores the commands with their option types.
            synced = await client.tree.sync(guild=discord.Object(fake.guild.id))
            assert sorted(c.name for c in synced) == ["ping", "slow"]
            assert all(c.id for c in synced)
            assert [o["type"] for o in fake.command("ping", fake.guild.id)["options"]] == [3, 4, 11]

            # /ping: deferred (type 5), the attachment downloaded, the followup a multipart PNG with a button.
            sketch = fake.attachment("sketch.png", png(4, 4))
            ping = await fake.interact(fake.slash("ping", {"text": "hi", "count": 3, "image": sketch}))
            assert (await ping.callback()).json == {"type": 5}
            assert ping.original is not None and ping.original.loading
            followup = await ping.message(lambda m: m.via == "followup")
            request = await fake.wait_for_request(lambda r: r.method == "POST" and r.path.startswith("/webhooks/"))
            assert request.path == f"/webhooks/{fake.application_id}/{ping.token}"
            assert request.query["wait"] in ("1", "true")
            assert [(f.index, f.filename, f.data) for f in request.files] == [(0, "pong.png", RESULT)]
            assert request.json["content"] == f"pong hi x3 (sketch.png, {sketch.size} bytes)"
            assert client.downloaded == [sketch.data]
            assert followup.attachments[0].data == RESULT and followup.attachments[0].content_type == "image/png"
            assert (followup.attachments[0].width, followup.attachments[0].height) == (3, 2)
            assert followup.custom_ids == ["again:3"]

            # The persistent button reaches the DynamicItem, which answers with a message (type 4).
            click = await fake.interact(fake.click("again:3", followup.id, user=fake.bob))
            assert (await click.callback()).json["type"] == 4
            assert (await click.message()).content == "again 3"
            assert Again.clicked == [(3, fake.bob.id)]

            # An expired token: the edit fails with 401 in the client, which falls back to the channel.
            slow = await fake.interact(fake.slash("slow"))
            assert (await slow.callback()).json == {"type": 5}
            fake.expire(slow.token)
            client.gate.set()
            error = await asyncio.wait_for(client.late_error, 5)
            assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (401, 50027)
            fallback = await fake.wait_for_message(lambda m: m.via == "channel")
            assert fallback.channel_id == fake.channel.id and "expired" in fallback.content

            # Heartbeats: acked (latency measured) and recorded with their arrival times.
            await fake.wait_for_heartbeats(3, timeout=3)
            assert client.latency < 1.0
            assert fake.heartbeat_delays() and all(-0.1 < d < 1.0 for d in fake.heartbeat_delays())

        # Clean shutdown: the session closed, the gateway connection gone.
        assert client.is_closed() and client.http._HTTPClient__session.closed  # type: ignore[attr-defined]
    gc.collect()
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage() or r.levelno >= logging.ERROR]


async def test_rest_traps_and_failure_injection(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    async with running(client):
        # JSON answers carry exactly "application/json" (discord.py compares with ==).
        async with aiohttp.ClientSession() as session, session.get(f"{fake.api_base}/users/@me") as response:
            assert response.headers["Content-Type"] == "application/json"

        channel = client.get_channel(fake.channel.id)
        assert isinstance(channel, discord.TextChannel)

        # A one-shot 429 is retried by discord.py (it needs the Via header to believe it).
        fake.fail_next("POST", r"^/channels/\d+/messages$", 429, retry_after=0.05)
        sent = await channel.send("hello")
        posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]
        assert [r.status for r in posts] == [429, 200]
        assert fake.message_by_id(sent.id).content == "hello"

        # Edits land on the stored message.
        await sent.edit(content="hello again")
        assert fake.message_by_id(sent.id).content == "hello again"

        # A forbidden channel answers 403 Missing Permissions.
        fake.forbid_channel(fake.channel.id)
        with pytest.raises(discord.Forbidden) as forbidden:
            await channel.send("nope")
        assert forbidden.value.code == 50013
        # ...and interactions there say the bot may not send (app_permissions), unlike in the other channel.
        def bot_may(channel_id: int) -> discord.Permissions:
            return discord.Permissions(int(fake.slash("ping", channel_id=channel_id)["app_permissions"]))

        assert not bot_may(fake.channel.id).send_messages
        assert bot_may(fake.guild.channels[1].id).send_messages and bot_may(fake.guild.channels[1].id).attach_files


async def test_edits_updates_dms_retries_and_a_resumed_gateway(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)
    seen: dict[str, object] = {}

    class Up(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Up", custom_id="up")
        async def up(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.edit_message(content="updated", view=None)

    @tree.command(name="edit", description="Answer, edit with a file, read back, delete")
    async def edit(interaction: discord.Interaction, strength: float, who: discord.User | None = None) -> None:
        seen["options"] = (strength, who and who.id)
        await interaction.response.send_message("editing", ephemeral=True)
        await interaction.edit_original_response(content="edited", attachments=[discord.File(io.BytesIO(RESULT), "e.png")])
        seen["read back"] = (await interaction.original_response()).content
        await interaction.delete_original_response()

    @tree.command(name="hello", description="A message with a button")
    async def hello(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("with a button", view=Up())

    async with running(client):
        await tree.sync()

        # A message answer (type 4), edited as multipart, read back, deleted; every state kept in history.
        answer = await fake.interact(fake.slash("edit", {"strength": 0.5, "who": fake.bob}))
        assert (await answer.callback()).json["type"] == 4
        message = await answer.message(lambda m: m.deleted)
        assert seen == {"options": (0.5, fake.bob.id), "read back": "edited"}
        assert message.ephemeral and [a.filename for a in message.attachments] == ["e.png"]
        assert [state["content"] for state in message.history] == ["editing", "edited", "edited"]

        # In a DM; the button updates its own message (type 7), here removing the view.
        dm = await fake.interact(fake.slash("hello", guild_id=None))
        with_button = await dm.message()
        assert with_button.channel_id == fake.dm_channel(fake.alice).id and with_button.custom_ids == ["up"]
        update = await fake.interact(fake.click("up", with_button.id))
        assert (await update.callback()).json["type"] == 7
        assert (with_button.content, with_button.components) == ("updated", [])

        # A one-shot 500 on the callback: discord.py retries it (after ~1 s) and succeeds.
        fake.fail_next("POST", r"/callback$", 500)
        retried = await fake.interact(fake.slash("hello"))
        await fake.wait_for_request(lambda r: r.path.endswith(f"{retried.token}/callback") and r.status == 200)
        assert [r.status for r in retried.requests] == [500, 200]

        # Reconnect (op 7): the client RESUMEs on resume_gateway_url and interactions flow again.
        await fake.send_reconnect()
        resumed = await fake.interact(fake.slash("hello"))
        assert (await resumed.message()).content == "with a button"
        assert [op for _, op, _ in fake.gateway_frames if op in (2, 6)] == [2, 6]
        assert len(fake.gateway_connections) == 2


async def test_roles_members_dms_resets_and_lying_attachments(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    artists = fake.guild.add_role("artists", fake.bob)
    client = discord.Client(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
    async with running(client):
        # Roles come with the guild (no privileged intent) and with each member fetched over REST.
        guild = client.get_guild(fake.guild.id)
        assert guild is not None and guild.get_role(artists).name == "artists"
        assert [role.id for role in (await guild.fetch_member(fake.bob.id)).roles] == [guild.id, artists]
        assert (await guild.fetch_member(fake.alice.id)).roles == [guild.default_role]
        with pytest.raises(discord.NotFound):
            await guild.fetch_member(12345)
        assert fake.slash("ping", user=fake.bob)["member"]["roles"] == [str(artists)]

        # A DM opened by the bot lands in the person's DM channel.
        dm = await client.create_dm(discord.Object(fake.alice.id))
        await dm.send("hello")
        hello = await fake.wait_for_message(lambda m: m.content == "hello")
        assert hello.channel_id == fake.dm_channel(fake.alice).id

        # A hang-up is no HTTPException: aiohttp says the server disconnected; the next request works.
        channel = client.get_channel(fake.channel.id)
        fake.reset_next("POST", r"/messages$")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await channel.send("lost")
        assert [r.status for r in fake.requests if r.path.endswith("/messages")][-1] == 0
        await channel.send("found")

        # An attachment that says 1 kB, served as a stream of unknown length.
        big = fake.attachment("big.png", b"\0" * 4_000_000, "image/png", declared_size=1000, chunked=True)
        assert big.payload()["size"] == 1000
        async with aiohttp.ClientSession() as session, session.get(big.url) as response:
            assert "Content-Length" not in response.headers
            assert len(await response.content.readexactly(100_000)) == 100_000
        assert fake.served[big.id] >= 100_000  # counted as it goes out


async def test_components_past_discords_limits_are_refused(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    async with running(client):
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake.channel.id)

        def rows(count: int, per_row: int, custom_id=lambda r, i: f"b:{r}:{i}") -> list[dict]:
            return [{"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": custom_id(r, i)}
                                               for i in range(per_row)]} for r in range(count)]

        await client.http.request(route, json={"content": "fits", "components": rows(5, 5)})
        for wrong in (rows(6, 1), rows(1, 6), rows(1, 1, lambda r, i: "x" * 101), rows(2, 1, lambda r, i: "same")):
            with pytest.raises(discord.HTTPException) as refused:
                await client.http.request(route, json={"content": "too much", "components": wrong})
            assert refused.value.status == 400 and refused.value.code == 50035
        assert [m.content for m in fake.messages] == ["fits"]
