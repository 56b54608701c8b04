"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol with aiohttp's websocket client.

    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.goto(url)
        await page.fill("input[name=q]", "forest")
        await page.submit("form")             # waits for the page it leads to
        assert await page.evaluate("document.title") == "..."

Every call has a timeout; the browser (its whole process group) is killed at exit, its stderr drained."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
from contextlib import asynccontextmanager, nullcontext, suppress
from typing import Any, AsyncIterator

import aiohttp

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
         "--remote-debugging-port=0", "--no-first-run", "--disable-extensions", "--mute-audio")


class BrowserError(RuntimeError):
    """The browser answered with an error, a page script threw, or something took longer than its timeout."""


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, ws: aiohttp.ClientWebSocketResponse, timeout: float):
        self.process, self.ws, self.timeout = process, ws, timeout
        self.log: list[str] = []  # the browser's stderr, for a failing test to show
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    @staticmethod
    def binary() -> str | None:
        return next((path for path in map(shutil.which, BINARIES) if path), None)

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @classmethod
    @asynccontextmanager
    async def launch(cls, timeout: float = 30) -> AsyncIterator[Browser]:
        binary = cls.binary()
        if binary is None:
            raise BrowserError(f"no browser on PATH (looked for {', '.join(BINARIES)})")
        with tempfile.TemporaryDirectory(prefix="easel-chromium-", ignore_cleanup_errors=True) as profile:
            process = await asyncio.create_subprocess_exec(
                binary, *FLAGS, f"--user-data-dir={profile}", "about:blank", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
            lines: list[str] = []
            drain = asyncio.create_task(_drain(process.stderr, lines))
            try:
                url = await _within(timeout, _listening(process, lines), "the browser to start")
                async with aiohttp.ClientSession() as http:
                    ws = await http.ws_connect(url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2))
                    browser = cls(process, ws, timeout)
                    browser.log = lines
                    try:
                        yield browser
                    finally:
                        await browser.close()
            finally:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: the renderers and the GPU process too
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), 10)
                drain.cancel()

    async def send(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float | None = None) -> dict:
        call = next(self._ids)
        message: dict[str, Any] = {"id": call, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._calls[call] = answer = asyncio.get_running_loop().create_future()
        try:
            await self.ws.send_str(json.dumps(message))
            return await _within(timeout or self.timeout, answer, method)
        finally:
            self._calls.pop(call, None)

    async def new_page(self, fresh: bool = False) -> Page:
        """A tab; `fresh`: in a context of its own (like an incognito window: no cookies of the other tabs)."""
        where = {}
        if fresh:
            where["browserContextId"] = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = (await self.send("Target.createTarget", {"url": "about:blank", **where}))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = self._pages[session] = Page(self, session, target)
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        with suppress(Exception):
            await asyncio.wait_for(self.ws.send_str(json.dumps({"id": 0, "method": "Browser.close"})), 2)
            await asyncio.wait_for(self.process.wait(), 5)
        self._reader.cancel()
        with suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if "id" in message:
                answer = self._calls.get(message["id"])
                if answer and not answer.done():
                    if "error" in message:
                        answer.set_exception(BrowserError(f"{message['error'].get('message')}: {message['error']}"))
                    else:
                        answer.set_result(message.get("result", {}))
            elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                page._event(message["method"], message.get("params", {}))
        for answer in self._calls.values():  # the browser went away: fail what waits, do not hang
            if not answer.done():
                answer.set_exception(BrowserError("the browser closed its DevTools connection"))


class Page:
    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target
        self.url = "about:blank"  # of the top frame, as last navigated
        self.status: int | None = None  # the HTTP status of the top frame's last document
        self.dialogs: list[str] = []  # alert/confirm/prompt messages, each accepted
        self.errors: list[str] = []  # uncaught exceptions, console.error, failed loads, CSP refusals
        self._waiters: list[tuple[str, asyncio.Future]] = []
        self._answering: set[asyncio.Task] = set()

    async def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return await self.browser.send(method, params, self.session, timeout)

    def _event(self, method: str, params: dict) -> None:
        if method == "Page.frameNavigated" and not params["frame"].get("parentId"):
            self.url = params["frame"]["url"]
        elif method == "Page.navigatedWithinDocument" and params.get("frameId") == self.target:
            self.url = params["url"]
        elif method == "Network.responseReceived" and params.get("type") == "Document" \
                and params.get("frameId") == self.target:
            self.status = params["response"]["status"]
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error" \
                and not params["entry"].get("url", "").endswith("/favicon.ico"):  # the browser's own fetch
            self.errors.append(f"{params['entry'].get('text')} ({params['entry'].get('url', '')})")
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            answer = asyncio.create_task(self.send("Page.handleJavaScriptDialog", {"accept": True}))
            self._answering.add(answer)  # held until done; a failure shows as the page's own timeout
            answer.add_done_callback(lambda task: (self._answering.discard(task), task.cancelled() or task.exception()))
        for waited, future in self._waiters:
            if waited == method and not future.done():
                future.set_result(params)

    @asynccontextmanager
    async def loads(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Wait, on leaving the block, for the top frame's next load event (what the block did led to)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter := ("Page.loadEventFired", future))
        try:
            yield
            await _within(timeout or self.browser.timeout, future, f"a page to load (at {self.url})")
        finally:
            self._waiters.remove(waiter)

    async def goto(self, url: str, timeout: float | None = None) -> None:
        async with self.loads(timeout):
            answer = await self.send("Page.navigate", {"url": url}, timeout)
            if answer.get("errorText"):
                raise BrowserError(f"could not open {url}: {answer['errorText']}")

    async def evaluate(self, js: str, timeout: float | None = None) -> Any:
        answer = await self.send("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True,
                                                      "userGesture": True}, timeout)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"{js!r} threw: {details.get('exception', {}).get('description') or details}")
        return answer["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = 10, every: float = 0.05) -> Any:
        """Poll the JavaScript expression until it is truthy (in JavaScript: a DOM node is); return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (answer := await self.evaluate(f"(value => [!!value, value])({condition})"))[0]:
            if loop.time() > deadline:
                raise BrowserError(f"waited {timeout} s for {condition!r} at {self.url}")
            await asyncio.sleep(every)
        return answer[1]

    async def _on(self, selector: str, js: str) -> Any:
        """Run `js` with `el`, the first element `selector` matches; none is an error."""
        quoted = json.dumps(selector)
        return await self.evaluate(f"(() => {{ const el = document.querySelector({quoted});"
                                   f" if (!el) throw new Error('nothing matches ' + {quoted}); {js} }})()")

    async def click(self, selector: str, navigates: bool = False) -> None:
        """Click the first match; with `navigates`, return once the page it leads to has loaded."""
        async with self.loads() if navigates else nullcontext():
            await self._on(selector, "el.scrollIntoView(); el.click();")

    async def fill(self, selector: str, text: str) -> None:
        await self._on(selector, f"el.focus(); el.value = {json.dumps(text)}; for (const kind of ['input', 'change'])"
                                 " el.dispatchEvent(new Event(kind, {bubbles: true}));")

    async def submit(self, form_selector: str, navigates: bool = True) -> None:
        """Submit the form as its submit button would (validation, submit handlers); wait for what it loads."""
        async with self.loads() if navigates else nullcontext():
            await self._on(form_selector, "(el.form || el).requestSubmit();")

    async def text(self, selector: str = "body") -> str:
        """What the element shows (innerText)."""
        return await self._on(selector, "return el.innerText;")

    async def visible(self, selector: str) -> bool:
        """Whether the element is rendered with a size (not display:none, visibility:hidden or zero-sized)."""
        return await self._on(selector, "const box = el.getBoundingClientRect(); return box.width * box.height > 0"
                                        " && el.checkVisibility({visibilityProperty: true, opacityProperty: true});")

    async def cookies(self) -> list[dict]:
        return (await self.send("Network.getCookies"))["cookies"]


async def _within(seconds: float, awaitable, what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise BrowserError(f"waited {seconds} s for {what}") from None


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip())
        del lines[:-200]


async def _listening(process: asyncio.subprocess.Process, lines: list[str]) -> str:
    while True:
        for line in lines:
            if found := re.search(r"DevTools listening on (ws://\S+)", line):
                return found.group(1)
        if process.returncode is not None:
            raise BrowserError(f"the browser exited ({process.returncode}): " + "\n".join(lines[-20:]))
        await asyncio.sleep(0.02)

