"""The Redis queue for real: a redis-server on 127.0.0.1, `easel worker` processes on the tiny model,
the bot's JobQueue with a RedisRunner, real SQLite history and image files. Nothing of Redis or SAQ is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.queue import EventKind, JobEvent, JobQueue, QueueLimits
from generation.redis_link import connect, live_workers
from generation.redis_runner import RedisRunner
from generation.wire import DRAW, RedisSettings
from storage.history import History
from storage.images import ImageStore
from storage.records import JobStatus, Owner
from storage.params import Txt2ImgParams, params_to_json
from tests.conftest import free_port
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt install redis-server)")
TIMEOUT = 120
PEOPLE = [Owner(platform="test", user_id=name, name=name) for name in ("alice", "bob", "carol")]


class RedisServer:
    """A real redis-server on a free 127.0.0.1 port, without persistence; it can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("redis-server could not be started")
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def config_file(tmp_path: Path, tiny_model: Path, redis_url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
data_dir = "{tmp_path / 'worker-data'}"
[generation]
model = "{tiny_model}"
device = "cpu"
preview_every = 0
[queue]
backend = "redis"
redis_url = "{redis_url}"
lease_seconds = 2
sweep_seconds = 1
""")
    return path


class Workers:
    """`easel worker` processes, started and killed by name."""

    def __init__(self, config_file: Path, tmp_path: Path) -> None:
        self.config_file, self.tmp_path = config_file, tmp_path
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, kinds: str | None = None, models: str | None = None) -> subprocess.Popen:
        """A worker taking these kinds (comma-separated), or every kind when none are named; and these models."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        log = open(self.tmp_path / f"{name}.log", "w")
        chosen = ["--kinds", kinds] if kinds is not None else []
        chosen += ["--models", models] if models is not None else []
        process = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--config", str(self.config_file),
                                    "--name", name, *chosen, "-v"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(config_file: Path, tmp_path: Path):
    started = Workers(config_file, tmp_path)
    yield started
    started.stop_all()


class Bot:
    """The bot side in this process: a JobQueue drawing through a RedisRunner, over real SQLite and image
    files, events recorded."""

    def __init__(self, tmp_path: Path, redis_url: str, started: bool = True) -> None:
        self.started = started  # False: the test starts the queue (after submitting what it should find)
        self.data = tmp_path / "data"
        self.settings = RedisSettings(url=redis_url, lease_seconds=2, sweep_seconds=1)
        self.events: list[JobEvent] = []
        self.history = self.queue = None

    async def __aenter__(self) -> Bot:
        self.history = await History.open(self.data / "easel.db")
        self.store = ImageStore(self.data)
        self.runner = RedisRunner(self.settings, self.store, poll_seconds=0.2)
        self.queue = JobQueue(self.history, self.store, self.runner, QueueLimits(50, 200), storage_retry_seconds=0.5)
        self.queue.subscribe(self.events.append)
        if self.started:
            await self.queue.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.queue.stop()
        await self.history.close()

    async def until(self, condition, what: str = "") -> None:
        await eventually(condition, timeout=TIMEOUT, what=what, every=0.05)

    def ended(self, job_id: int) -> list[JobEvent]:
        return [event for event in self.events if event.finished and event.job.id == job_id]

    async def wait_workers(self, count: int) -> None:
        await self.until(lambda: len(self.runner.workers) >= count, what=f"{count} worker(s)")


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, redis_url: str, workers: Workers, *names: str):
    """These workers started, and a bot that has seen them all."""
    for name in names:
        workers.start(name)
    async with Bot(tmp_path, redis_url) as bot:
        await bot.wait_workers(len(names))
        yield bot


def job(steps: int = 3, seed: int = 1, count: int = 1, size: int = 64) -> Txt2ImgParams:
    return Txt2ImgParams(prompt="a red lighthouse", seed=seed, count=count, steps=steps, cfg=7.0, width=size,
                         height=size, scheduler="dpmpp_2m")


