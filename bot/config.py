"""The one config object: read once from TOML, checked key by key, passed through constructors."""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from bot.limits import LimitsConfig, limit_problems
from storage.params.base import CFG, STEPS
from storage.params.img2img import STRENGTH
from generation.config import ActionsConfig, FacesConfig, GenerationConfig, ModelsConfig, SketchConfig, TrainingConfig, \
    UpscaleConfig
from generation.queue import QueueLimits
from generation.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from generation.wire import RedisSettings
from storage.errors import EaselError
from storage.params import Img2ImgParams

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ConfigError(EaselError):
    """The config file is missing a piece, has an unknown key or a bad value; the text names it."""


class StorageConfig(BaseModel):
    model_config = _FROZEN
    data_dir: Path = Path("data")


class DefaultsConfig(BaseModel):
    """What a job gets when the command does not say."""

    model_config = _FROZEN
    steps: int = Field(30, ge=STEPS.low)
    cfg: float = Field(7.0, ge=CFG.low)
    width: int = Field(512, ge=64)
    height: int = Field(512, ge=64)
    scheduler: str = DEFAULT_SCHEDULER
    negative_prompt: str = ""
    strength: float = Field(0.75, gt=STRENGTH.low, le=STRENGTH.high)

    # Field validators (not one model validator) so the error location names the exact key.
    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"must be one of {', '.join(SCHEDULERS)}, got {value!r}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value


class QueueConfig(BaseModel):
    model_config = _FROZEN
    max_per_user: int = Field(5, ge=1, le=100_000)
    max_total: int = Field(50, ge=1, le=100_000)
    # "local": one GPU in this process (the default, no extra service). "redis": the bot dispatches,
    # `easel worker` processes draw, on this machine or any other that reaches redis_url.
    backend: Literal["local", "redis"] = "local"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")  # may hold a password: never logged
    redis_prefix: str = Field("easel", pattern=r"^[A-Za-z0-9_.-]+$")  # keys and queues, per easel install
    lease_seconds: int = Field(30, ge=1, le=3600)  # a worker silent this long is dead: its job moves on
    sweep_seconds: int = Field(5, ge=1, le=600)  # how often workers look for such jobs (whole seconds)

    def limits(self) -> QueueLimits:
        return QueueLimits(self.max_per_user, self.max_total)

    # Checked here, so a typo is one line at start-up; the message never repeats the URL (it may hold a password).
    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number 0–65535)
        except ValueError:
            raise ValueError("its port must be a number 1–65535, e.g. redis://127.0.0.1:6379/0") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("names no host, e.g. redis://127.0.0.1:6379/0") from None
        return value


def require_redis() -> None:
    """[queue] backend = "redis" runs on SAQ and the Redis client, an extra; say how to get them."""
    try:
        import redis  # noqa: F401
        import saq  # noqa: F401
    except ImportError as exc:
        raise EaselError(f'[queue] backend = "redis" needs SAQ and the Redis client ({exc.name} is not installed): '
                         'pip install -e ".[redis]"') from exc


def require_redis_backend(queue: QueueConfig) -> None:
    """`easel worker` and `easel workers` only make sense with [queue] backend = "redis"."""
    if queue.backend != "redis":
        raise EaselError('[queue] backend is "local", so the bot draws jobs itself and sends none to workers; '
                         'set backend = "redis" (and redis_url) in the config of the bot and of every worker')


def redis_settings(queue: QueueConfig) -> RedisSettings:
    """Where the Redis queue is, for the bot and its workers; refuses a config that does not use it."""
    require_redis_backend(queue)
    return RedisSettings(url=queue.redis_url.get_secret_value(), prefix=queue.redis_prefix,
                         lease_seconds=queue.lease_seconds, sweep_seconds=queue.sweep_seconds)


class AccessConfig(BaseModel):
    """Admins may cancel anyone's jobs; entries look like "discord:1234" or "telegram:5678"."""

    model_config = _FROZEN
    admins: tuple[str, ...] = ()


