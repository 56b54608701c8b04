"""The scheduler table names real diffusers classes whose options they accept."""

from __future__ import annotations

import diffusers
import pytest

from generation.schedulers import DEFAULT_SCHEDULER, SCHEDULERS, scheduler_help


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_spec_builds_its_diffusers_class_with_its_options(name: str) -> None:
    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.class_name)
    scheduler = cls(**spec.options)
    for key, value in spec.options.items():
        assert scheduler.config[key] == value


def test_default_is_listed_and_step_stable() -> None:
    assert SCHEDULERS[DEFAULT_SCHEDULER].step_stable


def test_only_ancestral_samplers_are_marked_unstable() -> None:
    assert [name for name, spec in SCHEDULERS.items() if not spec.step_stable] == ["euler_a"]


def test_help_lists_every_name_and_marks_ancestral() -> None:
    text = scheduler_help()
    assert text.split(", ")[: len(SCHEDULERS)] == [
        f"{name} (ancestral)" if not spec.step_stable else name for name, spec in SCHEDULERS.items()
    ]
    assert "euler_a (ancestral)" in text and "dpmpp_2m (ancestral)" not in text
