"""Saving a drawn job: all of its PNGs or none, and telling a full disk from a broken job."""

from __future__ import annotations

import contextlib
import os
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
    """Write a job's images with their infotext; on any failure none of them is left behind."""
    records = []
    try:
        for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
            path = images.save_output(job.id, index, image, infotext(job.params, seed, result.run))
            records.append(ImageRecord(job_id=job.id, index=index, seed=seed, path=str(path)))
    except BaseException:
        remove_images(records)  # all of a job's images or none: the retry writes them all again
        raise
    return records


def remove_images(images: list[ImageRecord]) -> None:
    """Delete the files of images that will not be recorded; one already gone is fine."""
    for image in images:
        with contextlib.suppress(OSError):
            os.unlink(image.path)
