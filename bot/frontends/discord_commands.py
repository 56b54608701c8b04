"""What people can do in Discord: the slash commands (and the tree's hooks that guard them), and the buttons
under a job's message.

The slash commands are derived from the command registry: each callback's signature is built from its
CommandSpec (arguments, image, options ranged by [limits]), and discord.py reads it off the signature.
"""

import inspect
import keyword
import logging
import typing

import discord
from discord import app_commands

from bot import commands
from bot.commands import Command, CommandSpec
from bot.commands.grammar import Option
from bot.commands.registry import Param
from bot.config import DefaultsConfig
from bot.frontends.chat import MORE_STEPS, NEW_SEED, result_buttons
from bot.frontends.pacing import clip
from bot.limits import CommandError, LimitsConfig
from storage.records import JobRecord

if typing.TYPE_CHECKING:
    from bot.frontends.discord import DiscordFrontend

log = logging.getLogger(__name__)

WENT_WRONG = "something went wrong with that command; the details are in the log"


class CommandTree(app_commands.CommandTree):
    """discord.py's hooks around every slash command: the one access check first (none can skip it), and
    a command that fails is logged with its traceback while the person is told, privately."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await self.client.frontend.admit(interaction)

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        name = interaction.command.name if interaction.command else "?"
        log.error("the Discord command /%s failed", name, exc_info=error)
        await self.client.frontend.refuse(interaction, WENT_WRONG)


class _Admitted:
    """A button's hook before its press runs (discord.py's): the frontend's one access check, as the tree's."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await interaction.client.frontend.admit(interaction)


class JobButton(_Admitted, discord.ui.DynamicItem[discord.ui.Button],
                template=r"easel:(?P<action>more|seed|cancel):(?P<job>\d+)"):
    """A button for a whole job. The job id lives in the custom_id, so it works after a restart."""

    LABELS = {"more": (MORE_STEPS, discord.ButtonStyle.primary), "seed": (NEW_SEED, discord.ButtonStyle.secondary),
              "cancel": ("Cancel", discord.ButtonStyle.danger)}

    def __init__(self, action: str, job_id: int, row: int | None = None) -> None:
        label, style = self.LABELS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"easel:{action}:{job_id}"), row=row)
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match, /) -> "JobButton":
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.frontend.on_button(interaction, self.action, self.job_id)


