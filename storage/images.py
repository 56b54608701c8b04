"""The image files under the data folder: result PNGs (with their infotext) and kept inputs, written atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import os
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, PngImagePlugin

from storage.errors import EaselError


def png_bytes(image: Image.Image, compress_level: int = 6, info: PngImagePlugin.PngInfo | None = None) -> bytes:
    """An image as PNG bytes (6 is Pillow's own default level; 1 is for bytes that are only passing through)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level, pnginfo=info)
    return buffer.getvalue()


class ImageStore:
    """Owns the files under data_dir: images/<day>/<job>-<k>.png and inputs/<sha256>.png."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.outputs = self.root / "images"
        self.inputs = self.root / "inputs"

    def add_input(self, image: Image.Image) -> tuple[str, bool]:
        """Keep an uploaded image (as PNG) so its job survives restarts and reruns.

        Returns its sha256 and whether this call wrote the file (False: the same image was already kept).
        """
        data = png_bytes(image)
        digest = hashlib.sha256(data).hexdigest()
        path = self.input_path(digest)
        if path.exists():
            return digest, False
        self.inputs.mkdir(parents=True, exist_ok=True)
        try:
            _publish(data, [path])
        except FileExistsError:
            return digest, False  # named by its hash: the file there is this same image, saved meanwhile
        return digest, True

    def discard_input(self, sha256: str) -> None:
        """Remove an input no job refers to (one whose job was refused after it was saved)."""
        self.input_path(sha256).unlink(missing_ok=True)

    def input_path(self, sha256: str) -> Path:
        return self.inputs / f"{sha256}.png"

    def load_input(self, sha256: str) -> Image.Image:
        path = self.input_path(sha256)
        if not path.exists():
            raise EaselError(f"the input image of this job ({sha256[:12]}) is no longer on disk")
        with Image.open(path) as image:
            return image.convert("RGB")

    def save_output(self, job_id: int, index: int, image: Image.Image, text: str, folder: Path | None = None) -> Path:
        """Write one result PNG with its infotext, never over an existing file; returns the path written. In the
        day's folder, or in `folder` (a job's own, from job_folder)."""
        if folder is None:
            folder = self._day()
            folder.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        data = png_bytes(image, info=info)
        # Job numbers start again at 1 when the database is lost; the pictures already made must survive.
        names = itertools.chain(
            [folder / f"{job_id}-{index}.png"],
            (folder / f"{job_id}-{index}-{n}.png" for n in range(2, _MAX_TWINS + 2)),
        )
        return _publish(data, names)

    def job_folder(self, job_id: int) -> Path:
        """A new folder of the job's own in the day's folder (an animation's frames and video): <job>, or
        <job>-2, … where a job of the same number (a lost database) made one before."""
        day = self._day()
        day.mkdir(parents=True, exist_ok=True)
        for name in itertools.chain([str(job_id)], (f"{job_id}-{n}" for n in range(2, _MAX_TWINS + 2))):
            try:
                (day / name).mkdir()
            except FileExistsError:
                continue
            return day / name
        raise FileExistsError(errno.EEXIST, "every name is taken", str(day / str(job_id)))

    def save_file(self, folder: Path, name: str, data: bytes) -> Path:
        """Write a file of a job's (its video) into its folder, never over an existing one."""
        return _publish(data, [folder / name])

    def _day(self) -> Path:
        return self.outputs / datetime.now(timezone.utc).strftime("%Y-%m-%d")


def animation_video(job) -> Path | None:
    """The MP4 of a job drawn as frames in a folder of its own (an animation), where it is on disk."""
    if job.params.slices <= 1 or not job.images:
        return None
    path = Path(job.images[0].path).parent / f"{job.id}.mp4"
    return path if path.exists() else None


# How many files one job and index may share a day folder with before we give up looking for a free name.
_MAX_TWINS = 100_000
# os.link errors that mean "this filesystem has no hard links" (FAT, some network and FUSE mounts).
_NO_HARD_LINKS = {
    errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EMLINK,
}


def _publish(data: bytes, names: Iterable[Path]) -> Path:
    """Write data under the first free one of names (all in one folder), never replacing a file.

    Raises FileExistsError when every name is taken.
    """
    # A crash mid-write must never leave a half PNG where history says a whole one is: the bytes go to a
    # temporary file first, reach the disk, and only then get their name. os.link creates that name only if
    # it is free (os.replace would silently take it over). The temporary name is unique to this write: two
    # jobs saving the same input at once must not share one. (Not mkstemp: its files are private (0600),
    # and these are ordinary files the user may want to share.)
    names = iter(names)
    first = next(names)
    folder = first.parent
    tmp = folder / f".{secrets.token_hex(8)}.tmp"
    try:
        with open(tmp, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        for path in itertools.chain([first], names):
            try:
                _link_or_create(tmp, path, data)
            except FileExistsError:
                continue
            _sync_folder(folder)  # the new name itself must survive a power cut
            return path
        raise FileExistsError(errno.EEXIST, "every name is taken", str(first))
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _link_or_create(tmp: Path, path: Path, data: bytes) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _create_new(path, data)


def _create_new(path: Path, data: bytes) -> None:
    """Write data to a new file at path; FileExistsError if the name is taken (a fallback: not atomic)."""
    file = open(path, "xb")  # noqa: SIM115 - closed below; on failure the half file is removed after closing
    try:
        with file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _sync_folder(folder: Path) -> None:
    # Where a folder cannot be opened or synced (Windows, some network mounts) the OS offers nothing better.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