async def live_count(bot: Bot, count: int) -> bool:
    """Whether `count` workers are registered in Redis (asked directly: the bot's queue may not run yet)."""
    client = await connect(bot.settings)
    try:
        return len(await live_workers(client, bot.settings)) == count
    finally:
        await client.aclose()


async def stream_entries(bot: Bot, kind: str) -> list[dict]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(bot.settings.url)
    try:
        entries = await client.xrange(bot.settings.events)
    finally:
        await client.aclose()
    return [{k.decode(): v for k, v in fields.items()} for _, fields in entries if fields[b"type"] == kind.encode()]


async def test_twelve_jobs_of_three_people_on_two_workers_end_once_in_fair_turns(
    tmp_path: Path, redis_url: str, workers: Workers, tiny_model: Path,
) -> None:
    workers.start("w1")
    workers.start("w2")
    async with Bot(tmp_path, redis_url, started=False) as bot:
        # Both workers up before anything is handed out, however unevenly they start on a busy machine.
        await bot.until(lambda: live_count(bot, 2), "two workers")
        submitted = []
        for person in PEOPLE:  # each person queues four at once, before the queue hands anything out
            for k in range(4):
                submitted.append(await bot.queue.submit(person, job(seed=100 + len(submitted), count=1 + k % 2)))
        await bot.queue.start()
        await bot.until(lambda: all(bot.ended(j.id) for j in submitted))
        started = [event.job for event in bot.events if event.kind is EventKind.STARTED]
        # Least recently served first: alice, bob, carol, alice, bob, carol…
        assert [j.owner.user_id for j in started] == ["alice", "bob", "carol"] * 4
        for sent in submitted:
            assert [e.kind for e in bot.ended(sent.id)] == [EventKind.DONE]
            stored = await bot.history.get(sent.id)
            assert stored.status is JobStatus.DONE and len(stored.images) == sent.params.count
            for image in stored.images:
                assert Image.open(image.path).size == (64, 64)
        files = sorted(p.name for p in (bot.data / "images").rglob("*.png"))
        assert len(files) == sum(j.params.count for j in submitted)  # one file per image, no duplicates
        starts = await stream_entries(bot, "started")
        assert sorted(int(e["job"]) for e in starts) == sorted(j.id for j in submitted)  # each drawn once
        assert {e["worker"].decode() for e in starts} == {"w1", "w2"}

        # SAQ delivers at least once: a job handed over again after its end was sent is not drawn again.
        again = await bot.runner._queue(bot.runner.workers[0].pool).enqueue(
            DRAW, key="job-again", job_id=submitted[0].id, params=params_to_json(submitted[0].params))
        await again.refresh(until_complete=TIMEOUT)
        assert again.result == {"ended": "before"}
        assert len(await stream_entries(bot, "started")) == len(submitted)

    # The same seed draws the same pixels on a worker as in a local engine.
    local = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))

    class Quiet:
        cancelled = False

        def step(self, *args) -> None:
            pass

    first = submitted[0]
    here = local.run(first.params, (), Quiet()).images[0]
    stored = await History.open(bot.data / "easel.db")
    try:
        remote = Image.open((await stored.get(first.id)).images[0].path).convert("RGB")
    finally:
        await stored.close()
    assert np.array_equal(np.asarray(here), np.asarray(remote))


