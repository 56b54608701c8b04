"""The terminal frontend end to end: the real `easel console` process, piped like a script would."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import pty
import queue
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import numpy as np
import pytest
from PIL import Image
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from generation.engines import build_engines
from bot.cli import main
from bot.config import Config
from bot.frontends.console import ConsoleFrontend, extract_image, local_user, visible
from bot.frontends.pacing import progress_bar
from bot.service import Service
from generation.config import GenerationConfig
from generation.queue import EventKind, JobEvent, JobQueue, QueueLimits
from storage.history import History
from storage.images import ImageStore
from storage.uploads import NOT_AN_IMAGE
from storage.records import Owner
from tests.helpers import eventually

DONE = re.compile(r"^#(\d+) done: (\S+)", re.MULTILINE)


@pytest.fixture
def workdir(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n', encoding="utf-8")
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., Result]:
    """`easel console` in this process, through the real CLI, with `script` piped into it."""
    def run(workdir: Path, script: str, *args: str) -> Result:
        capsys.readouterr()  # what came before is not this run's
        monkeypatch.chdir(workdir)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(sys, "stdin", io.StringIO(script))
        code = main(["console", *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Typing:
    """A stdin a test types into while the console runs: lines arrive as written, then the end."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()

    def write(self, line: str) -> None:
        self._lines.put(line)

    def close(self) -> None:
        self._lines.put(None)

    def isatty(self) -> bool:
        return False

    def __iter__(self) -> Iterator[str]:
        while (line := self._lines.get(timeout=120)) is not None:
            yield line


