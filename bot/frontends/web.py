"""The web gallery: everything easel drew, in a browser, served by aiohttp in easel's own event loop.

Nothing is public. A signed, expiring link from /gallery (bot/frontends/web_links.py) becomes a session cookie;
people see their own jobs, admins everyone's. URLs carry job ids, never paths: a file is served only where the
database names it and it lies inside the data folder. Actions are POST forms with a per-session CSRF token and run
through the Service as the chat commands do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.commands.rerun import MAX_JOB_ID
from bot.config import WebConfig
from bot.formatting import describe, title, who, without_paths
from bot.frontends import web_pages
from bot.frontends.pacing import clip
from bot.frontends.results import is_animation
from bot.frontends.web_links import Viewer, b64url_decode, b64url_encode, csrf_ok, csrf_token, load_secret, \
    read_token
from bot.replies import Reply
from bot.service import Service
from storage.errors import EaselError
from storage.gallery import Gallery, GalleryQuery
from storage.images import animation_video
from storage.infotext import infotext, read_parameters
from storage.records import ImageRecord, JobRecord, JobStatus, Owner
from storage.thumbnails import thumbnail

log = logging.getLogger(__name__)

PAGE = 60  # jobs on one grid page
THUMB_SIDE = 320
MAX_QUERY = 500  # characters of a search or filter value
SESSION_COOKIE = "easel_session"
SAID_COOKIE = "easel_said"  # what an action answered, shown once on the page it leads to
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; script-src 'self'; "
                               "style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
FILE_CACHE = "private, max-age=3600"  # a job's files never change while it exists
FILE_TYPES = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".mp4": "video/mp4"}
NO_LINK = "open the gallery with the link /gallery gives you in any chat with easel"
BAD_LINK = "this link is not valid or has expired; ask for a new one with /gallery"
OPEN_ROUTES = {"gallery", "script", "style", "root"}  # every other route needs the session cookie


# Request storage: who the session cookie says is looking, and that cookie (the link's token, which the CSRF tokens
# are made from). Typed keys from aiohttp 3.14 on (which warns of plain ones); plain names before.
_KEY = getattr(web, "RequestKey", None)
VIEWER = _KEY("viewer", Viewer) if _KEY else "easel.viewer"
SESSION = _KEY("session", str) if _KEY else "easel.session"


class Refusal(Exception):
    """A request answered with a small error page: its status and a line for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found() -> Refusal:
    # The same answer for a job that does not exist and one that is someone else's: existence is not confirmed.
    return Refusal(404, "there is nothing here")


@dataclass(frozen=True)
class Filters:
    """The grid's filters as the form sends them (empty: not filtered)."""

    q: str = ""
    person: str = ""
    kind: str = ""
    model: str = ""
    lora: str = ""
    status: str = ""
    since: str = ""
    until: str = ""
    starred: bool = False
    before: int | None = None

    @classmethod
    def read(cls, query: Mapping[str, str], admin: bool) -> Filters:
        """The filters of a request; a value that cannot be one is refused with what is wrong."""
        values = {}
        for name in ("q", "person", "kind", "model", "lora", "status", "since", "until"):
            value = query.get(name, "").strip()
            if len(value) > MAX_QUERY:
                raise Refusal(400, f"{name} is at most {MAX_QUERY} characters, got {len(value)}")
            values[name] = value
        if not admin:
            values["person"] = ""  # a person sees their own jobs whatever the address says
        if values["status"] and values["status"] not in {status.value for status in JobStatus}:
            raise Refusal(400, f"status is one of {', '.join(status.value for status in JobStatus)}, "
                               f"got {values['status'][:40]!r}")
        for name in ("since", "until"):
            if values[name]:
                _day(name, values[name])
        before = query.get("before", "")
        if before and number(before, MAX_JOB_ID) is None:
            raise Refusal(400, f"before is a job number, got {before[:40]!r}")
        return cls(**values, starred=query.get("starred", "") == "1", before=number(before, MAX_JOB_ID))

    def query(self, viewer: Viewer) -> GalleryQuery:
        return GalleryQuery(
            viewer=None if viewer.admin else viewer.key, person=self.person or None, kind=self.kind or None,
            model=self.model or None, lora=self.lora or None, status=self.status or None,
            since=_day("since", self.since) if self.since else None,
            until=_day("until", self.until) if self.until else None,
            text=self.q or None, starred_by=viewer.key if self.starred else None, before=self.before,
            limit=PAGE + 1,  # one more than is shown: whether there is an older page
        )

    def address(self, before: int | None = None) -> str:
        """/gallery with these filters (and a page), for the paging links."""
        fields = {name: getattr(self, name) for name in ("q", "person", "kind", "model", "lora", "status", "since",
                                                         "until")}
        pairs = [(name, value) for name, value in fields.items() if value]
        if self.starred:
            pairs.append(("starred", "1"))
        if before is not None:
            pairs.append(("before", str(before)))
        return "/gallery" + (f"?{urlencode(pairs)}" if pairs else "")

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in ("q", "person", "kind", "model", "lora", "status", "since",
                                                    "until", "starred"))


