"""The web gallery's queries on a real SQLite history: pages, filters, search, who sees what, stars, families,
deleting, and the version-7 upgrade that makes older histories searchable."""

from __future__ import annotations

import dataclasses
import datetime
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from storage.gallery import Facets, Gallery, GalleryError, GalleryQuery, lora_names, search_expression
from storage.history import History
from storage.images import ImageStore
from storage.params import AnimateParams, FaceParams
from storage.records import ImageRecord, JobRecord, JobStatus, Owner, RunInfo
from storage.schema import MODEL, SCHEMA_VERSION
from tests.conftest import params

ALICE = Owner("discord", "111", chat_id="chan-1", name="alice")
BOB = Owner("telegram", "222", chat_id="9", name="bob")
CAROL = Owner("console", "carol", chat_id="console", name="")  # no shown name: her user id stands in
RUN = RunInfo(model="sd15", model_hash="abc", memory_profile="balanced", attention="sdpa", dtype="float16",
              device="cuda", diffusers_version="0.42.1", torch_version="2.13.0")

DUSK, CAFE = "a lighthouse at dusk", "a café on 日本語 street 🦀"
# (search text, the prompts it finds): query syntax, injection, control and odd characters, all read as words.
HOSTILE = [
    ('"', []), ('""', []), ('"lighthouse', [DUSK]), ('lighthouse"', [DUSK]), ("*", []), ("light*", [DUSK]),
    ("**", []), ("NEAR", []), ("NEAR(lighthouse dusk)", []), ("NEAR/2", []), ("AND", []), ("OR", []), ("NOT", []),
    ("lighthouse AND", []), ("OR dusk", []), ("NOT lighthouse", []), (")", []), ("(", []), ("((lighthouse", [DUSK]),
    ("dusk lighthouse)", [DUSK]), ("prompt:", []), ("prompt:x", []), ("negative_prompt : blurry", []),
    ("{prompt negative_prompt}: dusk", []), ("^lighthouse", [DUSK]), ("-", []), ("+", []), (":", []), ("'", []),
    ("'; DROP TABLE jobs; --", []), ("\\", []), ("\x00", []), ("lighthouse\x00dusk", [DUSK]), ("\u202e", []),
    ("\u202edusk", [DUSK]), ("日本語", [CAFE]), ("🦀", []), ("café", [CAFE]), ("CAFE", [CAFE]),
    ("a", [CAFE, DUSK]),
    ("a" * 5000, []), (" ".join(["a lighthouse at dusk"] * 500), [DUSK]), (" ".join(map(str, range(200))), []),
    (" ", [CAFE, DUSK]), ("\t\n", [CAFE, DUSK]),  # spaces alone are no search, as an empty box is not
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db_path(data_dir: Path) -> Path:
    return data_dir / "history.sqlite3"


@pytest.fixture
def gallery(history: History) -> Gallery:
    return Gallery(history)


def raw(db_path: Path, sql: str, *args: object) -> list[tuple]:
    """Read or write with a second, independent connection: what another process would see or do."""
    with sqlite3.connect(db_path) as connection:
        return connection.execute(sql, args).fetchall()


async def add(history: History, data_dir: Path, owner: Owner = ALICE, *, status: JobStatus = JobStatus.DONE,
              parent: int | None = None, loras: str | None = None, images: int = 1, **changes: object) -> JobRecord:
    """A job as the queue leaves it: finished with real PNGs on disk (queued or running ones have none)."""
    job = await history.add_job(owner, params(**changes), parent_id=parent)
    if status is JobStatus.RUNNING:
        await history.mark_running(job.id)
    if status.finished:
        store = ImageStore(data_dir)
        records = [
            ImageRecord(job.id, k, job.params.seed + k,
                        str(store.save_output(job.id, k, Image.new("RGB", (64, 48), (k * 40, 90, 200)), "text")))
            for k in range(images if status is JobStatus.DONE else 0)
        ]
        run = dataclasses.replace(RUN, loras=loras) if status is JobStatus.DONE else None
        await history.finish(job.id, status, run=run, images=records)
    return await history.get(job.id)


async def ids(gallery: Gallery, viewer: str | None = None, **filters: object) -> list[int]:
    return [job.id for job in await gallery.page(GalleryQuery(viewer=viewer, **filters))]


async def test_pages_are_newest_first_with_their_images_and_keyset_pages_cover_each_job_once(
    gallery: Gallery, history: History, data_dir: Path
) -> None:
    made = [await add(history, data_dir, images=2) for _ in range(7)]
    first = await gallery.page(GalleryQuery(viewer=None, limit=3))
    assert [job.id for job in first] == [made[6].id, made[5].id, made[4].id]
    assert [(image.index, Path(image.path).exists()) for image in first[0].images] == [(0, True), (1, True)]
    assert first[0] == await history.get(made[6].id)  # the same JobRecord as history's own look-ups
    seen, before = [], None
    while page := await gallery.page(GalleryQuery(viewer=None, before=before, limit=3)):
        seen += [job.id for job in page]
        before = page[-1].id
    assert seen == [job.id for job in reversed(made)]
    assert await ids(gallery, before=made[0].id) == []
    # A job added while someone scrolls does not shift the pages after the one they have.
    await add(history, data_dir)
    assert await ids(gallery, before=made[4].id, limit=3) == [made[3].id, made[2].id, made[1].id]


async def test_each_filter_alone_and_together(
    gallery: Gallery, history: History, data_dir: Path, db_path: Path
) -> None:
    old_default = await add(history, data_dir, model="")  # from before the model library
    new_default = await add(history, data_dir, model="default")
    xl = await add(history, data_dir, model="sdxl", loras="add_detail: 0123456789ab, Film*Grain: ffff00001111")
    detail = await add(history, data_dir, model="sdxl", loras="more_detail: 1111, add_detail_v2: 2222")
    i2i = await add(history, data_dir, kind="img2img", loras="add_detail: 0123456789ab")
    failed = await add(history, data_dir, status=JobStatus.FAILED)
    queued = await add(history, data_dir, status=JobStatus.QUEUED)
    bobs = await add(history, data_dir, BOB, model="sdxl")
    face = await history.add_job(BOB, FaceParams(seed=1))
    raw(db_path, "UPDATE jobs SET created_at=? WHERE id IN (?,?)", "2020-03-01T23:59:59.999+00:00", old_default.id,
        new_default.id)
    raw(db_path, "UPDATE jobs SET created_at=? WHERE id=?", "2020-03-02T00:00:00.000+00:00", xl.id)

    assert await ids(gallery, kind="img2img") == [i2i.id]
    assert await ids(gallery, kind="face") == [face.id]
    assert await ids(gallery, model="sdxl") == [bobs.id, detail.id, xl.id]
    default = [queued.id, failed.id, i2i.id, new_default.id, old_default.id]  # params() draw with "" (default)
    assert await ids(gallery, model="default") == await ids(gallery, model="") == default
    assert await ids(gallery, model="nothing-like-it") == []
    # A LoRA name matches whole names only, case and all; * and ? in a name are plain characters.
    assert await ids(gallery, lora="add_detail") == [i2i.id, xl.id]
    assert await ids(gallery, lora="add_detail_v2") == [detail.id]
    assert await ids(gallery, lora="Film*Grain") == [xl.id]
    for other in ("Film*", "ADD_DETAIL", "*", "add", "detail"):
        assert await ids(gallery, lora=other) == [], other
    assert await ids(gallery, status="failed") == [failed.id]
    assert await ids(gallery, status="queued") == [face.id, queued.id]
    assert await ids(gallery, person=BOB.key) == [face.id, bobs.id]
    # Days are UTC days, both ends inclusive.
    march_1, march_2 = datetime.date(2020, 3, 1), datetime.date(2020, 3, 2)
    assert await ids(gallery, until=march_1) == [new_default.id, old_default.id]
    assert await ids(gallery, since=march_1, until=march_1) == [new_default.id, old_default.id]
    assert await ids(gallery, since=march_2, until=march_2) == [xl.id]
    assert await ids(gallery, since=march_2) == [face.id, bobs.id, queued.id, failed.id, i2i.id, detail.id, xl.id]
    assert await ids(gallery, since=datetime.date.min, until=datetime.date.max) == await ids(gallery)
    assert await ids(gallery, model="sdxl", person=ALICE.key, lora="add_detail", since=march_2) == [xl.id]
    assert await ids(gallery, kind="img2img", status="failed") == []
    # An empty form field is no filter, except model, where "" names the default model.
    everything = await ids(gallery)
    assert len(everything) == 9
    assert await ids(gallery, person="", kind="", lora="", status="", text="", starred_by="") == everything


async def test_search_finds_every_word_in_prompts_negative_prompts_and_loras(
    gallery: Gallery, history: History, data_dir: Path
) -> None:
    dusk = await add(history, data_dir, prompt="a lighthouse at dusk, oil painting", negative_prompt="blurry")
    cafe = await add(history, data_dir, prompt="Café terrace at night <lora:film_grain:0.8>", loras="film_grain: 99aa")
    storm = await add(history, data_dir, prompt="a lighthouse in a storm", negative_prompt="watermark, text")
    quoted = await add(history, data_dir, prompt='the "NEAR" sign (masterpiece:1.2) 日本語 🦀 *')
    face = await history.add_job(BOB, FaceParams(seed=1))

    assert await ids(gallery, text="lighthouse") == [storm.id, dusk.id]
    assert await ids(gallery, text="LIGHTHOUSE dusk") == [dusk.id]  # every word, any case
    assert await ids(gallery, text="dusk lighthouse") == [dusk.id]  # in any order
    assert await ids(gallery, text="blurry") == [dusk.id]  # the negative prompt too
    assert await ids(gallery, text="watermark lighthouse") == [storm.id]  # the two prompts together
    assert await ids(gallery, text="cafe") == await ids(gallery, text="café") == [cafe.id]  # accents or not
    assert await ids(gallery, text="film_grain") == [cafe.id]
    assert await ids(gallery, text="light") == [storm.id, dusk.id]  # the last word is a prefix: search as you type
    assert await ids(gallery, text="light dusk") == []  # the others are whole words
    assert await ids(gallery, text="lighthouse ocean") == []
    assert await ids(gallery, text='"NEAR"') == await ids(gallery, text="NEAR") == [quoted.id]  # a word here
    assert await ids(gallery, text="(masterpiece:1.2)") == [quoted.id]
    assert await ids(gallery, text="masterpiece:1.3") == []
    assert await ids(gallery, text="日本語") == [quoted.id]
    assert await ids(gallery, text="storm OR dusk") == []  # OR is a word to find here
    assert face.id not in await ids(gallery, text="a")
    assert await ids(gallery, text="lighthouse", before=storm.id) == [dusk.id]
    assert await ids(gallery, text="lighthouse", limit=1) == [storm.id]


@pytest.mark.parametrize("text, prompts", HOSTILE)
async def test_hostile_search_text_never_raises_and_finds_only_jobs_that_hold_its_words(
    gallery: Gallery, history: History, data_dir: Path, text: str, prompts: list[str]
) -> None:
    await add(history, data_dir, prompt=DUSK, negative_prompt="blurry")
    await add(history, data_dir, prompt=CAFE)
    assert [job.params.prompt for job in await gallery.page(GalleryQuery(viewer=ALICE.key, text=text))] == prompts


def test_search_expressions_quote_every_word() -> None:
    assert search_expression("a lighthouse") == '"a" "lighthouse"*'
    assert search_expression('say "hi" NEAR(x)') == '"say" """hi""" "NEAR(x)"*'
    assert search_expression("one\x00two") == '"one" "two"*'
    assert search_expression("*** ( ) \"") is None
    assert search_expression("Dusk at dusk AT") == '"dusk" "AT"*'  # a word said again finds nothing more


async def test_a_viewer_never_gets_another_persons_jobs(gallery: Gallery, history: History, data_dir: Path) -> None:
    mine = await add(history, data_dir, ALICE, prompt="a red lighthouse", model="sdxl", loras="mine: 1")
    theirs = await add(history, data_dir, BOB, prompt="a red lighthouse", model="secret-model", loras="theirs: 2")
    on_telegram = await add(history, data_dir, Owner("telegram", ALICE.user_id), prompt="a red lighthouse")
    await gallery.star(theirs.id, ALICE.key, True)
    assert await ids(gallery, ALICE.key) == [mine.id]  # not her namesake on another platform either
    assert await ids(gallery, ALICE.key, person=BOB.key) == []  # a person filter cannot widen the view
    assert await ids(gallery, ALICE.key, text="lighthouse") == [mine.id]
    assert await ids(gallery, ALICE.key, starred_by=ALICE.key) == []
    assert await ids(gallery, ALICE.key, model="secret-model") == []
    assert await ids(gallery, ALICE.key, lora="theirs") == []
    assert await ids(gallery, BOB.key, before=theirs.id + 10) == [theirs.id]
    assert await ids(gallery, None) == [on_telegram.id, theirs.id, mine.id]  # an admin sees everyone's
    facets = await gallery.facets(ALICE.key)
    assert (facets.people, facets.models, facets.loras) == ([(ALICE.key, "alice")], ["sdxl"], ["mine"])
    with pytest.raises(GalleryError, match="viewer must be a person as platform:user_id"):
        GalleryQuery(viewer="")  # never read as None, which would be everyone's


async def test_facets_list_what_the_jobs_hold(gallery: Gallery, history: History, data_dir: Path) -> None:
    assert await gallery.facets(None) == await gallery.facets(ALICE.key)  # an empty history: empty menus
    await add(history, data_dir, ALICE, model="", loras="add_detail: 01, Film Grain: 02")
    await add(history, data_dir, ALICE, model="default", kind="img2img")
    await add(history, data_dir, BOB, model="sdxl", loras="add_detail: 01")
    await add(history, data_dir, CAROL)
    await history.add_job(BOB, FaceParams(seed=3))
    await history.add_job(Owner(BOB.platform, BOB.user_id, name="robert"), FaceParams(seed=4))  # renamed since
    everyone = await gallery.facets(None)
    assert everyone.people == [(ALICE.key, "alice"), (CAROL.key, "carol"), (BOB.key, "robert")]
    assert everyone.kinds == ["txt2img", "img2img", "face"]  # in the order /help lists them
    assert everyone.models == ["default", "sdxl"]  # "" and "default" are one model; a face has none
    assert everyone.loras == ["add_detail", "Film Grain"]
    alice = await gallery.facets(ALICE.key)
    assert (alice.kinds, alice.models) == (["txt2img", "img2img"], ["default"])
    assert await gallery.facets("matrix:nobody") == Facets([], [], [], [])


def test_lora_names_read_a1111_lora_hashes() -> None:
    assert lora_names("add_detail: 0123456789ab, Film Grain: ffff") == ["add_detail", "Film Grain"]
    assert lora_names("odd: name: 12") == ["odd: name"]
    assert lora_names(None) == lora_names("") == []


async def test_family_is_the_parent_chain_oldest_first_and_the_children(
    gallery: Gallery, history: History, data_dir: Path
) -> None:
    first = await add(history, data_dir)
    rerun = await add(history, data_dir, parent=first.id)
    upscale = await add(history, data_dir, BOB, parent=rerun.id)  # someone else's: the web layer decides
    vary = await add(history, data_dir, parent=rerun.id)
    again = await add(history, data_dir, parent=upscale.id)
    assert [[j.id for j in part] for part in await gallery.family(again.id)] == [[first.id, rerun.id, upscale.id], []]
    assert [[j.id for j in part] for part in await gallery.family(rerun.id)] == [[first.id], [upscale.id, vary.id]]
    ancestors, children = await gallery.family(first.id)
    assert ancestors == [] and [j.id for j in children] == [rerun.id]
    assert children[0].images  # whole records, images included
    assert await gallery.family(999) == ([], [])
    assert (await gallery.get(upscale.id)).owner == BOB  # get is anyone's: the web layer checks the viewer
    assert await gallery.get(999) is None


async def test_stars_are_per_person_and_filter_pages(gallery: Gallery, history: History, data_dir: Path) -> None:
    one, two, three = [await add(history, data_dir) for _ in range(3)]
    await gallery.star(one.id, ALICE.key, True)
    await gallery.star(one.id, ALICE.key, True)  # twice is once
    await gallery.star(three.id, ALICE.key, True)
    await gallery.star(two.id, BOB.key, True)
    assert await gallery.starred(ALICE.key, [one.id, two.id, three.id, 999]) == {one.id, three.id}
    assert await gallery.starred(BOB.key, (j for j in range(1, 2000))) == {two.id}  # more ids than one query takes
    assert await gallery.starred(ALICE.key, []) == set()
    assert await ids(gallery, starred_by=ALICE.key) == [three.id, one.id]
    assert await ids(gallery, ALICE.key, starred_by=ALICE.key) == [three.id, one.id]
    await gallery.star(three.id, ALICE.key, False)
    await gallery.star(three.id, ALICE.key, False)
    assert await ids(gallery, starred_by=ALICE.key) == [one.id]
    with pytest.raises(GalleryError, match="job #999 is not in the history"):
        await gallery.star(999, ALICE.key, True)
    with pytest.raises(GalleryError, match="person must be a person as platform:user_id"):
        await gallery.star(one.id, "alice", True)


async def test_deleting_a_job_removes_its_rows_and_names_its_files(
    gallery: Gallery, history: History, data_dir: Path, db_path: Path
) -> None:
    parent = await add(history, data_dir, prompt="an unmistakable zeppelin", images=3)
    child = await add(history, data_dir, parent=parent.id)
    other = await add(history, data_dir, prompt="an unmistakable zeppelin")
    await gallery.star(parent.id, ALICE.key, True)
    await gallery.star(parent.id, BOB.key, True)
    await history.link_message("discord", "chan-1", "900", parent.id)
    files = await gallery.delete(parent.id)
    assert files == [Path(image.path) for image in parent.images] and all(path.exists() for path in files)
    assert await gallery.get(parent.id) is None
    assert (await gallery.get(child.id)).parent_id is None  # its children stay
    assert await ids(gallery, text="zeppelin") == [other.id]
    assert await ids(gallery, starred_by=BOB.key) == []
    assert await history.job_for_message("discord", "chan-1", "900") is None
    for table in ("images", "stars", "messages"):
        assert raw(db_path, f"SELECT COUNT(*) FROM {table} WHERE job_id=?", parent.id) == [(0,)]
    assert raw(db_path, "SELECT COUNT(*) FROM jobs_fts WHERE rowid=?", parent.id) == [(0,)]
    assert raw(db_path, "PRAGMA foreign_key_check") == []
    with pytest.raises(GalleryError, match=f"job #{parent.id} is not in the history"):
        await gallery.delete(parent.id)


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
async def test_a_job_still_in_the_line_is_not_deleted(gallery: Gallery, history: History, data_dir: Path,
                                                      status: JobStatus) -> None:
    job = await add(history, data_dir, status=status)
    with pytest.raises(GalleryError, match=f"job #{job.id} is {status.value}; cancel it or let it finish first"):
        await gallery.delete(job.id)
    assert await gallery.get(job.id) == job


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
async def test_a_failed_or_cancelled_job_is_deleted(gallery: Gallery, history: History, data_dir: Path,
                                                    status: JobStatus) -> None:
    job = await add(history, data_dir, status=status)
    assert await gallery.delete(job.id) == []
    assert await gallery.get(job.id) is None


async def test_deleting_an_animation_names_its_frames_and_its_video(
    gallery: Gallery, history: History, data_dir: Path
) -> None:
    job = await history.add_job(ALICE, AnimateParams(
        prompt="hills", seed=7, steps=4, cfg=7.0, width=64, height=64, scheduler="euler", mode="zoom", frames=3))
    store = ImageStore(data_dir)
    folder = store.job_folder(job.id)
    frames = [ImageRecord(job.id, k, 7 + k, str(store.save_output(job.id, k, Image.new("RGB", (64, 64)), "f", folder)))
              for k in range(3)]
    video = store.save_file(folder, f"{job.id}.mp4", b"an mp4")
    await history.finish(job.id, JobStatus.DONE, images=frames)
    assert await gallery.delete(job.id) == [*(Path(frame.path) for frame in frames), video]


async def test_the_search_follows_every_write_to_jobs(gallery: Gallery, history: History, data_dir: Path,
                                                       db_path: Path) -> None:
    job = await history.add_job(ALICE, params(prompt="a quiet harbour"))
    assert await ids(gallery, text="harbour") == [job.id]  # searchable from the moment it is queued
    await history.mark_running(job.id)
    await history.finish(job.id, JobStatus.DONE, run=dataclasses.replace(RUN, loras="seascape_v3: 77"))
    assert await ids(gallery, text="seascape_v3") == await ids(gallery, text="harbour") == [job.id]
    raw(db_path, "UPDATE jobs SET params=json_set(params, '$.prompt', 'a loud market') WHERE id=?", job.id)
    assert await ids(gallery, text="harbour") == []
    assert await ids(gallery, text="market") == [job.id]
    raw(db_path, "DELETE FROM jobs WHERE id=?", job.id)
    assert await ids(gallery, text="market") == []
    assert raw(db_path, "SELECT COUNT(*) FROM jobs_fts") == [(0,)]


async def test_a_version_6_database_is_upgraded_and_its_jobs_become_searchable(
    history: History, data_dir: Path, db_path: Path
) -> None:
    lighthouse = await add(history, data_dir, prompt="a lighthouse at dusk", negative_prompt="blurry")
    face = await history.add_job(BOB, FaceParams(seed=5))
    xl = await add(history, data_dir, prompt="a tower", model="sdxl", loras="film_grain: 01", parent=lighthouse.id)
    await history.close()
    with sqlite3.connect(db_path) as db:  # as version 6 left it: none of version 7's tables, triggers or indexes
        for kind, name in db.execute("""SELECT type, name FROM sqlite_master WHERE type IN ('table', 'trigger', 'index')
                                        AND (name LIKE 'jobs_fts%' OR name IN ('stars', 'stars_person', 'jobs_kind',
                                        'jobs_model', 'jobs_created', 'jobs_parent'))""").fetchall():
            if not (kind == "table" and name.startswith("jobs_fts_")):  # the search table's own shadow tables
                db.execute(f"DROP {kind} IF EXISTS {name}")
        db.execute("PRAGMA user_version=6")
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE name LIKE 'jobs_fts%' OR name = 'stars'") == []
    async with await History.open(db_path) as again:
        gallery = Gallery(again)
        assert await ids(gallery, text="dusk") == await ids(gallery, text="blurry") == [lighthouse.id]
        assert await ids(gallery, text="film_grain") == [xl.id]
        assert await ids(gallery) == [xl.id, face.id, lighthouse.id]
        assert await ids(gallery, model="sdxl") == [xl.id]
        assert (await gallery.get(xl.id)) == xl
        await gallery.star(xl.id, ALICE.key, True)
        later = await again.add_job(ALICE, params(prompt="a new dusk"))
        assert await ids(gallery, text="dusk") == [later.id, lighthouse.id]
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(7,)]
    assert raw(db_path, "SELECT rowid, prompt FROM jobs_fts WHERE rowid=?", face.id) == [(face.id, "")]


