"""Animations to MP4/GIF/WebP and users' clips back to frames (generation/video.py), with real PyAV and Pillow:
clips are written by PyAV in the tests, read back, and compared by size, count, timing and colour."""

from __future__ import annotations

import io
import re
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from generation import video
from generation.video import (
    Clip,
    ClipError,
    Fitted,
    decode_clip,
    encode_gif,
    encode_mp4,
    encode_webp,
    fit_video,
    read_video,
    size_label,
)
from storage.errors import EaselError

W, H = 64, 48


def smooth_frames(count: int, width: int = W, height: int = H) -> list[Image.Image]:
    """Slowly moving colour waves with a red square crossing them: smooth, so H.264 keeps it close."""
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    frames = []
    for i in range(count):
        pixels = np.stack(
            [
                128 + 90 * np.sin(xx / 9 + i / 3),
                128 + 90 * np.cos(yy / 7 - i / 4),
                128 + 60 * np.sin((xx + yy) / 11 + i / 5),
            ],
            axis=-1,
        )
        left = (i * 3) % (width - 16)
        pixels[10:26, left : left + 16] = (230, 30, 30)
        frames.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)))
    return frames


def index_colour(index: int) -> tuple[int, int, int]:
    """A flat colour that says which source frame a decoded frame came from; neighbours differ a lot."""
    return 20 + 4 * index, 30 + (index * 53) % 200, 30 + (index * 97) % 200


def index_frames(count: int, size: tuple[int, int] = (W, H)) -> list[Image.Image]:
    return [Image.new("RGB", size, index_colour(i)) for i in range(count)]


