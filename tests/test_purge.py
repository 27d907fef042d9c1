"""Purge and retention, against a daemon running in this process and its real socket.

Ages that would take days to reach are made by moving times back in the
catalog (``missing_since``, journal and arrival times), as if the daemon
had been running all along.
"""

from __future__ import annotations

import datetime
import grp
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden import catalog
from filewarden.client import Client
from filewarden.protocol import INVALID_PARAMS, NOT_FOUND, PERMISSION_DENIED, RpcError
from filewarden.purge import PURGE_CHUNK, purge_missing
from tests.conftest import Harness, logged, make_files
from tests.daemon_inproc import Start, as_user, public_dir, starting

DAY = 86400.0
# kept_days is logged to two decimals: 500 days, 12 hours and a minute is 500.5
# there (501 to none, 500.501 to three, 500.49 if a day were a second longer).
JOURNAL_KEEP = "500d12h1m"
JOURNAL_KEEP_S = 500.5 * DAY + 60


@pytest.fixture
def start(tmp_path: Path, tree: Path) -> Iterator[Start]:
    yield from starting(tmp_path, tree)


def _unix(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def _purges(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e.items() if k != "log_level"}
        for e in events
        if e["event"] == "file.purge"
    ]


# --- purge by hand ------------------------------------------------------------------------


def test_purge_by_id_takes_missing_files_with_their_annotations_and_refuses_the_rest(
    start: Start,
) -> None:
    """Missing ids go with their annotations and arrivals, journaled and logged; present, offline and unknown ids are refused with their reason."""
    live = start()
    tree = live.tree
    make_files(tree, 3)
    late = tree / "late.txt"
    late.write_text("arrived while the daemon ran")
    assert live.d.syncer.sync(30)
    a, b = tree / "d0000" / "f00000.txt", tree / "d0000" / "f00001.txt"
    a_id, b_id, late_id = live.id_of(a), live.id_of(b), live.id_of(late)
    c_id = live.id_of(live.other / "elsewhere.txt")
    live.call("annotate", {"id": a_id, "key": "rating", "value": "5"})
    live.call("annotate", {"id": b_id, "key": "rating", "value": "4"})
    assert live.rows("SELECT file FROM arrivals WHERE file = ?", late_id) == [(late_id,)]
    live.take_other_offline()
    live.remove(a, late)
    a_since = live.record(a_id)["missing_since"]
    late_since = live.record(late_id)["missing_since"]
    seq = live.call("changes", {"since": 0})["seq"]

    before = time.time()
    with logged() as events:
        result = live.call("purge", {"ids": [b_id, a_id, 999_999, c_id, late_id]})
    after = time.time()

    assert result == {
        "purged": 2,
        "refused": [
            {"id": b_id, "reason": "file is present; only missing files are purged"},
            {"id": 999_999, "reason": "no such file"},
            {"id": c_id, "reason": "file is offline; only missing files are purged"},
        ],
    }
    for gone in (a_id, late_id):
        assert live.refused("file", {"id": gone}) == (NOT_FOUND, f"no file with id {gone}")
        assert live.rows("SELECT key FROM annotations WHERE file = ?", gone) == []
        assert live.rows("SELECT file FROM arrivals WHERE file = ?", gone) == []
    assert live.record(b_id)["annotations"] == {"rating": "4"}
    assert live.record(c_id)["state"] == "offline"
    assert live.root_counts(tree) == {"state": "online", "present": 2, "missing": 0, "offline": 0}
    assert live.root_counts(live.other)["offline"] == 1
    assert live.call("list", {"state": "missing"})["files"] == []

    entries = live.call("changes", {"since": seq})["changes"]
    assert [(e["kind"], e["id"], e["path"], e["by_uid"]) for e in entries] == [
        ("purge", a_id, str(a), 0),
        ("purge", late_id, str(late), 0),
    ]
    for e in entries:
        assert before - 0.001 <= _unix(e["time"]) <= after
    assert _purges(events) == [
        {
            "event": "file.purge",
            "id": a_id,
            "root": os.fsencode(tree),
            "path": os.fsencode(a),
            "missing_since": a_since,
            "by_uid": 0,
        },
        {
            "event": "file.purge",
            "id": late_id,
            "root": os.fsencode(tree),
            "path": os.fsencode(late),
            "missing_since": late_since,
            "by_uid": 0,
        },
    ]


