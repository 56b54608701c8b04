"""/animate through the service on the tiny model: each mode's frames are the /imagine drawings they say they
are, the video holds them, a long animation takes turns with other people's jobs, a cancel keeps the frames,
and /rerun redraws every frame."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bot.config import LimitsConfig
from bot.replies import Attachment
from generation.animation import matched_colours, moved
from generation.queue import EventKind
from generation.video import read_video
from storage.images import animation_video
from storage.infotext import read_parameters
from tests.bot.rig import ALICE, BOB, Rig, png
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("tiny_model")
FAST = "--size 64x64 --steps 5"  # a sweep from 0.2 runs int(5 × 0.2) = 1 step on its first frame


def pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


async def drawn(rig: Rig, text: str, *attachments: Attachment, owner=ALICE, status: str = "done"):
    reply = await rig.ok(owner, text, *attachments)
    await rig.finished(reply.job.id)
    job = await rig.history.get(reply.job.id)
    assert job.status.value == status, job.error
    return job


def clip(seconds: float = 2.0, fps: int = 24, size: tuple[int, int] = (80, 64)) -> bytes:
    """An H.264 clip of a bar moving across a colour that changes frame by frame, with a silent audio track."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for index in range(round(seconds * fps)):
            frame = np.zeros((size[1], size[0], 3), np.uint8)
            frame[:] = (index * 5 % 256, 100, 200)
            frame[20:40, index % size[0]:index % size[0] + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture
async def started(rig: Rig) -> Rig:
    await rig.queue.start()
    return rig


async def test_a_sweep_is_the_image_to_image_of_its_input_at_each_strength_and_its_video_holds_the_frames(
        started: Rig) -> None:
    picture = Attachment("start.png", png(96, 72, seed=3))
    job = await drawn(started, f"/animate a lighthouse --mode sweep --frames 4 --seed 3 {FAST}", picture)
    assert [image.seed for image in job.images] == [3] * 4
    strengths = [0.2, 0.4667, 0.7333, 1.0]
    for k, strength in enumerate(strengths):
        alone = await drawn(started, f"/imagine a lighthouse --strength {strength} --seed 3 {FAST}", picture)
        assert np.array_equal(pixels(job.images[k].path), pixels(alone.images[0].path)), f"frame {k}"
        assert f"Denoising strength: {strength:g}" in read_parameters(job.images[k].path)
        assert f"Animation: sweep, Frame: {k + 1} of 4, FPS: 12" in read_parameters(job.images[k].path)
    video = animation_video(job)
    assert video is not None and video.parent == Path(job.images[0].path).parent
    frames, fps = read_video(video.read_bytes())
    assert len(frames) == 4 and frames[0].size == (64, 64) and fps == 12
    # Lossy, but each video frame is its own PNG, not a neighbour's.
    for k, frame in enumerate(frames):
        errors = [np.abs(np.asarray(frame, np.int16) - pixels(image.path)).mean() for image in job.images]
        assert int(np.argmin(errors)) == k


async def test_a_zoom_loop_redraws_each_frame_from_the_last_one_moved_and_reverse_plays_it_backwards(
        started: Rig) -> None:
    job = await drawn(started, f"/animate a lighthouse --mode zoom --frames 3 --zoom 1.1 --seed 5 {FAST}")
    assert [image.seed for image in job.images] == [5, 6, 7]
    first = Image.open(job.images[0].path).convert("RGB")
    alone = await drawn(started, f"/imagine a lighthouse --seed 5 {FAST}")
    assert np.array_equal(pixels(job.images[0].path), pixels(alone.images[0].path))  # frame 0: text→image
    start = matched_colours(moved(first, 1.1), first)  # frame 1 starts from frame 0 zoomed, in frame 0's colours
    again = await drawn(started, f"/imagine a lighthouse --strength 0.5 --seed 6 {FAST}",
                        Attachment("moved.png", _png(start)))
    assert np.array_equal(pixels(job.images[1].path), pixels(again.images[0].path))
    plain = await drawn(started, f"/animate a lighthouse --mode zoom --frames 3 --zoom 1.1 --seed 5 --colour no {FAST}")
    assert np.array_equal(pixels(plain.images[0].path), pixels(job.images[0].path))
    unmatched = await drawn(started, f"/imagine a lighthouse --strength 0.5 --seed 6 {FAST}",
                            Attachment("moved.png", _png(moved(first, 1.1))))
    assert np.array_equal(pixels(plain.images[1].path), pixels(unmatched.images[0].path))
    backwards = await drawn(started, f"/animate a lighthouse --mode zoom --frames 3 --zoom 1.1 --seed 5 --reverse {FAST}")
    assert [image.seed for image in backwards.images] == [7, 6, 5]
    for k in range(3):
        assert np.array_equal(pixels(backwards.images[k].path), pixels(job.images[2 - k].path))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_clip_is_redrawn_frame_by_frame_at_the_asked_fps_and_a_long_one_is_refused(started: Rig) -> None:
    two_seconds = Attachment("clip.mp4", clip(2.0, 24))
    job = await drawn(started, f"/animate a city at night --mode video --fps 6 --seed 9 {FAST}", two_seconds)
    assert len(job.images) == 12 and job.params.frames == 12 and len(job.params.frame_inputs) == 12
    frames, fps = read_video(animation_video(job).read_bytes())
    assert len(frames) == 12 and fps == 6
    # Frame k is the image→image of the clip's frame at k/6 s, with the one seed.
    kept = Image.open(started.service.images.input_path(job.params.frame_inputs[5]))
    alone = await drawn(started, f"/imagine a city at night --strength 0.5 --seed 9 {FAST}",
                        Attachment("f.png", _png(kept)))
    assert np.array_equal(pixels(job.images[5].path), pixels(alone.images[0].path))
    # No file's own audio or extra frames survive: 2 s at 6 fps is 12 frames, whatever the clip's rate.
    message = await started.refused(ALICE, f"/animate a city --mode video --fps 30 {FAST}", two_seconds)
    assert message == ("the clip is 2.0 s at 30 fps = 60 frames; the limit is 48 ([limits] max_frames) — ask a lower "
                       "--fps or send a shorter clip")
    message = await started.refused(ALICE, f"/animate a city --mode video {FAST}", Attachment("x.bin", b"not a clip"))
    assert "clip" in message and "\n" not in message


async def test_limits_are_checked_before_anything_is_queued(make_rig) -> None:
    rig = await make_rig(limits=LimitsConfig(max_frames=10, max_animation_steps=100))
    assert await rig.refused(ALICE, f"/animate a city --mode zoom --frames 11 {FAST}") == "frames must be 1–10, got 11"
    # Frame 0 is text→image (50 steps), the other 9 image→image at 0.5 (25 each): 275 steps at 512x512.
    message = await rig.refused(ALICE, "/animate a city --mode zoom --frames 10 --steps 50 --size 512x512")
    assert message == ("this animation is 10 frames of up to 50 steps at 512x512: 275 steps at 512x512; the limit "
                       "is 100 — fewer frames, fewer steps or a smaller size")
    assert "--mode sweep turns a picture" in await rig.refused(ALICE, "/animate a city --mode sweep")
    assert await rig.refused(ALICE, "/animate a city --mode zoom --from 0.3") == \
        "--from is for --mode sweep; this is a zoom"
    assert "/animate's mode is sweep, zoom or video" in await rig.refused(ALICE, "/animate a city --mode scribble")
    assert "image→image runs int(steps × strength) steps" in await rig.refused(
        ALICE, "/animate a city --mode sweep --steps 2", Attachment("a.png", png(64, 64)))


async def test_someone_elses_picture_starts_between_two_frames_of_a_long_animation(started: Rig) -> None:
    long = await started.ok(ALICE, f"/animate a long zoom --mode zoom --frames 12 {FAST}")
    await started.event(long.job.id, EventKind.PROGRESS)
    quick = await started.ok(BOB, f"/imagine a cat {FAST}")
    await started.finished(quick.job.id)
    animation = await started.history.get(long.job.id)
    assert animation.status.value == "running", "Bob's picture waited for the whole animation"
    frames = [event.frame for event in started.events if event.job.id == long.job.id and event.kind is EventKind.PROGRESS]
    assert frames[0] == 1 and max(frames) < 12
    assert all(event.frames == 12 for event in started.events if event.job.id == long.job.id and event.frames)
    # Between two frames the animation is running for /queue, and Alice's next job still waits behind it.
    mine = await started.ok(ALICE, f"/imagine a dog {FAST}")
    await started.finished(long.job.id)
    await started.finished(mine.job.id)
    events = started.events
    last_frame = max(i for i, event in enumerate(events) if event.job.id == long.job.id and event.frame == 12)
    mine_started = next(i for i, event in enumerate(events) if event.job.id == mine.job.id
                        and event.kind is EventKind.STARTED)
    assert last_frame < mine_started  # her own jobs take her turns after it, as her jobs always wait for hers
    assert len((await started.history.get(long.job.id)).images) == 12


async def test_a_cancelled_animation_keeps_the_frames_it_has(started: Rig) -> None:
    reply = await started.ok(ALICE, f"/animate a slow zoom --mode zoom --frames 40 {FAST}")
    await eventually(lambda: any(event.job.id == reply.job.id and event.frame >= 3 for event in started.events),
                     what="frame 3")
    cancelling = await started.say(ALICE, f"/cancel {reply.job.id}")
    assert not cancelling.error, cancelling.text
    end = await started.finished(reply.job.id)
    assert end.kind is EventKind.CANCELLED
    job = await started.history.get(reply.job.id)
    assert job.status.value == "cancelled" and 3 <= len(job.images) < 40
    frames, _ = read_video(animation_video(job).read_bytes())
    assert len(frames) == len(job.images)


async def test_rerun_of_an_animation_redraws_every_frame_and_keeps_all_else_when_steps_change(started: Rig) -> None:
    sweep = await drawn(started, f"/animate a lighthouse --mode sweep --frames 3 --seed 2 {FAST}",
                        Attachment("start.png", png(64, 64, seed=8)))
    video = await drawn(started, f"/animate a city --mode video --fps 3 --seed 4 {FAST}",
                        Attachment("clip.mp4", clip(1.0, 12)))
    for job in (sweep, video):
        again = await drawn(started, f"/rerun #{job.id}")
        assert again.parent_id == job.id and len(again.images) == len(job.images)
        for old, new in zip(job.images, again.images):
            assert np.array_equal(pixels(old.path), pixels(new.path))
        more = await drawn(started, f"/rerun #{job.id} steps=6")
        assert more.params.replace(vae_tiling=None) == job.params.replace(steps=6, vae_tiling=None)
    assert await started.refused(ALICE, f"/rerun #{video.id} fps=8") == (
        f"animation #{video.id}'s frames were taken from its clip at 3 fps; send the clip again with --fps to change it")
    refusal = await started.refused(ALICE, f"/rerun #{sweep.id} frames=5")
    assert refusal == f"a rerun of animation #{sweep.id} keeps its frames, size and motion; start a new /animate to change them"


async def test_describe_of_an_animation_shows_its_settings_and_its_first_and_last_frames(started: Rig) -> None:
    job = await drawn(started, f"/animate a city --mode video --fps 4 --seed 4 {FAST}", Attachment("c.mp4", clip(1.0, 12)))
    text = (await started.say(ALICE, f"/describe #{job.id}")).text
    assert "mode: video" in text and "frames: 4" in text and "frame_inputs: 4: " in text
    assert "4 frames; the first's and the last's parameters" in text
    assert text.count("A1111 parameters of image") == 2 and "Frame: 4 of 4" in text
