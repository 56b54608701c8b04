"""Start-up and runtime faults as a person sees them in a terminal: one line, no traceback (that goes to
easel.log), never a token; a refused token ends easel non-zero, an unreachable platform is waited for.
Each test runs the real `easel` in a process against a throwaway server on 127.0.0.1 or a closed port."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from bot.logs import SecretFilter, TerminalFormatter
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TELEGRAM_TOKEN = "123456789:AAFakeTokenThatMustNeverBePrinted_0123456"
DISCORD_TOKEN = "MTAxFakeDiscordToken.NeverPrint.abcdefghijklmnopqrstuvwxyz0123"


def env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"}


async def easel(*args: str, cwd: Path, stdin: bytes = b"", until: str | None = None,
                seconds: float = 90) -> tuple[int, str, str]:
    """Run easel; with `until`, wait for that text on stderr, then SIGTERM it. Returns (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, cwd=cwd, env=env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if until is None:
        out, err = await asyncio.wait_for(process.communicate(stdin), seconds)
        return process.returncode, out.decode(), err.decode()
    process.stdin.close()
    seen = b""
    try:
        async with asyncio.timeout(seconds):
            while until.encode() not in seen:
                line = await process.stderr.readline()
                assert line, f"easel ended before saying {until!r}: {seen.decode()}"
                seen += line
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 20)  # a clean stop within seconds
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), (seen + err).decode()