class _FrontendConfig(BaseModel):
    """What every chat frontend needs: its bot token, or None when it is not configured."""

    model_config = _FROZEN
    token: SecretStr | None = None

    # `token = ""` (as in the example file) or a blank variable means "not configured", not "log in with nothing".
    @field_validator("token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value


class DiscordConfig(_FrontendConfig):
    """[discord]: the bot token (EASEL_DISCORD_TOKEN wins over it) and where the bot may be used."""

    # Servers whose slash commands are synced at start-up (instant); empty = a global sync (can take an hour).
    guild_ids: tuple[int, ...] = ()
    # Where the bot answers; empty = anywhere it is invited. Elsewhere it says why, privately.
    allowed_guilds: tuple[int, ...] = ()
    allowed_channels: tuple[int, ...] = ()
    allowed_roles: tuple[int, ...] = ()  # a member needs one of these roles
    # Whether people may use the bot in direct messages. A DM obeys the same rule as a server: with
    # allowed_guilds or allowed_roles set, only a member of an allowed server holding an allowed role there.
    dms: bool = True
    admin_roles: tuple[int, ...] = ()  # members with one of these may cancel anyone's jobs
    # Another address for Discord's API and gateway: a rate-limit proxy, or a test server. Empty = Discord.
    api_base: str = ""  # e.g. "http://127.0.0.1:8080/api/v10"
    gateway_url: str = ""  # e.g. "ws://127.0.0.1:8080/"


class TelegramConfig(_FrontendConfig):
    """[telegram]: the bot token (EASEL_TELEGRAM_TOKEN wins over it), the Bot API server, who may use it."""

    # Your own Bot API server (it also lifts the 20 MB download limit); empty = Telegram's.
    base_url: str = ""  # e.g. "http://127.0.0.1:8081/bot"
    base_file_url: str = ""  # e.g. "http://127.0.0.1:8081/file/bot"
    allowed_chats: tuple[int, ...] = ()  # empty = any chat
    allowed_users: tuple[int, ...] = ()  # empty = anyone
    admin_users: tuple[int, ...] = ()  # may cancel anyone's jobs
    default_prompt: str = ""  # for a photo sent without a caption; empty = ask for one
    send_png: bool = False  # also send each result's PNG (with its parameters) as a file

    @model_validator(mode="after")
    def _file_url_with_base_url(self) -> TelegramConfig:
        if bool(self.base_url) != bool(self.base_file_url):
            raise ValueError("set both base_url and base_file_url (your own Bot API server), or neither")
        return self


class WebConfig(BaseModel):
    """[web]: the gallery of everything easel drew, served beside the chat frontends by `easel run`."""

    model_config = _FROZEN
    enabled: bool = False
    host: str = "127.0.0.1"  # only this machine; a reverse proxy (Caddy, nginx) puts it on the internet with TLS
    port: int = Field(8765, ge=1, le=65535)
    # The address people open, as the links /gallery gives them carry it (behind a proxy: https://easel.example.org);
    # empty = http://host:port.
    base_url: str = ""
    link_hours: float = Field(24.0, gt=0, le=24 * 365)  # how long a /gallery link works

    @property
    def address(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


class Config(BaseModel):
    """Everything easel reads from config.toml; every section has working defaults."""

    model_config = _FROZEN
    storage: StorageConfig = StorageConfig()
    generation: GenerationConfig = GenerationConfig()
    models: ModelsConfig = ModelsConfig()
    sketch: SketchConfig = SketchConfig()
    faces: FacesConfig = FacesConfig()
    upscale: UpscaleConfig = UpscaleConfig()
    actions: ActionsConfig = ActionsConfig()
    training: TrainingConfig = TrainingConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    limits: LimitsConfig = LimitsConfig()
    queue: QueueConfig = QueueConfig()
    access: AccessConfig = AccessConfig()
    discord: DiscordConfig = DiscordConfig()
    telegram: TelegramConfig = TelegramConfig()
    web: WebConfig = WebConfig()

    @property
    def database(self) -> Path:
        return self.storage.data_dir / "easel.db"

    @model_validator(mode="after")
    def _models_named_well(self) -> Config:
        from generation.models import catalog

        try:
            catalog(self.generation, self.models)  # [generation] model and a [models.default] table must not clash
        except EaselError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Config:
        # A default over a limit would refuse every command that leaves that setting out.
        problems = _defaults_over_limits(self.defaults, self.limits)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("default_over_limit", "{message}", {"message": message}),
                                 loc=("defaults", key), input=getattr(self.defaults, key, None))
                for key, message in problems
            ])
        return self


