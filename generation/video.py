"""Frames to video and back: MP4, GIF and WebP for an animation, fitting it under a chat's upload limit,
and users' clips decoded into frames at the rate a job asks for."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np
from av.stream import Disposition
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from PIL import Image

from storage.errors import EaselError

FIT_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)  # sizes fit_video tries, largest first
MIN_BITRATE = 1000  # bit/s; x264 counts in kbit/s and refuses 0
CONTAINER_HEADROOM = 0.9  # share of an upload limit given to the video stream; the rest is for the MP4 boxes

# Demuxers a clip may be read with. Naming them keeps ffmpeg from treating an upload as a playlist (HLS,
# concat) that would make it open other files or URLs.
_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,gif,apng,avi,mpegts,flv,ogg,mp3,wav,flac,aac"
# Demuxers whose stated length is the one written, not a guess from the bitrate (AVI and FLV written to a pipe
# guess, and a guess must not refuse a clip); others are measured as they are decoded.
_STATED_LENGTHS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
_KINDS_READ = "mp4, webm, mov, mkv, avi, gif, webp"
# Containers store times rounded to their tick (WebM: 1 ms), so a frame meant for 1/24 s may say 0.042 s;
# times this close count as equal when choosing the frame on screen.
_TOLERANCE = Fraction(1, 1000)
_GIF_MIN_DELAY_MS = 20  # browsers play shorter GIF delays as 100 ms


class ClipError(EaselError):
    """A clip a user sent cannot be used; the text says why in one line."""


@dataclass(frozen=True)
class Fitted:
    """What to upload for an animation: the file's name, its bytes, and what was done to make it fit."""

    name: str
    data: bytes
    format: str  # "mp4" | "gif" | "webp"
    note: str | None  # None when the file was sent as asked; else e.g. "re-encoded at 1.1 Mbit/s to fit 10 MiB"


@dataclass(frozen=True)
class Clip:
    """A user's clip as RGB frames resampled to the asked rate."""

    frames: tuple[Image.Image, ...]
    fps: float  # the output rate
    source_fps: float
    duration: float  # seconds


# --- encoding ------------------------------------------------------------------------------------------------


def _rate(fps: float) -> Fraction:
    """The frame rate as a fraction a container can store: 7.5 is 15/2, the float 30000/1001 is 30000/1001."""
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be above 0, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size frames of `size` have after resizing by `scale`."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be above 0, got {scale!r}")
    width, height = size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _checked_size(frames: Sequence[Image.Image]) -> tuple[int, int]:
    """The common size of the frames; a mix of sizes or no frames at all is a caller's bug."""
    if not frames:
        raise ValueError("a video needs at least one frame")
    size = frames[0].size
    for index, frame in enumerate(frames):
        if frame.size != size:
            raise ValueError(f"frame {index} is {frame.size[0]}x{frame.size[1]}, frame 0 is {size[0]}x{size[1]}")
    return size


