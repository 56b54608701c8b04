"""The command grammar: every form a person may type, and the exact text of every refusal."""

from __future__ import annotations

import pytest

from bot.commands import (
    Cancel,
    Help,
    Imagine,
    Rerun,
    Settings,
    ShowHistory,
    ShowQueue,
    help_text,
    parse,
    size_for_aspect,
)
from bot.config import DefaultsConfig, LimitsConfig
from bot.limits import CommandError, check_params
from storage.errors import EaselError
from tests.conftest import params

DEFAULTS = DefaultsConfig()
LIMITS = LimitsConfig()


def imagine(text: str) -> Imagine:
    command = parse(text, DEFAULTS)
    assert isinstance(command, Imagine)
    return command


def refusal(text: str, defaults: DefaultsConfig = DEFAULTS) -> str:
    with pytest.raises(CommandError) as caught:
        parse(text, defaults)
    return str(caught.value)


# ---- /imagine ------------------------------------------------------------------------------
def test_imagine_prompt_alone_gives_nothing_but_the_prompt():
    assert parse("/imagine a red lighthouse at dusk", DEFAULTS) == Imagine("a red lighthouse at dusk", Settings())


@pytest.mark.parametrize(
    "options, expected",
    [
        ("--seed 42", Settings(seed=42)),
        ("--steps 70", Settings(steps=70)),
        ("--cfg 7.5", Settings(cfg=7.5)),
        ("--size 768x512", Settings(width=768, height=512)),
        ("--size 640X384", Settings(width=640, height=384)),
        ("--ar 1:1", Settings(width=512, height=512)),
        ("--ar 16:9", Settings(width=704, height=384)),
        ("--n 3", Settings(count=3)),
        ("--strength 0.4", Settings(strength=0.4)),
        ("--scheduler euler_a", Settings(scheduler="euler_a")),
        ("--scheduler DPM++-2M", Settings(scheduler="dpmpp_2m")),
        ("--no blurry", Settings(negative_prompt="blurry")),
        ("--seed 1_000", Settings(seed=1000)),
    ],
)
def test_each_option_in_all_three_spellings(options, expected):
    flag, value = options.split(" ", 1)
    key = flag.removeprefix("--")
    for text in (f"/imagine a cat {flag} {value}", f"/imagine a cat {flag}={value}", f"/imagine a cat {key}={value}"):
        assert imagine(text) == Imagine("a cat", expected), text


@pytest.mark.parametrize(
    "alias, expected",
    [
        ("--negative ugly", Settings(negative_prompt="ugly")),
        ("guidance=9", Settings(cfg=9.0)),
        ("--aspect 2:1", Settings(width=704, height=384)),
        ("--count 2", Settings(count=2)),
        ("sampler=ddim", Settings(scheduler="ddim")),
        ("--SEED 5", Settings(seed=5)),
    ],
)
def test_aliases_and_case_of_option_names(alias, expected):
    assert imagine(f"/imagine a cat {alias}") == Imagine("a cat", expected)


@pytest.mark.parametrize("dash", ["\u2014", "\u2013"])  # em dash, en dash
def test_a_phone_dash_before_an_option_name_means_two_hyphens(dash):
    # iOS and Android turn "--" into "—" as you type.
    command = imagine(f"/imagine a cat {dash}seed 42 {dash}steps=9 {dash}no dark clouds {dash}AR 2:1")
    assert command == Imagine("a cat", Settings(seed=42, steps=9, negative_prompt="dark clouds", width=704, height=384))
    assert parse(f"/rerun 42 {dash}cfg 3", DEFAULTS) == Rerun(None, 42, Settings(cfg=3.0))
    # Anywhere else a dash is part of the prompt.
    assert imagine(f"/imagine a cat {dash} on a mat {dash}sitting").prompt == f"a cat {dash} on a mat {dash}sitting"
    assert imagine(f"/imagine 1990{dash}2000 {dash} an era").prompt == f"1990{dash}2000 {dash} an era"


def test_options_may_sit_anywhere_and_the_prompt_is_the_remaining_words():
    command = imagine("/imagine --seed 42 a cat steps=70 on a mat --cfg=5")
    assert command == Imagine("a cat on a mat", Settings(seed=42, steps=70, cfg=5.0))


