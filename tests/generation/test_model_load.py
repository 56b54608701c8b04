"""Why a model did not load, told so a newcomer can act: the real cause, a complete message, the next step.

The hub cases run the real huggingface_hub against real failures: a port nothing listens on (connection
refused), a host name that cannot resolve (RFC 6761 keeps .invalid unresolvable; the fake hub redirects
there, as huggingface.co redirects downloads to its CDN) and a small fake hub on 127.0.0.1 for the hub's
own answers. huggingface_hub reads HF_ENDPOINT once, at import, so those loads run in fresh interpreters
with that environment, started together to keep the import cost (a few seconds each) down.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.engine import ModelLoadError
from tests.generation.ldm_checkpoint import write_ldm_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_HINT = (
    'try easel offline right now with `easel make-tiny-model tiny-model` and model = "tiny-model" in config.toml '
    "(it draws noise, but shows the whole path works)."
)
CONFIG_HINT = "set [generation] model in config.toml (`easel init` writes one, every key commented) to a local diffusers folder"


def assert_readable(text: str) -> None:
    """One paragraph, no traceback, no library noise, and never cut inside a word."""
    assert "\n" not in text and "Traceback" not in text and len(text) < 900, text
    assert "outgoing traffic has been disabled" not in text and "local_files_only" not in text, text
    for match in re.finditer("…", text):  # a shortened reason ends after a whole word (or sentence)
        assert text[match.start() - 1] not in " ", text
        assert match.end() == len(text) or text[match.end()] == " ", text


# ---- in this process: local paths, offline mode -------------------------------------------------------

def load_failure(model: str, caplog: pytest.LogCaptureFixture, **config: str) -> tuple[str, list[logging.LogRecord]]:
    """The message a job would show, and what went to easel.log, for a load of `model` that must fail."""
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=model, **config))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="generation.diffusion"):
        with pytest.raises(ModelLoadError) as caught:
            engine.load()
    assert engine._txt2img is None  # unloaded: the next job tries again
    records = [record for record in caplog.records if record.name == "generation.diffusion.loading"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR  # logged once, since the queue does not
    assert str(caught.value) in records[0].getMessage()
    assert_readable(str(caught.value))
    return str(caught.value), records


def logged_traceback(record: logging.LogRecord) -> str:
    assert record.exc_info is not None, "the log should hold the library's exception with its traceback"
    return logging.Formatter().formatException(record.exc_info)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF_HUB_OFFLINE=1 and an empty hub cache, as a machine set up for offline use but never online."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-home" / "hub"
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_offline_mode_and_not_downloaded_says_so(offline: Path, caplog: pytest.LogCaptureFixture) -> None:
    text, records = load_failure(DEFAULT_MODEL, caplog)
    assert text.startswith(
        f"could not load model {DEFAULT_MODEL!r}: Hugging Face offline mode is on (HF_HUB_OFFLINE is set) and the "
        f"model is not downloaded yet (nothing usable in {offline}). To fix it, unset HF_HUB_OFFLINE and connect "
        "once so the first download (about 4 GB for SD 1.5) can finish; or "
    )
    assert CONFIG_HINT in text and text.endswith(TINY_HINT)
    assert "Traceback (most recent call last)" in logged_traceback(records[0])
    assert "OfflineModeIsEnabled" in logged_traceback(records[0])


def test_a_relative_path_read_as_a_hub_id_points_at_the_missing_folder(
    offline: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    text, _ = load_failure("models/sd15", caplog)
    assert "offline mode is on" in text
    assert f"(If you meant a local folder: {str(tmp_path / 'models' / 'sd15')!r} does not exist.)" in text


@pytest.mark.parametrize("name", ["sd15", "v1-5-pruned-emaonly.safetensors"])
def test_a_relative_path_that_does_not_exist_says_where_it_looked(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    model = f"./models/{name}"
    text, records = load_failure(model, caplog)
    what = "file" if name.endswith(".safetensors") else "folder"
    assert text.startswith(
        f"model {what} {model!r} does not exist (looked for {str(tmp_path / 'models' / name)!r}); fix [generation] "
        "model in your config"
    )
    assert text.endswith(TINY_HINT)
    assert records[0].exc_info is None  # our own check: the message is the whole story


def test_a_folder_with_a_checkpoint_but_no_model_index_names_the_file(
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "dreamy_v2.safetensors").write_bytes(b"")
    text, _ = load_failure(str(tmp_path / "downloads"), caplog)
    assert "no model_index.json" in text
    assert f"model = {str(tmp_path / 'downloads' / 'dreamy_v2.safetensors')!r} would load it" in text


def test_a_folder_of_another_family_is_named_as_one_before_loading(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, tiny_model: Path,
) -> None:
    # StableDiffusionPipeline would load an SD3 folder's parts it knows and fail mid-job; SDXL folders load as SDXL.
    folder = tmp_path / "sd3"
    shutil.copytree(tiny_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusion3Pipeline"
    index["transformer"] = ["diffusers", "SD3Transformer2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    text, _ = load_failure(str(folder), caplog)
    assert text.startswith(f"{str(folder)!r} is a StableDiffusion3Pipeline model, not Stable Diffusion 1.x/2.x or SDXL")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_folder_with_missing_or_cut_weights_says_which_file(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, tiny_model: Path, damage: str,
) -> None:
    folder = tmp_path / "half-copied"
    shutil.copytree(tiny_model, folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    if damage == "missing":
        weights.unlink()
    else:  # a copy that stopped early
        weights.write_bytes(weights.read_bytes()[:1000])
    text, records = load_failure(str(folder), caplog)
    assert text.startswith(f"could not load model {str(folder)!r}: ")
    if damage == "missing":
        assert "no file named diffusion_pytorch_model" in text and str(folder / "unet") in text
    else:
        assert str(weights) in text and "(Error while deserializing header" in text  # safetensors' own words
    assert "does not load as a complete Stable Diffusion 1.x/2.x model in diffusers format" in text
    assert "Traceback (most recent call last)" in logged_traceback(records[0])


def test_a_folder_of_another_shape_gives_the_library_reason_uncut(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, tiny_model: Path,
) -> None:
    folder = tmp_path / "other-shape"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["cross_attention_dim"] *= 2  # the weights on disk no longer fit the architecture
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    text, records = load_failure(str(folder), caplog)
    assert "expected shape" in text and "does not load as a complete Stable Diffusion 1.x/2.x model" in text
    assert "ignore_mismatched_sizes" in logged_traceback(records[0])  # the library's whole text is in the log


# ---- in a fresh interpreter: the network and the hub --------------------------------------------------

LOAD_SCRIPT = r"""
import json, logging, sys
from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.engine import ModelLoadError

