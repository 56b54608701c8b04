"""The web gallery (bot/frontends/web.py) in-process with aiohttp's test client, over a real Service drawing with
the tiny model into a real SQLite history: links and sessions, who sees what, files only by id, the actions and
their CSRF tokens, and the headers on every answer."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from markupsafe import escape
from PIL import Image
from yarl import URL

from bot.config import WebConfig
from bot.frontends import web_links
from bot.frontends.web import HEADERS, PAGE, SESSION_COOKIE, WebFrontend, make_app
from bot.frontends.web_links import Viewer, csrf_token, link, load_secret, make_token, read_token
from storage.errors import EaselError
from storage.gallery import Gallery
from storage.images import animation_video
from storage.infotext import read_parameters
from storage.records import JobStatus, Owner
from tests.bot.rig import ALICE, CAROL, FAST, Rig

pytestmark = pytest.mark.usefixtures("tiny_model")

ADMIN = Owner("discord", "999", chat_id="c9", name="root")
CSP = HEADERS["Content-Security-Policy"]


@dataclass
class Site:
    """The app over a rig, and a client that sends exactly the session cookie a test gives it."""

    rig: Rig
    client: TestClient
    secret: bytes

    def token(self, owner: Owner, admin: bool = False, hours: float = 1.0) -> str:
        return make_token(self.secret, Viewer(owner.key, owner.name or owner.user_id, admin, time.time() + hours * 3600))

    def csrf(self, token: str) -> str:
        return csrf_token(self.secret, token)

    async def get(self, path: str | URL, token: str | None = None, headers: dict | None = None
                  ) -> aiohttp.ClientResponse:
        headers = {**({"Cookie": f"{SESSION_COOKIE}={token}"} if token else {}), **(headers or {})}
        return await self.client.get(path, headers=headers, allow_redirects=False)

    async def post(self, path: str, token: str, data: dict) -> aiohttp.ClientResponse:
        return await self.client.post(path, headers={"Cookie": f"{SESSION_COOKIE}={token}"}, data=data,
                                      allow_redirects=False)

    async def page(self, path: str | URL, token: str | None) -> tuple[int, str]:
        response = await self.get(path, token)
        return response.status, await response.text()


@pytest.fixture
async def site(rig: Rig):
    await rig.queue.start()
    secret = load_secret(rig.service.config.storage.data_dir)
    app = make_app(rig.service, Gallery(rig.history), WebConfig(enabled=True), secret)
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield Site(rig, client, secret)


async def drawn(rig: Rig, text: str, owner: Owner = ALICE):
    reply = await rig.ok(owner, text)
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    assert job.status is JobStatus.DONE, job.error
    return job


def check_headers(response: aiohttp.ClientResponse) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.url, response.status, name)


# ---- links --------------------------------------------------------------------------------------------------

def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    key = load_secret(tmp_path / "data")
    path = tmp_path / "data" / web_links.SECRET_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(tmp_path / "data") == key and load_secret(tmp_path / "other") != key
    assert [p.name for p in path.parent.iterdir()] == [web_links.SECRET_FILE]  # no temporary file left
    path.write_bytes(b"short")
    with pytest.raises(EaselError, match="not a gallery signing key"):
        load_secret(tmp_path / "data")


def test_a_token_says_who_until_when_and_nothing_else_reads_as_one() -> None:
    secret = bytes(range(32))
    viewer = Viewer("discord:111", "alice \"<b>\" ☃", False, 2_000_000_000.5)
    token = make_token(secret, viewer)
    assert token.isascii() and all(c.isalnum() or c in "-_." for c in token)
    assert read_token(secret, token, 1_900_000_000) == viewer
    assert read_token(secret, token, 2_000_000_001) is None  # expired
    assert read_token(bytes(32), token, 0) is None  # another key
    body, signature = token.split(".")
    assert secret.hex() not in token and "secret" not in repr(viewer)
    forged = make_token(secret, Viewer("discord:111", "alice", True, 2e9)).split(".")[0]
    assert read_token(secret, f"{forged}.{signature}", 0) is None  # admin claimed under alice's signature
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for junk in ["", ".", "abc", f"{body}.", f".{signature}", f"{body}.{flipped}", f"{body}.{signature}.x",
                 f"{body}.{signature}=", f"{body}.{signature[:-1]}", token + "é", "x" * 10_000]:
        assert read_token(secret, junk, 0) is None, junk
    unsigned = web_links.b64url_encode(b'{"k":1,"n":"x","a":true,"e":9e99}')  # well signed, but not a viewer
    assert read_token(secret, f"{unsigned}.{web_links.b64url_encode(web_links._mac(secret, unsigned))}", 0) is None
    assert link("https://easel.example.org", token) == f"https://easel.example.org/gallery?t={token}"


async def test_a_link_becomes_a_session_cookie_and_the_grid_shows_my_thumbnails_only(site: Site) -> None:
    mine = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    theirs = await drawn(site.rig, f"/imagine a blue forest {FAST}", owner=CAROL)
    token = site.token(ALICE)
    async with TestClient(TestServer(site.client.server.app)) as browser:  # a real cookie jar
        arrived = await browser.get(f"/gallery?t={token}", allow_redirects=False)
        assert arrived.status == 303 and arrived.headers["Location"] == "/gallery"
        check_headers(arrived)
        cookie = arrived.headers["Set-Cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}={token};")
        assert all(part in cookie for part in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="))
        assert "Secure" not in cookie  # plain http on this machine; see the https test below
        grid = await browser.get("/gallery")
        text = await grid.text()
    assert grid.status == 200 and grid.url.path == "/gallery" and not grid.url.query
    assert f'<img src="/thumb/{mine.id}/1" loading="lazy" width="64" height="64"' in text
    assert f'href="/job/{mine.id}"' in text and "a red lighthouse" in text and "1 job" in text
    assert f"/thumb/{theirs.id}/" not in text and "blue forest" not in text and "carol" not in text
    thumb = await site.get(f"/thumb/{mine.id}/1", token)
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(await thumb.read())) as picture:
        assert (picture.format, picture.size) == ("WEBP", (64, 64))
    assert (await site.get(f"/thumb/{theirs.id}/1", token)).status == 404


async def test_a_link_clicked_on_another_site_moves_on_by_itself_and_https_cookies_are_secure(rig: Rig) -> None:
    secret = load_secret(rig.service.config.storage.data_dir)
    config = WebConfig(enabled=True, base_url="https://easel.example.org/")
    token = make_token(secret, Viewer(ALICE.key, "alice", False, time.time() + 60))
    async with TestClient(TestServer(make_app(rig.service, Gallery(rig.history), config, secret))) as client:
        response = await client.get(f"/gallery?t={token}", headers={"Sec-Fetch-Site": "cross-site"},
                                    allow_redirects=False)
        text = await response.text()
    # SameSite=Strict: the cookie would not come with a redirect of a navigation another site started.
    assert response.status == 200 and '<meta http-equiv="refresh" content="0; url=/gallery">' in text
    assert token not in text
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert 55 <= int(cookie.split("Max-Age=")[1].split(";")[0]) <= 60
    check_headers(response)


async def test_without_a_valid_link_nothing_is_shown(site: Site) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    good = site.token(ALICE)
    body, signature = good.split(".")
    expired = site.token(ALICE, hours=-1)
    elsewhere = make_token(bytes(32), Viewer(ALICE.key, "alice", True, time.time() + 60))
    tampered = f"{body}.{signature[::-1]}"
    for token in (tampered, expired, elsewhere, "nonsense", ""):
        response = await site.get(f"/gallery?t={token}")
        text = await response.text()
        assert response.status == 403 and "not valid or has expired" in text and "/gallery" in text
        assert "Set-Cookie" not in response.headers
        check_headers(response)
    for path in ("/gallery", f"/job/{job.id}", f"/image/{job.id}/1", f"/thumb/{job.id}/1", f"/job/{job.id}/delete",
                 "/gallery?q=lighthouse"):
        for cookie in (None, tampered, expired, elsewhere):
            response = await site.get(path, cookie)
            text = await response.text()
            assert response.status == 401, (path, cookie)
            assert "lighthouse" not in text and f"#{job.id}" not in text and "/thumb/" not in text
            assert "/gallery" in text and response.headers["Content-Type"].startswith("text/html")
            check_headers(response)
    response = await site.post(f"/job/{job.id}/rerun", expired, {"csrf": site.csrf(expired)})
    assert response.status == 401 and await site.rig.all_jobs() == [job.id]


# ---- who sees what ------------------------------------------------------------------------------------------

async def test_an_admin_sees_everyones_jobs_and_filters_by_person(site: Site) -> None:
    mine = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    theirs = await drawn(site.rig, f"/imagine a blue forest {FAST}", owner=CAROL)
    admin = site.token(ADMIN, admin=True)
    status, text = await site.page("/gallery", admin)
    assert status == 200 and f"/thumb/{mine.id}/1" in text and f"/thumb/{theirs.id}/1" in text
    assert "alice (discord)" in text and "carol (telegram)" in text and "2 jobs" in text
    assert f'<option value="{CAROL.key}">carol</option>' in text  # the person menu
    status, text = await site.page(f"/gallery?person={CAROL.key}", admin)
    assert f"/thumb/{theirs.id}/1" in text and f"/thumb/{mine.id}/1" not in text
    status, text = await site.page(f"/job/{theirs.id}", admin)
    assert status == 200 and "a blue forest" in text and "carol" in text
    # A person's filter is no way into another person's jobs.
    status, text = await site.page(f"/gallery?person={CAROL.key}", site.token(ALICE))
    assert status == 200 and f"/thumb/{mine.id}/1" in text and f"/thumb/{theirs.id}/1" not in text
    assert 'name="person"' not in text
    assert (await site.page("/gallery?person=nobody", admin))[0] == 400


async def test_another_persons_job_and_its_files_are_not_found(site: Site) -> None:
    theirs = await drawn(site.rig, f"/imagine a blue forest {FAST}", owner=CAROL)
    alice = site.token(ALICE)
    for path in (f"/job/{theirs.id}", f"/image/{theirs.id}/1", f"/thumb/{theirs.id}/1", f"/video/{theirs.id}",
                 f"/job/{theirs.id}/delete", "/job/999", "/image/999/1", f"/image/{theirs.id}/2"):
        response = await site.get(path, alice)
        text = await response.text()
        assert response.status == 404, path
        assert "blue forest" not in text and "carol" not in text
        check_headers(response)
    for action in ("rerun", "more", "upscale", "vary", "star", "delete"):
        response = await site.post(f"/job/{theirs.id}/{action}", alice, {"csrf": site.csrf(alice), "image": "1"})
        assert response.status == 404, action
    assert await site.rig.all_jobs() == [theirs.id] and (await site.rig.history.get(theirs.id)).images


async def raw_get(server: TestServer, target: str, token: str) -> tuple[int, bytes]:
    """Send the request line exactly as written: no client tidies `..` or %2f away first."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nCookie: {SESSION_COOKIE}={token}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


