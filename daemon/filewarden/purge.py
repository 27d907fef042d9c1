"""Purging missing files for good, by an admin or by the ``[retention]`` policy.

Only missing files are purged, never offline ones: a purge is decided again
in the writer for each id, against the row as it is then. Done in chunks,
so a purge of a million files never holds the writer in one transaction.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import apsw

from filewarden import catalog, logs, protocol
from filewarden.catalog import FileRow
from filewarden.config import IdentityConfig, RetentionConfig
from filewarden.writer import Writer

log = logs.get("filewarden.purge")

PURGE_CHUNK = 5000


@dataclasses.dataclass
class Purged:
    """What a purge did: the rows it removed, and the ids it refused with why."""

    rows: list[FileRow] = dataclasses.field(default_factory=list)
    refused: list[dict[str, object]] = dataclasses.field(default_factory=list)

    def answer(self) -> dict[str, object]:
        """The ``purge`` method's answer."""
        return {"purged": len(self.rows), "refused": self.refused}


def purge_missing(
    writer: Writer,
    reader: apsw.Connection,
    *,
    ids: list[int] | None,
    cutoff: float | None,
    uid: int | None,
) -> Purged:
    """Delete missing files for good: these ids, those missing since before ``cutoff``, or all.

    ``reader`` is the calling thread's read connection. ``uid`` is who
    asked; None is the retention policy. Each purged file is logged with
    its path (``file.purge``).
    """
    if ids is None:
        ids = (
            catalog.missing_before(reader, cutoff)
            if cutoff is not None
            else catalog.all_missing(reader)
        )
    detail: dict[str, Any] = {"by_uid": uid} if uid is not None else {"by": "retention"}
    done = Purged()
    for start in range(0, len(ids), PURGE_CHUNK):
        chunk = ids[start : start + PURGE_CHUNK]
        now = time.time()

        def job(conn: apsw.Connection, chunk: list[int] = chunk, now: float = now) -> None:
            for file_id in chunk:
                row = catalog.purge(conn, file_id, now, detail)
                if row is not None:
                    done.rows.append(row)
                    continue
                other = catalog.get_file(conn, file_id)
                reason = (
                    "no such file"
                    if other is None
                    else f"file is {other.state}; only missing files are purged"
                )
                done.refused.append({"id": file_id, "reason": reason})

        writer.call(job, background=uid is None)  # retention's purge waits for live work
    # Also the roots no longer configured: their files stay until purged.
    root_paths = {r.id: r.path for r in catalog.all_roots(reader)} if done.rows else {}
    for row in done.rows:
        root_path = root_paths.get(row.root, b"")
        log.info(
            "file.purge",
            id=row.id,
            root=root_path,
            path=root_path + b"/" + row.path,
            missing_since=protocol.rfc3339(row.missing_since),
            **detail,
        )
    return done


class Retention(threading.Thread):
    """Applies ``[retention]`` at start and then every ``check_interval``, in its own thread:
    purges files missing too long, compacts the journal, forgets old arrivals."""

    def __init__(
        self,
        writer: Writer,
        retention: RetentionConfig,
        identity: IdentityConfig,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="filewarden-retention", daemon=True)
        self.writer = writer
        self.config = retention
        self.match_window = identity.match_window
        self.halt = stop
        self._wake = threading.Event()

    def apply(self, retention: RetentionConfig, identity: IdentityConfig) -> None:
        """A reload: the new policy, from the next check on."""
        self.config, self.match_window = retention, identity.match_window
        self._wake.set()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            self.check()
            while not self.halt.is_set():
                left = started + self.config.check_interval - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)  # a reload or the stop wakes it early
                self._wake.clear()

    def stop(self) -> None:
        """Called after the daemon's stop event is set: end the wait now."""
        self._wake.set()

    def check(self) -> None:
        """Apply the policy now; a failure is logged, and the next interval tries again."""
        try:
            self.once()
        except Exception as exc:
            log.error("retention.error", error=f"{type(exc).__name__}: {exc}")

    def once(self) -> None:
        """Apply the policy now."""
        cfg = self.config
        now = time.time()
        if cfg.purge_missing_after is not None:
            reader = self.writer.catalog.reader()
            try:
                result = purge_missing(
                    self.writer, reader, ids=None, cutoff=now - cfg.purge_missing_after, uid=None
                )
            finally:
                reader.close()
            if result.rows:
                log.info(
                    "retention.purge",
                    purged=len(result.rows),
                    older_than_s=cfg.purge_missing_after,
                )
        # Arrivals older than the window can no longer be the copy half of a move.
        window = self.match_window
        self.writer.call(lambda c: catalog.prune_arrivals(c, now - window), background=True)
        keep = cfg.journal_keep
        if keep is not None:
            removed = self.writer.call(
                lambda c: catalog.compact_journal(c, now - keep), background=True
            )
            if removed:
                log.info("journal.compact", removed=removed, kept_days=round(keep / 86400, 2))
