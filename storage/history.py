"""Job history in SQLite (WAL): every job with its owner, parameters, seeds, run info and images."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Iterable

import aiosqlite

from storage.errors import StorageError
from storage.records import (
    ImageRecord,
    Img2ImgParams,
    JobKind,
    JobParams,
    JobRecord,
    JobStatus,
    Owner,
    RunInfo,
    Txt2ImgParams,
    params_from_json,
    params_to_json,
)

SCHEMA_VERSION = 5

# Version 2: each kind's parameters are one JSON column, validated into its typed class on read, so
# a new kind needs no migration. Only what queries need (kind, seed, count) has columns of its own.
_JOBS_TABLE = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    user_id TEXT NOT NULL,
    chat_id TEXT NOT NULL DEFAULT '',
    user_name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    seed INTEGER NOT NULL,
    count INTEGER NOT NULL,
    params TEXT NOT NULL,
    model TEXT,
    model_hash TEXT,
    memory_profile TEXT,
    attention TEXT,
    dtype TEXT,
    device TEXT,
    diffusers_version TEXT,
    torch_version TEXT,
    vae_tiling INTEGER,
    controlnet TEXT,
    parent_id INTEGER REFERENCES jobs(id),
    status TEXT NOT NULL,
    error TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    unsure_sends INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
)"""
_INDEXES_AND_IMAGES = (
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(platform, user_id, id)",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status)",
    "CREATE INDEX IF NOT EXISTS jobs_undelivered ON jobs(platform, id) WHERE delivered = 0",
    """CREATE TABLE IF NOT EXISTS images (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    )""",
    "CREATE INDEX IF NOT EXISTS images_seed ON images(seed)",
    # Version 3: which chat message shows which job, so buttons and replies find their job after a restart.
    """CREATE TABLE IF NOT EXISTS messages (
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        PRIMARY KEY (platform, chat_id, message_id)
    )""",
    "CREATE INDEX IF NOT EXISTS messages_job ON messages(job_id)",
)