async def test_a_sweep_in_the_instant_a_worker_takes_a_job_leaves_it_to_that_worker(redis_url: str) -> None:
    """A worker moves a job onto the active list before it writes it active; SAQ's own sweep retried a job
    caught in between, so it was drawn twice (tobymao/saq#277). Only a job still not active `settle` seconds
    later is handed on; one whose heartbeat ran out goes at once."""
    from saq.job import Status

    from generation.saq_queue import SettlingQueue

    queue = SettlingQueue.from_url(redis_url, name="easel-sweep", settle=1.0)
    try:
        await queue.enqueue("draw", key="job-1", heartbeat=1, retries=3)
        taken = await queue.dequeue(timeout=1)  # what a worker holds for a moment before it writes "active"
        assert taken is not None and taken.status == Status.QUEUED
        assert await queue.sweep(lock=1, abort=0.2) == []
        assert (await queue.job("job-1")).status == Status.QUEUED
        assert await queue.redis.lrange(queue._active, 0, -1) == [taken.id.encode()]

        await asyncio.sleep(1.1)  # the sweep lock and `settle` have passed: its worker died taking it
        assert await queue.sweep(lock=1, abort=0.2) == [taken.id]
        again = await queue.job("job-1")
        assert again.status == Status.QUEUED and again.error == queue.swept_error_message
        assert await queue.redis.lrange(queue._queued, 0, -1) == [taken.id.encode()]

        # Taken and written active, then silent past its heartbeat: the next sweep hands it on at once.
        taken = await queue.dequeue(timeout=1)
        taken.attempts = 1
        await taken.update(status=Status.ACTIVE)
        await asyncio.sleep(1.1)
        assert await queue.sweep(lock=1, abort=0.2) == [taken.id]
        assert await queue.redis.lrange(queue._queued, 0, -1) == [taken.id.encode()]
    finally:
        await queue.disconnect()


async def test_a_worker_killed_mid_job_hands_it_to_the_other_and_it_ends_once(
    tmp_path: Path, redis_url: str, workers: Workers,
) -> None:
    async with serving(tmp_path, redis_url, workers, "w1", "w2") as bot:
        long = await bot.queue.submit(PEOPLE[0], job(steps=500, size=128))
        await bot.until(lambda: bot.queue.running_jobs() and bot.queue.running_jobs()[0][2] is not None)
        await bot.until(lambda: bot.queue.running_jobs()[0][2].startswith("on "))
        first = bot.queue.running_jobs()[0][2].removeprefix("on ")
        other = {"w1": "w2", "w2": "w1"}[first]
        workers.kill(first)  # SIGKILL: no goodbye, its lease just runs out
        await bot.until(lambda: bot.ended(long.id))
        assert [e.kind for e in bot.ended(long.id)] == [EventKind.DONE]
        stored = await bot.history.get(long.id)
        assert stored.status is JobStatus.DONE and len(stored.images) == 1
        starts = [(e["worker"].decode(), int(e["attempt"])) for e in await stream_entries(bot, "started")]
        assert starts == [(first, 1), (other, 2)]
        assert await stream_entries(bot, "done") == []  # recorded, so deleted from the stream with its images
        assert len(list((bot.data / "images").rglob("*.png"))) == 1


async def test_the_bot_killed_while_workers_draw_records_and_delivers_every_job_after_restart(
    tmp_path: Path, redis_url: str, workers: Workers, config_file: Path,
) -> None:
    workers.start("w1")
    workers.start("w2")
    text = config_file.read_text().replace(str(tmp_path / "worker-data"), str(tmp_path / "data"))
    bot_config = tmp_path / "bot.toml"
    bot_config.write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    commands = "".join(f"/imagine a boat number {k} --steps 150 --size 64x64 --seed {k}\n" for k in range(4))
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "console", "--config", str(bot_config)], cwd=ROOT,
                           env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bot.stdin.write(commands)
    bot.stdin.flush()
    seen = ""
    deadline = time.monotonic() + TIMEOUT
    while seen.count("started") < 2 or "queued #4" not in seen:  # all four taken, two out on workers
        assert time.monotonic() < deadline, seen
        seen += bot.stdout.readline()
    bot.send_signal(signal.SIGKILL)
    bot.wait(10)
    assert "done" not in seen
    async with Bot(tmp_path, redis_url) as restarted:
        ids = [1, 2, 3, 4]
        await restarted.until(lambda: all(restarted.ended(i) for i in ids))
        for job_id in ids:
            stored = await restarted.history.get(job_id)
            assert stored.status is JobStatus.DONE and len(stored.images) == 1, stored
        assert len(list((restarted.data / "images").rglob("*.png"))) == 4
        # Not yet told to anyone: the console's platform gets every end replayed on its next start.
        assert sorted(j.id for j in await restarted.history.undelivered("console")) == ids
        starts = sorted(int(e["job"]) for e in await stream_entries(restarted, "started"))
        assert starts == ids  # nothing drawn twice across the restart


