"""Logs for monitoring: one JSON object per line, event names only from the documented catalogue."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

from filewarden import logs
from filewarden.config import LogConfig
from tests.conftest import make_files
from tests.scenarios.conftest import live_daemon

ROOT = Path(__file__).parent.parent
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


def documented_events() -> set[str]:
    """The event names in the README's log catalogue table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Logs", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([a-z_]+\.[a-z_]+)`", first_cell))
    return names


def events_in_code() -> set[str]:
    """Every event name the daemon's code logs (first argument of log.<level>(...) or emit(...))."""
    names = set()
    for path in (ROOT / "daemon" / "filewarden").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            is_log = isinstance(func, ast.Attribute) and func.attr in LEVELS
            is_emit = isinstance(func, ast.Name) and func.id.startswith("emit")
            first = node.args[0]
            if (
                (is_log or is_emit)
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                if re.fullmatch(r"[a-z_]+\.[a-z_]+", first.value):
                    names.add(first.value)
    return names


def test_every_logged_event_is_documented() -> None:
    """The code logs no event the README's catalogue does not describe."""
    undocumented = events_in_code() - documented_events()
    assert not undocumented, f"document these in the README's log catalogue: {sorted(undocumented)}"


def test_json_lines_shape() -> None:
    """JSON lines start with timestamp (RFC 3339 UTC), level, event; non-UTF-8 paths stay valid JSON."""
    out = io.StringIO()
    logs.configure(LogConfig(format="json", level="debug"), stream=out)
    try:
        logs.get("t").info("file.new", path=b"/tmp/caf\xe9\n.jpg", id=3)
    finally:
        logs.configure(LogConfig(format="json", level="warning"))
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert list(event)[:3] == ["timestamp", "level", "event"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", event["timestamp"])
    assert event["path"] == "/tmp/caf\udce9\n.jpg" and event["id"] == 3
    line.encode("ascii")  # one line, plain ASCII: journald keeps it whole


def test_a_whole_scenario_logs_only_catalogue_events(tmp_path: Path) -> None:
    """Every stderr line of a scenario (index, moves, deletes, scan, overflow-free run) is JSON with a catalogue name."""
    known = documented_events()
    with live_daemon(tmp_path, "watchdog", roots=2) as live:
        paths = make_files(live.roots[0] / "a", 20)
        live.sync()
        paths[0].rename(live.roots[1] / "moved.txt")
        (live.roots[0] / "a").rename(live.roots[0] / "b")
        (live.roots[0] / "b" / "d0001" / "f00010.txt").unlink()
        live.sync()
        live.call("scan", {"wait": True})
        raw = list(live.proc.raw)
    assert raw
    for line in raw:
        event = json.loads(line)
        assert event["event"] in known, event
