"""The web gallery in a real headless Chromium (tests/browser.py): what a person sees through a /gallery link.

The first test proves the browser harness itself against a little aiohttp app of its own; the rest drive the
real web app (bot/frontends/web.py) over a real Service drawing with the tiny model."""

from __future__ import annotations

import asyncio
import io
import socket
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from PIL import Image

from bot.config import WebConfig
from bot.frontends.web import make_app
from bot.frontends.web_links import load_secret
from generation.queue import EventKind
from storage.gallery import Gallery
from tests.bot.rig import ALICE, BOB, FAST
from tests.browser import Browser, BrowserError
from tests.helpers import eventually

NO_BROWSER = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
pytestmark = [
    pytest.mark.slow,  # each test starts a browser (tests/conftest.py: "slow means it starts a process")
    # Before any fixture: the tiny model and the drawings are not made for a test that cannot run.
    pytest.mark.skipif(not Browser.available(), reason=NO_BROWSER),
]

# Every <img> on the page has loaded, with pixels.
IMAGES_LOADED = "[...document.images].every(img => img.complete && img.naturalWidth > 0)"


@pytest.fixture
async def browser():
    if not Browser.available():
        pytest.skip(NO_BROWSER)
    async with Browser.launch() as launched:
        yield launched


@asynccontextmanager
async def serving(app: web.Application):
    """The app on 127.0.0.1, on a port of its own; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# ---- the harness ------------------------------------------------------------------------------------------

def harness_app(posted: list[str]) -> web.Application:
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5), "red").save(buffer, format="PNG")

    async def home(request: web.Request) -> web.Response:
        response = web.Response(content_type="text/html", text="""<!doctype html><title>home</title>
            <img id="dot" src="/dot.png"> <a id="next" href="/search?q=linked">next</a>
            <p id="hidden" style="display: none">hidden</p>
            <form id="search" action="/search"><input name="q" required></form>
            <form id="post" method="post" action="/post" onsubmit="return confirm('sure?')">
              <input type="hidden" name="token" value="t0k"><button id="go">go</button></form>""")
        response.set_cookie("seen", "yes", httponly=True, samesite="Strict")
        return response

    async def search(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f"<title>search</title><p id=q>{request.query['q']}</p>")

    async def post(request: web.Request) -> web.Response:
        form = await request.post()
        posted.append(form["token"])
        raise web.HTTPSeeOther(f"/posted/{len(posted)}")

    async def posted_page(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f"<p>posted {request.match_info['n']}</p>")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text="<script>nowhere.to.be.found()</script><img src=/gone.png>")

    async def strict(request: web.Request) -> web.Response:  # what the gallery's CSP would refuse
        return web.Response(content_type="text/html", text="<script>document.title = 'ran'</script>",
                            headers={"Content-Security-Policy": "script-src 'self'"})

    async def locked(request: web.Request) -> web.Response:
        return web.Response(status=401, content_type="text/html", text="<h1>no link, no gallery</h1>")

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/dot.png", lambda request: web.Response(body=buffer.getvalue(), content_type="image/png"))
    app.router.add_get("/search", search)
    app.router.add_post("/post", post)
    app.router.add_get("/posted/{n}", posted_page)
    app.router.add_get("/locked", locked)
    app.router.add_get("/broken", broken)
    app.router.add_get("/strict", strict)
    return app


async def test_the_harness_loads_pages_runs_scripts_fills_and_submits_forms(browser: Browser) -> None:
    posted: list[str] = []
    app = harness_app(posted)
    async with serving(app) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/")
        assert (page.url, page.status) == (f"{base}/", 200)
        assert await page.evaluate("document.title") == "home"
        assert await page.wait_for(IMAGES_LOADED, timeout=5)
        assert await page.evaluate("document.getElementById('dot').naturalWidth") == 7
        assert await page.evaluate("Promise.resolve(6 * 7)") == 42  # awaited
        assert await page.visible("#dot") and not await page.visible("#hidden")
        assert [(c["name"], c["value"], c["httpOnly"]) for c in await page.cookies()] == [("seen", "yes", True)]

        await page.fill("#search input[name=q]", "forest")
        await page.submit("#search")
        assert (page.url, await page.text("#q")) == (f"{base}/search?q=forest", "forest")

        await page.goto(f"{base}/")
        await page.click("#next", navigates=True)
        assert await page.text("#q") == "linked"

        await page.goto(f"{base}/")
        await page.click("#go", navigates=True)  # the confirm() is accepted, the 303 followed
        assert page.dialogs == ["sure?"]
        assert posted == ["t0k"] and page.url == f"{base}/posted/1" and page.status == 200
        assert "posted 1" in await page.text()

        await page.goto(f"{base}/locked")
        assert page.status == 401 and "no link" in await page.text()
        assert page.errors == [f"Failed to load resource: the server responded with a status of 401 (Unauthorized) "
                               f"({base}/locked)"]

        await page.goto(f"{base}/broken")
        await page.wait_for("[...document.images].every(img => img.complete)")
        assert any("nowhere is not defined" in error for error in page.errors)
        assert any(error.endswith(f"({base}/gone.png)") for error in page.errors)

        await page.goto(f"{base}/strict")
        assert await page.evaluate("document.title") == ""
        assert any("Content Security Policy" in error for error in page.errors), page.errors

        other = await browser.new_page(fresh=True)  # a window of its own: alone with its cookies
        await other.goto(f"{base}/search?q=x")
        assert await other.cookies() == [] and other.errors == [] and len(await page.cookies()) == 1

        with pytest.raises(BrowserError, match="nothing matches"):
            await page.click("#missing")
        with pytest.raises(BrowserError, match="threw"):
            await page.evaluate("undefinedName.x")
        with pytest.raises(BrowserError, match="waited 0.2 s"):
            await page.wait_for("false", timeout=0.2)


# ---- the gallery ------------------------------------------------------------------------------------------

CARDS = "[...document.querySelectorAll('.grid .card > a')].map(a => a.getAttribute('href'))"  # /job/N, in order
THUMBS = "[...document.images].map(img => img.getAttribute('src'))"


def card_ids(hrefs: list[str]) -> list[int]:
    return [int(href.rsplit("/", 1)[1]) for href in hrefs]


@pytest.fixture
async def gallery_site(make_rig):
    """A Service that has drawn two jobs for alice and one for bob, and the gallery over it on 127.0.0.1."""
    with socket.socket() as sock:  # bound before the app is made, so its config can name the port
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = WebConfig(enabled=True, base_url=base)
        rig = await make_rig(web=config)
        await rig.queue.start()
        jobs = {}
        for owner, prompt in ((ALICE, "a red lighthouse"), (BOB, "a blue boat"), (ALICE, "a green forest")):
            jobs[prompt] = (await rig.ok(owner, f"/imagine {prompt} {FAST}")).job.id
        for job_id in jobs.values():
            assert (await rig.finished(job_id)).kind == EventKind.DONE
        app = make_app(rig.service, Gallery(rig.history), config,
                       await asyncio.to_thread(load_secret, rig.service.config.storage.data_dir))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield rig, base, jobs
        finally:
            await runner.cleanup()


async def test_a_person_sees_their_thumbnails_searches_and_reruns_from_a_job_page(browser: Browser,
                                                                                    gallery_site) -> None:
    rig, base, jobs = gallery_site
    lighthouse, boat, forest = jobs["a red lighthouse"], jobs["a blue boat"], jobs["a green forest"]
    reply = await rig.say(ALICE, "/gallery")  # the link as a chat gives it
    assert not reply.error and reply.private
    url = reply.text.rsplit(" ", 1)[-1]
    assert url.startswith(f"{base}/gallery?t=")

    page = await browser.new_page()
    await page.goto(url)
    # The link's token became a cookie and left the address bar.
    assert (page.url, page.status) == (f"{base}/gallery", 200)
    assert await page.wait_for(IMAGES_LOADED, timeout=15)
    assert card_ids(await page.evaluate(CARDS)) == [forest, lighthouse]  # newest first, none of bob's
    assert sorted(await page.evaluate(THUMBS)) == [f"/thumb/{lighthouse}/1", f"/thumb/{forest}/1"]
    assert await page.evaluate("[...document.images].map(img => img.naturalWidth)") == [64, 64]
    assert "a blue boat" not in await page.text()
    assert page.errors == []  # nothing refused by the CSP, no script errors

    await page.fill("form.filters input[name=q]", "forest")
    await page.submit("form.filters")
    assert page.url.startswith(f"{base}/gallery?q=forest")
    assert card_ids(await page.evaluate(CARDS)) == [forest]
    assert await page.wait_for(IMAGES_LOADED, timeout=15)
    assert await page.evaluate(THUMBS) == [f"/thumb/{forest}/1"]

    await page.click(f".grid a[href='/job/{forest}']", navigates=True)
    assert (page.url, page.status) == (f"{base}/job/{forest}", 200)
    assert await page.wait_for(IMAGES_LOADED, timeout=15)
    assert await page.evaluate(THUMBS) == [f"/image/{forest}/1"]
    assert await page.visible("#parameters-1")
    parameters = await page.text("#parameters-1")
    assert parameters.startswith("a green forest") and "Steps: 2" in parameters and "Size: 64x64" in parameters
    # The copy button copies it, or (no clipboard in this browser) selects it for Ctrl+C.
    await page.click("button[data-copy='parameters-1']")
    said = await page.wait_for("['Copied', 'Selected: press Ctrl+C'].includes(document.querySelector("
                               "\"button[data-copy='parameters-1']\").textContent) && "
                               "document.querySelector(\"button[data-copy='parameters-1']\").textContent")
    if said == "Copied":
        await browser.send("Browser.grantPermissions", {"origin": base, "permissions": ["clipboardReadWrite"]})
        assert await page.evaluate("navigator.clipboard.readText()") == parameters
    else:
        assert "Steps: 2" in await page.evaluate("String(window.getSelection())")

    before = set(await rig.all_jobs())
    await page.click(f"form[action='/job/{forest}/rerun'] button", navigates=True)

    async def queued() -> set[int]:
        return set(await rig.all_jobs()) - before
    new = await eventually(queued, 30, "the rerun to be in the history")
    assert len(new) == 1, new
    rerun = new.pop()
    assert (await rig.history.get(rerun)).parent_id == forest
    assert (page.url, page.status) == (f"{base}/job/{rerun}", 200)
    assert f"#{rerun}" in await page.text("h1") and f"#{rerun}" in await page.text(".said")
    assert (await rig.finished(rerun)).kind == EventKind.DONE
    await page.goto(page.url)
    assert await page.wait_for(IMAGES_LOADED, timeout=15)
    assert "Steps: 2" in await page.text("#parameters-1") and page.errors == []

    # Bob's job is not there for alice, even by its number.
    await page.goto(f"{base}/job/{boat}")
    assert page.status == 404 and "a blue boat" not in await page.text()


async def test_without_the_link_the_gallery_shows_nothing(browser: Browser, gallery_site) -> None:
    rig, base, jobs = gallery_site
    page = await browser.new_page(fresh=True)
    await page.goto(f"{base}/gallery")
    assert page.status == 401
    assert "sign in with a link" in await page.text("h1")
    assert await page.evaluate("document.images.length") == 0
    assert await page.evaluate("document.querySelectorAll('.card').length") == 0
    for path in (f"/thumb/{jobs['a red lighthouse']}/1", f"/job/{jobs['a green forest']}"):
        await page.goto(base + path)
        assert page.status == 401 and "lighthouse" not in await page.text() and "forest" not in await page.text()
    assert await page.cookies() == []


async def test_a_link_clicked_on_another_site_still_opens_the_gallery(browser: Browser, gallery_site) -> None:
    """A chat's web client (Discord in a browser) is another site: the SameSite=Strict cookie its click sets is not
    sent on that navigation's redirect, so the gallery answers with a page that moves on by itself."""
    rig, base, jobs = gallery_site
    url = (await rig.say(ALICE, "/gallery")).text.rsplit(" ", 1)[-1]

    async def chat(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f'<p>your link: <a id="link" href="{url}">{url}</a></p>')

    app = web.Application()
    app.router.add_get("/", chat)
    async with serving(app) as elsewhere:
        page = await browser.new_page(fresh=True)
        await page.goto(elsewhere.replace("127.0.0.1", "localhost") + "/")  # another site, not only another port
        await page.click("#link")
        await page.wait_for("location.pathname === '/gallery' && !location.search && document.querySelector('.grid')")
        assert await page.wait_for(IMAGES_LOADED, timeout=15)
        assert card_ids(await page.evaluate(CARDS)) == [jobs["a green forest"], jobs["a red lighthouse"]]