def test_purge_older_than_takes_only_files_missing_longer(start: Start) -> None:
    """older_than (a duration or seconds) purges files missing for longer than that, and no others."""
    live = start()
    make_files(live.tree, 3)
    assert live.d.syncer.sync(30)
    gone = [live.tree / "d0000" / f"f0000{i}.txt" for i in (0, 1)]
    ids = [live.id_of(p) for p in gone]
    kept = live.id_of(live.tree / "d0000" / "f00002.txt")
    live.remove(*gone)
    for older_than in ("30d", "1h", 86400, 3600.5):
        assert live.call("purge", {"older_than": older_than}) == {"purged": 0, "refused": []}
    assert [f["id"] for f in live.call("list", {"state": "missing"})["files"]] == ids
    # Missing since exactly the cutoff is not missing for longer than it.
    since = catalog.get_file(live.reader, ids[0])
    assert since is not None and since.missing_since is not None
    assert purge_missing(
        live.d.writer, live.reader, ids=None, cutoff=since.missing_since, uid=0
    ).answer() == {
        "purged": 0,
        "refused": [],
    }
    live.write("UPDATE files SET missing_since = missing_since - ? WHERE id = ?", 2 * 3600, ids[0])
    assert live.call("purge", {"older_than": "1h"}) == {"purged": 1, "refused": []}
    assert [f["id"] for f in live.call("list", {"state": "missing"})["files"]] == [ids[1]]
    assert live.call("purge", {"older_than": 0}) == {"purged": 1, "refused": []}
    assert live.call("list", {"state": "missing"})["files"] == []
    assert live.record(kept)["state"] == "present"


def test_purge_all_takes_every_missing_file_and_nothing_else(start: Start) -> None:
    """all: true purges the missing files of every root; present and offline files stay."""
    live = start()
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    gone = [live.tree / "d0000" / f"f0000{i}.txt" for i in (1, 3)]
    ids = [live.id_of(p) for p in gone]
    live.take_other_offline()
    live.remove(*gone)
    assert live.call("purge", {"all": True, "ids": None}) == {"purged": 2, "refused": []}
    assert [e["id"] for e in live.journal() if e["kind"] == "purge"] == ids
    assert live.root_counts(live.tree)["present"] == 2
    assert live.root_counts(live.other)["offline"] == 1
    assert live.call("status")["totals"] == {"present": 2, "missing": 0, "offline": 1}
    assert live.call("purge", {"all": True}) == {"purged": 0, "refused": []}


def test_purge_of_more_ids_than_one_chunk_handles_each_once(start: Start) -> None:
    """A purge is done in chunks; every id of every chunk is purged or refused exactly once."""
    live = start()
    make_files(live.tree, 2)
    assert live.d.syncer.sync(30)
    first, last = live.tree / "d0000" / "f00000.txt", live.tree / "d0000" / "f00001.txt"
    first_id, last_id = live.id_of(first), live.id_of(last)
    live.remove(first, last)
    unknown = list(range(10**9, 10**9 + PURGE_CHUNK))
    result = live.call("purge", {"ids": [first_id, *unknown, last_id]})
    assert result["purged"] == 2
    assert result["refused"] == [{"id": i, "reason": "no such file"} for i in unknown]
    assert [e["id"] for e in live.journal() if e["kind"] == "purge"] == [first_id, last_id]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "give exactly one of ids, older_than, all: true or root"),
        ({"all": False}, "give exactly one of ids, older_than, all: true or root"),
        ({"ids": [1], "all": True}, "give exactly one of ids, older_than, all: true or root"),
        (
            {"ids": [1], "older_than": "1d"},
            "give exactly one of ids, older_than, all: true or root",
        ),
        ({"older_than": 5, "all": True}, "give exactly one of ids, older_than, all: true or root"),
        ({"ids": []}, "ids must be a non-empty array of integers"),
        ({"ids": [True]}, "ids must be a non-empty array of integers"),
        ({"ids": [1, "2"]}, "ids must be a non-empty array of integers"),
        ({"older_than": "never"}, 'older_than: "never" is not allowed here'),
        ({"older_than": -1}, "older_than must not be negative"),
        ({"older_than": -0.5}, "older_than must not be negative"),
    ],
)
def test_purge_refuses_bad_params_and_purges_nothing(
    start: Start, params: dict[str, Any], message: str
) -> None:
    """Exactly one of ids, older_than or all; ids non-empty integers; older_than a duration or seconds ≥ 0."""
    live = start()
    make_files(live.tree, 1)
    assert live.d.syncer.sync(30)
    gone = live.tree / "d0000" / "f00000.txt"
    gone_id = live.id_of(gone)
    live.remove(gone)
    assert live.refused("purge", params) == (INVALID_PARAMS, message)
    assert live.record(gone_id)["state"] == "missing"


