"""Every command, as a registry the grammar, /help and the frontends read. A new command (or job kind's
command) is one module in this package and one line below."""

from bot.commands.registry import COMMANDS, Command, CommandSpec, command, from_options, options_of, parse

# The commands, in the order /help and the command menus list them: one line each.
from bot.commands import imagine, sketch, face, upscale, vary, outpaint, animate, train, rerun, describe, models, gallery, basics  # noqa: E402, F401, I001

from bot.commands.basics import MAX_HISTORY, Cancel, Help, ShowHistory, ShowQueue, help_text  # noqa: E402
from bot.commands.describe import Describe  # noqa: E402
from bot.commands.face import Face  # noqa: E402
from bot.commands.grammar import OPTIONS, Settings, option, size_for_aspect  # noqa: E402
from bot.commands.imagine import Imagine  # noqa: E402
from bot.commands.rerun import Rerun  # noqa: E402
from bot.commands.sketch import Sketch  # noqa: E402

__all__ = [
    "COMMANDS", "MAX_HISTORY", "OPTIONS", "Cancel", "Command", "CommandSpec", "Describe", "Face", "Help", "Imagine",
    "Rerun", "Settings", "ShowHistory", "ShowQueue", "Sketch", "basics", "command", "describe", "face",
    "from_options", "help_text", "imagine", "option", "options_of", "outpaint", "parse", "rerun", "size_for_aspect",
    "sketch", "upscale", "vary",
]
