"""LoRAs and embeddings (generation/addons.py) on the tiny random-weight pipelines: the prompt tags, A1111's
hashes, files that are not what they claim, and pictures that change with an add-on and come back exactly
without it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from generation.addons import (
    EMBEDDING_SUFFIXES,
    LORA_SUFFIXES,
    AddonError,
    LoraCache,
    LoraUse,
    add_embedding,
    apply_loras,
    check_lora_fits,
    embedding_names_in,
    embedding_short_hash,
    embedding_tokens,
    embeddings_for,
    expand_embeddings,
    find_files,
    lora_family,
    lora_file_problem,
    lora_short_hash,
    read_embedding,
    read_lora,
    remove_loras,
    split_loras,
)
from generation.prompts import chunk_prompt
from generation.tiny import make_tiny_embedding, make_tiny_lora

ROOT = Path(__file__).resolve().parents[2]


# ---- fixtures (tiny_model and tiny_sdxl are the session's, from tests/conftest.py) -----------------------


@pytest.fixture(scope="session")
def lora_files(tiny_model: Path, tiny_sdxl: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {"sd15": make_tiny_lora(tiny_model, folder / "tiny15.safetensors"),
            "sdxl": make_tiny_lora(tiny_sdxl, folder / "tinyxl.safetensors")}


def sd15_pipe(folder: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipe(folder: Path) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe15(tiny_model: Path):
    """One SD 1.5 pipeline for the LoRA tests; each leaves it without LoRAs (checked here)."""
    pipe = sd15_pipe(tiny_model)
    yield pipe
    assert not pipe.get_list_adapters()


@pytest.fixture(scope="module")
def plain15(pipe15) -> np.ndarray:
    """What the SD 1.5 pipeline draws without any add-on."""
    return draw(pipe15)


def draw(pipe, prompt: str = "a house by the sea") -> np.ndarray:
    return pipe(prompt, num_inference_steps=4, height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(1)).images[0]


def levels(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, in levels of 255."""
    return float(np.abs(a - b).mean() * 255)


# ---- prompt tags and names -----------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, text, uses", [
    ("a castle, <lora:ink:0.8> at night", "a castle, at night", [("ink", 0.8)]),
    ("<lora:ink> a castle", "a castle", [("ink", 1.0)]),
    ("a castle <lora:ink:-.5>", "a castle", [("ink", -0.5)]),
    ("a castle <lora:ink:1>, at night", "a castle, at night", [("ink", 1.0)]),
    ("a<lora:ink:1>b <lora:My Style_v2: 0.25 >\n<LORA:x:2>\nnext", "ab\nnext",
     [("ink", 1.0), ("My Style_v2", 0.25), ("x", 2.0)]),
    ("<lora:a:1> <lora:b:1>", "", [("a", 1.0), ("b", 1.0)]),
])
def test_lora_tags_come_out_of_the_prompt_with_their_weights(prompt, text, uses) -> None:
    assert split_loras(prompt) == (text, tuple(LoraUse(name, weight) for name, weight in uses))


@pytest.mark.parametrize("prompt", ["", "  a (castle:1.2),  <b> [night]  ", "<lora is a word>", "x <hypernet:y:1>"])
def test_a_prompt_without_lora_tags_comes_back_unchanged(prompt: str) -> None:
    assert split_loras(prompt) == (prompt, ())


@pytest.mark.parametrize("prompt, message", [
    ("<lora:ink:0.5:0.8>", "<lora:ink:0.5:0.8> gives 2 weights; easel takes one"),
    ("<lora:ink:strong>", "the weight in <lora:ink:strong> is not a number like 0.8"),
    ("<lora:ink:nan>", "the weight in <lora:ink:nan> is not a number"),
    ("<lora:ink:1e999>", "the weight in <lora:ink:1e999> is not a number"),
    ("<lora::1>", "<lora::1> names no LoRA"),
    ("<lora:ink:1> <lora:ink:0.5>", "LoRA 'ink' is named twice in the prompt"),
    ("<lyco:ink:1>", "`<lyco:…>` tags are not supported; use <lora:name:weight>"),
])
def test_bad_lora_tags_are_one_line_errors(prompt: str, message: str) -> None:
    with pytest.raises(AddonError) as error:
        split_loras(prompt)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_files_are_found_by_stem_anywhere_under_the_folder_the_nearest_first(tmp_path: Path) -> None:
    for name in ("b.safetensors", "a.PT", "sub/c.ckpt", "sub/a.safetensors", "sub/deeper/d.bin", "notes.txt",
                 ".hidden/e.safetensors", "sub/.f.safetensors"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_files(tmp_path, LORA_SUFFIXES)
    assert found == {"a": tmp_path / "a.PT", "b": tmp_path / "b.safetensors", "c": tmp_path / "sub/c.ckpt",
                     "d": tmp_path / "sub/deeper/d.bin"}
    assert list(found) == ["a", "b", "c", "d"]
    assert "c" not in find_files(str(tmp_path), EMBEDDING_SUFFIXES)
    assert find_files("", LORA_SUFFIXES) == find_files(None, LORA_SUFFIXES) == {}
    assert find_files(tmp_path / "missing", LORA_SUFFIXES) == {}


def test_linked_folders_are_searched_once(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.safetensors").write_bytes(b"x")
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "other-ui").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "loras")  # a loop ends
    assert find_files(tmp_path / "loras", LORA_SUFFIXES) == {
        "linked": tmp_path / "loras" / "other-ui" / "linked.safetensors"}