def index_of(image: Image.Image, count: int = 200) -> int:
    """Which index_colour the middle of a decoded frame is nearest to."""
    pixel = np.asarray(image.convert("RGB"), dtype=float)[image.height // 2, image.width // 2]
    distances = [np.abs(pixel - np.array(index_colour(i))).sum() for i in range(count)]
    return int(np.argmin(distances))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


class _WriteOnly:
    """A pipe-like output: without seek, muxers cannot go back to write a length into the header."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)


def make_clip(
    frames: list[Image.Image],
    rate: int = 24,
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    audio_seconds: float = 0.0,
    seekable: bool = True,
) -> bytes:
    """A clip written with PyAV, optionally with a silent audio track of its own length."""
    target = io.BytesIO() if seekable else _WriteOnly()
    with av.open(target, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        sound = None
        if audio_seconds:
            sound = container.add_stream("libopus" if fmt == "webm" else "aac", rate=48000)
            sound.layout = "mono"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if sound is not None:
            chunk = sound.codec_context.frame_size or 1024
            for start in range(0, int(48000 * audio_seconds), chunk):
                samples = av.AudioFrame.from_ndarray(np.zeros((1, chunk), np.float32), format="fltp", layout="mono")
                samples.sample_rate, samples.pts = 48000, start
                container.mux(sound.encode(samples))
            container.mux(sound.encode(None))
    return target.buffer.getvalue() if isinstance(target, _WriteOnly) else target.getvalue()


def wav_bytes() -> bytes:
    """Half a second of silence, no video at all."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        samples.sample_rate, samples.pts = 8000, 0
        container.mux(stream.encode(samples))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.append(kind.decode("ascii"))
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        offset += size if size else len(data)
    return boxes


def animation_delays(data: bytes) -> tuple[list[int], int | None]:
    """Per-frame delays in ms and the loop count, as Pillow reads them."""
    picture = Image.open(io.BytesIO(data))
    delays = []
    for index in range(picture.n_frames):
        picture.seek(index)
        picture.load()
        delays.append(picture.info["duration"])
    return delays, picture.info.get("loop")


@pytest.fixture(scope="module")
def clip_24fps() -> bytes:
    """2.0 s at 24 fps, each frame's colour naming its index."""
    return make_clip(index_frames(48))


# --- MP4 ---------------------------------------------------------------------------------------------------


def test_mp4_plays_back_the_frames_at_the_rate_asked() -> None:
    frames = smooth_frames(24)
    data = encode_mp4(frames, 12)
    decoded, fps = read_video(data)
    assert fps == 12.0
    assert len(decoded) == 24
    assert all(image.size == (W, H) and image.mode == "RGB" for image in decoded)
    assert max(mean_difference(a, b) for a, b in zip(decoded, frames)) < 8
    # the square really moved: frame 10 is not frame 0 over again
    assert mean_difference(decoded[10], frames[0]) > 20
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.frames == 24
        assert float(stream.duration * stream.time_base) == pytest.approx(2.0)


def test_mp4_index_comes_first_for_streaming() -> None:
    boxes = top_level_boxes(encode_mp4(smooth_frames(6), 12))
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize("fps", [7.5, 12, 30000 / 1001])
def test_mp4_keeps_fractional_frame_rates(fps: float) -> None:
    data = encode_mp4(smooth_frames(15), fps)
    decoded, rate = read_video(data)
    assert len(decoded) == 15
    assert rate == pytest.approx(fps, rel=1e-6)
    with av.open(io.BytesIO(data)) as container:
        # the timeline, not the header: ffmpeg rounds the edit list to the movie's 1 ms clock (0.5005 s -> 0.5 s)
        last = list(container.decode(video=0))[-1]
        assert float(last.time + last.duration * last.time_base) == pytest.approx(15 / fps, rel=1e-6)


def test_mp4_is_tagged_bt709_and_keeps_saturated_colours() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (20, 200, 90)]
    data = encode_mp4([Image.new("RGB", (W, H), colour) for colour in colours], 4)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.colorspace == av.video.reformatter.Colorspace.ITU709
    for image, colour in zip(read_video(data)[0], colours):
        assert np.abs(np.asarray(image, dtype=int)[H // 2, W // 2] - colour).max() <= 4


def test_mp4_pads_odd_sides_by_repeating_the_edge() -> None:
    frames = []
    for i in range(4):
        pixels = np.full((47, 63, 3), (60 + 10 * i, 120, 60), np.uint8)
        pixels[:, -1] = (240, 240, 20)  # last column
        pixels[-1, :] = (20, 40, 240)  # last row
        frames.append(Image.fromarray(pixels))
    decoded, _ = read_video(encode_mp4(frames, 8))
    assert [image.size for image in decoded] == [(64, 48)] * 4
    for image, original in zip(decoded, frames):
        pixels = np.asarray(image, dtype=float)
        # nothing was cut: the 63x47 picture is all there
        assert mean_difference(image.crop((0, 0, 63, 47)), original) < 6
        # the new column repeats the last one and the new row the last row (chroma is shared by 2x2 blocks,
        # so compare away from the corner where they meet)
        assert np.abs(pixels[10:40, 63] - pixels[10:40, 62]).mean() < 6
        assert np.abs(pixels[47, 10:50] - pixels[46, 10:50]).mean() < 6


@pytest.mark.parametrize(("scale", "size"), [(0.5, (32, 24)), (0.75, (48, 36)), (0.3, (20, 14))])
def test_mp4_scales_with_lanczos_to_even_sides(scale: float, size: tuple[int, int]) -> None:
    frames = smooth_frames(3)
    decoded, _ = read_video(encode_mp4(frames, 12, scale=scale))
    assert decoded[0].size == size
    expected = frames[1].resize(size, Image.Resampling.LANCZOS)
    # at 20x14 chroma (shared by 2x2 pixels) blurs a good part of the picture, hence the looser bound
    assert mean_difference(decoded[1], expected) < (10 if scale >= 0.5 else 16)


def test_mp4_is_byte_for_byte_repeatable() -> None:
    # 96x64 is a size where x264's macroblock tree gave a different file almost every other time
    frames = smooth_frames(12, 96, 64)
    first = encode_mp4(frames, 12)
    assert {encode_mp4([frame.copy() for frame in frames], 12) for _ in range(8)} == {first}
    at_rate = encode_mp4(frames, 12, bitrate=50_000)
    assert {encode_mp4(frames, 12, bitrate=50_000) for _ in range(8)} == {at_rate}
    assert encode_mp4(frames, 12, crf=30) != first


def test_mp4_of_one_frame() -> None:
    decoded, fps = read_video(encode_mp4(smooth_frames(1), 12))
    assert len(decoded) == 1
    assert fps == 12.0


def test_mp4_bitrate_sets_the_size() -> None:
    frames = smooth_frames(48, 128, 96)  # 4 s at 12 fps
    small, large = encode_mp4(frames, 12, bitrate=40_000), encode_mp4(frames, 12, bitrate=160_000)
    # 40 kbit/s for 4 s is 20 kB of video; x264 misses short targets a little and the index adds ~2 kB
    assert 12_000 < len(small) < 30_000
    assert len(large) > 2 * len(small)
    assert len(read_video(small)[0]) == 48


def test_encoders_refuse_what_is_a_callers_bug() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_mp4([], 12)
    with pytest.raises(ValueError, match="frame 1 is 32x32"):
        encode_gif([Image.new("RGB", (W, H)), Image.new("RGB", (32, 32))], 12)
    with pytest.raises(ValueError, match="fps must be above 0"):
        encode_webp(smooth_frames(2), 0)
    with pytest.raises(ValueError, match="bitrate must be at least 1000"):
        encode_mp4(smooth_frames(2), 12, bitrate=500)


# --- GIF and WebP ------------------------------------------------------------------------------------------


def test_gif_loops_forever_at_the_rate_asked() -> None:
    frames = smooth_frames(10)
    data = encode_gif(frames, 10)
    assert data[:6] == b"GIF89a"
    delays, loop = animation_delays(data)
    assert delays == [100] * 10 and loop == 0
    decoded, fps = read_video(data)
    assert len(decoded) == 10 and fps == pytest.approx(10)
    assert max(mean_difference(a, b) for a, b in zip(decoded, frames)) < 10


def test_gif_keeps_the_clip_length_in_centiseconds() -> None:
    # 12 fps is 83.3 ms a frame; GIF counts in 10 ms, so the delays alternate instead of all being 80
    delays, _ = animation_delays(encode_gif(smooth_frames(24), 12))
    assert set(delays) == {80, 90}
    assert abs(sum(delays) - 2000) <= 10


def test_webp_is_lossy_animated_and_loops() -> None:
    frames = smooth_frames(24)
    data = encode_webp(frames, 12)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    delays, loop = animation_delays(data)
    assert len(delays) == 24 and loop == 0
    assert set(delays) <= {83, 84} and sum(delays) == 2000
    decoded, fps = read_video(data)
    assert len(decoded) == 24 and fps == pytest.approx(12)
    assert max(mean_difference(a, b) for a, b in zip(decoded, frames)) < 10
    assert len(encode_webp(frames, 12, quality=20)) < len(data)


def test_gif_and_webp_scale() -> None:
    frames = smooth_frames(3)
    assert Image.open(io.BytesIO(encode_gif(frames, 12, scale=0.5))).size == (32, 24)
    assert Image.open(io.BytesIO(encode_webp(frames, 12, scale=0.25))).size == (16, 12)


# --- fitting an upload limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (10 * 2**20, "10 MiB"), (50_000_000, "50 MB"), (8_000_000, "8 MB"), (25 * 2**20, "25 MiB"), (2**30, "1 GiB"),
        (12_345_678, "11.8 MiB"), (3_000, "3 kB"), (2_048, "2 KiB"), (2_600, "2.5 KiB"), (200, "200 bytes"),
    ],
)
def test_size_label(size: int, text: str) -> None:
    assert size_label(size) == text


