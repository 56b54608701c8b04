"""The fair line: each person's waiting jobs, turns to whoever was served least recently, positions,
limits, and which unfinished jobs come back after a restart."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from storage.errors import EaselError
from storage.records import JobRecord, JobStatus, Owner

MAX_CRASHES = 3  # a job the process died under this many times is failed, not retried


class QueueFull(EaselError):
    """A per-user or global queue limit would be exceeded."""


@dataclass(frozen=True)
class QueueLimits:
    """How much may wait: per person (queued + running) and in total."""

    max_per_user: int = 5
    max_total: int = 50


def _next_turn(queues: dict[str, deque[JobRecord]], served: dict[str, int]) -> str:
    """Whose turn it is: whoever was served least recently (never = first); ties go to the oldest job."""
    return min(queues, key=lambda key: (served.get(key, 0), queues[key][0].id))


class Line:
    """Waiting jobs, one deque per person, handed out in fair turns."""

    def __init__(self, limits: QueueLimits) -> None:
        self.limits = limits
        self._waiting: dict[str, deque[JobRecord]] = {}  # each person's waiting jobs, oldest first
        self._served: dict[str, int] = {}  # person → when they last had a turn, since the queue was idle
        self._turns = 0

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def check_room(self, owner: Owner, out: int, per_user_limit: bool = True) -> None:
        """Raise QueueFull when one more job of owner's would pass a limit; `out` = their jobs running now."""
        mine = self.count_for(owner) + out
        if per_user_limit and mine >= self.limits.max_per_user:
            raise QueueFull(
                f"you already have {mine} job(s) waiting or running (limit {self.limits.max_per_user}); "
                "wait for one to finish or /cancel one"
            )
        total = len(self)
        if total >= self.limits.max_total:
            raise QueueFull(f"the queue is full ({total} jobs waiting); try again in a few minutes")

    def new_round(self) -> None:
        """Nothing waits or runs: everyone starts the next round equal."""
        self._served.clear()

    def add(self, job: JobRecord) -> None:
        """At the end of its owner's line."""
        self._waiting.setdefault(job.owner.key, deque()).append(job)

    def put_back(self, job: JobRecord) -> None:
        """At the head of its owner's line: it had its turn, and it was not its fault it did not end."""
        self._waiting.setdefault(job.owner.key, deque()).appendleft(job)

    def find(self, job_id: int) -> JobRecord | None:
        return next((job for queue in self._waiting.values() for job in queue if job.id == job_id), None)

    def remove(self, job: JobRecord) -> None:
        queue = self._waiting[job.owner.key]
        queue.remove(job)
        if not queue:
            del self._waiting[job.owner.key]

    def count_for(self, owner: Owner) -> int:
        return len(self._waiting.get(owner.key, ()))

    def order(self) -> list[JobRecord]:
        """Waiting jobs in the order they will run, if nobody else arrives."""
        queues = {key: deque(jobs) for key, jobs in self._waiting.items()}
        served, turn = dict(self._served), self._turns
        order: list[JobRecord] = []
        while queues:
            key = _next_turn(queues, served)
            order.append(queues[key].popleft())
            if not queues[key]:
                del queues[key]
            turn += 1
            served[key] = turn
        return order

    def position(self, job_id: int) -> int | None:
        """1 = runs next; None = not waiting."""
        return next((index for index, job in enumerate(self.order(), start=1) if job.id == job_id), None)

    def take(self, fits: Callable[[JobRecord], bool]) -> JobRecord | None:
        """The next job by fair turns, among the people whose next job fits somewhere now."""
        candidates = {key: queue for key, queue in self._waiting.items() if fits(queue[0])}
        if not candidates:  # also when nobody waits
            return None
        key = _next_turn(candidates, self._served)
        job = self._waiting[key].popleft()
        if not self._waiting[key]:
            del self._waiting[key]
        self._turns += 1
        self._served[key] = self._turns
        return job


def sort_out(unfinished: Iterable[JobRecord], died_here: bool) -> tuple[list[JobRecord], list[JobRecord]]:
    """Split jobs history left unfinished into those to queue again and those failed for crashing too often.

    With died_here, a job still marked running means this process died under it (one crash more); a job
    that keeps doing so must not take easel down on every start, so after MAX_CRASHES it fails instead.
    """
    again, failed = [], []
    for job in unfinished:
        crashes = job.crashes + (died_here and job.status is JobStatus.RUNNING)
        if crashes >= MAX_CRASHES:
            error = (f"easel stopped {crashes} times while job #{job.id} ran, so it is not retried; "
                     "the log (data/easel.log) may say why")
            failed.append(replace(job, status=JobStatus.FAILED, error=error, crashes=crashes))
        else:
            again.append(replace(job, status=JobStatus.QUEUED, started_at=None, crashes=crashes))
    return again, failed