async def test_paths_that_are_no_job_file_are_not_found(site: Site, tmp_path: Path) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    alice = site.token(ALICE)
    database = site.rig.service.config.database
    for target in (f"/image/{job.id}/1/../../easel.db", "/..%2f..%2feasel.db", "/image/%2e%2e/1",
                   f"/image/{job.id}/%2e%2e%2f%2e%2e%2feasel.db", f"/image/{job.id}/1%2f..%2f..%2feasel.db",
                   "/image/..%2f..%2feasel.db/1", "/static/../easel.db", "/static/%2e%2e/easel.db",
                   "/static/%2e%2e%2fweb-secret.key", f"/thumb/{job.id}/..%2f..%2fweb-secret.key",
                   f"//{database}", f"/image/{job.id}/{database}", f"/image/{database}/1", "/etc/passwd",
                   f"http://localhost{database}", f"/image/{job.id}/0", f"/image/{job.id}/2", "/image/0/1",
                   "/image/99999/1", f"/image/{'9' * 30}/1", f"/image/{job.id}/{'9' * 5000}", "/image/%C2%B2/1",
                   "/job/%C2%B2", "/video/99999", "/easel.db", "/web-secret.key", "/images/"):
        status, data = await raw_get(site.client.server, target, alice)
        assert status == 404, target
        assert b"SQLite format" not in data and site.secret not in data and b"lighthouse" not in data, target
    status, data = await raw_get(site.client.server, f"/image/{job.id}/1", alice)
    assert status == 200 and data.split(b"\r\n\r\n", 1)[1].startswith(b"\x89PNG")

    # A row whose file became a link out of the data folder, or went away: nothing is served.
    outside = tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(outside)
    image = Path(job.images[0].path)
    image.unlink()
    assert (await site.get(f"/image/{job.id}/1", alice)).status == 404
    assert (await site.get(f"/thumb/{job.id}/1", alice)).status == 404
    image.symlink_to(outside)
    assert (await site.get(f"/image/{job.id}/1", alice)).status == 404
    assert (await site.get(f"/thumb/{job.id}/1", alice)).status == 404
    assert (await site.page(f"/job/{job.id}", alice))[0] == 200  # the page still shows what was recorded


