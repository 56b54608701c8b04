"""JobQueue with the real DiffusionEngine (tiny model), a real History file and real PNGs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image

from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.engine import EngineResult, Progress
from generation.queue import CancelError, EventKind, JobEvent, JobQueue, QueueFull, QueueLimits
from storage.errors import EaselError
from storage.history import History
from storage.images import ImageStore
from storage.infotext import read_parameters
from storage.records import JobStatus, Owner
from storage.params import AnimateParams, JobParams
from tests.conftest import params
from tests.helpers import eventually

ALICE = Owner("discord", "111", chat_id="c", name="alice")
BOB = Owner("discord", "222", chat_id="c", name="bob")
CAROL = Owner("telegram", "333", chat_id="c", name="carol")

TIMEOUT = 60


def every_kind(engine) -> dict[str, object]:
    """The engine for each kind the diffusion engine draws, as the app registers it."""
    return {kind: engine for kind in DiffusionEngine.KINDS}


class RecordingEngine:
    """A real Engine: notes which thread runs each job, can hold jobs at a gate, then draws with DiffusionEngine."""

    def __init__(self, inner: DiffusionEngine, gated: bool = False, hold_after: bool = False) -> None:
        self.inner = inner
        self.progress: Progress | None = None  # the last job's, to see a shutdown interrupt it
        self.threads: list[str] = []
        self.prompts: list[str] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        # Hold the finished images before handing them back: the moment a cancel can still land
        # after the last step the engine could stop at.
        self.drawn = threading.Event()
        self.release = threading.Event()
        if not hold_after:
            self.release.set()

    def unavailable(self) -> str | None:
        return self.inner.unavailable()

    def run(self, params: JobParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        self.threads.append(threading.current_thread().name)
        self.prompts.append(params.prompt)
        self.progress = progress
        self.entered.set()
        if not self.gate.wait(TIMEOUT):
            raise RuntimeError("the gate was never opened: was the event loop blocked?")
        result = self.inner.run(params, inputs, progress)
        self.drawn.set()
        if not self.release.wait(TIMEOUT):
            raise RuntimeError("the drawn images were never released")
        return result

    def run_info(self):
        return self.inner.run_info()


class Events:
    """Every event the queue emits, with the thread it was delivered on."""

    def __init__(self, queue: JobQueue) -> None:
        self.all: list[JobEvent] = []
        self.threads: set[str] = set()
        queue.subscribe(self._on_event)

    def _on_event(self, event: JobEvent) -> None:
        self.all.append(event)
        self.threads.add(threading.current_thread().name)

    def of(self, job_id: int) -> list[JobEvent]:
        return [event for event in self.all if event.job.id == job_id]

    def kinds(self, job_id: int) -> list[EventKind]:
        """The job's event kinds, with each run of PROGRESS events folded into one."""
        kinds: list[EventKind] = []
        for event in self.of(job_id):
            if not (event.kind is EventKind.PROGRESS and kinds and kinds[-1] is EventKind.PROGRESS):
                kinds.append(event.kind)
        return kinds

    def started_order(self) -> list[int]:
        return [event.job.id for event in self.all if event.kind is EventKind.STARTED]

    async def wait_for(self, predicate, what: str = "an event") -> JobEvent:
        return await eventually(lambda: next((event for event in self.all if predicate(event)), None), what=what)

    async def finished(self, job_id: int) -> JobEvent:
        return await self.wait_for(lambda e: e.job.id == job_id and e.finished, what=f"the end of job #{job_id}")


def in_progress(queue: JobQueue) -> list[int]:
    """The ids of the jobs in progress, oldest first."""
    return [job.id for job, _, _ in queue.running_jobs()]


