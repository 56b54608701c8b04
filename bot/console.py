"""The terminal frontend: interactive with progress bars, or scripted from a pipe.

Piped input is read to its end; the console then waits for every job it knows of (recovered ones
included) to finish, and exits.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
import threading
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.service import Attachment, Reply, Service, describe
from generation.queue import EventKind, JobEvent
from storage.records import Owner

PLATFORM = "console"
_IMAGE_OPTION = re.compile(r"(?:^|\s)(?:(?:--|\u2014|\u2013)image[\s=]|image=)\s*(\"[^\"]+\"|'[^']+'|\S+)")
_BAR_CELLS = 10


def extract_image(line: str) -> tuple[str, Path | None]:
    """Take `--image PATH` (or image=PATH) out of a line; the rest goes to the command parser."""
    match = _IMAGE_OPTION.search(line)
    if match is None:
        return line, None
    path = Path(match[1].strip("\"'")).expanduser()
    return (line[: match.start()] + " " + line[match.end():]).strip(), path


def local_user() -> str:
    """Who sits at the terminal; "local" where the system cannot say (a container without a passwd entry)."""
    try:
        return getpass.getuser() or "local"
    except (KeyError, OSError, ImportError):  # KeyError before Python 3.13, OSError since
        return "local"


def progress_bar(done: int, total: int) -> str:
    filled = _BAR_CELLS * done // max(total, 1)
    return "█" * filled + "░" * (_BAR_CELLS - filled)


class ConsoleFrontend:
    """Reads command lines, prints replies and job events; one person, who is the admin."""

    def __init__(self, service: Service, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.service = service
        # The streams of the moment, not of import time: a test or a wrapper may have replaced them.
        stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
        self.stdin = stdin
        self.interactive = stdin.isatty() and stdout.isatty() if interactive is None else interactive
        self.out = Console(file=stdout, highlight=False, soft_wrap=True, force_terminal=self.interactive or None)
        user = local_user()
        self.owner = Owner(platform=PLATFORM, user_id=user, chat_id=PLATFORM, name=user)
        self._known: set[int] = set()
        self._settled = asyncio.Event()
        self._bars: Progress | None = None
        self._tasks: dict[int, int] = {}
        self._cells: dict[int, int] = {}
        self._in_command = False
        self._deliveries: set[asyncio.Task] = set()

    def say(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False)

    async def run(self) -> None:
        unsubscribe = await self.service.subscribe(PLATFORM, self._on_event)
        if self.interactive:
            self._bars = Progress(
                TextColumn("[#{task.fields[job]}]", markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=self.out, transient=True,
            )
            self._bars.start()
            self.say("easel console — /help lists commands, Ctrl-D quits")
        try:
            for job in self.service.pending(PLATFORM):
                self._known.add(job.id)
                self.say(f"#{job.id} was unfinished at the last shutdown; queued again (position "
                         f"{self.service.queue.position(job.id)})")
            lines = self._read_lines()
            while (line := await lines.get()) is not None:
                await self._command(line)
            self._check_settled()
            await self._settled.wait()
        finally:
            unsubscribe()
            if self._deliveries:  # what was printed is recorded as seen, so the next start does not repeat it
                await asyncio.gather(*self._deliveries, return_exceptions=True)
            if self._bars is not None:
                self._bars.stop()

    def _read_lines(self) -> asyncio.Queue[str | None]:
        # A daemon thread, not the loop's executor: a blocked readline must never hold up exit.
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def reader() -> None:
            for raw in self.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, raw)
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=reader, name="easel-stdin", daemon=True).start()
        return lines

    async def _command(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        text, image_path = extract_image(line)
        attachments = []
        if image_path is not None:
            try:
                attachments.append(Attachment(image_path.name, image_path.read_bytes()))
            except OSError as exc:
                self.say(f"error: cannot read --image {image_path}: {exc.strerror or exc}")
                return
        self._in_command = True
        try:
            reply = await self.service.handle(self.owner, text, attachments)
        finally:
            self._in_command = False
        self._show(reply)

    def _show(self, reply: Reply) -> None:
        if reply.job is not None:
            self._known.add(reply.job.id)
        self.say(f"error: {reply.text}" if reply.error else reply.text)

    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        # Whoever sits at the terminal sees every console job that ended unseen, whichever login asked.
        if job.owner.key != self.owner.key and job.id not in self._known and not event.replayed:
            return
        if event.kind is EventKind.STARTED:
            self.say(f"#{job.id} started")
            if self._bars is not None:
                self._tasks[job.id] = self._bars.add_task("", total=job.params.effective_steps, job=job.id)
        elif event.kind is EventKind.PROGRESS:
            self._progress(job.id, event.step, event.total)
        elif event.finished:
            self._finished(event)

    def _progress(self, job_id: int, step: int, total: int) -> None:
        if self._bars is not None and job_id in self._tasks:
            self._bars.update(self._tasks[job_id], completed=step, total=total)
            return
        cells = _BAR_CELLS * step // max(total, 1)
        if cells != self._cells.get(job_id):  # at most ten lines a job in a log
            self._cells[job_id] = cells
            self.say(f"[#{job_id}] {progress_bar(step, total)} {step}/{total}")

    def _finished(self, event: JobEvent) -> None:
        job = event.job
        if self._bars is not None and job.id in self._tasks:
            self._bars.remove_task(self._tasks.pop(job.id))
        self._cells.pop(job.id, None)
        if event.kind is EventKind.DONE:
            first, *more = job.images
            self.say(f"#{job.id} done: {first.path}  {describe(job.params, first.seed)}")
            for image in more:
                self.say(f"    {image.path}  seed {image.seed}")
        elif event.kind is EventKind.FAILED:
            self.say(f"#{job.id} failed: {event.error}")
        elif job.started_at is not None or not self._in_command:
            # (A waiting job cancelled while our own /cancel runs: its reply says so, one line, not two.)
            self.say(f"#{job.id} cancelled")
        task = asyncio.ensure_future(self.service.delivered(job))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        self._known.discard(job.id)
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._known:
            self._settled.set()
        else:
            self._settled.clear()