# ---- pages --------------------------------------------------------------------------------------------------

async def test_search_and_filters_find_only_matching_jobs_and_pages_keep_them(site: Site) -> None:
    status, text = await site.page("/gallery", site.token(ALICE))
    assert status == 200 and "nothing here yet" in text and "/job/" not in text
    red = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    blue = await drawn(site.rig, f"/imagine a blue forest --no fog {FAST}")
    alice = site.token(ALICE)
    status, text = await site.page("/gallery?q=lighthouse", alice)
    assert status == 200 and f"/job/{red.id}" in text and f"/job/{blue.id}" not in text
    assert 'value="lighthouse"' in text  # the form keeps what was asked
    status, text = await site.page("/gallery?q=fog", alice)  # negative prompts are searched too
    assert f"/job/{blue.id}" in text and f"/job/{red.id}" not in text
    status, text = await site.page("/gallery?q=volcano", alice)
    assert status == 200 and "/job/" not in text and "no jobs match these filters" in text
    for hostile in ('"', "lighthouse*", "NEAR(", "a OR b", "prompt:red", "<script>alert(1)</script>", "%", "\x00"):
        status, text = await site.page(URL("/gallery").with_query(q=hostile), alice)
        assert status == 200 and "<script>alert" not in text, hostile
    status, text = await site.page("/gallery?status=failed", alice)
    assert "/job/" not in text
    status, text = await site.page("/gallery?kind=txt2img&status=done", alice)
    assert f"/job/{red.id}" in text and f"/job/{blue.id}" in text
    today = red.created_at.date().isoformat()
    status, text = await site.page(f"/gallery?since={today}&until={today}", alice)
    assert f"/job/{red.id}" in text
    status, text = await site.page("/gallery?until=2000-01-01", alice)
    assert "/job/" not in text
    for bad in ("since=yesterday", "status=lost", "before=abc", "before=0", f"q={'x' * 501}"):
        status, text = await site.page(f"/gallery?{bad}", alice)
        assert status == 400, bad

    # More than a page: the older link goes on from the last job shown, with the same filters.
    for _ in range(PAGE):
        extra = await site.rig.history.add_job(ALICE, red.params)
        await site.rig.history.finish(extra.id, JobStatus.FAILED, error="no room")
    status, text = await site.page("/gallery?q=lighthouse", alice)
    assert f"{PAGE} jobs" in text and f"/job/{red.id}\"" not in text
    last = extra.id - PAGE + 1
    assert f'href="/gallery?q=lighthouse&amp;before={last}" rel="next"' in text
    status, text = await site.page(f"/gallery?q=lighthouse&before={last}", alice)
    assert f"/job/{red.id}" in text and f"/job/{blue.id}" not in text and 'rel="next"' not in text
    assert "newest" in text


