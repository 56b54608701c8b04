"""History on a real SQLite file: persistence, round trips, look-ups and the on-disk format."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.gallery import Gallery, GalleryQuery
from storage.history import History, requeue_running
from storage.schema import SCHEMA_VERSION
from storage.records import ImageRecord, JobStatus, Owner, RunInfo
from storage.params import Img2ImgParams, Txt2ImgParams, params_to_json
from tests.conftest import params

ALICE = Owner("discord", "111", chat_id="chan-1", name="alice")
BOB = Owner("discord", "222", chat_id="chan-1", name="bob")
ALICE_ON_TELEGRAM = Owner("telegram", "111", chat_id="99", name="alice")

RUN = RunInfo(
    model="stable-diffusion-v1-5/stable-diffusion-v1-5", model_hash="abcdef0123456789", memory_profile="balanced",
    attention="sdpa", dtype="float16", device="cuda", diffusers_version="0.42.1", torch_version="2.13.0",
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"  # a folder that does not exist yet


@pytest.fixture
async def history(db_path: Path):
    async with await History.open(db_path) as history:
        yield history


def raw(db_path: Path, sql: str, *args: object) -> list[tuple]:
    """Read with a second, independent connection: what another process would see."""
    with sqlite3.connect(db_path) as connection:
        return connection.execute(sql, args).fetchall()


async def test_add_job_is_on_disk_before_it_returns(history: History, db_path: Path) -> None:
    job = await history.add_job(ALICE, params(seed=5, count=2))
    rows = raw(db_path, "SELECT id, status, user_id, platform, kind, seed, count, params FROM jobs")
    assert rows == [(job.id, "queued", "111", "discord", "txt2img", 5, 2, params_to_json(params(seed=5, count=2)))]
    assert job.status is JobStatus.QUEUED and job.owner == ALICE and job.params == params(seed=5, count=2)
    assert job.created_at.tzinfo is not None


async def test_ids_increase(history: History) -> None:
    first = await history.add_job(ALICE, params())
    second = await history.add_job(BOB, params())
    assert second.id > first.id


async def test_get_returns_what_add_job_returned(history: History) -> None:
    job = await history.add_job(ALICE, params())
    assert await history.get(job.id) == job
    assert await history.get(job.id + 1000) is None


async def test_img2img_params_and_parent_round_trip(history: History) -> None:
    parent = await history.add_job(ALICE, params())
    child_params = params(kind="img2img", strength=0.6, input_sha256="ab" * 32, negative_prompt="")
    child = await history.add_job(ALICE, child_params, parent_id=parent.id)
    stored = await history.get(child.id)
    assert stored.params == child_params
    assert stored.parent_id == parent.id
    assert (await history.get(parent.id)).parent_id is None


async def test_running_then_done_with_run_info_and_images(history: History, tmp_path: Path) -> None:
    job = await history.add_job(ALICE, params(seed=40, count=2))
    await history.mark_running(job.id)
    running = await history.get(job.id)
    assert running.status is JobStatus.RUNNING
    assert running.started_at is not None and running.finished_at is None and running.run is None

    images = [
        ImageRecord(job_id=job.id, index=1, seed=41, path=str(tmp_path / "b.png")),
        ImageRecord(job_id=job.id, index=0, seed=40, path=str(tmp_path / "a.png")),
    ]
    await history.finish(job.id, JobStatus.DONE, run=RUN, images=images)
    done = await history.get(job.id)
    assert done.status is JobStatus.DONE
    assert done.run == RUN
    assert done.images == (images[1], images[0])  # in index order, whatever order they were given in
    assert done.error is None
    assert done.created_at <= done.started_at <= done.finished_at
    assert done.params == job.params and done.owner == ALICE


async def test_failed_job_keeps_its_error_and_has_no_run(history: History) -> None:
    job = await history.add_job(ALICE, params())
    await history.mark_running(job.id)
    await history.finish(job.id, JobStatus.FAILED, error="could not load model 'x'")
    failed = await history.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "could not load model 'x'"
    assert failed.run is None and failed.images == ()


async def test_unfinished_is_queued_and_running_oldest_first(history: History) -> None:
    queued = await history.add_job(ALICE, params())
    running = await history.add_job(BOB, params())
    done = await history.add_job(ALICE, params())
    failed = await history.add_job(BOB, params())
    cancelled = await history.add_job(ALICE, params())
    later = await history.add_job(BOB, params())
    await history.mark_running(running.id)
    await history.finish(done.id, JobStatus.DONE, run=RUN)
    await history.finish(failed.id, JobStatus.FAILED, error="boom")
    await history.finish(cancelled.id, JobStatus.CANCELLED)

    unfinished = await history.unfinished()
    assert [job.id for job in unfinished] == [queued.id, running.id, later.id]
    assert [job.status for job in unfinished] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.QUEUED]


async def test_mark_requeued_puts_running_jobs_back(history: History) -> None:
    job = await history.add_job(ALICE, params())
    await history.mark_running(job.id)
    await history.mark_requeued([job.id])
    again = await history.get(job.id)
    assert again.status is JobStatus.QUEUED and again.started_at is None


async def test_recent_is_this_persons_newest_first(history: History) -> None:
    mine = [await history.add_job(ALICE, params(prompt=f"mine {i}")) for i in range(4)]
    await history.add_job(BOB, params(prompt="bob's"))
    await history.add_job(ALICE_ON_TELEGRAM, params(prompt="same user id, other platform"))

    recent = await history.recent(ALICE, limit=3)
    assert [job.id for job in recent] == [mine[3].id, mine[2].id, mine[1].id]
    assert [job.params.prompt for job in await history.recent(ALICE_ON_TELEGRAM, 10)] == ["same user id, other platform"]
    assert await history.recent(Owner("discord", "nobody"), 10) == []


async def test_recent_carries_images(history: History) -> None:
    job = await history.add_job(ALICE, params(count=2, seed=1))
    images = [ImageRecord(job.id, k, 1 + k, f"/x/{k}.png") for k in range(2)]
    await history.finish(job.id, JobStatus.DONE, run=RUN, images=images)
    (latest,) = await history.recent(ALICE, 1)
    assert latest.images == tuple(images)


async def test_latest_with_seed_finds_the_image_inside_a_batch(history: History) -> None:
    batch = await history.add_job(ALICE, params(seed=1000, count=4))  # seeds 1000..1003
    assert await history.latest_with_seed(ALICE, 1000) == (batch, 0)
    assert await history.latest_with_seed(ALICE, 1002) == (batch, 2)
    assert await history.latest_with_seed(ALICE, 1003) == (batch, 3)
    assert await history.latest_with_seed(ALICE, 1004) is None
    assert await history.latest_with_seed(ALICE, 999) is None


async def test_latest_with_seed_prefers_the_newest_and_only_the_owners(history: History) -> None:
    await history.add_job(ALICE, params(seed=7, prompt="old"))
    newer = await history.add_job(ALICE, params(seed=5, count=3, prompt="new"))  # 5, 6, 7
    await history.add_job(BOB, params(seed=7, prompt="bob's"))

    found, index = await history.latest_with_seed(ALICE, 7)
    assert (found.id, found.params.prompt, index) == (newer.id, "new", 2)
    found, index = await history.latest_with_seed(BOB, 7)
    assert (found.params.prompt, index) == ("bob's", 0)
    assert await history.latest_with_seed(ALICE_ON_TELEGRAM, 7) is None


async def test_schema_version_and_wal_on_disk(history: History, db_path: Path) -> None:
    await history.add_job(ALICE, params())
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert SCHEMA_VERSION >= 1


async def test_reopening_the_file_keeps_everything(db_path: Path, tmp_path: Path) -> None:
    async with await History.open(db_path) as history:
        job = await history.add_job(ALICE, params(seed=3, count=2))
        await history.mark_running(job.id)
        images = [ImageRecord(job.id, k, 3 + k, str(tmp_path / f"{k}.png")) for k in range(2)]
        await history.finish(job.id, JobStatus.DONE, run=RUN, images=images)
        queued = await history.add_job(BOB, params())
        before = await history.get(job.id)

    async with await History.open(db_path) as history:
        assert await history.get(job.id) == before
        assert [j.id for j in await history.unfinished()] == [queued.id]
        assert (await history.latest_with_seed(ALICE, 4))[1] == 1
        newest = await history.add_job(ALICE, params())
        assert newest.id > queued.id


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    async with await History.open(db_path):
        pass
    with sqlite3.connect(db_path) as connection:
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    newer = rf"was written by a newer easel \(schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION}\); upgrade"
    with pytest.raises(StorageError, match=newer):
        await History.open(db_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.write_bytes(b"this is not sqlite at all" * 100), "is damaged or not an easel database"),
        (lambda path: path.mkdir(), "is not a file"),
    ],
)
async def test_a_damaged_or_odd_database_file_is_one_line_that_says_what_to_do(db_path: Path, damage, message) -> None:
    db_path.parent.mkdir(parents=True)
    damage(db_path)
    with pytest.raises(StorageError, match=message) as refused:
        await History.open(db_path)
    assert "\n" not in str(refused.value) and "move it aside" in str(refused.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
async def test_a_read_only_database_is_one_line(db_path: Path) -> None:
    async with await History.open(db_path):
        pass
    db_path.chmod(0o444)
    db_path.parent.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="read-only|cannot open"):
            await History.open(db_path)
    finally:
        db_path.parent.chmod(0o755)


async def test_a_deliberate_quit_puts_running_jobs_back_without_a_crash(history: History, db_path: Path) -> None:
    job = await history.add_job(ALICE, params())
    await history.mark_running(job.id)
    requeue_running(db_path)  # what a second Ctrl-C does before leaving
    [again] = await history.unfinished()
    assert (again.id, again.status, again.crashes) == (job.id, JobStatus.QUEUED, 0)


async def test_a_failed_finish_writes_nothing_and_later_commits_do_not_persist_it(
    history: History, db_path: Path
) -> None:
    job = await history.add_job(ALICE, params())
    await history.mark_running(job.id)
    twice = [ImageRecord(job.id, 0, 42, "a.png"), ImageRecord(job.id, 0, 42, "b.png")]  # the same index twice
    with pytest.raises(sqlite3.IntegrityError):
        await history.finish(job.id, JobStatus.DONE, run=RUN, images=twice)
    await history.add_job(BOB, params())  # an unrelated write commits after the failed one
    assert raw(db_path, "SELECT status, finished_at, model FROM jobs WHERE id=?", job.id) == [("running", None, None)]
    assert raw(db_path, "SELECT COUNT(*) FROM images") == [(0,)]
    assert (await history.get(job.id)).status is JobStatus.RUNNING


async def test_concurrent_writes_do_not_commit_each_others_halves(history: History, db_path: Path) -> None:
    jobs = [await history.add_job(ALICE, params(seed=n)) for n in range(6)]
    good = [history.finish(j.id, JobStatus.DONE, run=RUN, images=[ImageRecord(j.id, 0, j.params.seed, f"{j.id}.png")])
            for j in jobs[::2]]
    bad = [history.finish(j.id, JobStatus.DONE, run=RUN, images=[ImageRecord(j.id, 0, 1, "x"), ImageRecord(j.id, 0, 1, "y")])
           for j in jobs[1::2]]
    results = await asyncio.gather(*good, *bad, return_exceptions=True)
    assert [r is None for r in results] == [True] * 3 + [False] * 3
    done = {row[0] for row in raw(db_path, "SELECT id FROM jobs WHERE status='done'")}
    assert done == {j.id for j in jobs[::2]}
    assert raw(db_path, "SELECT COUNT(*) FROM images") == [(3,)]


async def test_undelivered_are_finished_jobs_of_that_platform_until_marked(history: History) -> None:
    queued = await history.add_job(ALICE, params())
    done = await history.add_job(ALICE, params())
    failed = await history.add_job(ALICE, params())
    elsewhere = await history.add_job(ALICE_ON_TELEGRAM, params())
    for job, status in ((done, JobStatus.DONE), (failed, JobStatus.FAILED), (elsewhere, JobStatus.DONE)):
        await history.finish(job.id, status, error="boom" if status is JobStatus.FAILED else None)
    assert [j.id for j in await history.undelivered("discord")] == [done.id, failed.id]
    assert (await history.undelivered("discord"))[1].error == "boom"
    await history.mark_delivered(done.id)
    assert [j.id for j in await history.undelivered("discord")] == [failed.id]
    assert (await history.get(done.id)).delivered and not (await history.get(queued.id)).delivered
    assert [j.id for j in await history.undelivered("telegram")] == [elsewhere.id]


# The version-1 table, as the Foundation created it: every Stable Diffusion setting in its own column.
V1_JOBS = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, platform TEXT NOT NULL, user_id TEXT NOT NULL,
    chat_id TEXT NOT NULL DEFAULT '', user_name TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL,
    prompt TEXT NOT NULL, negative_prompt TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL,
    count INTEGER NOT NULL, steps INTEGER NOT NULL, cfg REAL NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, scheduler TEXT NOT NULL, strength REAL, input_sha256 TEXT, model TEXT,
    model_hash TEXT, memory_profile TEXT, attention TEXT, dtype TEXT, device TEXT, diffusers_version TEXT,
    torch_version TEXT, parent_id INTEGER REFERENCES jobs(id), status TEXT NOT NULL, error TEXT,
    crashes INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT
);
CREATE INDEX jobs_owner ON jobs(platform, user_id, id);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE images (
    job_id INTEGER NOT NULL REFERENCES jobs(id), idx INTEGER NOT NULL, seed INTEGER NOT NULL,
    path TEXT NOT NULL, PRIMARY KEY (job_id, idx)
);
CREATE INDEX images_seed ON images(seed);
PRAGMA user_version=1;
"""


