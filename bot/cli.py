"""The `easel` command: run, console, init, worker, workers, train-pix2pix, make-tiny-model."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storage.errors import EaselError

if TYPE_CHECKING:
    from generation.wire import RedisSettings


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    if os.environ.get("EASEL_CONFIG"):
        return Path(os.environ["EASEL_CONFIG"])
    default = Path("config.toml")
    return default if default.exists() else None


def main(argv: list[str] | None = None) -> int:
    # --config and -v go before or after the subcommand; SUPPRESS keeps a subcommand's unset copy
    # from overwriting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default: $EASEL_CONFIG, else ./config.toml if present)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress to the terminal too")
    parser = argparse.ArgumentParser(prog="easel", description="Self-hosted image-generation bot.", parents=[common])
    parser.add_argument("--version", action="version", version=f"easel {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, **options) -> argparse.ArgumentParser:
        # The summary shows in `easel --help` and, as the description, in `easel NAME --help`.
        return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".", **options)

    command("run", "start every configured frontend (Discord, Telegram; the console when none is)", parents=[common])
    command("console", "talk to easel in this terminal, or pipe commands into it", parents=[common])
    init = command("init", "write a commented config.toml to start from (every key, with its default)")
    init.add_argument("path", nargs="?", type=Path, default=Path("config.toml"), help="where (default: ./config.toml)")
    worker = command("worker", "draw jobs from Redis on this machine's GPU ([queue] backend = \"redis\")",
                     parents=[common])
    worker.add_argument("--kinds", help="the job kinds this worker takes, comma-separated (default: every kind)")
    worker.add_argument("--models", help="the models this worker draws with, by name, comma-separated "
                        "(default: every configured model); jobs of other models go to other workers")
    worker.add_argument("--name", help="how /queue and `easel workers` name it (default: host-pid)")
    command("workers", "list the workers connected to Redis", parents=[common])
    train = command("train-pix2pix", "train a pix2pix drawing→photo model on a folder of your photos (resumable)",
                    parents=[common])
    train.add_argument("photos", help="the folder of photos (JPEG, PNG, …; not its subfolders)")
    train.add_argument("--name", required=True, help="what to call the model (letters, digits, - and _); "
                       "/sketch … --pix2pix NAME draws with it")
    train.add_argument("--epochs", type=int, default=100, help="epochs at the full learning rate (default 100)")
    train.add_argument("--decay-epochs", type=int, default=100,
                       help="then epochs with the rate falling linearly to 0 (default 100)")
    train.add_argument("--iterations", type=int, default=0,
                       help="stop after this many iterations in all, for a short run (default: every epoch)")
    train.add_argument("--edges", choices=("canny", "xdog"), default="canny",
                       help="how a photo becomes a line drawing: canny (default) or xdog")
    train.add_argument("--seed", type=int, default=0, help="the initial weights and the shuffling (default 0)")
    train.add_argument("--ngf", type=int, default=64,
                       help="the networks' base width (pix2pix's 64; less trains faster and draws worse)")
    tiny = command("make-tiny-model", "write a tiny random-weight SD model (draws noise) for tests and offline tries")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--family", choices=("sd15", "sdxl"), default="sd15",
                      help="sd15 (default) or sdxl: two text encoders and SDXL's size conditioning")
    tiny.add_argument("--controlnet", type=Path, metavar="DIR",
                      help="also write a matching tiny ControlNet here (for [sketch] controlnet or controlnet_sdxl)")
    args = parser.parse_args(argv)
    config_file, verbose = getattr(args, "config", None), getattr(args, "verbose", False)

    if args.command == "make-tiny-model":
        from generation.tiny import make_tiny_controlnet, make_tiny_model

        target = args.dir
        try:
            folder = make_tiny_model(target, family=args.family)
            if args.controlnet is not None:
                target = args.controlnet
                make_tiny_controlnet(folder, target)
        except OSError as exc:  # a file in the way, a read-only folder, a full disk
            print(f"easel: cannot write a model to {target}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        xl = args.family == "sdxl"
        print(f"wrote a tiny random-weight {'SDXL' if xl else 'Stable Diffusion 1.5'} model to {folder} "
              "(it draws noise, not pictures);")
        print(f'use it with [generation] model = "{folder}", or as a [models.<name>] table\'s source')
        if args.controlnet is not None:
            key = "controlnet_sdxl" if xl else "controlnet"
            print(f'and a tiny ControlNet in {args.controlnet}: [sketch] {key} = "{args.controlnet}"')
        return 0

    if args.command == "init":
        return _init(args.path)
    if args.command in ("worker", "workers"):
        return _worker(config_file, verbose, args)
    if args.command == "train-pix2pix":
        return _train(config_file, verbose, args)
    try:
        return _serve(config_file, verbose, console_only=args.command == "console")
    except KeyboardInterrupt:  # Ctrl-C before the event loop took over signals (imports, start-up)
        print("easel: stopped; unfinished jobs run again on the next start", file=sys.stderr, flush=True)
        _exit_interrupted()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easel")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _init(path: Path) -> int:
    """Write the example config, every key commented, where easel will read it."""
    from bot.config import example_config

    try:
        text = example_config()
        with path.open("x", encoding="utf-8") as file:  # never overwrite someone's config
            file.write(text)
    except FileExistsError:
        print(f"easel: {path} already exists; edit it, or give another path: easel init other.toml", file=sys.stderr)
        return 2
    except (OSError, EaselError) as exc:
        print(f"easel: cannot write {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}; every key is optional and commented. Then: easel run")
    return 0


def _fail(exc: BaseException) -> int:
    """One line for a problem the person can fix; anything else once with its traceback in easel.log."""
    from bot.logs import secrets

    if isinstance(exc, EaselError):
        print(f"easel: {secrets.scrub(str(exc))}", file=sys.stderr)
        return 2
    logging.getLogger("easel").error("easel stopped: unexpected error", exc_info=exc)
    return 1


def _serve(config_file: str | None, verbose: bool, console_only: bool) -> int:
    from bot.app import serve  # the whole bot (and pydantic, PIL…): after the argument check
    from bot.config import load_config
    from bot.logs import configure_logging, secrets_of

    try:
        config = load_config(_config_path(config_file))
        configure_logging(config.storage.data_dir, verbose, secrets_of(config))
        return asyncio.run(serve(config, console_only=console_only))
    except asyncio.CancelledError:  # the first Ctrl-C or SIGTERM: a clean stop, the running job requeued
        print("easel: stopped; unfinished jobs run again on the next start", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # one line; a traceback only in easel.log
        return _fail(exc)


def _train(config_file: str | None, verbose: bool, args: argparse.Namespace) -> int:
    try:
        from bot.config import load_config
        from bot.logs import configure_logging, secrets_of
        from bot.train_cli import train_pix2pix

        config = load_config(_config_path(config_file))
        configure_logging(config.storage.data_dir, verbose, secrets_of(config), name="easel-train.log")
        return train_pix2pix(config, args)
    except KeyboardInterrupt:  # before the training took over Ctrl-C (it checkpoints then)
        print("easel: stopped before training began", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # one line; a traceback only in the log
        return _fail(exc)


def _worker(config_file: str | None, verbose: bool, args: argparse.Namespace) -> int:
    from bot.config import load_config, redis_settings, require_redis, require_redis_backend
    from bot.logs import configure_logging, secrets_of
    from generation.engines import ENGINES

    try:
        config = load_config(_config_path(config_file))
        # Workers on other machines share no disk with the bot: each keeps its own log beside its data.
        configure_logging(config.storage.data_dir, verbose, secrets_of(config), name="easel-worker.log")
        require_redis_backend(config.queue)  # backend = "local" is the first thing to say, before a missing extra
        if args.command == "workers":
            require_redis()
            print(asyncio.run(_list_workers(redis_settings(config.queue))))
            return 0
        names = list(ENGINES) if args.kinds is None else [name.strip() for name in args.kinds.split(",") if name.strip()]
        unknown = [name for name in names if name not in ENGINES]
        if unknown or not names:
            print(f"easel: --kinds takes {', '.join(ENGINES)}; not {', '.join(unknown) or 'nothing'}", file=sys.stderr)
            return 2
        from generation.files import HASH_CACHE
        from generation.models import catalog

        configured = catalog(config.generation, config.models)
        models = [] if args.models is None else [name.strip() for name in args.models.split(",") if name.strip()]
        missing = [name for name in models if name not in configured]
        if missing or (args.models is not None and not models):
            print(f"easel: --models takes {', '.join(configured)}; not {', '.join(missing) or 'nothing'}",
                  file=sys.stderr)
            return 2
        require_redis()
        from generation.worker import Worker, default_name  # imports torch

        if config.generation.compile:  # as `easel run` does: compiled kernels survive restarts in the data folder
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(config.storage.data_dir / "torch-compile-cache"))
        os.environ.setdefault(HASH_CACHE, str(config.storage.data_dir / "model-hashes.json"))
        worker = Worker(redis_settings(config.queue), config, tuple(dict.fromkeys(names)), args.name or default_name(),
                        tuple(dict.fromkeys(models)))
        return asyncio.run(worker.run())
    except KeyboardInterrupt:
        _exit_interrupted()
    except Exception as exc:
        return _fail(exc)


async def _list_workers(settings: RedisSettings) -> str:
    """`easel workers`: one line per live worker."""
    import time

    from generation.redis_link import connect, live_workers

    client = await connect(settings)
    try:
        workers = await live_workers(client, settings)
    finally:
        await client.aclose()
    if not workers:
        return "no easel workers are connected"
    now = time.time()
    lines = [f"{'worker':24} {'gpu':28} {'kinds':28} {'models':16} {'done':>5}  running  heartbeat"]
    for worker in workers:
        running = f"#{worker.running}" if worker.running else "-"
        models = ",".join(worker.models) or "all"
        lines.append(f"{worker.name:24} {worker.gpu[:28]:28} {','.join(worker.kinds)[:28]:28} {models[:16]:16} "
                     f"{worker.done:5d}  {running:7}  {now - worker.seen:.0f} s ago")
    return "\n".join(lines)


def _exit_interrupted() -> None:
    """Exit with 130 after a Ctrl-C that landed in start-up (torch's imports take seconds).

    CPython marks a KeyboardInterrupt that leaves code run by exec() (dataclasses and torch build
    methods that way) as unhandled even once caught, and then ends the process by SIGINT instead of
    the exit status; nothing is left to clean up at this point, so leave at once with the right one.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
