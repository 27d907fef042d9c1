"""Logs for monitoring: one JSON object per line, event names only from the documented catalogue."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path

from filewarden import log_events, logs
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


def _names(node: ast.expr) -> list[str]:
    """The event names an argument can be: a literal, or either branch of a conditional."""
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if re.fullmatch(r"[a-z_]+\.[a-z_]+", node.value) else []
    return []


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
            if is_log or is_emit:
                names.update(_names(node.args[0]))
    return names


def test_every_logged_event_is_documented() -> None:
    """The code logs no event the catalogue (and so the README) does not describe."""
    undocumented = events_in_code() - set(log_events.CATALOGUE)
    assert not undocumented, f"add these to log_events.py: {sorted(undocumented)}"
    assert documented_events() == set(log_events.CATALOGUE)


def test_the_readme_table_is_the_catalogue() -> None:
    """README's log table is rendered from the catalogue in code (log_events.py), word for word."""
    assert log_events.markdown() in (ROOT / "README.md").read_text()


def test_the_catalogue_check_marks_a_wrong_name_level_or_field() -> None:
    """A name, level or field the catalogue does not list is marked on the line and recorded."""
    out = io.StringIO()
    logs.configure(LogConfig(format="json", level="debug"), stream=out)
    seen = len(logs.UNCATALOGUED)
    try:
        log = logs.get("t")
        log.info("file.new", id=1, root="/r", path="/r/a")  # as catalogued
        log.info("file.invented", id=1)
        log.error("file.new", id=1)
        log.info("file.new", id=1, colour="blue")
    finally:
        logs.configure(LogConfig(format="json", level="warning"))
        found = logs.UNCATALOGUED[seen:]
        del logs.UNCATALOGUED[seen:]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "uncatalogued" not in lines[0]
    assert [line.get("uncatalogued") for line in lines[1:]] == found
    assert "not in the log catalogue" in found[0]
    assert "not logged at error" in found[1]
    assert "colour" in found[2]


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


def test_a_module_logger_follows_a_new_configuration() -> None:
    """A logger made before a reload logs at the new level, to the new stream."""
    log = logs.get("t")
    first, second = io.StringIO(), io.StringIO()
    try:
        logs.configure(LogConfig(format="json", level="warning"), stream=first)
        log.info("file.new", id=1, root="/r", path="/r/a")
        logs.configure(LogConfig(format="json", level="info"), stream=second)
        log.info("file.new", id=2, root="/r", path="/r/b")
    finally:
        logs.configure(LogConfig(format="json", level="warning"))
    assert first.getvalue() == ""
    assert [json.loads(line)["id"] for line in second.getvalue().splitlines()] == [2]
