"""The history's SQLite schema: creating it, upgrading an older one in place, and saying plainly what is wrong
with a database file that cannot be used."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.errors import StorageError
from storage.params import Img2ImgParams, JobParams, Txt2ImgParams, params_to_json
from storage.records import JobStatus

SCHEMA_VERSION = 7

# A job's model name as its params hold it ("" or "default": the default model; NULL: a kind without one). The
# gallery's model filter must write it exactly so for SQLite to use the index on it.
MODEL = "json_extract(params, '$.model')"

# Version 2: each kind's parameters are one JSON column, validated into its typed class on read, so
# a new kind needs no migration. Only what queries need (kind, seed, count) has columns of its own.
_JOBS_TABLE = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    user_id TEXT NOT NULL,
    chat_id TEXT NOT NULL DEFAULT '',
    user_name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    seed INTEGER NOT NULL,
    count INTEGER NOT NULL,
    params TEXT NOT NULL,
    model TEXT,
    model_hash TEXT,
    memory_profile TEXT,
    attention TEXT,
    dtype TEXT,
    device TEXT,
    diffusers_version TEXT,
    torch_version TEXT,
    vae_tiling INTEGER,
    controlnet TEXT,
    family TEXT,
    loras TEXT,
    embeddings TEXT,
    vae TEXT,
    refiner TEXT,
    parent_id INTEGER REFERENCES jobs(id),
    status TEXT NOT NULL,
    error TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    unsure_sends INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
)"""
_INDEXES_AND_IMAGES = (
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(platform, user_id, id)",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status)",
    "CREATE INDEX IF NOT EXISTS jobs_undelivered ON jobs(platform, id) WHERE delivered = 0",
    """CREATE TABLE IF NOT EXISTS images (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    )""",
    "CREATE INDEX IF NOT EXISTS images_seed ON images(seed)",
    # Version 3: which chat message shows which job, so buttons and replies find their job after a restart.
    """CREATE TABLE IF NOT EXISTS messages (
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        PRIMARY KEY (platform, chat_id, message_id)
    )""",
    "CREATE INDEX IF NOT EXISTS messages_job ON messages(job_id)",
    # Version 7: the web gallery. Its pages are newest first (keyset by id) and stop after one page, so a filter's
    # index ends in id (as jobs_owner and jobs_status do): the walk reads that filter's newest jobs first.
    "CREATE INDEX IF NOT EXISTS jobs_kind ON jobs(kind, id)",
    f"CREATE INDEX IF NOT EXISTS jobs_model ON jobs({MODEL}, id)",
    # A date range becomes a range of ids through this (storage.gallery), which the walk then keeps to.
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at)",
    # The filter menus (the kinds, models and LoRAs of each person's jobs) read from this index alone, in order,
    # never from the rows and their JSON.
    f"CREATE INDEX IF NOT EXISTS jobs_facets ON jobs(platform, user_id, kind, {MODEL}, loras)",
    # A job page's children, and the check on deleting a job that others name as their parent.
    "CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id)",
    # A star (favourite) per person and job.
    """CREATE TABLE IF NOT EXISTS stars (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (job_id, platform, user_id)
    )""",
    "CREATE INDEX IF NOT EXISTS stars_person ON stars(platform, user_id, job_id)",
)

# Version 7: the words of each job's prompts and LoRAs, for the gallery's search (row id = the job's id). The
# prompts live inside the params JSON, so the table keeps its own copy, which triggers keep in step with jobs.
# remove_diacritics 2: "cafe" finds "café".
_SEARCH_TABLE = ("CREATE VIRTUAL TABLE jobs_fts USING fts5(prompt, negative_prompt, loras, "
                 "tokenize='unicode61 remove_diacritics 2')")
# What a jobs row puts in the search table; a face has no prompt ('').
_SEARCH_VALUES = ("COALESCE(json_extract({row}params, '$.prompt'), ''), "
                  "COALESCE(json_extract({row}params, '$.negative_prompt'), ''), COALESCE({row}loras, '')")
_SEARCH_INSERT = ("INSERT INTO jobs_fts (rowid, prompt, negative_prompt, loras) "
                  f"VALUES (new.id, {_SEARCH_VALUES.format(row='new.')})")
_SEARCH_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS jobs_fts_insert AFTER INSERT ON jobs BEGIN {_SEARCH_INSERT}; END",
    """CREATE TRIGGER IF NOT EXISTS jobs_fts_delete AFTER DELETE ON jobs BEGIN
        DELETE FROM jobs_fts WHERE rowid = old.id;
    END""",
    # Only writes that can change the words (finish() sets loras); status updates leave the table alone.
    f"""CREATE TRIGGER IF NOT EXISTS jobs_fts_update AFTER UPDATE OF id, params, loras ON jobs BEGIN
        DELETE FROM jobs_fts WHERE rowid = old.id;
        {_SEARCH_INSERT};
    END""",
)