def config(tmp_path: Path, tiny_model: Path, extra: str) -> Path:
    (tmp_path / "config.toml").write_text(
        f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n{extra}', encoding="utf-8")
    return tmp_path


def easel_log(workdir: Path) -> str:
    path = workdir / "data" / "easel.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def refusing_server(status: int, body: dict) -> tuple[web.AppRunner, int]:
    """An HTTP server that answers every request with `status` and a JSON body, as a platform refusing a token."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


TELEGRAM_AT = '[telegram]\ntoken = "{token}"\nbase_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
DISCORD_AT = '[discord]\ntoken = "{token}"\napi_base = "http://127.0.0.1:{port}/api/v10"\ngateway_url = "ws://127.0.0.1:{port}/"\n'


@pytest.mark.parametrize(("platform", "section", "token", "body"), [
    ("Telegram", TELEGRAM_AT, TELEGRAM_TOKEN, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
    ("Discord", DISCORD_AT, DISCORD_TOKEN, {"message": "401: Unauthorized", "code": 0}),
])
async def test_a_refused_token_is_one_line_naming_the_key_and_a_non_zero_exit(
    tmp_path: Path, tiny_model: Path, platform: str, section: str, token: str, body: dict,
) -> None:
    runner, port = await refusing_server(401, body)
    try:
        workdir = config(tmp_path, tiny_model, section.format(token=token, port=port))
        status, out, err = await easel("run", cwd=workdir)
    finally:
        await runner.cleanup()
    assert status == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"easel: {platform} refused the bot token ([{platform.lower()}] token, or "
                           f"EASEL_{platform.upper()}_TOKEN)"), err
    assert len(err.strip().splitlines()) <= 3 and "Traceback" not in err, err
    assert "PyNaCl" not in err and "davey" not in err  # easel never uses voice: no warning about it
    for text in (out, err, easel_log(workdir)):
        assert token not in text and token.split(":")[-1] not in text


@pytest.mark.parametrize(("platform", "section", "token"), [
    ("Telegram", TELEGRAM_AT, TELEGRAM_TOKEN), ("Discord", DISCORD_AT, DISCORD_TOKEN),
])
async def test_an_unreachable_platform_is_one_line_waited_for_and_sigterm_stops_it(
    tmp_path: Path, tiny_model: Path, platform: str, section: str, token: str,
) -> None:
    workdir = config(tmp_path, tiny_model, section.format(token=token, port=free_port()))  # nothing listens
    status, out, err = await easel("run", cwd=workdir, until=f"cannot reach {platform}")
    assert status == 0, err  # SIGTERM is how a service is stopped
    lines = err.strip().splitlines()
    assert len(lines) <= 5 and "Traceback" not in err, err
    assert any(f"cannot reach {platform} (" in line and "trying again" in line for line in lines), err
    log = easel_log(workdir)
    assert "Traceback" in log  # the whole story is in the log file
    for text in (out, err, log):
        assert token not in text
    # Open allow-lists are said once at start, in one line naming the keys.
    open_to_all = {"Telegram": "[telegram] allowed_users and allowed_chats are empty: anyone who finds this bot can use your GPU",
                   "Discord": "[discord] allowed_guilds is empty: any server this bot is invited to can use your GPU"}
    assert sum(open_to_all[platform] in line for line in lines) == 1, err


async def test_a_model_that_cannot_load_is_one_line_and_its_traceback_is_in_the_log(tmp_path: Path) -> None:
    # A hub id with the hub out of reach (HF_HUB_OFFLINE=1 here), as on a first start without network.
    (tmp_path / "config.toml").write_text('[generation]\nmodel = "easel-tests/not-downloaded"\ndevice = "cpu"\n')
    status, out, err = await easel("console", cwd=tmp_path, stdin=b"/imagine a red boat --steps 2\n")
    assert status == 1  # a piped console exits non-zero when a job failed
    assert "#1 failed: " in out and "easel-tests/not-downloaded" in out
    assert err == ""  # the console's own line is the one line: no log line, no traceback beside it
    log = easel_log(tmp_path)
    assert "model load failed" in log and "Traceback" in log


async def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    status, out, _ = await easel("--version", cwd=tmp_path)
    assert status == 0 and out.strip() == f"easel {version('easel')}"


async def test_run_help_describes_the_command(tmp_path: Path) -> None:
    status, out, _ = await easel("run", "--help", cwd=tmp_path)
    assert status == 0 and "Start every configured frontend" in out


def test_the_secret_filter_scrubs_telegrams_own_rejected_token_error() -> None:
    """python-telegram-bot's InvalidToken, raised the way its Bot.initialize raises it, repeats the token."""
    from telegram.error import InvalidToken

    try:
        try:
            raise InvalidToken("Unauthorized")
        except InvalidToken as exc:
            raise InvalidToken(f"The token `{TELEGRAM_TOKEN}` was rejected by the server.") from exc
    except InvalidToken as error:
        caught = error
    assert TELEGRAM_TOKEN in str(caught)  # the library's own text holds it
    secret = SecretFilter([TELEGRAM_TOKEN, "hunter2"])
    written = []
    for formatter in (logging.Formatter("%(message)s"), TerminalFormatter(verbose=False), TerminalFormatter(verbose=True)):
        record = logging.LogRecord("telegram.ext", logging.ERROR, __file__, 1, "polling failed for %s: %s",
                                   (f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe", caught), (type(caught), caught, caught.__traceback__), None)
        assert secret.filter(record)
        written.append(formatter.format(record))
    assert all(TELEGRAM_TOKEN not in text and "***" in text for text in written), written
    assert "Traceback" in written[0] and "Traceback" not in written[1] and "Traceback" in written[2]


def test_the_secret_filter_leaves_short_values_alone() -> None:
    secret = SecretFilter(["ab", ""])  # a one- or two-character "secret" would mask ordinary words
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "about abc", None, None)
    secret.filter(record)
    assert record.getMessage() == "about abc"


async def test_device_cuda_without_a_gpu_is_refused_at_start(tmp_path: Path, tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\ndevice = "cuda"\n')
    status, out, err = await easel("console", cwd=tmp_path, stdin=b"/imagine a boat\n")
    assert status == 2 and out == ""
    assert err.strip() == "easel: [generation] device is 'cuda' but torch sees no CUDA GPU; set device = \"auto\" or \"cpu\""
