"""The registry of commands: each command is one module that registers a CommandSpec here.

Everything that lists commands is derived from it: parsing a line, /help, the Discord slash
commands, the Telegram command menu.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable, ClassVar, Literal, Mapping, Sequence

from bot.config import DefaultsConfig
from bot.limits import CommandError

if TYPE_CHECKING:
    from bot.replies import Attachment, Reply
    from bot.service import Service
    from storage.records import Owner

FRONTENDS = frozenset({"console", "discord", "telegram"})
EVERY_OPTION = ("*",)  # a command that takes every option of every command (/rerun)


class Command:
    """A typed command, ready to run; each command module's dataclasses subclass this and name their spec."""

    name: ClassVar[str]
    queues_job: ClassVar[bool] = False  # its reply is a queued job, whose progress and result the frontend shows

    def replying_to(self, job_id: int) -> Command:
        """The command as said in reply to a message showing job `job_id` (/rerun there means that job)."""
        return self

    @property
    def resends(self) -> int | None:
        """A finished job whose result this command sends again (/history #N), if any."""
        return None


@dataclass(frozen=True)
class Param:
    """One parameter of a slash command beyond its options: a free-text or number argument."""

    name: str
    kind: Literal["text", "int"]
    description: str
    required: bool = False
    low: int | None = None
    high: int | None = None
    limit: str = ""  # the [limits] key that bounds a text's length (a prompt's)


@dataclass(frozen=True)
class CommandSpec:
    """One command: how it is typed, parsed and run, and where it is offered."""

    name: str
    usage: str  # its /help line(s)
    summary: str  # one short line for command menus (Telegram, Discord)
    parse: Callable[[list[str], DefaultsConfig], Command]  # the words after the command's name → a Command
    run: Callable[[Service, Owner, Command, Sequence[Attachment]], Awaitable[Reply]]
    # A slash command's values (its params and options, by name; None = not given) → a Command. By default
    # they are read as the typed line would be: the params as words, in order, then the options.
    from_options: Callable[[Mapping[str, object], DefaultsConfig], Command] | None = None
    options: tuple[str, ...] = ()  # the grammar options it takes, by name
    params: tuple[Param, ...] = ()  # slash-command arguments besides the options (a prompt, a job number)
    image: Literal["none", "optional", "required"] = "none"  # whether an attached image goes with it
    image_help: str = ""  # what the image is, for a slash command's image option
    aliases: tuple[str, ...] = ()
    frontends: frozenset[str] = FRONTENDS  # where it is offered
    # What to say when it is given an option it does not take; {option} is that option, {owner} a command taking it.
    foreign: str = ""
    # An option shared with other commands whose values here are some of its choices: option name → those
    # (Discord's menu for /sketch's mode lists only its own modes).
    menus: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The options its Discord slash form takes when not all of options (Discord allows 25 in all): the rest
    # are typed as text in a parameter of its own (/rerun's settings).
    slash_options: tuple[str, ...] | None = None


COMMANDS: dict[str, CommandSpec] = {}
_BY_NAME: dict[str, CommandSpec] = {}


def enter(table: dict, names: tuple[str, ...], item: object, what: str) -> None:
    """Enter an item under each of its names; a name taken twice is a programming error, said at import."""
    for name in names:
        if name in table:
            raise ValueError(f"two {what} are called {name!r}")
        table[name] = item


def register(spec: CommandSpec) -> CommandSpec:
    """Make a command known to the grammar, /help and every frontend."""
    enter(_BY_NAME, (spec.name, *spec.aliases), spec, "commands")
    COMMANDS[spec.name] = spec
    return spec


def options_of(spec: CommandSpec) -> tuple[str, ...]:
    """The option names a command takes, in /help's order."""
    from bot.commands.grammar import OPTIONS

    return tuple(OPTIONS) if spec.options == EVERY_OPTION else spec.options


def command(name: str) -> CommandSpec | None:
    """The command called `name` (or an alias), if there is one."""
    return _BY_NAME.get(name)


def parse(text: str, defaults: DefaultsConfig) -> Command:
    """Read one command line. Raises CommandError with a message meant for the person who typed it."""
    words = text.split()
    if not words:
        raise CommandError("type a command, e.g. /imagine a red lighthouse at dusk (/help lists them)")
    head, rest = words[0].lower(), words[1:]
    if not head.startswith("/"):
        # "imagine a cat" means /imagine a cat, not /imagine imagine a cat.
        example = f"/{text.strip()}" if head.split("@", 1)[0] in _BY_NAME else f"/imagine {text.strip()}"
        raise CommandError(f"commands start with /, e.g. {example} (/help lists them)")
    name = head[1:].split("@", 1)[0]  # Telegram appends @botname in groups
    spec = _BY_NAME.get(name)
    if spec is None:
        raise CommandError(f"unknown command /{name}; commands are {', '.join('/' + n for n in COMMANDS)}")
    return spec.parse(rest, defaults)


def from_options(name: str, values: Mapping[str, object], defaults: DefaultsConfig) -> Command:
    """A slash command (or another typed form) as a Command, read by the same rules as a typed line."""
    spec = COMMANDS[name]
    if spec.from_options is not None:
        return spec.from_options(values, defaults)
    names = {param.name for param in spec.params}
    words = [str(values[param.name]) for param in spec.params if values.get(param.name) is not None]
    words += [f"--{key}={value}" for key, value in values.items() if key not in names and value is not None]
    return spec.parse(words, defaults)


def only_options_of(spec: CommandSpec, values: dict[str, object]) -> None:
    """Refuse an option the command does not take, naming the command that does."""
    for name in values:
        if name in spec.options:
            continue
        owners = [other for other in COMMANDS.values() if name in other.options]
        owner = owners[0] if owners else None
        if spec.foreign:
            from bot.commands.grammar import OPTIONS

            raise CommandError(spec.foreign.format(option=OPTIONS[name].field.replace("_", " ") or name,
                                                   owner=owner.name if owner else "another command"))
        if owner is None:
            raise CommandError(f"/{spec.name} does not take --{name}")
        theirs = [option for option in owner.options if option not in spec.options]
        flags = [f"--{option}" for option in theirs]
        names = " and ".join(filter(None, (", ".join(flags[:-1]), flags[-1])))
        raise CommandError(f"{names} {'are' if len(theirs) > 1 else 'is'} for /{owner.name}")


def no_more(name: str, extra: list[str]) -> None:
    if extra:
        raise CommandError(f"/{name} does not take {' '.join(extra)!r}")
