"""Images and clips to and from chat platforms: uploads checked and read under a hard cap, results (pictures,
an animation's video) fitted to their limits."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterable

import av
from PIL import Image

from generation.video import encode_mp4, fit_video, size_label
from storage.images import animation_video
from storage.records import JobRecord, JobStatus


def fitted(path: Path, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of a result within `limit` bytes: the PNG itself where it fits, else a JPEG of it,
    scaled down if need be. The PNG on disk, with its parameters, is never changed."""
    data = path.read_bytes()
    if len(data) <= limit:
        return path.name, data
    with Image.open(path) as picture:
        picture = picture.convert("RGB")
        for scale in (1.0, 0.75, 0.5, 0.35, 0.25, 0.1):
            size = (max(1, int(picture.width * scale)), max(1, int(picture.height * scale)))
            buffer = io.BytesIO()
            picture.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=90)
            if buffer.tell() <= limit:
                break
    return path.with_suffix(".jpg").name, buffer.getvalue()


async def read_capped(chunks: AsyncIterable[bytes], declared: int | None, limit: int) -> bytes | None:
    """A download's bytes, or None as soon as it is known to pass `limit`: by the length it declared, before
    anything is read, else while it is read, whatever it declared. Past the limit nothing more is read."""
    if (declared or 0) > limit:
        return None
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def is_clip(mime: str | None) -> bool:
    """Whether an upload is a clip (a video, or a GIF, which may move): checked against [limits] max_clip_bytes,
    and left to the command to take or refuse."""
    return (mime or "").startswith("video/") or mime == "image/gif"


def is_archive(name: str, mime: str | None) -> bool:
    """Whether an upload is a zip (of photos, for /train): checked against [limits] max_zip_bytes, and left to the
    command to take or refuse."""
    return mime in ("application/zip", "application/x-zip-compressed") or name.lower().endswith(".zip")


def upload_problem(name: str, mime: str | None, size: int, limit: int, *, unknown: str, instead: str,
                   clip_limit: int | None = None, zip_limit: int | None = None) -> str | None:
    """Why an upload is refused before anything of it is downloaded (its type, the size it declares), or None.
    `unknown` names a missing type; `instead` says what to send. With `clip_limit`, a clip (is_clip) passes
    too, within that size; with `zip_limit`, a zip (is_archive)."""
    if zip_limit is not None and is_archive(name, mime) and not is_clip(mime):
        if size > zip_limit:
            return f"{name} is {size / 1e6:.1f} MB; the limit for a zip of photos is {zip_limit / 1e6:.1f} MB"
        return None
    if clip_limit is not None and is_clip(mime):
        if size > clip_limit:
            return f"{name} is {size / 1e6:.1f} MB; the limit for clips is {clip_limit / 1e6:.1f} MB"
        return None
    if not (mime or "").startswith("image/"):
        return f"{name} is not an image ({mime or unknown}); {instead}"
    if size > limit:
        return f"{name} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB"
    return None


def over_limit(name: str, limit: int, clip: bool = False, archive: bool = False) -> str:
    """What to say of a download cut off at the limit, whatever size it had declared."""
    if archive:
        return f"{name} is over the {limit / 1e6:.1f} MB limit for a zip of photos; send fewer or smaller photos"
    if clip:
        return f"{name} is over the {limit / 1e6:.1f} MB limit for clips; send a shorter or smaller clip"
    return f"{name} is over the {limit / 1e6:.1f} MB limit; send a smaller image"


# ---- an animation's video -------------------------------------------------------------------------
def is_animation(job: JobRecord) -> bool:
    """Whether a job's result is an animation: its frames go out as one video, a cancelled one's too."""
    return job.params.slices > 1 and bool(job.images)


def animation_state(job: JobRecord) -> str:
    """How far an animation got, where it was stopped: "cancelled after 7 of 48 frames"; "" when it is done."""
    if job.status is JobStatus.DONE:
        return ""
    return f"{job.status} after {len(job.images)} of {job.params.frames} frames"


@dataclass(frozen=True)
class Video:
    """An animation as a chat gets it: the file within the platform's limit (note: how it was made to fit, None
    for the MP4 as drawn), and what a player wants to know of it."""

    name: str
    data: bytes
    format: str  # "mp4", or "gif" / "webp" where no MP4 fitted
    note: str | None
    width: int
    height: int
    seconds: float


def fitted_video(job: JobRecord, limit: int) -> Video | None:
    """An animation's video within `limit` bytes: its MP4 as drawn where it fits, else what video.fit_video makes
    of it (re-encoded smaller, or a WebP or GIF); None when nothing fits. CPU work: run it in a thread."""
    mp4 = animation_video(job)
    data = mp4.read_bytes() if mp4 is not None else None
    if data is None or len(data) > limit:  # only now are the frames read: most animations go as drawn
        frames = []
        for image in job.images:
            with Image.open(image.path) as frame:
                frames.append(frame.convert("RGB"))
        if data is None:  # its MP4 is gone (a cancel cut it short, say): made again from the frames
            data = encode_mp4(frames, job.params.fps)
        fitted = fit_video(data, frames, job.params.fps, limit, name=str(job.id))
        if fitted is None:
            return None
        name, data, kind, note = fitted.name, fitted.data, fitted.format, fitted.note
    else:
        name, kind, note = mp4.name, "mp4", None
    width, height = _dimensions(data, job)
    return Video(name, data, kind, note, width, height, seconds=len(job.images) / job.params.fps)


def _dimensions(data: bytes, job: JobRecord) -> tuple[int, int]:
    """The size a video file plays at (a fitted one may be smaller than the frames); the frames' where it
    cannot be read."""
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, IndexError):
        return job.params.width, job.params.height


def too_large(job: JobRecord, limit: int, root: Path) -> str:
    """What to say where no form of an animation's video fits the platform's limit: where it is on disk
    (relative to easel's data folder: the server's own folders are nobody else's business)."""
    folder = Path(job.images[0].path).parent
    try:
        where = f"{folder.relative_to(root).as_posix()}/ in easel's data folder"
    except ValueError:
        where = f"the folder {folder.name}/"
    return (f"the video of job #{job.id} is too large to send here (the limit is {size_label(limit)}); "
            f"its frames and video are in {where}")