def _rgb(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The frame in RGB at `size`, resized with Lanczos when the size differs."""
    image = frame if frame.mode == "RGB" else frame.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _even(image: Image.Image) -> Image.Image:
    """The image grown to even sides by repeating its last row/column: yuv420p halves both, and nothing is cut."""
    width, height = image.size
    if width % 2 == 0 and height % 2 == 0:
        return image
    pixels = np.asarray(image)
    return Image.fromarray(np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge"))


def encode_mp4(
    frames: Sequence[Image.Image], fps: float, *, crf: int = 18, bitrate: int | None = None, scale: float = 1.0
) -> bytes:
    """H.264 (yuv420p, BT.709) in an MP4 whose index comes first; the same frames always give the same bytes."""
    rate = _rate(fps)
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be 0–51, got {crf}")
    if bitrate is not None and bitrate < MIN_BITRATE:
        raise ValueError(f"bitrate must be at least {MIN_BITRATE} bit/s, got {bitrate}")
    size = _scaled_size(_checked_size(frames), scale)
    width, height = size[0] + size[0] % 2, size[1] + size[1] % 2
    # One thread: x264's output depends on its thread count, so a fixed count gives the same bytes everywhere.
    # No macroblock tree: with it, x264 (core 165, seen on an AVX-512 CPU; fine with asm off) gave different
    # bytes for the same small frames (under 256 px wide) up to half the time. It costs 20-25% in size at a crf.
    options = {"preset": "medium", "threads": "1", "x264-params": "mbtree=0"}
    if bitrate is None:
        options["crf"] = str(crf)
    else:
        # A one-second buffer keeps the average near the target, which is what fits a file under a limit.
        options.update(maxrate=str(bitrate), bufsize=str(bitrate))
    # faststart rewrites the file to move the index first, which ffmpeg does by reopening it by name: a real file.
    with tempfile.TemporaryDirectory(prefix="easel-video-") as folder:
        path = os.path.join(folder, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            context = stream.codec_context
            context.time_base = 1 / rate
            if bitrate is not None:
                context.bit_rate = bitrate
            # Tagged BT.709: players assume it for untagged video, so RGB converted as BT.601 would shift colours.
            context.colorspace, context.color_range = Colorspace.ITU709, ColorRange.MPEG
            context.color_primaries, context.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_image(_even(_rgb(image, size))).reformat(
                    format="yuv420p",
                    dst_colorspace=Colorspace.ITU709,
                    dst_color_range=ColorRange.MPEG,
                    dst_color_primaries=ColorPrimaries.BT709,
                    dst_color_trc=ColorTrc.BT709,
                )
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as file:
            return file.read()


def _delays(count: int, fps: float, unit: int) -> list[int]:
    """Per-frame delays in ms, multiples of `unit`, whose running sum stays within unit/2 of k*1000/fps.

    GIF counts in centiseconds, so 12 fps cannot be 83 ms a frame; 80, 90, 80, … keeps the clip's length."""
    step = Fraction(1000) / _rate(fps)
    ends = [round((k + 1) * step / unit) * unit for k in range(count)]
    return [end - start for start, end in zip([0, *ends[:-1]], ends)]


def _paletted(image: Image.Image) -> Image.Image:
    """The picture in 256 colours of its own, for GIF.

    The palette comes from a copy reduced to about 128 px: median cut over a full 512x512 frame takes Pillow
    0.17 s, over the small copy a tenth of that, and the colours it picks are as good."""
    palette = image.reduce(max(1, max(image.size) // 128)).quantize(256, method=Image.Quantize.MEDIANCUT)
    return image.quantize(palette=palette, dither=Image.Dither.NONE)


def _animated(
    frames: Sequence[Image.Image], scale: float, prepare: Callable[[Image.Image], Image.Image], **save: object
) -> bytes:
    """The frames saved as one looping animation with Pillow's writer named in `save`."""
    size = _scaled_size(_checked_size(frames), scale)
    images = [prepare(_rgb(frame, size)) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, save_all=True, append_images=images[1:], loop=0, **save)
    return buffer.getvalue()


def encode_gif(frames: Sequence[Image.Image], fps: float, *, scale: float = 1.0) -> bytes:
    """An animated GIF that loops forever, its delays rounded to GIF's centiseconds without drifting."""
    delays = [max(delay, _GIF_MIN_DELAY_MS) for delay in _delays(len(frames), fps, 10)]
    return _animated(frames, scale, _paletted, format="GIF", duration=delays)


def encode_webp(frames: Sequence[Image.Image], fps: float, *, scale: float = 1.0, quality: int = 80) -> bytes:
    """A lossy animated WebP that loops forever, each frame about 1000/fps ms (83, 84, 83, … ms at 12 fps)."""
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be 0–100, got {quality}")
    delays = _delays(len(frames), fps, 1)
    return _animated(frames, scale, lambda image: image, format="WEBP", duration=delays, quality=quality)


# --- fitting an upload limit -----------------------------------------------------------------------------------


def size_label(size: int) -> str:
    """A byte count as people write upload limits: 10*2**20 is "10 MiB", 50_000_000 is "50 MB"."""
    units = ((2**30, "GiB"), (10**9, "GB"), (2**20, "MiB"), (10**6, "MB"), (2**10, "KiB"), (10**3, "kB"))
    for unit, name in units:
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    for unit, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if size >= unit:
            return f"{size / unit:.1f} {name}"
    return f"{size} bytes"


def _bitrate_label(bitrate: int) -> str:
    """A bitrate in the unit people read: "1.1 Mbit/s", "350 kbit/s"."""
    if bitrate >= 1_000_000:
        return f"{bitrate / 1_000_000:.1f} Mbit/s"
    if bitrate >= 1_000:
        return f"{round(bitrate / 1_000)} kbit/s"
    return f"{bitrate} bit/s"


def _mp4_bitrate(limit: int, count: int, rate: Fraction) -> int:
    """The H.264 bitrate whose stream, with the MP4's index, should come in under `limit` bytes."""
    index = 1024 + 24 * count  # the moov box: about 1 KiB plus its per-frame tables
    budget = limit * CONTAINER_HEADROOM - index
    return max(0, int(budget * 8 * rate / max(count, 1)))


def fit_video(
    mp4: bytes, frames: Sequence[Image.Image], fps: float, limit: int, *, name: str, prefer: str = "mp4"
) -> Fitted | None:
    """The first file that fits under `limit` bytes: the MP4 as is, re-encoded smaller, then WebP, then GIF.

    With prefer "gif" or "webp" that format at full size is tried first (note None when it fits), then the MP4
    chain. None when nothing fits; each try is a full encode, so a hopeless limit costs up to 17 of them."""
    if prefer not in ("mp4", "gif", "webp"):
        raise ValueError(f'prefer must be "mp4", "gif" or "webp", got {prefer!r}')
    rate = _rate(fps)
    limit_text = size_label(limit)
    size = _checked_size(frames) if frames else (0, 0)
    shown = {"gif": "GIF", "webp": "WebP", "mp4": "MP4"}
    bitrate = _mp4_bitrate(limit, len(frames), rate)

    def animated(kind: str, scale: float) -> Fitted:
        encode = encode_gif if kind == "gif" else encode_webp
        data = encode(frames, fps, scale=scale)
        if kind == prefer and scale == 1.0:
            note = None
        elif scale == 1.0:
            note = f"sent as {shown[kind]} to fit {limit_text}"
        else:
            width, height = _scaled_size(size, scale)
            note = f"sent as {shown[kind]} scaled to {width}x{height} to fit {limit_text}"
        return Fitted(f"{name}.{kind}", data, kind, note)

    def original() -> Fitted:
        note = None if prefer == "mp4" else f"sent as MP4: the {shown[prefer]} is over {limit_text}"
        return Fitted(f"{name}.mp4", mp4, "mp4", note)

    def reencoded(scale: float) -> Fitted:
        nonlocal bitrate
        data = encode_mp4(frames, fps, bitrate=bitrate, scale=scale)
        if scale == 1.0 and len(data) > limit:
            # x264 overshoots a target it has few frames to reach; aim lower by the miss, once, and keep that
            # rate for the smaller sizes.
            corrected = int(bitrate * limit * CONTAINER_HEADROOM / len(data))
            if corrected >= MIN_BITRATE:
                bitrate = corrected
                data = encode_mp4(frames, fps, bitrate=bitrate, scale=scale)
        if scale == 1.0:
            note = f"re-encoded at {_bitrate_label(bitrate)} to fit {limit_text}"
        else:
            width, height = (side + side % 2 for side in _scaled_size(size, scale))
            note = f"scaled to {width}x{height} at {_bitrate_label(bitrate)} to fit {limit_text}"
        return Fitted(f"{name}.mp4", data, "mp4", note)

    tries: list[Callable[[], Fitted]] = []
    if prefer != "mp4":
        tries.append(lambda: animated(prefer, 1.0))
    if mp4:
        tries.append(original)
    if frames and bitrate >= MIN_BITRATE:
        tries += [lambda scale=scale: reencoded(scale) for scale in FIT_SCALES]
    if frames:
        for kind in ("webp", "gif"):
            tries += [
                lambda kind=kind, scale=scale: animated(kind, scale)
                for scale in FIT_SCALES
                if (kind, scale) != (prefer, 1.0)
            ]
    for attempt in tries:
        fitted = attempt()
        if len(fitted.data) <= limit:
            return fitted
    return None


# --- decoding ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """What a clip's container says before any frame is decoded (0 and None where it does not say)."""

    width: int
    height: int
    duration: Fraction | None
    rate: Fraction | None


@dataclass(frozen=True)
class _Frame:
    """One decoded source frame: when it starts (seconds from the first frame), how long it lasts, its picture."""

    start: Fraction
    length: Fraction | None
    width: int
    height: int
    image: Callable[[], Image.Image]


def _reason(exc: BaseException) -> str:
    """A short reason from an ffmpeg or OS error, without errno numbers, paths or tracebacks."""
    text = getattr(exc, "strerror", None) or next(iter(str(exc).splitlines()), "")
    return str(text).strip().rstrip(".") or type(exc).__name__


def _unreadable() -> ClipError:
    return ClipError(f"could not read the clip: it is damaged or not a kind easel reads ({_KINDS_READ})")


def _matroska_duration(text: str) -> Fraction | None:
    """The per-stream DURATION tag ffmpeg writes into Matroska/WebM, "00:00:02.000000000", in seconds."""
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
    except ValueError:
        return None


def _rgb_picture(frame: av.VideoFrame) -> Image.Image:
    """A decoded frame as an RGB picture, honouring the colour matrix its stream is tagged with."""
    return frame.to_image().convert("RGB")


def _av_frames(file: io.BufferedIOBase, name: str, stack: contextlib.ExitStack) -> tuple[_Header, Iterator[_Frame]]:
    """The header and frames of the first video stream PyAV finds in `file`."""
    try:
        container = av.open(file, mode="r", options={"format_whitelist": _DEMUXERS})
    except (av.error.InvalidDataError, av.error.ArgumentError):
        raise _unreadable() from None
    except av.FFmpegError as exc:
        raise ClipError(f"could not read the clip: {_reason(exc)}") from None
    stack.callback(container.close)
    videos = [stream for stream in container.streams.video if not stream.disposition & Disposition.attached_pic]
    if not videos:
        raise ClipError(f"{name} has no video in it")
    stream = videos[0]
    time_base = stream.time_base or Fraction(1, 1000)
    duration: Fraction | None = None
    if container.format.name in _STATED_LENGTHS:
        if stream.duration:
            duration = stream.duration * time_base
        elif "DURATION" in stream.metadata:
            duration = _matroska_duration(stream.metadata["DURATION"])
        elif container.duration and len(container.streams) == 1:  # with audio it may be the audio's length
            duration = Fraction(container.duration, av.time_base)
    rate = stream.average_rate or stream.guessed_rate or None
    context = stream.codec_context
    header = _Header(context.width or 0, context.height or 0, duration, Fraction(rate) if rate else None)

    def frames() -> Iterator[_Frame]:
        first: Fraction | None = None
        following = Fraction(0)  # where a frame without a timestamp starts: after the one before it
        for frame in container.decode(stream):
            at = frame.pts * time_base if frame.pts is not None else following
            first = at if first is None else first
            length = frame.duration * time_base if frame.duration else None
            following = at + (length or 0)
            # converted to RGB only if an output frame shows it: most frames of a 60 fps clip asked at 12 are not
            yield _Frame(at - first, length, frame.width, frame.height, functools.partial(_rgb_picture, frame))

    return header, frames()


def _webp_frames(file: io.BufferedIOBase) -> tuple[_Header, Iterator[_Frame]]:
    """The header and frames of a WebP, read with Pillow: ffmpeg's WebP decoder refuses animated ones."""
    try:
        picture = Image.open(file, formats=["WEBP"])
    except (OSError, SyntaxError, Image.DecompressionBombError):
        raise _unreadable() from None
    width, height = picture.size
    header = _Header(width, height, None, None)

    def frames() -> Iterator[_Frame]:
        start = Fraction(0)
        for index in range(getattr(picture, "n_frames", 1)):
            picture.seek(index)
            picture.load()  # the frame's duration is known only once it is decoded
            image = picture.convert("RGB")
            delay = picture.info.get("duration")
            length = Fraction(delay, 1000) if delay else None
            yield _Frame(start, length, width, height, lambda image=image: image)
            start += length or 0

    return header, frames()


def _open_frames(
    source: bytes | str | os.PathLike[str], stack: contextlib.ExitStack
) -> tuple[_Header, Iterator[_Frame]]:
    """The header and frames of a clip given as bytes or a path, refusing what cannot be read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        file: io.BufferedIOBase = io.BytesIO(bytes(source))
        name = "the clip"
    else:
        name = f"'{os.path.basename(os.fspath(source))}'"
        try:
            # Opened here rather than by ffmpeg, which would read a path like "http://…" as a URL.
            file = stack.enter_context(open(source, "rb"))
        except OSError as exc:
            raise ClipError(f"could not read the clip: {_reason(exc)}") from None
    head = file.read(12)
    file.seek(0)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_frames(file)
    return _av_frames(file, name, stack)


def _decoded(frames: Iterator[_Frame]) -> Iterator[_Frame]:
    """The frames, with ffmpeg's errors while decoding turned into a one-line ClipError."""
    try:
        yield from frames
    except av.FFmpegError as exc:
        raise ClipError(f"could not read the clip: {_reason(exc)}") from None
    except (OSError, SyntaxError) as exc:  # Pillow's errors for a damaged WebP
        raise ClipError(f"could not read the clip: {_reason(exc)}") from None


def _seconds(value: Fraction | float, limit: float) -> str:
    """A duration with enough decimals that it shows as over `limit` ("10.04", not "10.0", against 10)."""
    for digits in (1, 2, 3):
        text = f"{float(value):.{digits}f}"
        if float(text) > limit:
            return text
    return f"{float(value):.3f}"


def _frames_in(duration: Fraction, fps: Fraction) -> int:
    """How many output frames k/fps fall before the clip ends (times within the tolerance of the end do not)."""
    return max(1, math.ceil((duration - _TOLERANCE) * fps))


def _too_long(seconds: str, max_seconds: float) -> ClipError:
    return ClipError(f"the clip is {seconds} s; the limit is {max_seconds:g} s")


def _too_many(duration: str, fps: float, count: str, max_frames: int) -> ClipError:
    return ClipError(
        f"the clip is {duration} s at {fps:g} fps = {count} frames; the limit is {max_frames} ([limits] max_frames)"
        " — ask a lower --fps or send a shorter clip"
    )


def decode_clip(
    source: bytes | str | os.PathLike[str],
    fps: float,
    *,
    max_frames: int,
    max_seconds: float,
    max_side: int | None = None,
) -> Clip:
    """A clip's first video stream as RGB frames at `fps`; refuses one too long, too big or unreadable.

    Output frame k shows the source frame on screen at k/fps. Limits are checked against the container's header
    before decoding and again as frames arrive, so an oversized clip is never held in memory."""
    try:
        rate = Fraction(fps)
    except (TypeError, ValueError, OverflowError):  # not a number, NaN or infinite
        rate = Fraction(0)
    if rate <= 0:
        raise ClipError(f"fps must be above 0, got {fps}")
    with contextlib.ExitStack() as stack:
        header, source_frames = _open_frames(source, stack)

        def check_side(width: int, height: int) -> None:
            if max_side is not None and max(width, height) > max_side:
                raise ClipError(f"the clip is {width}x{height}; the limit is {max_side} per side")

        check_side(header.width, header.height)
        if header.duration is not None:
            if header.duration > max_seconds + _TOLERANCE:
                raise _too_long(_seconds(header.duration, max_seconds), max_seconds)
            count = _frames_in(header.duration, rate)
            if count > max_frames:
                raise _too_many(f"{float(header.duration):.1f}", fps, str(count), max_frames)

        out: list[Image.Image] = []
        current: _Frame | None = None
        current_image: Image.Image | None = None

        def show_current_until(count: int) -> None:
            nonlocal current_image
            assert current is not None
            while len(out) < count:
                if len(out) >= max_frames:
                    reached = Fraction(max_frames, 1) / rate
                    raise _too_many(f"over {float(reached):.1f}", fps, f"more than {max_frames}", max_frames)
                if current_image is None:
                    current_image = current.image()
                    out.append(current_image)
                else:  # a repeated source frame gets its own copy, so editing one output frame leaves the others
                    out.append(current_image.copy())

        seen = 0
        for frame in _decoded(source_frames):
            check_side(frame.width, frame.height)
            if current is not None and frame.start < current.start:
                continue  # a timestamp going backwards: keep the timeline moving forward
            if frame.start > max_seconds + _TOLERANCE:
                raise _too_long(f"over {_seconds(frame.start, max_seconds)}", max_seconds)
            if current is not None:
                # Frame k is still the current one's while k/fps is clearly before the new frame starts.
                show_current_until(max(len(out), math.ceil((frame.start - _TOLERANCE) * rate)))
            current, current_image = frame, None
            seen += 1
        if current is None:
            raise ClipError("could not read the clip: it has no frames")
        if current.length:
            duration = current.start + current.length
        else:  # the last frame lasts as long as the others do on average
            average = header.rate or (Fraction(seen - 1) / current.start if current.start else rate)
            duration = current.start + 1 / average
        source_rate = _average_rate(header.rate, seen, duration)
        if duration > max_seconds + _TOLERANCE:
            raise _too_long(_seconds(duration, max_seconds), max_seconds)
        count = _frames_in(duration, rate)
        if count > max_frames:
            raise _too_many(f"{float(duration):.1f}", fps, str(count), max_frames)
        show_current_until(count)
    return Clip(tuple(out), float(fps), float(source_rate), float(duration))


def _average_rate(stated: Fraction | None, count: int, duration: Fraction) -> Fraction:
    """Frames per second: the container's figure (24 where WebM's rounded times say 24.01) unless the timeline
    disagrees by over 1% (ffmpeg guesses a GIF's rate from its first delays)."""
    measured = count / duration if duration > 0 else None
    if stated and (measured is None or abs(stated - measured) <= stated / 100):
        return stated
    return measured or stated or Fraction(0)


def read_video(data: bytes) -> tuple[list[Image.Image], float]:
    """Every frame of a video (any kind decode_clip reads) as RGB, and its average frame rate."""
    with contextlib.ExitStack() as stack:
        header, source_frames = _open_frames(data, stack)
        images: list[Image.Image] = []
        end = Fraction(0)
        for frame in _decoded(source_frames):
            images.append(frame.image())
            end = frame.start + (frame.length or 0)
    if not images:
        raise ClipError("could not read the clip: it has no frames")
    return images, float(_average_rate(header.rate, len(images), end))