def test_purge_names_a_bad_duration(start: Start) -> None:
    """An older_than that is not a duration is refused, saying so."""
    live = start()
    code, message = live.refused("purge", {"older_than": "soon"})
    assert code == INVALID_PARAMS
    assert message.startswith("older_than: 'soon' is not a duration (use e.g.")


def _purge_as(sock: Path, gid: int, params: dict[str, Any]) -> Any:
    """Ask for a purge as uid 65534 with group ``gid``: the answer, or the error's code and message."""

    def work() -> dict[str, Any]:
        try:
            with Client(sock, timeout=60) as c:
                return {"result": c.call("purge", params)}
        except RpcError as exc:
            return {"code": exc.code, "message": exc.message}

    return as_user(gid, work)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_purge_is_for_root_and_admin_group_only(start: Start) -> None:
    """A user outside admin_group is refused (-32001) and nothing goes; a member may purge, journaled with their uid."""
    try:
        group = grp.getgrgid(65534).gr_name
    except KeyError:
        pytest.skip("no group 65534")
    with public_dir() as public:
        live = start(sock=public / "fw.sock", admin_group=group)
        make_files(live.tree, 2)
        assert live.d.syncer.sync(30)
        gone = live.tree / "d0000" / "f00000.txt"
        gone_id = live.id_of(gone)
        live.remove(gone)
        denied = {
            "code": PERMISSION_DENIED,
            "message": "purge is for root and members of admin_group",
        }
        assert _purge_as(live.sock, 65533, {"all": True}) == denied
        assert _purge_as(live.sock, 65533, {"ids": []}) == denied
        assert live.record(gone_id)["state"] == "missing"
        assert _purge_as(live.sock, 65534, {"ids": [gone_id]}) == {
            "result": {"purged": 1, "refused": []}
        }
        assert [(e["kind"], e.get("by_uid")) for e in live.journal()][-1] == ("purge", 65534)
        live.close()


# --- retention ----------------------------------------------------------------------------


RETENTION = (
    "[retention]",
    'purge_missing_after = "5d"',
    f'journal_keep = "{JOURNAL_KEEP}"',
    "[identity]",
    'match_window = "7d"',
)