_RUN_COLUMNS = (
    "model", "model_hash", "memory_profile", "attention", "dtype", "device",
    "diffusers_version", "torch_version", "vae_tiling", "controlnet",
)
# What versions 1 and 2 share, copied as it is by the migration.
_KEPT_COLUMNS = (
    "id", "platform", "user_id", "chat_id", "user_name", "kind", "seed", "count", *_RUN_COLUMNS[:-2],
    "parent_id", "status", "error", "crashes", "created_at", "started_at", "finished_at",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _v1_params(row: sqlite3.Row) -> JobParams:
    """A version-1 row's flat Stable Diffusion columns as typed params."""
    common = dict(
        seed=row["seed"], count=row["count"], prompt=row["prompt"], negative_prompt=row["negative_prompt"],
        steps=row["steps"], cfg=row["cfg"], width=row["width"], height=row["height"], scheduler=row["scheduler"],
        # Version 1 tiled the VAE whenever the profile allowed it; a rerun must tile too to match its pixels.
        vae_tiling=row["memory_profile"] in ("balanced", "low", "minimal") if row["memory_profile"] else None,
    )
    if row["kind"] == JobKind.IMG2IMG:
        return Img2ImgParams(strength=row["strength"], input_sha256=row["input_sha256"], **common)
    return Txt2ImgParams(**common)


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Version 1 → 2: the flat Stable Diffusion columns become the params JSON; every job stays rerunnable."""
    # SQLite's recipe for a changed table: build the new one, copy, drop the old, rename (foreign keys off).
    db.execute(_JOBS_TABLE.format(name="jobs_v2"))
    rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    marks = ", ".join("?" * (len(_KEPT_COLUMNS) + 3))
    db.executemany(
        f"INSERT INTO jobs_v2 ({', '.join(_KEPT_COLUMNS)}, vae_tiling, params, delivered) VALUES ({marks})",
        [
            (*(row[name] for name in _KEPT_COLUMNS), params.vae_tiling, params_to_json(params),
             # Jobs that ended before the upgrade were shown when they ended: do not replay them all.
             int(JobStatus(row["status"]).finished))
            for row, params in ((row, _v1_params(row)) for row in rows)
        ],
    )
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")


# Columns later versions added, each with what an older row gets.
_ADDED_COLUMNS = (
    ("controlnet", "TEXT"),  # version 4: sketch jobs
    # Version 5: sends of a job's result that started and never got an answer (a kill mid-send, a timeout):
    # the result may have arrived that many times, so it is sent again at most once.
    ("unsure_sends", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_columns(db: sqlite3.Connection) -> None:
    """Versions 2–4 → now: the columns added since, each only where it is missing."""
    present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")


def _prepare(path: Path) -> None:
    """Create or upgrade the schema; every problem with the file becomes one StorageError line."""
    if path.exists() and not path.is_file():
        raise StorageError(f"{path} is not a file; move it aside or set [storage] data_dir to another folder")
    try:
        _create_or_upgrade(path)
    except sqlite3.DatabaseError as exc:
        raise StorageError(_database_problem(path, exc)) from None
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from None


def _database_problem(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (f"cannot write {path}: it (or its folder) is read-only; give easel write access to it, "
                "or set [storage] data_dir to a folder it can write")
    if "unable to open" in text:
        return f"cannot open {path}: check that its folder exists and easel may write there"
    if "disk is full" in text or "disk I/O" in text:
        return f"cannot write {path}: {text}; free some space on that disk"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"{path} is damaged or not an easel database ({text}); move it aside to start a new "
                "history (images on disk are kept), or restore a backup")
    return f"cannot use {path}: {text}"


def _create_or_upgrade(path: Path) -> None:
    """Create or upgrade the schema, all in one transaction, on a connection of its own."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=OFF")  # the migration drops and renames a referenced table
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer easel (schema {version}, this one knows {SCHEMA_VERSION}); "
                    "upgrade easel, or move the file aside to start a new history"
                )
            has_jobs = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone()
            if not has_jobs:
                db.execute(_JOBS_TABLE.format(name="jobs"))
            elif version < 2:
                _migrate_v1(db)  # builds the current table, controlnet column included
            elif version < SCHEMA_VERSION:
                _add_columns(db)
            for statement in _INDEXES_AND_IMAGES:
                db.execute(statement)
            problems = db.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise StorageError(f"{path}: the upgrade would break {len(problems)} reference(s); left unchanged")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def requeue_running(path: Path) -> None:
    """Put jobs marked running back in the queue, at once and without the event loop: for quitting
    mid-job on purpose (a second Ctrl-C), which must not count as a crash on the next start."""
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db, db:
        db.execute("UPDATE jobs SET status=?, started_at=NULL WHERE status=?",
                   (JobStatus.QUEUED.value, JobStatus.RUNNING.value))


