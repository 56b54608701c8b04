"""One command grammar for every frontend: text in, a typed Command or a CommandError out.

    /imagine <prompt> [--no TEXT] [--seed N] [--steps N] [--cfg F] [--ar W:H | --size WxH]
                      [--n N] [--strength F] [--scheduler NAME]      (key=value works too)
    /rerun [SEED | #JOB] [key=value …]
    /history [N]   /cancel [#JOB]   /queue   /help
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Callable, Mapping

from bot.config import DefaultsConfig
from bot.limits import MAX_SEED, PSI_RANGE, CommandError, LimitsConfig
from generation.schedulers import SCHEDULERS, scheduler_help
from storage.images import plain_number
from storage.records import JobParams


@dataclass(frozen=True)
class Settings:
    """Settings given on a command line; None means "not given" (use the default, or keep the old one)."""

    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    count: int | None = None
    strength: float | None = None
    scheduler: str | None = None
    mode: str | None = None  # /sketch only
    control_scale: float | None = None  # /sketch only
    psi: float | None = None  # /face only
    layers: str | None = None  # /face mix only

    def given(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def apply(self, params: JobParams) -> JobParams:
        """The params with every given setting replaced and every other one kept."""
        return params.replace(**self.given())


@dataclass(frozen=True)
class Imagine:
    prompt: str
    settings: Settings


@dataclass(frozen=True)
class Face:
    """A face of someone who does not exist: a seed, or two mixed, with moves along latent directions."""

    settings: Settings  # seed, psi, count, layers
    mix_seed: int | None = None
    edits: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Sketch:
    """A drawing (the attached image) → a picture that follows its lines."""

    prompt: str
    settings: Settings


@dataclass(frozen=True)
class Rerun:
    """Redraw a job: by id, by seed (your latest with it) or, with neither, your last job."""

    job_id: int | None
    seed: int | None
    settings: Settings


@dataclass(frozen=True)
class ShowHistory:
    """Your last `limit` jobs; with job_id, that one job's result, to be sent again."""

    limit: int
    job_id: int | None = None


@dataclass(frozen=True)
class Cancel:
    job_id: int | None


@dataclass(frozen=True)
class ShowQueue:
    pass


@dataclass(frozen=True)
class Help:
    pass


Command = Imagine | Sketch | Face | Rerun | ShowHistory | Cancel | ShowQueue | Help


# ---- values ------------------------------------------------------------------------------
def _int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise CommandError(f"{name} must be a whole number, got {_short(text)!r}") from None
    return parse


def _float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise CommandError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise CommandError(f"{name} must be a finite number, got {text!r}")
        return value
    return parse


def _pair(name: str, separator: str, example: str) -> Callable[[str], tuple[int, int]]:
    pattern = re.compile(rf"^\s*(\d+)\s*{re.escape(separator)}\s*(\d+)\s*$", re.IGNORECASE)

    def parse(text: str) -> tuple[int, int]:
        match = pattern.match(text)
        if not match:
            raise CommandError(f"{name} must look like {example}, got {text!r}")
        return int(match[1]), int(match[2])
    return parse


SKETCH_MODES = ("scribble", "img2img", "pix2pix")


def _mode(text: str) -> str:
    mode = text.lower()
    if mode not in SKETCH_MODES:
        raise CommandError(f"unknown mode {text!r}; choose one of: {', '.join(SKETCH_MODES)}")
    return mode


LAYER_NAMES = ("coarse", "middle", "fine")


def _layers(text: str) -> str:
    layers = text.lower()
    low, dash, high = layers.partition("-")
    if layers in LAYER_NAMES or (dash and low.isdigit() and high.isdigit() and int(low) <= int(high)):
        return layers
    raise CommandError(f"layers must be coarse, middle, fine or FROM-TO like 0-3, got {text!r}")


def _scheduler(text: str) -> str:
    name = text.lower().replace("-", "_").replace("+", "p")
    if name not in SCHEDULERS:
        raise CommandError(f"unknown scheduler {text!r}; choose one of: {scheduler_help()}")
    return name


@dataclass(frozen=True)
class Option:
    """One setting of /imagine and /rerun: its names, how its value is read, and a line of help."""

    name: str
    aliases: tuple[str, ...]
    parse: Callable[[str], object]
    help: str
    greedy: bool = False  # the value runs to the next option (a negative prompt has spaces)


