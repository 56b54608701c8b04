"""Config: one typed object from TOML; every mistake named by its key; tokens kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from bot.config import Config, ConfigError, DefaultsConfig, LimitsConfig, load_config
from generation.config import DEFAULT_MODEL
from storage.errors import EaselError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "MTIzNDU2Nzg5.secret-token-value.abcdef"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={} if environ is None else environ)
    return str(caught.value)


def test_no_file_means_all_defaults():
    config = load_config(None, environ={})
    assert config == Config()
    assert config.defaults.steps == 30 and config.defaults.cfg == 7.0
    assert (config.defaults.width, config.defaults.height) == (512, 512)
    assert config.defaults.scheduler == "dpmpp_2m" and config.defaults.strength == 0.75
    assert config.limits.max_steps == 500 and config.limits.max_pixels == 1536 * 1536
    assert config.queue.max_per_user == 5 and config.queue.max_total == 50
    assert config.generation.model == DEFAULT_MODEL
    assert config.access.admins == ()
    assert config.discord.token is None and config.telegram.token is None
    assert config.database == Path("data") / "easel.db"


def test_the_example_file_loads_and_matches_the_defaults():
    example = REPO / "config.example.toml"
    assert load_config(example, environ={}) == Config()


def test_a_file_overrides_what_it_names_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, """
[storage]
data_dir = "/srv/easel"

[generation]
model = "/models/dreamshaper.safetensors"
memory = "low"

[defaults]
steps = 25
scheduler = "euler_a"

[limits]
max_steps = 150

