"""Logging: the whole story in easel.log, one line per problem on the terminal, never a secret anywhere."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from storage.errors import StorageError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"


class SecretFilter(logging.Filter):
    """Replaces every configured secret (bot tokens, the Redis password) in a record before any handler
    writes it: in the message, its arguments, the traceback text and the stack, including the text of
    exceptions raised by libraries (python-telegram-bot's "The token `…` was rejected")."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Scrub these from now on; longest first, so a secret that contains another is masked whole."""
        kept = {secret for secret in secrets if secret and len(secret) >= 4}  # never mask "a" everywhere
        self.secrets = tuple(sorted(kept, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Render once, scrubbed, so no handler's formatter can put an argument back in.
        record.msg = self.scrub(record.getMessage())
        record.args = None
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            record.error_line = self.scrub(one_line(error))  # what the terminal shows instead of a traceback
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


class TerminalFormatter(logging.Formatter):
    """One line per record: the traceback stays in easel.log unless the terminal asked for it (-v)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(FORMAT)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        # Formatter.format would append exc_text; format a copy without it (other handlers still get it).
        copy = logging.makeLogRecord(record.__dict__)
        copy.exc_info, copy.exc_text, copy.stack_info = None, None, None
        line = super().format(copy)
        # The error's own line, as the secret filter scrubbed it; a record that skipped the filter shows none.
        error_line = getattr(record, "error_line", None)
        if error_line and error_line.partition(": ")[2] not in line:
            line += f" ({error_line})"
        log_file = _file_log()
        return line + (f" (traceback in {log_file})" if record.exc_info and log_file else "")


class ShownElsewhere(logging.Filter):
    """Drops records marked `extra={"shown": True}` (their text already reached the person who asked,
    e.g. a job's failure) while the console is that person's window, so it is not printed twice."""

    def __init__(self) -> None:
        super().__init__()
        self.console = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.console and getattr(record, "shown", False))


class _FileLog(logging.FileHandler):
    """easel.log, which on its first failed write (a full disk) says so once and stops, rather than
    printing a "Logging error" traceback for every later line."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or error
        print(f"easel: cannot write {self.baseFilename} ({reason}); logging to the terminal only from now on",
              file=sys.stderr, flush=True)
        logging.getLogger().removeHandler(self)
        with contextlib.suppress(Exception):
            self.close()


secrets = SecretFilter()  # one filter on every handler; configure_logging fills it from the config
shown_elsewhere = ShownElsewhere()


def secrets_of(config) -> list[str]:
    """The secrets a config holds: bot tokens and the password in redis_url."""
    found = [frontend.token.get_secret_value() for frontend in (config.discord, config.telegram)
             if frontend.token is not None]
    password = urlsplit(config.queue.redis_url.get_secret_value()).password  # the port was checked at load
    return found + [password] if password else found


def configure_logging(data_dir: Path, verbose: bool, hidden: Iterable[str] = (), name: str = "easel.log") -> None:
    """Full log in data_dir/name; one line per warning on the terminal, everything with tracebacks when
    verbose. `hidden` are secrets scrubbed from both."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        file_handler = _FileLog(data_dir / name, encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"cannot use the data folder {data_dir}: {exc.strerror or exc}; "
            "set [storage] data_dir to a folder easel can write"
        ) from None
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    terminal.setFormatter(TerminalFormatter(verbose))
    terminal.addFilter(shown_elsewhere)
    handlers: list[logging.Handler] = [file_handler, terminal]
    secrets.update(hidden)
    for handler in handlers:
        handler.addFilter(secrets)  # on the handler, not a logger: records from every library pass here
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    for noisy in ("diffusers", "transformers"):  # their warnings are advice to library authors
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for chatty in ("httpx", "PIL"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _file_log() -> str | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename).name
    return None


def one_line(error: BaseException) -> str:
    """An error in one line for a log or a message: "ConnectError: All connection attempts failed"."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
