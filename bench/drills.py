"""Reliability drills at full size: crash, overflow, disk full, hostile trees, socket soak.

    python -m bench.drills                        # every drill at full size
    python -m bench.drills --only crash --kills 50 --seed 7
    python -m bench.drills --only soak --soak-seconds 300
    python -m bench.drills --only overflow --overflow-files 50000

The same drills as ``tests/drills`` (and, for the overflow, the scenario
``tests/scenarios/test_watch_limits.py``), run bigger and longer. Each runs a
real daemon in its own work directory, checks what it promises, and prints
its figures: kills, checks passed, RSS at start and end, times. A drill that
breaks a promise is reported as FAILED with the broken check; the command
exits 1 if any did. Root is needed (mounts, device nodes, capabilities,
SIGSTOP of the daemon under a full inotify queue). Run it with ``-m`` from
the top of the checkout: the drills are the test package's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.drills._support import report
from tests.drills.test_crash import Orphans, crash_drill
from tests.drills.test_disk_full import disk_full_drill
from tests.drills.test_hostile import hostile_drill
from tests.drills.test_soak import soak_drill
from tests.scenarios.conftest import live_view, scenario_config

DRILLS = ["crash", "overflow", "disk-full", "hostile", "soak"]


def say(line: str) -> None:
    print(f"  {line}", flush=True)


def overflow_drill(tmp: Path, *, files: int, dirs: int = 100) -> dict[str, Any]:
    """The daemon SIGSTOPped under the default inotify queue while ~``files``*4 events happen."""
    t0 = time.monotonic()
    root = tmp / "root1"
    storm = root / "storm"
    for i in range(dirs):
        (storm / f"d{i:03d}").mkdir(parents=True)
    (tmp / "outside").mkdir()
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    proc = scenario_config(tmp, [root]).start()
    figures: dict[str, Any] = {"max_queued_events": queue}
    try:
        proc.wait_event("daemon.ready", timeout=120)
        lv = live_view(proc, [root], "watchdog")
        lv.sync()  # the directories are watched before the storm
        proc.signal(signal.SIGSTOP)
        t_storm = time.monotonic()
        try:
            paths = []
            for i in range(files):
                p = storm / f"d{i % dirs:03d}" / f"f{i:06d}.txt"
                p.write_bytes(b"%d" % i)
                paths.append(p)
            for p in paths[::3]:
                p.rename(p.with_suffix(".renamed"))
            for p in paths[1::3]:
                p.unlink()
        finally:
            proc.signal(signal.SIGCONT)
        # create (IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE), rename (two), delete (one)
        figures["events_made"] = files * 3 + len(paths[::3]) * 2 + len(paths[1::3])
        figures["storm_s"] = round(time.monotonic() - t_storm, 1)
        t_sync = time.monotonic()
        lv.sync()
        figures["sync_after_s"] = round(time.monotonic() - t_sync, 1)
        overflow = proc.wait_event("watcher.overflow", timeout=60)
        assert overflow["level"] == "warning"
        [root_status] = lv.call("status")["roots"]
        assert any("overflow" in w for w in root_status["warnings"]), root_status
        lv.assert_matches_disk()
        want = files - len(paths[1::3])
        assert len(lv.files("present")) == want
        figures["present"] = want
        figures["overflows_logged"] = len(proc.seen("watcher.overflow"))
        lv.client.close()
    finally:
        code = proc.stop(timeout=60)
    assert code == 0, proc.tail()
    figures["seconds"] = round(time.monotonic() - t0, 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--only", choices=DRILLS, action="append", help="run only this drill (repeatable)"
    )
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument(
        "--work", type=Path, default=None, help="where the work dirs go (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dirs")
    ap.add_argument("--kills", type=int, default=30, help="crash: SIGKILLs (default 30)")
    ap.add_argument("--crash-files", type=int, default=2000, help="crash: files before the storm")
    ap.add_argument("--crash-ops", type=int, default=800, help="crash: most storm steps per kill")
    ap.add_argument(
        "--overflow-files", type=int, default=30000, help="overflow: files (~4 events each)"
    )
    ap.add_argument(
        "--disk-full-size", default="4m", help="disk-full: the tmpfs size for the catalog"
    )
    ap.add_argument("--churn-seconds", type=float, default=15, help="hostile: scans amid churn")
    ap.add_argument("--soak-seconds", type=float, default=60, help="soak: how long (default 60)")
    ap.add_argument("--soak-clients", type=int, default=32, help="soak: well-behaved clients")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("drills need root (mounts, device nodes, capabilities)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="fw-drills-", dir=args.work))
    runs: dict[str, Callable[[Path], dict[str, Any]]] = {
        "crash": lambda tmp: crash_drill(
            tmp,
            kills=args.kills,
            seed=args.seed,
            initial=args.crash_files,
            ops=(args.crash_ops // 5, args.crash_ops),
            down_ops=100,
            max_delay=2.0,
            say=say,
        ),
        "overflow": lambda tmp: overflow_drill(tmp, files=args.overflow_files),
        "disk-full": lambda tmp: disk_full_drill(
            tmp, size=args.disk_full_size, batch=2000, max_batches=60, say=say
        ),
        "hostile": lambda tmp: hostile_drill(tmp, churn_seconds=args.churn_seconds, say=say),
        "soak": lambda tmp: soak_drill(
            tmp, seconds=args.soak_seconds, good_clients=args.soak_clients, say=say
        ),
    }
    outcome: dict[str, str] = {}
    for name in args.only or DRILLS:
        tmp = base / name
        tmp.mkdir()
        print(f"{name}:", flush=True)
        t0 = time.monotonic()
        try:
            figures = runs[name](tmp)
        except Orphans as exc:
            outcome[name] = f"FAILED: {exc}"
        except Exception as exc:
            traceback.print_exc()
            outcome[name] = f"FAILED: {type(exc).__name__}: {str(exc)[:500]}"
        else:
            outcome[name] = "ok  " + report(name, figures)
        print(f"  {name}: {time.monotonic() - t0:.1f} s", flush=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print("\nreport")
    for name, line in outcome.items():
        print(f"  {line if line.startswith('ok') else name + ': ' + line}")
    return 0 if all(v.startswith("ok") for v in outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
