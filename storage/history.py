"""Job history in SQLite (WAL): every job with its owner, parameters, seeds, run info and images."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import aiosqlite

from storage.records import (
    ImageRecord,
    JobKind,
    JobParams,
    JobRecord,
    JobStatus,
    Owner,
    RunInfo,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    user_id TEXT NOT NULL,
    chat_id TEXT NOT NULL DEFAULT '',
    user_name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seed INTEGER NOT NULL,
    count INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    cfg REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    scheduler TEXT NOT NULL,
    strength REAL,
    input_sha256 TEXT,
    model TEXT,
    model_hash TEXT,
    memory_profile TEXT,
    attention TEXT,
    dtype TEXT,
    device TEXT,
    diffusers_version TEXT,
    torch_version TEXT,
    parent_id INTEGER REFERENCES jobs(id),
    status TEXT NOT NULL,
    error TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(platform, user_id, id);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS images (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS images_seed ON images(seed);
"""

_RUN_COLUMNS = (
    "model", "model_hash", "memory_profile", "attention", "dtype", "device",
    "diffusers_version", "torch_version",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class History:
    """The one owner of the SQLite connection; all SQL in easel lives in storage/."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> History:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a job acknowledged as queued survives a power cut, not only a crash (one fsync a job).
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA foreign_keys=ON")
        version = (await (await db.execute("PRAGMA user_version")).fetchone())[0]
        if version > SCHEMA_VERSION:
            await db.close()
            raise RuntimeError(f"{path} was written by a newer easel (schema {version} > {SCHEMA_VERSION})")
        await db.executescript(_SCHEMA)
        await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> History:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def add_job(self, owner: Owner, params: JobParams, parent_id: int | None = None) -> JobRecord:
        """Persist a new queued job; it exists on disk before anyone is told it was accepted."""
        created = _now()
        cursor = await self._db.execute(
            """INSERT INTO jobs (platform, user_id, chat_id, user_name, kind, prompt, negative_prompt,
                   seed, count, steps, cfg, width, height, scheduler, strength, input_sha256,
                   parent_id, status, created_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            (owner.platform, owner.user_id, owner.chat_id, owner.name, params.kind.value,
             params.prompt, params.negative_prompt, params.seed, params.count, params.steps,
             params.cfg, params.width, params.height, params.scheduler, params.strength,
             params.input_sha256, parent_id, JobStatus.QUEUED.value, created),
        )
        await self._db.commit()
        return JobRecord(
            id=cursor.lastrowid, owner=owner, params=params, status=JobStatus.QUEUED,
            parent_id=parent_id, created_at=datetime.fromisoformat(created),
        )

    async def mark_running(self, job_id: int) -> datetime:
        """Record that a job started; returns the start time written."""
        started = _now()
        await self._db.execute(
            "UPDATE jobs SET status=?, started_at=? WHERE id=?",
            (JobStatus.RUNNING.value, started, job_id),
        )
        await self._db.commit()
        return datetime.fromisoformat(started)

    async def mark_crashed(self, job_ids: Iterable[int]) -> None:
        """Jobs the process died under go back to the queue, counting the crash."""
        await self._db.executemany(
            "UPDATE jobs SET status=?, started_at=NULL, crashes=crashes+1 WHERE id=?",
            [(JobStatus.QUEUED.value, job_id) for job_id in job_ids],
        )
        await self._db.commit()

    async def mark_requeued(self, job_ids: Iterable[int]) -> None:
        """Jobs interrupted by a clean shutdown go back to the queue."""
        await self._db.executemany(
            "UPDATE jobs SET status=?, started_at=NULL WHERE id=?",
            [(JobStatus.QUEUED.value, job_id) for job_id in job_ids],
        )
        await self._db.commit()

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
        await self._db.execute(
            f"UPDATE jobs SET status=?, error=?, finished_at=?, {assignments} WHERE id=?",
            (status.value, error, _now(), *run_values, job_id),
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO images (job_id, idx, seed, path) VALUES (?,?,?,?)",
            [(image.job_id, image.index, image.seed, image.path) for image in images],
        )
        await self._db.commit()

    async def get(self, job_id: int) -> JobRecord | None:
        rows = await self._select("WHERE id=?", (job_id,))
        return rows[0] if rows else None

    async def unfinished(self) -> list[JobRecord]:
        """Jobs that were queued or running, oldest first: what a restart must pick up."""
        return await self._select(
            "WHERE status IN (?, ?) ORDER BY id", (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        )

    async def recent(self, owner: Owner, limit: int) -> list[JobRecord]:
        """This person's latest jobs, newest first."""
        return await self._select(
            "WHERE platform=? AND user_id=? ORDER BY id DESC LIMIT ?",
            (owner.platform, owner.user_id, limit),
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
    params = JobParams(
        kind=JobKind(row["kind"]), prompt=row["prompt"], negative_prompt=row["negative_prompt"],
        seed=row["seed"], steps=row["steps"], cfg=row["cfg"], width=row["width"], height=row["height"],
        count=row["count"], scheduler=row["scheduler"], strength=row["strength"],
        input_sha256=row["input_sha256"],
    )
    run = None
    if row["model"] is not None:
        run = RunInfo(**{name: row[name] for name in _RUN_COLUMNS})
    return JobRecord(
        id=row["id"],
        owner=Owner(platform=row["platform"], user_id=row["user_id"], chat_id=row["chat_id"], name=row["user_name"]),
        params=params,
        status=JobStatus(row["status"]),
        parent_id=row["parent_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        error=row["error"],
        run=run,
        images=images,
        crashes=row["crashes"],
    )