async def test_a_job_page_shows_the_parameters_every_field_the_chain_and_the_actions(site: Site) -> None:
    parent = await drawn(site.rig, f"/imagine a red lighthouse <b>&amp; {FAST}")
    job = await drawn(site.rig, f"/rerun #{parent.id}")
    alice = site.token(ALICE)
    status, text = await site.page(f"/job/{job.id}", alice)
    assert status == 200
    parameters = read_parameters(Path(job.images[0].path))
    assert "Steps: 2" in parameters and str(escape(parameters)) in text
    assert "<b>&amp;" not in text and "&lt;b&gt;&amp;amp;" in text  # the prompt, escaped
    assert '<button type="button" class="copy" data-copy="parameters-1">Copy</button>' in text
    assert '<pre id="parameters-1">' in text and '<script src="/static/app.js" defer></script>' in text
    assert "<script>" not in text and " on" + "click=" not in text and "style=" not in text  # the CSP allows no inline
    assert f'<img src="/image/{job.id}/1"' in text
    for field in ("scheduler", "cfg", "negative_prompt", "diffusers_version", "created", "finished", "seed"):
        assert f"<td>{field}</td>" in text, field
    assert f'href="/job/{parent.id}"' in text  # the chain
    assert site.rig.service.images.root.as_posix() not in text  # a person sees file names, not server paths
    csrf = site.csrf(alice)
    for action in ("rerun", "more", "star", "upscale", "vary"):
        assert f'action="/job/{job.id}/{action}"' in text
    assert text.count(f'name="csrf" value="{csrf}"') >= 5
    assert f'href="/job/{job.id}/delete"' in text
    status, text = await site.page(f"/job/{parent.id}", alice)
    assert f'href="/job/{job.id}"' in text  # and the other way

    script = await site.get("/static/app.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    assert "navigator.clipboard" in await script.text()
    check_headers(script)
    style = await site.get("/static/app.css")
    assert style.status == 200 and style.content_type == "text/css" and "grid" in await style.text()


async def test_an_animation_page_plays_its_video_and_shows_its_frames(site: Site) -> None:
    job = await drawn(site.rig, "/animate a city --mode zoom --frames 3 --size 64x64 --steps 2")
    alice = site.token(ALICE)
    status, text = await site.page(f"/job/{job.id}", alice)
    assert status == 200 and f'<video controls preload="metadata" src="/video/{job.id}"' in text
    assert all(f'src="/image/{job.id}/{k}"' in text for k in (1, 2, 3))
    video = await site.get(f"/video/{job.id}", alice)
    data = await video.read()
    assert video.status == 200 and video.headers["Content-Type"] == "video/mp4"
    assert data[4:8] == b"ftyp" and data == animation_video(job).read_bytes()
    part = await site.get(f"/video/{job.id}", alice, headers={"Range": "bytes=0-99"})
    assert part.status == 206 and await part.read() == data[:100]  # seeking in the player
    check_headers(part)
    plain = await drawn(site.rig, f"/imagine a lighthouse {FAST}")
    assert (await site.get(f"/video/{plain.id}", alice)).status == 404
    assert "<video" not in (await site.page(f"/job/{plain.id}", alice))[1]


# ---- actions ------------------------------------------------------------------------------------------------

async def test_a_rerun_needs_the_forms_csrf_token_and_queues_a_rerun_of_that_job(site: Site) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    alice = site.token(ALICE)
    other_session = site.token(ALICE, hours=2)  # alice's too, but another link
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": site.csrf(other_session)},
                 {"csrf": csrf_token(bytes(32), alice)}):
        response = await site.post(f"/job/{job.id}/rerun", alice, data)
        assert response.status == 403 and "reload the page" in await response.text()
        check_headers(response)
    assert await site.rig.all_jobs() == [job.id]

    response = await site.post(f"/job/{job.id}/rerun", alice, {"csrf": site.csrf(alice)})
    assert response.status == 303
    new_id = int(response.headers["Location"].removeprefix("/job/"))
    assert await site.rig.all_jobs() == [job.id, new_id]
    rerun = await site.rig.history.get(new_id)
    assert rerun.parent_id == job.id and rerun.owner == ALICE
    assert (rerun.params.prompt, rerun.params.seed, rerun.params.steps) == (job.params.prompt, job.params.seed, 2)
    said = response.cookies["easel_said"]
    status, text = await site.page(f"/job/{new_id}", alice)  # the flash is read from its cookie by the browser
    assert status == 200
    response = await site.client.get(f"/job/{new_id}", allow_redirects=False, headers={
        "Cookie": f"{SESSION_COOKIE}={alice}; easel_said={said.value}"})
    assert f"queued #{new_id}" in await response.text()
    await site.rig.finished(new_id)

    more = await site.post(f"/job/{job.id}/more", alice, {"csrf": site.csrf(alice)})
    more_id = int(more.headers["Location"].removeprefix("/job/"))
    assert (await site.rig.history.get(more_id)).params.steps == 10
    await site.rig.finished(more_id)
    upscale = await site.post(f"/job/{job.id}/upscale", alice, {"csrf": site.csrf(alice), "image": "1"})
    upscaled = await site.rig.history.get(int(upscale.headers["Location"].removeprefix("/job/")))
    assert upscaled.params.kind == "upscale" and upscaled.params.source_job == job.id
    await site.rig.finished(upscaled.id)
    vary = await site.post(f"/job/{job.id}/vary", alice, {"csrf": site.csrf(alice), "image": "1",
                                                          "variation": "strong"})
    varied = await site.rig.history.get(int(vary.headers["Location"].removeprefix("/job/")))
    assert varied.params.kind == "vary" and varied.params.variation == "strong"
    await site.rig.finished(varied.id)
    for data in ({"image": "2"}, {"image": "x"}, {"image": "1", "variation": "wild"}):
        response = await site.post(f"/job/{job.id}/vary", alice, {"csrf": site.csrf(alice), **data})
        assert response.status == 400, data

    # A refusal comes back to the job's page, said.
    huge = await site.rig.history.add_job(ALICE, job.params.replace(steps=500))
    await site.rig.history.finish(huge.id, JobStatus.FAILED, error="no")
    refused = await site.post(f"/job/{huge.id}/more", alice, {"csrf": site.csrf(alice)})
    assert refused.status == 303 and refused.headers["Location"] == f"/job/{huge.id}"
    assert "easel_said" in refused.cookies