def test_retention_purges_files_missing_longer_than_purge_missing_after(start: Start) -> None:
    """Files missing for more than purge_missing_after are purged (journaled and logged `by: retention`); newer missing, present and offline files stay."""
    live = start(*RETENTION)
    make_files(live.tree, 4)
    assert live.d.syncer.sync(30)
    old, recent, fresh, present = (live.tree / "d0000" / f"f0000{i}.txt" for i in range(4))
    ids = {p: live.id_of(p) for p in (old, recent, fresh, present)}
    live.take_other_offline()
    live.remove(old, recent, fresh)
    now = time.time()
    live.write("UPDATE files SET missing_since = ? WHERE id = ?", now - 6 * DAY, ids[old])
    live.write("UPDATE files SET missing_since = ? WHERE id = ?", now - 4 * DAY, ids[recent])
    old_since = live.record(ids[old])["missing_since"]

    with logged() as events:
        live.d.retention.once()

    assert live.refused("file", {"id": ids[old]})[0] == NOT_FOUND
    assert {f["id"] for f in live.call("list", {"state": "missing"})["files"]} == {
        ids[recent],
        ids[fresh],
    }
    assert live.record(ids[present])["state"] == "present"
    assert live.root_counts(live.other)["offline"] == 1
    purge = [e for e in live.journal() if e["kind"] == "purge"]
    assert [(e["id"], e["path"], e["by"], "by_uid" in e) for e in purge] == [
        (ids[old], str(old), "retention", False)
    ]
    assert _purges(events) == [
        {
            "event": "file.purge",
            "id": ids[old],
            "root": os.fsencode(live.tree),
            "path": os.fsencode(old),
            "missing_since": old_since,
            "by": "retention",
        }
    ]
    assert [e for e in events if e["event"] == "retention.purge"] == [
        {"event": "retention.purge", "log_level": "info", "purged": 1, "older_than_s": 5 * DAY}
    ]
    # Nothing more to do: nothing purged, nothing logged.
    with logged() as events:
        live.d.retention.once()
    assert [e["event"] for e in events] == []
    assert len(live.call("list", {"state": "missing"})["files"]) == 2


def test_retention_compacts_the_journal_keeping_each_files_latest_and_the_last(
    start: Start,
) -> None:
    """Entries older than journal_keep go, except each file's latest and the very last entry; newer ones stay."""
    live = start(*RETENTION)
    make_files(live.tree, 3)
    assert live.d.syncer.sync(30)
    a, b, c = (live.tree / "d0000" / f"f0000{i}.txt" for i in range(3))
    a_id, b_id, c_id = live.id_of(a), live.id_of(b), live.id_of(c)
    elsewhere = live.id_of(live.other / "elsewhere.txt")
    a.rename(live.tree / "a-moved.txt")
    live.remove(b)
    live.take_other_offline()  # the last entry: the root's, for no file
    history = live.journal()
    last = history[-1]
    assert (last["kind"], last["id"]) == ("offline", None)
    # Nothing happened for two journal_keeps.
    live.write("UPDATE journal SET time = time - ?", 2 * JOURNAL_KEEP_S)

    with logged() as events:
        live.d.retention.once()

    latest = {e["id"]: e["seq"] for e in history if e["id"] is not None}
    kept = sorted([*latest.values(), last["seq"]])
    assert [e["seq"] for e in live.journal()] == kept
    assert {e["id"]: e["kind"] for e in live.journal()} == {
        a_id: "move",
        b_id: "missing",
        c_id: "new",
        elsewhere: "new",
        None: "offline",
    }
    assert [h["kind"] for h in live.record(a_id)["history"]] == ["move"]
    removed = len(history) - len(kept)
    assert removed > 0
    (compact,) = [e for e in events if e["event"] == "journal.compact"]
    assert compact == {
        "event": "journal.compact",
        "log_level": "info",
        "removed": removed,
        "kept_days": 500.5,
    }
    assert live.call("changes", {"since": 0})["oldest_seq"] == kept[0]

    # Newer entries stay, even a file's earlier ones; the old root entry,
    # no longer the last, goes.
    (live.tree / "new.txt").write_text("new")
    assert live.d.syncer.sync(30)
    (live.tree / "new.txt").rename(live.tree / "renamed.txt")
    assert live.d.syncer.sync(30)
    fresh = [e for e in live.journal() if e["seq"] > last["seq"]]
    assert [e["kind"] for e in fresh] == ["new", "move"]
    live.d.retention.once()
    assert [e["seq"] for e in live.journal()] == [
        *sorted(latest.values()),
        *(e["seq"] for e in fresh),
    ]


def test_retention_prunes_arrivals_older_than_the_match_window(start: Start) -> None:
    """Arrivals older than [identity] match_window are forgotten; newer ones are kept."""
    live = start(*RETENTION)
    (live.tree / "p.txt").write_text("one")
    (live.tree / "q.txt").write_text("two")
    assert live.d.syncer.sync(30)
    p, q = live.id_of(live.tree / "p.txt"), live.id_of(live.tree / "q.txt")
    assert live.rows("SELECT file FROM arrivals ORDER BY file") == [(p,), (q,)]
    live.write("UPDATE arrivals SET time = time - ? WHERE file = ?", 8 * DAY, p)
    live.d.retention.once()
    assert live.rows("SELECT file FROM arrivals ORDER BY file") == [(q,)]
    live.write("UPDATE arrivals SET time = time - ? WHERE file = ?", 6 * DAY, q)
    live.d.retention.once()
    assert live.rows("SELECT file FROM arrivals ORDER BY file") == [(q,)]