async def test_a_version_1_database_is_upgraded_and_every_job_stays_rerunnable(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(V1_JOBS)
        db.execute(
            """INSERT INTO jobs VALUES (1,'console','me','console','me','txt2img','a red lighthouse','blurry',42,2,30,
               7.1234567,704,384,'dpmpp_2m',NULL,NULL,'sd15','abc','balanced','sdpa','float16','cuda','0.42','2.13',
               NULL,'done',NULL,0,'2026-11-20T10:00:00.000+00:00','2026-11-20T10:00:01.000+00:00',
               '2026-11-20T10:00:09.000+00:00')""")
        db.execute("INSERT INTO images VALUES (1,0,42,'data/images/2026-11-20/1-0.png'),(1,1,43,'data/images/2026-11-20/1-1.png')")
        db.execute(
            """INSERT INTO jobs VALUES (7,'console','me','console','me','img2img','the same, in winter','',9,1,40,7.0,
               512,512,'euler_a',0.6,'ff00',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,1,'queued',NULL,2,
               '2026-11-20T11:00:00.000+00:00',NULL,NULL)""")
    async with await History.open(db_path) as history:
        first, second = await history.get(1), await history.get(7)
        assert first.params == Txt2ImgParams(
            prompt="a red lighthouse", negative_prompt="blurry", seed=42, count=2, steps=30, cfg=7.1234567,
            width=704, height=384, scheduler="dpmpp_2m", vae_tiling=True,  # balanced tiled in version 1
        )
        assert first.run.vae_tiling and first.run.memory_profile == "balanced" and first.run.model_hash == "abc"
        assert [i.path for i in first.images] == ["data/images/2026-11-20/1-0.png", "data/images/2026-11-20/1-1.png"]
        assert first.status is JobStatus.DONE and first.delivered  # shown when it ended, not replayed
        assert second.params == Img2ImgParams(
            prompt="the same, in winter", negative_prompt="", seed=9, count=1, steps=40, cfg=7.0, width=512,
            height=512, scheduler="euler_a", strength=0.6, input_sha256="ff00",
        )
        assert (second.parent_id, second.crashes, second.delivered) == (1, 2, False)
        assert [j.id for j in await history.unfinished()] == [7]
        assert (await history.latest_with_seed(Owner("console", "me"), 43))[0].id == 1
        assert [j.id for j in await Gallery(history).page(GalleryQuery(viewer=None, text="red lighthouse"))] == [1]  # searchable
        assert (await history.add_job(ALICE, params())).id == 8  # numbering carries on
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(db_path, "PRAGMA foreign_key_check") == []
    assert [r[1] for r in raw(db_path, "PRAGMA table_info(jobs)") if r[1] in ("prompt", "steps")] == []


async def test_a_failed_upgrade_leaves_the_version_1_database_as_it_was(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(V1_JOBS)
        db.execute("""INSERT INTO jobs VALUES (1,'console','me','console','me','txt2img','p','',1,1,30,7,512,512,
                      'dpmpp_2m',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'no-such-status',NULL,0,
                      '2026-11-20T10:00:00.000+00:00',NULL,NULL)""")
    with pytest.raises(ValueError):
        await History.open(db_path)
    assert raw(db_path, "PRAGMA user_version") == [(1,)]
    assert raw(db_path, "SELECT prompt FROM jobs") == [("p",)]


async def test_chat_messages_find_their_job_after_a_reopen(history: History, db_path: Path) -> None:
    first = await history.add_job(ALICE, params())
    second = await history.add_job(ALICE, params())
    await history.link_message("discord", "chan-1", "900", first.id)
    await history.link_message("discord", "chan-1", "901", first.id)  # the progress message, then the result
    await history.link_message("telegram", "chan-1", "900", second.id)  # the same ids on another platform
    await history.close()
    async with await History.open(db_path) as again:
        assert (await again.job_for_message("discord", "chan-1", "900")).id == first.id
        assert (await again.job_for_message("telegram", "chan-1", "900")).id == second.id
        assert await again.job_for_message("discord", "chan-2", "900") is None
        assert (await again.job_for_message("discord", "chan-1", "901")).id == first.id  # both messages find it
        await again.link_message("discord", "chan-1", "900", second.id)  # a message shows one job
        assert (await again.job_for_message("discord", "chan-1", "900")).id == second.id


@pytest.mark.parametrize("version, missing", [(3, ("controlnet", "unsure_sends")), (4, ("unsure_sends",))])
async def test_an_older_database_gains_the_columns_added_since(db_path: Path, version: int, missing: tuple) -> None:
    async with await History.open(db_path) as history:
        job = await history.add_job(ALICE, params())
        await history.finish(job.id, JobStatus.DONE, run=RUN)
    with sqlite3.connect(db_path) as db:  # as that version left it
        for column in missing:
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        db.execute(f"PRAGMA user_version={version}")
    async with await History.open(db_path) as history:
        kept = await history.get(job.id)
        assert kept.run.model == RUN.model and kept.run.controlnet is None and kept.unsure_sends == 0
        assert [j.id for j in await history.undelivered("discord")] == [job.id]
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert set(missing) <= {row[1] for row in raw(db_path, "PRAGMA table_info(jobs)")}


async def test_sends_in_doubt_are_counted_and_a_result_maybe_sent_twice_is_not_replayed(
    history: History, db_path: Path
) -> None:
    job = await history.add_job(ALICE_ON_TELEGRAM, params())
    await history.finish(job.id, JobStatus.DONE)
    assert await history.mark_sending(job.id) == 1
    await history.mark_answered(job.id)  # Telegram answered: nothing in doubt
    assert (await history.get(job.id)).unsure_sends == 0
    await history.mark_answered(job.id)  # never below zero
    assert await history.mark_sending(job.id) == 1  # and no answer came (a timeout, or the process died)
    assert raw(db_path, "SELECT unsure_sends FROM jobs") == [(1,)]  # on disk before the send starts
    assert [j.unsure_sends for j in await history.undelivered("telegram")] == [1]  # sent once more on a start
    assert await history.mark_sending(job.id) == 2
    assert await history.undelivered("telegram") == []  # it may be in the chat twice already
    assert not (await history.get(job.id)).delivered
    assert await history.mark_sending(job.id + 1) == 0  # no such job
