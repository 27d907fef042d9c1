"""``sync``: wait until what is on disk now is in the catalog.

A watched root gets a cookie file, and the answer waits for its event to be
applied (with everything the watcher delivered before it); a polled root,
or one where no cookie can be written, gets a quick sweep. Sweeps already
queued or running for a root (after an overflow, say) are waited for too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from filewarden.jobs import Job, JobTable
from filewarden.roots import Root, RootSet


class Sweeps(Protocol):
    def request(self, root: Root, *, full: bool) -> Job: ...


class Checks(Protocol):
    def problem(self, root: Root) -> str | None: ...


class Cookies(Protocol):
    """Cookie files and their events (:class:`filewarden.watch.Watcher`)."""

    def cookie(self, root: Root) -> tuple[bytes, threading.Event] | None: ...
    def forget_cookie(self, path: bytes) -> None: ...


@dataclass(frozen=True)
class Syncer:
    """Answers ``sync`` over the roots, their sweeps and the watcher's cookies."""

    roots: RootSet
    jobs: JobTable
    sweeps: Sweeps
    checks: Checks
    cookies: Cookies
    started: threading.Event  # set once start-up has queued the start-up sweeps

    def sync(self, timeout: float) -> bool:
        """True once the catalog holds what was on disk at the call, False after ``timeout``.

        The socket answers before the roots are watched: a sync then first
        waits for start-up to queue the start-up sweeps (``started``), and
        then for them (what changed while the daemon was down is only known
        after them).
        """
        deadline = time.monotonic() + timeout
        if not self.started.wait(timeout):
            return False
        waits: list[threading.Event] = []
        cookies: list[bytes] = []
        for root in self.roots:
            if self.checks.problem(root):
                continue
            waits += [j.finished_event for j in self.jobs.active() if j.root == root.display]
            cookie = self.cookies.cookie(root)
            if cookie is None:
                waits.append(self.sweeps.request(root, full=False).finished_event)
            else:
                cookies.append(cookie[0])
                waits.append(cookie[1])
        try:
            return wait_all(waits, max(0.0, deadline - time.monotonic()))
        finally:
            for path in cookies:
                self.cookies.forget_cookie(path)


def wait_all(events: list[threading.Event], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(e.wait(max(0.0, deadline - time.monotonic())) for e in events)