async def test_the_filters_use_their_indexes(history: History, data_dir: Path, db_path: Path) -> None:
    def plan(where: str, *args: object) -> str:
        return " ".join(row[3] for row in raw(db_path, f"EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE {where} "
                                                       "ORDER BY id DESC LIMIT 60", *args))

    assert "jobs_model" in plan(f"{MODEL}=?", "sdxl")
    assert "jobs_kind" in plan("kind=?", "img2img")
    assert "jobs_owner" in plan("platform=? AND user_id=?", "discord", "1")
    assert "TEMP B-TREE" not in plan(f"{MODEL}=? AND id < ?", "sdxl", 100)  # read newest first, no sorting
    assert "jobs_parent" in plan("parent_id=?", 1)


def test_queries_are_checked_up_front() -> None:
    with pytest.raises(GalleryError, match=r"status must be one of queued, running, done, failed, cancelled, got 'ok'"):
        GalleryQuery(viewer=None, status="ok")
    with pytest.raises(GalleryError, match="a search takes at most 200 different words, got 201"):
        GalleryQuery(viewer=None, text=" ".join(map(str, range(201))))
    with pytest.raises(GalleryError, match="limit must be 1–500, got 0"):
        GalleryQuery(viewer=None, limit=0)
    with pytest.raises(GalleryError, match="person must be a person as platform:user_id, got 'bob'"):
        GalleryQuery(viewer=None, person="bob")
    with pytest.raises(GalleryError, match="starred_by must be"):
        GalleryQuery(viewer=ALICE.key, starred_by=":x")
    assert GalleryQuery(viewer="discord:1:2").viewer == "discord:1:2"  # a user id may hold a colon