def test_retention_set_to_never_keeps_missing_files_and_the_journal(start: Start) -> None:
    """purge_missing_after and journal_keep = "never": however old, nothing is purged or compacted."""
    live = start("[retention]", 'purge_missing_after = "never"', 'journal_keep = "never"')
    make_files(live.tree, 2)
    assert live.d.syncer.sync(30)
    gone = live.tree / "d0000" / "f00000.txt"
    gone_id = live.id_of(gone)
    live.remove(gone)
    live.write("UPDATE files SET missing_since = missing_since - ?", 10_000 * DAY)
    live.write("UPDATE journal SET time = time - ?", 10_000 * DAY)
    history = live.journal()
    with logged() as events:
        live.d.retention.once()
    assert [e["event"] for e in events] == []
    assert live.record(gone_id)["state"] == "missing"
    assert live.journal() == history


def test_retention_that_fails_is_logged_and_does_not_raise(start: Start) -> None:
    """A retention pass that fails (the catalog writer is gone) logs retention.error with the exception, and returns."""
    live = start(*RETENTION)
    live.d.writer.stop(time.monotonic() + 10)
    with logged() as events:
        live.d.retention.check()
    assert [e for e in events if e["event"] == "retention.error"] == [
        {
            "event": "retention.error",
            "log_level": "error",
            "error": "WriterStopped: the catalog writer is stopping",
        }
    ]


# --- the catalog's own functions ----------------------------------------------------------


def test_catalog_selects_missing_files_by_age_and_purges_only_them(
    harness: Harness, tree: Path
) -> None:
    """missing_before is strict, in id order; all_missing takes only missing files; purge and the prune and compaction count what they remove."""
    make_files(tree, 4)
    harness.sweep()
    rows = {r.id: r for r in harness.files()}
    gone = sorted(rows)[1:3]
    for file_id in gone:
        row = rows[file_id]
        os.unlink(tree / os.fsdecode(row.path))
    harness.sweep()
    since = harness.files("missing")[0].missing_since
    assert since is not None
    assert catalog.missing_before(harness.reader, since) == []
    assert catalog.missing_before(harness.reader, since + 0.001) == gone
    assert catalog.all_missing(harness.reader) == gone

    present = sorted(rows)[0]
    w = harness.writer
    assert w.call(lambda c: catalog.purge(c, present, time.time(), {"by_uid": 0})) is None
    assert w.call(lambda c: catalog.purge(c, 10**9, time.time(), {"by_uid": 0})) is None
    purged = w.call(lambda c: catalog.purge(c, gone[0], 1234.5, {"by": "retention"}))
    assert purged is not None and purged.id == gone[0] and purged.state == "missing"
    assert catalog.all_missing(harness.reader) == gone[1:]
    assert harness.counts() == (2, 1, 0)
    entry = catalog.history(harness.reader, gone[0])[-1]
    assert (entry.kind, entry.time, entry.path, entry.detail) == (
        "purge",
        1234.5,
        rows[gone[0]].path,
        {"by": "retention"},
    )

    (tree / "late.txt").write_text("late")
    harness.sweep()
    at = harness.reader.execute("SELECT time FROM arrivals").fetchall()[0][0]
    assert isinstance(at, float)
    assert w.call(lambda c: catalog.prune_arrivals(c, at)) == 0
    assert w.call(lambda c: catalog.prune_arrivals(c, at + 0.001)) == 1

    last = catalog.last_seq(harness.reader)
    removed = w.call(lambda c: catalog.compact_journal(c, time.time() + 1))
    assert removed == 3  # both gone files' `new`, and the purged one's `missing`
    assert catalog.last_seq(harness.reader) == last