def start_console(workdir: Path) -> subprocess.Popen:
    """A live `easel console` whose stdin and stdout the test holds."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "console"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=workdir, env=_env(), text=True,
    )


def parameters(path: Path) -> str:
    with Image.open(path) as image:
        return image.info["parameters"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_rerun_by_seed_redraws_identical_pixels_and_records_parent(workdir: Path, console) -> None:
    result = console(workdir, "/imagine a red lighthouse --seed 42 --steps 4\n/rerun 42\n/rerun 42 steps=8\n")
    assert result.returncode == 0, result.stderr
    done = {int(job): workdir / path for job, path in DONE.findall(result.stdout)}
    assert sorted(done) == [1, 2, 3], result.stdout
    assert "queued #1 (position 1)" in result.stdout
    assert np.array_equal(pixels(done[1]), pixels(done[2]))
    assert not np.array_equal(pixels(done[1]), pixels(done[3]))
    for job in (1, 2, 3):
        assert "Seed: 42" in parameters(done[job])
        assert parameters(done[job]).startswith("a red lighthouse\nSteps: ")
    assert "Steps: 8," in parameters(done[3])
    assert "Size: 512x512" in parameters(done[1])
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        rows = dict(db.execute("SELECT id, parent_id FROM jobs").fetchall())
        seed, steps = db.execute("SELECT seed, params ->> 'steps' FROM jobs WHERE id=3").fetchone()
    assert rows == {1: None, 2: 1, 3: 2}  # each rerun names the latest earlier seed-42 job
    assert (seed, steps) == (42, 8)


def test_bad_lines_get_one_line_errors_and_the_next_command_works(workdir: Path, console) -> None:
    (workdir / "notes.txt").write_text("not a picture", encoding="utf-8")
    script = "\n".join([
        "/imagine a cat --steps 100000",
        "/imagine a cat --size 99999x3",
        "/imagine a cat --frobnicate 3",
        "/imagine",
        "/imagine a cat --image notes.txt",
        "/imagine a cat --image missing.png",
        "/imagine a cat --seed 7 --steps 2 --size 64x64",
    ]) + "\n"
    result = console(workdir, script)
    assert result.returncode == 1, result.stderr  # a script with errors says so in its exit status
    errors = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: steps must be 1–500, got 100000",
        "error: width must be a multiple of 8 from 64 to 2048, got 99999",
        "error: unknown option --frobnicate; options are --no, --seed, --steps, --cfg, --ar, --size, --n, "
        "--scheduler, --model, --strength, --hires, --hires-strength, --refiner, --mode, --pix2pix, --control, --psi, --layers, "
        "--scale, --denoise, --variation, --factor, --direction, --frames, --fps, --from, --to, --zoom, --rotate, --shift, "
        "--reverse, --fixed-seed, --colour, --name, --epochs, --decay-epochs, --iterations, --edges, --ngf",
        "error: the prompt is empty; describe what to draw, e.g. /imagine a red lighthouse at dusk",
        f"error: {NOT_AN_IMAGE}",
        "error: cannot read --image missing.png: No such file or directory",
    ]
    assert "queued #1 (position 1)" in result.stdout  # the failed lines never became jobs
    assert DONE.findall(result.stdout) == [("1", DONE.findall(result.stdout)[0][1])]
    assert result.stderr == ""


def test_image_to_image_from_a_file(workdir: Path, console) -> None:
    Image.new("RGB", (96, 64), (200, 40, 40)).save(workdir / "red.png")
    result = console(workdir, "/imagine a red barn --image red.png --seed 3 --steps 4 strength=0.5\n")
    assert result.returncode == 0, result.stderr
    [(_, path)] = DONE.findall(result.stdout)
    text = parameters(workdir / path)
    assert "Denoising strength: 0.5" in text and "Seed: 3" in text
    assert "2/2" in result.stdout  # img2img runs int(4 × 0.5) steps
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        kind, sha = db.execute("SELECT kind, params ->> 'input_sha256' FROM jobs").fetchone()
    assert kind == "img2img" and (workdir / "data" / "inputs" / f"{sha}.png").exists()


def test_sigkill_mid_job_loses_nothing(workdir: Path, console) -> None:
    long_job = "--steps 150 --size 64x64"
    process = start_console(workdir)
    try:
        process.stdin.write(f"/imagine first {long_job} --seed 1\n/imagine second {long_job} --seed 2\n")
        process.stdin.flush()
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            seen.append(line)
            if line.startswith("[#1]"):  # job 1 is generating, job 2 waits
                break
        assert any(line.startswith("[#1]") for line in seen), seen
        assert "queued #2 (position 1)\n" in seen
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        assert dict(db.execute("SELECT id, status FROM jobs")) == {1: "running", 2: "queued"}

    result = console(workdir, "")
    assert result.returncode == 0, result.stderr
    assert "#1 was unfinished at the last shutdown" in result.stdout
    assert "#2 was unfinished at the last shutdown" in result.stdout
    done = dict(DONE.findall(result.stdout))
    assert sorted(done) == ["1", "2"], result.stdout
    assert "Seed: 1" in parameters(workdir / done["1"]) and "Seed: 2" in parameters(workdir / done["2"])
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        assert dict(db.execute("SELECT id, status FROM jobs")) == {1: "done", 2: "done"}


def test_extract_image_takes_the_path_out_of_the_line() -> None:
    assert extract_image("/imagine a cat --image cat.png --steps 5") == ("/imagine a cat  --steps 5", Path("cat.png"))
    assert extract_image('/imagine a cat image="my cat.png"') == ("/imagine a cat", Path("my cat.png"))
    assert extract_image("/imagine an image of a cat") == ("/imagine an image of a cat", None)
    # A dash the keyboard turned long, as for every other option.
    assert extract_image("/imagine a cat \u2014image cat.png") == ("/imagine a cat", Path("cat.png"))
    assert extract_image("/imagine a cat \u2013image=cat.png") == ("/imagine a cat", Path("cat.png"))


def test_cancelling_a_waiting_job_prints_one_line(workdir: Path, console) -> None:
    script = "/imagine first --seed 1 --steps 2 --size 64x64\n/imagine second --seed 2 --steps 2 --size 64x64\n/cancel #2\n"
    result = console(workdir, script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if "cancel" in line] == ["cancelled #2"]  # not also "#2 cancelled"
    assert [job for job, _ in DONE.findall(result.stdout)] == ["1"]


async def test_cancelling_a_running_job_says_so_and_then_that_it_stopped(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path, tiny_model)
    typing, out = Typing(), io.StringIO()
    async with console_running(config, typing, out) as (frontend, running, history):
        typing.write("/imagine slow --seed 1 --steps 500 --size 64x64\n")
        await eventually(lambda: "[#1]" in out.getvalue())  # generating now
        typing.write("/cancel #1\n")
        typing.close()
        await asyncio.wait_for(running, 60)
        [job] = await history.recent(frontend.owner, 5)
    assert [line for line in out.getvalue().splitlines() if "cancel" in line] == ["cancelling #1…", "#1 cancelled"]
    assert job.status == "cancelled" and job.delivered
    assert frontend.failures == 0  # a cancelled job is not a failure


async def test_the_console_user_is_local_where_the_system_has_no_name_for_it(tmp_path: Path, monkeypatch) -> None:
    # Containers often run as a user id with no passwd entry and no $USER, where getpass.getuser() raises
    # (KeyError before Python 3.13, OSError since). Only the system's user database is faked here.
    import pwd

    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert local_user() == "local"

    config = Config(storage={"data_dir": tmp_path})
    out = io.StringIO()
    async with await History.open(config.database) as history:
        images = ImageStore(tmp_path)
        queue = JobQueue(history, images, build_engines(config), QueueLimits())
        frontend = ConsoleFrontend(Service(config, history, images, queue), stdin=io.StringIO("/queue\n"), stdout=out,
                                   interactive=False)
        await frontend.run()
    assert frontend.owner == Owner("console", "local", chat_id="console", name="local")
    assert out.getvalue() == "the queue is empty\n"


def test_progress_bar_cells() -> None:
    assert progress_bar(0, 30) == "░" * 10
    assert progress_bar(24, 30) == "████████░░"
    assert progress_bar(30, 30) == "█" * 10


def test_a_second_easel_on_the_same_data_folder_is_refused(workdir: Path, console) -> None:
    first = start_console(workdir)
    try:
        first.stdin.write("/queue\n")
        first.stdin.flush()
        assert first.stdout.readline() == "the queue is empty\n"  # up, holding the folder
        second = console(workdir, "/imagine a cat\n")
        assert second.returncode == 2
        assert second.stderr.startswith(f"easel: another easel (pid {first.pid}) is already running on data")
        assert second.stdout == ""
    finally:
        first.stdin.close()
        first.wait(timeout=60)
    assert first.returncode == 0


def test_options_after_the_subcommand_and_a_config_file_elsewhere(tmp_path: Path, tiny_model: Path, console) -> None:
    settings = tmp_path / "settings" / "easel.toml"
    settings.parent.mkdir()
    settings.write_text(
        f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n[storage]\ndata_dir = "{tmp_path / "store"}"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = console(elsewhere, "/imagine a cat --seed 3 --steps 2 --size 64x64\n", "--config", str(settings), "-v")
    assert result.returncode == 0, result.stderr
    [(_, path)] = DONE.findall(result.stdout)
    assert Path(path).is_relative_to(tmp_path / "store") and Path(path).exists()
    assert "loaded" in result.stderr  # -v after the subcommand: the log reaches the terminal too
    missing = console(elsewhere, "", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "nope.toml does not exist" in missing.stderr


async def test_a_result_that_finished_unseen_is_shown_by_the_next_console_once(tmp_path: Path, tiny_model: Path) -> None:
    config = Config(storage={"data_dir": tmp_path}, generation=GenerationConfig(device="cpu", model=str(tiny_model)))
    me = Owner("console", local_user(), chat_id="console", name=local_user())
    async with await History.open(config.database) as history:
        images = ImageStore(tmp_path)
        async with JobQueue(history, images, build_engines(config), QueueLimits()) as jobs:
            service = Service(config, history, images, jobs)
            # Queued and finished with no console attached, as when easel restarts and a recovered job
            # completes before the terminal (or a chat frontend) is back.
            reply = await service.handle(me, "/imagine unseen --seed 9 --steps 2 --size 64x64")
            await eventually(lambda: not jobs.running_jobs() and not jobs.waiting())
            shown = []
            for _ in range(2):
                out = io.StringIO()
                await ConsoleFrontend(service, stdin=io.StringIO(""), stdout=out).run()
                shown.append(out.getvalue())
    assert shown[0].startswith(f"#{reply.job.id} done: ") and "seed 9" in shown[0]
    assert shown[1] == ""  # delivered once, not on every start


async def test_recovered_jobs_count_positions_from_one_and_the_running_one_says_so(tmp_path: Path,
                                                                                   tiny_model: Path) -> None:
    from tests.conftest import params

    config, out = tiny_config(tmp_path, tiny_model), io.StringIO()
    me = Owner("console", local_user(), chat_id="console", name=local_user())
    async with await History.open(config.database) as history:
        for seed in (1, 2, 3):  # left unfinished by an easel that stopped
            await history.add_job(me, params(seed=seed, steps=500))
        images = ImageStore(tmp_path)
        async with JobQueue(history, images, build_engines(config), QueueLimits()) as jobs:
            await eventually(lambda: jobs.running_jobs())  # the worker has taken #1 before the console starts
            frontend = ConsoleFrontend(Service(config, history, images, jobs), stdin=io.StringIO(""), stdout=out)
            running = asyncio.create_task(frontend.run())
            await eventually(lambda: out.getvalue().count("unfinished") == 3)
            for job_id in (3, 2, 1):
                await jobs.cancel(job_id, me, admin=True)
            await asyncio.wait_for(running, 60)
    assert out.getvalue().splitlines()[:3] == [
        "#1 was unfinished at the last shutdown; running again",
        "#2 was unfinished at the last shutdown; queued again (position 1)",
        "#3 was unfinished at the last shutdown; queued again (position 2)",
    ]


@contextlib.asynccontextmanager
async def console_running(config: Config, stdin, stdout) -> AsyncIterator[tuple[ConsoleFrontend, asyncio.Task, History]]:
    """A console over its own storage and queue, already reading `stdin`; the queue stops on the way out."""
    async with await History.open(config.database) as history:
        images = ImageStore(config.storage.data_dir)
        async with JobQueue(history, images, build_engines(config), QueueLimits()) as jobs:
            frontend = ConsoleFrontend(Service(config, history, images, jobs), stdin=stdin, stdout=stdout)
            yield frontend, asyncio.create_task(frontend.run()), history


def tiny_config(tmp_path: Path, tiny_model: Path) -> Config:
    return Config(storage={"data_dir": tmp_path}, generation=GenerationConfig(device="cpu", model=str(tiny_model)))


async def test_an_image_that_is_a_device_or_a_fifo_is_refused_at_once_while_a_job_runs(
    tmp_path: Path, tiny_model: Path
) -> None:
    # Reading either would never end (/dev/zero) or wait for a writer for ever (a FIFO), in a thread the
    # console awaits; both are refused before a byte is read, and the job already queued still finishes.
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    config = tiny_config(tmp_path, tiny_model)
    script = (f"/imagine a boat --seed 1 --steps 2 --size 64x64\n/imagine a cat --image /dev/zero\n"
              f"/imagine a dog --image {fifo}\n")
    out = io.StringIO()
    async with await History.open(config.database) as history:
        images = ImageStore(tmp_path)
        async with JobQueue(history, images, build_engines(config), QueueLimits()) as jobs:
            frontend = ConsoleFrontend(Service(config, history, images, jobs), stdin=io.StringIO(script), stdout=out)
            await asyncio.wait_for(frontend.run(), 60)
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [
        "error: --image /dev/zero is a character device, not a file",
        f"error: --image {fifo} is a named pipe (FIFO), not a file",
    ]
    assert [job for job, _ in DONE.findall(out.getvalue())] == ["1"]
    assert frontend.failures == 2


def test_bytes_that_are_not_utf8_on_a_pipe_neither_hang_nor_crash_the_console(workdir: Path) -> None:
    script = (b"/imag\xffine a cat\n"  # a command name that cannot be read: an error line, and on
              b"/imagine a caf\xe9 boat --seed 4 --steps 2 --size 64x64\n"  # latin-1 in a prompt: runs with U+FFFD
              b"/queue\n")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "console"], input=script, capture_output=True,
                            cwd=workdir, env=_env(), timeout=120)
    stdout = result.stdout.decode("utf-8")
    assert result.returncode == 1, result.stderr  # the unreadable command was an error
    errors = [line for line in stdout.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "/imag\ufffdine" in errors[0], stdout
    assert any(line.endswith("#1 (" + local_user() + ") a caf\ufffd boat") for line in stdout.splitlines()), stdout
    assert [job for job, _ in DONE.findall(stdout)] == ["1"]
    assert b"Traceback" not in result.stderr


def test_visible_shows_control_characters_instead_of_sending_them() -> None:
    assert visible("a\x1b]0;pwned\x07b") == "a\\x1b]0;pwned\\x07b"
    assert visible("one\ntwo\tthree") == "one\ntwo three"
    assert visible("\r\x00\x7f\x9b\x85") == "\\x0d\\x00\\x7f\\x9b\\x85"
    assert visible("é ü ░ █ \u2014 \ufffd") == "é ü ░ █ \u2014 \ufffd"  # printable text is left alone


async def test_escape_sequences_in_prompts_never_reach_the_terminal(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path, tiny_model)
    typing, out = Typing(), io.StringIO()
    async with console_running(config, typing, out) as (frontend, running, history):
        typing.write("/imagine a \x1b]0;pwned\x07 boat \x1b[2J --seed 2 --steps 2 --size 64x64\n")
        typing.write("/queue\n")
        await eventually(lambda: "#1 done:" in out.getvalue())
        for line in ("/history\n", "/imagine a cat --\x1b[31mx 3\n", "/imagine a cat --image \x1b[2J.png\n"):
            typing.write(line)
        typing.close()
        await asyncio.wait_for(running, 60)
        frontend.say("older \x1b[2J text\tfrom \x9b31m anywhere\r")  # every line goes through say()
    text = out.getvalue()
    assert not set(text) & {"\x1b", "\x07", "\x9b", "\r"}, text
    queue_line, history_line = (line for line in text.splitlines() if "pwned" in line)  # /queue, then /history
    assert queue_line.startswith(("1. #1 ", "running: #1 ")) and history_line.startswith("#1 done: a ")
    assert "error: unknown option --\\x1b[31mx" in text  # the parser's echo of what was typed
    assert "error: cannot read --image \\x1b[2J.png: No such file or directory" in text
    assert text.endswith("older \\x1b[2J text from \\x9b31m anywhere\\x0d\n")


async def test_failures_count_error_replies_and_failed_jobs_not_cancelled_ones(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path, tiny_model)
    Image.new("RGB", (64, 64), (0, 90, 200)).save(tmp_path / "blue.png")
    typing, out = Typing(), io.StringIO()
    async with console_running(config, typing, out) as (frontend, running, history):
        typing.write("/imagine slow --seed 1 --steps 500 --size 64x64\n")
        await eventually(lambda: "[#1]" in out.getvalue())  # generating now
        typing.write(f"/imagine sea --image {tmp_path / 'blue.png'} --seed 2 --steps 2\n")
        await eventually(lambda: "queued #2" in out.getvalue())
        for kept in (tmp_path / "inputs").iterdir():  # job 2 will find its input gone: it fails
            kept.unlink()
        typing.write("/imagine a cat --frobnicate 3\n")
        typing.write("/cancel #1\n")
        typing.close()
        await asyncio.wait_for(running, 60)
    lines = out.getvalue().splitlines()
    assert "#1 cancelled" in lines
    assert any(line.startswith("#2 failed: the input image of this job") for line in lines), lines
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert frontend.failures == 2  # the bad option and the failed job; the cancelled job is not one


class Screen(DummyOutput):
    """prompt_toolkit's test output, keeping the text it is given (the prompt, the toolbar, lines above)."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, data: str) -> None:
        self.written.append(data)

    def write_raw(self, data: str) -> None:
        self.written.append(data)

    def text(self) -> str:
        return "".join(self.written)


