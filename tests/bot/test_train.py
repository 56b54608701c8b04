"""/train and `easel train-pix2pix` for real: pix2pix trained on photos the tests make, in turns with everyone's
pictures (its owner's too), stopped and resumed from its checkpoint, and drawn with by /sketch --pix2pix."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bot.config import StorageConfig
from bot.replies import Attachment
from generation.config import TrainingConfig, pix2pix_model_file, training_dir
from generation.pix2pix import draw_pix2pix, load_pix2pix
from generation.queue import EventKind
from storage.records import JobStatus
from tests.bot.rig import ALICE, CONSOLE, FAST, Rig
from tests.generation.test_training_pairs import write_photos
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("tiny_model")
ROOT = Path(__file__).resolve().parents[2]
# A slice of a few milliseconds is one iteration a turn: the turns are what these tests watch.
QUICK = TrainingConfig(slice_seconds=0.001, checkpoint_minutes=60)
SMALL = "--ngf 4"  # a narrow generator: the same code, quick on a CPU


def drawing_png() -> bytes:
    """A pencil drawing of a house, as a phone would photograph it: dark lines on white paper."""
    image = Image.new("RGB", (300, 260), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((60, 110, 240, 230), outline="black", width=4)
    draw.polygon([(50, 112), (150, 30), (250, 112)], outline="black", width=4)
    draw.rectangle((130, 160, 170, 230), outline="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def progress_of(rig: Rig, job_id: int) -> list:
    return [e for e in rig.events if e.job.id == job_id and e.kind is EventKind.PROGRESS and e.detail]


def ended_at(rig: Rig, job_id: int) -> int:
    return next(i for i, e in enumerate(rig.events) if e.job.id == job_id and e.finished)


def started_at(rig: Rig, job_id: int) -> int:
    return next(i for i, e in enumerate(rig.events) if e.job.id == job_id and e.kind is EventKind.STARTED)


async def test_a_training_takes_turns_with_its_owners_pictures_and_its_model_draws_sketches(
    make_rig, tmp_path: Path
) -> None:
    photos = write_photos(tmp_path / "photos", 10)
    rig = await make_rig(training=QUICK)
    await rig.queue.start()
    training = (await rig.ok(CONSOLE, f"/train {photos} --name house {SMALL} --iterations 30")).job
    await eventually(lambda: progress_of(rig, training.id), 120, "the training's first iteration")
    picture = (await rig.ok(CONSOLE, f"/imagine a red lighthouse {FAST}")).job
    await rig.finished(picture.id)
    await rig.finished(training.id)
    # Its owner's own picture went between two slices, long before the training's end.
    assert started_at(rig, picture.id) < ended_at(rig, training.id)
    done = await rig.history.get(training.id)
    assert done.status is JobStatus.DONE, done.error
    assert len(done.images) == 2  # the last sample sheet and the loss plot
    steps = progress_of(rig, training.id)
    assert [e.total for e in steps[:1]] == [30] and steps[-1].step == 30
    assert "epoch" in steps[-1].detail and "G L1" in steps[-1].detail and "left" in steps[-1].detail
    models = QUICK.models_dir(rig.service.config.storage.data_dir)
    model_file = pix2pix_model_file(models, "house")
    generator = load_pix2pix(model_file)  # the reference layout: what [sketch] pix2pix takes too

    sketch = (await rig.ok(ALICE, "/sketch a house --pix2pix house", Attachment("house.png", drawing_png()))).job
    await rig.finished(sketch.id)
    drawn = await rig.history.get(sketch.id)
    assert drawn.status is JobStatus.DONE, drawn.error
    assert drawn.params.mode == "pix2pix" and drawn.params.pix2pix == "house"
    control = Image.open(rig.service.images.input_path(drawn.params.control_sha256))
    expected = np.asarray(draw_pix2pix(generator, control.convert("RGB")))
    assert np.array_equal(np.asarray(Image.open(drawn.images[0].path).convert("RGB")), expected)

    # A training is not redrawn by /rerun, with settings or without.
    for rerun in (f"/rerun #{training.id}", f"/rerun #{training.id} steps=50", "/rerun 0"):
        assert (await rig.refused(CONSOLE, rerun)).startswith(f"job #{training.id} trained a pix2pix model;")
    # A name that is taken is refused before anything is queued, as are names that are no folder name.
    assert "exists already" in await rig.refused(CONSOLE, f"/train {photos} --name house {SMALL}")
    assert "no pix2pix model 'nope'" in await rig.refused(
        ALICE, "/sketch a house --pix2pix nope", Attachment("house.png", drawing_png()))
    assert "house" in await rig.refused(ALICE, "/sketch a house --pix2pix nope", Attachment("h.png", drawing_png()))


async def test_train_is_refused_with_a_reason_before_anything_is_queued(rig: Rig, tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=False)
    assert "needs --name" in await rig.refused(CONSOLE, f"/train {photos}")
    assert "takes the folder" in await rig.refused(CONSOLE, "/train --name cat")
    assert "there is no folder" in await rig.refused(CONSOLE, f"/train {tmp_path / 'nowhere'} --name cat")
    assert "is a file" in await rig.refused(CONSOLE, f"/train {photos / 'photo-00.png'} --name cat")
    assert "a model name is" in await rig.refused(CONSOLE, f"/train {photos} --name ../../etc")
    assert "ngf must be" in await rig.refused(CONSOLE, f"/train {photos} --name cat --ngf 2")
    assert "/train is for admins" in await rig.refused(ALICE, f"/train {photos} --name cat")


async def test_a_training_stopped_by_a_shutdown_resumes_from_its_checkpoint(make_rig, tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=False)
    data = StorageConfig(data_dir=tmp_path / "data")
    first = await make_rig(training=QUICK, storage=data)
    await first.queue.start()
    job = (await first.ok(CONSOLE, f"/train {photos} --name cat {SMALL} --iterations 200")).job
    await eventually(lambda: len(progress_of(first, job.id)) >= 3, 120, "three iterations")
    await first.queue.stop()  # as Ctrl-C does: the slice stops after its iteration and is checkpointed
    checkpoint = training_dir(QUICK.models_dir(data.data_dir), "cat") / "checkpoint.pt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["iteration"]
    assert saved >= 3
    assert (await first.history.get(job.id)).status is JobStatus.QUEUED  # runs again on the next start

    second = await make_rig(training=QUICK, storage=data)
    await second.queue.start()
    resumed = await eventually(lambda: progress_of(second, job.id), 120, "the training to go on")
    assert resumed[0].step == saved + 1  # from its checkpoint, not from zero


def test_the_command_line_trainer_prints_falling_losses_and_resumes_after_a_kill(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 8, junk=True)
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[generation]\ndevice = "cpu"\n'
                      "[training]\nslice_seconds = 0.001\ncheckpoint_minutes = 0.0001\n", encoding="utf-8")
    command = [sys.executable, "-m", "bot.cli", "train-pix2pix", str(photos), "--name", "cat", "--ngf", "4",
               "--iterations", "60", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    checkpoint = tmp_path / "data" / "pix2pix" / "cat" / "training" / "checkpoint.pt"
    killed = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        reached = 0
        while reached < 5 and time.monotonic() < deadline and killed.poll() is None:
            time.sleep(0.2)
            try:
                reached = torch.load(checkpoint, map_location="cpu", weights_only=True)["iteration"]
            except (FileNotFoundError, RuntimeError, EOFError):
                pass  # not written yet
        assert reached >= 5, killed.stdout.read() if killed.poll() is not None else "no checkpoint past iteration 5"
    finally:
        killed.send_signal(signal.SIGKILL)
        out = killed.communicate(timeout=30)[0]
    assert "2 held out" in out and "skipped notes.txt" in out and "contact-sheet.png" in out, out

    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    resumed = int(finished.stdout.split("resuming from the checkpoint at iteration ")[1].split()[0])
    assert resumed >= reached  # the last checkpoint before the kill (or a later one), never zero
    assert "held-out L1" in finished.stdout and "pix2pix/cat/latest_net_G.pth" in finished.stdout
    lines = [line for line in finished.stdout.splitlines() if line.startswith("iteration ")]
    assert lines and lines[-1].startswith("iteration 60/60")
    load_pix2pix(tmp_path / "data" / "pix2pix" / "cat" / "latest_net_G.pth")


def test_a_zip_is_unpacked_flat_inside_its_folder_and_bad_zips_are_refused_in_a_line(tmp_path: Path) -> None:
    import zipfile

    from bot.commands.train import unpack_photos
    from bot.limits import CommandError

    def zipped(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    folder = tmp_path / "cat" / "photos"
    assert unpack_photos(zipped({"a/one.png": b"1", "b/one.png": b"2", "../../../x.jpg": b"3"}), folder, 100) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["one-1.png", "one.png", "x.jpg"]
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == ["photos"]  # nothing beside it, no leftovers
    assert not (tmp_path / "x.jpg").exists()

    def refusal(data: bytes, limit: int = 10_000) -> str:
        with pytest.raises(CommandError) as caught:
            unpack_photos(data, folder, limit)
        return str(caught.value)

    assert refusal(b"PK not really") == "the file is not a zip; send the photos as one .zip file"
    assert refusal(zipped({"__MACOSX/a/._x.png": b"", ".DS_Store": b"", "empty/": b""})).startswith(
        "the zip holds no files")
    bomb = zipped({"big.png": bytes(5_000_000)})  # a few kilobytes that unpack to 5 MB
    assert len(bomb) < 20_000 and refusal(bomb).startswith("the zip unpacks to more than")
    assert sorted(p.name for p in folder.iterdir()) == ["one-1.png", "one.png", "x.jpg"]  # the refusals left it
