"""The web gallery's view of the history: pages of jobs newest first, filtered and searched, the choices its
filter menus offer, a job's parent/child chain, stars, and deleting a finished job."""

from __future__ import annotations

import datetime
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from storage.errors import EaselError
from storage.history import History, _now
from storage.images import animation_video
from storage.params import kinds as registered_kinds
from storage.records import JobRecord, JobStatus
from storage.schema import MODEL

MAX_LIMIT = 500
# Each word of a search costs its own look-up: a whole pasted prompt is fine (a few ms), a book is not.
MAX_WORDS = 200
# What a job's params hold as its model when it drew with the default one: "default", or "" in jobs from
# before the model library.
DEFAULT_MODELS = ("", "default")
# SQLite allows 32,766 variables in one statement; `starred` asks in slices well below that.
_IDS_PER_QUERY = 500
# A search matching at most this many jobs (or someone's stars, as many) is read from its matches, newest first,
# each checked against the other filters (a few ms); one matching more is a check on the jobs the other filters
# find.
_FEW = 2000
# A parent chain longer than this is a damaged database (a loop), not a real history.
_MAX_ANCESTORS = 10_000


class GalleryError(EaselError):
    """A gallery request that cannot be done (a job still queued or running cannot be deleted); safe to show."""


@dataclass(frozen=True)
class GalleryQuery:
    """Which jobs a gallery page shows. Person keys are Owner.key ("platform:user_id"); an empty string in a
    filter (person, kind, lora, status, text, starred_by) means no filter, as an empty form field does (for
    text: one of spaces too)."""

    viewer: str | None  # only this person's jobs; None: everyone's (an admin)
    person: str | None = None  # only this person's jobs (an admin's filter)
    kind: str | None = None
    model: str | None = None  # params' model name ("" and "default" both mean the default model)
    lora: str | None = None  # a LoRA name as in jobs.loras
    status: str | None = None  # a JobStatus value
    since: datetime.date | None = None  # UTC day, inclusive
    until: datetime.date | None = None  # UTC day, inclusive
    text: str | None = None  # words that must all appear in the prompt, negative prompt or LoRAs; the last a prefix
    starred_by: str | None = None  # only jobs this person starred
    before: int | None = None  # keyset: only jobs with id < before (the last id of the page before)
    limit: int = 60

    def __post_init__(self) -> None:
        if self.viewer is not None:
            _split_key(self.viewer, "viewer")  # "" must never read as None: that would be an admin's view
        for name in ("person", "starred_by"):
            if getattr(self, name):
                _split_key(getattr(self, name), name)
        if self.status and self.status not in {status.value for status in JobStatus}:
            raise GalleryError(f"status must be one of {', '.join(JobStatus)}, got {self.status!r}")
        words = len(_search_words(self.text)) if self.text else 0
        if words > MAX_WORDS:
            raise GalleryError(f"a search takes at most {MAX_WORDS} different words, got {words}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise GalleryError(f"limit must be 1–{MAX_LIMIT}, got {self.limit}")


@dataclass(frozen=True)
class Facets:
    """What the filter menus offer: only values found in jobs the viewer may see."""

    people: list[tuple[str, str]]  # (Owner.key, shown name), by name
    kinds: list[str]  # in the order /help lists kinds
    models: list[str]  # "default" for the default model
    loras: list[str]


class Gallery:
    """Read and change the history as the web gallery needs, on the History's own connection."""

    def __init__(self, history: History) -> None:
        self._history = history

    async def page(self, query: GalleryQuery) -> list[JobRecord]:
        """Up to query.limit jobs, newest first, each with its images; the next page: before=last id."""
        search = None
        if query.text and not query.text.isspace():
            search = search_expression(query.text)
            if search is None:
                return []  # nothing in it to look for ("!!!")
        # The fewer of a search's matches and the person's stars lead, when they are few enough.
        sizes = []
        if search is not None:
            sizes.append((await self._count("SELECT 1 FROM jobs_fts WHERE jobs_fts MATCH ?", search), "search"))
        if query.starred_by:
            sizes.append((await self._count("SELECT 1 FROM stars WHERE platform=? AND user_id=?",
                                            *_split_key(query.starred_by, "starred_by")), "stars"))
        lead = min(sizes)[1] if sizes and min(sizes)[0] <= _FEW else None
        terms, args = _where(query, search, lead)
        return await self._history._select(
            f"WHERE {' AND '.join(terms) or '1'} ORDER BY id DESC LIMIT ?", (*args, query.limit))

    async def facets(self, viewer: str | None) -> Facets:
        """The people, kinds, models and LoRAs of the jobs `viewer` may see (None: everyone's)."""
        owner, args = ("", ())
        if viewer is not None:
            owner, args = "WHERE platform=? AND user_id=?", _split_key(viewer, "viewer")
        people = await self._rows(
            f"""SELECT platform, user_id, user_name FROM jobs
                WHERE id IN (SELECT MAX(id) FROM jobs {owner} GROUP BY platform, user_id)""", args)
        # One pass over the index made for this (storage.schema's jobs_facets), in its order: these columns, in
        # this order, let SQLite read nothing else and need no sorting.
        combos = await self._rows(f"SELECT DISTINCT platform, user_id, kind, {MODEL}, loras FROM jobs {owner}",
                                  args)
        order = {kind: n for n, kind in enumerate(registered_kinds())}
        return Facets(
            people=sorted(((f"{p}:{u}", name or u) for p, u, name in people), key=lambda k: (k[1].casefold(), k[0])),
            kinds=sorted({kind for _, _, kind, _, _ in combos}, key=lambda k: (order.get(k, len(order)), k)),
            models=sorted({model or "default" for *_, model, _ in combos if model is not None}, key=str.casefold),
            loras=sorted({name for *_, loras in combos for name in lora_names(loras)}, key=str.casefold),
        )

    async def get(self, job_id: int) -> JobRecord | None:
        """A job by number, whoever's it is: the caller checks that the viewer may see it."""
        return await self._history.get(job_id)

    async def family(self, job_id: int) -> tuple[list[JobRecord], list[JobRecord]]:
        """(its ancestors, oldest first, by parent_id; its children, oldest first): the reruns, variations and
        upscales it came from and led to, whoever's they are."""
        rows = await self._rows(
            """WITH RECURSIVE chain(id, depth) AS (
                   SELECT parent_id, 1 FROM jobs WHERE id=? AND parent_id IS NOT NULL
                   UNION ALL
                   SELECT jobs.parent_id, depth + 1 FROM jobs JOIN chain ON jobs.id = chain.id
                   WHERE jobs.parent_id IS NOT NULL AND depth < ?
               ) SELECT id FROM chain ORDER BY depth DESC""", (job_id, _MAX_ANCESTORS))
        order = {row[0]: n for n, row in enumerate(rows)}
        ancestors = await self._history._select(
            f"WHERE id IN ({','.join('?' * len(order))})", tuple(order)) if order else []
        ancestors.sort(key=lambda job: order[job.id])
        children = await self._history._select("WHERE parent_id=? ORDER BY id", (job_id,))
        return ancestors, children

    async def star(self, job_id: int, person: str, on: bool) -> None:
        """Star (on) or unstar a job for a person; doing it twice is the same as once."""
        platform, user_id = _split_key(person, "person")
        async with self._history._transaction() as db:
            if on:
                if not await (await db.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,))).fetchone():
                    raise GalleryError(f"job #{job_id} is not in the history")
                await db.execute("INSERT OR IGNORE INTO stars (job_id, platform, user_id, created_at) VALUES (?,?,?,?)",
                                 (job_id, platform, user_id, _now()))
            else:
                await db.execute("DELETE FROM stars WHERE job_id=? AND platform=? AND user_id=?",
                                 (job_id, platform, user_id))

    async def starred(self, person: str, job_ids: Iterable[int]) -> set[int]:
        """Which of these jobs the person has starred."""
        platform, user_id = _split_key(person, "person")
        ids = list(dict.fromkeys(job_ids))
        found: set[int] = set()
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            rows = await self._rows(
                f"SELECT job_id FROM stars WHERE platform=? AND user_id=? AND job_id IN ({','.join('?' * len(chunk))})",
                (platform, user_id, *chunk))
            found.update(row[0] for row in rows)
        return found

    async def delete(self, job_id: int) -> list[Path]:
        """Remove a finished job from the history with its images' rows, stars and chat messages, in one
        transaction; its children stay, without a parent. Returns the files the caller should remove (its
        images and, for an animation, its MP4); other jobs' files and kept inputs are left alone."""
        history = self._history
        async with history._transaction() as db:
            job = await history.get(job_id)
            if job is None:
                raise GalleryError(f"job #{job_id} is not in the history")
            if not job.status.finished:
                raise GalleryError(f"job #{job_id} is {job.status.value}; cancel it or let it finish first")
            for statement in ("DELETE FROM images WHERE job_id=?", "DELETE FROM stars WHERE job_id=?",
                              "DELETE FROM messages WHERE job_id=?", "UPDATE jobs SET parent_id=NULL WHERE parent_id=?",
                              "DELETE FROM jobs WHERE id=?"):
                await db.execute(statement, (job_id,))
        files = [Path(image.path) for image in job.images]
        video = animation_video(job)
        return files + [video] if video is not None else files

    async def _count(self, select: str, *args: object) -> int:
        """How many rows a SELECT gives, counting no further than just past _FEW."""
        rows = await self._rows(f"SELECT COUNT(*) FROM ({select} LIMIT ?)", (*args, _FEW + 1))
        return rows[0][0]

    async def _rows(self, sql: str, args: tuple) -> list[sqlite3.Row]:
        cursor = await self._history._db.execute(sql, args)
        return list(await cursor.fetchall())