async def test_interactive_console_has_a_prompt_and_shows_progress_in_its_toolbar(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path, tiny_model)
    screen = Screen()
    toolbars: list[str] = []
    with create_pipe_input() as keys, create_app_session(input=keys, output=screen):
        async with await History.open(config.database) as history:
            images = ImageStore(tmp_path)
            async with JobQueue(history, images, build_engines(config), QueueLimits()) as jobs:
                frontend = ConsoleFrontend(Service(config, history, images, jobs), interactive=True)
                running = asyncio.create_task(frontend.run())
                await eventually(lambda: ">" in screen.text())  # the prompt is up
                assert frontend.toolbar() == "idle · /help lists commands · Ctrl-D quits"

                def look(event: JobEvent) -> None:  # what the toolbar says at each step
                    if event.kind is EventKind.PROGRESS:
                        toolbars.append(frontend.toolbar())

                jobs.subscribe(look)
                keys.send_text("/imagine a boat --seed 5 --steps 40 --size 64x64\r")
                await eventually(lambda: "#1 done:" in screen.text())
                keys.send_text("/queue\r")
                await eventually(lambda: "the queue is empty" in screen.text())
                keys.send_text("\x04")  # Ctrl-D: input ends, the console waits for its jobs (none) and ends
                await asyncio.wait_for(running, 60)
            [job] = await history.recent(frontend.owner, 5)
    assert job.status == "done" and Path(job.images[0].path).exists()
    text = screen.text()
    assert "easel console — /help lists commands, Ctrl-D quits" in text
    assert "/imagine a boat --seed 5" in text  # what was typed was drawn at the prompt
    assert "queued #1 (position 1)" in text and f"#1 done: {job.images[0].path}" in text
    assert any(re.fullmatch(r"#1 [█░]{10} ([1-9]|[1-3]\d)/40", toolbar) for toolbar in toolbars), toolbars
    assert "/40" in text  # the toolbar was drawn
    assert "[#1]" not in text  # no progress lines among the output while the prompt is up
    assert frontend.toolbar().startswith("idle") and frontend.failures == 0


