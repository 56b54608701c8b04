"""The kind and command registries: everything that lists kinds or commands is derived from them, so a new
kind is one module per layer and a registration line. A toy kind registered here shows up everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from bot import commands, limits
from bot.commands import COMMANDS, OPTIONS, help_text, options_of, parse
from bot.commands import grammar, registry
from bot.commands.grammar import Option, Settings, register_option, settings, split_options, whole
from bot.commands.registry import Command, CommandSpec, Param
from bot.config import DefaultsConfig, LimitsConfig
from bot.limits import CommandError, LimitProblem, check_params
from bot.replies import Reply
from generation.engines import ENGINES
from storage.params import JobParams, Range, base, kinds, params_from_json, params_to_json, register

DEFAULTS = DefaultsConfig()


def test_every_kind_has_an_engine_and_every_engine_a_kind():
    assert list(kinds()) == ["txt2img", "img2img", "sketch", "face", "upscale", "vary", "zoom", "pan", "animate", "train"]
    assert set(ENGINES) == set(kinds())


def test_every_command_option_is_known_and_every_option_taken():
    taken = {name for spec in COMMANDS.values() for name in options_of(spec)}
    assert taken == set(OPTIONS)
    for spec in COMMANDS.values():
        assert spec.summary and len(spec.summary) <= 100  # Discord's and Telegram's limit for a description


def test_help_lists_every_command_and_option_in_registry_order():
    text = help_text(LimitsConfig())
    listed = [spec.name for spec in COMMANDS.values() if spec.usage]
    assert [name for name in listed if f"/{name}" in text] == listed
    positions = [text.index(f"/{name}") for name in listed]
    assert positions == sorted(positions)
    for name in OPTIONS:
        assert f"  --{name} " in text


# ---- a toy kind, registered for one test ----------------------------------------------------------
@pytest.fixture
def registries():
    """Snapshot every registry, and put it back after the test."""
    saved = [(base._KINDS, dict(base._KINDS)), (registry.COMMANDS, dict(registry.COMMANDS)),
             (registry._BY_NAME, dict(registry._BY_NAME)), (grammar.OPTIONS, dict(grammar.OPTIONS)),
             (grammar._BY_NAME, dict(grammar._BY_NAME)), (limits._RULES, dict(limits._RULES))]
    yield
    for live, copy in saved:
        live.clear()
        live.update(copy)
    base._codec.cache_clear()


def test_a_new_kind_is_one_params_class_one_command_and_their_registration_lines(registries):
    # storage layer: the params and what they say of themselves.
    @register
    @dataclass(frozen=True, kw_only=True)
    class EchoParams(JobParams):
        kind: Literal["echo"] = "echo"
        loud: int = 1
        RANGES: ClassVar[dict[str, Range]] = {**JobParams.RANGES, "loud": Range("loud", 1, 11)}
        LABEL: ClassVar[str] = "toy echo job"

        def title(self) -> str:
            return "an echo"

        def summary(self) -> list[str]:
            return [f"loud {self.loud}"]

    # bot layer: its option, its rules and its command.
    register_option(Option("loud", (), whole("loud"), "how loud, 1–11", "loud", EchoParams.RANGES["loud"]))
    limits.register_rules("echo", lambda params, limits: [LimitProblem("loud", "no echo at 7")] if params.loud == 7 else [])

    @dataclass(frozen=True)
    class Echo(Command):
        name = "echo"
        settings: Settings

    def parse_echo(words, defaults):
        free, values = split_options(words, loose_keys=False)
        registry.only_options_of(spec, values)
        return Echo(settings(values, defaults))

    async def run(service, owner, command, attachments):
        return Reply("echo")

    spec = registry.register(CommandSpec(name="echo", usage="/echo [--loud N] — an echo", summary="an echo",
                                         parse=parse_echo, run=run, options=("seed", "loud"),
                                         params=(Param("word", "text", "unused"),)))

    # The history codec knows it, exactly.
    echo = EchoParams(seed=3, loud=5)
    assert params_from_json(params_to_json(echo)) == echo and "echo" in kinds()
    # The grammar and /help know it; other commands refuse its option and name its command.
    assert parse("/echo --loud 5", DEFAULTS) == Echo(Settings(loud=5))
    assert "/echo [--loud N] — an echo" in help_text(LimitsConfig()) and "  --loud " in help_text(LimitsConfig())
    with pytest.raises(CommandError, match=r"^--loud is for /echo$"):
        parse("/imagine a cat --loud 3", DEFAULTS)
    assert commands.from_options("echo", {"loud": 4}, DEFAULTS) == Echo(Settings(loud=4))
    # /rerun takes it as a setting, and the limits check its range and its own rule.
    assert parse("/rerun #1 loud=9", DEFAULTS).settings == Settings(loud=9)
    with pytest.raises(CommandError, match="^loud must be 1–11, got 12$"):
        check_params(echo.replace(loud=12), LimitsConfig())
    with pytest.raises(CommandError, match="^no echo at 7$"):
        check_params(echo.replace(loud=7), LimitsConfig())
    # A rerun may change only what the kind allows.
    assert echo.rerun_refusal("seed", 4, 1) is None
    assert echo.rerun_refusal("steps", 30, 1) == "job #1 is a toy echo job; a rerun of it cannot change steps"