async def test_cancelling_a_job_on_a_worker_stops_it_within_a_few_steps(
    tmp_path: Path, redis_url: str, workers: Workers,
) -> None:
    async with serving(tmp_path, redis_url, workers, "w1") as bot:
        long = await bot.queue.submit(PEOPLE[0], job(steps=2000, size=128))
        steps = lambda: [e.step for e in bot.events if e.kind is EventKind.PROGRESS and e.job.id == long.id]  # noqa: E731
        await bot.until(lambda: len(steps()) >= 5)
        assert bot.queue.running_jobs()[0][2] == "on w1"  # what /queue shows after the job
        await bot.queue.cancel(long.id, PEOPLE[0])
        at_cancel = steps()[-1]
        await bot.until(lambda: bot.ended(long.id))
        assert [e.kind for e in bot.ended(long.id)] == [EventKind.CANCELLED]
        assert (await bot.history.get(long.id)).status is JobStatus.CANCELLED
        assert max(steps()) - at_cancel < 200, (at_cancel, max(steps()))  # of 2000: it stopped, not finished
        # The worker is free again: the next job runs.
        after = await bot.queue.submit(PEOPLE[1], job())
        await bot.until(lambda: bot.ended(after.id))
        assert bot.ended(after.id)[0].kind is EventKind.DONE


