"""Fixtures of the bot tests: a Service over a tiny model (tests/bot/rig.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config, QueueConfig, StorageConfig
from bot.service import Service
from generation.config import GenerationConfig
from generation.engines import build_engines
from generation.queue import JobQueue
from storage.history import History
from storage.images import ImageStore
from tests.bot.rig import DEFAULTS, Rig


@pytest.fixture
async def make_rig(tmp_path: Path, tiny_model: Path):
    made: list[Rig] = []

    async def make(**sections: object) -> Rig:
        settings = dict(
            storage=StorageConfig(data_dir=tmp_path / f"data{len(made)}"),
            generation=GenerationConfig(device="cpu", model=str(tiny_model), preview_every=0),
            defaults=DEFAULTS,
            queue=QueueConfig(max_per_user=10, max_total=50),
        )
        settings.update(sections)
        config = Config(**settings)
        history = await History.open(config.database)
        images = ImageStore(config.storage.data_dir)
        queue = JobQueue(history, images, build_engines(config), config.queue.limits())
        rig = Rig(Service(config, history, images, queue))
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.queue.stop()
        await rig.history.close()


@pytest.fixture
async def rig(make_rig) -> Rig:
    return await make_rig()
