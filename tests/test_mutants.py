"""A fixed sample of one-line breaks, each of which the suite must catch.

Each break is a promise broken on purpose in a copy of the package (one
replacement in one file); the tests named beside it run against that copy
(``PYTHONPATH`` puts it first, for the daemons they start too) and must
fail. A break whose line is no longer in the code fails here as well: the
sample is kept in step with the code it guards. The full mutation run is
``bench/mutation.py`` (mutmut); see ``docs/mutation.md``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daemon" / "filewarden"


class Break(NamedTuple):
    promise: str
    file: str
    line: (
        str  # the line as it is, stripped (with the lines before it, if it needs them to be unique)
    )
    broken: str
    tests: tuple[str, ...]


BREAKS = [
    Break(
        "a batch of the journal and the host's cursor commit in one transaction",
        "ship.py",
        'last = int(entries[-1]["seq"])\nwith self.pg.transaction(), self.pg.cursor() as cur:',
        "with self.pg.cursor() as cur:",
        ("tests/test_fleet.py::test_a_shipper_killed_mid_batch_resumes_exactly",),
    ),
    Break(
        "a file the catalog no longer has leaves the fleet's tables",
        "ship.py",
        "if gone:",
        "if False:",
        ("tests/test_fleet.py::test_three_hosts_ship_and_the_fleet_answers_as_their_catalogs",),
    ),
    Break(
        "an outage is logged once, not once a retry",
        "ship.py",
        "if side not in self._down:",
        "if True:",
        ("tests/test_fleet.py::test_postgres_killed_mid_stream_loses_and_doubles_nothing",),
    ),
    Break(
        "a web write made with the cookie needs the page's CSRF token",
        "web.py",
        "if not hmac.compare_digest(given, self.csrf(viewer)):",
        "if False:",
        ("tests/test_web.py::test_a_cross_site_post_is_refused",),
    ),
    Break(
        "a web write made with the cookie must come from the page's origin",
        "web.py",
        "if not origin or urlsplit(origin).netloc != host:",
        "if False:",
        ("tests/test_web.py::test_a_cross_site_post_is_refused",),
    ),
    Break(
        "removing files from the web page needs an admin token",
        "web.py",
        'if viewer.token.role != "admin":',
        "if False:",
        ("tests/test_web.py::test_a_readers_token_cannot_remove",),
    ),
    Break(
        "an admin's web token is for admins only",
        "api.py",
        'if role == "admin" and not peer.admin:',
        "if False:",
        ("tests/test_server.py::test_purge_by_non_admin_is_refused",),
    ),
    Break(
        "a name on the web page is text, never markup",
        "web.py",
        'return html.escape("".join(out))',
        'return "".join(out)',
        ("tests/test_web.py::test_a_file_named_like_a_script_renders_as_text",),
    ),
    Break(
        "relink is for admins only",
        "api.py",
        'raise RpcError(PERMISSION_DENIED, "relink is for root and members of admin_group")',
        "pass",
        ("tests/test_server.py::test_purge_by_non_admin_is_refused",),
    ),
    Break(
        "a fingerprint shared by several files moves no id",
        "identity.py",
        "if len(gone) > 1 or len(same) > 1:",
        "if False:",
        ("tests/scenarios/test_media.py::test_a_fingerprint_that_several_files_share_moves_no_id",),
    ),
    Break(
        "purge is for admins only",
        "api.py",
        'raise RpcError(PERMISSION_DENIED, "purge is for root and members of admin_group")',
        "pass",
        ("tests/test_server.py::test_purge_by_non_admin_is_refused",),
    ),
    Break(
        "permission denied exits 4",
        "cli.py",
        "PERMISSION_DENIED: EXIT_DENIED,",
        "PERMISSION_DENIED: EXIT_FAILURE,",
        ("tests/test_cli.py::test_every_exit_code_from_a_real_failure",),
    ),
    Break(
        "missing --csv writes CRLF rows",
        "report.py",
        'writer = csv.writer(out, lineterminator="\\r\\n")',
        'writer = csv.writer(out, lineterminator="\\n")',
        ("tests/test_cli.py::test_missing_csv_round_trips_hostile_names",),
    ),
    Break(
        "a reload applies [hash]",
        "daemon.py",
        "self.hasher.apply(new.hash)",
        "pass",
        ("tests/test_daemon.py::test_reload_applies_every_reloadable_key_and_names_the_rest",),
    ),
    Break(
        "same name first, then the most recently missing",
        "identity.py",
        "return max(candidates, key=lambda r: (r.name == name, r.missing_since or 0.0, r.id))",
        "return max(candidates, key=lambda r: r.id)",
        (
            "tests/test_identity.py::"
            "test_a_returning_file_picks_the_missing_one_with_its_name_then_the_latest",
        ),
    ),
    Break(
        "nothing missing while the root is gone: the check before committing",
        "sweep.py",
        "# The last word before committing: is the root still the root?\n"
        "problem = self.root_ok(self.root)",
        "problem = None",
        (
            "tests/drills/test_crash.py::"
            "test_a_root_that_vanishes_at_any_check_of_a_sweep_marks_nothing_missing",
        ),
    ),
    Break(
        "an inode match is confirmed by content",
        "identity.py",
        "if any(row.hash is not None for row, _ in candidates):",
        "if False:",
        ("tests/test_identity.py::test_an_inode_match_is_confirmed_by_content",),
    ),
    Break(
        "a file seen deleted is never an inode candidate",
        "identity.py",
        'if row.state == catalog.MISSING and row.missing_reason == "deleted":',
        "if False:",
        ("tests/test_identity.py::test_a_file_seen_deleted_is_never_an_inode_candidate",),
    ),
    Break(
        "same path first",
        "sweep.py",
        "hit = identity.by_inode(reader, sig, self.roots, self.root.abs(rel), over_path=True)",
        "hit = identity.by_inode(reader, sig, self.roots, self.root.abs(rel))",
        ("tests/test_identity.py::test_same_path_wins_over_an_unconfirmed_inode",),
    ),
    Break(
        "a copy known beside the original is not its move",
        "identity.py",
        "and new.first_seen > gone.last_seen",
        "and True",
        (
            "tests/test_identity.py::"
            "test_a_copy_first_seen_when_the_original_was_last_seen_lived_beside_it",
        ),
    ),
    Break(
        "the copy window",
        "identity.py",
        "return gone.missing_since - self.window",
        "return 0.0",
        ("tests/test_identity.py::test_copy_then_delete_refusals",),
    ),
    Break(
        "an overflowed queue is swept again",
        "daemon.py",
        "ends.append(self.scheduler.request(r, full=True).finished_event)",
        "pass",
        ("tests/scenarios/test_watch_limits.py::test_queue_overflow_resweeps_and_loses_nothing",),
    ),
    Break(
        "no watchdog ping while the writer is stuck",
        "daemon.py",
        "trouble = self.health.unhealthy(self.notifier.watchdog_interval)",
        "trouble = None",
        ("tests/test_systemd.py::test_stuck_writer_stops_watchdog_pings",),
    ),
    Break(
        "a hard link is a new file, not the file relinked",
        "identity.py",
        "if there is not None and there[3:] == (device, inode):",
        "if False:",
        ("tests/test_sweep.py::test_hard_link_is_a_new_file",),
    ),
    Break(
        "a reload applies [sweep]",
        "daemon.py",
        "self.scheduler.apply(new.sweep)  # new intervals count from now",
        "pass",
        ("tests/test_daemon.py::test_reload_applies_every_reloadable_key_and_names_the_rest",),
    ),
    Break(
        "a reload applies [retention]",
        "daemon.py",
        "self.retention.apply(new.retention, new.identity)",
        "pass",
        ("tests/test_daemon.py::test_reload_applies_every_reloadable_key_and_names_the_rest",),
    ),
    Break(
        "permission denied is not gone: nothing unreadable goes missing",
        "sweep.py",
        "return fault is not Fault.GONE",
        "return False",
        ("tests/test_sweep.py::test_what_cannot_be_read_is_logged_and_kept_as_it_was",),
    ),
    Break(
        "a root a reload adds again is watched and swept again",
        "daemon.py",
        "self.availability.load(root, self._reader_conn())\n"
        "if self.availability.refresh(root, self._reader_conn()) is None:",
        "if False:",
        ("tests/test_reload.py::test_a_root_removed_then_added_again_is_watched_and_swept_again",),
    ),
]


def _broken_copy(tmp: Path, brk: Break) -> Path:
    staged = tmp / "pkg"
    shutil.copytree(PACKAGE, staged / "filewarden", ignore=shutil.ignore_patterns("__pycache__"))
    target = staged / "filewarden" / brk.file
    text = target.read_text()
    lines = text.splitlines(keepends=True)
    want = brk.line.split("\n")
    hits = [
        i
        for i in range(len(lines) - len(want) + 1)
        if [line.strip() for line in lines[i : i + len(want)]] == want
    ]
    assert len(hits) == 1, f"{brk.file}: the line to break is not there once: {brk.line!r}"
    at = hits[0] + len(want) - 1
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at] = indent + brk.broken + "\n"
    target.write_text("".join(lines))
    return staged


@pytest.mark.timeout(300)
@pytest.mark.parametrize("brk", BREAKS, ids=[b.promise for b in BREAKS])
def test_a_broken_promise_fails_its_tests(tmp_path: Path, brk: Break) -> None:
    """The tests that guard this promise fail when it is broken (and not for another reason)."""
    staged = _broken_copy(tmp_path, brk)
    env = {**os.environ, "PYTHONPATH": str(staged)}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *brk.tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    # 1: tests ran and failed. 2-5 would be an interruption, a usage error or nothing collected.
    assert out.returncode == 1, f"not caught ({out.returncode}):\n{out.stdout[-3000:]}"
    assert str(staged) in out.stdout or "failed" in out.stdout


def test_the_unbroken_copy_passes_the_same_tests(tmp_path: Path) -> None:
    """The staged copy itself is sound: with nothing broken, every guarding test passes."""
    staged = tmp_path / "pkg"
    shutil.copytree(PACKAGE, staged / "filewarden", ignore=shutil.ignore_patterns("__pycache__"))
    tests = sorted({t for b in BREAKS for t in b.tests})
    probe = subprocess.run(
        [sys.executable, "-c", "import filewarden; print(filewarden.__file__)"],
        env={**os.environ, "PYTHONPATH": str(staged)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip().startswith(str(staged)), probe
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(staged)},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout[-3000:]