def test_embedding_names_count_as_whole_words_in_any_case() -> None:
    names = {"style": 0, "bad-hands": 0, "bad-hands-5": 0, "EasyNegative": 0, "v1.3": 0, "Ink": 0, "ink": 0}
    assert embedding_names_in("lifestyle, stylebook, styles", names) == []
    assert embedding_names_in("(style:1.2), easynegative, bad-hands-5 and bad-hands, style", names) == [
        "style", "EasyNegative", "bad-hands-5", "bad-hands"]
    assert embedding_names_in("x v1.3 v1x3", names) == ["v1.3"]
    assert embedding_names_in("ink, INK, Ink", names) == ["ink", "Ink"]  # an exact spelling first
    assert embedding_names_in("anything", {}) == []


# ---- hashes --------------------------------------------------------------------------------------------


def test_hashes_are_a1111s_addnet_hash_for_safetensors_and_the_file_sha256_otherwise(tmp_path: Path) -> None:
    tensors = {"lora_unet_x.lora_down.weight": torch.ones(2, 3)}
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    save_file(tensors, first, metadata={"ss_note": "a"})
    save_file(tensors, second, metadata={"ss_note": "a different and longer note"})
    data = first.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert lora_short_hash(first) == hashlib.sha256(data[8 + header:]).hexdigest()[:12]
    assert lora_short_hash(second) == lora_short_hash(first)  # the metadata is not hashed
    assert embedding_short_hash(first) == hashlib.sha256(data).hexdigest()[:12] != lora_short_hash(first)
    pt = tmp_path / "three.pt"
    torch.save(tensors, pt)
    assert lora_short_hash(pt) == hashlib.sha256(pt.read_bytes()).hexdigest()[:12]
    # kohya writes the hash into the metadata; A1111 takes it from there.
    written = tmp_path / "written.safetensors"
    save_file(tensors, written, metadata={"sshs_model_hash": "0123456789abcdef" * 4})
    assert lora_short_hash(written) == "0123456789ab"


def test_a_file_is_hashed_once_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "e.pt"
    path.write_bytes(b"first")
    stat = path.stat()
    hashed = embedding_short_hash(path)
    path.write_bytes(b"other")  # same size; the same mtime put back: taken for the same file
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert embedding_short_hash(path) == hashed
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert embedding_short_hash(path) == hashlib.sha256(b"other").hexdigest()[:12]


# ---- reading LoRA files --------------------------------------------------------------------------------


def one_line_error(call, *args) -> str:
    with pytest.raises(AddonError) as error:
        call(*args)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_files_that_are_not_loras_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "secret" / "notes.safetensors"
    text.parent.mkdir()
    text.write_text("this is not a tensor file, it is a note\n")
    message = one_line_error(read_lora, text)
    assert message.startswith("'notes.safetensors' is not a safetensors file (") and "secret" not in message
    pickle = tmp_path / "notes.pt"
    pickle.write_text("hello")
    assert one_line_error(read_lora, pickle).startswith("'notes.pt' is not a LoRA file easel can read (")
    model = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.ones(4)}, model)
    assert one_line_error(read_lora, model) == "'model.safetensors' is not a LoRA (it has no LoRA weights)"
    loha = tmp_path / "loha.safetensors"
    save_file({f"lora_unet_x.hada_w{n}_{ab}": torch.ones(2, 2) for n in (1, 2) for ab in "ab"}, loha)
    assert one_line_error(read_lora, loha) == (
        "'loha.safetensors' is a LyCORIS LoHa file, which easel cannot load; use a LoRA")
    lokr = tmp_path / "lokr.pt"
    torch.save({"lora_unet_x.lokr_w1": torch.ones(2, 2), "lora_unet_x.lokr_w2": torch.ones(2, 2)}, lokr)
    assert "is a LyCORIS LoKr file" in one_line_error(read_lora, lokr)
    assert "cannot be read" in one_line_error(read_lora, tmp_path / "gone.safetensors")


