"""How fast the web gallery's queries answer on a big history (target: under 100 ms each).

    python benchmarks/gallery.py [--jobs 25000] [--runs 20] [--keep FILE]

Builds a history of --jobs jobs from a few people (prompts from a small word list, mixed kinds, models, LoRAs and
statuses, one image row each, created over a year), written in bulk in one transaction; the schema's triggers
fill the search table as the queue's inserts would. Then prints the median time of each gallery query over
--runs runs, through storage.gallery as the web app calls it (rows turned into JobRecords included), and the
size of the database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.gallery import Gallery, GalleryQuery  # noqa: E402
from storage.history import History  # noqa: E402
from storage.params import FaceParams, Img2ImgParams, Txt2ImgParams, VaryParams, params_to_json  # noqa: E402
from storage.records import JobStatus, Owner  # noqa: E402

PEOPLE = [  # (person, share of the jobs)
    (Owner("discord", "111", name="alice"), 40), (Owner("discord", "222", name="bob"), 25),
    (Owner("telegram", "333", name="carol"), 20), (Owner("console", "dave", name="dave"), 10),
    (Owner("telegram", "444", name="erin"), 5),
]
SUBJECTS = ("lighthouse", "castle", "portrait of a woman", "old man", "cat", "dog", "fox", "dragon", "robot",
            "spaceship", "forest", "mountain lake", "city street", "market", "harbour", "cottage", "knight",
            "wizard", "samurai", "astronaut", "owl", "whale", "garden", "temple", "train station", "bridge")
PLACES = ("at dusk", "at night", "in the rain", "in winter", "under a full moon", "at sunrise", "in fog",
          "in a storm", "in autumn", "on a summer day", "by the sea", "in the desert", "in the mountains")
STYLES = ("oil painting", "watercolor", "digital art", "photograph", "35mm film", "studio lighting", "concept art",
          "ink drawing", "pastel colors", "cinematic", "highly detailed", "sharp focus", "8k", "trending on artstation",
          "by greg rutkowski", "octane render", "volumetric light", "bokeh", "art nouveau", "ukiyo-e", "low poly")
NEGATIVE = ("blurry", "lowres", "bad anatomy", "watermark", "text", "jpeg artifacts", "extra fingers", "deformed")
MODELS = ("", "default", "sdxl", "dreamshaper", "realvis", "anything-v5")
LORAS = ("add_detail", "film_grain", "epi_noise", "more_details", "lcm", "ghibli_style")
LORA_HASHES = {name: f"{random.Random(name).randrange(16**12):012x}" for name in LORAS}  # a file's hash is its own
RARE = "zeppelin"  # in a handful of prompts only
KINDS = (("txt2img", 70), ("img2img", 15), ("vary", 10), ("face", 5))
STATUSES = ((JobStatus.DONE, 90), (JobStatus.FAILED, 5), (JobStatus.CANCELLED, 4), (JobStatus.QUEUED, 1))
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def pick(rng: random.Random, weighted: tuple | list) -> object:
    return rng.choices([value for value, _ in weighted], [weight for _, weight in weighted])[0]


def job_row(rng: random.Random, job_id: int, total: int) -> tuple[tuple, tuple | None]:
    """One jobs row as the queue writes it, and its image row (None for a job without an image)."""
    owner = pick(rng, PEOPLE)
    kind = pick(rng, KINDS)
    status = pick(rng, STATUSES) if job_id < total - 20 else JobStatus.QUEUED  # the last few still in the line
    seed = rng.randrange(2**32)
    prompt = f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}, " + ", ".join(rng.sample(STYLES, rng.randint(2, 6)))
    if job_id % 2500 == 7:
        prompt += f", a {RARE} in the sky"
    loras = None
    if kind != "face" and rng.random() < 0.2:
        chosen = rng.sample(LORAS, rng.randint(1, 2))
        prompt += "".join(f" <lora:{name}:{rng.choice((0.5, 0.8, 1))}>" for name in chosen)
        loras = ", ".join(f"{name}: {LORA_HASHES[name]}" for name in chosen)
    drawing = dict(prompt=prompt, negative_prompt=", ".join(rng.sample(NEGATIVE, rng.randint(0, 4))), seed=seed,
                   steps=rng.choice((20, 30, 50)), cfg=7.0, width=512, height=512, scheduler="dpmpp_2m",
                   model=rng.choice(MODELS))
    if kind == "txt2img":
        params = Txt2ImgParams(**drawing)
    elif kind == "img2img":
        params = Img2ImgParams(**drawing, strength=0.6, input_sha256=f"{rng.randrange(16**64):064x}")
    elif kind == "vary":
        params = VaryParams(**drawing, strength=0.35, source_job=max(1, job_id - 1), input_sha256="0" * 64)
    else:
        params = FaceParams(seed=seed)
    created = START + datetime.timedelta(seconds=job_id * 365 * 86400 / total)
    stamp = created.isoformat(timespec="milliseconds")
    finished = status.finished
    row = (job_id, owner.platform, owner.user_id, owner.chat_id, owner.name, kind, seed, 1, params_to_json(params),
           "sd15" if status is JobStatus.DONE else None, loras, job_id - 1 if kind == "vary" else None, status.value,
           int(finished), stamp, stamp if finished else None, stamp if finished else None)
    day = created.strftime("%Y-%m-%d")
    image = (job_id, 0, seed, f"data/images/{day}/{job_id}-0.png") if status is JobStatus.DONE else None
    return row, image


def fill(path: Path, total: int) -> None:
    """total jobs written in one transaction (the schema's triggers index their prompts as they go)."""
    rng = random.Random(22)
    rows, images = [], []
    for job_id in range(1, total + 1):
        row, image = job_row(rng, job_id, total)
        rows.append(row)
        if image is not None:
            images.append(image)
    with sqlite3.connect(path) as db:
        db.executemany(
            """INSERT INTO jobs (id, platform, user_id, chat_id, user_name, kind, seed, count, params, model, loras,
                   parent_id, status, delivered, created_at, started_at, finished_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", rows)
        db.executemany("INSERT INTO images (job_id, idx, seed, path) VALUES (?,?,?,?)", images)
        db.executemany("INSERT INTO stars (job_id, platform, user_id, created_at) VALUES (?,?,?,?)",
                       [(job_id, "discord", "111", "2026-06-01T00:00:00.000+00:00") for job_id in range(5, total, 97)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def median_ms(call, runs: int) -> tuple[float, int]:
    """The median wall time of `call()` in ms over `runs` runs (after one warm-up), and what it returned's size."""
    result = await call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(result) if hasattr(result, "__len__") else len(result.people)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=25_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="write the history here (a new file) and keep it")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = options.keep or Path(folder) / "history.sqlite3"
        if path.exists():
            parser.error(f"{path} exists; --keep takes a new file")
        async with await History.open(path):  # the schema, as easel creates it
            pass
        start = time.perf_counter()
        fill(path, options.jobs)
        print(f"{options.jobs} jobs written in {time.perf_counter() - start:.1f} s; "
              f"database {path.stat().st_size / 2**20:.1f} MiB")

        alice, erin = PEOPLE[0][0].key, PEOPLE[-1][0].key
        deep = options.jobs // 5  # four fifths of the history newer than it
        async with await History.open(path) as history:
            gallery = Gallery(history)
            checks = [
                ("first page, admin", GalleryQuery(viewer=None)),
                ("first page, one person (40 % of jobs)", GalleryQuery(viewer=alice)),
                ("first page, one person (5 % of jobs)", GalleryQuery(viewer=erin)),
                (f"deep page (keyset, before #{deep}), admin", GalleryQuery(viewer=None, before=deep)),
                (f"deep page (keyset, before #{deep}), one person", GalleryQuery(viewer=alice, before=deep)),
                ("search, common word (lighthouse)", GalleryQuery(viewer=None, text="lighthouse")),
                (f"search, rare word ({RARE})", GalleryQuery(viewer=None, text=RARE)),
                ("search, two words, prefix (oil paint)", GalleryQuery(viewer=None, text="oil paint")),
                ("search, common word, one person", GalleryQuery(viewer=alice, text="lighthouse")),
                ("search, word in no prompt", GalleryQuery(viewer=None, text="nowhere")),
                ("search, one letter as typed (a, 85 % of jobs)", GalleryQuery(viewer=None, text="a")),
                ("search, one letter, one person, queued only", GalleryQuery(viewer=alice, text="a", status="queued")),
                ("model filter (sdxl)", GalleryQuery(viewer=None, model="sdxl")),
                ("model filter (default: '' or 'default')", GalleryQuery(viewer=None, model="default")),
                ("model filter, one person", GalleryQuery(viewer=alice, model="sdxl")),
                ("kind filter (face)", GalleryQuery(viewer=None, kind="face")),
                ("status filter (failed)", GalleryQuery(viewer=None, status="failed")),
                ("LoRA filter (lcm)", GalleryQuery(viewer=None, lora="lcm")),
                ("date range (one week in March)",
                 GalleryQuery(viewer=None, since=datetime.date(2026, 3, 2), until=datetime.date(2026, 3, 8))),
                ("date range (all of 2026), one person",
                 GalleryQuery(viewer=alice, since=datetime.date(2026, 1, 1), until=datetime.date(2026, 12, 31))),
                ("starred by one person", GalleryQuery(viewer=alice, starred_by=alice)),
                ("everything at once", GalleryQuery(viewer=None, person=alice, model="sdxl", text="castle",
                                                    status="done", since=datetime.date(2026, 2, 1))),
            ]
            print(f"median of {options.runs} runs, {GalleryQuery(viewer=None).limit} jobs a page:")
            for name, query in checks:
                ms, found = await median_ms(lambda query=query: gallery.page(query), options.runs)
                print(f"  {name:<48} {ms:7.1f} ms  ({found} jobs)")
            for name, viewer in (("facets, admin", None), ("facets, one person", alice)):
                ms, found = await median_ms(lambda viewer=viewer: gallery.facets(viewer), options.runs)
                print(f"  {name:<48} {ms:7.1f} ms  ({found} people)")
            ms, _ = await median_ms(lambda: gallery.family(options.jobs - 30), options.runs)
            print(f"  {'family (parent chain and children)':<48} {ms:7.1f} ms")
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
        print(f"database size: {size / 2**20:.1f} MiB ({size / options.jobs / 1024:.2f} KiB a job, WAL included)")


if __name__ == "__main__":
    asyncio.run(main())
