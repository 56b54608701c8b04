"""How jobs read in messages: titles, the settings line, /history and /queue lines, chat-safe failure texts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

from generation.models import DEFAULT_NAME
from storage.params import JobParams
from storage.records import ImageRecord, JobRecord, Owner

if TYPE_CHECKING:
    from generation.queue import JobEvent


def title(params: JobParams) -> str:
    """What a job is of, in a few words: its prompt, or what kind of picture it makes."""
    return params.title()


def describe(params: JobParams, seed: int | None = None) -> str:
    """The short settings line people see: seed 42 · 30 steps · cfg 7 · 512x512 (· model xl, once models have
    names of their own)."""
    model = getattr(params, "model", "")
    drawn = model and model != DEFAULT_NAME and getattr(params, "denoise", None) != 0  # a Lanczos upscale: no model
    return " · ".join([f"seed {params.seed if seed is None else seed}", *params.summary(),
                       *([f"model {model}"] if drawn else [])])


def is_rerun(job: JobRecord) -> bool:
    """Whether the job redraws its parent (a rerun), rather than starting from its picture (an action)."""
    return job.parent_id is not None and job.parent_id != job.params.drawn_from


def job_line(job: JobRecord, owner: Owner, parent: bool = True) -> list[str]:
    """A job as /history lists it: its line, then every image's file and own seed ("/rerun SEED" of one
    image inside a batch needs it)."""
    prompt = title(job.params) if len(title(job.params)) <= 60 else title(job.params)[:59] + "…"
    rerun = f" · rerun of #{job.parent_id}" if is_rerun(job) and parent else ""
    lines = [f"#{job.id} {job.status}: {prompt} — {describe(job.params)}{rerun}"]
    return lines + [f"    {file_name(image, owner)}  seed {image.seed}" for image in job.images]


def file_name(image: ImageRecord, owner: Owner) -> str:
    """Where an image is, for a message: the path at the terminal, only the file name in a chat (a
    server's folders are nobody else's business)."""
    return shown_path(image.path, owner)


def shown_path(path: str, owner: Owner) -> str:
    """A server path as `owner` may see it: whole at the terminal, its last part in a chat."""
    return path if owner.platform == "console" else Path(path).name


def shown_text(text: str, owner: Owner) -> str:
    """A failure text as `owner` may see it: at the terminal as recorded, in a chat without server paths."""
    return text if owner.platform == "console" else without_paths(text)


# An absolute path (POSIX or Windows) that is not part of a URL: "/srv/easel/models/x", "C:\\models\\x".
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/|[A-Za-z]:\\)(?:[^\s'\"/\\<>|]+[/\\])+([^\s'\"/\\<>|:,;)]*)")


def without_paths(text: str) -> str:
    """A message for a chat: every absolute server path shortened to its last part (an error naming a
    model folder, say), so the server's layout stays its owner's business."""
    return _ABSOLUTE_PATH.sub(lambda match: match[1] or "…", text)


def for_chat(event: JobEvent) -> JobEvent:
    """The event as a chat may show it: failure texts without server paths."""
    if not (event.error or event.job.error):
        return event
    job = dataclasses.replace(event.job, error=event.job.error and without_paths(event.job.error))
    return dataclasses.replace(event, job=job, error=event.error and without_paths(event.error))


def who(job: JobRecord) -> str:
    return job.owner.name or job.owner.user_id


def queue_lines(running: list[tuple[JobRecord, tuple[int, int], str | None]], waiting: list[JobRecord],
                owner: Owner, sees_all: bool) -> str:
    """Running and waiting jobs in order; another person's prompt and name only when `sees_all`.
    Everyone else sees "someone's" job with its place and kind."""
    if not running and not waiting:
        return "the queue is empty"

    def job_text(job: JobRecord, steps: str = "") -> str:
        if job.owner.key == owner.key or sees_all:
            return f"#{job.id} ({who(job)}) {steps}{title(job.params)[:50]}"
        return f"someone's {job.params.kind} job {steps}".rstrip()

    lines = [f"running: {job_text(job, f'{done}/{total} ')}" + (f" · {where}" if where else "")
             for job, (done, total), where in running]
    # A job drawn with another model than the one before it waits for that model to be moved in (or loaded).
    model = _model(running[-1][0]) if running else ""
    started = {job.id for job, _, _ in running}
    for n, job in enumerate(waiting, 1):
        if job.id in started:  # an animation between two frames: its next frame takes a turn in the line
            mine = job.owner.key == owner.key or sees_all
            lines.append(f"{n}. next frame of " + (f"#{job.id}" if mine else "someone's animation"))
            continue
        switch = _model(job) and model and _model(job) != model
        lines.append(f"{n}. {job_text(job)}" + (f" · switches to model {_model(job)}" if switch else ""))
        model = _model(job) or model
    return "\n".join(lines)


def _model(job: JobRecord) -> str:
    return getattr(job.params, "model", "")
