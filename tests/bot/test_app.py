"""Stopping easel as a service is stopped: SIGTERM and Ctrl-C, once or twice, at any moment, never
count as a crash, never fail a job and never print a traceback. These need a real process."""

from __future__ import annotations

import io
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.cli import main

LONG_JOB = "/imagine a slow one --seed 1 --steps 400 --size 64x64\n"


class Live:
    """A running `easel console` whose output lines are read on a thread, so a test never blocks on them."""

    def __init__(self, workdir: Path, script: str | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "console"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=workdir, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.errors), daemon=True).start()
        if script is not None:
            self.process.stdin.write(script)
            self.process.stdin.flush()

    @staticmethod
    def _read(stream, lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line)

    def wait_for(self, prefix: str, seconds: float = 120, stream: str = "stdout") -> str:
        lines = self.lines if stream == "stdout" else self.errors
        while True:
            line = lines.get(timeout=seconds)  # raises queue.Empty: the line never came
            if stream == "stderr":
                self.stderr.append(line)
            if line.startswith(prefix):
                return line

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, *signals: int, seconds: float = 120) -> tuple[int, str]:
        for signum in signals:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=seconds)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        rest = []
        while not self.errors.empty():
            rest.append(self.errors.get())
        return code, "".join(self.stderr + rest)


@pytest.fixture
def workdir(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n', encoding="utf-8")
    return tmp_path


def job_row(workdir: Path) -> tuple[str, int]:
    with sqlite3.connect(workdir / "data" / "easel.db") as db:
        return db.execute("SELECT status, crashes FROM jobs WHERE id=1").fetchone()


def test_three_sigterms_never_fail_a_job(workdir: Path) -> None:
    easel = Live(workdir, LONG_JOB)
    for attempt in range(3):
        easel.wait_for("[#1]")  # generating
        code, err = easel.stop(signal.SIGTERM)
        assert code == 0, err  # how a service manager stops a service: a clean exit
        assert "stopping after the current step" in err and "Traceback" not in err
        assert job_row(workdir) == ("queued", 0)  # back in the queue, no crash counted
        easel = Live(workdir)  # the next start picks it up again
    easel.process.stdin.close()
    assert easel.wait_for("#1 done:")
    code, err = easel.stop()
    assert code == 0, err
    assert job_row(workdir) == ("done", 0)


def test_a_second_ctrl_c_quits_at_once_and_the_job_is_not_a_crash(workdir: Path) -> None:
    # One step, then seconds of decoding a big image: the torch thread cannot stop in there, so only
    # quitting at once gets out, and the job must go back to the queue all the same.
    easel = Live(workdir, "/imagine a big one --seed 1 --steps 1 --size 1536x1536\n")
    easel.wait_for("#1 started")
    easel.signal(signal.SIGINT)
    # A person presses Ctrl-C again after reading this; two signals sent at once would merge into one.
    easel.wait_for("easel: stopping after the current step", stream="stderr")
    code, err = easel.stop(signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "easel: stopped; unfinished jobs run again on the next start"
    assert job_row(workdir) == ("queued", 0)


def mapped(pid: int, library: str) -> bool:
    """Whether the process has loaded a shared library whose file name contains `library` (Linux)."""
    with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
        return library in maps.read()


def test_ctrl_c_during_start_up_is_one_line(workdir: Path) -> None:
    easel = Live(workdir)
    # Start-up: easel's imports (pydantic's compiled core among the first), then config and storage, then
    # the event loop takes over signals. Signal as soon as that core is loaded: inside start-up on any
    # machine, however fast. (Sooner, Python may not be up yet; later, it is the clean stop above.)
    deadline = time.monotonic() + 60
    while not mapped(easel.process.pid, "_pydantic_core"):
        assert easel.process.poll() is None and time.monotonic() < deadline, "easel never began its imports"
        time.sleep(0.002)
    code, err = easel.stop(signal.SIGINT)
    assert code == 130, err
    assert err.strip() == "easel: stopped; unfinished jobs run again on the next start"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "data").write_text("a file where the folder should be"),
         "easel: cannot use the data folder data: File exists; set [storage] data_dir to a folder easel can write"),
        (lambda d: ((d / "data").mkdir(), (d / "data" / "easel.db").write_bytes(b"garbage" * 500)),
         "easel: data/easel.db is damaged or not an easel database (file is not a database); move it aside"),
        (lambda d: ((d / "data").mkdir(), (d / "data" / "easel.db").mkdir()),
         "easel: data/easel.db is not a file; move it aside"),
    ],
)
def test_an_unusable_data_folder_or_database_is_one_line_and_a_non_zero_exit(
    workdir: Path, setup, message, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    setup(workdir)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "stdin", io.StringIO("/imagine a cat\n"))
    assert main(["console"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1, err


def test_make_tiny_model_onto_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("")
    assert main(["make-tiny-model", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == f"easel: cannot write a model to {tmp_path / 'taken'}: Not a directory\n"
