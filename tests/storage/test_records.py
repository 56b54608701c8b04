"""The typed rows: seeds of a batch, img2img step counts, owner keys, job status."""

from __future__ import annotations

import dataclasses

import pytest

from storage.records import JobKind, JobParams, JobStatus, Owner, is_hub_id


def params(**changes: object) -> JobParams:
    base = JobParams(
        kind=JobKind.TXT2IMG, prompt="a lighthouse at dusk", negative_prompt="", seed=100, steps=30,
        cfg=7.0, width=512, height=512, count=1, scheduler="dpmpp_2m",
    )
    return base.replace(**changes)


def test_seeds_of_a_batch_are_consecutive() -> None:
    assert params(seed=7, count=4).seeds == (7, 8, 9, 10)
    assert params(seed=7, count=1).seeds == (7,)


@pytest.mark.parametrize(
    ("kind", "steps", "strength", "expected"),
    [
        (JobKind.TXT2IMG, 30, None, 30),
        (JobKind.TXT2IMG, 30, 0.5, 30),  # strength means nothing to txt2img
        (JobKind.IMG2IMG, 30, 0.5, 15),
        (JobKind.IMG2IMG, 10, 0.75, 7),  # int() truncates, as diffusers does
        (JobKind.IMG2IMG, 3, 0.1, 1),  # never zero steps
    ],
)
def test_effective_steps(kind: JobKind, steps: int, strength: float | None, expected: int) -> None:
    assert params(kind=kind, steps=steps, strength=strength).effective_steps == expected


def test_replace_returns_a_new_frozen_value() -> None:
    original = params()
    changed = original.replace(steps=350)
    assert (original.steps, changed.steps) == (30, 350)
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
