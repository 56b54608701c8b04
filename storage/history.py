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
from storage.records import ImageRecord, JobRecord, JobStatus, Owner, RunInfo
from storage.params import JobParams, params_from_json, params_to_json
from storage.schema import RUN_COLUMNS, prepare

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


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
        await asyncio.to_thread(prepare, path)
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
                (owner.platform, owner.user_id, owner.chat_id, owner.name, params.kind, params.seed,
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
        run_values = tuple(getattr(run, name) for name in RUN_COLUMNS) if run else (None,) * len(RUN_COLUMNS)
        assignments = ", ".join(f"{name}=COALESCE(?, {name})" for name in RUN_COLUMNS)
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
        values = {name: row[name] for name in RUN_COLUMNS}
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
