"""DiffusionEngine on a single-file checkpoint in the original (LDM / A1111 / Civitai) layout, built offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file, save_file

from generation.config import GenerationConfig
from generation.diffusion import DiffusionEngine
from generation.engine import ModelLoadError
from storage.errors import EaselError
from storage.images import ImageStore
from storage.infotext import infotext, read_parameters
from tests.generation.ldm_checkpoint import ldm_state_dict, write_ldm_checkpoint
from tests.conftest import params
from tests.helpers import Recorder, pixels


@pytest.fixture(scope="module")
def checkpoint(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's weights as one LDM-layout file, named like a checkpoint off Civitai."""
    return write_ldm_checkpoint(tiny_model, tmp_path_factory.mktemp("checkpoints") / "tinyDream_v10.safetensors")


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub and an empty hub cache, whatever the machine running the tests has."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


def single_file_engine(checkpoint: Path, config: str) -> DiffusionEngine:
    return DiffusionEngine(GenerationConfig(device="cpu", model=str(checkpoint), single_file_config=config, preview_every=0))


def load_error(engine: DiffusionEngine) -> str:
    with pytest.raises(ModelLoadError) as caught:
        engine.run(params(), (), Recorder())
    assert isinstance(caught.value, EaselError)
    assert engine._txt2img is None  # unloaded, so a fixed config is picked up by the next job
    return str(caught.value)


# ---- the checkpoint the tests build -------------------------------------------------------------

def test_the_checkpoint_has_the_original_layout_and_diffusers_converts_it_back_exactly(tiny_model: Path) -> None:
    ldm = ldm_state_dict(tiny_model)
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.1.2.conv.weight",  # the upsampler after a cross-attention layer
        "first_stage_model.encoder.down.0.block.0.norm1.weight",
        "first_stage_model.decoder.up.3.block.0.conv1.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    ):
        assert key in ldm
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (8, 8, 1, 1)  # a 1x1 conv in LDM
    assert infer_diffusers_model_type(ldm) == "v1"

    def diffusers_weights(name: str) -> dict[str, torch.Tensor]:
        return load_file(next((tiny_model / name).glob("*.safetensors")))

    def config(name: str) -> dict:
        return json.loads((tiny_model / name / "config.json").read_text())

    clip = {key.removeprefix("text_model."): tensor for key, tensor in convert_ldm_clip_checkpoint(ldm).items()}
    for name, back in (
        ("unet", convert_ldm_unet_checkpoint(ldm, config("unet"))),
        ("vae", convert_ldm_vae_checkpoint(ldm, config("vae"))),
        ("text_encoder", clip),
    ):
        original = diffusers_weights(name)
        assert sorted(back) == sorted(original), name
        assert all(torch.equal(back[key], original[key]) for key in original), name


# ---- loading and drawing --------------------------------------------------------------------------

def test_a_single_file_draws_the_same_pixels_as_its_diffusers_folder(
    checkpoint: Path, tiny_model: Path, hub_offline: None,
) -> None:
    from_file = single_file_engine(checkpoint, str(tiny_model))
    from_folder = DiffusionEngine(GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0))
    for job in (params(), params(seed=7, negative_prompt="blurry", scheduler="euler", cfg=5.0)):
        drawn = from_file.run(job, (), Recorder()).images[0]
        assert drawn.size == (64, 64)
        assert np.array_equal(pixels(drawn), pixels(from_folder.run(job, (), Recorder()).images[0]))
    # the weights really came from the file: every tensor equals the folder's, none left unloaded
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(from_file._txt2img, name).state_dict(), getattr(from_folder._txt2img, name).state_dict()
        assert sorted(ours) == sorted(theirs)
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name


