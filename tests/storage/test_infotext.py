"""The PNG `parameters` chunk as AUTOMATIC1111 writes it, read back by an outside reader (sd-parsers)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from sd_parsers import ParserManager
from sd_parsers.data import PromptInfo

from generation.schedulers import SCHEDULERS
from storage.images import ImageStore
from storage.infotext import SAMPLER_NAMES, infotext, model_name, quote, read_parameters
from storage.records import RunInfo
from storage.params import Img2ImgParams, Txt2ImgParams

TRICKY = 'a "red", tall: lighthouse — café, 東京'
HASH = "6ce0161689b3853acaa03779ec93eafe"


def txt2img(**changes: object) -> Txt2ImgParams:
    base: dict[str, object] = dict(
        prompt="a lighthouse at dusk, oil painting", negative_prompt="", seed=42, steps=30, cfg=7.0,
        width=512, height=512, scheduler="dpmpp_2m",
    )
    return Txt2ImgParams(**{**base, **changes})


def img2img(**changes: object) -> Img2ImgParams:
    base: dict[str, object] = dict(
        prompt="a lighthouse at dusk", seed=42, steps=30, cfg=7.0, width=512, height=512,
        scheduler="dpmpp_2m", strength=0.75, input_sha256="ab" * 32,
    )
    return Img2ImgParams(**{**base, **changes})


def run_info(model: str = "/home/me/models/dream.safetensors", model_hash: str | None = HASH) -> RunInfo:
    return RunInfo(
        model=model, model_hash=model_hash, memory_profile="speed", attention="sdpa", dtype="float16",
        device="cuda", diffusers_version="0.42.1", torch_version="2.13.0",
    )


def saved(tmp_path: Path, text: str) -> Path:
    return ImageStore(tmp_path).save_output(7, 0, Image.new("RGB", (64, 64), (200, 90, 40)), text)


def read_back(path: Path) -> PromptInfo:
    info = ParserManager().parse(path)
    assert info is not None, "sd-parsers found no A1111 metadata"
    return info


# A1111's own reader (modules/infotext_utils.py, parse_generation_parameters), reduced to the part
# that decides what our writer must get right: the last line is the settings, each "Key: value" ends
# at a comma unless the value is a JSON string (then json.loads), and prompt lines from the first one
# starting with "Negative prompt:" on are the negative prompt. sd-parsers 0.6 splits the settings
# line on every comma and colon and never unquotes, so quoted values are checked against this.
_A1111_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_parse(text: str) -> tuple[str, str, dict[str, str]]:
    *lines, last = text.strip().split("\n")
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        else:
            (negative if negative else prompt).append(line)
    settings = {}
    for key, value in _A1111_SETTING.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        settings[key] = value
    return "\n".join(prompt), "\n".join(negative), settings


# ---- read back by sd-parsers -----------------------------------------------------------------

def test_outside_reader_reads_back_every_setting_of_a_tricky_prompt(tmp_path: Path) -> None:
    params = txt2img(
        prompt=TRICKY, negative_prompt='blurry, "ugly": lowres, 悪い', steps=35, cfg=7.1234567,
        width=768, height=512, seed=1234567,
    )
    path = saved(tmp_path, infotext(params, 1234568, run_info()))

    info = read_back(path)
    assert info.generator == "AUTOMATIC1111"
    [sampler] = info.samplers
    assert [p.value for p in sampler.prompts] == [TRICKY]
    assert [p.value for p in sampler.negative_prompts] == ['blurry, "ugly": lowres, 悪い']
    assert sampler.name == "DPM++ 2M"
    assert sampler.parameters == {
        "steps": "35", "scheduler": "Uniform", "cfg_scale": "7.1234567", "seed": "1234568",
    }
    assert sampler.model is not None
    assert (sampler.model.name, sampler.model.hash) == ("dream", HASH[:10])
    assert info.metadata["Size"] == "768x512"
    assert info.metadata["RNG"] == "CPU"


def test_cfg_is_written_at_full_precision(tmp_path: Path) -> None:
    path = saved(tmp_path, infotext(txt2img(cfg=7.1234567), 42, run_info()))
    cfg = read_back(path).samplers[0].parameters["cfg_scale"]
    assert cfg == "7.1234567" and float(cfg) == 7.1234567


def test_multi_line_prompts_survive(tmp_path: Path) -> None:
    params = txt2img(prompt="a lighthouse,\nat dusk: oil", negative_prompt="blurry\nlowres, text")
    text = infotext(params, 42, run_info())
    [sampler] = read_back(saved(tmp_path, text)).samplers
    assert [p.value for p in sampler.prompts] == ["a lighthouse,\nat dusk: oil"]
    assert [p.value for p in sampler.negative_prompts] == ["blurry\nlowres, text"]
    assert a1111_parse(text)[:2] == ("a lighthouse,\nat dusk: oil", "blurry\nlowres, text")


def test_karras_variant_reads_back_with_its_schedule(tmp_path: Path) -> None:
    path = saved(tmp_path, infotext(txt2img(scheduler="dpmpp_2m_karras"), 42, run_info()))
    [sampler] = read_back(path).samplers
    assert sampler.name == "DPM++ 2M Karras" and sampler.parameters["scheduler"] == "Karras"


def test_png_keeps_the_text_exactly(tmp_path: Path) -> None:
    text = infotext(txt2img(prompt=TRICKY), 42, run_info())
    assert read_parameters(saved(tmp_path, text)) == text  # non-ASCII goes into an iTXt chunk, intact


# ---- the settings line as A1111 reads it -----------------------------------------------------

def test_settings_line_in_a1111_order_and_spelling() -> None:
    text = infotext(txt2img(negative_prompt="blurry"), 42, run_info())
    assert text.split("\n") == [
        "a lighthouse at dusk, oil painting",
        "Negative prompt: blurry",
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Uniform, CFG scale: 7, Seed: 42, Size: 512x512, "
        f"Model hash: {HASH[:10]}, Model: dream, RNG: CPU",
    ]


def test_a_model_name_with_commas_colons_quotes_and_newlines_is_quoted_and_read_back_whole() -> None:
    name = 'dream, v2: "final"\nbaked — 東京'
    text = infotext(txt2img(), 42, run_info(f"/models/{name}.safetensors"))
    assert len(text.split("\n")) == 2  # the newline is escaped: the settings stay one line
    _, _, settings = a1111_parse(text)
    assert settings["Model"] == name
    assert settings["RNG"] == "CPU" and settings["Seed"] == "42"  # what follows is not swallowed
    assert '"dream, v2: \\"final\\"\\nbaked — 東京"' in text  # JSON, non-ASCII kept as is


def test_a1111_reads_back_prompt_negative_prompt_and_settings() -> None:
    params = img2img(prompt=TRICKY, negative_prompt="low, res: 2", cfg=7.1234567, strength=0.123456789)
    prompt, negative, settings = a1111_parse(infotext(params, 43, run_info("C:\\sd\\dream.safetensors")))
    assert (prompt, negative) == (TRICKY, "low, res: 2")
    assert settings == {
        "Steps": "30", "Sampler": "DPM++ 2M", "Schedule type": "Uniform", "CFG scale": "7.1234567",
        "Seed": "43", "Size": "512x512", "Model hash": HASH[:10], "Model": "dream",
        "Denoising strength": "0.123456789", "RNG": "CPU",
    }


def test_a_prompt_line_starting_with_negative_prompt_is_written_as_given() -> None:
    # A1111's format cannot mark such a line as part of the prompt (its own files share this): its
    # reader takes it as the negative prompt. We write the prompt unchanged rather than alter it;
    # history keeps the exact params for reruns.
    params = txt2img(prompt="a sign that says\nNegative prompt: none", negative_prompt="")
    text = infotext(params, 42, run_info())
    assert text.startswith("a sign that says\nNegative prompt: none\nSteps: 30,")
    assert a1111_parse(text)[:2] == ("a sign that says", "none")


# ---- numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("cfg", "written"),
    [(7.0, "7"), (7.5, "7.5"), (7.1234567, "7.1234567"), (12.0, "12"), (1.0000001, "1.0000001")],
)
def test_cfg_scale_text(cfg: float, written: str) -> None:
    assert f", CFG scale: {written}, " in infotext(txt2img(cfg=cfg), 42, None)


@pytest.mark.parametrize(("strength", "written"), [(0.55, "0.55"), (0.123456789, "0.123456789"), (1.0, "1")])
def test_denoising_strength_text(strength: float, written: str) -> None:
    assert f", Denoising strength: {written}, RNG: CPU" in infotext(img2img(strength=strength), 42, run_info())


def test_text2img_has_no_denoising_strength() -> None:
    assert "Denoising" not in infotext(txt2img(), 42, run_info())


def test_without_run_info_the_settings_and_rng_are_still_there() -> None:
    assert infotext(txt2img(), 42, None).endswith("CFG scale: 7, Seed: 42, Size: 512x512, RNG: CPU")


# ---- sampler and schedule -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("scheduler", "sampler", "schedule"),
    [
        # A1111 ≥ 1.9 reads a bare "DPM++ 2M" as Karras (that sampler's default), so say Uniform.
        ("dpmpp_2m", "DPM++ 2M", "Uniform"),
        # The combined name is what A1111 < 1.9 knows; 1.9+ splits the suffix into the schedule.
        ("dpmpp_2m_karras", "DPM++ 2M Karras", "Karras"),
        ("euler", "Euler", "Uniform"),
        ("euler_a", "Euler a", "Uniform"),
        ("heun", "Heun", "Uniform"),
        # A1111's timestep samplers ignore the schedule; it writes Automatic for them.
        ("ddim", "DDIM", "Automatic"),
        ("pndm", "PLMS", "Automatic"),
        ("unipc", "UniPC", "Automatic"),
    ],
)
def test_sampler_and_schedule_type_of_each_scheduler(scheduler: str, sampler: str, schedule: str) -> None:
    _, _, settings = a1111_parse(infotext(txt2img(scheduler=scheduler), 42, None))
    assert (settings["Sampler"], settings["Schedule type"]) == (sampler, schedule)


def test_every_scheduler_has_an_a1111_sampler_and_schedule() -> None:
    assert set(SCHEDULERS) <= set(SAMPLER_NAMES)


# ---- quoting --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("DPM++ 2M", "DPM++ 2M"),
        ("café 東京", "café 東京"),
        ("dream, v2", '"dream, v2"'),
        ("sd: xl", '"sd: xl"'),
        ('my "best"', '"my \\"best\\""'),
        ("two\nlines", '"two\\nlines"'),
        ("東京, café", '"東京, café"'),  # ensure_ascii=False, as A1111 writes it
        ("back\\slash, x", '"back\\\\slash, x"'),
    ],
)
def testquote(value: str, written: str) -> None:
    assert quote(value) == written
    if written != value:
        assert json.loads(written) == value


# ---- model names ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("/home/me/models/dream.safetensors", "dream"),  # single-file checkpoint: stem, not path
        ("C:\\Users\\me\\models\\dream.safetensors", "dream"),  # Windows path, read on Linux too
        ("\\\\nas\\models\\anything-v3.CKPT", "anything-v3"),  # UNC path, upper-case suffix
        ("~/models/anything-v3.ckpt", "anything-v3"),
        ("/models/sd_xl_base_1.0.safetensors", "sd_xl_base_1.0"),
        ("/srv/models/dreamshaper_8/", "dreamshaper_8"),  # a diffusers folder: its name
        ("D:\\models\\dreamshaper_8\\", "dreamshaper_8"),
        ("./models/sd15", "sd15"),
        ("/models/sd_xl_base_1.0", "sd_xl_base_1.0"),  # a folder's dot is not an extension
        ("https://huggingface.co/org/repo/blob/main/tiny.safetensors", "tiny"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        # A relative folder looks exactly like a hub id ("org/name") and is kept whole.
        ("models/sd15", "models/sd15"),
    ],
)
def testmodel_name(model: str, name: str) -> None:
    assert model_name(model) == name
    assert infotext(txt2img(), 42, run_info(model, None)).endswith(f", Model: {name}, RNG: CPU")