async def test_a_worker_limited_to_faces_never_gets_a_picture_job(
    tmp_path: Path, redis_url: str, workers: Workers,
) -> None:
    workers.start("faces", kinds="face")
    async with Bot(tmp_path, redis_url) as bot:
        await bot.wait_workers(1)
        waiting = await bot.queue.submit(PEOPLE[0], job())
        assert not bot.runner.has_room(waiting)  # the face worker's pool does not take it
        assert not bot.ended(waiting.id) and bot.queue.position(waiting.id) == 1  # nobody takes txt2img yet
        workers.start("pictures", kinds="txt2img")
        await bot.until(lambda: bot.ended(waiting.id))
        starts = await stream_entries(bot, "started")
        assert [e["worker"].decode() for e in starts] == ["pictures"]
    # A worker publishes its count of jobs done every few seconds, so the listing may show 0 for a moment after
    # the job's end has arrived: list again until it shows the job (or the time runs out).
    deadline = time.monotonic() + 30
    while True:
        listed = subprocess.run([sys.executable, "-m", "bot.cli", "workers", "--config", str(workers.config_file)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
        if rows.get("pictures", "").split()[-5:-4] == ["1"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert set(rows) == {"faces", "pictures"}, listed.stdout
    assert " face " in rows["faces"] and " txt2img " in rows["pictures"] and "s ago" in rows["pictures"]
    assert rows["pictures"].split()[-6] == "all"  # every configured model
    assert rows["pictures"].split()[-5:-3] == ["1", "-"]  # one job done, none running


async def test_jobs_go_only_to_workers_that_have_their_model(
    tmp_path: Path, redis_url: str, config_file: Path, tiny_model: Path, tiny_sdxl: Path,
) -> None:
    config_file.write_text(config_file.read_text().replace(f'model = "{tiny_model}"', 'model = "sd"') + f"""
[models.sd]
source = "{tiny_model}"
[models.xl]
source = "{tiny_sdxl}"
""")
    started = Workers(config_file, tmp_path)
    try:
        started.start("only-sd", models="sd")
        async with Bot(tmp_path, redis_url) as bot:
            await bot.wait_workers(1)
            assert bot.runner.workers[0].models == ("sd",)
            xl = await bot.queue.submit(PEOPLE[0], job().replace(model="xl"))  # first in line, but nobody has xl
            sd = await bot.queue.submit(PEOPLE[1], job().replace(model="sd"))
            await bot.until(lambda: bot.ended(sd.id))
            assert not bot.ended(xl.id) and bot.queue.position(xl.id) == 1
            started.start("only-xl", models="xl")
            await bot.until(lambda: bot.ended(xl.id))
            assert bot.ended(xl.id)[0].kind is EventKind.DONE
            starts = {int(e["job"]): e["worker"].decode() for e in await stream_entries(bot, "started")}
            assert starts == {sd.id: "only-sd", xl.id: "only-xl"}
            assert (await bot.history.get(xl.id)).run.family == "sdxl"
    finally:
        started.stop_all()


async def test_a_redis_restart_loses_no_job(tmp_path: Path, redis_server: RedisServer, workers: Workers,
                                            caplog: pytest.LogCaptureFixture) -> None:
    async with serving(tmp_path, redis_server.url, workers, "w1") as bot:
        redis_server.stop()  # gone, and back empty: no persistence
        waiting = await bot.queue.submit(PEOPLE[0], job())
        await bot.until(lambda: f"job #{waiting.id} could not be sent" in caplog.text, what="a failed send")
        assert not bot.ended(waiting.id) and bot.queue.position(waiting.id) == 0  # held by the bot, retrying
        redis_server.start()
        await bot.until(lambda: bot.ended(waiting.id))
        assert [e.kind for e in bot.ended(waiting.id)] == [EventKind.DONE], bot.ended(waiting.id)[0].error
        stored = await bot.history.get(waiting.id)
        assert stored.status is JobStatus.DONE and len(stored.images) == 1


async def test_a_clean_bot_stop_leaves_jobs_drawing_on_workers_and_the_next_start_records_them(
    tmp_path: Path, redis_url: str, workers: Workers,
) -> None:
    async with serving(tmp_path, redis_url, workers, "w1") as bot:
        jobs = [await bot.queue.submit(PEOPLE[k % 3], job(steps=120, seed=k)) for k in range(3)]
        await bot.until(lambda: any((where or "").startswith("on ") for _, _, where in bot.queue.running_jobs()))
    history = await History.open(bot.data / "easel.db")
    try:  # back in line, not failed or cancelled: the worker still has them
        assert {(await history.get(j.id)).status for j in jobs} == {JobStatus.QUEUED}
    finally:
        await history.close()
    async with Bot(tmp_path, redis_url) as again:
        await again.until(lambda: all(again.ended(j.id) for j in jobs))
        for sent in jobs:
            assert [e.kind for e in again.ended(sent.id)] == [EventKind.DONE]
            assert len((await again.history.get(sent.id)).images) == 1
        assert sorted(int(e["job"]) for e in await stream_entries(again, "started")) == [j.id for j in jobs]
        assert len(list((again.data / "images").rglob("*.png"))) == 3


async def test_every_kind_draws_on_a_worker_what_it_draws_here(
    tmp_path: Path, redis_url: str, workers: Workers, config_file: Path, tiny_model: Path, tiny_controlnet: Path,
) -> None:
    from generation.config import FacesConfig, SketchConfig
    from generation.faces.engine import FaceEngine
    from generation.engine import draw_whole
    from storage.params import AnimateParams, FaceParams, Img2ImgParams, SketchParams, ZoomParams
    from tests.generation.nvidia_pickle import write_nvidia_pickle
    from tests.generation.nvidia_pickle import TINY, tiny_generator

    checkpoint = write_nvidia_pickle(tmp_path / "tiny-ffhq.pkl", tiny_generator(), TINY)
    config_file.write_text(config_file.read_text()
                           + f'[sketch]\ncontrolnet = "{tiny_controlnet}"\n[faces]\ncheckpoint = "{checkpoint}"\n')
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    lines = Image.new("RGB", (64, 64), "black")
    lines.paste((255, 255, 255), (10, 30, 54, 34))
    async with serving(tmp_path, redis_url, workers, "w1") as bot:  # inputs reach it through Redis only
        photo_sha, _ = bot.store.add_input(photo)
        lines_sha, _ = bot.store.add_input(lines)
        common = dict(prompt="a house", seed=3, steps=3, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m")
        kinds = [Img2ImgParams(**common, strength=0.7, input_sha256=photo_sha),
                 SketchParams(**common, input_sha256=photo_sha, control_sha256=lines_sha),
                 FaceParams(seed=5, psi=0.5),
                 ZoomParams(**common, source_job=1, input_sha256=photo_sha, factor=1.5),
                 # A worker draws a whole animation (other jobs go to other workers): a clip of two frames,
                 # each redrawn with the sketch ControlNet on its edges.
                 AnimateParams(**common, mode="video", frames=2, frame_inputs=(photo_sha, lines_sha), control_scale=0.8)]
        sent = [await bot.queue.submit(PEOPLE[0], params) for params in kinds]
        await bot.until(lambda: all(bot.ended(j.id) for j in sent))
        stored = [await bot.history.get(j.id) for j in sent]
    assert [j.status for j in stored] == [JobStatus.DONE] * 5, [j.error for j in stored]

    class Quiet:
        cancelled = False

        def step(self, *args) -> None:
            pass

    diffusion = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
                                SketchConfig(controlnet=str(tiny_controlnet)))
    here = [diffusion.run(kinds[0], (photo,), Quiet()), diffusion.run(kinds[1], (lines,), Quiet()),
            FaceEngine(FacesConfig(checkpoint=str(checkpoint)), "cpu").run(kinds[2], (), Quiet()),
            diffusion.run(kinds[3], (photo,), Quiet()), draw_whole(diffusion, kinds[4], (photo, lines), Quiet())]
    for record, local in zip(stored, here):
        assert len(record.images) == len(local.images)
        for image, drawn in zip(record.images, local.images):
            remote = np.asarray(Image.open(image.path).convert("RGB"))
            assert np.array_equal(remote, np.asarray(drawn.convert("RGB"))), record.params.kind
    assert stored[1].run.controlnet == str(tiny_controlnet)  # how it was drawn came back with it


async def test_a_result_that_cannot_be_recorded_waits_and_is_saved_later_without_drawing_it_again(
    tmp_path: Path, redis_url: str, workers: Workers,
) -> None:
    import sqlite3

    async with serving(tmp_path, redis_url, workers, "w1") as bot:
        with sqlite3.connect(bot.data / "easel.db") as db:  # a real database failure, for job 1's end only
            db.execute("""CREATE TRIGGER refuse_1 BEFORE UPDATE OF status ON jobs
                          WHEN NEW.id = 1 AND NEW.status = 'done' BEGIN SELECT RAISE(ABORT, 'disk full'); END""")
        first = await bot.queue.submit(PEOPLE[0], job())
        await bot.until(lambda: any(e.kind is EventKind.STALLED and e.job.id == first.id for e in bot.events))
        assert not bot.ended(first.id)  # nobody is told it failed
        with sqlite3.connect(bot.data / "easel.db") as db:
            db.execute("DROP TRIGGER refuse_1")  # room again
        await bot.until(lambda: bot.ended(first.id))
        assert [e.kind for e in bot.ended(first.id)] == [EventKind.DONE]
        assert len(list((bot.data / "images").rglob("*.png"))) == 1  # no orphans of the failed attempts
        assert len(await stream_entries(bot, "started")) == 1  # saved again from what came back, not redrawn
