"""The [generation] section: typed, frozen, and loud about keys and values it does not know."""

from __future__ import annotations

import pydantic
import pytest

from generation.config import DEFAULT_MODEL, GenerationConfig


def test_defaults() -> None:
    config = GenerationConfig()
    assert config.model == DEFAULT_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (config.device, config.memory, config.dtype, config.preview_every) == ("auto", "auto", "auto", 5)


def test_unknown_key_is_named() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        GenerationConfig(modle="x")
    assert caught.value.errors()[0]["loc"] == ("modle",)


@pytest.mark.parametrize(
    ("key", "value"),
    [("memory", "turbo"), ("device", "tpu"), ("dtype", "float8"), ("preview_every", -1), ("preview_every", 1001), ("model", "")],
)
def test_bad_values_are_refused(key: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        GenerationConfig(**{key: value})
    assert caught.value.errors()[0]["loc"] == (key,)


def test_frozen() -> None:
    config = GenerationConfig(memory="low")
    with pytest.raises(pydantic.ValidationError):
        config.memory = "speed"  # type: ignore[misc]