def test_a_safetensors_lora_is_checked_from_its_header_alone(tmp_path: Path, lora_files: dict[str, Path]) -> None:
    # What the bot refuses before a job queues: read without torch and without the weights.
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a tensor file, it is a note\n")
    assert lora_file_problem(text, "sd1") == "'notes.safetensors' is not a safetensors file (its header cannot be read)"
    model = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.ones(4)}, model)
    assert lora_file_problem(model, "sd1") == "'model.safetensors' is not a LoRA (it has no LoRA weights)"
    loha = tmp_path / "loha.safetensors"
    save_file({f"lora_unet_x.hada_w{n}_{ab}": torch.ones(2, 2) for n in (1, 2) for ab in "ab"}, loha)
    assert "is a LyCORIS LoHa file" in lora_file_problem(loha, "sd1")
    real = tmp_path / "real15.safetensors"
    save_file(kohya(768, 768), real)
    assert lora_file_problem(real, "sd1") is None
    assert lora_file_problem(real, "sdxl") == "LoRA 'real15' is an SD 1.x LoRA, and this model is SDXL"
    assert lora_file_problem(lora_files["sdxl"], "sd1").endswith("is an SDXL LoRA, and this model is SD 1.x")
    assert lora_file_problem(lora_files["sd15"], "sd1") is None  # the tiny one is 32 wide: no family to hold it to
    assert lora_file_problem(tmp_path / "any.pt", "sd1") is None  # other formats: checked when loaded


