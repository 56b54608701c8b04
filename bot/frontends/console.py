"""The terminal frontend: a prompt with the running job's progress below it, or plain lines from a pipe.

Piped input is read to its end; the console then waits for every job it knows of (recovered ones
included) to finish, and exits. `failures` counts the error replies and failed jobs it showed, for
the exit status of a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import getpass
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.patch_stdout import patch_stdout

from bot.frontends.pacing import BAR_CELLS, Pending, progress_bar
from bot.formatting import describe
from bot.replies import Attachment, Reply
from bot.service import Service
from generation.queue import EventKind, JobEvent
from storage.images import animation_video
from storage.uploads import BadImageError, read_image_file
from storage.records import Owner

log = logging.getLogger(__name__)

PLATFORM = "console"
PROMPT = "> "
DETAIL_EVERY = 30.0  # seconds between two log lines of a job that says where it is in words (a training)
_FILE_OPTION = r"(?:^|\s)(?:(?:--|\u2014|\u2013){0}[\s=]|{0}=)\s*(\"[^\"]+\"|'[^']+'|\S+)"
_IMAGE_OPTION = re.compile(_FILE_OPTION.format("image"))
_VIDEO_OPTION = re.compile(_FILE_OPTION.format("video"))
# Prompts, file names and error messages quoting them are people's text: an escape sequence in one must
# not reach the terminal (retitle the window, clear the screen, fake a line). C0 controls, DEL and C1
# controls are shown as \x1b-style escapes; a newline stays a newline and a tab becomes a space.
_VISIBLE = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
del _VISIBLE[ord("\n")]
_VISIBLE[ord("\t")] = " "


def visible(text: str) -> str:
    """Text with every control character but the newline made visible, safe to print to a terminal."""
    return text.translate(_VISIBLE)


def extract_image(line: str, pattern: re.Pattern = _IMAGE_OPTION) -> tuple[str, Path | None]:
    """Take `--image PATH` (or image=PATH; `--video PATH` with _VIDEO_OPTION) out of a line; the rest goes to
    the command parser."""
    match = pattern.search(line)
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


class ConsoleFrontend:
    """Reads command lines, prints replies and job events; one person, who is the admin.

    Interactive (stdin and stdout a terminal), it reads with prompt_toolkit in the current prompt_toolkit
    session (the terminal, or what a test set with create_app_session), prints above the prompt and shows
    progress in the bottom toolbar. Otherwise it reads stdin to its end and prints plain lines to stdout.
    """

    def __init__(self, service: Service, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.service = service
        # The streams of the moment, not of import time: a test or a wrapper may have replaced them.
        stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
        self.stdin, self.stdout = stdin, stdout
        self.interactive = stdin.isatty() and stdout.isatty() if interactive is None else interactive
        user = local_user()
        self.owner = Owner(platform=PLATFORM, user_id=user, chat_id=PLATFORM, name=user, private=True)
        self.failures = 0  # error replies and failed jobs shown; a script's exit status is 1 when any
        self._known: set[int] = set()
        self._settled = asyncio.Event()
        self._steps: dict[int, tuple[int, int]] = {}  # running jobs of ours: (steps done, steps in all)
        self._cells: dict[int, int] = {}
        # Jobs that say where they are in words (a training: epoch, losses, time left): that line, and when it
        # was last printed in a log.
        self._details: dict[int, str] = {}
        self._said_at: dict[int, float] = {}
        self._frames: dict[int, tuple[int, int]] = {}  # running animations of ours: (frame drawn now, frames)
        self._in_command = False
        self._reading = False  # the prompt is in use: progress goes to its toolbar, not out as lines
        self._deliveries = Pending()
        self._session: PromptSession[str] | None = None
        if self.interactive:
            self._session = PromptSession(bottom_toolbar=self.toolbar)
            # Events come from the queue's task, whose context may hold another prompt_toolkit session
            # (a test makes its own): print in the context the prompt runs in, so lines go above it.
            self._context = contextvars.copy_context()

    def say(self, text: str) -> None:
        """Print one reply or event line (or several, joined by newlines), control characters made visible."""
        text = visible(text)
        if self._session is None:
            self.stdout.write(text + "\n")
            self.stdout.flush()
        else:  # above the prompt while it is shown; straight to the terminal otherwise
            self._context.run(print_formatted_text, text, output=self._session.output)

    def toolbar(self) -> str:
        """The prompt's bottom line: our running job's progress and how many wait (`#3 ████████░░ 24/30  (2 waiting)`)."""
        parts = [f"#{job} {self._frame_text(job)}{progress_bar(step, total)} {step}/{total}{self._detail_text(job)}"
                 for job, (step, total) in self._steps.items()]
        waiting = len(self.service.waiting())
        if waiting:
            parts.append(f"({waiting} waiting)")
        return "  ".join(parts) or "idle · /help lists commands · Ctrl-D quits"

    async def run(self) -> None:
        unsubscribe = await self.service.subscribe(PLATFORM, self._on_event)
        try:
            if self.interactive:
                self.say("easel console — /help lists commands, Ctrl-D quits")
            for job in self.service.pending(PLATFORM):
                self._known.add(job.id)
                # Position 0 means running: the worker may have taken the first one already.
                position = self.service.position(job.id)
                again = f"queued again (position {position})" if position else "running again"
                self.say(f"#{job.id} was unfinished at the last shutdown; {again}")
            if self._session is not None:
                await self._prompt(self._session)
                if self._known:
                    self.say(f"waiting for {len(self._known)} job(s) to finish; Ctrl-C stops easel "
                             "(unfinished jobs run on the next start)")
            else:
                lines = self._read_lines()
                while (line := await lines.get()) is not None:
                    await self._command(line)
            self._check_settled()
            await self._settled.wait()
        finally:
            unsubscribe()
            await self._deliveries.finish()  # what was printed is recorded as seen, not shown again next start

    async def _prompt(self, session: PromptSession[str]) -> None:
        self._reading = True
        try:
            with patch_stdout(), _logging_to_patched_stderr():
                while True:
                    try:
                        # handle_sigint=False: prompt_toolkit would replace the SIGINT handler app.py set on
                        # the loop while it reads, and remove it altogether afterwards.
                        line = await session.prompt_async(PROMPT, handle_sigint=False)
                    except EOFError:  # Ctrl-D
                        return
                    except KeyboardInterrupt:
                        await _interrupt()
                        raise
                    await self._command(line)
        finally:
            self._reading = False
            # Progress from here on (after Ctrl-D, jobs still running) goes out as lines: there is no toolbar.

    def _read_lines(self) -> asyncio.Queue[str | None]:
        # A daemon thread, not the loop's executor: a blocked readline must never hold up exit.
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def reader() -> None:
            try:
                for line in _decoded_lines(self.stdin):
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            except Exception as exc:  # e.g. EIO from a terminal that went away: end the input, do not hang
                log.exception("could not read the console's input")
                loop.call_soon_threadsafe(self._error, f"cannot read the input: {exc}")
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=reader, name="easel-stdin", daemon=True).start()
        return lines

    async def _command(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        text, image_path = extract_image(line)
        text, video_path = extract_image(text, _VIDEO_OPTION)
        attachments = []
        limits = self.service.limits
        for path, option, limit in ((image_path, "--image", limits.max_upload_bytes),
                                    (video_path, "--video", limits.max_clip_bytes)):
            if path is None:
                continue
            try:
                # Off the event loop: a slow disk or a network mount must not stall the running job's progress.
                data = await asyncio.to_thread(read_image_file, path, limit, option)
            except BadImageError as exc:  # a FIFO, a device, too big, unreadable: refused before reading it
                self._error(str(exc))
                return
            attachments.append(Attachment(path.name, data))
        self._in_command = True
        try:
            reply = await self.service.handle(self.owner, text, attachments)
        finally:
            self._in_command = False
        self._show(reply)

    def _error(self, text: str) -> None:
        self.failures += 1
        self.say(f"error: {text}")

    def _show(self, reply: Reply) -> None:
        if reply.job is not None:
            self._known.add(reply.job.id)
        if reply.error:
            self._error(reply.text)
        else:
            self.say(reply.text)

    def _on_event(self, event: JobEvent) -> None:
        job = event.job
        # Whoever sits at the terminal sees every console job that ended unseen, whichever login asked.
        if job.owner.key != self.owner.key and job.id not in self._known and not event.replayed:
            return
        if event.kind is EventKind.STARTED:
            self.say(f"#{job.id} started")
            self._steps[job.id] = (0, job.params.effective_steps)
            self._redraw()
        elif event.kind is EventKind.PROGRESS:
            if event.frames and self._frames.get(job.id) != (event.frame, event.frames):
                self._frames[job.id] = (event.frame, event.frames)
                self._cells.pop(job.id, None)  # each frame's steps get their own bar
            if event.detail:
                self._details[job.id] = event.detail
            self._progress(job.id, event.step, event.total)
        elif event.kind is EventKind.STALLED:  # e.g. a full disk: it waits, it has not failed
            self._steps.pop(job.id, None)
            self._cells.pop(job.id, None)
            self.say(f"#{job.id} waits: {event.error}")
            self._redraw()
        elif event.finished:
            self._finished(event)

    def _progress(self, job_id: int, step: int, total: int) -> None:
        self._steps[job_id] = (step, total)
        if self._reading:
            self._redraw()
            return
        cells = BAR_CELLS * step // max(total, 1)
        if job_id in self._frames:  # an animation: a line a frame in a log, not ten
            cells = 0
        # At most ten lines a job in a log; one that says where it is in words (hours of training) gets one
        # every DETAIL_EVERY seconds too.
        now = time.monotonic()
        due = job_id in self._details and now - self._said_at.get(job_id, 0.0) >= DETAIL_EVERY
        if cells != self._cells.get(job_id) or due:
            self._cells[job_id], self._said_at[job_id] = cells, now
            self.say(f"[#{job_id}] {self._frame_text(job_id)}{progress_bar(step, total)} {step}/{total}"
                     f"{self._detail_text(job_id)}")

    def _detail_text(self, job_id: int) -> str:
        detail = self._details.get(job_id)
        return f" · {detail}" if detail else ""

    def _frame_text(self, job_id: int) -> str:
        frame = self._frames.get(job_id)
        return f"frame {frame[0]}/{frame[1]} · " if frame else ""

    def _redraw(self) -> None:
        if self._session is not None:
            self._session.app.invalidate()  # a no-op while no prompt is shown

    def _finished(self, event: JobEvent) -> None:
        job = event.job
        self._steps.pop(job.id, None)
        self._cells.pop(job.id, None)
        self._frames.pop(job.id, None)
        self._details.pop(job.id, None)
        self._said_at.pop(job.id, None)
        video = animation_video(job) if job.images else None
        if video is not None:  # an animation, done or cancelled with the frames it has
            ended = "done" if event.kind is EventKind.DONE else \
                f"cancelled after {len(job.images)} of {job.params.slices} frames"
            self.say(f"#{job.id} {ended}: {video}  {describe(job.params, job.images[0].seed)}")
            self.say(f"    frames: {Path(job.images[0].path).parent}{os.sep} ({len(job.images)} PNG)")
        elif event.kind is EventKind.DONE:
            first, *more = job.images
            self.say(f"#{job.id} done: {first.path}  {describe(job.params, first.seed)}")
            for image in more:
                self.say(f"    {image.path}  seed {image.seed}")
            for label, path in self.service.shown_inputs(job):  # what the model saw, beside what it drew
                self.say(f"    {label}: {path}")
        elif event.kind is EventKind.FAILED:
            self.failures += 1
            self.say(f"#{job.id} failed: {event.error}")
        elif job.started_at is not None or not self._in_command:
            # (A waiting job cancelled while our own /cancel runs: its reply says so, one line, not two.)
            self.say(f"#{job.id} cancelled")
        self._redraw()
        self._deliveries.start(self.service.delivered(job))
        self._known.discard(job.id)
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._known:
            self._settled.set()
        else:
            self._settled.clear()


def _decoded_lines(stdin: TextIO) -> Iterator[str]:
    """The lines of stdin; bytes that are not valid text become U+FFFD instead of ending the input."""
    raw = getattr(stdin, "buffer", None)
    if raw is None:  # a text-only stream (a test's StringIO): nothing to decode
        yield from stdin
        return
    encoding = getattr(stdin, "encoding", None) or "utf-8"
    for line in raw:
        yield line.decode(encoding, errors="replace")


async def _interrupt() -> None:
    """Ctrl-C at the prompt: stop easel exactly as a Ctrl-C anywhere else does."""
    # While the prompt reads keys the terminal is in raw mode, so Ctrl-C arrives as a key (prompt_toolkit
    # raises KeyboardInterrupt) instead of SIGINT. Send the signal it would have been: the handler app.py
    # put on the loop cancels the serving task, says easel stops after the current step, and a second
    # Ctrl-C quits at once. The cancellation lands on one of the sleeps below. Where nothing would take
    # the signal (ignored, or no handler), the caller re-raises the KeyboardInterrupt instead.
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        return
    signal.raise_signal(signal.SIGINT)  # Python's default handler raises KeyboardInterrupt right here
    for _ in range(100):  # a loop's handler runs a turn or two later
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def _logging_to_patched_stderr() -> Iterator[None]:
    """Log handlers writing to the terminal's stderr write through patch_stdout's proxy, above the prompt."""
    # configure_logging's StreamHandler kept the real stderr when it was made; a warning written there
    # while the prompt is drawn would land in the middle of the typed line.
    moved = []
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.stream is sys.__stderr__:
            moved.append((handler, handler.setStream(sys.stderr)))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