def _defaults_over_limits(defaults: DefaultsConfig, limits: LimitsConfig) -> list[tuple[str, str]]:
    """(key in [defaults], what is wrong) for each default the limits would refuse in every command."""
    import bot.commands  # noqa: F401 - registers each kind's rules (a prompt's length, a size) with the limits

    # As an image→image job, so the strength rule is checked too; prompt, n and seed have no default.
    job = Img2ImgParams(
        prompt="", negative_prompt=defaults.negative_prompt, seed=0, steps=defaults.steps, cfg=defaults.cfg,
        width=defaults.width, height=defaults.height, count=1, scheduler=defaults.scheduler,
        strength=defaults.strength, input_sha256="",
    )
    keys = {"size": "width × height"}
    return [
        (keys.get(problem.setting, problem.setting),
         problem.message + (f" (set by [limits] {problem.limit})" if problem.limit else ""))
        for problem in limit_problems(job, limits)
    ]


ENV_TOKENS = {"EASEL_DISCORD_TOKEN": "discord", "EASEL_TELEGRAM_TOKEN": "telegram"}


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and check config; no file means all defaults. Tokens in the environment win over the file."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (`easel init {path}` writes one with every key "
                              "commented)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text") from None
        except OSError as exc:  # a folder, no permission…: say so instead of a traceback at start-up
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    for variable, section in ENV_TOKENS.items():
        if environ.get(variable, "").strip():  # set but blank counts as not set
            data.setdefault(section, {})
            if isinstance(data[section], dict):
                data[section]["token"] = environ[variable]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(error) for error in exc.errors())) from None
    return config


def _describe(error: Mapping) -> str:
    location = [str(part) for part in error["loc"]]
    table = location[:2] == ["models", "named"] and len(location) > 3  # a key of a [models.<name>] table
    if table:
        key = f"[models.{location[2]}] {'.'.join(location[3:])}"
    elif location and location[0] in Config.model_fields and len(location) > 1:
        key = f"[{location[0]}] {'.'.join(location[1:])}"
    else:
        key = ".".join(location) or "config"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        if len(location) == 1 and isinstance(error.get("input"), dict):  # a whole section: [generaton]
            return f"[{location[0]}]: unknown section{_did_you_mean(location[0], Config.model_fields, '[{}]')}"
        if len(location) == 1:  # a key above every section
            homes = [f"[{name}] {location[0]}" for name, field in Config.model_fields.items()
                     if location[0] in field.annotation.model_fields]
            hint = f"did you mean {' or '.join(homes)}?" if homes else "keys go under a section such as [defaults]"
            return f"{key}: unknown key outside any section ({hint})"
        section = Config.model_fields.get(location[0])
        known = section.annotation.model_fields if section is not None and len(location) == 2 else {}
        if table:
            from generation.config import ModelEntry

            known = ModelEntry.model_fields
        message = f"unknown key{_did_you_mean(location[-1], known, '{}')} (every key is in config.example.toml)"
    # Never echo the rejected value of a token back into logs.
    return f"{key}: {message}"


def _did_you_mean(name: str, known, shape: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {shape.format(close[0])}?)" if close else ""


def example_config() -> str:
    """The commented example config: beside the package in a checkout (editable install), else where the
    wheel put it (<prefix>/share/easel)."""
    for place in (Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "easel"):
        path = place / "config.example.toml"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise EaselError("config.example.toml is not installed with easel; copy it from easel's source")