def number(text: str, high: int) -> int | None:
    """A whole number 1…high written in ASCII digits ("²" is a digit to Python, and \\d matches it); else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(high)):
        return None
    value = int(text)
    return value if 1 <= value <= high else None


def _day(name: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Refusal(400, f"{name} is a date like 2025-05-01, got {text[:40]!r}") from None


@dataclass(frozen=True)
class Card:
    """One job in the grid."""

    id: int
    title: str
    kind: str
    status: str
    when: str
    owner: str
    thumb: str
    width: int
    height: int
    images: int
    starred: bool


@dataclass(frozen=True)
class Shown:
    """One image on a job page."""

    k: int
    seed: int
    url: str
    parameters: str


@dataclass(frozen=True)
class Related:
    """A job of the parent/child chain, as a link."""

    id: int
    label: str


def may_see(viewer: Viewer, job: JobRecord) -> bool:
    """A person sees their own jobs; an admin everyone's."""
    return viewer.admin or job.owner.key == viewer.key


def acting_owner(viewer: Viewer, job: JobRecord) -> Owner:
    """Who a page's action runs as: the job's own owner record when it is the viewer's (the result goes to the chat
    the job came from), else the admin, answered in the job's chat."""
    if job.owner.key == viewer.key:
        return dataclasses.replace(job.owner, admin=viewer.admin)
    _, _, user_id = viewer.key.partition(":")
    # The job's platform, so its chat is a chat there (the service lets a person act on jobs of the chat they are
    # in) and its frontend delivers the result.
    return Owner(job.owner.platform, user_id, chat_id=job.owner.chat_id, name=viewer.name, admin=True)


def inside(root: Path, path: str | Path) -> Path | None:
    """The file `path` names, resolved, where it is a file inside `root` (resolved); None for anything else: a
    symlink out of the data folder, a missing file, a folder. Touches the disk: call off the event loop."""
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    return real if real.is_relative_to(root) and real.is_file() else None


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _size(job: JobRecord) -> tuple[int, int] | None:
    width, height = getattr(job.params, "width", None), getattr(job.params, "height", None)
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return None


