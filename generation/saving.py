"""Saving a drawn job: all of its PNGs or none, and telling a full disk from a broken job."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3

from generation.engine import EngineResult
from storage.images import ImageStore
from storage.infotext import infotext
from storage.records import ImageRecord, JobRecord

STORAGE_RETRY_SECONDS = 30.0  # how long a job whose end could not be recorded waits for room before trying again


def storage_trouble(exc: BaseException) -> bool:
    """Whether a job could not be recorded for reasons of the disk or database, not of the job itself."""
    return isinstance(exc, (OSError, sqlite3.Error))


def save_images(images: ImageStore, job: JobRecord, result: EngineResult) -> list[ImageRecord]:
    """Write a job's images with their infotext; on any failure none of them is left behind.

    A job drawn in several turns (an animation) gets a folder of its own: its frames, in the order they play,
    each with the infotext of the drawing that made it, and the video of them."""
    params, count = job.params, len(result.images)
    folder = images.job_folder(job.id) if params.slices > 1 else None
    order = params.order(count)
    records = []
    try:
        for index, drawn in enumerate(order):
            image, seed = result.images[drawn], result.seeds[drawn]
            text = infotext(params.for_image(index, count), seed, result.run, params.image_fields(index, count))
            path = images.save_output(job.id, index, image, text, folder)
            records.append(ImageRecord(job_id=job.id, index=index, seed=seed, path=str(path)))
        if folder is not None and records:
            from generation.video import encode_mp4

            frames = [result.images[drawn] for drawn in order]
            images.save_file(folder, f"{job.id}.mp4", encode_mp4(frames, params.fps))
    except BaseException:
        remove_images(records)  # all of a job's images or none: the retry writes them all again
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return records


def remove_images(images: list[ImageRecord]) -> None:
    """Delete the files of images that will not be recorded; one already gone is fine."""
    for image in images:
        with contextlib.suppress(OSError):
            os.unlink(image.path)