class Terminal:
    """A pseudo-terminal a test types into, answering prompt_toolkit's cursor-position requests as a terminal does."""

    def __init__(self, rows: int = 24, columns: int = 100) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.seen = b""
        self._asked = 0

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, wanted: bytes, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while wanted not in self.seen:
            assert time.monotonic() < deadline, self.seen[-2000:]
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # EIO: the other side is closed
                    raise AssertionError(self.seen[-2000:]) from None
            while self.seen.count(b"\x1b[6n") > self._asked:
                self._asked += 1
                os.write(self.master, b"\x1b[20;1R")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def test_ctrl_c_at_the_prompt_stops_easel_as_ctrl_c_does_anywhere(workdir: Path) -> None:
    # At the prompt the terminal is in raw mode: Ctrl-C is the byte \x03, not SIGINT. It still stops
    # easel the one way: "stopping after the current step", the job back in the queue, exit status 130.
    terminal = Terminal()
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "console"], stdin=terminal.slave,
                               stdout=terminal.slave, stderr=subprocess.PIPE, cwd=workdir,
                               env={**_env(), "TERM": "xterm-256color"})
    try:
        terminal.wait_for("idle · /help lists commands".encode())  # the prompt's toolbar: the prompt is up
        terminal.type("/imagine slow --seed 1 --steps 500 --size 64x64\r")
        terminal.wait_for(b"/500")  # generating, its progress in the toolbar under the prompt
        terminal.type("\x03")
        terminal.wait_for(b"stopping after the current step")  # said on the terminal: stderr is patched there
        assert process.wait(timeout=60) == 130
        stderr = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
        terminal.close()
    assert "easel: stopped; unfinished jobs run again on the next start" in stderr and "Traceback" not in stderr
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        assert db.execute("SELECT status FROM jobs WHERE id=1").fetchone() == ("queued",)


