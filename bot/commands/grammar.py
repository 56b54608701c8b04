"""The command grammar every frontend shares: options, how their values read, and settings given on a line.

    /imagine a red lighthouse --seed 42 steps=70 —cfg 7.5 --no blurry text

An option is "--name value", "name=value" or (phone keyboards) "—name value". The options are
registered by the commands that take them (this module holds those several commands share), and a
command line is split into free words and typed option values here.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Mapping

from bot.config import DefaultsConfig
from bot.commands.registry import enter
from bot.limits import CommandError
from generation.schedulers import SCHEDULERS, scheduler_help
from storage.params import Range
from storage.params.base import CFG, COUNT, SEED, STEPS


class Settings:
    """Settings given on a command line, by params field: what is absent keeps its default (or the old value)."""

    def __init__(self, **values: object) -> None:
        self._values = {name: value for name, value in values.items() if value is not None}
        self.aspect: tuple[int, int] | None = None  # the --ar that set width and height, if one did

    def given(self) -> dict[str, object]:
        return dict(self._values)

    def get(self, name: str) -> object | None:
        return self._values.get(name)

    def __getattr__(self, name: str) -> object | None:
        """settings.steps: the value given, or None; any params field name reads."""
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items(), key=lambda item: item[0])))

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in self._values.items())})"

    def apply(self, params):
        """The params with every given setting replaced and every other one kept."""
        return params.replace(**self._values)


# ---- values ------------------------------------------------------------------------------
def whole(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise CommandError(f"{name} must be a whole number, got {short(text)!r}") from None
    return parse


def number(name: str) -> Callable[[str], float]:
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


def _scheduler(text: str) -> str:
    name = text.lower().replace("-", "_").replace("+", "p")
    if name not in SCHEDULERS:
        raise CommandError(f"unknown scheduler {text!r}; choose one of: {scheduler_help()}")
    return name


_YES, _NO = ("yes", "on", "true", "1"), ("no", "off", "false", "0")
_SWITCH_WORDS = _YES + _NO


def switch(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        value = text.lower()
        if value in _YES:
            return True
        if value in _NO:
            return False
        raise CommandError(f"--{name} is yes or no (or just --{name}), got {short(text)!r}")
    return parse


def choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise CommandError(f"unknown {name} {text!r}; choose one of: {', '.join(choices)}")
        return value
    return parse


def short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "…"


# ---- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One setting a command takes: its names, how its value is read, the params field it sets, a line of help."""

    name: str
    aliases: tuple[str, ...]
    parse: Callable[[str], object]
    help: str
    field: str = ""  # the params field it sets ("" for --ar and --size, which set width and height)
    range: Range | None = None  # where its value must lie: for help and Discord's option ranges
    greedy: bool = False  # the value runs to the next option (a negative prompt has spaces)
    choices: tuple[str, ...] = ()  # the values it takes, when it is a choice (Discord shows a menu)
    value: Literal["text", "int", "float"] = "text"  # what a typed form (a Discord option) asks for
    slash: str = ""  # its name as a Discord option, where the grammar's own is too terse ("count" for n)
    flag: bool = False  # said bare ("--reverse") it means yes; it also takes yes/no (Discord: a true/false option)


OPTIONS: dict[str, Option] = {}  # every option of every command, in the order /help lists them
_BY_NAME: dict[str, Option] = {}


def register_option(option: Option) -> Option:
    """Make an option known to the grammar (a command module registers its own)."""
    enter(_BY_NAME, (option.name, *option.aliases), option, "options")
    OPTIONS[option.name] = option
    return option


def option(name: str) -> Option:
    """The option called `name` (or one of its aliases)."""
    return _BY_NAME[name]


def _model_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100 or any(ch.isspace() for ch in name):
        raise CommandError(f"--model takes a model's name as /models lists it, got {text[:40]!r}")
    return name


for _option in (
    Option("no", ("negative",), str, "negative prompt: what to keep out of the picture", "negative_prompt", greedy=True,
           slash="negative"),
    Option("seed", (), whole("seed"), f"{SEED.text()}; the same seed and settings redraw the same picture", "seed", SEED,
           value="int"),
    Option("steps", (), whole("steps"), "denoising steps: a few dozen for drafts, hundreds for a final rerun",
           "steps", STEPS, value="int"),
    Option("cfg", ("guidance",), number("cfg"), "how strictly to follow the prompt (≈7 is a good start)", "cfg", CFG,
           value="float"),
    Option("ar", ("aspect",), _pair("ar", ":", "16:9"), "aspect ratio at the default pixel count, e.g. 16:9",
           slash="aspect"),
    Option("size", (), _pair("size", "x", "768x512"), "exact size WxH in pixels, multiples of 8"),
    Option("n", ("count",), whole("n"), "how many images (seeds s, s+1, …)", "count", COUNT, value="int",
           slash="count"),
    Option("scheduler", ("sampler",), _scheduler, f"one of {scheduler_help()}", "scheduler",
           choices=tuple(SCHEDULERS)),
    Option("model", ("checkpoint",), _model_name, "the model to draw with, by its name in /models", "model"),
):
    register_option(_option)
DRAWING_OPTIONS = ("no", "seed", "steps", "cfg", "ar", "size", "n", "scheduler", "model")  # what every diffusion command takes