@pytest.mark.parametrize("few", [0, 10**9], ids=["indexes lead", "matches lead"])
async def test_every_way_of_walking_the_jobs_gives_what_a_plain_filter_gives(
    history: History, data_dir: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    monkeypatch.setattr("storage.gallery._FEW", few)  # searches and stars lead, or never do
    gallery = Gallery(history)
    people, models = [ALICE, BOB, CAROL], ["", "default", "sdxl"]
    words, loras = ["lighthouse", "castle", "fox"], [None, "lcm: 01", "lcm: 01, add_detail: 02"]
    statuses = [JobStatus.DONE, JobStatus.DONE, JobStatus.FAILED, JobStatus.QUEUED]
    made = []
    for n in range(48):
        made.append(await add(history, data_dir, people[n % 3], prompt=f"a {words[n % 5 % 3]} at dusk",
                              model=models[n % 7 % 3], loras=loras[n % 4 % 3], status=statuses[n % 4],
                              kind="img2img" if n % 5 == 0 else None))
        # Out of order on purpose: a clock that went back must not hide a job from a date range.
        raw(db_path, "UPDATE jobs SET created_at=? WHERE id=?", f"2026-05-{1 + (n * 7) % 20:02}T12:00:00.000+00:00",
            made[-1].id)
        if n % 3 != 1:
            await gallery.star(made[-1].id, ALICE.key, True)
    jobs = {job.id: await history.get(job.id) for job in made}

    def expected(query: GalleryQuery) -> list[int]:
        def keep(job: JobRecord) -> bool:
            day = job.created_at.date()
            return all((
                query.viewer in (None, job.owner.key), query.person in (None, job.owner.key),
                query.kind in (None, job.params.kind), query.status in (None, job.status.value),
                query.model is None or (job.params.model or "default") == (query.model or "default"),
                query.lora is None or query.lora in lora_names(job.run.loras if job.run else None),
                query.since is None or query.since <= day, query.until is None or day <= query.until,
                query.text is None or query.text in job.params.prompt,
                query.starred_by is None or (query.starred_by == ALICE.key and job.id % 3 != 2),
                query.before is None or job.id < query.before,
            ))
        return sorted((job.id for job in jobs.values() if keep(job)), reverse=True)[:query.limit]

    may = [dict(viewer=None), dict(viewer=ALICE.key), dict(viewer=BOB.key, person=BOB.key)]
    filters = [{}, dict(kind="img2img"), dict(model="default"), dict(model="sdxl"), dict(lora="lcm"),
               dict(status="failed"), dict(since=datetime.date(2026, 5, 8)), dict(until=datetime.date(2026, 5, 5)),
               dict(since=datetime.date(2026, 5, 3), until=datetime.date(2026, 5, 12)), dict(text="castle"),
               dict(text="fox", model="default"), dict(starred_by=ALICE.key), dict(starred_by=ALICE.key, text="castle"),
               dict(before=30, limit=5), dict(text="lighthouse", status="done", lora="add_detail", before=40)]
    for viewer in may:
        for more in filters:
            query = GalleryQuery(**viewer, **more)
            assert await ids(gallery, **viewer, **more) == expected(query), query
