"""The log catalogue as data: every event the daemon logs, its levels and its fields.

README's table is rendered from this (:func:`markdown`) and a test keeps the
two equal; every log call is checked against it as it is made
(:func:`problem`, from :mod:`filewarden.logs`), so an event, level or field
that is not here shows up in tests instead of surprising monitoring.
"""

from __future__ import annotations

import dataclasses

# Fields any event may carry: the renderer's own, and a traceback.
STANDARD = frozenset({"timestamp", "level", "event", "exception", "exc_info"})
TALLY = (
    "files",
    "new",
    "moved",
    "changed",
    "restored",
    "relinked",
    "missing",
    "dirs_listed",
    "dirs_skipped",
    "unreadable",
    "errors",
)
LEVEL_ORDER = ("debug", "info", "warning", "error", "critical")


@dataclasses.dataclass(frozen=True)
class Event:
    name: str
    levels: tuple[str, ...]
    when: str
    fields: tuple[str, ...]
    level_note: str = ""  # when which level, if more than one


def _e(
    name: str, levels: str, when: str, fields: tuple[str, ...] | str, level_note: str = ""
) -> Event:
    names = tuple(fields.split()) if isinstance(fields, str) else fields
    return Event(name, tuple(levels.split()), when, names, level_note)


EVENTS: tuple[Event, ...] = (
    _e("daemon.start", "info", "process start", "version pid catalog roots config"),
    _e("daemon.ready", "info", "roots registered, first sweeps queued", "roots socket watched"),
    _e(
        "daemon.stop",
        "info warning critical",
        "the daemon stops",
        "uptime_s reason detail",
        "info: a clean exit; warning: the writer still busy at the deadline; critical: a failed"
        " start or a dead writer, with `reason`",
    ),
    _e("root.online", "info", "a root becomes usable", "root reason files was volume"),
    _e("root.offline", "warning", "a root becomes unusable", "root reason files"),
    _e(
        "root.purge",
        "info",
        "an admin dropped a root removed from the config, with its files",
        "root files by_uid",
    ),
    _e("root.accepted", "info", "an admin took a new volume as a root's", "root volume was"),
    _e(
        "root.error",
        "error",
        "checking a root failed unexpectedly (the other roots are still checked)",
        "root error",
    ),
    _e("sweep.start", "info", "a sweep begins", "root kind first_index"),
    _e(
        "sweep.finish",
        "info",
        "a sweep ends",
        ("root", "kind", "first_index", "duration_s", *TALLY),
    ),
    _e(
        "sweep.abort",
        "warning",
        "a sweep stopped before the end; nothing was marked missing",
        ("root", "kind", "reason", *TALLY),
    ),
    _e("sweep.unreadable", "warning", "a directory could not be read (EACCES)", "root path error"),
    _e(
        "sweep.error",
        "warning error",
        "an entry could not be read, or a sweep failed",
        "root path error",
        "warning: an entry; error: a bug ended the sweep (the other roots go on)",
    ),
    _e(
        "sweep.walker",
        "error",
        "the walker process could not start, or ended before it answered; the daemon walks"
        " that part of the sweep itself",
        "root error",
    ),
    _e(
        "sweep.stale_listing",
        "debug",
        "a listed directory was moved or removed before its listing was recorded; the listing"
        " is dropped (its new place is listed or watched)",
        "root path",
    ),
    _e(
        "file.new",
        "debug info",
        "a new file",
        "id root path",
        "debug during a root's first index",
    ),
    _e("file.change", "info", "size/mtime/ctime/inode changed", "id root path reason"),
    _e("file.missing", "info", "a file is no longer at its path", "id root path reason"),
    _e("file.restore", "info", "a missing file is back at its path", "id root path was"),
    _e(
        "file.move",
        "info",
        "a file moved (live event, found by inode, or back from an editor's backup);"
        " `by`: `event`, `inode`, `save`",
        "id root path old_path by",
    ),
    _e(
        "file.relink",
        "info",
        "a missing file found again (`by`: inode, hash, fingerprint, or admin with `by_uid`);"
        " `replaces_id`: the interim id retired into it",
        "id root path old_path by by_uid candidates chose replaces_id",
    ),
    _e(
        "file.ambiguous",
        "info",
        "evidence that does not decide (an inode reused, several copies): no id moves",
        "path rule candidates reason",
    ),
    _e(
        "file.purge",
        "info",
        "a missing file deleted for good; `by_uid` or `by` (`retention`)",
        "id root path by_uid by missing_since",
    ),
    _e(
        "dir.move",
        "info",
        "a directory moved: its whole subtree in one update",
        "root path old_path files",
    ),
    _e(
        "hash.done",
        "debug info",
        "the background hasher caught up: nothing is left to hash",
        "files bytes duration_s",
        "info after a pass of 1 s or 1,000 files or more",
    ),
    _e(
        "hash.unfit",
        "debug",
        "a file of a media format that does not parse (cut short, damaged): it has a hash and"
        " no fingerprint",
        "path format reason",
    ),
    _e(
        "hash.mismatch",
        "error",
        "a stored hash disagrees with its file's content at the same signature (a bug):"
        " dropped, rehashed",
        "id action",
    ),
    _e(
        "metrics.listen",
        "info",
        "`/metrics` (and the web page, with `[web] enabled`) is served over HTTP",
        "address web",
    ),
    _e(
        "web.insecure",
        "warning",
        "the web page listens on an address that is not loopback, without TLS: put it"
        " behind a reverse proxy that adds TLS (see README)",
        "address",
    ),
    _e("web.token", "info", "a web token was made or revoked", "action token role by_uid"),
    _e("web.remove", "info", "missing files were removed from the web page", "token asked purged"),
    _e("retention.purge", "info", "the retention policy purged files", "purged older_than_s"),
    _e(
        "retention.error",
        "error",
        "retention could not run (it tries again next interval)",
        "error",
    ),
    _e("journal.compact", "info", "old journal entries removed", "removed kept_days"),
    _e(
        "watcher.overflow",
        "warning",
        "inotify lost events; a full sweep follows",
        "root action",
    ),
    _e(
        "watcher.limit",
        "error",
        "a root cannot be (fully) watched; it is polled (`error` names the sysctl to raise)",
        "root backend error hint",
    ),
    _e("watcher.poll", "info", "a root is polled, and why", "root reason"),
    _e(
        "watcher.error",
        "debug warning error",
        "a watcher problem (it is restarted, or a sweep covers it)",
        "root backend error hint source fs_event backoff_s",
        "error: the watcher or its dispatcher failed; warning: a hint could not be applied, or"
        " a library warning; debug: a watch already gone at its removal",
    ),
    _e(
        "catalog.error",
        "error",
        "a catalog transaction failed (e.g. disk full)",
        "error jobs",
    ),
    _e(
        "catalog.retry",
        "warning",
        "after failed writes, full sweeps catch up (every 10 s until one commits)",
        "error action",
    ),
    _e(
        "socket.error",
        "error",
        "a request failed inside the daemon (answered -32603), or the socket is set up wrong"
        " (`admin_group` unknown, several sockets passed)",
        "method error",
    ),
    _e(
        "socket.timeout",
        "debug",
        "a client that stalled, idled or stopped reading was dropped",
        "pid uid partial reason",
    ),
    _e(
        "daemon.reload",
        "info warning error",
        "SIGHUP: what changed, or why the new config was refused (the old one stays)",
        "config changes error kept",
        "warning: started without a config file; error: the new file is broken",
    ),
    _e(
        "daemon.unhealthy",
        "error",
        "the service watchdog is not pinged (stuck writer, dead thread); systemd will restart"
        " the daemon",
        "reason watchdog",
    ),
    _e("daemon.notify_failed", "warning", "a message to systemd could not be sent", "error"),
    _e(
        "ship.start",
        "info",
        "`filewarden ship` is connected to the daemon and to PostgreSQL, and carries on",
        "host name instance cursor target",
    ),
    _e(
        "ship.resync",
        "info warning",
        "the shipper loads the host's whole catalog again, from `list` (a `COPY`)",
        "host reason seq files duration_s",
        "info: the first load; warning: the cursor was compacted away, or the catalog is"
        " another instance",
    ),
    _e(
        "ship.error",
        "error",
        "the shipper cannot ship (PostgreSQL or the daemon unreachable, a refused write):"
        " logged once an outage; it retries with backoff",
        "host side error retry_s",
    ),
    _e(
        "ship.resumed",
        "info",
        "shipping works again after a `ship.error`",
        "host side outage_s cursor",
    ),
    _e("ship.stop", "info", "`filewarden ship` stops", "host cursor reason"),
    _e(
        "daemon.library",
        "debug info warning error critical",
        "a library's own log record (watchdog, Python warnings), at the record's level",
        "logger message",
    ),
)