def test_negative_prompt_takes_words_up_to_the_next_option():
    command = imagine("/imagine a castle --no blurry low quality text --seed 4 at night")
    assert command.prompt == "a castle at night"
    assert command.settings == Settings(negative_prompt="blurry low quality text", seed=4)
    # Ending at a key=value option and at the end of the line too; quotes around it are dropped.
    assert imagine("/imagine a castle no=blurry text steps=9").settings == Settings(negative_prompt="blurry text", steps=9)
    assert imagine('/imagine a castle --no "washed out colours"').settings.negative_prompt == "washed out colours"


def test_unknown_key_value_stays_in_an_imagine_prompt():
    command = imagine("/imagine e=mc2 on a blackboard, style=chalk --seed 3")
    assert command == Imagine("e=mc2 on a blackboard, style=chalk", Settings(seed=3))


def test_botname_suffix_and_case_of_the_command_are_ignored():
    assert parse("/imagine@easel_bot a fox", DEFAULTS) == Imagine("a fox", Settings())
    assert parse("/IMAGINE a fox", DEFAULTS) == Imagine("a fox", Settings())
    assert parse("/queue@easel_bot", DEFAULTS) == ShowQueue()


def test_aspect_ratio_uses_the_configured_pixel_count():
    small = DefaultsConfig(width=256, height=256)
    command = parse("/imagine a cat --ar 2:1", small)
    assert (command.settings.width, command.settings.height) == size_for_aspect(2, 1, 256 * 256) == (384, 192)


# ---- /imagine refusals ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("/imagine a cat --sed 4",
         "unknown option --sed; did you mean --seed?"),
        ("/imagine a cat --seed 4 seed=5", "seed is given twice"),
        ("/imagine a cat --n 2 --count 3", "n is given twice"),
        ("/imagine a cat --steps", "--steps needs a value: denoising steps: a few dozen for drafts, hundreds for a final rerun"),
        ("/imagine a cat --steps --seed 4",
         "--steps needs a value: denoising steps: a few dozen for drafts, hundreds for a final rerun"),
        ("/imagine a cat steps=", "--steps needs a value: denoising steps: a few dozen for drafts, hundreds for a final rerun"),
        ("/imagine a cat --no --seed 3", "--no needs a value: negative prompt: what to keep out of the picture"),
        ("/imagine a cat --steps many", "steps must be a whole number, got 'many'"),
        ("/imagine a cat --seed 4.5", "seed must be a whole number, got '4.5'"),
        ("/imagine a cat --n two", "n must be a whole number, got 'two'"),
        ("/imagine a cat --cfg high", "cfg must be a number, got 'high'"),
        ("/imagine a cat --cfg nan", "cfg must be a finite number, got 'nan'"),
        ("/imagine a cat --strength inf", "strength must be a finite number, got 'inf'"),
        ("/imagine a cat --size 512", "size must look like 768x512, got '512'"),
        ("/imagine a cat --ar wide", "ar must look like 16:9, got 'wide'"),
        ("/imagine a cat --ar 16:9 --size 512x512", "give either --ar or --size, not both"),
        ("/imagine a cat --ar 1:5", "aspect ratio must be between 1:4 and 4:1, got 1:5"),
        ("/imagine a cat --ar 0:1", "aspect ratio sides must be positive, got 0:1"),
        ("/imagine", "the prompt is empty; describe what to draw, e.g. /imagine a red lighthouse at dusk"),
        ("/imagine --seed 4 --steps 9", "the prompt is empty; describe what to draw, e.g. /imagine a red lighthouse at dusk"),
    ],
)
def test_imagine_refusals_say_exactly_what_is_wrong(text, message):
    assert refusal(text) == message


def test_unknown_scheduler_lists_the_choices_and_marks_ancestral_ones():
    message = refusal("/imagine a cat --scheduler karras")
    assert message.startswith("unknown scheduler 'karras'; choose one of: dpmpp_2m, ")
    assert "euler_a (ancestral)" in message


def test_command_errors_are_safe_to_show():
    assert issubclass(CommandError, EaselError)


# ---- other commands ------------------------------------------------------------------------
def test_rerun_forms():
    assert parse("/rerun", DEFAULTS) == Rerun(None, None, Settings())
    assert parse("/rerun 265", DEFAULTS) == Rerun(None, 265, Settings())
    assert parse("/rerun #12", DEFAULTS) == Rerun(12, None, Settings())
    assert parse("/rerun 265 steps=350 --cfg 8", DEFAULTS) == Rerun(None, 265, Settings(steps=350, cfg=8.0))
    assert parse("/rerun steps=350", DEFAULTS) == Rerun(None, None, Settings(steps=350))
    assert parse("/rerun #3 --no dark clouds n=2", DEFAULTS) == Rerun(3, None, Settings(negative_prompt="dark clouds", count=2))
    assert parse("/rerun@easel_bot #3", DEFAULTS) == Rerun(3, None, Settings())