class ActionButton(_Admitted, discord.ui.DynamicItem[discord.ui.Button],
                   template=r"easel:(?P<data>(?:up|vary|zoom|pan):.*)"):
    """A button for one image of a job: "easel:up:12:2" (U2), "easel:vary:12:2:strong", "easel:pan:12:1:left".
    The template takes any such id, so a forged one is refused in words rather than left unanswered."""

    def __init__(self, data: str, label: str = "?", row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           custom_id=f"easel:{data}"), row=row)
        self.data = data

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match,
                             /) -> "ActionButton":
        return cls(match["data"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.frontend.on_action(interaction, self.data)


def buttons(job: JobRecord) -> discord.ui.View:
    """Cancel while the job runs; when it is done, chat.result_buttons' rows: U k, V k, V k strong, zoom
    and pan for a single picture, 5× steps and New seed (at most 5 rows of 5, as Discord allows)."""
    view = discord.ui.View(timeout=None)
    if not job.status.finished:
        view.add_item(JobButton("cancel", job.id))
    for row, line in enumerate(result_buttons(job)):
        for button in line:
            view.add_item(JobButton(button.action, job.id, row) if button.action in JobButton.LABELS
                          else ActionButton(button.data, button.label, row))
    return view


def register_commands(tree: app_commands.CommandTree, frontend: "DiscordFrontend", limits: LimitsConfig,
                      defaults: DefaultsConfig) -> None:
    """Every command of the registry that Discord offers, as a slash command: its arguments, an image if it
    takes one, and its options, ranged by [limits] and described by the grammar's own table."""
    for spec in commands.COMMANDS.values():
        if "discord" in spec.frontends:
            tree.add_command(_slash(spec, frontend, limits, defaults))


def _slash(spec: CommandSpec, frontend: "DiscordFrontend", limits: LimitsConfig,
           defaults: DefaultsConfig) -> app_commands.Command:
    """One slash command. discord.py reads a callback's signature; this one is built from the spec."""
    required: list[inspect.Parameter] = []
    optional: list[inspect.Parameter] = []
    descriptions: dict[str, str] = {}
    choices: dict[str, list[app_commands.Choice]] = {}
    autocomplete: dict[str, typing.Callable] = {}
    renames: dict[str, str] = {}  # Python parameter name -> Discord's, where they differ ("hires-strength")

    def add(name: str, annotation: object, description: str, needed: bool) -> str:
        kind = inspect.Parameter.KEYWORD_ONLY
        shown, name = name, name.replace("-", "_")  # Discord takes hyphens in a name; a signature does not
        if keyword.iskeyword(name):  # nor a keyword (/animate's "from")
            name += "_"
        if shown != name:
            renames[name] = shown
        (required if needed else optional).append(
            inspect.Parameter(name, kind, annotation=annotation) if needed
            else inspect.Parameter(name, kind, annotation=typing.Optional[annotation], default=None))
        descriptions[name] = clip(description, 100)
        return name

    for param in spec.params:
        add(param.name, _param_type(param, limits), param.description, param.required)
    if spec.image != "none":
        add("image", discord.Attachment, spec.image_help or "the picture to start from", spec.image == "required")
    for name in commands.options_of(spec) if spec.slash_options is None else spec.slash_options:
        option = commands.OPTIONS[name]
        slash = add(option.slash or option.name, _option_type(option, limits), option.help, False)
        menu = spec.menus.get(name, option.choices)
        if menu:
            choices[slash] = [app_commands.Choice(name=value, value=value) for value in menu][:25]
        if option.name == "model":
            autocomplete[slash] = _model_names(frontend)

    async def callback(interaction: discord.Interaction, **values: object) -> None:
        values = {renames.get(name, name): value for name, value in values.items()}
        image = values.pop("image", None)

        def build() -> Command:
            return commands.from_options(spec.name, values, defaults)
        try:
            command = build()
        except CommandError:
            command = None  # refused: queue_job says why, privately, after checking the image too
        if command is None or command.queues_job:
            await frontend.queue_job(interaction, build, image)
        elif command.resends is not None:
            await frontend.send_again(interaction, command.resends)
        else:
            await frontend.answer(interaction, command)

    interaction = inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=discord.Interaction)
    callback.__signature__ = inspect.Signature([interaction, *required, *optional])
    callback.__discord_app_commands_param_description__ = descriptions
    callback.__discord_app_commands_param_choices__ = choices
    callback.__discord_app_commands_param_rename__ = renames
    callback.__discord_app_commands_param_autocomplete__ = autocomplete
    return app_commands.Command(name=spec.name, description=clip(spec.summary, 100), callback=callback)


def _model_names(frontend: "DiscordFrontend"):
    """Autocomplete of model: the configured names that contain what was typed so far."""
    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        typed = current.strip().lower()
        return [app_commands.Choice(name=name, value=name) for name in frontend.service.models
                if typed in name.lower()][:25]
    return complete


def _param_type(param: Param, limits: LimitsConfig) -> object:
    if param.kind == "int":
        return app_commands.Range[int, param.low, param.high]
    high = getattr(limits, param.limit) if param.limit else 2000
    return app_commands.Range[str, 1, high]


def _option_type(option: Option, limits: LimitsConfig) -> object:
    """An option's Discord type: a number ranged as the limits check it, yes/no, or text (read by the grammar)."""
    if option.flag:
        return bool
    if option.range is None or option.value == "text":
        if option.greedy:  # a negative prompt: as long as a prompt may be
            return app_commands.Range[str, 1, limits.max_prompt_chars]
        return str
    low, high = option.range.bounds(limits)
    if option.value == "int":
        return app_commands.Range[int, int(low), int(high)]
    return app_commands.Range[float, float(low), float(high)]