CATALOGUE: dict[str, Event] = {e.name: e for e in EVENTS}
# What each event may carry, made once: the check runs on every line logged.
_ALLOWED: dict[str, frozenset[str]] = {e.name: STANDARD.union(e.fields) for e in EVENTS}


def problem(name: str, level: str, fields: object) -> str | None:
    """What is wrong with logging ``name`` at ``level`` with ``fields`` (an iterable of keys), or None."""
    event = CATALOGUE.get(name)
    if event is None:
        return f"{name!r} is not in the log catalogue"
    if level not in event.levels:
        return f"{name} is not logged at {level} (catalogue: {', '.join(event.levels)})"
    allowed = _ALLOWED[name]
    extra = sorted(str(k) for k in fields if k not in allowed)  # type: ignore[attr-defined]
    if extra:
        return f"{name} has fields the catalogue does not list: {', '.join(extra)}"
    return None


def markdown() -> str:
    """README's log table, rendered from the catalogue."""
    rows = ["| event | level | when | fields |", "|---|---|---|---|"]
    for e in EVENTS:
        levels = " / ".join(e.levels)
        when = f"{e.when} ({e.level_note})" if e.level_note else e.when
        fields = ", ".join(f"`{f}`" for f in e.fields)
        rows.append(f"| `{e.name}` | {levels} | {when} | {fields} |")
    return "\n".join(rows) + "\n"