def test_fit_sends_the_mp4_as_is_when_it_fits() -> None:
    frames = smooth_frames(12)
    mp4 = encode_mp4(frames, 12)
    fitted = fit_video(mp4, frames, 12, 10 * 2**20, name="job-42")
    assert fitted == Fitted("job-42.mp4", mp4, "mp4", None)
    assert fit_video(mp4, frames, 12, len(mp4), name="x").data is mp4  # exactly at the limit still fits


def test_fit_re_encodes_under_a_small_limit() -> None:
    frames = smooth_frames(24, 128, 96)
    mp4 = encode_mp4(frames, 12)
    limit = len(mp4) // 2
    fitted = fit_video(mp4, frames, 12, limit, name="job")
    assert fitted is not None
    assert fitted.format == "mp4" and fitted.name == "job.mp4"
    assert len(fitted.data) <= limit
    assert re.fullmatch(rf"re-encoded at \d+ kbit/s to fit {re.escape(size_label(limit))}", fitted.note or "")
    decoded, fps = read_video(fitted.data)
    assert len(decoded) == 24 and fps == 12.0 and decoded[0].size == (128, 96)


def test_fit_whatever_it_sends_is_under_the_limit_and_says_so() -> None:
    # down near the smallest an MP4 of 24 frames can be, where the chain may scale or change format
    frames = smooth_frames(24)
    mp4 = encode_mp4(frames, 12)
    notes = []
    for limit in (len(mp4) // 2, 2_600, 2_400, 1_200):
        fitted = fit_video(mp4, frames, 12, limit, name="job")
        if fitted is None:
            continue
        notes.append(fitted.note)
        assert len(fitted.data) <= limit
        assert fitted.name == f"job.{fitted.format}"
        assert len(read_video(fitted.data)[0]) == 24
        label = re.escape(size_label(limit))
        assert re.fullmatch(
            rf"(re-encoded at|scaled to \d+x\d+ at) \d+ k?bit/s to fit {label}"
            rf"|sent as (WebP|GIF)( scaled to \d+x\d+)? to fit {label}",
            fitted.note or "",
        ), fitted.note
    assert len(notes) >= 2, notes


def test_fit_falls_back_to_webp_when_no_mp4_can_fit() -> None:
    # under ~1 KiB not even an MP4's index fits, but a few flat frames of WebP do
    frames = index_frames(3)
    fitted = fit_video(encode_mp4(frames, 12), frames, 12, 1000, name="job")
    assert fitted is not None
    assert (fitted.format, fitted.name, fitted.note) == ("webp", "job.webp", "sent as WebP to fit 1 kB")
    assert len(fitted.data) <= 1000 and len(read_video(fitted.data)[0]) == 3


@pytest.mark.parametrize("kind", ["gif", "webp"])
def test_fit_sends_the_preferred_format(kind: str) -> None:
    frames = smooth_frames(6)
    mp4 = encode_mp4(frames, 12)
    fitted = fit_video(mp4, frames, 12, 10 * 2**20, name="job", prefer=kind)
    assert fitted is not None
    assert (fitted.format, fitted.name, fitted.note) == (kind, f"job.{kind}", None)
    assert len(read_video(fitted.data)[0]) == 6


def test_fit_sends_the_mp4_when_the_preferred_gif_is_too_big() -> None:
    frames = smooth_frames(12)
    mp4 = encode_mp4(frames, 12)
    gif = encode_gif(frames, 12)
    assert len(mp4) < len(gif)
    fitted = fit_video(mp4, frames, 12, len(mp4), name="job", prefer="gif")
    assert fitted is not None and fitted.data is mp4
    assert fitted.note == f"sent as MP4: the GIF is over {size_label(len(mp4))}"


def test_fit_gives_up_on_an_impossible_limit() -> None:
    frames = smooth_frames(6)
    assert fit_video(encode_mp4(frames, 12), frames, 12, 200, name="job") is None
    assert fit_video(encode_mp4(frames, 12), frames, 12, 200, name="job", prefer="gif") is None


def test_fit_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="prefer"):
        fit_video(b"", smooth_frames(1), 12, 1000, name="x", prefer="avi")


