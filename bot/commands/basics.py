"""The commands about jobs rather than pictures: /history, /cancel, /queue and /help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.commands.grammar import OPTIONS
from bot.commands.registry import COMMANDS, Command, CommandSpec, Param, no_more, register
from bot.commands.rerun import job_number, positive
from bot.config import DefaultsConfig
from bot.limits import LimitsConfig
from bot.replies import Reply
from storage.infotext import plain_number

if TYPE_CHECKING:
    from bot.service import Service
    from storage.records import Owner

MAX_HISTORY = 50  # /history N lists at most this many: a chat message has room for so much


@dataclass(frozen=True)
class ShowHistory(Command):
    """Your last `limit` jobs; with job_id, that one job's result, to be sent again."""

    name = "history"
    limit: int
    job_id: int | None = None

    @property
    def resends(self) -> int | None:
        return self.job_id


def _history(words: list[str], defaults: DefaultsConfig) -> ShowHistory:
    no_more("history", words[1:])
    if words and words[0].startswith("#"):
        return ShowHistory(10, job_number(words[0][1:]))
    limit = positive("history length", words[0]) if words else 10
    return ShowHistory(min(limit, MAX_HISTORY))


def _history_options(values, defaults: DefaultsConfig) -> ShowHistory:
    if values.get("job") is not None:
        return ShowHistory(10, job_number(str(values["job"])))
    return ShowHistory(min(int(values.get("count") or 10), MAX_HISTORY))


async def _show_history(service: Service, owner: Owner, command: ShowHistory, attachments) -> Reply:
    if command.job_id is not None:
        return await service.show_again(owner, command.job_id)
    return Reply(await service.history_text(owner, command.limit))


@dataclass(frozen=True)
class Cancel(Command):
    name = "cancel"
    job_id: int | None


def _cancel(words: list[str], defaults: DefaultsConfig) -> Cancel:
    no_more("cancel", words[1:])
    return Cancel(job_number(words[0].lstrip("#")) if words else None)


async def _run_cancel(service: Service, owner: Owner, command: Cancel, attachments) -> Reply:
    return await service.cancel(owner, command.job_id)


@dataclass(frozen=True)
class ShowQueue(Command):
    name = "queue"


def _queue(words: list[str], defaults: DefaultsConfig) -> ShowQueue:
    no_more("queue", words)
    return ShowQueue()


async def _show_queue(service: Service, owner: Owner, command: ShowQueue, attachments) -> Reply:
    return Reply(service.queue_text(owner))


@dataclass(frozen=True)
class Help(Command):
    name = "help"


async def _help(service: Service, owner: Owner, command: Help, attachments) -> Reply:
    return Reply(help_text(service.limits))


def help_text(limits: LimitsConfig) -> str:
    """Every command's usage, the prompt syntax and every option, with the configured limits."""
    lines = [spec.usage for spec in COMMANDS.values() if spec.usage]
    lines += [
        "prompts as in the AUTOMATIC1111 web UI: (word) ×1.1, ((word)) ×1.21, [word] ÷1.1, (word:1.5) ×1.5, "
        f"\\( for a bracket; up to {limits.max_prompt_chars:,} characters, the negative prompt too "
        "(read 75 tokens at a time; BREAK starts the next 75)",
        "options (--key value or key=value):",
    ]
    width = max(len(o.name) for o in OPTIONS.values())
    lines += [f"  --{o.name:<{width}} {o.help}" for o in OPTIONS.values()]
    lines.append(
        f"limits: steps 1–{limits.max_steps}, cfg 0–{plain_number(limits.max_cfg)}, n 1–{limits.max_count}, "
        f"sides 64–{limits.max_side} (multiples of 8), at most {limits.max_pixels:,} pixels; animations: frames "
        f"1–{limits.max_frames}, at most {limits.max_animation_steps:,} steps at 512x512 in all"
    )
    return "\n".join(lines)


register(CommandSpec(
    name="history",
    usage=f"/history [N | #JOB] — your last N jobs (at most {MAX_HISTORY}), or job N's result again",
    summary="your last jobs; /history #17 sends one again",
    parse=_history, run=_show_history, from_options=_history_options,
    params=(Param("count", "int", f"how many jobs to list (at most {MAX_HISTORY})", low=1, high=MAX_HISTORY),
            Param("job", "int", "a job number whose images to send again", low=1, high=2**53)),
))
register(CommandSpec(
    name="cancel", usage="/cancel [#JOB] — stop a job", summary="stop your latest job, or /cancel 17",
    parse=_cancel, run=_run_cancel,
    params=(Param("job", "int", "the job number (default: your latest waiting or running job)", low=1, high=2**53),),
))
register(CommandSpec(name="queue", usage="/queue — what is waiting", summary="what is running and waiting",
                     parse=_queue, run=_show_queue))
register(CommandSpec(name="help", usage="", summary="how to use easel", parse=lambda words, defaults: Help(),
                     run=_help, aliases=("start",)))