OPTIONS: tuple[Option, ...] = (
    Option("no", ("negative",), str, "negative prompt: what to keep out of the picture", greedy=True),
    Option("seed", (), _int("seed"), f"0–{MAX_SEED}; the same seed and settings redraw the same picture"),
    Option("steps", (), _int("steps"), "denoising steps: a few dozen for drafts, hundreds for a final rerun"),
    Option("cfg", ("guidance",), _float("cfg"), "how strictly to follow the prompt (≈7 is a good start)"),
    Option("ar", ("aspect",), _pair("ar", ":", "16:9"), "aspect ratio at the default pixel count, e.g. 16:9"),
    Option("size", (), _pair("size", "x", "768x512"), "exact size WxH in pixels, multiples of 8"),
    Option("n", ("count",), _int("n"), "how many images (seeds s, s+1, …)"),
    Option("strength", (), _float("strength"), "image→image: just above 0 stays close to the input, 1 ignores it"),
    Option("scheduler", ("sampler",), _scheduler, f"one of {scheduler_help()}"),
    Option("mode", (), _mode, "/sketch: scribble (follow the lines), img2img (coloured drawings) or pix2pix"),
    Option("control", ("control_scale",), _float("control"), "/sketch: how strongly the drawing steers, 0–2"),
    Option("psi", ("truncation",), _float("psi"),
           f"/face: {PSI_RANGE[0]}–{PSI_RANGE[1]}; 0 = the average face, 1 = full variety (0.7 is usual)"),
    Option("layers", (), _layers, "/face mix: which styles come from the second seed: coarse, middle, fine or 0-3"),
)
_BY_NAME = {alias: option for option in OPTIONS for alias in (option.name, *option.aliases)}


def option(name: str) -> Option:
    """The option called `name` (or one of its aliases): a slash command takes its help from here."""
    return _BY_NAME[name]


# ---- parsing -----------------------------------------------------------------------------
# Phone keyboards turn "--" into an em dash (and some into an en dash): "—seed 42" means --seed 42.
_DASHES = ("\u2014", "\u2013")


def _option_token(token: str, loose_keys: bool) -> tuple[Option, str | None] | None:
    """If token starts an option, return it and any inline value ("--steps=30", "steps=30", "—steps 30")."""
    if token.startswith(_DASHES) and token[1:].partition("=")[0].lower() in _BY_NAME:
        token = "--" + token[1:]  # only before an option name: "a cat — on a mat" keeps its dash
    if token.startswith("--") and len(token) > 2:
        name, _, value = token[2:].partition("=")
        option = _BY_NAME.get(name.lower())
        if option is None:
            raise CommandError(f"unknown option --{name}; options are {', '.join('--' + o.name for o in OPTIONS)}")
        return option, (value if "=" in token else None)
    name, equals, value = token.partition("=")
    if equals and name:
        option = _BY_NAME.get(name.lower())
        if option is not None:
            return option, value
        if not loose_keys:
            raise CommandError(f"unknown setting {name!r}; settings are {', '.join(o.name for o in OPTIONS)}")
    return None


def _split_options(words: list[str], loose_keys: bool) -> tuple[list[str], dict[str, object]]:
    """Separate free words from options; with loose_keys, unknown key=value stays free text."""
    free: list[str] = []
    raw: dict[str, str] = {}
    index = 0
    while index < len(words):
        found = _option_token(words[index], loose_keys)
        index += 1
        if found is None:
            free.append(words[index - 1])
            continue
        option, value = found
        if option.name in raw:
            raise CommandError(f"{option.name} is given twice")
        parts = [] if value is None else [value]
        if option.greedy or value is None:
            while index < len(words) and (option.greedy or not parts) and _option_token(words[index], True) is None:
                parts.append(words[index])
                index += 1
        text = " ".join(part for part in parts if part).strip().strip("\"'")
        if not text:
            raise CommandError(f"--{option.name} needs a value: {option.help}")
        raw[option.name] = text
    return free, {name: _BY_NAME[name].parse(text) for name, text in raw.items()}


def _settings(values: dict[str, object], defaults: DefaultsConfig) -> Settings:
    if "ar" in values and "size" in values:
        raise CommandError("give either --ar or --size, not both")
    width = height = None
    if "size" in values:
        width, height = values["size"]
    elif "ar" in values:
        width, height = size_for_aspect(*values["ar"], defaults.width * defaults.height)
    return Settings(
        negative_prompt=values.get("no"),
        seed=values.get("seed"),
        steps=values.get("steps"),
        cfg=values.get("cfg"),
        width=width,
        height=height,
        count=values.get("n"),
        strength=values.get("strength"),
        scheduler=values.get("scheduler"),
        mode=values.get("mode"),
        control_scale=values.get("control"),
        psi=values.get("psi"),
        layers=values.get("layers"),
    )