# ---- splitting a line ----------------------------------------------------------------------
# Phone keyboards turn "--" into an em dash (and some into an en dash): "—seed 42" means --seed 42.
_DASHES = ("\u2014", "\u2013")


def _option_token(token: str, loose_keys: bool) -> tuple[Option, str | None] | None:
    """If token starts an option, return it and any inline value ("--steps=30", "steps=30", "—steps 30")."""
    if token.startswith(_DASHES) and token[1:].partition("=")[0].lower() in _BY_NAME:
        token = "--" + token[1:]  # only before an option name: "a cat — on a mat" keeps its dash
    if token.startswith("--") and len(token) > 2:
        name, _, value = token[2:].partition("=")
        found = _BY_NAME.get(name.lower())
        if found is None:
            raise CommandError(f"unknown option --{name}; " + _known(name, "--", "options"))
        return found, (value if "=" in token else None)
    name, equals, value = token.partition("=")
    if equals and name:
        found = _BY_NAME.get(name.lower())
        if found is not None:
            return found, value
        if not loose_keys:
            raise CommandError(f"unknown setting {name!r}; " + _known(name, "", "settings"))
    return None


def _known(name: str, prefix: str, what: str) -> str:
    """The option a mistyped name most likely meant ("did you mean --seed?"), else every option's name."""
    close = difflib.get_close_matches(name.lower(), list(_BY_NAME), n=1, cutoff=0.7)
    if close:
        return f"did you mean {prefix}{_BY_NAME[close[0]].name}?"
    return f"{what} are {', '.join(prefix + o for o in OPTIONS)}"


def split_options(words: list[str], loose_keys: bool) -> tuple[list[str], dict[str, object]]:
    """Separate free words from options (by option name); with loose_keys, unknown key=value stays free text."""
    free: list[str] = []
    raw: dict[str, str] = {}
    index = 0
    while index < len(words):
        found = _option_token(words[index], loose_keys)
        index += 1
        if found is None:
            free.append(words[index - 1])
            continue
        given, value = found
        if given.name in raw:
            raise CommandError(f"{given.name} is given twice")
        parts = [] if value is None else [value]
        if given.flag and value is None:  # "--reverse" alone means yes; "--colour no" takes its word
            said = index < len(words) and words[index].lower() in _SWITCH_WORDS
            parts = [words[index]] if said else ["yes"]
            index += said
        elif given.greedy or value is None:
            while index < len(words) and (given.greedy or not parts) and _option_token(words[index], True) is None:
                parts.append(words[index])
                index += 1
        text = " ".join(part for part in parts if part).strip().strip("\"'")
        if not text:
            raise CommandError(f"--{given.name} needs a value: {given.help}")
        raw[given.name] = text
    return free, {name: _BY_NAME[name].parse(text) for name, text in raw.items()}


def typed_values(given: Mapping[str, object]) -> dict[str, object]:
    """Option values from a slash command, keyed by any of an option's names, read by the same parsers (and
    messages) as text."""
    values: dict[str, object] = {}
    for key, value in given.items():
        if value is None:
            continue
        found = _BY_NAME.get(key)
        if found is None:
            raise ValueError(f"no option is called {key!r}")  # a frontend bug, not the person's
        text = str(value).strip()
        if not text:
            raise CommandError(f"{key} needs a value: {found.help}")
        values[found.name] = found.parse(text)
    return values


def prompt_and_values(prompt: str, given: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """A slash command's prompt and typed options: flags typed into the prompt ("a cat --seed 4") count too."""
    free, inline = split_options(prompt.split(), loose_keys=True)
    typed = typed_values(given)
    for name in inline:
        if name in typed:
            raise CommandError(f"{name} is given twice, as an option and in the prompt; keep one")
    text = " ".join(free).strip()
    if not text:
        raise CommandError("the prompt is empty; describe what to draw, e.g. a red lighthouse at dusk")
    return text, {**inline, **typed}


def settings(values: Mapping[str, object], defaults: DefaultsConfig) -> Settings:
    """Option values (by option name) as settings (by params field); --ar becomes a size at the default area."""
    if "ar" in values and "size" in values:
        raise CommandError("give either --ar or --size, not both")
    fields: dict[str, object] = {OPTIONS[name].field: value for name, value in values.items() if OPTIONS[name].field}
    if "size" in values:
        fields["width"], fields["height"] = values["size"]
    elif "ar" in values:
        fields["width"], fields["height"] = size_for_aspect(*values["ar"], defaults.width * defaults.height)
    given = Settings(**fields)
    given.aspect = values.get("ar")  # an SDXL model draws it at its own trained size instead (see bot/models.py)
    return given


def size_for_aspect(ratio_w: int, ratio_h: int, area: int) -> tuple[int, int]:
    """A width and height in multiples of 64 with about `area` pixels and the given aspect ratio."""
    if ratio_w <= 0 or ratio_h <= 0:
        raise CommandError(f"aspect ratio sides must be positive, got {ratio_w}:{ratio_h}")
    if max(ratio_w, ratio_h) > 4 * min(ratio_w, ratio_h):
        raise CommandError(f"aspect ratio must be between 1:4 and 4:1, got {ratio_w}:{ratio_h}")
    width = math.sqrt(area * ratio_w / ratio_h)
    height = area / width
    return max(64, round(width / 64) * 64), max(64, round(height / 64) * 64)
