"""/animate: a strength sweep, a zoom loop or a clip redrawn frame by frame, delivered as a video."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from bot.commands import action, drawing
from bot.commands.action import Source
from bot.commands.grammar import DRAWING_OPTIONS, Option, Settings, number, register_option, settings, \
    size_for_aspect, split_options, switch, typed_values, whole
from bot.commands.imagine import _clamped_aspect, _too_few_steps
from bot.commands.registry import Command, CommandSpec, Param, only_options_of, register
from bot.commands.rerun import job_number, positive
from bot.commands.sketch import ANIMATION_MODES
from bot.config import DefaultsConfig
from bot.limits import CommandError, LimitProblem, LimitsConfig, register_rules
from storage.infotext import plain_number
from storage.params import AnimateParams, DiffusionParams
from storage.params.animate import FPS, FRAMES, ROTATE, SWEEP_END, ZOOM

if TYPE_CHECKING:
    from PIL import Image

    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

SWEEP_FRAMES, ZOOM_FRAMES = 12, 24  # without --frames
WORK_SIDE = 512  # the work budget counts steps at 512×512


def _shift(text: str) -> tuple[float, float]:
    match = re.fullmatch(r"\s*(-?[0-9.]+)\s*,\s*(-?[0-9.]+)\s*", text)
    if match is None:
        raise CommandError(f"shift must look like X,Y in pixels per frame (e.g. 4,0 or -2,3), got {text[:24]!r}")
    try:
        return float(match[1]), float(match[2])
    except ValueError:
        raise CommandError(f"shift must look like X,Y in pixels per frame, got {text[:24]!r}") from None


for _option in (
    Option("frames", (), whole("frames"), "/animate: how many frames (a clip: as many as it has at --fps)",
           "frames", FRAMES, value="int"),
    Option("fps", (), number("fps"), f"/animate: frames per second of the video, {FPS.text()} (default 12)", "fps",
           FPS, value="float"),
    Option("from", ("strength_from",), number("from"), "/animate sweep: the first frame's strength (default 0.2)",
           "strength_from", SWEEP_END, value="float"),
    Option("to", ("strength_to",), number("to"), "/animate sweep: the last frame's strength (default 1)",
           "strength_to", SWEEP_END, value="float"),
    Option("zoom", (), number("zoom"), f"/animate zoom: enlargement per frame, {ZOOM.text()} (e.g. 1.04)", "zoom",
           ZOOM, value="float"),
    Option("rotate", (), number("rotate"), f"/animate zoom: degrees turned per frame, {ROTATE.text()}", "rotate",
           ROTATE, value="float"),
    Option("shift", (), _shift, "/animate zoom: pixels moved per frame as X,Y (e.g. 4,0)"),
    Option("reverse", (), switch("reverse"), "/animate zoom: play the frames backwards (zoom out)", "reverse",
           flag=True),
    Option("fixed-seed", ("fixed_seed",), switch("fixed-seed"), "/animate zoom: one seed for every frame "
           "(default: seed + frame number)", "fixed_seed", flag=True),
    Option("colour", ("color",), switch("colour"), "/animate zoom: match every frame's colours to the first "
           "(default yes; --colour no turns it off)", "colour", flag=True),
):
    register_option(_option)

ANIMATE_OPTIONS = ("mode", "frames", "fps", "strength", "from", "to", "zoom", "rotate", "shift", "reverse",
                   "fixed-seed", "colour", "control")


@dataclass(frozen=True)
class Animate(Command):
    name = "animate"
    queues_job = True
    prompt: str
    settings: Settings
    mode: str | None = None
    source: Source | None = None  # #N [K]: start from image K of job N


def parse(words: list[str], defaults: DefaultsConfig) -> Animate:
    free, values = split_options(words, loose_keys=True)
    return _animate(free, values, defaults)


def from_options(values: Mapping[str, object], defaults: DefaultsConfig) -> Animate:
    """/animate from a slash command: the prompt (flags and "#N K" typed into it count too) and typed options."""
    values = dict(values)
    free, inline = split_options(str(values.pop("prompt", None) or "").split(), loose_keys=True)
    typed = typed_values(values)
    for name in inline:
        if name in typed:
            raise CommandError(f"{name} is given twice, as an option and in the prompt; keep one")
    return _animate(free, {**inline, **typed}, defaults)


def _animate(free: list[str], values: dict[str, object], defaults: DefaultsConfig) -> Animate:
    only_options_of(SPEC, values)
    source = None
    if free and re.fullmatch(r"#\S+", free[0]):  # "#12 2 a lighthouse": image 2 of job 12, then the prompt
        job = job_number(free.pop(0)[1:])
        image = positive("image number", free.pop(0)) if free and free[0].isdigit() else 1
        source = Source(job, image)
    mode = values.pop("mode", None)
    if mode is not None and mode not in ANIMATION_MODES:
        raise CommandError(f"/animate's mode is sweep, zoom or video, got {mode!r} (that is /sketch's)")
    given = settings({name: value for name, value in values.items() if name != "shift"}, defaults)
    if "shift" in values:
        given = Settings(**given.given(), shift_x=values["shift"][0], shift_y=values["shift"][1])
    return Animate(" ".join(free).strip(), given, mode, source)


async def run(service: Service, owner: Owner, command: Animate, attachments: Sequence[Attachment]) -> Reply:
    if len(attachments) > 1:
        raise CommandError("attach one picture or one clip at most")
    given, prompt = command.settings, command.prompt
    clip = picture = parent = None
    if attachments:
        clip, picture = await _read_attachment(service, attachments[0], command.mode)
    elif command.source is not None:
        parent, _, picture = await action.source_picture(service, owner, command.source, "animate")
        if not prompt and isinstance(parent.params, DiffusionParams):
            prompt = parent.params.prompt  # the source's own prompt, as /vary redraws with it
    mode = command.mode or ("video" if clip is not None else "sweep" if picture is not None else "zoom")
    if not prompt:
        raise CommandError("the prompt is empty; describe what to draw, e.g. /animate a lighthouse --mode zoom")
    _check_options(mode, given, picture is not None or clip is not None)
    model = service.model(given.get("model"))
    defaults = service.config.defaults
    base = drawing.fresh(prompt, defaults, service.random_seed())
    if mode == "video":
        if clip is None:
            raise CommandError("--mode video redraws a clip: attach one (console: --video PATH)")
        fps = float(given.get("fps") or AnimateParams.fps)
        frames = await _decode(service, clip, fps)
        width, height = _size(frames[0].size, given, model, defaults)
        params = given.apply(AnimateParams(**{**base, "width": width, "height": height}, mode="video",
                                           frames=len(frames), clip_sha256=hashlib.sha256(clip).hexdigest()))
        service.check(params)
        shown = await asyncio.to_thread(_resized, frames, (width, height))
        reply = await service.submit_with_inputs(owner, shown, lambda sha: params.replace(frame_inputs=tuple(sha)))
        return _noted(reply, f"{len(frames)} frames of the clip at {plain_number(fps)} fps")
    if mode == "sweep" and picture is None:
        raise CommandError("--mode sweep turns a picture into the prompt: attach one, or name a result as #N [K]")
    frames = SWEEP_FRAMES if mode == "sweep" else ZOOM_FRAMES
    frames = min(frames, service.config.limits.max_frames)
    size = (defaults.width, defaults.height) if picture is None else None
    width, height = _size(picture.size if picture is not None else size, given, model, defaults, fresh=picture is None)
    params = given.apply(AnimateParams(**{**base, "width": width, "height": height}, mode=mode, frames=frames,
                                       zoom=1.04 if mode == "zoom" else 1.0))
    if picture is None:
        params = drawing.sized_for(model, params, given)
        service.check(params)
        return await service.submit(owner, params)
    service.check(params)
    parent_id = parent.id if parent is not None else None
    return await service.submit_with_inputs(owner, (picture,), lambda sha: params.replace(input_sha256=sha[0]),
                                            parent_id=parent_id)


def _check_options(mode: str, given: Settings, has_input: bool) -> None:
    """Refuse an option the mode does not use, in one line."""
    used = {"sweep": {"strength_from", "strength_to"},
            "zoom": {"strength", "zoom", "rotate", "shift_x", "shift_y", "reverse", "fixed_seed", "colour"},
            "video": {"strength", "control_scale"}}
    for name, modes in (("strength_from", "sweep"), ("strength_to", "sweep"), ("strength", "zoom and video"),
                        ("zoom", "zoom"), ("rotate", "zoom"), ("shift_x", "zoom"), ("reverse", "zoom"),
                        ("fixed_seed", "zoom"), ("colour", "zoom"), ("control_scale", "video")):
        if given.get(name) is not None and name not in used[mode]:
            option = {"strength_from": "from", "strength_to": "to", "shift_x": "shift", "fixed_seed": "fixed-seed",
                      "control_scale": "control"}.get(name, name)
            raise CommandError(f"--{option} is for --mode {modes}; this is a {mode}")
    if mode == "video" and given.get("frames") is not None:
        raise CommandError("a clip has as many frames as it has at --fps; leave out --frames (or ask a lower --fps)")


def _size(size: tuple[int, int], given: Settings, model, defaults: DefaultsConfig, fresh: bool = False):
    """A picture's or a clip's aspect at the default area (as /imagine --image sizes it), unless --size/--ar said."""
    if given.get("width") is not None:
        return given.get("width"), given.get("height")
    if fresh:
        return size
    return size_for_aspect(*_clamped_aspect(size), drawing.area(model, defaults))


def _resized(frames: list[Image.Image], size: tuple[int, int]) -> list[Image.Image]:
    """A clip's frames at the animation's size, as image→image would take them (kept smaller than the clip's)."""
    from PIL import Image

    return [frame if frame.size == size else frame.resize(size, Image.Resampling.LANCZOS) for frame in frames]


async def _read_attachment(service: Service, attachment: Attachment, mode: str | None):
    """(clip bytes, None) for a video, (None, picture) for an image."""
    from storage.uploads import BadImageError

    if mode != "video":
        try:
            return None, await service.decode(attachment)
        except BadImageError:
            if mode is not None:
                raise
    limit = service.config.limits.max_clip_bytes
    if len(attachment.data) > limit:
        raise CommandError(f"the clip is {len(attachment.data) / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB")
    return attachment.data, None


async def _decode(service: Service, clip: bytes, fps: float) -> list[Image.Image]:
    from generation.video import decode_clip

    limits = service.config.limits
    decoded = await asyncio.to_thread(decode_clip, clip, fps, max_frames=limits.max_frames,
                                      max_seconds=limits.max_clip_seconds, max_side=limits.max_side)
    return list(decoded.frames)


def _noted(reply: Reply, note: str) -> Reply:
    import dataclasses

    return dataclasses.replace(reply, text=f"{reply.text} · {note}")


def animate_problems(params, limits: LimitsConfig) -> list[LimitProblem]:
    """An animation's checks: a drawing's, at least one step at its lowest strength, and its work in all."""
    assert isinstance(params, AnimateParams)
    problems = drawing.drawing_problems(params, limits)
    if problems or not FRAMES.holds(params.frames, limits):
        return problems
    frames = [params.frame_params(k) for k in range(params.frames)]
    lowest = min((frame.strength for frame in frames if hasattr(frame, "strength")), default=None)
    if lowest is not None and lowest > 0 and int(params.steps * lowest) < 1:
        problems.append(LimitProblem("strength", _too_few_steps(params.steps, lowest, limits.max_steps)))
    scale = params.width * params.height / WORK_SIDE ** 2
    work = sum(frame.effective_steps for frame in frames) * scale
    if work > limits.max_animation_steps:
        problems.append(LimitProblem("frames", (
            f"this animation is {params.frames} frames of up to {params.effective_steps} steps at "
            f"{params.width}x{params.height}: {round(work):,} steps at {WORK_SIDE}x{WORK_SIDE}; the limit is "
            f"{limits.max_animation_steps:,} — fewer frames, fewer steps or a smaller size"), "max_animation_steps"))
    return problems


register_rules("animate", animate_problems)
SPEC = register(CommandSpec(
    name="animate",
    usage="/animate [#N [K]] <prompt> --mode sweep|zoom|video [--frames N] [--fps F] [--from F --to F] [--zoom F] "
          "[--rotate DEG] [--shift X,Y] [--strength F] [--reverse] [--fixed-seed] [--colour no] [--control F] — "
          "an animation as a video: a picture turning into the prompt (sweep), a zoom loop, or a clip redrawn "
          "(attach it; console: --video PATH)",
    summary="animate: /animate a lighthouse --mode zoom --frames 24",
    parse=parse, run=run, from_options=from_options,
    options=(*(name for name in DRAWING_OPTIONS if name != "n"), *ANIMATE_OPTIONS),
    params=(Param("prompt", "text", "what to draw; #N K first starts from image K of job N; flags work here too",
                  limit="max_prompt_chars"),),
    image="optional", image_help="a picture to start from (sweep, zoom) or a clip (video)",
    menus={"mode": ANIMATION_MODES},
))
