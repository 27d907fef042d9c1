"""Prometheus metrics: scraped over real HTTP and from the CLI's textfile, parsed by
prometheus_client's own parser, every metric the README lists there, values as ``status``."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from filewarden.client import Client
from filewarden.testing import write_config
from tests.conftest import make_files, wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and labels (parsed by prometheus_client)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def readme_metrics() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| `filewarden_files` |") :].split("\n\n", 1)[0]
    return re.findall(r"^\| `(filewarden_\w+)` \|", table, re.M)


def test_metrics_over_http_and_textfile_agree_with_status(tmp_path: Path, tree: Path) -> None:
    files = make_files(tree, 30, per_dir=10)
    port = free_port()
    setup = write_config(
        tmp_path, [tree], backend="watchdog", sections={"metrics": {"listen": f"127.0.0.1:{port}"}}
    )
    proc = setup.start()
    try:
        proc.wait_event("sweep.finish")
        assert [e["address"] for e in proc.seen("metrics.listen")] == [f"127.0.0.1:{port}"]
        files[0].unlink()
        (tree / "new.txt").write_text("new")
        with Client(setup.socket) as c:
            c.sync()
            wait_for(lambda: c.status()["hashing"]["pending"] == 0, timeout=60)
            status = c.status()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                http = samples(r.read().decode())
            out = tmp_path / "textfile" / "filewarden.prom"
            out.parent.mkdir()
            subprocess.run(
                [sys.executable, "-m", "filewarden", "metrics", "--socket", str(setup.socket),
                 "--output", str(out)],
                check=True,
            )  # fmt: skip
            textfile = samples(out.read_text())
            socket_text = samples(c.metrics())
    finally:
        assert proc.stop() == 0
    root = str(tree)
    for scrape in (http, textfile, socket_text):
        names = {name.removesuffix("_total") for name, _ in scrape}
        for metric in readme_metrics():
            if metric.startswith("filewarden_ship_"):
                continue  # there once a shipper reports (tests/test_fleet.py)
            assert metric.removesuffix("_total") in names, metric
        for state, count in status["roots"][0]["files"].items():
            assert scrape[("filewarden_files", (("root", root), ("state", state)))] == count
        assert scrape[("filewarden_missing_files", ())] == status["totals"]["missing"] == 1
        assert scrape[("filewarden_root_online", (("root", root),))] == 1
        assert scrape[("filewarden_root_watched", (("backend", "watchdog"), ("root", root)))] == 1
        assert scrape[("filewarden_hash_backlog_files", ())] == 0
        assert scrape[("filewarden_journal_seq", ())] == status["seq"]
        assert scrape[("filewarden_journal_entries_total", (("kind", "new"),))] == len(files) + 1
        assert scrape[("filewarden_journal_entries_total", (("kind", "missing"),))] == 1
        assert scrape[("filewarden_inotify_watches", ())] >= 4  # the root and its 3 directories
        assert scrape[("filewarden_socket_clients", ())] >= 1
        assert scrape[("filewarden_resident_memory_bytes", ())] > 10 << 20
        assert scrape[("filewarden_up", ())] == 1
        assert any(n == "filewarden_sweep_duration_seconds" for n, _ in scrape)
        assert (
            scrape[("filewarden_last_sweep_timestamp_seconds", (("kind", "full"), ("root", root)))]
            > 0
        )


def test_a_listen_address_in_use_stops_the_start_with_a_clear_error(
    tmp_path: Path, tree: Path
) -> None:
    make_files(tree, 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        setup = write_config(
            tmp_path, [tree], sections={"metrics": {"listen": f"127.0.0.1:{port}"}}
        )
        proc = setup.start()
        assert proc.proc.wait(30) == 1
        stop = proc.seen("daemon.stop")[-1]
        assert f"[metrics] listen = 127.0.0.1:{port}" in stop["reason"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="not installed: promtool")
def test_the_example_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(ROOT / "docs" / "alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout
