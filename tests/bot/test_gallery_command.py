"""/gallery: a signed, expiring link for the asker alone, to their jobs (an admin's: everyone's)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

from bot.config import WebConfig
from bot.frontends.web_links import load_secret, read_token
from tests.bot.rig import ALICE, CONSOLE


async def test_gallery_gives_the_asker_a_private_link_that_reads_back_as_them(make_rig) -> None:
    rig = await make_rig(web=WebConfig(enabled=True, base_url="https://easel.example.org/", link_hours=2))
    reply = await rig.say(ALICE, "/gallery")
    assert not reply.error and reply.private and reply.job is None
    url = reply.text.rsplit(" ", 1)[-1]
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "easel.example.org", "/gallery")
    secret = load_secret(rig.service.config.storage.data_dir)
    viewer = read_token(secret, parse_qs(parts.query)["t"][0], time.time())
    assert viewer is not None and viewer.key == ALICE.key and not viewer.admin
    assert 2 * 3600 - 60 < viewer.expires - time.time() <= 2 * 3600
    assert read_token(secret, parse_qs(parts.query)["t"][0], time.time() + 2 * 3600 + 1) is None  # it expires
    assert "your jobs" in reply.text
    admin = await rig.say(CONSOLE, "/gallery")  # whoever sits at the console owns the machine
    token = parse_qs(urlsplit(admin.text.rsplit(" ", 1)[-1]).query)["t"][0]
    assert read_token(secret, token, time.time()).admin and "everyone's jobs" in admin.text


async def test_gallery_says_how_to_turn_it_on_when_it_is_off(rig) -> None:
    assert await rig.refused(ALICE, "/gallery") == \
        "the web gallery is off here; its owner can turn it on with [web] enabled = true"
    assert await rig.refused(ALICE, "/gallery now") == "/gallery does not take 'now'"
