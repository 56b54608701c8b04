"""The wire format the bot and its workers share: every entry reads back as it was written, as Redis returns it."""

from __future__ import annotations

import pytest

from generation.wire import (Cancelled, Done, Failed, Progressed, RedisSettings, Started, WorkerInfo,
                             event_from_fields, is_end)
from storage.records import RunInfo

RUN = RunInfo(model="tiny", model_hash="abc123", memory_profile="speed", attention="sdpa", dtype="float32",
              device="cpu", diffusers_version="0.1", torch_version="2.13.0", controlnet="scribble")


def as_redis_returns(fields: dict) -> dict[bytes, bytes]:
    """What XRANGE/XREADGROUP or HGETALL give back for fields written with XADD or HSET: bytes throughout."""
    return {key.encode(): value if isinstance(value, bytes) else str(value).encode() for key, value in fields.items()}


@pytest.mark.parametrize("event", [
    Started(7, "gpu-box-1", attempt=2, free_since=1700000000.25),
    Progressed(7, "gpu-box-1", step=3, total=30),
    Progressed(7, "gpu-box-1", step=5, total=30, preview=b"\x89PNG\r\n\x1a\n preview"),
    Done(7, "gpu-box-1", images=(b"\x89PNG one", b"\x89PNG two"), seeds=(42, 43), run=RUN),
    Failed(7, "gpu-box-1", error="out of memory; try a smaller size", run=RUN),
    Failed(7, "", error="the workers stopped 3 times"),
    Cancelled(7, "gpu-box-1"),
], ids=lambda event: type(event).__name__)
def test_every_event_reads_back_as_it_was_written(event) -> None:
    read = event_from_fields(as_redis_returns(event.to_fields()))
    assert read == event and type(read) is type(event)
    assert is_end(read) == isinstance(event, (Done, Failed, Cancelled))


def test_the_image_fields_stay_bytes_and_count_as_written() -> None:
    fields = Done(1, "w", images=(b"\xff\xd8 not utf-8",) * 3, seeds=(1, 2, 3), run=None).to_fields()
    assert fields["images"] == 3 and [fields[f"image{k}"] for k in range(3)] == [b"\xff\xd8 not utf-8"] * 3
    assert event_from_fields(as_redis_returns(fields)).images == (b"\xff\xd8 not utf-8",) * 3


@pytest.mark.parametrize("running", [None, 12])
def test_a_workers_registration_reads_back(running: int | None) -> None:
    info = WorkerInfo(name="w1", gpu="cpu (2 cores)", kinds=("txt2img", "face"), pool="easel-face+txt2img",
                      done=4, running=running, seen=1700000000.5)
    assert WorkerInfo.from_fields(as_redis_returns(info.to_fields())) == info


def test_settings_name_every_key_and_hide_the_url() -> None:
    settings = RedisSettings(url="redis://:hunter2@127.0.0.1:6379/0", prefix="home")
    assert "hunter2" not in repr(settings)
    assert settings.pool(["txt2img", "face"]) == settings.pool(["face", "txt2img"]) == "home-face+txt2img"
    assert (settings.events, settings.input_key("ab"), settings.cancel_key(3), settings.pool_key(3),
            settings.worker_key("w1")) == ("home:events", "home:input:ab", "home:cancel:3", "home:pool:3",
                                           "home:worker:w1")