def lora_names(loras: str | None) -> list[str]:
    """The names in A1111's "Lora hashes" text ("name: hash, name: hash"), in order."""
    if not loras:
        return []
    return [entry.rpartition(": ")[0] or entry for entry in (part.strip() for part in loras.split(", ")) if entry]


def search_expression(text: str) -> str | None:
    """FTS5 query for jobs holding every word of `text` (the last one as a prefix, for search as you type);
    None when it has no word to look for. Each word is quoted as an FTS5 string, so no user text (quotes, *,
    NEAR, AND, parentheses, column names) is read as query syntax."""
    words = _search_words(text)
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"' for word in words) + "*"


def _search_words(text: str) -> list[str]:
    """The different words of a search, in order."""
    # Control characters: FTS5 stops reading a string at a NUL, and none of them is part of a word.
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    # A word without a letter or digit makes no token: FTS5 would match nothing for it alone. A word said twice
    # finds nothing more, and each costs time (a pasted prompt repeats many); its last place is kept, so the
    # word typed last is still the one matched as a prefix.
    words: dict[str, str] = {}
    for word in cleaned.split():
        if any(c.isalnum() for c in word):
            words.pop(word.casefold(), None)
            words[word.casefold()] = word
    return list(words.values())


def _split_key(key: str, what: str) -> tuple[str, str]:
    """An Owner.key as (platform, user_id)."""
    platform, sep, user_id = key.partition(":")
    if not (sep and platform and user_id):
        raise GalleryError(f"{what} must be a person as platform:user_id, got {key!r}")
    return platform, user_id