def test_a_different_checkpoint_draws_different_pixels(
    checkpoint: Path, tiny_model: Path, tmp_path: Path, hub_offline: None,
) -> None:
    # Guards the test above: the pixels depend on the file's weights, not just on the config folder.
    weights = load_file(checkpoint)
    weights["model.diffusion_model.out.2.bias"] = weights["model.diffusion_model.out.2.bias"] + 0.5
    other = tmp_path / "tinyDream_v11.safetensors"
    save_file(weights, str(other))
    first = single_file_engine(checkpoint, str(tiny_model)).run(params(), (), Recorder()).images[0]
    second = single_file_engine(other, str(tiny_model)).run(params(), (), Recorder()).images[0]
    assert np.abs(pixels(first) - pixels(second)).mean() > 1


def test_run_info_and_png_infotext_carry_the_file_hash_and_name(
    checkpoint: Path, tiny_model: Path, tmp_path: Path,
) -> None:
    result = single_file_engine(checkpoint, str(tiny_model)).run(params(), (), Recorder())
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert result.run.model == str(checkpoint) and result.run.model_hash == sha256

    png = ImageStore(tmp_path / "data").save_output(1, 0, result.images[0], infotext(params(), 42, result.run))
    settings = read_parameters(png).splitlines()[-1].split(", ")
    assert f"Model hash: {sha256[:10]}" in settings
    assert "Model: tinyDream_v10" in settings


def test_single_file_config_may_start_with_a_tilde(
    checkpoint: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sd-configs").mkdir()
    (tmp_path / "sd-configs" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    result = single_file_engine(checkpoint, "~/sd-configs/tiny").run(params(), (), Recorder())
    assert result.images[0].size == (64, 64)


# ---- what goes wrong ------------------------------------------------------------------------------

def test_no_single_file_config_and_no_hub_says_to_set_it(checkpoint: Path, hub_offline: None) -> None:
    text = load_error(single_file_engine(checkpoint, ""))
    assert text.startswith(f"could not load model {str(checkpoint)!r}: ")
    assert "set [generation] single_file_config to a local diffusers folder" in text.lower()
    assert "Traceback" not in text and len(text) < 800


def test_a_hub_id_as_single_file_config_that_is_not_cached_and_no_hub(checkpoint: Path, hub_offline: None) -> None:
    text = load_error(single_file_engine(checkpoint, "easel-tests/no-such-configs"))
    assert text.startswith(f"could not load model {str(checkpoint)!r}: ")
    assert "single_file_config 'easel-tests/no-such-configs' is not a local folder" in text
    assert "Traceback" not in text and len(text) < 800


@pytest.mark.parametrize("where", ["missing", "not-diffusers", "windows"])
def test_a_single_file_config_that_is_not_a_diffusers_folder_is_caught_before_loading(
    checkpoint: Path, tmp_path: Path, where: str,
) -> None:
    if where == "missing":
        config = str(tmp_path / "models" / "sd15")  # a typo: diffusers would take it for a hub id
    elif where == "not-diffusers":
        (tmp_path / "downloads").mkdir()
        config = str(tmp_path / "downloads")
    else:
        config = "C:\\models\\sd15"
    text = load_error(single_file_engine(checkpoint, config))
    assert text == (
        f"[generation] single_file_config {config!r} is not a diffusers folder (no model_index.json); "
        f"point it at a diffusers folder or hub id of the same model family as {str(checkpoint)!r}"
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.safetensors", "text"),  # a web page or a note saved under the wrong name
        ("halfway.safetensors", "truncated"),  # a download that stopped early
        ("random.ckpt", "bytes"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_names_the_file(
    checkpoint: Path, tiny_model: Path, tmp_path: Path, name: str, content: str,
) -> None:
    path = tmp_path / name
    if content == "text":
        path.write_text("<!doctype html><title>Just a moment...</title>\n")
    elif content == "truncated":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    text = load_error(single_file_engine(path, str(tiny_model)))
    # the library's own reason, not diffusers' "Unable to load weights from checkpoint file" that names only the file
    kind = "safetensors" if path.suffix == ".safetensors" else ".ckpt"
    assert text.startswith(f"could not load model {str(path)!r}: the file is not a readable {kind} file (")
    assert "complete Stable Diffusion 1.x/2.x checkpoint" in text
    assert "Traceback" not in text and "\n" not in text and len(text) < 800
