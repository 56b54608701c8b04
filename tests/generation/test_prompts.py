"""A1111 prompt syntax and long prompts, on the real tiny pipeline (its tokenizer has one token per character)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image
from transformers import CLIPTokenizer

from generation.prompts import BREAK, MEAN_RESTORE_MIN, PromptError, chunk_prompt, encode_prompts, parse_attention

R, S = 1.1, 1 / 1.1


@pytest.fixture(scope="module")
def pipe(tiny_model) -> StableDiffusionPipeline:
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_model)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def assert_runs(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_attention(text)
    assert [run for run, _ in got] == [run for run, _ in expected], got
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected]), got


def words(n: int, word: str = "x") -> str:
    """n tokens: the tiny tokenizer makes one token of each single-letter word."""
    return " ".join([word] * n)


def encode(pipe, prompt: str, negative: str = "", **options) -> tuple[torch.Tensor, torch.Tensor]:
    return encode_prompts(pipe.tokenizer, pipe.text_encoder, prompt, negative, "cpu", torch.float32, **options)


def draw(pipe, positive: torch.Tensor, negative: torch.Tensor) -> np.ndarray:
    return pipe(
        prompt_embeds=positive, negative_prompt_embeds=negative, height=64, width=64, num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(7), output_type="np",
    ).images


# ---- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The examples in A1111's parse_prompt_attention docstring.
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", R)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [("a ", 1.0), ("house", 1.3 * R * R), (" ", R), ("on", 1.0), (" a ", R), ("hill", 0.5 * R),
             (", sun, ", R), ("sky", R**4), (".", R)],
        ),
        # Nesting, squares, explicit weights.
        ("a ((b)) [c] (d:1.5)", [("a ", 1.0), ("b", R * R), (" ", 1.0), ("c", S), (" ", 1.0), ("d", 1.5)]),
        ("((a:2))", [("a", 2 * R)]),
        ("[[a]]", [("a", S * S)]),
        ("[a", [("a", S)]),
        ("(a: 1.5 ) b", [("a", 1.5), (" b", 1.0)]),
        ("(a:-0.5)", [("a", -0.5)]),
        ("(a:b:0.5)", [("a:b", 0.5)]),  # the number after the last colon
        ("(a:b)", [("a:b", R)]),  # a colon without a number is text
        ("[a:1.5)", [("a:1.5)", S)]),  # a weight closes only a round bracket
        # Escapes.
        (r"\(a\) \[b\] \\", [("(a) [b] \\", 1.0)]),
        (r"(\(a\))", [("(a)", R)]),
        (r"a\b", [("ab", 1.0)]),  # a backslash that escapes nothing is dropped
        # Stray closers are text; so is a weight with no bracket open.
        ("a) b]", [("a) b]", 1.0)]),
        ("(a:1.5) x:2)", [("a", 1.5), (" x:2)", 1.0)]),
        ("(a)) b", [("a", R), (") b", 1.0)]),
        # Merging runs of equal weight.
        ("a (b:1) c", [("a b c", 1.0)]),
        ("(a)(b) [(c)]", [("ab", R), (" c", 1.0)]),  # 1.1 × (1 / 1.1) is exactly 1.0
        ("", [("", 1.0)]),
    ],
)
def test_parse_attention_follows_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    assert_runs(text, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
        ("(a)BREAK[b]", [("a", R), BREAK, ("b", S)]),
        ("a break b, BREAKING, aBREAK", [("a break b, BREAKING, aBREAK", 1.0)]),
        ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
        # A1111 scales the break marker too and so reads this BREAK as a word of weight -1.1; a break it is.
        ("(a BREAK b)", [("a", R), BREAK, ("b", R)]),
    ],
)
def test_break_is_its_own_run(text: str, expected: list[tuple[str, float]]) -> None:
    assert_runs(text, expected)


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "x (a:1..) y"])
def test_a_weight_that_is_not_a_number_is_an_error_that_names_it(text: str) -> None:
    with pytest.raises(PromptError, match="is not a number"):
        parse_attention(text)


def test_the_parser_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, generation.prompts; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# ---- chunking -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [None, "!"])  # SD 1.x pads with EOS; SD 2.x's tokenizer pads with "!"
def test_a_short_prompt_has_the_ids_diffusers_uses(tiny_model, pad: str | None) -> None:
    options = {"pad_token": pad} if pad else {}
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer", **options)
    for prompt in ("a red lighthouse, at dusk", "", words(75)):
        expected = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        (chunk,) = chunk_prompt(tokenizer, prompt)
        assert list(chunk.ids) == expected
        assert chunk.weights == (1.0,) * 77


def test_a_long_prompt_is_cut_into_chunks_of_75(pipe) -> None:
    tokenizer = pipe.tokenizer
    x = tokenizer.convert_tokens_to_ids("x</w>")
    first, second = chunk_prompt(tokenizer, words(120))
    assert first.ids == (tokenizer.bos_token_id, *[x] * 75, tokenizer.eos_token_id)
    assert second.ids == (tokenizer.bos_token_id, *[x] * 45, tokenizer.eos_token_id, *[tokenizer.pad_token_id] * 30)
    assert len(chunk_prompt(tokenizer, words(150))) == 2
    assert len(chunk_prompt(tokenizer, words(151))) == 3


@pytest.mark.parametrize(("before", "first_length"), [(60, 61), (55, 56), (54, 75)])
def test_a_full_chunk_breaks_after_a_comma_among_its_last_20_tokens(pipe, before: int, first_length: int) -> None:
    tokenizer = pipe.tokenizer
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    prompt = words(before) + ", " + words(100 - before, "y")
    first, second = chunk_prompt(tokenizer, prompt)
    body = first.ids[1 : 1 + first_length]
    assert first.ids[1 + first_length] == tokenizer.eos_token_id
    if first_length < 75:  # the phrase after the comma moved whole into the next chunk
        assert body[-1] == comma
        assert tokenizer.decode(second.ids[1:41]).replace(" ", "") == "y" * 40
    else:  # the comma lies 21 tokens back: too far, cut at 75
        assert body[before] == comma
    assert sum(1 for i in first.ids + second.ids if i not in (0, 1)) == 101  # nothing lost


def test_break_pads_the_chunk_and_weights_follow_their_tokens(pipe) -> None:
    tokenizer = pipe.tokenizer
    a, b, c = (tokenizer.convert_tokens_to_ids(f"{ch}</w>") for ch in "abc")
    first, second = chunk_prompt(tokenizer, "(a) b BREAK [c]")
    assert first.ids[:4] == (0, a, b, 1)
    assert first.weights[:4] == (1.0, pytest.approx(1.1), 1.0, 1.0)
    assert second.ids[:3] == (0, c, 1)
    assert second.weights[:3] == (1.0, pytest.approx(1 / 1.1), 1.0)
    assert len(chunk_prompt(tokenizer, "a BREAK")) == 1
    assert len(chunk_prompt(tokenizer, "BREAK a")) == 2  # as A1111: a leading BREAK leaves an empty chunk


# ---- encoding -------------------------------------------------------------------------------------


def test_a_plain_short_prompt_encodes_exactly_as_diffusers(pipe) -> None:
    positive, negative = encode(pipe, "a red lighthouse, at dusk")
    expected_positive, expected_negative = pipe.encode_prompt("a red lighthouse, at dusk", "cpu", 1, True)
    assert positive.shape == (1, 77, 32)
    assert torch.equal(positive, expected_positive)
    assert torch.equal(negative, expected_negative)


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(pipe) -> None:
    # diffusers' own clip_skip reaches for CLIPTextModel.text_model, which transformers 5 removed; check by hand.
    ids = pipe.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = getattr(pipe.text_encoder, "text_model", pipe.text_encoder).final_layer_norm(states[-2])
    assert torch.equal(encode(pipe, "a cat", clip_skip=1)[0], expected)
    assert torch.equal(encode(pipe, "a cat", clip_skip=0)[0], encode(pipe, "a cat")[0])


def test_and_so_draws_the_same_pixels_as_diffusers(pipe) -> None:
    ours = draw(pipe, *encode(pipe, "a cat", "dog"))
    theirs = pipe(
        prompt="a cat", negative_prompt="dog", height=64, width=64, num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(7), output_type="np",
    ).images
    assert np.array_equal(ours, theirs)


def with_bias(pipe, bias: float):
    """A copy of the tiny text encoder whose final norm has this bias, so every token vector's mean is `bias`.

    The tiny encoder's own final norm has none: its embeddings' mean is zero up to rounding (~1e-9).
    SD's CLIP has a bias, and A1111's mean restore is about exactly that non-zero mean."""
    encoder = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        getattr(encoder, "text_model", encoder).final_layer_norm.bias.fill_(bias)
    return encoder


def embed(pipe, encoder, prompt: str) -> torch.Tensor:
    return encode_prompts(pipe.tokenizer, encoder, prompt, "", "cpu", torch.float32)[0]


def weights_of(pipe, prompt: str) -> torch.Tensor:
    (chunk,) = chunk_prompt(pipe.tokenizer, prompt)
    return torch.tensor(chunk.weights)[None, :, None]


def test_emphasis_changes_the_embeddings_and_keeps_their_mean(pipe) -> None:
    encoder = with_bias(pipe, 0.5)
    plain, weighted = embed(pipe, encoder, "red lighthouse"), embed(pipe, encoder, "(red:1.5) lighthouse")
    # Tolerances scale with the embeddings' magnitude (~0.8 per element): float32 rounding is ~1e-7 of it.
    tolerance = 1e-5 * plain.abs().mean().item()
    assert plain.mean().item() == pytest.approx(0.5, abs=tolerance)  # far from zero: the rule is well defined
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), abs=tolerance)
    # A1111's rule, whole: z·w, rescaled by mean(z) / mean(z·w). The weighted word is 1.5x its neighbours;
    # tokens after it are only rescaled, so their direction stays.
    w = weights_of(pipe, "(red:1.5) lighthouse")
    factor = plain.mean() / (plain * w).mean()
    assert abs(factor.item() - 1) > 1e-3  # the restore did something
    assert (weighted - plain * w * factor).abs().max().item() <= tolerance
    assert torch.equal(embed(pipe, encoder, "(red:1) lighthouse"), plain)


@pytest.mark.parametrize(("bias", "restored"), [(0.0, False), (1e-5, False), (0.02, True), (-0.5, True)])
def test_a_mean_that_is_zero_up_to_rounding_is_not_restored(pipe, bias: float, restored: bool) -> None:
    # With no bias the mean is rounding noise, ~1e-8 of the embeddings' magnitude, and A1111's factor
    # mean(z) / mean(z·w) is noise too: for this very prompt -0.75 with AVX-512 kernels, 3 with AVX2 ones.
    # Below MEAN_RESTORE_MIN of the magnitude the weights are applied and the mean left alone.
    encoder = with_bias(pipe, bias)
    plain, weighted = embed(pipe, encoder, "red lighthouse"), embed(pipe, encoder, "(red:1.5) lighthouse")
    magnitude = plain.abs().mean().item()
    assert (abs(plain.mean().item()) > MEAN_RESTORE_MIN * magnitude) is restored
    w = weights_of(pipe, "(red:1.5) lighthouse")
    if restored:
        assert weighted.mean().item() == pytest.approx(plain.mean().item(), abs=1e-5 * magnitude)
        assert not torch.allclose(weighted, plain * w, rtol=0, atol=1e-3 * magnitude)
    else:
        assert torch.equal(weighted, plain * w)


def test_words_past_75_tokens_change_embeddings_and_the_image(pipe) -> None:
    long_positive, long_negative = encode(pipe, words(120))
    longer_positive, longer_negative = encode(pipe, words(120) + " " + words(20, "z"))
    assert long_positive.shape == longer_positive.shape == (1, 154, 32)
    assert long_negative.shape == (1, 154, 32)
    assert torch.equal(long_positive[:, :77], longer_positive[:, :77])
    assert not torch.equal(long_positive[:, 77:], longer_positive[:, 77:])
    assert not np.array_equal(draw(pipe, long_positive, long_negative), draw(pipe, longer_positive, longer_negative))


def test_a_longer_negative_pads_the_positive_with_the_empty_prompt(pipe) -> None:
    positive, negative = encode(pipe, "a cat", words(200))
    assert positive.shape == negative.shape == (1, 231, 32)
    alone, empty = encode(pipe, "a cat")
    assert torch.equal(positive[:, :77], alone)
    assert torch.equal(positive[:, 77:154], empty)
    assert torch.equal(positive[:, 154:], empty)
    shorter_negative, _ = encode(pipe, words(200), "")
    assert torch.equal(shorter_negative[:, :77], negative[:, :77])


def test_img2img_takes_long_embeddings_and_repeats_them_per_image(pipe) -> None:
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    positive, negative = encode(pipe, words(120), "blurry")
    images = img2img(
        image=Image.new("RGB", (64, 64), (200, 90, 40)), strength=0.5, prompt_embeds=positive,
        negative_prompt_embeds=negative, num_inference_steps=4, num_images_per_prompt=2,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (1, 2)], output_type="np",
    ).images
    assert images.shape == (2, 64, 64, 3)