async def test_an_admins_rerun_of_someone_elses_job_is_the_admins_and_answered_in_that_chat(site: Site) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    admin = site.token(ADMIN, admin=True)
    response = await site.post(f"/job/{job.id}/rerun", admin, {"csrf": site.csrf(admin)})
    assert response.status == 303
    rerun = await site.rig.history.get(int(response.headers["Location"].removeprefix("/job/")))
    assert rerun.parent_id == job.id
    assert (rerun.owner.key, rerun.owner.chat_id, rerun.owner.name) == (ADMIN.key, ALICE.chat_id, "root")
    await site.rig.finished(rerun.id)


async def test_stars_are_per_person_and_filter_the_grid(site: Site) -> None:
    red = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    blue = await drawn(site.rig, f"/imagine a blue forest {FAST}")
    alice, admin = site.token(ALICE), site.token(ADMIN, admin=True)
    assert (await site.post(f"/job/{red.id}/star", alice, {"on": "1"})).status == 403
    response = await site.post(f"/job/{red.id}/star", alice, {"csrf": site.csrf(alice), "on": "1"})
    assert response.status == 303 and response.headers["Location"] == f"/job/{red.id}"
    status, text = await site.page("/gallery?starred=1", alice)
    assert f"/job/{red.id}" in text and f"/job/{blue.id}" not in text and "★" in text
    assert "unstar" in (await site.page(f"/job/{red.id}", alice))[1]
    status, text = await site.page("/gallery?starred=1", admin)  # the admin starred nothing
    assert "/job/" not in text
    await site.post(f"/job/{red.id}/star", alice, {"csrf": site.csrf(alice), "on": "0"})
    status, text = await site.page("/gallery?starred=1", alice)
    assert "/job/" not in text


