"""`easel worker`, `easel workers` and `easel run` with a Redis queue that is not there or not configured:
one line that says what to fix, exit status 2, and never the password from redis_url."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def easel(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("command", [["worker"], ["workers"], ["run"]])
def test_an_unreachable_redis_is_one_line_without_the_password(tmp_path: Path, tiny_model: Path, command) -> None:
    (tmp_path / "config.toml").write_text(
        f'[generation]\nmodel = "{tiny_model}"\ndevice = "cpu"\n[queue]\nbackend = "redis"\n'
        f'redis_url = "redis://:hunter2@127.0.0.1:{free_port()}/0"\n')
    done = easel(*command, cwd=tmp_path, stdin="/imagine a boat\n")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("easel: cannot reach Redis at redis://:***@127.0.0.1:") and "[queue] redis_url" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert not (tmp_path / "data" / "easel.log").exists() or "hunter2" not in (tmp_path / "data" / "easel.log").read_text()


def test_a_worker_with_the_local_backend_says_how_to_switch(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\n')
    done = easel("worker", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ('easel: [queue] backend is "local", so the bot draws jobs itself and sends none '
                                   'to workers; set backend = "redis" (and redis_url) in the config of the bot and '
                                   'of every worker')


def test_a_worker_refuses_an_unknown_kind(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\n[queue]\nbackend = "redis"\n')
    done = easel("worker", "--kinds", "txt2img,video", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "easel: --kinds takes txt2img, img2img, sketch, face, upscale, vary, zoom, pan, animate, train; not video"
    done = easel("worker", "--models", "default,xl", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, "easel: --models takes default; not xl")


@pytest.mark.parametrize("command", ["worker", "workers", "run"])
def test_the_redis_backend_without_its_extra_says_what_to_install(tmp_path: Path, tiny_model: Path, command) -> None:
    (tmp_path / "config.toml").write_text(f'[generation]\nmodel = "{tiny_model}"\n[queue]\nbackend = "redis"\n')
    code = f"import sys; sys.modules['saq'] = None; from bot.cli import main; sys.exit(main([{command!r}]))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, input="/imagine a boat\n", capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ('easel: [queue] backend = "redis" needs SAQ and the Redis client (saq is not '
                                   'installed): pip install -e ".[redis]"')