RUN_COLUMNS = (
    "model", "model_hash", "memory_profile", "attention", "dtype", "device",
    "diffusers_version", "torch_version", "vae_tiling", "controlnet", "family", "loras", "embeddings", "vae", "refiner",
)
# What versions 1 and 2 share, copied as it is by the migration.
_KEPT_COLUMNS = (
    "id", "platform", "user_id", "chat_id", "user_name", "kind", "seed", "count", *RUN_COLUMNS[:8],
    "parent_id", "status", "error", "crashes", "created_at", "started_at", "finished_at",
)


def _v1_params(row: sqlite3.Row) -> JobParams:
    """A version-1 row's flat Stable Diffusion columns as typed params."""
    common = dict(
        seed=row["seed"], count=row["count"], prompt=row["prompt"], negative_prompt=row["negative_prompt"],
        steps=row["steps"], cfg=row["cfg"], width=row["width"], height=row["height"], scheduler=row["scheduler"],
        # Version 1 tiled the VAE whenever the profile allowed it; a rerun must tile too to match its pixels.
        vae_tiling=row["memory_profile"] in ("balanced", "low", "minimal") if row["memory_profile"] else None,
    )
    if row["kind"] == "img2img":
        return Img2ImgParams(strength=row["strength"], input_sha256=row["input_sha256"], **common)
    return Txt2ImgParams(**common)


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Version 1 → 2: the flat Stable Diffusion columns become the params JSON; every job stays rerunnable."""
    # SQLite's recipe for a changed table: build the new one, copy, drop the old, rename (foreign keys off).
    db.execute(_JOBS_TABLE.format(name="jobs_v2"))
    rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    marks = ", ".join("?" * (len(_KEPT_COLUMNS) + 3))
    db.executemany(
        f"INSERT INTO jobs_v2 ({', '.join(_KEPT_COLUMNS)}, vae_tiling, params, delivered) VALUES ({marks})",
        [
            (*(row[name] for name in _KEPT_COLUMNS), params.vae_tiling, params_to_json(params),
             # Jobs that ended before the upgrade were shown when they ended: do not replay them all.
             int(JobStatus(row["status"]).finished))
            for row, params in ((row, _v1_params(row)) for row in rows)
        ],
    )
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")


# Columns later versions added, each with what an older row gets.
_ADDED_COLUMNS = (
    ("controlnet", "TEXT"),  # version 4: sketch jobs
    # Version 5: sends of a job's result that started and never got an answer (a kill mid-send, a timeout):
    # the result may have arrived that many times, so it is sent again at most once.
    ("unsure_sends", "INTEGER NOT NULL DEFAULT 0"),
    # Version 6: the model library: a job's model family, LoRAs, embeddings, VAE precision and SDXL refiner.
    ("family", "TEXT"), ("loras", "TEXT"), ("embeddings", "TEXT"), ("vae", "TEXT"), ("refiner", "TEXT"),
)


def _add_columns(db: sqlite3.Connection) -> None:
    """Versions 2–5 → now: the columns added since, each only where it is missing."""
    present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")


def _add_search(db: sqlite3.Connection) -> None:
    """Versions 1–6 → 7: the search table, filled from the jobs already there, and the triggers that keep it so."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name='jobs_fts'").fetchone():
        db.execute(_SEARCH_TABLE)
        db.execute(f"INSERT INTO jobs_fts (rowid, prompt, negative_prompt, loras) "
                   f"SELECT id, {_SEARCH_VALUES.format(row='')} FROM jobs")
    for statement in _SEARCH_TRIGGERS:
        db.execute(statement)


def prepare(path: Path) -> None:
    """Create or upgrade the schema; every problem with the file becomes one StorageError line."""
    if path.exists() and not path.is_file():
        raise StorageError(f"{path} is not a file; move it aside or set [storage] data_dir to another folder")
    try:
        _create_or_upgrade(path)
    except sqlite3.DatabaseError as exc:
        raise StorageError(_database_problem(path, exc)) from None
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from None


def _database_problem(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (f"cannot write {path}: it (or its folder) is read-only; give easel write access to it, "
                "or set [storage] data_dir to a folder it can write")
    if "unable to open" in text:
        return f"cannot open {path}: check that its folder exists and easel may write there"
    if "disk is full" in text or "disk I/O" in text:
        return f"cannot write {path}: {text}; free some space on that disk"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"{path} is damaged or not an easel database ({text}); move it aside to start a new "
                "history (images on disk are kept), or restore a backup")
    return f"cannot use {path}: {text}"


def _create_or_upgrade(path: Path) -> None:
    """Create or upgrade the schema, all in one transaction, on a connection of its own."""
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=OFF")  # the migration drops and renames a referenced table
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer easel (schema {version}, this one knows {SCHEMA_VERSION}); "
                    "upgrade easel, or move the file aside to start a new history"
                )
            has_jobs = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone()
            if not has_jobs:
                db.execute(_JOBS_TABLE.format(name="jobs"))
            elif version < 2:
                _migrate_v1(db)  # builds the current table, controlnet column included
            elif version < SCHEMA_VERSION:
                _add_columns(db)
            for statement in _INDEXES_AND_IMAGES:
                db.execute(statement)
            _add_search(db)
            problems = db.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise StorageError(f"{path}: the upgrade would break {len(problems)} reference(s); left unchanged")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()
