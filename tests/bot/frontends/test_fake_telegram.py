"""The fake Telegram Bot API against the real python-telegram-bot client, run in the test's own loop."""

from __future__ import annotations

import asyncio
import datetime
import gc
import io
import json
import logging
import warnings

import aiohttp
import pytest
from PIL import Image
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter
from telegram.warnings import PTBDeprecationWarning
from telegram.ext import (AIORateLimiter, ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes,
                          MessageHandler, filters)

from tests.bot.frontends.fake_telegram import FakeTelegram, fake_telegram, polling  # noqa: F401 (fixture)

TOKEN = "7000001:AAE-fake-token-for-tests"


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


SKETCH = png(64, 48, (10, 10, 10))
RESULT = png(32, 32)


def keyboard(job: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Again", callback_data=f"again:{job}"),
                                  InlineKeyboardButton("Bigger", callback_data=f"bigger:{job}")]])


async def test_the_real_application_polls_downloads_retries_and_edits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    downloaded: list[bytes] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(f"hello {update.effective_user.first_name}")

    async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        data = await (await update.message.photo[-1].get_file()).download_as_bytearray()
        downloaded.append(bytes(data))
        await update.message.reply_photo(RESULT, caption=f"{update.message.caption} ({len(data)} bytes)",
                                         reply_markup=keyboard(1))

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        await query.answer(f"pressed {query.data}")
        await query.edit_message_caption(f"pressed {query.data}")  # no reply_markup: the keyboard goes

    async def replied(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(f"you answered {update.message.reply_to_message.message_id}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeTelegram(token=TOKEN) as fake:
            app = (ApplicationBuilder().token(TOKEN).base_url(fake.base_url).base_file_url(fake.base_file_url)
                   .rate_limiter(AIORateLimiter(max_retries=3)).concurrent_updates(True).build())
            app.add_handler(CommandHandler("start", start))
            app.add_handler(MessageHandler(filters.PHOTO, photo))
            app.add_handler(CallbackQueryHandler(button))
            app.add_handler(MessageHandler(filters.REPLY & filters.TEXT & ~filters.COMMAND, replied))

            async with app:
                await app.updater.start_polling(poll_interval=0, timeout=1)
                await app.start()
                try:
                    await fake.wait_for_polling()
                    assert [r.method for r in fake.requests[:2]] == ["getMe", "deleteWebhook"]
                    assert app.bot.id == 7000001 and app.bot.username == "easel_bot"
                    poll = fake.requests_for("getUpdates")
                    assert all(r.content_type == "application/x-www-form-urlencoded" for r in poll)

                    # /start in a private chat and /start@easel_bot in a group both reach the CommandHandler.
                    await fake.push(fake.text("/start"))
                    hello = await fake.wait_for_message(lambda m: m.chat is fake.alice_chat)
                    assert hello.text == "hello Alice" and hello.method == "sendMessage"
                    in_group = await fake.push(fake.text("/start@easel_bot", user=fake.bob, chat=fake.group))
                    group_hello = await fake.wait_for_message(lambda m: m.chat is fake.group)
                    assert group_hello.text == "hello Bob"
                    assert in_group["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 16}]

                    # A photo: downloaded through getFile + /file/bot<token>/<path>; the answer's first
                    # sendPhoto meets flood control and AIORateLimiter posts it again after retry_after + 0.1 s.
                    fake.fail_next("sendPhoto", 429, retry_after=1)
                    sent = await fake.push(fake.photo(SKETCH, caption="a red barn"))
                    result = await fake.wait_for_message(lambda m: m.photo is not None, timeout=5)
                    assert downloaded == [SKETCH]
                    assert len(sent["message"]["photo"]) >= 2 and sent["message"]["photo"][-1]["width"] == 64
                    get_file = fake.requests_for("getFile")[0]
                    assert get_file.params["file_id"] == sent["message"]["photo"][-1]["file_id"]
                    assert fake.requests_for("file")[0].params["file_path"] == get_file.result["file_path"]
                    attempts = fake.requests_for("sendPhoto")
                    assert [r.status for r in attempts] == [429, 200]
                    assert attempts[0].description == "Too Many Requests: retry after 1"
                    assert attempts[1].time - attempts[0].answered >= 1.0
                    assert [r.file("photo").data for r in attempts] == [RESULT, RESULT]
                    assert attempts[1].content_type == "multipart/form-data"
                    assert attempts[1].params["chat_id"] == fake.alice.id  # decoded from the form
                    assert result.photo == RESULT and result.caption == "a red barn (%d bytes)" % len(SKETCH)
                    assert result.callback_data == ["again:1", "bigger:1"]

                    # A button press: answered once, the caption edited and the keyboard gone.
                    await fake.push(fake.callback("bigger:1", result))
                    await fake.wait_for_message(lambda m: m is result and m.caption == "pressed bigger:1")
                    assert [a["text"] for a in fake.callback_answers] == ["pressed bigger:1"]
                    assert result.reply_markup is None and len(result.edits) == 1
                    assert result.edits[0]["time"] > result.history[0]["time"]

                    # A reply to the bot's photo: the handler sees reply_to_message.message_id.
                    await fake.push(fake.text("nice one", reply_to=result))
                    answer = await fake.wait_for_message(lambda m: m.text and m.text.startswith("you answered"))
                    assert answer.text == f"you answered {result.message_id}"

                    # setMyCommands is stored and read back.
                    await app.bot.set_my_commands([BotCommand("start", "Say hello"), BotCommand("imagine", "Draw")])
                    assert fake.commands == [{"command": "start", "description": "Say hello"},
                                             {"command": "imagine", "description": "Draw"}]
                    assert [c.command for c in await app.bot.get_my_commands()] == ["start", "imagine"]

                    # An edit that changes nothing is refused like Telegram does; a real one is recorded.
                    with pytest.raises(BadRequest, match="^Message is not modified"):
                        await app.bot.edit_message_text(hello.text, chat_id=fake.alice.id,
                                                        message_id=hello.message_id)
                    await app.bot.edit_message_text("hello again", chat_id=fake.alice.id,
                                                    message_id=hello.message_id)
                    assert [h["text"] for h in hello.history] == ["hello Alice", "hello again"]
                finally:
                    await app.updater.stop()
                    await app.stop()

            # Every update was confirmed (the updater's last getUpdates carries the final offset).
            assert fake.pending_updates == [] and len(fake.confirmed) == len(fake.updates) == 5
            assert all(count == 1 for count in fake.delivered.values())
            assert not fake.polling
        assert app.bot.request._client.is_closed  # type: ignore[attr-defined]
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        gc.collect()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, problems
    # PTB 22 warns whenever it builds a RetryAfter (its retry_after turns into a timedelta one day; set
    # PTB_TIMEDELTA=1 to opt in); anything else (unclosed sessions, never-awaited coroutines) is a failure.
    unexpected = [w for w in caught if not (issubclass(w.category, PTBDeprecationWarning)
                                            and "retry_after" in str(w.message))]
    assert not unexpected, [f"{w.category.__name__}: {w.message}" for w in unexpected]


async def test_failures_limits_and_formatting(fake_telegram: FakeTelegram) -> None:
    fake = fake_telegram
    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.append(context.error)  # type: ignore[arg-type]

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(update.message.text)

    app = fake.builder().rate_limiter(AIORateLimiter(max_retries=0)).concurrent_updates(True).build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.add_error_handler(on_error)
    async with polling(app):
        bot = app.bot
        # Without retries the 429 reaches the handler as RetryAfter; a 5xx is a NetworkError.
        fake.fail_next("sendMessage", 429, retry_after=2)
        fake.fail_next("sendMessage", 502)
        await fake.push(fake.text("one"))
        await fake.push(fake.text("two"))
        await fake.wait_for_request(lambda r: r.method == "sendMessage" and r.status == 502)
        await fake._wait_until(lambda: len(errors) == 2, 5, "two handler errors")
        assert sorted(type(e).__name__ for e in errors) == ["NetworkError", "RetryAfter"]
        retry = next(e for e in errors if isinstance(e, RetryAfter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PTBDeprecationWarning)  # int today, timedelta with PTB_TIMEDELTA=1
            assert retry.retry_after in (2, datetime.timedelta(seconds=2))
        assert fake.messages == []

        # Blocked users, unknown chats, HTML that Telegram cannot parse, oversized callback_data.
        fake.block(fake.bob)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await bot.send_message(fake.bob.id, "hi")
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(424242, "hi")
        with pytest.raises(BadRequest, match="Can't parse entities: unsupported start tag \"lora:x\""):
            await bot.send_message(fake.alice.id, "a cat <lora:x> at dusk", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(fake.alice.id, "hi", reply_markup=InlineKeyboardMarkup(
                [[InlineKeyboardButton("x", callback_data="x" * 65)]]))
        bold = await bot.send_message(fake.alice.id, "  <b>bold</b> &amp; plain  ", parse_mode=ParseMode.HTML)
        assert bold.text == "bold & plain" and [(e.type, e.offset, e.length) for e in bold.entities] == \
            [("bold", 0, 4)]
        with pytest.raises(BadRequest, match="character '\\.' is reserved"):
            await bot.send_message(fake.alice.id, "*done*.", parse_mode=ParseMode.MARKDOWN_V2)

        # Sizes: a photo over 10 MB, a document over 50 MB, a download over 20 MB.
        with pytest.raises(BadRequest, match="(?i)photo_save_file_invalid"):
            await bot.send_photo(fake.alice.id, b"\x89PNG" + bytes(10 * 1024 * 1024))
        with pytest.raises(NetworkError, match="Request Entity Too Large"):
            await bot.send_document(fake.alice.id, bytes(50 * 1024 * 1024 + 1), filename="big.bin")
        big = fake.register_file(bytes(20 * 1024 * 1024 + 1), filename="big.png")
        with pytest.raises(BadRequest, match="File is too big"):
            await bot.get_file(big.file_id)
        with pytest.raises(BadRequest, match="Image_process_failed"):
            await bot.send_photo(fake.alice.id, b"not an image")

        # Albums upload through attach://, edits of media, deletes, chat actions.
        album = await bot.send_media_group(fake.alice.id, [InputMediaPhoto(RESULT, caption="first"),
                                                            InputMediaPhoto(SKETCH)])
        assert len({m.media_group_id for m in album}) == 1 and album[0].caption == "first"
        request = fake.requests_for("sendMediaGroup")[-1]
        attached = [item["media"].removeprefix("attach://") for item in request.params["media"]]
        assert [request.file(name).data for name in attached] == [RESULT, SKETCH]
        await bot.edit_message_media(InputMediaPhoto(SKETCH, caption="swapped"), chat_id=fake.alice.id,
                                     message_id=album[0].message_id)
        first = fake.message(fake.alice_chat, album[0].message_id)
        assert first is not None and first.photo == SKETCH and first.caption == "swapped"
        assert await bot.delete_message(fake.alice.id, album[1].message_id)
        with pytest.raises(BadRequest, match="Message to delete not found"):
            await bot.delete_message(fake.alice.id, album[1].message_id)
        await bot.send_chat_action(fake.alice.id, ChatAction.UPLOAD_PHOTO)
        assert fake.chat_actions[-1][1:] == (fake.alice.id, "upload_photo")

        # Per-chat message ids, as on Telegram: two chats both have a message 1.
        in_group = await bot.send_message(fake.group.id, "hello group")
        assert in_group.message_id == 1 and fake.message(fake.alice_chat, 1) is not None

        # A timed-out send may still have been sent (the client gave up, the server did not).
        fake.delay_next("sendMessage", 0.6)
        with pytest.raises(NetworkError):  # TimedOut is a NetworkError
            await bot.send_message(fake.alice.id, "slow", read_timeout=0.2)
        await fake.wait_for_message(lambda m: m.text == "slow")


async def test_raw_protocol_long_poll_offsets_and_conflicts(fake_telegram: FakeTelegram) -> None:
    fake = fake_telegram
    api = f"{fake.base_url}{fake.token}"
    async with aiohttp.ClientSession() as session:
        async def call(method: str, **form: object) -> tuple[int, dict]:
            data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in form.items()}
            async with session.post(f"{api}/{method}", data=data) as response:
                assert response.headers["Content-Type"] == "application/json"
                return response.status, await response.json()

        assert (await call("getMe"))[1]["result"]["username"] == "easel_bot"
        async with session.post(f"{fake.base_url}0:wrong/getMe") as response:
            assert response.status == 401 and (await response.json())["description"] == "Unauthorized"
        assert (await call("noSuchMethod")) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})

        # A long poll is held until an update arrives; offset confirms; two pollers conflict.
        poll = asyncio.create_task(call("getUpdates", timeout=5))
        await fake.wait_for_polling()
        first = await fake.push(fake.text("hi"))
        status, body = await poll
        assert status == 200 and [u["update_id"] for u in body["result"]] == [first["update_id"]]
        assert (await call("getUpdates"))[1]["result"][0]["update_id"] == first["update_id"]  # not confirmed yet
        assert (await call("getUpdates", offset=first["update_id"] + 1))[1]["result"] == []
        assert first["update_id"] in fake.confirmed

        older = asyncio.create_task(call("getUpdates", timeout=5))
        await fake.wait_for_polling()
        newer = asyncio.create_task(call("getUpdates", timeout=0))
        status, body = await older
        assert status == 409 and body["description"].startswith("Conflict: terminated by other getUpdates")
        assert (await newer)[0] == 200

        # Flood control with parameters.retry_after, then the same call succeeds.
        fake.fail_next("sendMessage", 429, retry_after=3)
        assert await call("sendMessage", chat_id=fake.alice.id, text="x") == (429, {
            "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3}})
        status, body = await call("sendMessage", chat_id=fake.alice.id, text="x",
                                  reply_markup={"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]})
        assert status == 200 and body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a"
        assert fake.requests[-1].params["reply_markup"] == {"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]}


async def test_dropped_connections_and_files_that_lie_about_their_size(fake_telegram: FakeTelegram) -> None:
    import httpx

    fake = fake_telegram
    app = fake.builder().build()
    async with app:
        bot = app.bot
        # Dropped before the call: nothing sent. Dropped after it: sent, only the answer is lost. Either way
        # PTB sees a NetworkError whose cause is httpx's RemoteProtocolError.
        for after in (False, True):
            fake.drop_next("sendMessage", after=after)
            with pytest.raises(NetworkError, match="RemoteProtocolError") as raised:
                await bot.send_message(fake.alice.id, f"dropped after={after}")
            assert isinstance(raised.value.__cause__, httpx.RemoteProtocolError)
        assert [m.text for m in fake.messages] == ["dropped after=True"]
        assert [r.status for r in fake.requests_for("sendMessage")] == [0, 0]
        assert (await bot.send_message(fake.alice.id, "fine")).text == "fine"  # the next call works

        # A file declared as 1 KB (or with no size) that is really 2 MB: getFile repeats the lie and the
        # download comes chunked, so only counting the bytes tells.
        for declared in (1024, False):
            update = fake.document(bytes(2 * 1024 * 1024), "big.png", file_size=declared)
            document = update["message"]["document"]
            assert document.get("file_size") == (declared or None)
            file = await bot.get_file(document["file_id"])
            assert file.file_size == (declared or None)
            async with httpx.AsyncClient() as client, client.stream("GET", file.file_path) as response:
                assert "content-length" not in response.headers
                assert len(await response.aread()) == 2 * 1024 * 1024
        assert [r.params["sent"] for r in fake.requests_for("file")] == [2 * 1024 * 1024] * 2