def size_for_aspect(ratio_w: int, ratio_h: int, area: int) -> tuple[int, int]:
    """A width and height in multiples of 64 with about `area` pixels and the given aspect ratio."""
    if ratio_w <= 0 or ratio_h <= 0:
        raise CommandError(f"aspect ratio sides must be positive, got {ratio_w}:{ratio_h}")
    if max(ratio_w, ratio_h) > 4 * min(ratio_w, ratio_h):
        raise CommandError(f"aspect ratio must be between 1:4 and 4:1, got {ratio_w}:{ratio_h}")
    width = math.sqrt(area * ratio_w / ratio_h)
    height = area / width
    return max(64, round(width / 64) * 64), max(64, round(height / 64) * 64)


MAX_HISTORY = 50  # /history N lists at most this many: a chat message has room for so much
_COMMAND_NAMES = ("imagine", "sketch", "face", "rerun", "history", "cancel", "queue", "help", "start")


def parse(text: str, defaults: DefaultsConfig) -> Command:
    """Read one command line. Raises CommandError with a message meant for the person who typed it."""
    words = text.split()
    if not words:
        raise CommandError("type a command, e.g. /imagine a red lighthouse at dusk (/help lists them)")
    head, rest = words[0].lower(), words[1:]
    if not head.startswith("/"):
        # "imagine a cat" means /imagine a cat, not /imagine imagine a cat.
        example = f"/{text.strip()}" if head.split("@", 1)[0] in _COMMAND_NAMES else f"/imagine {text.strip()}"
        raise CommandError(f"commands start with /, e.g. {example} (/help lists them)")
    name = head[1:].split("@", 1)[0]  # Telegram appends @botname in groups
    if name in ("imagine", "sketch"):
        free, values = _split_options(rest, loose_keys=True)
        prompt = " ".join(free).strip()
        if not prompt:
            raise CommandError(f"the prompt is empty; describe what to draw, e.g. /{name} a red lighthouse at dusk")
        settings = _settings(values, defaults)
        return Imagine(prompt, settings) if name == "imagine" else Sketch(prompt, settings)
    if name == "face":
        return _face(rest, defaults)
    if name == "rerun":
        free, values = _split_options(rest, loose_keys=False)
        if len(free) > 1:
            raise CommandError(f"/rerun takes one seed or #job and key=value settings, got {' '.join(free)!r}")
        return Rerun(*_rerun_target(free[0] if free else None), _settings(values, defaults))
    if name == "history":
        _no_more(name, rest[1:])
        if rest and rest[0].startswith("#"):
            return ShowHistory(10, _job_number(rest[0][1:]))
        limit = _positive("history length", rest[0]) if rest else 10
        return ShowHistory(min(limit, MAX_HISTORY))
    if name == "cancel":
        _no_more(name, rest[1:])
        return Cancel(_job_number(rest[0].lstrip("#")) if rest else None)
    if name == "queue":
        _no_more(name, rest)
        return ShowQueue()
    if name in ("help", "start"):
        return Help()
    raise CommandError(
        f"unknown command /{name}; commands are /imagine, /sketch, /face, /rerun, /history, /cancel, /queue, /help"
    )


def _face(words: list[str], defaults: DefaultsConfig) -> Face:
    """/face [--seed N] [--psi F] [--n N] · /face mix A B [--layers L] · /face edit SEED dir0=2 smile=-1"""
    free, values = _split_options(words, loose_keys=True)
    action = free[0].lower() if free else ""
    mix_seed, edits = None, []
    if action == "mix":
        if len(free) != 3:
            raise CommandError("/face mix takes two seeds: /face mix 12 345 [--layers coarse|middle|fine|0-3]")
        values["seed"], mix_seed = _seed(free[1]), _seed(free[2])
        free = []
    elif action == "edit":
        if len(free) < 3:
            raise CommandError("/face edit takes a seed and moves: /face edit 12 dir0=2 smile=-1.5")
        values["seed"] = _seed(free[1])
        edits = _moves(free[2:])
        free = []
    if free:
        raise CommandError(f"/face takes options, mix A B or edit SEED …, got {' '.join(free)!r}")
    if "layers" in values and mix_seed is None:
        raise CommandError("--layers is for /face mix A B")
    return Face(_settings(values, defaults), mix_seed, tuple(edits))


def _moves(words: list[str]) -> list[tuple[str, float]]:
    """dir0=2 smile=-1.5 → [("dir0", 2.0), ("smile", -1.5)]"""
    moves = []
    for move in words:
        direction, equals, amount = move.partition("=")
        if not equals or not direction:
            raise CommandError(f"a move looks like dir0=2 or smile=-1.5, got {move!r}")
        moves.append((direction.lower(), _float(direction)(amount)))
    return moves