def rows(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as connection:
        return connection.execute("SELECT id, user_id, status FROM jobs ORDER BY id").fetchall()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data")


@pytest.fixture
def config(tiny_model: Path) -> GenerationConfig:
    return GenerationConfig(device="cpu", model=str(tiny_model), preview_every=2)


@pytest.fixture
def engine(config: GenerationConfig) -> RecordingEngine:
    return RecordingEngine(DiffusionEngine(config))


@pytest.fixture
async def make_queue(history: History, store: ImageStore, engine: RecordingEngine):
    made: list[JobQueue] = []

    def make(limits: QueueLimits = QueueLimits(), *, engine=engine, history: History = history, **options) -> JobQueue:
        queue = JobQueue(history, store, every_kind(engine), limits, **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        for engine in queue.runner.engines.values():
            if isinstance(engine, RecordingEngine):
                engine.gate.set()  # never leave a worker thread waiting
        await queue.stop()


# ---- one job, start to finish ---------------------------------------------------------------

async def test_a_job_is_queued_started_progresses_and_is_done_with_its_pngs(
    make_queue, engine: RecordingEngine, history: History, store: ImageStore, tiny_model: Path
) -> None:
    queue = make_queue()
    events = Events(queue)
    queue.watch_previews(ALICE.platform)  # a frontend that shows previews, as Discord's does
    assert await queue.start() == []
    job = await queue.submit(ALICE, params(seed=1234, count=2, steps=4))
    assert job.status is JobStatus.QUEUED and job.id > 0

    done = await events.finished(job.id)
    assert done.kind is EventKind.DONE, done.error
    assert events.kinds(job.id) == [EventKind.QUEUED, EventKind.STARTED, EventKind.PROGRESS, EventKind.DONE]
    queued, started = events.of(job.id)[:2]
    assert (queued.position, started.position) == (1, 0)
    assert started.job.started_at is not None and started.job.status is JobStatus.RUNNING
    with pytest.raises(RuntimeError, match="twice"):
        await queue.start()
    progress = [e for e in events.of(job.id) if e.kind is EventKind.PROGRESS]
    assert [(e.step, e.total) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [e.step for e in progress if e.preview is not None] == [2]  # preview_every = 2, none on the last

    record = done.job
    assert record.status is JobStatus.DONE and record.run is not None
    assert [(image.index, image.seed) for image in record.images] == [(0, 1234), (1, 1235)]
    for image in record.images:
        path = Path(image.path)
        assert path.is_file() and path.is_relative_to(store.outputs) and path.name == f"{job.id}-{image.index}.png"
        text = read_parameters(path)
        assert text.startswith("a lighthouse at dusk\nSteps: 4, Sampler: DPM++ 2M, Schedule type: Uniform, CFG scale: 7, ")
        assert f"Seed: {image.seed}, Size: 64x64, Model hash: {record.run.model_hash[:10]}, Model: {tiny_model.name}" \
            in text
        with Image.open(path) as png:
            assert png.size == (64, 64)
    assert await history.get(job.id) == record
    assert record.run.memory_profile == "speed" and record.run.dtype == "float32"
    assert queue.position(job.id) is None and in_progress(queue) == []


async def test_previews_are_drawn_only_for_platforms_whose_frontend_shows_them(make_queue) -> None:
    queue = make_queue()
    events = Events(queue)
    await queue.start()
    console = Owner("console", "me", chat_id="console", name="me")
    unseen = await queue.submit(console, params(steps=4))  # nobody shows the console's previews
    await events.finished(unseen.id)
    unwatch = queue.watch_previews(ALICE.platform)
    watched = await queue.submit(ALICE, params(steps=4))
    await events.finished(watched.id)
    unwatch()
    after = await queue.submit(ALICE, params(steps=4))  # the frontend went away
    await events.finished(after.id)
    previews = {job.id: [e.step for e in events.of(job.id) if e.kind is EventKind.PROGRESS and e.preview is not None]
                for job in (unseen, watched, after)}
    assert previews == {unseen.id: [], watched.id: [2], after.id: []}


async def test_torch_runs_on_the_queue_thread_and_the_loop_stays_free(make_queue, config: GenerationConfig) -> None:
    gated = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(engine=gated)
    events = Events(queue)
    await queue.start()
    job = await queue.submit(ALICE, params())
    # The engine now waits at the gate. Only a free event loop can get here and open it; if the
    # queue ran the engine on the loop, the gate would time out and the job would fail.
    await eventually(gated.entered.is_set, what="the engine to start")
    # The loop keeps serving timers while the engine sits inside its run on the other thread.
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not gated.gate.is_set() and gated.threads == ["easel-gpu_0"]
    assert in_progress(queue) == [job.id] and queue.position(job.id) == 0
    gated.gate.set()
    done = await events.finished(job.id)

    assert done.kind is EventKind.DONE, done.error
    assert len(gated.threads) == 1 and gated.threads[0].startswith("easel-gpu")
    assert gated.threads[0] != threading.current_thread().name
    assert events.threads == {threading.current_thread().name}  # events always arrive on the loop


async def test_every_job_runs_on_the_same_single_gpu_thread(make_queue, engine: RecordingEngine) -> None:
    queue = make_queue()
    events = Events(queue)
    jobs = [await queue.submit(owner, params(seed=k)) for k, owner in enumerate([ALICE, BOB, ALICE])]
    await queue.start()
    for job in jobs:
        assert (await events.finished(job.id)).kind is EventKind.DONE
    assert len(engine.threads) == 3 and len(set(engine.threads)) == 1
    assert engine.threads[0].startswith("easel-gpu")


# ---- fair turns -----------------------------------------------------------------------------

async def test_turns_alternate_between_people(make_queue, engine: RecordingEngine) -> None:
    queue = make_queue()
    events = Events(queue)
    a1, a2, a3 = [await queue.submit(ALICE, params(prompt=f"a{k}")) for k in (1, 2, 3)]
    b1 = await queue.submit(BOB, params(prompt="b1"))
    assert [job.id for job in queue.waiting()] == [a1.id, b1.id, a2.id, a3.id]
    assert [queue.position(job.id) for job in (a1, b1, a2, a3)] == [1, 2, 3, 4]
    assert [event.position for event in events.all] == [1, 2, 3, 2]  # as each was queued

    assert await queue.start() == []  # jobs submitted before start are not "recovered"
    for job in (a1, a2, a3, b1):
        assert (await events.finished(job.id)).kind is EventKind.DONE
    assert events.started_order() == [a1.id, b1.id, a2.id, a3.id]
    assert engine.prompts == ["a1", "b1", "a2", "a3"]  # each job ran exactly once


async def test_someone_arriving_while_another_persons_job_runs_goes_next(make_queue, config: GenerationConfig) -> None:
    gated = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(engine=gated)
    events = Events(queue)
    await queue.start()
    a1 = await queue.submit(ALICE, params(prompt="a1"))
    await eventually(gated.entered.is_set, what="the engine to start")  # Alice's first job is running
    a2 = await queue.submit(ALICE, params(prompt="a2"))
    a3 = await queue.submit(ALICE, params(prompt="a3"))
    b1 = await queue.submit(BOB, params(prompt="b1"))
    assert queue.position(a1.id) == 0
    assert [job.id for job in queue.waiting()] == [b1.id, a2.id, a3.id]
    assert [queue.position(job.id) for job in (b1, a2, a3)] == [1, 2, 3]

    gated.gate.set()
    for job in (a1, a2, a3, b1):
        assert (await events.finished(job.id)).kind is EventKind.DONE
    assert events.started_order() == [a1.id, b1.id, a2.id, a3.id]


async def test_three_submitted_then_one_on_a_live_queue(make_queue, engine: RecordingEngine) -> None:
    queue = make_queue()
    events = Events(queue)
    await queue.start()
    alice = [await queue.submit(ALICE, params(prompt=f"a{k}")) for k in (1, 2, 3)]
    b1 = await queue.submit(BOB, params(prompt="b1"))
    for job in (*alice, b1):
        assert (await events.finished(job.id)).kind is EventKind.DONE
    assert events.started_order()[:2] == [alice[0].id, b1.id]
    assert engine.prompts == ["a1", "b1", "a2", "a3"]


async def test_three_people_take_turns(make_queue) -> None:
    queue = make_queue()
    a1, a2 = [await queue.submit(ALICE, params()) for _ in range(2)]
    b1, b2 = [await queue.submit(BOB, params()) for _ in range(2)]
    c1 = await queue.submit(CAROL, params())
    assert [job.id for job in queue.waiting()] == [a1.id, b1.id, c1.id, a2.id, b2.id]
    assert queue.count_for(ALICE) == 2 and queue.count_for(CAROL) == 1


# ---- limits ---------------------------------------------------------------------------------

async def test_per_user_limit_refuses_before_anything_is_stored(make_queue, db_path: Path) -> None:
    queue = make_queue(QueueLimits(max_per_user=2, max_total=10))
    events = Events(queue)
    first = await queue.submit(ALICE, params())
    await queue.submit(ALICE, params())
    with pytest.raises(QueueFull) as caught:
        await queue.submit(ALICE, params())
    assert "you already have 2 job(s) waiting or running (limit 2)" in str(caught.value)
    assert isinstance(caught.value, EaselError)
    assert [user for _, user, _ in rows(db_path)] == ["111", "111"]
    assert len(events.all) == 2  # no event for the refused one
    assert (await queue.submit(BOB, params())).owner == BOB  # others are not affected

    await queue.cancel(first.id, ALICE)  # a freed slot can be used again
    await queue.submit(ALICE, params())
    assert len(rows(db_path)) == 4


async def test_total_limit_refuses_before_anything_is_stored(make_queue, db_path: Path) -> None:
    queue = make_queue(QueueLimits(max_per_user=5, max_total=3))
    await queue.submit(ALICE, params())
    await queue.submit(ALICE, params())
    await queue.submit(BOB, params())
    with pytest.raises(QueueFull, match=r"the queue is full \(3 jobs waiting\)"):
        await queue.submit(CAROL, params())
    assert len(rows(db_path)) == 3
    assert await queue.history.recent(CAROL, 10) == []


async def test_the_running_job_counts_towards_its_owners_limit(make_queue, config: GenerationConfig) -> None:
    gated = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(QueueLimits(max_per_user=1, max_total=10), engine=gated)
    await queue.start()
    await queue.submit(ALICE, params())
    await eventually(gated.entered.is_set, what="the engine to start")
    with pytest.raises(QueueFull, match="limit 1"):
        await queue.submit(ALICE, params())
    await queue.submit(BOB, params())


# ---- cancelling -----------------------------------------------------------------------------

async def test_cancel_a_queued_job(make_queue, engine: RecordingEngine, history: History) -> None:
    queue = make_queue()
    events = Events(queue)
    mine = await queue.submit(ALICE, params(prompt="mine"))
    other = await queue.submit(ALICE, params(prompt="other"))
    kept = await queue.submit(ALICE, params(prompt="kept"))

    with pytest.raises(CancelError, match=f"job #{mine.id} is not yours"):
        await queue.cancel(mine.id, BOB)
    assert (await history.get(mine.id)).status is JobStatus.QUEUED

    cancelled = await queue.cancel(mine.id, ALICE)
    assert cancelled.id == mine.id
    assert (await history.get(mine.id)).status is JobStatus.CANCELLED
    assert events.kinds(mine.id) == [EventKind.QUEUED, EventKind.CANCELLED]
    assert events.of(mine.id)[-1].job.status is JobStatus.CANCELLED
    assert queue.position(mine.id) is None and queue.position(other.id) == 1

    await queue.cancel(other.id, BOB, admin=True)  # an admin may cancel anyone's
    assert (await history.get(other.id)).status is JobStatus.CANCELLED

    with pytest.raises(CancelError, match=f"job #{mine.id} has already finished \\(cancelled\\)"):
        await queue.cancel(mine.id, ALICE)
    with pytest.raises(CancelError, match="there is no job #9999"):
        await queue.cancel(9999, ALICE)

    await queue.start()
    assert (await events.finished(kept.id)).kind is EventKind.DONE
    assert engine.prompts == ["kept"]  # the cancelled ones never ran


@pytest.mark.parametrize(("by", "admin"), [(ALICE, False), (BOB, True)], ids=["owner", "admin"])
async def test_cancel_a_running_job(make_queue, history: History, store: ImageStore, by: Owner, admin: bool) -> None:
    queue = make_queue()
    events = Events(queue)
    await queue.start()
    job = await queue.submit(ALICE, params(steps=500))
    await events.wait_for(lambda e: e.job.id == job.id and e.kind is EventKind.PROGRESS)
    with pytest.raises(CancelError, match="not yours"):
        await queue.cancel(job.id, CAROL)
    assert (await queue.cancel(job.id, by, admin=admin)).id == job.id

    finished = await events.finished(job.id)
    assert finished.kind is EventKind.CANCELLED
    stored = await history.get(job.id)
    assert stored.status is JobStatus.CANCELLED and stored.images == () and stored.finished_at is not None
    steps = [e.step for e in events.of(job.id) if e.kind is EventKind.PROGRESS]
    assert len(steps) < 100  # stopped at a step, did not run on to 500
    assert not store.outputs.exists() or not any(store.outputs.rglob("*.png"))

    # the queue goes on, and the next job is not interrupted by the old flag
    after = await queue.submit(ALICE, params(steps=3))
    assert (await events.finished(after.id)).kind is EventKind.DONE
    assert [e.step for e in events.of(after.id) if e.kind is EventKind.PROGRESS] == [1, 2, 3]


async def test_a_job_that_just_left_the_line_is_running_for_everyone(make_queue, history: History,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writing, written = asyncio.Event(), asyncio.Event()
    mark_running = history.mark_running

    async def slow_mark_running(job_id: int):
        writing.set()
        await written.wait()
        return await mark_running(job_id)

    monkeypatch.setattr(history, "mark_running", slow_mark_running)
    queue = make_queue()
    events = Events(queue)
    job = await queue.submit(ALICE, params())
    await queue.start()
    await asyncio.wait_for(writing.wait(), TIMEOUT)  # the job has left the line; `running` is being written
    assert queue.position(job.id) == 0 and queue.waiting() == []
    assert queue.count_for(ALICE) == 1
    with pytest.raises(CancelError, match="not yours"):
        await queue.cancel(job.id, BOB)
    await queue.cancel(job.id, ALICE)
    written.set()
    assert (await events.finished(job.id)).kind is EventKind.CANCELLED
    assert (await history.get(job.id)).status is JobStatus.CANCELLED


# ---- restarts -------------------------------------------------------------------------------

async def test_jobs_left_unfinished_run_after_a_restart(db_path: Path, store: ImageStore, engine: RecordingEngine) -> None:
    async with await History.open(db_path) as before_crash:
        waiting = await before_crash.add_job(ALICE, params(seed=1))
        running = await before_crash.add_job(BOB, params(seed=2, count=2))
        finished = await before_crash.add_job(ALICE, params(seed=3))
        await before_crash.mark_running(running.id)
        await before_crash.finish(finished.id, JobStatus.DONE)
    # ... the process died here: no stop(), no finish() for the first two

    async with await History.open(db_path) as history:
        queue = JobQueue(history, store, every_kind(engine), QueueLimits())
        events = Events(queue)
        try:
            recovered = await queue.start()
            assert [job.id for job in recovered] == [waiting.id, running.id]
            requeued = [e for e in events.all if e.kind is EventKind.QUEUED]
            assert [(e.job.id, e.job.status, e.position) for e in requeued] == [
                (waiting.id, JobStatus.QUEUED, 1), (running.id, JobStatus.QUEUED, 2),
            ]
            for job in (waiting, running):
                assert (await events.finished(job.id)).kind is EventKind.DONE
        finally:
            await queue.stop()
        for job, seeds in ((waiting, [1]), (running, [2, 3])):
            stored = await history.get(job.id)
            assert stored.status is JobStatus.DONE and stored.started_at is not None
            assert [image.seed for image in stored.images] == seeds
            assert all(f"Seed: {image.seed}," in read_parameters(Path(image.path)) for image in stored.images)
        assert await history.unfinished() == []


async def test_stop_leaves_the_running_job_for_the_next_start(
    db_path: Path, history: History, store: ImageStore, config: GenerationConfig
) -> None:
    first = JobQueue(history, store, every_kind(RecordingEngine(DiffusionEngine(config))), QueueLimits())
    events = Events(first)
    await first.start()
    job = await first.submit(ALICE, params(steps=60))
    await events.wait_for(lambda e: e.job.id == job.id and e.kind is EventKind.PROGRESS)
    await first.stop()
    assert not any(e.finished for e in events.of(job.id))  # a shutdown is not a user's cancel
    stopped = await history.get(job.id)
    assert (stopped.status, stopped.crashes) == (JobStatus.QUEUED, 0)  # back in line; not a crash

    second = JobQueue(history, store, every_kind(RecordingEngine(DiffusionEngine(config))), QueueLimits())
    events = Events(second)
    try:
        assert [j.id for j in await second.start()] == [job.id]
        assert (await events.finished(job.id)).kind is EventKind.DONE
    finally:
        await second.stop()
    assert [e.step for e in events.of(job.id) if e.kind is EventKind.PROGRESS] == list(range(1, 61))


# ---- img2img and failures -------------------------------------------------------------------

async def test_img2img_job_reads_its_stored_input(make_queue, store: ImageStore) -> None:
    queue = make_queue()
    events = Events(queue)
    digest, _ = store.add_input(Image.new("RGB", (96, 80), (200, 120, 40)))
    await queue.start()
    job = await queue.submit(ALICE, params(kind="img2img", steps=4, strength=0.5, input_sha256=digest))
    done = await events.finished(job.id)
    assert done.kind is EventKind.DONE, done.error
    assert {(e.step, e.total) for e in events.of(job.id) if e.kind is EventKind.PROGRESS} == {(1, 2), (2, 2)}
    text = read_parameters(Path(done.job.images[0].path))
    assert text.endswith(", Denoising strength: 0.5, RNG: CPU") and "Steps: 4," in text


async def test_img2img_whose_input_is_gone_fails_with_a_readable_reason(make_queue, store: ImageStore, history: History) -> None:
    queue = make_queue()
    events = Events(queue)
    digest, _ = store.add_input(Image.new("RGB", (64, 64), "white"))
    store.input_path(digest).unlink()
    await queue.start()
    job = await queue.submit(ALICE, params(kind="img2img", strength=0.5, input_sha256=digest))
    failed = await events.finished(job.id)
    assert failed.kind is EventKind.FAILED
    assert failed.error == f"the input image of this job ({digest[:12]}) is no longer on disk"
    assert (await history.get(job.id)).error == failed.error


async def test_a_model_that_cannot_load_fails_each_job_and_the_queue_lives_on(
    make_queue, tmp_path: Path, history: History
) -> None:
    missing = str(tmp_path / "no-model-here")
    queue = make_queue(engine=DiffusionEngine(GenerationConfig(device="cpu", model=missing)))
    events = Events(queue)
    await queue.start()
    for _ in range(2):
        job = await queue.submit(ALICE, params())
        failed = await events.finished(job.id)
        assert failed.kind is EventKind.FAILED and repr(missing) in failed.error
        stored = await history.get(job.id)
        assert stored.status is JobStatus.FAILED and stored.error == failed.error


async def test_an_unexpected_error_is_logged_once_and_shown_plainly(
    make_queue, history: History, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    events = Events(queue)
    await queue.start()
    with caplog.at_level(logging.ERROR, logger="generation.queue"):
        bad = await queue.submit(ALICE, params(scheduler="no-such-sampler"))  # the bot layer validates; the queue must survive
        failed = await events.finished(bad.id)
    assert failed.kind is EventKind.FAILED
    assert failed.error == f"something went wrong with job #{bad.id}"
    assert (await history.get(bad.id)).error == failed.error
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and f"job #{bad.id} failed" in logged[0].getMessage()

    good = await queue.submit(ALICE, params())
    assert (await events.finished(good.id)).kind is EventKind.DONE


async def test_a_failing_listener_does_not_break_the_job(make_queue) -> None:
    queue = make_queue()

    def broken(event: JobEvent) -> None:
        raise RuntimeError("listener bug")

    queue.subscribe(broken)
    events = Events(queue)
    unsubscribe_me: list[JobEvent] = []
    unsubscribe = queue.subscribe(unsubscribe_me.append)
    unsubscribe()
    await queue.start()
    job = await queue.submit(ALICE, params())
    assert (await events.finished(job.id)).kind is EventKind.DONE
    assert unsubscribe_me == []


# ---- fixes from review ----------------------------------------------------------------------

async def test_whoever_was_served_least_recently_goes_next_and_positions_say_so(
    make_queue, config: GenerationConfig
) -> None:
    gated = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(engine=gated)
    events = Events(queue)
    await queue.start()
    a1 = await queue.submit(ALICE, params(prompt="a1"))
    await eventually(gated.entered.is_set, what="the engine to start")  # alice has had her turn: a1 is running
    a2 = await queue.submit(ALICE, params(prompt="a2"))
    b1 = await queue.submit(BOB, params(prompt="b1"))
    c1 = await queue.submit(CAROL, params(prompt="c1"))
    assert [job.id for job in queue.waiting()] == [b1.id, c1.id, a2.id]
    assert [queue.position(job.id) for job in (b1, c1, a2)] == [1, 2, 3]
    gated.gate.set()
    await events.finished(a2.id)
    assert events.started_order() == [a1.id, b1.id, c1.id, a2.id]


async def test_a_burst_of_submits_cannot_get_past_the_limits(make_queue, history: History) -> None:
    queue = make_queue(QueueLimits(max_per_user=2, max_total=3))  # not started: nothing leaves the line
    outcomes = await asyncio.gather(
        *(queue.submit(owner, params()) for owner in (ALICE,) * 4 + (BOB,) * 4), return_exceptions=True
    )
    accepted = [o for o in outcomes if not isinstance(o, Exception)]
    assert [o.owner.name for o in accepted] == ["alice", "alice", "bob"]
    assert all(isinstance(o, QueueFull) for o in outcomes if isinstance(o, Exception))
    assert len(await history.unfinished()) == 3  # nothing refused was persisted


async def test_a_job_whose_end_cannot_be_recorded_waits_in_the_queue_and_the_worker_goes_on(
    make_queue, db_path: Path, store: ImageStore, engine: RecordingEngine
) -> None:
    with sqlite3.connect(db_path) as db:  # a real database failure, for job 1 only
        db.execute("""CREATE TRIGGER refuse_1 BEFORE UPDATE OF status ON jobs
                      WHEN NEW.id = 1 AND NEW.status = 'done' BEGIN SELECT RAISE(ABORT, 'disk full'); END""")
    queue = make_queue(storage_retry_seconds=0.2)
    events = Events(queue)
    await queue.start()
    first = await queue.submit(ALICE, params())
    stalled = await events.wait_for(lambda e: e.job.id == first.id and e.kind is EventKind.STALLED)
    assert stalled.error.startswith(f"job #{first.id} could not be saved (disk full); it waits in the queue")
    assert not any(e.finished for e in events.of(first.id))  # nobody is told it failed
    second = await queue.submit(BOB, params())
    assert (await events.finished(second.id)).kind is EventKind.DONE  # the worker is still there
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TRIGGER refuse_1")  # room again
    assert (await events.finished(first.id)).kind is EventKind.DONE
    assert len(list(store.outputs.rglob("*.png"))) == 2  # no orphans from the attempts that were not recorded
    assert len(engine.prompts) == 2  # each drawn once: the retries saved what was drawn, not drew it again


async def test_a_job_the_process_keeps_dying_under_is_failed_not_retried(
    make_queue, history: History
) -> None:
    unlucky = await history.add_job(ALICE, params(prompt="unlucky"))
    fresh = await history.add_job(BOB, params(prompt="fresh"))
    for job in (unlucky, fresh):
        await history.mark_running(job.id)
    await history.mark_crashed([unlucky.id])
    await history.mark_running(unlucky.id)
    await history.mark_crashed([unlucky.id])
    await history.mark_running(unlucky.id)  # and the process dies under it a third time

    queue = make_queue()
    events = Events(queue)
    recovered = await queue.start()
    assert [(job.id, job.crashes) for job in recovered] == [(fresh.id, 1)]
    failed = (await history.get(unlucky.id))
    assert failed.status is JobStatus.FAILED and failed.crashes == 3
    assert failed.error.startswith(f"easel stopped 3 times while job #{unlucky.id} ran, so it is not retried")
    assert [e.kind for e in events.of(unlucky.id)] == [EventKind.FAILED]
    assert (await events.finished(fresh.id)).kind is EventKind.DONE


async def test_a_failed_job_records_how_the_engine_was_set_up(make_queue, history: History) -> None:
    queue = make_queue()
    events = Events(queue)
    await queue.start()
    ok = await queue.submit(ALICE, params())
    await events.finished(ok.id)
    lost = await queue.submit(ALICE, params(kind="img2img", strength=0.5, input_sha256="0" * 64))
    failed = await events.finished(lost.id)
    assert failed.kind is EventKind.FAILED and "no longer on disk" in failed.error
    record = await history.get(lost.id)
    assert record.run is not None and record.run.memory_profile == "speed" and record.run.attention == "sdpa"


# ---- cancels that race the end of a job -----------------------------------------------------

class SlowStore(ImageStore):
    """The real store, with a gate before each PNG is written: a cancel can land while images are saved."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.saving = threading.Event()
        self.gate = threading.Event()

    def save_output(self, *args, **kwargs):
        self.saving.set()
        if not self.gate.wait(TIMEOUT):
            raise RuntimeError("the save gate was never opened")
        return super().save_output(*args, **kwargs)


async def wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, TIMEOUT), "the engine never got there"


async def test_a_cancel_after_the_last_step_still_ends_cancelled(make_queue, config, history: History, store) -> None:
    engine = RecordingEngine(DiffusionEngine(config), hold_after=True)
    queue = make_queue(engine=engine)
    events = Events(queue)
    await queue.start()
    job = await queue.submit(ALICE, params())
    await wait_thread_event(engine.drawn)  # every step is done, the images exist
    assert (await queue.cancel(job.id, ALICE)).id == job.id  # the person is told "cancelling…"
    engine.release.set()
    assert (await events.finished(job.id)).kind is EventKind.CANCELLED  # so it must not be delivered
    stored = await history.get(job.id)
    assert stored.status is JobStatus.CANCELLED and stored.images == ()
    assert not store.outputs.exists() or not any(store.outputs.rglob("*.png"))


async def test_a_cancel_while_the_images_are_saved_says_the_job_had_finished(make_queue, history: History,
                                                                             tmp_path: Path, engine) -> None:
    slow = SlowStore(tmp_path / "slow")
    queue = JobQueue(history, slow, every_kind(engine), QueueLimits())
    events = Events(queue)
    await queue.start()
    try:
        job = await queue.submit(ALICE, params())
        await wait_thread_event(slow.saving)
        with pytest.raises(CancelError, match=f"^job #{job.id} has already finished; its images are being saved$"):
            await queue.cancel(job.id, ALICE)
        slow.gate.set()
        assert (await events.finished(job.id)).kind is EventKind.DONE
        assert (await history.get(job.id)).status is JobStatus.DONE
    finally:
        slow.gate.set()
        await queue.stop()


@pytest.mark.parametrize("order", ["cancel, then shutdown", "shutdown, then cancel"])
async def test_a_persons_cancel_during_shutdown_ends_cancelled_not_requeued(make_queue, config, history, order) -> None:
    engine = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(engine=engine)
    events = Events(queue)
    await queue.start()
    job = await queue.submit(ALICE, params(steps=50))
    await wait_thread_event(engine.entered)
    if order == "cancel, then shutdown":
        await queue.cancel(job.id, ALICE)
        stopping = asyncio.create_task(queue.stop())
    else:
        stopping = asyncio.create_task(queue.stop())
        await eventually(lambda: engine.progress.cancelled, what="the shutdown to interrupt the job")
        await queue.cancel(job.id, ALICE)
    engine.gate.set()
    await stopping
    assert (await history.get(job.id)).status is JobStatus.CANCELLED
    assert [e.kind for e in events.of(job.id) if e.finished] == [EventKind.CANCELLED]
    assert await history.unfinished() == []  # it does not come back on the next start


async def test_a_shutdown_alone_requeues_the_running_job_without_counting_a_crash(make_queue, config, history) -> None:
    engine = RecordingEngine(DiffusionEngine(config), gated=True)
    queue = make_queue(engine=engine)
    await queue.start()
    job = await queue.submit(ALICE, params(steps=50))
    await wait_thread_event(engine.entered)
    stopping = asyncio.create_task(queue.stop())
    await eventually(lambda: engine.progress.cancelled, what="the shutdown to interrupt the job")
    engine.gate.set()
    await stopping
    [again] = await history.unfinished()
    assert (again.id, again.status, again.crashes) == (job.id, JobStatus.QUEUED, 0)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 4 MB filesystem to fill up; needs the right to mount (root), else the test is skipped."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to make room again)."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            for _ in range(10_000):  # bounded: 10,000 × 64 KB is far past 4 MB
                handle.write(b"\0" * 65536)
                handle.flush()
    return filler


async def test_a_full_disk_keeps_the_job_queued_and_it_runs_once_there_is_room(small_disk: Path, config) -> None:
    gated = RecordingEngine(DiffusionEngine(config), gated=True)
    async with await History.open(small_disk / "easel.db") as history:
        store = ImageStore(small_disk)
        queue = JobQueue(history, store, every_kind(gated), QueueLimits(), storage_retry_seconds=0.2)
        events = Events(queue)
        await queue.start()
        try:
            job = await queue.submit(ALICE, params())
            await eventually(gated.entered.is_set, what="the engine to start")  # on disk as running; now the disk fills up
            filler = fill(small_disk)
            gated.gate.set()
            stalled = await events.wait_for(lambda e: e.job.id == job.id and e.kind is EventKind.STALLED)
            assert "No space left on device" in stalled.error and "waits in the queue" in stalled.error
            assert not any(e.finished for e in events.of(job.id)) and queue.position(job.id) in (0, 1)
            filler.unlink()
            assert (await events.finished(job.id)).kind is EventKind.DONE
            assert (await history.get(job.id)).status is JobStatus.DONE
        finally:
            gated.gate.set()
            await queue.stop()


# ---- jobs drawn in turns (animations) -------------------------------------------------------

def animation(frames: int = 3, prompt: str = "a zoom") -> AnimateParams:
    return AnimateParams(prompt=prompt, seed=7, steps=2, cfg=7.0, width=64, height=64, scheduler="dpmpp_2m",
                         mode="zoom", frames=frames, zoom=1.1)


async def test_an_animation_draws_a_frame_a_turn_and_others_take_theirs_in_between(
        make_queue, engine: RecordingEngine, history: History) -> None:
    queue = make_queue()
    events = Events(queue)
    long = await queue.submit(ALICE, animation(3, "zoom"))
    after = await queue.submit(ALICE, params(prompt="alice's next"))
    b1, b2 = [await queue.submit(BOB, params(prompt=f"b{k}")) for k in (1, 2)]
    await queue.start()
    for job in (long, after, b1, b2):
        assert (await events.finished(job.id)).kind is EventKind.DONE
    # One frame a turn; Bob's pictures go between; Alice's next job waits for her animation, as any job of hers.
    assert engine.prompts == ["zoom", "b1", "zoom", "b2", "zoom", "alice's next"]
    frames = [(e.frame, e.frames) for e in events.of(long.id) if e.kind is EventKind.PROGRESS]
    assert sorted(set(frames)) == [(1, 3), (2, 3), (3, 3)]
    assert events.kinds(long.id)[:2] == [EventKind.QUEUED, EventKind.STARTED]
    assert events.kinds(long.id).count(EventKind.STARTED) == 1  # one job, started once
    done = await history.get(long.id)
    assert [image.seed for image in done.images] == [7, 8, 9]


class HoldsBob(RecordingEngine):
    """Draws everyone's jobs at once but Bob's, which wait until `bobs_gate` opens: the moment an animation
    waits in the line between two frames while someone else's job is drawn."""

    def __init__(self, inner: DiffusionEngine) -> None:
        super().__init__(inner)
        self.bobs_gate = threading.Event()
        self.bob_waits = threading.Event()

    def run(self, params: JobParams, inputs: tuple[Image.Image, ...], progress: Progress) -> EngineResult:
        if params.prompt == "bob":
            self.bob_waits.set()
            if not self.bobs_gate.wait(TIMEOUT):
                raise RuntimeError("bob's gate was never opened")
        return super().run(params, inputs, progress)


async def test_an_animation_cancelled_between_two_frames_ends_with_the_frames_it_has(
        make_queue, config: GenerationConfig, history: History) -> None:
    engine = HoldsBob(DiffusionEngine(config))
    queue = make_queue(engine=engine)
    events = Events(queue)
    long = await queue.submit(ALICE, animation(5))
    other = await queue.submit(BOB, params(prompt="bob"))
    await queue.start()
    await eventually(engine.bob_waits.is_set, what="bob's turn after frame 1")
    assert engine.prompts == ["a zoom"]
    assert queue.position(long.id) == 0 and in_progress(queue) == [long.id, other.id]  # between two turns: running
    await queue.cancel(long.id, ALICE)
    end = await events.finished(long.id)
    assert end.kind is EventKind.CANCELLED and len(end.job.images) == 1  # the one frame drawn before bob's turn
    assert (await history.get(long.id)).status is JobStatus.CANCELLED
    engine.bobs_gate.set()
    assert (await events.finished(other.id)).kind is EventKind.DONE
    assert engine.prompts == ["a zoom", "bob"]  # nothing more of the animation was drawn


async def test_a_stop_between_two_frames_leaves_the_animation_for_the_next_start(
        db_path: Path, history: History, store: ImageStore, config: GenerationConfig) -> None:
    engine = RecordingEngine(DiffusionEngine(config), gated=True)
    first = JobQueue(history, store, every_kind(engine), QueueLimits())
    await first.start()
    long = await first.submit(ALICE, animation(3))
    await first.submit(BOB, params(prompt="bob"))
    engine.gate.set()
    await eventually(lambda: len(engine.prompts) == 2, what="bob's turn")
    await first.stop()
    stopped = await history.get(long.id)
    assert (stopped.status, stopped.crashes) == (JobStatus.QUEUED, 0)  # a clean stop, not a crash

    second = JobQueue(history, store, every_kind(RecordingEngine(DiffusionEngine(config))), QueueLimits())
    events = Events(second)
    try:
        await second.start()
        assert (await events.finished(long.id)).kind is EventKind.DONE
    finally:
        await second.stop()
    assert len((await history.get(long.id)).images) == 3