class History:
    """The one owner of the SQLite connection; all SQL in easel lives in storage/."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection is shared by every coroutine: without this, one write's commit would also
        # commit the half-done transaction of another that is waiting between two statements.
        self._writing = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> History:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
        await asyncio.to_thread(_prepare, path)
        db = await aiosqlite.connect(path)
        try:
            db.row_factory = aiosqlite.Row
            # FULL: a job acknowledged as queued survives a power cut, not only a crash (one fsync a job).
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=10000")  # a last-moment requeue on quit may hold the file
        except BaseException:
            await db.close()  # its thread would otherwise keep the process alive
            raise
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> History:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Every statement inside is written together or, on any error, not at all."""
        async with self._writing:
            try:
                yield self._db
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def add_job(self, owner: Owner, params: JobParams, parent_id: int | None = None) -> JobRecord:
        """Persist a new queued job; it exists on disk before anyone is told it was accepted."""
        created = _now()
        async with self._transaction() as db:
            cursor = await db.execute(
                """INSERT INTO jobs (platform, user_id, chat_id, user_name, kind, seed, count, params,
                       parent_id, status, created_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (owner.platform, owner.user_id, owner.chat_id, owner.name, params.kind.value, params.seed,
                 params.count, params_to_json(params), parent_id, JobStatus.QUEUED.value, created),
            )
        return JobRecord(
            id=cursor.lastrowid, owner=owner, params=params, status=JobStatus.QUEUED,
            parent_id=parent_id, created_at=datetime.fromisoformat(created),
        )

    async def mark_running(self, job_id: int) -> datetime:
        """Record that a job started; returns the start time written."""
        started = _now()
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET status=?, started_at=? WHERE id=?", (JobStatus.RUNNING.value, started, job_id)
            )
        return datetime.fromisoformat(started)

    async def mark_crashed(self, job_ids: Iterable[int]) -> None:
        """Jobs the process died under go back to the queue, counting the crash."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE jobs SET status=?, started_at=NULL, crashes=crashes+1 WHERE id=?",
                [(JobStatus.QUEUED.value, job_id) for job_id in job_ids],
            )

    async def mark_requeued(self, job_ids: Iterable[int]) -> None:
        """Jobs interrupted by a clean shutdown go back to the queue."""
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE jobs SET status=?, started_at=NULL WHERE id=?",
                [(JobStatus.QUEUED.value, job_id) for job_id in job_ids],
            )

    async def finish(
        self,
        job_id: int,
        status: JobStatus,
        *,
        run: RunInfo | None = None,
        images: Iterable[ImageRecord] = (),
        error: str | None = None,
    ) -> None:
        """Record how a job ended, with its images and run info, in one transaction."""
        assert status.finished, status
        run_values = tuple(getattr(run, name) for name in _RUN_COLUMNS) if run else (None,) * len(_RUN_COLUMNS)
        assignments = ", ".join(f"{name}=COALESCE(?, {name})" for name in _RUN_COLUMNS)
        async with self._transaction() as db:
            await db.execute(
                f"UPDATE jobs SET status=?, error=?, finished_at=?, {assignments} WHERE id=?",
                (status.value, error, _now(), *run_values, job_id),
            )
            await db.executemany(
                "INSERT INTO images (job_id, idx, seed, path) VALUES (?,?,?,?)",
                [(image.job_id, image.index, image.seed, image.path) for image in images],
            )

    async def mark_delivered(self, job_id: int) -> None:
        """Its platform has been told how the job ended; it is not replayed again."""
        async with self._transaction() as db:
            await db.execute("UPDATE jobs SET delivered=1 WHERE id=?", (job_id,))

    async def mark_sending(self, job_id: int) -> int:
        """A send of the job's result starts; it stays counted until mark_answered, so a send that a kill or a
        lost answer cut short counts as maybe arrived. Returns the count, this send included."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET unsure_sends=unsure_sends+1 WHERE id=? RETURNING unsure_sends", (job_id,)
            )
            row = await cursor.fetchone()
        return row[0] if row else 0

    async def mark_answered(self, job_id: int) -> None:
        """The platform answered a send of the job's result (done, or refused): it is no longer in doubt."""
        async with self._transaction() as db:
            await db.execute("UPDATE jobs SET unsure_sends=MAX(unsure_sends-1, 0) WHERE id=?", (job_id,))

    async def undelivered(self, platform: str) -> list[JobRecord]:
        """Finished jobs of a platform whose end it has not been sent yet, oldest first; a result that may
        have arrived twice already (two sends without an answer) is not among them."""
        finished = tuple(status.value for status in JobStatus if status.finished)
        return await self._select(
            f"WHERE platform=? AND delivered=0 AND unsure_sends < 2 AND status IN ({','.join('?' * len(finished))}) "
            "ORDER BY id",
            (platform, *finished),
        )

    async def link_message(self, platform: str, chat_id: str, message_id: str, job_id: int) -> None:
        """Remember that this chat message shows this job (a message shows one job; relinking moves it)."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO messages (platform, chat_id, message_id, job_id) VALUES (?,?,?,?)",
                (platform, str(chat_id), str(message_id), job_id),
            )

    async def job_for_message(self, platform: str, chat_id: str, message_id: str) -> JobRecord | None:
        """The job a chat message shows, or None if it shows none."""
        rows = await self._select(
            "WHERE id = (SELECT job_id FROM messages WHERE platform=? AND chat_id=? AND message_id=?)",
            (platform, str(chat_id), str(message_id)),
        )
        return rows[0] if rows else None

    async def messages_of(self, job_id: int, platform: str) -> list[tuple[str, str]]:
        """(chat_id, message_id) of every message on a platform that shows this job, oldest first."""
        cursor = await self._db.execute(
            "SELECT chat_id, message_id FROM messages WHERE job_id=? AND platform=? ORDER BY rowid",
            (job_id, platform),
        )
        return [(row["chat_id"], row["message_id"]) for row in await cursor.fetchall()]

    async def get(self, job_id: int) -> JobRecord | None:
        rows = await self._select("WHERE id=?", (job_id,))
        return rows[0] if rows else None

    async def unfinished(self) -> list[JobRecord]:
        """Jobs that were queued or running, oldest first: what a restart must pick up."""
        return await self._select(
            "WHERE status IN (?, ?) ORDER BY id", (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        )

    async def recent(self, owner: Owner, limit: int, chat_only: bool = False) -> list[JobRecord]:
        """This person's latest jobs, newest first; with chat_only, those asked for in owner's chat alone."""
        chat = (owner.chat_id,) if chat_only else ()
        return await self._select(
            "WHERE platform=? AND user_id=?" + " AND chat_id=?" * chat_only + " ORDER BY id DESC LIMIT ?",
            (owner.platform, owner.user_id, *chat, limit),
        )

    async def latest_with_seed(self, owner: Owner, seed: int) -> tuple[JobRecord, int] | None:
        """This person's newest job that drew an image with `seed`, and that image's index."""
        rows = await self._select(
            "WHERE platform=? AND user_id=? AND seed <= ? AND ? < seed + count ORDER BY id DESC LIMIT 1",
            (owner.platform, owner.user_id, seed, seed),
        )
        return (rows[0], seed - rows[0].params.seed) if rows else None

    async def _select(self, where: str, args: tuple) -> list[JobRecord]:
        cursor = await self._db.execute(f"SELECT * FROM jobs {where}", args)
        rows = await cursor.fetchall()
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        marks = ",".join("?" * len(ids))
        image_cursor = await self._db.execute(
            f"SELECT * FROM images WHERE job_id IN ({marks}) ORDER BY job_id, idx", ids
        )
        images: dict[int, list[ImageRecord]] = {}
        for image in await image_cursor.fetchall():
            images.setdefault(image["job_id"], []).append(
                ImageRecord(job_id=image["job_id"], index=image["idx"], seed=image["seed"], path=image["path"])
            )
        return [_record(row, tuple(images.get(row["id"], ()))) for row in rows]


def _record(row: aiosqlite.Row, images: tuple[ImageRecord, ...]) -> JobRecord:
    run = None
    if row["model"] is not None:
        values = {name: row[name] for name in _RUN_COLUMNS}
        values["vae_tiling"] = bool(values["vae_tiling"])
        run = RunInfo(**values)
    return JobRecord(
        id=row["id"],
        owner=Owner(platform=row["platform"], user_id=row["user_id"], chat_id=row["chat_id"], name=row["user_name"]),
        params=params_from_json(row["params"]),
        status=JobStatus(row["status"]),
        parent_id=row["parent_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        error=row["error"],
        run=run,
        images=images,
        crashes=row["crashes"],
        delivered=bool(row["delivered"]),
        unsure_sends=row["unsure_sends"],
    )
