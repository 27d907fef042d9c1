"""Running as a systemd service: units, sd_notify, the watchdog, socket activation, reload."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden import catalog
from filewarden.client import Client
from filewarden.testing import DaemonProcess, NotifyListener, write_config
from tests.conftest import api_config, make_files, wait_for

UNITS = Path(__file__).parent.parent / "systemd"
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def installed_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this installation (verify checks the binary exists)."""
    binary = shutil.which("filewarden") or str(Path(sys.executable).parent / "filewarden")
    out = []
    for name in (
        "filewarden.service",
        "filewarden.socket",
        "filewarden-metrics.service",
        "filewarden-metrics.socket",
        "filewarden-ship.service",
    ):
        text = (UNITS / name).read_text().replace("/usr/local/bin/filewarden", binary)
        (tmp_path / name).write_text(text)
        out.append(tmp_path / name)
    return out


def exposure(unit: Path) -> float:
    """``systemd-analyze security --offline=yes``'s overall exposure figure for a unit file."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {unit.name}: ([0-9.]+)", out.stdout)
    assert match, out.stdout[-2000:]
    return float(match.group(1))


@needs_systemd
def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify passes on every unit."""
    out = subprocess.run(
        ["systemd-analyze", "verify", *map(str, installed_units(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "filewarden" not in out.stderr, out.stderr  # no warning about our units


@needs_systemd
def test_service_exposure_is_the_readme_figure(tmp_path: Path) -> None:
    """systemd-analyze security --offline=yes rates the service's exposure 0.7, as README says."""
    score = exposure(installed_units(tmp_path)[0])
    # README: "rates it 0.7". The margin is one rounding step of the figure.
    assert abs(score - 0.7) <= 0.05, score


@needs_systemd
def test_the_metrics_proxy_unit_is_exposed_no_more_than_the_service(tmp_path: Path) -> None:
    """Loopback TCP for /metrics is a second unit (systemd-socket-proxyd to the daemon's
    Unix socket): the daemon keeps PrivateNetwork=yes, and both rate at most 1.0."""
    units = installed_units(tmp_path)
    scores = {unit.name: exposure(unit) for unit in (units[0], units[2])}
    assert all(score <= 1.0 for score in scores.values()), scores
    service = (UNITS / "filewarden.service").read_text()
    assert "PrivateNetwork=yes" in service and "RestrictAddressFamilies=AF_UNIX\n" in service
    assert "ListenStream=127.0.0.1:" in (UNITS / "filewarden-metrics.socket").read_text()


@needs_systemd
def test_the_shipper_unit_is_the_only_one_with_a_network(tmp_path: Path) -> None:
    """`filewarden ship` talks to PostgreSQL over TCP, so its unit allows AF_INET and
    AF_INET6 and no more, writes nowhere, and rates at most 1.1; the daemon's unit keeps
    PrivateNetwork=yes and AF_UNIX only (0.7)."""
    units = installed_units(tmp_path)
    service, ship = units[0], units[-1]
    assert ship.name == "filewarden-ship.service"
    scores = {unit.name: exposure(unit) for unit in (service, ship)}
    assert abs(scores["filewarden.service"] - 0.7) <= 0.05, scores
    assert scores["filewarden-ship.service"] <= 1.1, scores
    lines = (UNITS / "filewarden.service").read_text().splitlines()
    assert "PrivateNetwork=yes" in lines and "RestrictAddressFamilies=AF_UNIX" in lines
    shipper = (UNITS / "filewarden-ship.service").read_text().splitlines()
    families = [line for line in shipper if line.startswith("RestrictAddressFamilies=")]
    assert families == ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"], families
    assert not any(line.startswith("PrivateNetwork=") for line in shipper)
    assert "ProtectSystem=strict" in shipper
    writable = ("ReadWritePaths=", "StateDirectory=", "CacheDirectory=", "LogsDirectory=")
    assert not [line for line in shipper if line.startswith(writable)]
    execs = [line for line in shipper if line.startswith("ExecStart=")]
    assert len(execs) == 1 and execs[0].split()[1:3] == ["ship", "--config"], execs
    assert execs[0].split()[0].endswith("/filewarden"), execs
    # It must outlive a restart of the daemon: wanted, not required.
    assert "Wants=filewarden.service" in shipper and "After=filewarden.service" in shipper
    assert not any(line.startswith(("Requires=", "BindsTo=", "PartOf=")) for line in shipper)


PROXYD = next(
    (p for p in ("/lib/systemd/systemd-socket-proxyd", "/usr/lib/systemd/systemd-socket-proxyd")
     if os.path.exists(p)),
    None,
)  # fmt: skip


@pytest.mark.skipif(
    PROXYD is None or shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-proxyd or systemd-socket-activate not installed",
)
def test_metrics_on_a_unix_socket_reach_loopback_tcp_through_the_proxy(
    tmp_path: Path, tree: Path
) -> None:
    """The daemon serves /metrics on a Unix socket; the real systemd-socket-proxyd,
    handed a loopback listening socket as systemd would, carries a scrape to it."""
    from prometheus_client.parser import text_string_to_metric_families

    make_files(tree, 4)
    metrics_sock = tmp_path / "run" / "metrics.sock"
    setup = write_config(tmp_path, [tree], sections={"metrics": {"listen": f"unix:{metrics_sock}"}})
    proc = setup.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", str(PROXYD), str(metrics_sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proc.wait_event("sweep.finish")
        assert stat.S_IMODE(os.stat(metrics_sock).st_mode) == 0o660

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                return None  # the activator not listening yet

        text = wait_for(scrape, timeout=30)
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["filewarden_up"] == 1
        with Client(setup.socket) as c:
            assert values["filewarden_journal_seq"] == c.status()["seq"]
    finally:
        proxy.terminate()
        proxy.wait(10)
        assert proc.stop() == 0
    assert not metrics_sock.exists()  # removed at the stop


def test_service_file_has_what_the_contract_asks() -> None:
    """Type=notify, a watchdog, reload by SIGHUP, state and runtime directories, a dedicated user."""
    text = (UNITS / "filewarden.service").read_text()
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=filewarden",
        "RuntimeDirectory=filewarden",
        "User=filewarden",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX",
    ]:
        assert line in text.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "u filewarden" in (UNITS / "filewarden.sysusers").read_text()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    n = NotifyListener(tmp_path / "notify.sock")
    yield n
    n.close()


def test_notify_ready_status_watchdog_stopping(
    tmp_path: Path, tree: Path, listener: NotifyListener
) -> None:
    """With NOTIFY_SOCKET set: READY=1 once serving, STATUS= with counts, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    make_files(tree, 25)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000")
    proc = DaemonProcess(tmp_path, "--root", str(tree), env=env)
    try:
        wait_for(lambda: listener.lines("READY=1"), timeout=30)
        # Ready means serving: the socket answers now.
        with Client(tmp_path / "run" / "filewarden.sock") as c:
            assert c.call("status")["pid"] == proc.proc.pid
        wait_for(
            lambda: any("25 present" in line for _, line in listener.lines("STATUS=")), timeout=30
        )
        wait_for(lambda: len(listener.lines("WATCHDOG=1")) >= 4, timeout=10)
        assert any(line == f"MAINPID={proc.proc.pid}" for _, line in listener.lines("MAINPID="))
        proc.signal(signal.SIGTERM)
        assert proc.stop() == 0
        assert listener.lines("STOPPING=1")
        ready_at = listener.lines("READY=1")[0][0]
        assert all(t >= ready_at for t, _ in listener.lines("WATCHDOG=1"))
    finally:
        proc.kill()


def test_stuck_writer_stops_watchdog_pings(
    tmp_path: Path, tree: Path, listener: NotifyListener
) -> None:
    """A writer stuck behind another process's write lock stops the WATCHDOG=1 pings until it is free again."""
    make_files(tree, 5)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000")
    proc = DaemonProcess(tmp_path, "--root", str(tree), env=env)
    try:
        wait_for(lambda: listener.lines("READY=1"), timeout=30)
        proc.wait_event("sweep.finish")
        blocker = catalog.connect(tmp_path / "state" / "filewarden" / "catalog.db")
        blocker.execute(
            "BEGIN IMMEDIATE"
        )  # the write lock, as an admin's sqlite3 session would hold it
        try:
            (tree / "new.txt").write_text("a write the daemon must make")  # the writer now waits
            proc.wait_event("daemon.unhealthy", timeout=30)
            stuck_from = time.monotonic()
            wait_for(lambda: time.monotonic() - stuck_from > 2, timeout=5, interval=0.1)
            assert not [t for t, _ in listener.lines("WATCHDOG=1") if t > stuck_from + 0.5]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        resumed = time.monotonic()
        wait_for(lambda: [t for t, _ in listener.lines("WATCHDOG=1") if t > resumed], timeout=10)
    finally:
        proc.kill()


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed"
)
def test_socket_activation(tmp_path: Path, tree: Path) -> None:
    """Started by systemd-socket-activate, the daemon serves the passed socket and does not bind its own."""
    make_files(tree, 3)
    sock = tmp_path / "activated.sock"
    own = tmp_path / "run" / "fw.sock"
    cfg = api_config(tmp_path, [tree], socket=own)
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            sys.executable,
            "-m",
            "filewarden",
            "run",
            "--config",
            str(cfg.path),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(sock.exists, timeout=10)
        with Client(sock, timeout=60) as c:  # the first connection starts the daemon
            status = c.call("status")
            # systemd-socket-activate execs the daemon in its own process.
            assert status["pid"] == activator.pid
            c.call("sync")
            assert c.call("status")["totals"]["present"] == 3
        assert not own.exists()
    finally:
        activator.terminate()
        activator.wait(10)


def test_sighup_adds_a_root(tmp_path: Path, tree: Path) -> None:
    """SIGHUP with a new root in the config starts watching it, without a restart."""
    make_files(tree, 4)
    second = tmp_path / "second"
    make_files(second, 6)
    cfg = api_config(tmp_path, [tree], backend="watchdog")
    proc = cfg.start()
    try:
        proc.wait_event("sweep.finish")
        api_config(tmp_path, [tree, second], backend="watchdog")
        proc.signal(signal.SIGHUP)
        reload = proc.wait_event("daemon.reload")
        assert any(f"root {second} added" in c for c in reload["changes"])
        proc.wait_event("sweep.finish", root=str(second))
        with Client(tmp_path / "run" / "fw.sock") as c:
            roots = {r["path"]: r for r in c.call("status")["roots"]}
            assert (
                roots[str(second)]["backend"] == "watchdog"
                and roots[str(second)]["state"] == "online"
            )
            (second / "live.txt").write_text("seen live")
            c.call("sync")
            assert c.call("lookup", {"path": str(second / "live.txt")}) is not None
            assert c.call("status")["pid"] == proc.proc.pid  # same process
    finally:
        assert proc.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_old_one(tmp_path: Path, tree: Path) -> None:
    """SIGHUP with a broken config logs the problem and runs on with the old config."""
    make_files(tree, 4)
    cfg = api_config(tmp_path, [tree])
    proc = cfg.start()
    try:
        proc.wait_event("sweep.finish")
        cfg.path.write_text(
            cfg.path.read_text().replace('interval = "never"', "interval = 'whenever'")
        )
        proc.signal(signal.SIGHUP)
        event = proc.wait_event("daemon.reload")
        assert event["level"] == "error" and "interval" in event["error"]
        with Client(tmp_path / "run" / "fw.sock") as c:
            st = c.call("status")
            assert [r["path"] for r in st["roots"]] == [str(tree)] and st["totals"]["present"] == 4
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0
