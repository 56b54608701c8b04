"""Jobs per minute with 1 and 2 `easel worker` processes, and the dispatch overhead per job.

    python benchmarks/redis_scale.py [--jobs 24] [--steps 20] [--size 64]

Starts its own redis-server on 127.0.0.1 (from the system packages), builds the tiny model, and runs
the bot's JobQueue with a RedisRunner over real SQLite and image files against 1, then 2 CPU workers (one torch
thread each). Dispatch overhead is the time from the bot sending a job (its STARTED event), or from the worker
finishing its previous job if that is later (a prefetched job waits for it), to the worker's own
"started" entry in the events stream (the entry's timestamp), median per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation.queue import EventKind, JobQueue, QueueLimits  # noqa: E402
from generation.redis_runner import RedisRunner  # noqa: E402
from generation.tiny import make_tiny_model  # noqa: E402
from generation.wire import RedisSettings  # noqa: E402
from storage.history import History  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.records import Owner  # noqa: E402
from storage.params import Txt2ImgParams


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run(folder: Path, url: str, model: Path, workers: int, args) -> tuple[float, float]:
    config = folder / f"config-{workers}.toml"
    config.write_text(f'[storage]\ndata_dir = "{folder / "wdata"}"\n[generation]\nmodel = "{model}"\n'
                      f'device = "cpu"\npreview_every = 0\n[queue]\nbackend = "redis"\nredis_url = "{url}"\n'
                      f'redis_prefix = "bench{workers}"\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--config", str(config), "--name", f"w{k}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(workers)]
    settings = RedisSettings(url=url, prefix=f"bench{workers}")
    data = folder / f"data-{workers}"
    try:
        async with await History.open(data / "easel.db") as history:
            store = ImageStore(data)
            runner = RedisRunner(settings, store, poll_seconds=0.2)
            queue = JobQueue(history, store, runner, QueueLimits(999, 999))
            sent: dict[int, float] = {}
            ended: list[int] = []
            queue.subscribe(lambda e: sent.setdefault(e.job.id, time.time()) if e.kind is EventKind.STARTED
                            else ended.append(e.job.id) if e.finished else None)
            await queue.start()
            try:
                while len(runner.workers) < workers:
                    await asyncio.sleep(0.1)
                warm = [await queue.submit(Owner(platform="bench", user_id="warm"), job(args, 0)) for _ in range(workers)]
                while len(ended) < len(warm):  # models load on each worker's first job
                    await asyncio.sleep(0.05)
                start = time.perf_counter()
                for k in range(args.jobs):
                    await queue.submit(Owner(platform="bench", user_id=str(k % 3)), job(args, k))
                while len(ended) < len(warm) + args.jobs:
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - start
                import redis.asyncio as aioredis

                client = aioredis.from_url(url)
                entries = await client.xrange(settings.events)
                await client.aclose()
                # A prefetched job waits for its worker's previous one: count from when the worker was free.
                overhead = [int(entry.split(b"-")[0]) / 1000 - max(sent[int(fields[b"job"])], float(fields[b"free_since"]))
                            for entry, fields in entries
                            if fields[b"type"] == b"started" and int(fields[b"job"]) not in {w.id for w in warm}]
            finally:
                await queue.stop()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    return args.jobs / elapsed * 60, statistics.median(overhead)


def job(args, seed: int) -> Txt2ImgParams:
    return Txt2ImgParams(prompt="a red lighthouse", seed=seed, steps=args.steps, cfg=7.0, width=args.size,
                         height=args.size, scheduler="dpmpp_2m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        sys.exit("redis-server is not installed (apt install redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        server = subprocess.Popen([server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            model = make_tiny_model(folder / "tiny")
            url = f"redis://127.0.0.1:{port}/0"
            results = {n: asyncio.run(run(folder, url, model, n, args)) for n in (1, 2)}
        finally:
            server.terminate()
            server.wait(10)
    print(f"tiny model on CPU workers (1 torch thread each), {args.size}x{args.size}, {args.steps} steps, "
          f"{args.jobs} jobs from 3 people, {os.cpu_count()} cores")
    for n, (per_minute, overhead) in results.items():
        print(f"{n} worker{'s' if n > 1 else ' '}: {per_minute:7.1f} jobs/min; dispatch overhead (bot sends → "
              f"worker starts) median {overhead * 1000:.1f} ms")
    print(f"speed-up with 2 workers: {results[2][0] / results[1][0]:.2f}x")


if __name__ == "__main__":
    main()
