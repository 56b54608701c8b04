"""The typed rows: seeds of a batch, img2img step counts, owner keys, job status."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pydantic import ValidationError

from storage.records import JobStatus, Owner, is_hub_id
from storage.params import params_from_json, params_to_json
from tests.conftest import params


def test_seeds_of_a_batch_are_consecutive() -> None:
    assert params(seed=7, count=4).seeds == (7, 8, 9, 10)
    assert params(seed=7, count=1).seeds == (7,)


def test_txt2img_runs_all_its_steps_and_has_no_strength_or_input() -> None:
    job = params(steps=30)
    assert job.kind == "txt2img" and job.effective_steps == 30 and job.inputs == ()
    with pytest.raises(TypeError):
        job.replace(strength=0.5)  # a text→image job cannot carry a setting it would ignore


@pytest.mark.parametrize(
    ("steps", "strength", "expected"),
    [
        (30, 0.5, 15),
        (10, 0.75, 7),  # int() truncates, as diffusers does
        (3, 0.1, 1),  # never zero steps
    ],
)
def test_img2img_runs_steps_times_strength(steps: int, strength: float, expected: int) -> None:
    job = params(steps=steps, strength=strength, input_sha256="ab" * 32)
    assert job.kind == "img2img" and job.effective_steps == expected and job.inputs == ("ab" * 32,)


@pytest.mark.parametrize(
    "job",
    [
        params(cfg=7.1234567, prompt='a "red", tall: lighthouse — café, 東京', vae_tiling=True),
        params(strength=0.3, input_sha256="cd" * 32, count=3, seed=2**32 - 3),
    ],
)
def test_params_survive_json_exactly(job) -> None:
    text = params_to_json(job)
    assert params_from_json(text) == job and type(params_from_json(text)) is type(job)
    assert json.loads(text)["kind"] == job.kind


def test_stored_params_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValidationError):
        params_from_json('{"kind": "txt2img", "seed": 1}')  # no prompt, steps…
    with pytest.raises(ValidationError):
        params_from_json(params_to_json(params()).replace("txt2img", "no-such-kind"))


def test_replace_returns_a_new_frozen_value() -> None:
    original = params()
    changed = original.replace(steps=350)
    assert (original.steps, changed.steps) == (2, 350)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.steps = 1  # type: ignore[misc]


def test_owner_key_separates_platforms_and_ignores_chat_and_name() -> None:
    assert Owner("discord", "1", chat_id="a", name="x").key == Owner("discord", "1", chat_id="b", name="y").key
    assert Owner("discord", "1").key != Owner("telegram", "1").key


def test_finished_statuses() -> None:
    assert {s for s in JobStatus if s.finished} == {JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}
    assert JobStatus("running") is JobStatus.RUNNING and str(JobStatus.DONE) == "done"


@pytest.mark.parametrize(
    "model, hub",
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", True),
        ("runwayml/stable-diffusion-v1-5", True),
        ("./models/sd15", False),
        ("/srv/models/sd15", False),
        ("~/models/sd15", False),
        ("C:\\models\\sd15", False),
        ("models/sd15/unet", False),
        ("sd15", False),
    ],
)
def test_is_hub_id_tells_repos_from_paths(model: str, hub: bool) -> None:
    assert is_hub_id(model) is hub
