"""What the bot and `easel worker` processes say to each other through Redis, typed once for both sides.

Keys and queue names come from RedisSettings; a worker's registration is a WorkerInfo hash; what
happens to a job comes back as one stream entry each (Started, Progressed, then one of Done, Failed,
Cancelled), images as PNG bytes. Every entry is a frozen dataclass with to_fields() and, for reading,
event_from_fields() picks the class by its "type" field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar, Iterable, Mapping, Union

from storage.records import RunInfo

Fields = dict[str, Union[str, bytes, int, float]]  # what redis-py's xadd and hset take
DRAW = "draw"  # the SAQ function a worker runs for a job


@dataclass(frozen=True)
class RedisSettings:
    """Where the queue lives in Redis and how fast a dead worker is noticed; every key is named here."""

    url: str = dataclasses.field(repr=False)  # may hold a password
    prefix: str = "easel"
    lease_seconds: int = 30  # a worker silent this long has died; its job goes to another one
    sweep_seconds: int = 5  # how often workers look for jobs whose lease ran out (SAQ locks in whole seconds)

    def key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    @property
    def events(self) -> str:
        """The stream every worker writes its jobs' events to."""
        return self.key("events")

    def input_key(self, sha256: str) -> str:
        return self.key("input", sha256)

    def cancel_key(self, job_id: int) -> str:
        return self.key("cancel", job_id)

    def ended_key(self, job_id: int) -> str:
        """Set by the worker that sent a job's end: SAQ may hand the job over again, and it is not drawn twice."""
        return self.key("ended", job_id)

    def pool_key(self, job_id: int) -> str:
        """Which pool a job went to: it stays there when sent again (SAQ's job key is per queue)."""
        return self.key("pool", job_id)

    def worker_key(self, name: str) -> str:
        return self.key("worker", name)

    def pool(self, kinds: Iterable[str], models: Iterable[str] = ()) -> str:
        """The SAQ queue of the workers that take exactly these kinds, with these models (none named: every
        model); no ':' in SAQ names."""
        named = sorted(models)
        return f"{self.prefix}-" + "+".join(sorted(kinds)) + (f"@{'+'.join(named)}" if named else "")


def saq_key(job_id: int) -> str:
    """A job's key in SAQ: one drawing at a time per job, whoever sends it."""
    return f"job-{job_id}"


def run_to_json(run: RunInfo | None) -> str:
    return json.dumps(dataclasses.asdict(run) if run is not None else None)


def run_from_json(text: str | bytes) -> RunInfo | None:
    data = json.loads(text)
    return RunInfo(**data) if data is not None else None


@dataclass(frozen=True)
class WorkerInfo:
    """One `easel worker` as it last said: name, GPU, kinds, pool, jobs done, running job, heartbeat."""

    name: str
    gpu: str
    kinds: tuple[str, ...]
    pool: str
    done: int
    running: int | None
    seen: float  # unix time of its last heartbeat
    models: tuple[str, ...] = ()  # the models it draws with; none named: every configured model

    def draws(self, job_params) -> bool:
        """Whether jobs like this one go to this worker: its kind, and its model when the worker names models."""
        model = getattr(job_params, "model", "")
        return job_params.kind in self.kinds and (not self.models or not model or model in self.models)

    def to_fields(self) -> Fields:
        return {"name": self.name, "gpu": self.gpu, "kinds": ",".join(self.kinds), "pool": self.pool,
                "done": self.done, "running": self.running or "", "seen": self.seen, "models": ",".join(self.models)}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> WorkerInfo:
        text = {key.decode(): value.decode() for key, value in fields.items()}
        return cls(name=text["name"], gpu=text.get("gpu", "?"), kinds=tuple(text["kinds"].split(",")),
                   pool=text["pool"], done=int(text.get("done", 0)),
                   running=int(text["running"]) if text.get("running") else None, seen=float(text["seen"]),
                   models=tuple(name for name in text.get("models", "").split(",") if name))