def _glob_literal(text: str) -> str:
    """text as a GLOB pattern that matches only itself (GLOB, unlike LIKE, tells upper from lower case)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _where(query: GalleryQuery, search: str | None, lead: str | None) -> tuple[list[str], list[object]]:
    """The WHERE terms and arguments of a page, its search (if any) already an FTS5 expression.

    A page is read newest first and stops after `limit` jobs, so the terms are written for SQLite to walk the
    jobs in id order and stop early: by an index that ends in id, by the id range a date range comes to, or
    by the few ids of a search or of someone's stars (lead: "search" or "stars"). Left to itself, SQLite often
    looked every match of a search up in an index and sorted them all: ten times as slow at 25,000 jobs.
    """
    terms: list[str] = []
    args: list[object] = []
    # A unary + keeps SQLite from using a term's index, leaving it a check on each row the walk reaches.
    plus = "+" if lead else ""
    if search is not None:
        terms.append(f"{'' if lead == 'search' else '+'}id IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)")
        args.append(search)
    for key in (query.viewer, query.person or None):
        if key is not None:  # the viewer and an admin's person filter: both must hold
            terms.append(f"{plus}platform=? AND {plus}user_id=?")
            args += _split_key(key, "person")
    if query.kind:
        terms.append(f"{plus}kind=?")
        args.append(query.kind)
    if query.model is not None:
        # Written as the index on it is (storage.schema.MODEL), so SQLite can use it.
        if query.model in DEFAULT_MODELS:
            terms.append(f"{plus}{MODEL} IN ('', 'default')")
        else:
            terms.append(f"{plus}{MODEL}=?")
            args.append(query.model)
    if query.lora:
        terms.append("', ' || loras GLOB ?")
        args.append(f"*, {_glob_literal(query.lora)}: *")
    if query.status:
        terms.append(f"{plus}status=?")
        args.append(query.status)
    # created_at is UTC ISO text ("2026-11-20T10:00:00.000+00:00"): a day compares as its prefix. Each end is
    # also an id bound, exact even where the clock once went back (the lowest id of a job made since, the
    # highest of one made before the day after), so the walk covers only that stretch of ids. The bounds come
    # from the created_at index (INDEXED BY: SQLite would otherwise walk the rows from one end to find them).
    if query.since is not None:
        terms.append("+created_at >= ? AND "
                     "id >= (SELECT MIN(id) FROM jobs INDEXED BY jobs_created WHERE created_at >= ?)")
        args += [query.since.isoformat()] * 2
    if query.until is not None and query.until < datetime.date.max:
        terms.append("+created_at < ? AND "
                     "id <= (SELECT MAX(id) FROM jobs INDEXED BY jobs_created WHERE created_at < ?)")
        args += [(query.until + datetime.timedelta(days=1)).isoformat()] * 2
    if query.starred_by:
        terms.append(f"{'' if lead == 'stars' else '+'}id IN "
                     "(SELECT job_id FROM stars WHERE platform=? AND user_id=?)")
        args += _split_key(query.starred_by, "starred_by")
    if query.before is not None:
        terms.append("id < ?")
        args.append(query.before)
    return terms, args