async def test_delete_asks_first_then_removes_the_rows_and_the_files(site: Site) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse --n 2 {FAST}")
    keep = await drawn(site.rig, f"/imagine a blue forest {FAST}")
    animation = await drawn(site.rig, "/animate a city --mode zoom --frames 2 --size 64x64 --steps 2")
    alice = site.token(ALICE)
    files = [Path(image.path) for image in job.images]
    assert (await site.get(f"/thumb/{job.id}/1", alice)).status == 200
    status, text = await site.page(f"/job/{job.id}/delete", alice)
    assert status == 200 and f"delete #{job.id} and its files?" in text and "2 images" in text
    assert f'<form method="post" action="/job/{job.id}/delete">' in text
    assert (await site.post(f"/job/{job.id}/delete", alice, {})).status == 403
    assert await site.rig.history.get(job.id) is not None and all(path.exists() for path in files)

    response = await site.post(f"/job/{job.id}/delete", alice, {"csrf": site.csrf(alice)})
    assert response.status == 303 and response.headers["Location"] == "/gallery"
    assert await site.rig.history.get(job.id) is None and not any(path.exists() for path in files)
    assert (await site.get(f"/job/{job.id}", alice)).status == 404
    status, text = await site.page("/gallery", alice)
    assert f"/job/{job.id}\"" not in text and f"/job/{keep.id}" in text
    assert Path(keep.images[0].path).exists()

    folder = Path(animation.images[0].path).parent
    video = animation_video(animation)
    response = await site.post(f"/job/{animation.id}/delete", alice, {"csrf": site.csrf(alice)})
    assert response.status == 303 and not video.exists() and not folder.exists()
    assert folder.parent.exists()  # the day's folder stays