def kohya(width: int, cross: int, te2: bool = False) -> dict[str, torch.Tensor]:
    """A kohya-named state dict with one cross-attention key LoRA and one text-encoder LoRA."""
    block = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    state = {f"{block}.lora_down.weight": torch.zeros(2, cross), f"{block}.lora_up.weight": torch.zeros(8, 2),
             "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, width)}
    if te2:
        state["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(2, 1280)
    return state


def test_a_lora_saved_by_torch_reads_as_its_safetensors_twin(lora_files: dict[str, Path], tmp_path: Path) -> None:
    state = read_lora(lora_files["sd15"])
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.ckpt")
    for name in "plain.pt", "wrapped.ckpt":
        read = read_lora(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[key], state[key]) for key in state)


def test_the_family_of_a_lora_is_read_from_its_keys_and_widths(lora_files: dict[str, Path]) -> None:
    assert lora_family(kohya(768, 768)) == "sd1"
    assert lora_family(kohya(1024, 1024)) == "sd2"
    assert lora_family(kohya(768, 2048)) == "sdxl"
    assert lora_family({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight":
                        torch.zeros(4, 2048)}) == "sdxl"
    assert lora_family({"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight":
                        torch.zeros(4, 1024)}) == "sd2"
    assert lora_family(kohya(768, 32, te2=True)) == "sdxl"
    assert lora_family({"lora_unet_x_attn1_to_q.lora_down.weight": torch.zeros(2, 320)}) == "unknown"
    assert lora_family(read_lora(lora_files["sdxl"])) == "sdxl"
    assert lora_family(read_lora(lora_files["sd15"])) == "unknown"  # 32 wide: no real family


def test_a_lora_for_another_family_is_refused_before_anything_is_loaded(pipe15, plain15, lora_files) -> None:
    assert one_line_error(check_lora_fits, kohya(32, 1024), pipe15, "sd2-style") == (
        "LoRA 'sd2-style' was made for another model family (cross-attention width 1024; this model's is 32)")
    assert "(text encoder width 768; this model's is 32)" in one_line_error(
        check_lora_fits, kohya(768, 32), pipe15, "te")
    message = one_line_error(apply_loras, pipe15, [(LoraUse("xl", 1.0), lora_files["sdxl"])], LoraCache())
    assert message == ("LoRA 'xl' is an SDXL LoRA, and this model is not SDXL "
                       "(cross-attention width 64; this model's is 32)")
    assert not pipe15.get_list_adapters() and np.array_equal(draw(pipe15), plain15)


# ---- LoRAs on pipelines --------------------------------------------------------------------------------


def test_a_lora_changes_the_picture_and_leaves_no_trace(pipe15, plain15, lora_files) -> None:
    cache, lora = LoraCache(), lora_files["sd15"]
    state = read_lora(lora)
    assert len(state) == 3 * (4 * 8 + 2 * 6)  # every attention projection of the UNet, text encoder's q k v out fc1 fc2
    apply_loras(pipe15, [(LoraUse("tiny15", 1.0), lora)], cache)
    # diffusers converted and used every key: each LoRA'd layer of the file got the adapter.
    layers = sum("easel0_tiny15" in getattr(module, "lora_A", ())
                 for part in (pipe15.unet, pipe15.text_encoder) for module in part.modules())
    assert layers == len(state) // 3
    with_lora = draw(pipe15)
    assert levels(with_lora, plain15) > 5
    remove_loras(pipe15)
    assert np.array_equal(draw(pipe15), plain15)
    # Read once and kept; applied again from the kept tensors (diffusers must not have changed them).
    apply_loras(pipe15, [(LoraUse("tiny15", 1.0), lora)], cache)
    assert np.array_equal(draw(pipe15), with_lora)
    apply_loras(pipe15, [(LoraUse("tiny15", 0.5), lora)], cache)  # replaces what was set
    half = draw(pipe15)
    assert levels(half, plain15) > 1 and levels(half, with_lora) > 1
    apply_loras(pipe15, [(LoraUse("tiny15", 0.0), lora)], cache)
    assert not pipe15.get_list_adapters() and np.array_equal(draw(pipe15), plain15)
    remove_loras(pipe15)


def test_two_loras_together_one_without_text_encoder_weights(pipe15, plain15, lora_files, tiny_model,
                                                             tmp_path) -> None:
    other = read_lora(make_tiny_lora(tiny_model, tmp_path / "other.safetensors", seed=1))
    unet_only = tmp_path / "unet_only.safetensors"
    save_file({key: value for key, value in other.items() if key.startswith("lora_unet_")}, unet_only)
    cache = LoraCache()
    apply_loras(pipe15, [(LoraUse("tiny15", 0.5), lora_files["sd15"]), (LoraUse("unet_only", 0.7), unet_only)], cache)
    assert pipe15.get_list_adapters() == {"unet": ["easel0_tiny15", "easel1_unet_only"],
                                          "text_encoder": ["easel0_tiny15"]}
    both = draw(pipe15)
    apply_loras(pipe15, [(LoraUse("tiny15", 0.5), lora_files["sd15"])], cache)
    assert levels(both, draw(pipe15)) > 1
    remove_loras(pipe15)
    assert np.array_equal(draw(pipe15), plain15)


def test_a_lora_diffusers_cannot_load_is_undone_and_named(pipe15, plain15, lora_files, tmp_path) -> None:
    state = read_lora(lora_files["sd15"])
    key = "lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn1_to_v.lora_down.weight"
    state[key] = torch.zeros(2, 24)  # one layer of the wrong size, after others have loaded
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad)
    message = one_line_error(apply_loras, pipe15, [(LoraUse("tiny15", 1.0), lora_files["sd15"]),
                                                   (LoraUse("bad", 1.0), bad)], LoraCache())
    assert message.startswith("LoRA 'bad' ('bad.safetensors') does not fit this model: ") and "size" in message
    assert not pipe15.get_list_adapters() and np.array_equal(draw(pipe15), plain15)
    # A file for another architecture whose keys diffusers silently drops: nothing would change, say so.
    elsewhere = tmp_path / "flux.safetensors"
    save_file({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 32),
               "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(32, 2)}, elsewhere)
    assert one_line_error(apply_loras, pipe15, [(LoraUse("flux", 1.0), elsewhere)], LoraCache()) == (
        "LoRA 'flux': none of its keys match this model")
    assert not pipe15.get_list_adapters() and np.array_equal(draw(pipe15), plain15)


def test_the_lora_cache_reads_a_file_once_and_hands_out_fresh_dicts(lora_files, tmp_path) -> None:
    cache = LoraCache(size=1)
    first, again = cache.state(lora_files["sd15"]), cache.state(lora_files["sd15"])
    assert first is not again and first.keys() == again.keys()
    assert all(first[key] is again[key] for key in first)
    first.clear()
    assert cache.state(lora_files["sd15"]).keys() == again.keys()
    other = tmp_path / "other.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, other)
    cache.state(other)  # size 1: the first is let go and read again
    assert all(cache.state(lora_files["sd15"])[key] is not again[key] for key in again)


def test_an_sdxl_lora_changes_the_sdxl_picture_and_leaves_no_trace(tiny_sdxl, lora_files) -> None:
    pipe = sdxl_pipe(tiny_sdxl)
    plain = draw(pipe)
    apply_loras(pipe, [(LoraUse("tinyxl", 1.0), lora_files["sdxl"])], LoraCache())
    assert set(pipe.get_list_adapters()) == {"unet", "text_encoder", "text_encoder_2"}
    layers = sum("easel0_tinyxl" in getattr(module, "lora_A", ())
                 for part in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2) for module in part.modules())
    assert layers == len(read_lora(lora_files["sdxl"])) // 3  # every key used: UNet, te1 and te2
    assert levels(draw(pipe), plain) > 5
    remove_loras(pipe)
    assert np.array_equal(draw(pipe), plain)