# --- decoding clips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "count"), [(12, 24), (24, 48), (6, 12), (10, 20)])
def test_decode_resamples_to_the_asked_rate(clip_24fps: bytes, fps: float, count: int) -> None:
    clip = decode_clip(clip_24fps, fps, max_frames=100, max_seconds=10)
    assert isinstance(clip, Clip)
    assert len(clip.frames) == count
    assert (clip.fps, clip.source_fps, clip.duration) == (fps, 24.0, 2.0)
    assert all(image.mode == "RGB" and image.size == (W, H) for image in clip.frames)
    # frame k shows the source frame on screen at k/fps
    assert [index_of(image) for image in clip.frames] == [int(Fraction(k) / Fraction(fps) * 24) for k in range(count)]


def test_decode_repeated_frames_are_separate_images(clip_24fps: bytes) -> None:
    clip = decode_clip(clip_24fps, 48, max_frames=100, max_seconds=10)
    assert len(clip.frames) == 96
    assert clip.frames[0] is not clip.frames[1]
    assert index_of(clip.frames[0]) == index_of(clip.frames[1]) == 0


def test_decode_webm_with_rounded_times_and_audio() -> None:
    # WebM stores times in whole ms (frame 1 at 0.042 s, not 0.0417): it must still be frame 1 at 1/24 s
    data = make_clip(index_frames(48), fmt="webm", codec="libvpx-vp9", audio_seconds=2.0)
    with av.open(io.BytesIO(data)) as container:
        assert {stream.type for stream in container.streams} == {"video", "audio"}
    clip = decode_clip(data, 24, max_frames=100, max_seconds=10)
    assert [index_of(image) for image in clip.frames] == list(range(48))
    assert clip.duration == pytest.approx(2.0, abs=0.002) and clip.source_fps == 24.0
    assert [index_of(image) for image in decode_clip(data, 12, max_frames=100, max_seconds=10).frames] == list(
        range(0, 48, 2)
    )