def _when(moment: datetime | None) -> str:
    """A recorded time as people read it: in UTC, as the history keeps it and the date filters take it."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(value: object, admin: bool) -> str:
    """A recorded value as the fields table shows it; server paths only to an admin."""
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(item) for item in value) or "—"
    elif isinstance(value, datetime):
        text = _when(value)
    else:
        text = str(value)
    return text if admin else without_paths(text)


def _person(job: JobRecord) -> str:
    return f"{who(job)} ({job.owner.platform})"


class Pages:
    """The gallery's request handlers, over one Service, Gallery and signing key."""

    def __init__(self, service: Service, gallery: Gallery, config: WebConfig, secret: bytes) -> None:
        self.service = service
        self.gallery = gallery
        self.config = config
        self._secret = secret
        self.root = service.images.root.resolve()
        self.thumbnails = service.images.root / "thumbnails"
        self.secure = config.address.startswith("https://")
        self.templates = web_pages.environment()

    def __repr__(self) -> str:  # never the key
        return f"Pages({self.config.address})"

    # ---- what every page shares --------------------------------------------------------------
    def render(self, request: web.Request | None, name: str, status: int = 200, **values: object) -> web.Response:
        viewer = request.get(VIEWER) if request is not None else None
        html = self.templates.get_template(name).render(viewer=viewer, said=values.pop("said", None), **values)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def error_page(self, request: web.Request, status: int, message: str) -> web.Response:
        headings = {400: "that cannot be shown", 401: "sign in with a link", 403: "not allowed", 404: "not found",
                    405: "not allowed", 413: "too large", 500: "something went wrong"}
        # Never a viewer's name on an error page (no request given): a refused request learns nothing.
        return self.render(None, "error.html", status, heading=headings.get(status, "error"), message=message)

    def viewer(self, request: web.Request) -> Viewer:
        """Who the session cookie says is looking; 401 without a valid one."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise Refusal(401, NO_LINK)
        viewer = read_token(self._secret, token, time.time())
        if viewer is None:
            raise Refusal(401, BAD_LINK)
        request[SESSION] = token
        return viewer

    def csrf(self, request: web.Request) -> str:
        return csrf_token(self._secret, request[SESSION])

    async def form(self, request: web.Request) -> Mapping[str, str]:
        """A POST's fields, once its CSRF token is checked: 403 (and nothing done) without the right one."""
        form = await request.post()
        given = form.get("csrf")
        if not isinstance(given, str) or not csrf_ok(self._secret, request[SESSION], given):
            raise Refusal(403, "this form is out of date or did not come from the gallery; reload the page and try "
                               "again")
        return {name: value for name, value in form.items() if isinstance(value, str)}

    async def job(self, request: web.Request) -> JobRecord:
        """The job the address names, where the viewer may see it; 404 for every other id."""
        job_id = number(request.match_info["job"], MAX_JOB_ID)
        if job_id is None:
            raise not_found()
        job = await self.gallery.get(job_id)
        if job is None or not may_see(request[VIEWER], job):
            raise not_found()
        return job

    def said(self, request: web.Request) -> dict | None:
        """What the last action answered, from its short-lived cookie."""
        raw = request.cookies.get(SAID_COOKIE)
        if not raw:
            return None
        with contextlib.suppress(ValueError, TypeError, KeyError):
            fields = json.loads(b64url_decode(raw))
            return {"text": str(fields["t"])[:1000], "error": bool(fields["e"])}
        return None

    def tell(self, response: web.StreamResponse, text: str, error: bool) -> web.StreamResponse:
        data = json.dumps({"t": text[:1000], "e": error}, separators=(",", ":")).encode()
        response.set_cookie(SAID_COOKIE, b64url_encode(data), max_age=60, path="/",
                            httponly=True, samesite="Strict", secure=self.secure)
        return response

    def see_other(self, location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location})

    # ---- the grid ----------------------------------------------------------------------------
    async def grid(self, request: web.Request) -> web.StreamResponse:
        if "t" in request.query:
            return self.arrive(request)
        viewer = request[VIEWER] = self.viewer(request)
        filters = Filters.read(request.query, viewer.admin)
        jobs = await self.gallery.page(filters.query(viewer))
        more, jobs = len(jobs) > PAGE, jobs[:PAGE]
        facets = await self.gallery.facets(None if viewer.admin else viewer.key)
        starred = await self.gallery.starred(viewer.key, [job.id for job in jobs]) if jobs else set()
        cards = [self.card(job, viewer, job.id in starred) for job in jobs]

        def options(known: Iterable[str], chosen: str) -> list[tuple[str, str]]:
            values = list(known)
            return [(value, value) for value in values] + ([(chosen, chosen)] if chosen and chosen not in values else [])

        people = list(facets.people)
        if filters.person and filters.person not in {key for key, _ in people}:
            people.append((filters.person, filters.person))
        shown = f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}" + (" (newest first)" if len(jobs) > 1 else "")
        if filters.before is not None:
            shown += f", older than #{filters.before}"
        if filters.any:
            empty = "no jobs match these filters; clear them to see all of " + ("everyone's" if viewer.admin else
                                                                                   "your") + " jobs"
        elif filters.before is not None:
            empty = "no older jobs"
        else:
            empty = "nothing here yet: draw something in a chat with /imagine a red lighthouse at dusk"
        response = self.render(
            request, "grid.html", said=self.said(request), filters=filters, cards=cards, shown=shown, empty=empty,
            people=people, kinds=options(facets.kinds, filters.kind),
            models=options(facets.models, filters.model), loras=options(facets.loras, filters.lora),
            statuses=[(status.value, status.value) for status in JobStatus],
            older=filters.address(jobs[-1].id) if more else "",
            newest=filters.address() if filters.before is not None else "",
        )
        return self.forget_said(request, response)

    def card(self, job: JobRecord, viewer: Viewer, starred: bool) -> Card:
        width, height = _fit(*(_size(job) or (THUMB_SIDE, THUMB_SIDE)), THUMB_SIDE)
        return Card(id=job.id, title=clip(title(job.params), 80), kind=job.params.kind,
                    status=str(job.status), when=_when(job.created_at), owner=_person(job) if viewer.admin else "",
                    thumb=f"/thumb/{job.id}/1" if job.images else "", width=width, height=height,
                    images=len(job.images), starred=starred)

    def arrive(self, request: web.Request) -> web.StreamResponse:
        """A link is opened: its token becomes the session cookie, and the address loses it."""
        token = request.query.get("t", "")
        now = time.time()
        viewer = read_token(self._secret, token, now)
        if viewer is None:
            raise Refusal(403, BAD_LINK)
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            # A click in a chat's web page: the cookie set now is not sent on a redirect of this navigation.
            response: web.Response = self.render(None, "arrive.html")
        else:
            response = self.see_other("/gallery")
        response.set_cookie(SESSION_COOKIE, token, max_age=max(1, int(viewer.expires - now)), path="/",
                            httponly=True, samesite="Strict", secure=self.secure)
        return response

    def forget_said(self, request: web.Request, response: web.Response) -> web.Response:
        if SAID_COOKIE in request.cookies:
            response.del_cookie(SAID_COOKIE, path="/", samesite="Strict", secure=self.secure, httponly=True)
        return response

    # ---- a job -------------------------------------------------------------------------------
    async def job_page(self, request: web.Request) -> web.StreamResponse:
        job = await self.job(request)
        viewer: Viewer = request[VIEWER]
        ancestors, children = await self.gallery.family(job.id)
        starred = job.id in await self.gallery.starred(viewer.key, [job.id])
        video = await asyncio.to_thread(self.video_of, job)
        shown = await asyncio.to_thread(self.shown_images, job)
        params = job.params
        response = self.render(
            request, "job.html", said=self.said(request), job=job, heading=title(params), kind=params.kind,
            summary=describe(params), owner=_person(job) if viewer.admin and job.owner.key != viewer.key else "",
            error=_value(job.error, viewer.admin) if job.error else "", starred=starred,
            ancestors=[Related(other.id, f"{other.params.kind}: {clip(title(other.params), 40)}") for other in ancestors
                       if may_see(viewer, other)],
            children=[Related(other.id, other.params.kind) for other in children if may_see(viewer, other)],
            more_steps=self.service.more_steps_target(params) or 0,
            video=video is not None, size=_size(job), images=shown,
            parameters="" if shown else self.rebuilt(job, None),
            fields=self.fields(job, viewer), csrf=self.csrf(request),
        )
        return self.forget_said(request, response)

    def video_of(self, job: JobRecord) -> Path | None:
        path = animation_video(job)
        return inside(self.root, path) if path is not None else None

    def shown_images(self, job: JobRecord) -> list[Shown]:
        """The job's images with their A1111 parameters: as the PNG carries them, else rebuilt from the record."""
        shown = []
        for k, image in enumerate(job.images, 1):
            text = None
            path = inside(self.root, image.path)
            if path is not None:
                try:
                    text = read_parameters(path)
                except Exception:  # a damaged file: the record still knows what drew it
                    log.warning("job #%d: the parameters of image %d cannot be read", job.id, k, exc_info=True)
            shown.append(Shown(k=k, seed=image.seed, url=f"/image/{job.id}/{k}",
                               parameters=text if text is not None else self.rebuilt(job, image)))
        return shown

    def rebuilt(self, job: JobRecord, image: ImageRecord | None) -> str:
        params, count = job.params, len(job.images)
        try:
            if image is None:
                return infotext(params, params.seed, job.run)
            return infotext(params.for_image(image.index, count), image.seed, job.run,
                            params.image_fields(image.index, count))
        except Exception:
            log.exception("job #%d: its parameters text cannot be rebuilt", job.id)
            return "(the parameters of this job cannot be shown; the details are in easel's log)"

    def fields(self, job: JobRecord, viewer: Viewer) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every recorded field, in sections."""
        admin = viewer.admin
        about = [("job", str(job.id)), ("kind", job.params.kind), ("status", str(job.status)),
                 ("parent", f"#{job.parent_id}" if job.parent_id else "—"), ("created", _when(job.created_at)),
                 ("started", _when(job.started_at)), ("finished", _when(job.finished_at))]
        if job.error:
            about.append(("error", _value(job.error, admin)))
        about += [("crashes", str(job.crashes)), ("delivered", "yes" if job.delivered else "no")]
        if admin:
            owner = job.owner
            about += [("owner", owner.name or owner.user_id), ("platform", owner.platform),
                      ("person", owner.key), ("chat", owner.chat_id or "—")]
        sections = [("job", about),
                    ("parameters", [(name, _value(value, admin)) for name, value in
                                    dataclasses.asdict(job.params).items()])]
        if job.run is not None:
            sections.append(("run", [(name, _value(value, admin)) for name, value in
                                     dataclasses.asdict(job.run).items()]))
        if job.images:
            sections.append(("images", [(f"image {k}", f"seed {image.seed} · "
                                         f"{image.path if admin else Path(image.path).name}")
                                        for k, image in enumerate(job.images, 1)]))
        return sections

    # ---- files -------------------------------------------------------------------------------
    def image_of(self, job: JobRecord, request: web.Request) -> ImageRecord:
        k = number(request.match_info["k"], len(job.images))
        if k is None:
            raise not_found()
        return job.images[k - 1]

    async def image(self, request: web.Request) -> web.StreamResponse:
        job = await self.job(request)
        path = await asyncio.to_thread(inside, self.root, self.image_of(job, request).path)
        return self.file(path)

    async def thumb(self, request: web.Request) -> web.StreamResponse:
        job = await self.job(request)
        image = self.image_of(job, request)

        def make() -> Path | None:
            path = inside(self.root, image.path)
            if path is None:
                return None
            try:
                return thumbnail(path, self.thumbnails, THUMB_SIDE)
            except Exception:  # not an image any more (damaged, replaced): no thumbnail, the page still works
                log.warning("job #%d: no thumbnail of image %d", job.id, image.index + 1, exc_info=True)
                return None

        made = await asyncio.to_thread(make)
        return self.file(await asyncio.to_thread(inside, self.root, made) if made is not None else None)

    async def video(self, request: web.Request) -> web.StreamResponse:
        job = await self.job(request)
        return self.file(await asyncio.to_thread(self.video_of, job))

    def file(self, path: Path | None) -> web.StreamResponse:
        # Only pictures and videos, whatever a row says: never the database or the key, even inside the data folder.
        kind = FILE_TYPES.get(path.suffix.lower()) if path is not None else None
        if path is None or kind is None:
            raise not_found()
        return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": FILE_CACHE})

    # ---- actions -----------------------------------------------------------------------------
    async def act(self, request: web.Request, run: Callable[[Owner, JobRecord, Mapping[str, str]], Awaitable[Reply]]
                  ) -> web.StreamResponse:
        form = await self.form(request)
        job = await self.job(request)
        viewer: Viewer = request[VIEWER]
        reply = await run(acting_owner(viewer, job), job, form)
        text = reply.text if viewer.admin else without_paths(reply.text)
        target = reply.job.id if reply.job is not None and not reply.error else job.id
        return self.tell(self.see_other(f"/job/{target}"), text, reply.error)

    async def rerun(self, request: web.Request) -> web.StreamResponse:
        return await self.act(request, lambda owner, job, form: self.service.handle(owner, f"/rerun #{job.id}"))

    async def more(self, request: web.Request) -> web.StreamResponse:
        return await self.act(request, lambda owner, job, form: self.service.more_steps(owner, job.id))

    async def upscale(self, request: web.Request) -> web.StreamResponse:
        async def run(owner: Owner, job: JobRecord, form: Mapping[str, str]) -> Reply:
            return await self.service.handle(owner, f"/upscale #{job.id} {self.image_number(job, form)}")
        return await self.act(request, run)

    async def vary(self, request: web.Request) -> web.StreamResponse:
        async def run(owner: Owner, job: JobRecord, form: Mapping[str, str]) -> Reply:
            variation = form.get("variation", "subtle")
            if variation not in ("subtle", "strong"):
                raise Refusal(400, f"a variation is subtle or strong, got {variation[:40]!r}")
            return await self.service.handle(owner, f"/vary #{job.id} {self.image_number(job, form)} {variation}")
        return await self.act(request, run)

    @staticmethod
    def image_number(job: JobRecord, form: Mapping[str, str]) -> int:
        text = form.get("image", "1")
        k = number(text, max(1, len(job.images)))
        if k is None:
            raise Refusal(400, f"job #{job.id} has no image {text[:20]!r}")
        return k

    async def star(self, request: web.Request) -> web.StreamResponse:
        form = await self.form(request)
        job = await self.job(request)
        await self.gallery.star(job.id, request[VIEWER].key, form.get("on", "1") == "1")
        return self.see_other(f"/job/{job.id}")

    async def confirm_delete(self, request: web.Request) -> web.StreamResponse:
        job = await self.job(request)  # one the viewer may see is one they may delete: theirs, or anyone's for an admin
        count = len(job.images)
        files = f"{count} image{'s' if count != 1 else ''}" + (" and its video" if job.params.slices > 1 else "")
        return self.render(request, "confirm.html", job=job, heading=title(job.params), files=files,
                           csrf=self.csrf(request))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        await self.form(request)
        job = await self.job(request)
        if not job.status.finished or self.service.position(job.id) is not None:
            return self.tell(self.see_other(f"/job/{job.id}"),
                             f"job #{job.id} is {job.status}; cancel it first (/cancel {job.id}), then delete it", True)
        folder = Path(job.images[0].path).parent if is_animation(job) else None
        files = await self.gallery.delete(job.id)  # its images and, for an animation, its video
        removed = await asyncio.to_thread(self.remove, files, folder)
        log.info("job #%d deleted from the web gallery by %s (%d files)", job.id, request[VIEWER].key, removed)
        return self.tell(self.see_other("/gallery"), f"deleted #{job.id} and {removed} file{'s' * (removed != 1)}",
                         False)

    def remove(self, files: Iterable[Path | str], folder: Path | None) -> int:
        """Remove a deleted job's files (only inside the data folder), then its own folder once empty."""
        removed = 0
        for path in {inside(self.root, file) for file in files} - {None}:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:
                log.warning("a file of a deleted job cannot be removed: %s", path, exc_info=True)
        if folder is not None:
            real = Path(folder).resolve()
            if real != self.root and real.is_relative_to(self.root):
                with contextlib.suppress(OSError):  # not empty (a file of someone's own), or gone already
                    real.rmdir()
        return removed

    # ---- static ------------------------------------------------------------------------------
    async def script(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=web_pages.SCRIPT, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def style(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=web_pages.STYLE, content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    # ---- middleware --------------------------------------------------------------------------
    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """Every answer: the session checked, errors as small pages (never a traceback), the security headers."""
        try:
            route = request.match_info.route
            if request.match_info.http_exception is None and route.name not in OPEN_ROUTES:
                request[VIEWER] = self.viewer(request)
            response = await handler(request)
        except EaselError as exc:  # a refusal of the storage layer (a filter that cannot be), safe to show
            response = self.error_page(request, 400, str(exc))
        except Refusal as refusal:
            response = self.error_page(request, refusal.status, refusal.message)
            if refusal.status == 401 and SESSION_COOKIE in request.cookies:
                response.del_cookie(SESSION_COOKIE, path="/", samesite="Strict", secure=self.secure, httponly=True)
        except web.HTTPException as exc:
            if exc.status >= 400:
                message = {404: "there is nothing here", 405: "that is not something this address does"}
                response = self.error_page(request, exc.status, message.get(exc.status, exc.reason))
            else:
                response = web.Response(status=exc.status, headers=exc.headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("web gallery: %s %s failed", request.method, request.path)
            response = self.error_page(request, 500, "something went wrong; the details are in easel's log")
        response.headers.update(HEADERS)
        if response.content_type == "text/html" or response.status >= 300:
            response.headers["Cache-Control"] = "no-store"  # a private page stays out of shared caches and history
        return response


def make_app(service: Service, gallery: Gallery, config: WebConfig, secret: bytes) -> web.Application:
    """The gallery as an aiohttp application (served by WebFrontend; tests drive it with aiohttp's test client)."""
    pages = Pages(service, gallery, config, secret)
    app = web.Application(middlewares=[pages.guard], client_max_size=64 * 1024)  # forms only: nothing is uploaded
    app.router.add_get("/gallery", pages.grid, name="gallery")
    app.router.add_get(r"/job/{job:\d+}", pages.job_page)
    app.router.add_get(r"/job/{job:\d+}/delete", pages.confirm_delete)
    app.router.add_post(r"/job/{job:\d+}/delete", pages.delete)
    app.router.add_post(r"/job/{job:\d+}/rerun", pages.rerun)
    app.router.add_post(r"/job/{job:\d+}/more", pages.more)
    app.router.add_post(r"/job/{job:\d+}/upscale", pages.upscale)
    app.router.add_post(r"/job/{job:\d+}/vary", pages.vary)
    app.router.add_post(r"/job/{job:\d+}/star", pages.star)
    app.router.add_get(r"/image/{job:\d+}/{k:\d+}", pages.image)
    app.router.add_get(r"/thumb/{job:\d+}/{k:\d+}", pages.thumb)
    app.router.add_get(r"/video/{job:\d+}", pages.video)
    app.router.add_get("/static/app.js", pages.script, name="script")
    app.router.add_get("/static/app.css", pages.style, name="style")
    app.router.add_get("/", lambda request: pages.see_other("/gallery"), name="root")
    return app


class _AccessLog(AbstractAccessLogger):
    """One debug line per request, without the query: a link's token never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("%s %s %s (%.0f ms)", request.method, request.path, response.status, time * 1000)


class WebFrontend:
    """The gallery served on [web] host:port while easel runs: `async with WebFrontend(service, config.web):`."""

    def __init__(self, service: Service, config: WebConfig) -> None:
        self.service = service
        self.config = config
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> WebFrontend:
        secret = await asyncio.to_thread(load_secret, self.service.config.storage.data_dir)
        app = make_app(self.service, Gallery(self.service.history), self.config, secret)
        runner = web.AppRunner(app, handle_signals=False, access_log_class=_AccessLog, access_log=log,
                               shutdown_timeout=5)  # a video still streaming does not hold up easel's stop
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise EaselError(f"the web gallery cannot listen on {self.config.host}:{self.config.port} "
                             f"({exc.strerror or exc}); set another [web] port or host") from None
        self._runner = runner
        log.info("web gallery listening on %s:%d; links point to %s", self.config.host, self.config.port,
                 self.config.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