# How a field of each annotated type travels in a stream entry: written by _put, read back by _get. The
# annotations are strings here (`from __future__ import annotations`), so `kind` is the text written below.
# Numbers and text as redis-py writes them; RunInfo and seeds as JSON; PNGs (binary, megabytes) as they are,
# a tuple of them as a count and one field each (image0, image1, …).
def _put(kind: str, name: str, value: object) -> Fields:
    if kind == "RunInfo | None":
        return {name: run_to_json(value)}
    if kind == "tuple[int, ...]":
        return {name: json.dumps(list(value))}
    if kind == "tuple[bytes, ...]":
        return {name: len(value), **{f"image{k}": data for k, data in enumerate(value)}}
    return {} if value is None else {name: value}


def _get(kind: str, name: str, fields: Mapping[bytes, bytes]) -> object:
    raw = fields[name.encode()]
    if kind == "bytes | None":
        return raw or None
    if kind == "tuple[bytes, ...]":
        return tuple(fields[f"image{k}".encode()] for k in range(int(raw)))
    if kind == "tuple[int, ...]":
        return tuple(json.loads(raw))
    if kind == "RunInfo | None":
        return run_from_json(raw)
    return {"int": int, "float": float, "str": bytes.decode}[kind](raw)


@dataclass(frozen=True)
class _Entry:
    """What every stream entry shares: its class named by the "type" field, its fields by their annotations,
    the job it is about and the worker that sent it ("" when the bot decided it, with nothing in the stream)."""

    TYPE: ClassVar[str]
    job: int
    worker: str

    def to_fields(self) -> Fields:
        fields: Fields = {"type": self.TYPE}
        for spec in dataclasses.fields(self):
            fields.update(_put(spec.type, spec.name, getattr(self, spec.name)))
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]):
        values = {spec.name: _get(spec.type, spec.name, fields) for spec in dataclasses.fields(cls)
                  if spec.name.encode() in fields}  # a field left out (a preview not made) keeps its default
        return cls(**values)


@dataclass(frozen=True)
class Started(_Entry):
    """A worker took the job (attempt > 1: the worker before it stopped)."""

    TYPE: ClassVar[str] = "started"
    attempt: int = 1
    free_since: float = 0.0  # when the worker last became free: dispatch delay is measured from it


@dataclass(frozen=True)
class Progressed(_Entry):
    """Steps done of all, and a preview (PNG) when the bot asked for them."""

    TYPE: ClassVar[str] = "progress"
    step: int
    total: int
    preview: bytes | None = None
    detail: str = ""


@dataclass(frozen=True)
class Done(_Entry):
    """The job's images (PNG bytes, in seed order) and how they were drawn."""

    TYPE: ClassVar[str] = "done"
    images: tuple[bytes, ...]
    seeds: tuple[int, ...]
    run: RunInfo | None


@dataclass(frozen=True)
class Failed(_Entry):
    """The job failed; `error` is safe to show a person."""

    TYPE: ClassVar[str] = "failed"
    error: str
    run: RunInfo | None = None


@dataclass(frozen=True)
class Cancelled(_Entry):
    """The job stopped for a person's cancel."""

    TYPE: ClassVar[str] = "cancelled"
    worker: str = ""


Event = Union[Started, Progressed, Done, Failed, Cancelled]
End = Union[Done, Failed, Cancelled]
_BY_TYPE: dict[str, type[_Entry]] = {cls.TYPE: cls for cls in (Started, Progressed, Done, Failed, Cancelled)}


def event_from_fields(fields: Mapping[bytes, bytes]) -> Event:
    """The typed event of one stream entry, as read back from Redis."""
    return _BY_TYPE[fields[b"type"].decode()].from_fields(fields)


def is_end(event: Event) -> bool:
    """Whether this is how the job ended (done, failed, cancelled) rather than news on the way."""
    return isinstance(event, (Done, Failed, Cancelled))