def test_decode_ignores_a_longer_audio_track() -> None:
    data = make_clip(index_frames(48), audio_seconds=3.0)
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base > 2.9  # the container's length is the audio's
    clip = decode_clip(data, 24, max_frames=48, max_seconds=2.5)
    assert len(clip.frames) == 48 and clip.duration == 2.0


def test_decode_our_own_mp4_and_a_path(tmp_path: Path) -> None:
    frames = index_frames(12)
    path = tmp_path / "made here.mp4"
    path.write_bytes(encode_mp4(frames, 12))
    for source in (path, str(path)):
        clip = decode_clip(source, 12, max_frames=100, max_seconds=10)
        assert [index_of(image) for image in clip.frames] == list(range(12))
        assert clip.duration == 1.0


def test_decode_gif_from_pillow() -> None:
    frames = index_frames(10)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    at_10 = decode_clip(buffer.getvalue(), 10, max_frames=100, max_seconds=10)
    assert [index_of(image) for image in at_10.frames] == list(range(10))
    assert at_10.duration == pytest.approx(1.0) and at_10.source_fps == pytest.approx(10)
    at_5 = decode_clip(buffer.getvalue(), 5, max_frames=100, max_seconds=10)
    assert [index_of(image) for image in at_5.frames] == [0, 2, 4, 6, 8]