@pytest.mark.parametrize(
    "text, message",
    [
        ("/rerun 265 stpes=350", "unknown setting 'stpes'; did you mean steps?"),
        ("/rerun 1 2", "/rerun takes one seed or #job and key=value settings, got '1 2'"),
        ("/rerun a cat", "/rerun takes one seed or #job and key=value settings, got 'a cat'"),
        ("/rerun cat", "seed must be a whole number, got 'cat'"),
        ("/rerun #x", "job number must be a whole number, got 'x'"),
        ("/rerun #0", "job number must be 1 or more, got 0"),
        ("/rerun 4 steps=9 steps=10", "steps is given twice"),
        # Every number is bounded here, before it can reach SQLite (which stops at 2**63 - 1).
        ("/rerun 99999999999999999999999", f"seed must be 0–{2**32 - 1}, got 99999999999999999999999"),
        ("/rerun -5", f"seed must be 0–{2**32 - 1}, got -5"),
        ("/rerun #99999999999999999999999", "there is no job #99999999999999999999999"),
        ("/rerun #" + "9" * 400, "there is no job #99999999999999999999…"),
        ("/cancel #9223372036854775808", "there is no job #9223372036854775808"),
        ("/rerun " + "7" * 5000, "seed must be a whole number, got '77777777777777777777…'"),
    ],
)
def test_rerun_refusals(text, message):
    assert refusal(text) == message


def test_history_queue_cancel_and_help():
    assert parse("/history", DEFAULTS) == ShowHistory(10)
    assert parse("/history 3", DEFAULTS) == ShowHistory(3)
    assert parse("/history 500", DEFAULTS) == ShowHistory(50)  # capped: a chat message has room for so much
    assert parse("/cancel", DEFAULTS) == Cancel(None)
    assert parse("/cancel #7", DEFAULTS) == Cancel(7)
    assert parse("/cancel 7", DEFAULTS) == Cancel(7)
    assert parse("/queue", DEFAULTS) == ShowQueue()
    assert parse("/help", DEFAULTS) == Help()
    assert parse("/start", DEFAULTS) == Help()  # what Telegram sends when someone opens the chat


@pytest.mark.parametrize(
    "text, message",
    [
        ("/history 0", "history length must be 1 or more, got 0"),
        ("/history lots", "history length must be a whole number, got 'lots'"),
        ("/history 3 4", "/history does not take '4'"),
        ("/cancel #", "job number must be a whole number, got ''"),
        ("/cancel #-2", "job number must be 1 or more, got -2"),
        ("/cancel #2 #3", "/cancel does not take '#3'"),
        ("/queue now", "/queue does not take 'now'"),
        ("/draw a cat", "unknown command /draw; commands are /imagine, /sketch, /face, /rerun, /upscale, /vary, /zoom, /pan, "
         "/animate, /train, /describe, /models, /gallery, /history, /cancel, /queue, /help"),
        ("a red lighthouse", "commands start with /, e.g. /imagine a red lighthouse (/help lists them)"),
        ("imagine a cat", "commands start with /, e.g. /imagine a cat (/help lists them)"),
        ("   ", "type a command, e.g. /imagine a red lighthouse at dusk (/help lists them)"),
        ("", "type a command, e.g. /imagine a red lighthouse at dusk (/help lists them)"),
    ],
)
def test_other_refusals(text, message):
    assert refusal(text) == message


def test_help_text_lists_every_option_and_the_configured_limits():
    text = help_text(LimitsConfig(max_steps=120, max_count=2))
    for option in ("--no", "--seed", "--steps", "--cfg", "--ar", "--size", "--n", "--strength", "--scheduler"):
        assert f"  {option} " in text
    assert "attach an image for image→image (console: --image PATH)" in text.splitlines()[0]
    # strength 0 is refused (see check_params), so help must not offer it.
    [strength] = [line for line in text.splitlines() if line.startswith("  --strength ")]
    assert strength.split(None, 1)[1] == "image→image: just above 0 stays close to the input, 1 ignores it"
    assert "0 keeps" not in text
    assert "limits: steps 1–120, cfg 0–30, n 1–2, sides 64–2048 (multiples of 8), at most 2,359,296 pixels" in text
    assert "(word:1.5) ×1.5" in text and "BREAK" in text  # the prompt syntax is explained