class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
    def emit(self, record):
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.records.append(dict(level=record.levelname, message=record.getMessage(), traceback=trace))

keep = Keep()
logging.getLogger("generation.diffusion").addHandler(keep)
results = []
for model, single_file_config in json.loads(sys.argv[1]):
    engine = DiffusionEngine(GenerationConfig(device="cpu", model=model, single_file_config=single_file_config))
    keep.records.clear()
    errors = []
    for attempt in range(2):  # a failed load leaves the engine unloaded: the next job tries again
        try:
            engine.load()
        except ModelLoadError as exc:
            errors.append(str(exc))
    results.append(dict(errors=errors, unloaded=engine._txt2img is None, log=list(keep.records)))
print("RESULTS " + json.dumps(results))
"""

SHA = "0" * 40


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers like huggingface.co does for a few repos that cannot be loaded, each for its own reason."""

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if "/unresolvable-host" in self.path:  # on to a host that does not resolve, like a CDN with DNS down
            self.send_response(302)
            self.send_header("Location", f"http://easel-no-such-host.invalid{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "/no-such-model" in self.path:  # the hub answers 401 for a repo that does not exist (or is private)
            self.answer(401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
        elif "/gated-model" in self.path:
            self.answer(403, b'{"error":"Access restricted"}', {"X-Error-Code": "GatedRepo"})
        elif self.path.startswith("/api/models/easel-tests/"):  # the repo exists: its metadata
            repo = "/".join(self.path.split("/")[3:5])
            body = {"id": repo, "sha": SHA, "siblings": [{"rfilename": "model_index.json"}]}
            self.answer(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        elif "/not-diffusers/" in self.path:  # a repo with weights but no model_index.json
            self.answer(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"})
        elif "/broken-index/" in self.path:  # a model_index.json that is not JSON: none of the causes above
            self.answer(200, b"{ not json", {"X-Repo-Commit": SHA, "ETag": '"1"'})
        else:
            self.answer(404, b"{}", {})

    def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def hub_loads(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """The result of each load below, keyed by a name; every hub answers or fails for real."""
    checkpoint = write_ldm_checkpoint(tiny_model, tmp_path_factory.mktemp("checkpoints") / "tinyDream_v10.safetensors")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    runs = {
        f"http://127.0.0.1:{closed_port()}": {
            "refused": (DEFAULT_MODEL, ""),
            "refused-checkpoint": (str(checkpoint), ""),
            "refused-checkpoint-config": (str(checkpoint), "easel-tests/sd15-configs"),
        },
        f"http://127.0.0.1:{server.server_address[1]}": {
            "dns": ("easel-tests/unresolvable-host", ""),
            "not-found": ("easel-tests/no-such-model", ""),
            "gated": ("easel-tests/gated-model", ""),
            "not-diffusers": ("easel-tests/not-diffusers", ""),
            "broken-index": ("easel-tests/broken-index", ""),
        },
    }
    started = []
    for number, (endpoint, loads) in enumerate(runs.items()):
        home = tmp_path_factory.mktemp(f"hf-home-{number}")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE_"))}
        env.pop("TRANSFORMERS_OFFLINE", None)
        env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"))
        env.update(HF_HUB_DISABLE_TELEMETRY="1")
        process = subprocess.Popen(
            [sys.executable, "-c", LOAD_SCRIPT, json.dumps(list(loads.values()))],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append((process, list(loads)))
    results: dict[str, dict] = {}
    try:
        for process, names in started:
            out, err = process.communicate(timeout=120)
            lines = [line for line in out.splitlines() if line.startswith("RESULTS ")]
            assert process.returncode == 0 and lines, err[-3000:]
            results.update(zip(names, json.loads(lines[-1].removeprefix("RESULTS ")), strict=True))
        yield results
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
        server.shutdown()
        server.server_close()


def hub_failure(hub_loads: dict[str, dict], name: str) -> tuple[str, dict]:
    """The message of a failed load (checked like a job's), and the one record it left in the log."""
    result = hub_loads[name]
    first, again = result["errors"]
    assert first == again and result["unloaded"]  # the next job tries again and fails the same way
    assert_readable(first)
    assert len(result["log"]) == 2 and all(record["level"] == "ERROR" for record in result["log"])  # once a load
    record = result["log"][0]
    assert first in record["message"] and "Traceback (most recent call last)" in record["traceback"]
    return first, record


@pytest.mark.parametrize(
    ("name", "model", "cause"),
    [
        ("refused", DEFAULT_MODEL, r"connection to 127\.0\.0\.1:\d+ refused"),
        ("dns", "easel-tests/unresolvable-host", r"cannot resolve easel-no-such-host\.invalid: [^()]+"),
    ],
)
def test_no_network_names_the_real_cause_and_what_to_do(hub_loads: dict, name: str, model: str, cause: str) -> None:
    text, record = hub_failure(hub_loads, name)
    assert re.fullmatch(
        rf"could not download model {re.escape(repr(model))} from the Hugging Face hub: no network "
        rf"connection \({cause}\), and the model is not \(fully\) in the local cache yet\. To fix it, connect once "
        r"so the first download \(about 4 GB for SD 1\.5\) can finish; or .*",
        text,
    ), text
    assert "offline mode" not in text
    assert CONFIG_HINT in text and text.endswith(TINY_HINT)
    assert "ConnectError" in record["traceback"]  # the library's own error, with its traceback


def test_no_network_for_a_checkpoints_configs(hub_loads: dict) -> None:
    text, record = hub_failure(hub_loads, "refused-checkpoint")
    assert re.match(
        r"could not load model '.*tinyDream_v10\.safetensors': a checkpoint file needs the configs of its model "
        r"family, and they could not be fetched from the Hugging Face hub: no network connection \(connection to "
        r"127\.0\.0\.1:\d+ refused\)\. Set \[generation\] single_file_config to a local diffusers folder",
        text,
    ), text
    assert text.endswith("or connect once so they can be downloaded.")
    assert "ConnectError" in record["traceback"]
    text, _ = hub_failure(hub_loads, "refused-checkpoint-config")
    assert "single_file_config 'easel-tests/sd15-configs' is not a local folder and could not be fetched" in text
    assert "no network connection (connection to 127.0.0.1:" in text


def test_no_such_repo_on_the_hub_asks_to_check_the_spelling(hub_loads: dict) -> None:
    text, record = hub_failure(hub_loads, "not-found")
    assert re.match(
        r"no model 'easel-tests/no-such-model' on the Hugging Face hub at http://127\.0\.0\.1:\d+; check the "
        r"spelling \(hub ids look like 'stable-diffusion-v1-5/stable-diffusion-v1-5'\), or log in with "
        r"`hf auth login` if it is private\. Or set \[generation\] model in config\.toml",
        text,
    ), text
    assert "network" not in text and text.endswith(TINY_HINT)
    assert "RepositoryNotFoundError" in record["traceback"]


def test_a_gated_repo_says_how_to_get_access(hub_loads: dict) -> None:
    text, _ = hub_failure(hub_loads, "gated")
    assert re.match(
        r"model 'easel-tests/gated-model' on the Hugging Face hub is gated: accept its terms at "
        r"http://127\.0\.0\.1:\d+/easel-tests/gated-model while logged in, then run `hf auth login`",
        text,
    ), text


def test_a_hub_repo_without_model_index_is_not_a_diffusers_model(hub_loads: dict) -> None:
    text, _ = hub_failure(hub_loads, "not-diffusers")
    assert text.startswith(
        "model 'easel-tests/not-diffusers' on the Hugging Face hub has no file 'model_index.json', so it is not a "
        "Stable Diffusion 1.x/2.x model in diffusers format"
    )


def test_anything_else_gives_the_exception_type_and_message(hub_loads: dict) -> None:
    text, record = hub_failure(hub_loads, "broken-index")
    assert text.startswith("could not load model 'easel-tests/broken-index': JSONDecodeError: ")
    assert text.endswith("The full traceback is in easel.log.")
    assert "JSONDecodeError" in record["traceback"]