def test_decode_animated_webp() -> None:
    # ffmpeg's WebP decoder refuses animated WebP; Pillow reads it
    frames = index_frames(6)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    clip = decode_clip(buffer.getvalue(), 20, max_frames=100, max_seconds=10)
    assert [index_of(image) for image in clip.frames] == [i // 2 for i in range(12)]
    assert clip.duration == pytest.approx(0.6) and clip.source_fps == pytest.approx(10)


def _no_decoding(frames: object) -> object:
    raise AssertionError("a frame was decoded before the header was checked")


def test_refuses_a_clip_too_long_before_decoding(clip_24fps: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "_decoded", _no_decoding)
    with pytest.raises(ClipError) as caught:
        decode_clip(clip_24fps, 12, max_frames=100, max_seconds=1.5)
    assert str(caught.value) == "the clip is 2.0 s; the limit is 1.5 s"
    assert isinstance(caught.value, EaselError)


def test_refuses_too_many_frames_before_decoding(clip_24fps: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "_decoded", _no_decoding)
    with pytest.raises(ClipError) as caught:
        decode_clip(clip_24fps, 24, max_frames=40, max_seconds=10)
    assert str(caught.value) == (
        "the clip is 2.0 s at 24 fps = 48 frames; the limit is 40 ([limits] max_frames)"
        " — ask a lower --fps or send a shorter clip"
    )
    monkeypatch.undo()
    # the same clip at a rate that fits is fine
    assert len(decode_clip(clip_24fps, 12, max_frames=40, max_seconds=10).frames) == 24


def test_refuses_while_decoding_when_the_header_has_no_length() -> None:
    # written to a pipe, WebM has no duration in its header: the limits apply as frames arrive
    data = make_clip(index_frames(48), fmt="webm", codec="libvpx-vp9", seekable=False)
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is None
    with pytest.raises(ClipError, match=r"^the clip is over 1\.04 s; the limit is 1 s$"):
        decode_clip(data, 12, max_frames=100, max_seconds=1)
    with pytest.raises(ClipError) as caught:
        decode_clip(data, 24, max_frames=30, max_seconds=10)
    assert str(caught.value) == (
        "the clip is over 1.2 s at 24 fps = more than 30 frames; the limit is 30 ([limits] max_frames)"
        " — ask a lower --fps or send a shorter clip"
    )
    assert len(decode_clip(data, 24, max_frames=48, max_seconds=2).frames) == 48


def test_refuses_a_clip_too_big_per_side(clip_24fps: bytes) -> None:
    with pytest.raises(ClipError, match=r"^the clip is 64x48; the limit is 32 per side$"):
        decode_clip(clip_24fps, 12, max_frames=100, max_seconds=10, max_side=32)
    assert len(decode_clip(clip_24fps, 12, max_frames=100, max_seconds=10, max_side=64).frames) == 24


def test_refuses_audio_only(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match=r"^the clip has no video in it$"):
        decode_clip(wav_bytes(), 12, max_frames=100, max_seconds=10)
    path = tmp_path / "voice note.wav"
    path.write_bytes(wav_bytes())
    with pytest.raises(ClipError, match=r"^'voice note\.wav' has no video in it$"):
        decode_clip(path, 12, max_frames=100, max_seconds=10)


@pytest.mark.parametrize(
    "data",
    [np.random.default_rng(0).bytes(5000), b"", b"RIFF\x10\x00\x00\x00WEBPVP8 junk"],
    ids=["random", "empty", "broken-webp"],
)
def test_refuses_unreadable_data_in_one_line(data: bytes) -> None:
    with pytest.raises(ClipError) as caught:
        decode_clip(data, 12, max_frames=100, max_seconds=10)
    message = str(caught.value)
    assert message.startswith("could not read the clip: ") and "\n" not in message and "Errno" not in message


def test_refuses_a_truncated_clip(clip_24fps: bytes) -> None:
    with pytest.raises(ClipError, match="^could not read the clip: "):
        decode_clip(clip_24fps[: len(clip_24fps) // 2], 12, max_frames=100, max_seconds=10)


def test_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match=r"^could not read the clip: No such file or directory$"):
        decode_clip(tmp_path / "gone.mp4", 12, max_frames=100, max_seconds=10)


@pytest.mark.parametrize("fps", [0, -3, float("nan")])
def test_refuses_a_rate_that_is_not_above_zero(clip_24fps: bytes, fps: float) -> None:
    with pytest.raises(ClipError, match="^fps must be above 0"):
        decode_clip(clip_24fps, fps, max_frames=100, max_seconds=10)