[access]
admins = ["discord:1234", "telegram:5678"]
""")
    config = load_config(path, environ={})
    assert config.storage.data_dir == Path("/srv/easel")
    assert config.database == Path("/srv/easel/easel.db")
    assert config.generation.model == "/models/dreamshaper.safetensors" and config.generation.memory == "low"
    assert config.defaults.steps == 25 and config.defaults.scheduler == "euler_a"
    assert config.defaults.cfg == 7.0  # untouched key keeps its default
    assert config.limits.max_steps == 150 and config.limits.max_count == 4
    assert config.access.admins == ("discord:1234", "telegram:5678")
    assert config.queue == Config().queue


def test_config_is_frozen():
    config = Config()
    with pytest.raises(ValidationError):
        config.defaults.steps = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, named",
    [
        ("[defaults]\nstpes = 30\n", "[defaults] stpes: unknown key (did you mean steps?)"),
        ("[limits]\nmax_step = 30\n", "[limits] max_step: unknown key (did you mean max_steps?)"),
        ("[generation]\nmodle = 'x'\n", "[generation] modle: unknown key (did you mean model?)"),
        ("[generation]\nzzz = 'x'\n", "[generation] zzz: unknown key (every key is in config.example.toml)"),
        ("[defualts]\nsteps = 30\n", "[defualts]: unknown section (did you mean [defaults]?)"),
        ("[generaton]\nmodel = 'x'\n", "[generaton]: unknown section (did you mean [generation]?)"),
        ("steps = 30\n", "steps: unknown key outside any section (did you mean [defaults] steps?)"),
        ("[models.xl]\nsorce = 'a/b'\n", "[models.xl] sorce: unknown key (did you mean source?)"),
        ("[models]\nkeep_in_rma = 2\n", "[models] keep_in_rma: unknown key (did you mean keep_in_ram?)"),
    ],
)
def test_unknown_keys_are_named_with_their_section(tmp_path, text, named):
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: ")
    assert named in message
    assert "config.example.toml" in message or "section" in message  # where to look, or where it belongs


@pytest.mark.parametrize(
    "text, named",
    [
        ('[defaults]\nsteps = "many"\n', "[defaults] steps: Input should be a valid integer"),
        ("[defaults]\nsteps = 0\n", "[defaults] steps: Input should be greater than or equal to 1"),
        ("[defaults]\nstrength = 1.5\n", "[defaults] strength: Input should be less than or equal to 1"),
        ("[defaults]\nwidth = 500\n", "[defaults] width: must be a multiple of 8, got 500"),
        ("[defaults]\nheight = 516\n", "[defaults] height: must be a multiple of 8, got 516"),
        ('[defaults]\nscheduler = "karras"\n', "[defaults] scheduler: must be one of dpmpp_2m, "),
        ("[limits]\nmax_count = 0\n", "[limits] max_count: Input should be greater than or equal to 1"),
        ("[queue]\nmax_per_user = -1\n", "[queue] max_per_user: Input should be greater than or equal to 1"),
        # Huge limits would let numbers through that nothing downstream can hold.
        ("[limits]\nmax_steps = 100000000000000000000\n", "[limits] max_steps: Input should be less than or equal to 10000"),
        ("[limits]\nmax_count = 9999999\n", "[limits] max_count: Input should be less than or equal to 64"),
        ("[queue]\nmax_total = 10000000000\n", "[queue] max_total: Input should be less than or equal to 100000"),
        ('[generation]\nmemory = "huge"\n', "[generation] memory: Input should be 'auto', 'speed', 'balanced'"),
        ('[generation]\ndevice = "tpu"\n', "[generation] device: "),
        ('[access]\nadmins = "discord:1"\n', "[access] admins: "),
        ('defaults = 3\n', "defaults: "),
        ("[models.xl]\nsource = 'a/b'\nfamily = 'sd3'\n", "[models.xl] family: Input should be 'auto', 'sd1'"),
        ("[models.default]\nsource = 'a/b'\n", "[models.default] table exists too"),
        ("[models.sd]\nsource = 'a/b'\nrefiner = 'c/d'\n", "[models.sd] refiner: a refiner finishes SDXL pictures"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, named):
    message = config_error(write(tmp_path, text))
    assert named in message


@pytest.mark.parametrize(
    "text, message",
    [
        ("[defaults]\nsteps = 600\n", "[defaults] steps: steps must be 1–500, got 600 (set by [limits] max_steps)"),
        ("[defaults]\nsteps = 60\n[limits]\nmax_steps = 50\n", "[defaults] steps: steps must be 1–50, got 60 (set by [limits] max_steps)"),
        ("[defaults]\ncfg = 12.5\n[limits]\nmax_cfg = 12\n", "[defaults] cfg: cfg must be 0–12, got 12.5 (set by [limits] max_cfg)"),
        ("[defaults]\nwidth = 1024\n[limits]\nmax_side = 768\n", "[defaults] width: width must be a multiple of 8 from 64 to 768, got 1024 (set by [limits] max_side)"),
        ("[defaults]\nheight = 2560\n", "[defaults] height: height must be a multiple of 8 from 64 to 2048, got 2560 (set by [limits] max_side)"),
        ("[defaults]\nwidth = 2048\nheight = 2048\n",
         "[defaults] width × height: 2048x2048 is 4,194,304 pixels; the limit is 2,359,296 (e.g. 1536 square) "
         "(set by [limits] max_pixels)"),
        ('[defaults]\nnegative_prompt = "blurry, ugly"\n[limits]\nmax_prompt_chars = 10\n',
         "[defaults] negative_prompt: the negative prompt is 12 characters; the limit is 10 "
         "(set by [limits] max_prompt_chars)"),
        ("[defaults]\nsteps = 1\nstrength = 0.5\n",
         "[defaults] strength: image→image runs int(steps × strength) steps: 1 × 0.5 gives 0; "
         "use at least 2 steps or a higher strength"),
    ],
)
def test_defaults_must_fit_the_limits(tmp_path, text, message):
    # Otherwise every command that leaves the setting out is refused.
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: {message}"


def test_defaults_over_limits_are_all_named_and_also_refused_in_code():
    with pytest.raises(ValidationError) as caught:
        Config(defaults=DefaultsConfig(steps=80, cfg=20.0), limits=LimitsConfig(max_steps=50, max_cfg=10.0))
    assert [(error["loc"], error["msg"]) for error in caught.value.errors()] == [
        (("defaults", "steps"), "steps must be 1–50, got 80 (set by [limits] max_steps)"),
        (("defaults", "cfg"), "cfg must be 0–10, got 20 (set by [limits] max_cfg)"),
    ]
    edge = Config(defaults=DefaultsConfig(steps=50, cfg=10.0, width=768, height=512),
                  limits=LimitsConfig(max_steps=50, max_cfg=10.0, max_side=768, max_pixels=768 * 512))
    assert edge.defaults.steps == 50


def test_every_problem_is_reported_at_once(tmp_path):
    message = config_error(write(tmp_path, "[defaults]\nsteps = 0\nstpes = 3\n[limits]\nmax_cfg = -2\n"))
    assert "[defaults] steps:" in message
    assert "[defaults] stpes: unknown key" in message
    assert "[limits] max_cfg:" in message


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[defaults\nsteps = 30\n")
    message = config_error(path)
    assert message.startswith(f"{path} is not valid TOML: ")
    assert "line 1" in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert config_error(path) == f"config file {path} does not exist (`easel init {path}` writes one with every key commented)"


def test_unreadable_files_are_config_errors_not_tracebacks(tmp_path):
    assert config_error(tmp_path).startswith(f"cannot read config file {tmp_path}: ")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00[defaults]")
    assert config_error(binary) == f"{binary} is not valid TOML: it is not UTF-8 text"


def test_config_errors_are_safe_to_show():
    assert issubclass(ConfigError, EaselError)


# ---- tokens ------------------------------------------------------------------------------------
def test_tokens_come_from_the_file(tmp_path):
    config = load_config(write(tmp_path, f'[discord]\ntoken = "{TOKEN}"\n'), environ={})
    assert isinstance(config.discord.token, SecretStr)
    assert config.discord.token.get_secret_value() == TOKEN
    assert config.telegram.token is None


def test_environment_tokens_win_over_the_file(tmp_path):
    path = write(tmp_path, '[discord]\ntoken = "from-file"\n[telegram]\ntoken = "tg-from-file"\n')
    environ = {"EASEL_DISCORD_TOKEN": "from-env", "EASEL_TELEGRAM_TOKEN": "tg-from-env"}
    config = load_config(path, environ=environ)
    assert config.discord.token.get_secret_value() == "from-env"
    assert config.telegram.token.get_secret_value() == "tg-from-env"


def test_environment_tokens_need_no_file_and_no_section():
    config = load_config(None, environ={"EASEL_TELEGRAM_TOKEN": TOKEN})
    assert config.telegram.token.get_secret_value() == TOKEN
    assert config.discord.token is None
    assert config.defaults == DefaultsConfig()


def test_an_empty_environment_variable_does_not_override(tmp_path):
    config = load_config(write(tmp_path, '[discord]\ntoken = "from-file"\n'), environ={"EASEL_DISCORD_TOKEN": ""})
    assert config.discord.token.get_secret_value() == "from-file"


@pytest.mark.parametrize("blank", ['""', '"   "', '"\\n"'])
def test_an_empty_token_in_the_file_is_no_token(tmp_path, blank):
    # `token = ""` is how the example file spells "not set"; it must not count as a configured frontend.
    config = load_config(write(tmp_path, f"[discord]\ntoken = {blank}\n[telegram]\ntoken = {blank}\n"), environ={})
    assert config.discord.token is None and config.telegram.token is None
    assert Config(discord={"token": ""}).discord.token is None
    assert Config(telegram={"token": SecretStr("  ")}).telegram.token is None


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_a_blank_environment_token_is_no_token(tmp_path, blank):
    environ = {"EASEL_DISCORD_TOKEN": blank, "EASEL_TELEGRAM_TOKEN": blank}
    assert load_config(None, environ=environ).discord.token is None
    config = load_config(write(tmp_path, '[telegram]\ntoken = "from-file"\n'), environ=environ)
    assert config.telegram.token.get_secret_value() == "from-file"  # a blank variable does not override
    assert config.discord.token is None


def test_unrelated_environment_is_ignored(tmp_path):
    config = load_config(None, environ={"EASEL_STEPS": "9", "DISCORD_TOKEN": TOKEN})
    assert config == Config()


def test_tokens_never_show_in_repr_or_str(tmp_path):
    path = write(tmp_path, f'[discord]\ntoken = "{TOKEN}"\n')
    config = load_config(path, environ={"EASEL_TELEGRAM_TOKEN": TOKEN + "-tg"})
    for text in (repr(config), str(config), repr(config.discord), str(config.telegram), str(config.model_dump())):
        assert TOKEN not in text
        assert "secret-token-value" not in text
    assert "**********" in repr(config)


@pytest.mark.parametrize(
    "text",
    [
        "[discord]\ntoken = 918273645546372819\n",                  # a number where a string belongs
        f'[discord]\ntoken = ["{TOKEN}"]\n',                      # a list holding the token
        f'[discord]\ntoken = {{ value = "{TOKEN}" }}\n',           # a table holding the token
        f'[discord]\ntokne = "{TOKEN}"\n',                        # a misspelt key holding the token
        f'[telegram]\ntoken = "{TOKEN}"\nextra = "{TOKEN}"\n',
        f'discord = "{TOKEN}"\n',                                 # the token where a section belongs
    ],
)
def test_rejected_token_values_never_appear_in_the_error(tmp_path, text):
    message = config_error(write(tmp_path, text))
    assert "discord" in message or "telegram" in message
    assert TOKEN not in message
    assert "secret-token-value" not in message
    assert "918273645546372819" not in message


def test_env_token_with_a_broken_section_is_not_echoed(tmp_path):
    # The file has `discord = "…"` (not a table): the env token cannot be placed, and neither value is shown.
    path = write(tmp_path, f'discord = "{TOKEN}"\n')
    message = config_error(path, environ={"EASEL_DISCORD_TOKEN": "env-" + TOKEN})
    assert message.startswith(f"{path}: discord: ")
    assert TOKEN not in message


def test_limits_defaults_are_consistent():
    limits = LimitsConfig()
    defaults = DefaultsConfig()
    assert defaults.steps <= limits.max_steps
    assert defaults.width * defaults.height <= limits.max_pixels


def test_easel_init_writes_the_commented_example_that_loads_and_never_overwrites(tmp_path, capsys):
    from bot.cli import main

    target = tmp_path / "config.toml"
    assert main(["init", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == (Path(__file__).resolve().parents[2] / "config.example.toml").read_text(encoding="utf-8")
    assert load_config(target) == Config()  # every key at its default
    target.write_text("[defaults]\nsteps = 12\n")
    assert main(["init", str(target)]) == 2  # someone's config is never replaced
    assert "already exists" in capsys.readouterr().err
    assert target.read_text() == "[defaults]\nsteps = 12\n"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://:hunter2@127.0.0.1:63x79/0", "its port must be a number 1–65535"),
    ("redis://:hunter2@127.0.0.1:99999/0", "its port must be a number 1–65535"),
    ("http://:hunter2@127.0.0.1:6379/0", "must start with redis://, rediss:// or unix://"),
    ("redis://:hunter2@:6379/0", "names no host"),
])
def test_a_malformed_redis_url_is_one_line_without_the_password(tmp_path, url, problem):
    message = config_error(write(tmp_path, f'[queue]\nbackend = "redis"\nredis_url = "{url}"\n'))
    assert "[queue] redis_url: " + problem in message and "hunter2" not in message