# ---- embeddings ----------------------------------------------------------------------------------------


def test_embedding_files_in_every_a1111_layout_are_read(tmp_path: Path, tiny_model, tiny_sdxl) -> None:
    vectors = torch.arange(6.0).reshape(2, 3)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "a"}, tmp_path / "a.pt")
    # textual_inversion's original format: a ParameterDict, loaded without unpickling anything else.
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors)})}, tmp_path / "b.pt")
    torch.save({"<cat-toy>": vectors[0]}, tmp_path / "c.bin")  # diffusers' learned_embeds.bin
    save_file({"emb_params": vectors}, tmp_path / "d.safetensors")
    for name in "a.pt", "b.pt", "c.bin", "d.safetensors":
        read = read_embedding(tmp_path / name)
        assert list(read) == [""] and read[""].dtype == torch.float32
        assert torch.equal(read[""], vectors[:1] if name == "c.bin" else vectors)
    xl = read_embedding(make_tiny_embedding(tiny_sdxl, tmp_path / "xl.safetensors", vectors=3))
    assert {key: list(value.shape) for key, value in xl.items()} == {"clip_l": [3, 32], "clip_g": [3, 32]}
    assert list(read_embedding(make_tiny_embedding(tiny_model, tmp_path / "e.safetensors"))[""].shape) == [2, 32]
    save_file({"one": vectors, "two": vectors.clone()}, tmp_path / "two.safetensors")
    assert one_line_error(read_embedding, tmp_path / "two.safetensors") == (
        "'two.safetensors' is not a textual-inversion embedding")
    (tmp_path / "text.pt").write_text("not an embedding")
    assert one_line_error(read_embedding, tmp_path / "text.pt").startswith(
        "'text.pt' is not an embedding file easel can read (")


def test_an_embedding_is_new_token_ids_and_leaves_other_prompts_as_they_were(tiny_model, tmp_path) -> None:
    pipe = sd15_pipe(tiny_model)
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    plain_prompt = "a house by the sea, <b> x#0 (style:1.2)"
    plain_ids = chunk_prompt(tokenizer, plain_prompt)
    plain = draw(pipe, "a house by the sea")
    vectors = read_embedding(make_tiny_embedding(tiny_model, tmp_path / "ink-wash.pt", vectors=3))
    [(tok, enc, key)] = embeddings_for(pipe, vectors, "ink-wash")
    assert (tok, enc, key) == (tokenizer, encoder, "")
    rows = encoder.get_input_embeddings().weight.shape[0]
    added = {"ink-wash": add_embedding(tokenizer, encoder, "ink-wash", vectors[""])}
    assert added == {"ink-wash": 3} and len(tokenizer) == rows - 6 + 3  # the tiny table has 6 spare rows
    assert add_embedding(tokenizer, encoder, "ink-wash", vectors[""]) == 3 and len(tokenizer) == rows - 3
    ids = tokenizer.convert_tokens_to_ids(embedding_tokens("ink-wash", 3))
    table = encoder.get_input_embeddings().weight
    assert torch.equal(table[ids], vectors[""])
    # The prompt chunker reads the name, written as its tokens, as the embedding's ids in order.
    chunk = chunk_prompt(tokenizer, expand_embeddings("a Ink-Wash b", added))[0].ids
    start = chunk.index(ids[0])
    assert chunk[start:start + 3] == tuple(ids) and chunk[:start] == chunk_prompt(tokenizer, "a b")[0].ids[:start]
    assert chunk_prompt(tokenizer, plain_prompt) == plain_ids
    assert expand_embeddings(plain_prompt, added) == plain_prompt
    # Drawn: the prompt without the name exactly as before; with it, another picture.
    assert np.array_equal(draw(pipe, "a house by the sea"), plain)
    with torch.no_grad():
        states = [encoder(torch.tensor([chunk_prompt(tokenizer, text)[0].ids]))[0]
                  for text in ("a house by the sea", expand_embeddings("a house by the ink-wash sea", added))]
    assert (states[0] - states[1]).abs().mean() > 0.1
    assert not np.array_equal(draw(pipe, expand_embeddings("a house by the ink-wash sea", added)), plain)
    # Growing past the table: the encoder's rows are added.
    big = torch.randn(8, 32)
    assert add_embedding(tokenizer, encoder, "big", big) == 8
    assert encoder.get_input_embeddings().weight.shape[0] == len(tokenizer) > rows
    assert torch.equal(encoder.get_input_embeddings().weight[-8:], big)
    assert chunk_prompt(tokenizer, plain_prompt) == plain_ids
    # An embedding that would not fit in what is left of a 75-token chunk starts the next one whole (as A1111).
    filler = " ".join(["a"] * 73)
    first, second = chunk_prompt(tokenizer, expand_embeddings(f"{filler} ink-wash", added))
    assert not set(ids) & set(first.ids) and second.ids[1:4] == tuple(ids)
    assert len(chunk_prompt(tokenizer, expand_embeddings(f"{filler[:-2]} ink-wash", added))) == 1  # 72 + 3 fit
    assert one_line_error(add_embedding, tokenizer, encoder, "wide", torch.zeros(2, 768)) == (
        "embedding 'wide' is for another model family (width 768; this model's text encoder 32)")


