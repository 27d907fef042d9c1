"""The table of sweeps and other long jobs, as ``jobs`` and ``status`` show them."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from typing import Any

KEEP_FINISHED = 50


@dataclasses.dataclass
class Job:
    """One long-running piece of work. Mutated only by the thread that runs it."""

    id: int
    kind: str  # "full", "quick", ...
    root: str | None
    state: str = "queued"  # queued, running, done, failed, aborted
    done: int = 0
    total: int | None = None
    started: float | None = None
    finished: float | None = None
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    error: str | None = None
    finished_event: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "root": self.root,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "started": self.started,
            "finished": self.finished,
            "counts": dict(self.counts),
            "error": self.error,
        }

    def finish(self, state: str, *, error: str | None = None) -> None:
        self.state, self.error, self.finished = state, error, time.time()
        self.finished_event.set()


class JobTable:
    """Running and recently finished jobs; thread-safe."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._active: dict[int, Job] = {}
        self._finished: deque[Job] = deque(maxlen=KEEP_FINISHED)

    def new(self, kind: str, root: str | None) -> Job:
        with self._lock:
            job = Job(next(self._ids), kind, root)
            self._active[job.id] = job
            return job

    def close(self, job: Job, state: str, *, error: str | None = None) -> None:
        job.finish(state, error=error)
        with self._lock:
            self._active.pop(job.id, None)
            self._finished.append(job)

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            return self._active.get(job_id) or next(
                (j for j in self._finished if j.id == job_id), None
            )

    def all(self) -> list[Job]:
        with self._lock:
            return sorted([*self._finished, *self._active.values()], key=lambda j: j.id)

    def recent_failures(self, root: str) -> list[Job]:
        """The last finished job of ``root`` if it did not finish well."""
        with self._lock:
            last = next((j for j in reversed(self._finished) if j.root == root), None)
        return [last] if last is not None and last.state != "done" else []

    def active(self) -> list[Job]:
        with self._lock:
            return list(self._active.values())