def test_help_states_the_limits_that_are_enforced():
    text = help_text(LimitsConfig(max_prompt_chars=2000))
    # A 2,106-character prompt is refused ("the limit is 2000"), so help must not say "any length".
    assert "any length" not in text
    assert "up to 2,000 characters, the negative prompt too" in text
    assert "your last N jobs (at most 50)" in text and parse("/history 51", DEFAULTS) == ShowHistory(50)
    [psi] = [line for line in text.splitlines() if line.startswith("  --psi ")]
    assert psi.split(None, 1)[1].startswith("/face: -1–2;")  # the range check_params enforces


# ---- size_for_aspect -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "ratio, area, size",
    [
        ((1, 1), 512 * 512, (512, 512)),
        ((16, 9), 512 * 512, (704, 384)),
        ((9, 16), 512 * 512, (384, 704)),
        ((3, 2), 512 * 512, (640, 448)),
        ((4, 1), 512 * 512, (1024, 256)),
        ((1, 4), 64 * 64, (64, 128)),
        ((4, 3), 1024 * 1024, (1152, 896)),
    ],
)
def test_size_for_aspect(ratio, area, size):
    width, height = size_for_aspect(*ratio, area)
    assert (width, height) == size
    assert width % 64 == 0 and height % 64 == 0


def test_size_for_aspect_never_goes_below_64():
    assert size_for_aspect(4, 1, 64 * 64) == (128, 64)
    assert size_for_aspect(1, 1, 10) == (64, 64)


@pytest.mark.parametrize(
    "ratio, message",
    [
        ((0, 5), "aspect ratio sides must be positive, got 0:5"),
        ((9, 2), "aspect ratio must be between 1:4 and 4:1, got 9:2"),
        ((1, 5), "aspect ratio must be between 1:4 and 4:1, got 1:5"),
    ],
)
def test_size_for_aspect_refusals(ratio, message):
    with pytest.raises(CommandError, match=f"^{message}$"):
        size_for_aspect(*ratio, 512 * 512)


def test_parsed_settings_applied_to_params_go_through_check_params():
    command = imagine("/imagine a cat --steps 100000")
    job = command.settings.apply(params(prompt="a cat"))
    assert (job.steps, job.prompt, job.seed) == (100000, "a cat", 42)
    with pytest.raises(CommandError, match="^steps must be 1–500, got 100000$"):
        check_params(job, LIMITS)


# ---- typed options (slash commands) -------------------------------------------------------------
def test_typed_options_use_the_same_names_parsers_and_messages_as_text():
    from bot.commands import from_options

    def imagine_from_options(prompt, given, defaults):
        return from_options("imagine", {**given, "prompt": prompt}, defaults)

    def rerun_from_options(ref, given, defaults):
        return from_options("rerun", {**given, "ref": ref}, defaults)

    command = imagine_from_options("a sign that says x=5", {"seed": 42, "steps": 4, "negative": "blur",
                                                             "aspect": "16:9", "count": 2, "cfg": 7.5}, DEFAULTS)
    assert command == Imagine("a sign that says x=5", Settings(negative_prompt="blur", seed=42, steps=4, cfg=7.5,
                                                               width=704, height=384, count=2))
    inline = imagine_from_options("a cat --seed 7 steps=70", {"cfg": 9.0}, DEFAULTS)
    assert inline == Imagine("a cat", Settings(seed=7, steps=70, cfg=9.0))
    with pytest.raises(CommandError, match="^seed is given twice, as an option and in the prompt; keep one$"):
        imagine_from_options("a cat --seed 7", {"seed": 8}, DEFAULTS)
    with pytest.raises(CommandError, match="^unknown scheduler 'karras'"):
        imagine_from_options("a cat", {"scheduler": "karras"}, DEFAULTS)
    with pytest.raises(CommandError, match="^ar must look like 16:9, got 'wide'$"):
        imagine_from_options("a cat", {"aspect": "wide"}, DEFAULTS)
    with pytest.raises(CommandError, match="^the prompt is empty"):
        imagine_from_options("--seed 3", {}, DEFAULTS)
    assert rerun_from_options("265", {"steps": 350}, DEFAULTS) == Rerun(None, 265, Settings(steps=350))
    assert rerun_from_options("#12", {}, DEFAULTS) == Rerun(12, None, Settings())
    assert rerun_from_options(None, {"seed": None}, DEFAULTS) == Rerun(None, None, Settings())
    with pytest.raises(CommandError, match="^there is no job #99999999999999999999$"):
        rerun_from_options("#99999999999999999999", {}, DEFAULTS)
