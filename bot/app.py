"""Start-up: we own the one event loop; storage, then the queue, then each frontend."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from bot.config import Config
from bot.console import ConsoleFrontend
from bot.service import Service
from generation.diffusion import DiffusionEngine
from generation.engine import Engine
from generation.queue import JobQueue, QueueLimits
from storage.history import History
from storage.images import ImageStore
from storage.lock import DataDirLock
from storage.records import JobKind

log = logging.getLogger(__name__)


def configure_logging(data_dir: Path, verbose: bool) -> None:
    """Full log in data_dir/easel.log; only warnings on the terminal unless verbose."""
    data_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(data_dir / "easel.log", encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in (file_handler, terminal):
        handler.setFormatter(fmt)
    logging.basicConfig(level=logging.INFO, handlers=[file_handler, terminal], force=True)
    for noisy in ("diffusers", "transformers"):  # their warnings are advice to library authors
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for chatty in ("httpx", "PIL"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def build_engines(config: Config) -> dict[JobKind, Engine]:
    """The engine for each kind of job; the weights load on the first job that needs them."""
    diffusion = DiffusionEngine(config.generation)
    return {kind: diffusion for kind in DiffusionEngine.KINDS}


async def serve(config: Config, console_only: bool = False) -> None:
    """Open storage, start the worker, run the frontends; on the way out the worker stops cleanly."""
    with DataDirLock(config.storage.data_dir):
        await _serve(config, console_only)


async def _serve(config: Config, console_only: bool) -> None:
    async with await History.open(config.database) as history:
        images = ImageStore(config.storage.data_dir)
        queue = JobQueue(history, images, build_engines(config), QueueLimits(**config.queue.model_dump()))
        service = Service(config, history, images, queue)
        await queue.start()
        try:
            if not console_only:
                for name in ("discord", "telegram"):
                    if getattr(config, name).token is not None:
                        log.warning("a %s token is set, but this version of easel has no %s frontend yet; "
                                    "using the console", name, name.capitalize())
            await ConsoleFrontend(service).run()
        except asyncio.CancelledError:  # Ctrl-C: say so now, since the current step (or a load) finishes first
            print("easel: stopping after the current step; Ctrl-C again to quit at once "
                  "(unfinished jobs run on the next start)", file=sys.stderr, flush=True)
            raise
        finally:
            await queue.stop()