async def test_a_job_waiting_for_disk_space_is_shown_as_waiting_not_failed(tmp_path: Path, tiny_model: Path) -> None:
    from tests.conftest import params

    config = tiny_config(tmp_path, tiny_model)
    out = io.StringIO()
    async with await History.open(config.database) as history:
        images = ImageStore(tmp_path)
        jobs = JobQueue(history, images, build_engines(config), QueueLimits())
        frontend = ConsoleFrontend(Service(config, history, images, jobs), stdin=io.StringIO(""), stdout=out)
        job = await history.add_job(frontend.owner, params())
        reason = f"job #{job.id} could not be saved (No space left on device); it waits in the queue"
        frontend._on_event(JobEvent(EventKind.STALLED, job, position=1, error=reason))
    assert out.getvalue() == f"#{job.id} waits: {reason}\n" and frontend.failures == 0


def test_sketch_prints_the_result_and_its_control_image_and_reruns_pixel_for_pixel(
    workdir: Path, tiny_controlnet: Path, console
) -> None:
    from PIL import ImageDraw

    config = workdir / "config.toml"
    config.write_text(config.read_text() + f'[sketch]\ncontrolnet = "{tiny_controlnet}"\n', encoding="utf-8")
    photo = Image.new("RGB", (300, 220), (236, 230, 214))  # off-white paper, a pencil house
    pen = ImageDraw.Draw(photo)
    pen.rectangle((90, 100, 210, 200), outline=(70, 70, 70), width=3)
    pen.line((90, 100, 150, 40, 210, 100), fill=(90, 90, 90), width=2)
    photo.save(workdir / "house.jpg", quality=80)
    result = console(workdir, "/sketch a small house --image house.jpg --seed 7 --steps 4\n/rerun 7\n")
    assert result.returncode == 0, result.stdout + result.stderr
    done = dict(DONE.findall(result.stdout))
    assert sorted(done) == ["1", "2"], result.stdout
    controls = re.findall(r"^    control image: (\S+)$", result.stdout, re.MULTILINE)
    assert len(controls) == 2 and controls[0] == controls[1]  # the rerun draws from the stored control image
    with Image.open(workdir / controls[0]) as control:
        lines = np.asarray(control.convert("L"))
    assert control.size == (576, 448) and set(np.unique(lines)) <= {0, 255} and 0.005 < (lines > 0).mean() < 0.2
    assert np.array_equal(pixels(workdir / done["1"]), pixels(workdir / done["2"]))
    assert "ControlNet 0: " in parameters(workdir / done["1"]) and "Seed: 7" in parameters(workdir / done["2"])


def test_face_prints_its_png_and_the_same_seed_redraws_it(workdir: Path, tmp_path: Path, console) -> None:
    from tests.generation.nvidia_pickle import write_nvidia_pickle
    from tests.generation.nvidia_pickle import TINY, tiny_generator

    checkpoint = write_nvidia_pickle(tmp_path / "tiny-ffhq.pkl", tiny_generator(), TINY)
    config = workdir / "config.toml"
    config.write_text(config.read_text() + f'[faces]\ncheckpoint = "{checkpoint}"\n', encoding="utf-8")
    result = console(workdir, "/face --seed 1234 --psi 0.7\n/face --seed 1234 --psi 0.7\n/face --seed 9 --psi 0\n"
                              "/face --seed 10 --psi 0\n")
    assert result.returncode == 0, result.stdout + result.stderr
    done = dict(DONE.findall(result.stdout))
    assert sorted(done) == ["1", "2", "3", "4"], result.stdout
    assert "seed 1234 · ψ 0.7" in result.stdout
    assert np.array_equal(pixels(workdir / done["1"]), pixels(workdir / done["2"]))
    assert np.array_equal(pixels(workdir / done["3"]), pixels(workdir / done["4"]))  # ψ 0: the average face