def face_from_options(given: Mapping[str, object], mix_seed: int | None, moves: str | None,
                      defaults: DefaultsConfig) -> Face:
    """/face from a slash command: seed, psi, count, layers as options; a second seed to mix; moves as text."""
    values = _typed_values(given)
    if "layers" in values and mix_seed is None:
        raise CommandError("layers is for mixing: give a second seed to mix with")
    return Face(_settings(values, defaults), None if mix_seed is None else _seed(str(mix_seed)),
                tuple(_moves(moves.split()) if moves else ()))


def _seed(text: str) -> int:
    seed = _int("seed")(text)
    if not 0 <= seed <= MAX_SEED:
        raise CommandError(f"seed must be 0–{MAX_SEED}, got {_short(text)}")
    return seed


def _rerun_target(target: str | None) -> tuple[int | None, int | None]:
    """(job id, seed) from "#17", "42" or nothing."""
    if not target:
        return None, None
    if target.startswith("#"):
        return _job_number(target[1:]), None
    return None, _seed(target)  # checked here: a look-up by seed must stay in SQLite's range


# ---- typed options (slash commands) ---------------------------------------------------------
def _typed_values(given: Mapping[str, object]) -> dict[str, object]:
    """Option values keyed by any of an option's names, read by the same parsers (and messages) as text."""
    values: dict[str, object] = {}
    for key, value in given.items():
        if value is None:
            continue
        option = _BY_NAME.get(key)
        if option is None:
            raise ValueError(f"no option is called {key!r}")  # a frontend bug, not the person's
        text = str(value).strip()
        if not text:
            raise CommandError(f"{key} needs a value: {option.help}")
        values[option.name] = option.parse(text)
    return values


def imagine_from_options(
    prompt: str, given: Mapping[str, object], defaults: DefaultsConfig, sketch: bool = False
) -> Imagine | Sketch:
    """/imagine (or /sketch) from a slash command: typed options, plus inline flags in the prompt ("a cat --seed 4")."""
    free, inline = _split_options(prompt.split(), loose_keys=True)
    typed = _typed_values(given)
    for name in inline:
        if name in typed:
            raise CommandError(f"{name} is given twice, as an option and in the prompt; keep one")
    text = " ".join(free).strip()
    if not text:
        raise CommandError("the prompt is empty; describe what to draw, e.g. a red lighthouse at dusk")
    return (Sketch if sketch else Imagine)(text, _settings({**inline, **typed}, defaults))


def rerun_from_options(ref: str | None, given: Mapping[str, object], defaults: DefaultsConfig) -> Rerun:
    """/rerun from a slash command: `ref` is a seed, "#job" or nothing (your last job)."""
    return Rerun(*_rerun_target(ref.strip() if ref else None), _settings(_typed_values(given), defaults))


MAX_JOB_ID = 2**63 - 1  # SQLite's largest row id


def _job_number(text: str) -> int:
    value = _positive("job number", text)
    if value > MAX_JOB_ID:
        raise CommandError(f"there is no job #{_short(text)}")
    return value


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "…"


def _positive(what: str, text: str) -> int:
    value = _int(what)(text)
    if value < 1:
        raise CommandError(f"{what} must be 1 or more, got {value}")
    return value


def _no_more(name: str, extra: list[str]) -> None:
    if extra:
        raise CommandError(f"/{name} does not take {' '.join(extra)!r}")


def help_text(limits: LimitsConfig) -> str:
    lines = [
        "/imagine <prompt> [options] — draw a picture; attach an image for image→image (console: --image PATH)",
        "/sketch <prompt> [--mode scribble|img2img|pix2pix] [--control F] — a drawing (attached) → a picture",
        "/face [--seed N] [--psi F] · /face mix A B [--layers coarse|middle|fine] · /face edit SEED dir0=2 — a person"
        " who does not exist",
        "/rerun [SEED | #JOB] [key=value …] — redraw your last job, your latest with that seed, or job #N",
        f"/history [N | #JOB] — your last N jobs (at most {MAX_HISTORY}), or job N's result again"
        "    /queue — what is waiting",
        "/cancel [#JOB] — stop a job",
        "prompts as in the AUTOMATIC1111 web UI: (word) ×1.1, ((word)) ×1.21, [word] ÷1.1, (word:1.5) ×1.5, "
        f"\\( for a bracket; up to {limits.max_prompt_chars:,} characters, the negative prompt too "
        "(read 75 tokens at a time; BREAK starts the next 75)",
        "options (--key value or key=value):",
    ]
    lines += [f"  --{o.name:<10} {o.help}" for o in OPTIONS]
    lines.append(
        f"limits: steps 1–{limits.max_steps}, cfg 0–{plain_number(limits.max_cfg)}, n 1–{limits.max_count}, "
        f"sides 64–{limits.max_side} (multiples of 8), at most {limits.max_pixels:,} pixels"
    )
    return "\n".join(lines)