async def test_an_unfinished_job_is_not_deleted(site: Site) -> None:
    await site.rig.queue.stop()  # nothing runs: the job stays queued
    reply = await site.rig.ok(ALICE, f"/imagine a slow lighthouse {FAST}")
    alice = site.token(ALICE)
    response = await site.post(f"/job/{reply.job.id}/delete", alice, {"csrf": site.csrf(alice)})
    assert response.status == 303 and response.headers["Location"] == f"/job/{reply.job.id}"
    assert await site.rig.history.get(reply.job.id) is not None


# ---- every answer -------------------------------------------------------------------------------------------

async def test_every_answer_has_the_security_headers_and_errors_show_no_traceback(site: Site, monkeypatch) -> None:
    job = await drawn(site.rig, f"/imagine a red lighthouse {FAST}")
    alice = site.token(ALICE)
    answers = [await site.get("/gallery", alice), await site.get(f"/job/{job.id}", alice),
               await site.get(f"/image/{job.id}/1", alice), await site.get(f"/thumb/{job.id}/1", alice),
               await site.get("/"), await site.get("/gallery"), await site.get("/gallery?t=x"),
               await site.get("/nowhere", alice), await site.get(f"/job/{job.id}/rerun", alice),
               await site.post(f"/job/{job.id}/rerun", alice, {}), await site.get("/static/app.css")]
    assert [answer.status for answer in answers] == [200, 200, 200, 200, 303, 401, 403, 404, 405, 403, 200]
    for answer in answers:
        check_headers(answer)
    assert answers[0].headers["Cache-Control"] == "no-store"
    assert answers[2].headers["Content-Type"] == "image/png"

    def broken(*args, **kwargs):
        raise RuntimeError(f"the disk at {site.rig.service.images.root} is on fire")
    monkeypatch.setattr(Gallery, "page", broken)
    response = await site.get("/gallery", alice)
    text = await response.text()
    assert response.status == 500 and "something went wrong" in text
    assert "Traceback" not in text and "fire" not in text and str(site.rig.service.images.root) not in text
    check_headers(response)


async def test_the_frontend_serves_on_its_port_logs_no_token_and_stops_cleanly(rig: Rig, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.frontends.web")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = WebConfig(enabled=True, port=port)
    key = rig.service.config.storage.data_dir / web_links.SECRET_FILE
    async with WebFrontend(rig.service, config):
        assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
        token = make_token(load_secret(key.parent), Viewer(ALICE.key, "alice", False, time.time() + 60))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/gallery", allow_redirects=False) as response:
                assert response.status == 401
                check_headers(response)
            async with session.get(link(config.address, token), allow_redirects=False) as response:
                assert response.status == 303
        assert "GET /gallery 303" in caplog.text and token not in caplog.text
        with pytest.raises(EaselError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with WebFrontend(rig.service, config):
                pass
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