def test_sdxl_embeddings_go_to_both_encoders_and_sd1_ones_are_refused(tiny_model, tiny_sdxl, tmp_path) -> None:
    pipe = sdxl_pipe(tiny_sdxl)
    plain = draw(pipe)
    vectors = read_embedding(make_tiny_embedding(tiny_sdxl, tmp_path / "xl.safetensors"))
    pairs = embeddings_for(pipe, vectors, "xl")
    assert [(tok, enc, key) for tok, enc, key in pairs] == [
        (pipe.tokenizer, pipe.text_encoder, "clip_l"), (pipe.tokenizer_2, pipe.text_encoder_2, "clip_g")]
    for tokenizer, encoder, key in pairs:
        count = add_embedding(tokenizer, encoder, "xl", vectors[key])
    assert np.array_equal(draw(pipe), plain)
    assert not np.array_equal(draw(pipe, expand_embeddings("a house by the xl sea", {"xl": count})), plain)
    sd1 = read_embedding(make_tiny_embedding(tiny_model, tmp_path / "sd1.pt"))
    assert one_line_error(embeddings_for, pipe, sd1, "sd1") == (
        "embedding 'sd1' is not for SDXL; SDXL needs one with clip_l and clip_g vectors")
    assert one_line_error(embeddings_for, sd15_pipe(tiny_model), vectors, "xl") == (
        "embedding 'xl' is for SDXL, and this model is not SDXL")


def test_an_encoder_that_pools_at_the_highest_id_pools_at_eos_once_tokens_are_added(tmp_path: Path) -> None:
    # SD 1.5's and SDXL's CLIP configs say eos_token_id 2, which makes transformers pool at the highest id:
    # the EOS token, until tokens are added after it. Here a vocabulary whose EOS is its last id, as CLIP's.
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from generation.tiny import _byte_symbols

    vocab = {"<|startoftext|>": 0}
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path, model_max_length=77)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                           num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                                           bos_token_id=0, eos_token_id=2, pad_token_id=1))

    def pooled(text: str) -> torch.Tensor:
        with torch.no_grad():
            return encoder(torch.tensor([chunk_prompt(tokenizer, text)[0].ids])).pooler_output

    before = pooled("a house")
    added = {"emb": add_embedding(tokenizer, encoder, "emb", torch.randn(2, 32))}
    assert torch.equal(pooled("a house"), before)
    ids = chunk_prompt(tokenizer, expand_embeddings("a emb", added))[0].ids
    with torch.no_grad():
        states = encoder(torch.tensor([ids])).last_hidden_state
    assert torch.equal(pooled(expand_embeddings("a emb", added))[0], states[0, ids.index(tokenizer.eos_token_id)])


def test_the_prompt_side_imports_no_torch() -> None:
    code = ("import sys, generation.addons as a; a.split_loras('<lora:x:1> y'); a.embedding_names_in('y', ['y']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
