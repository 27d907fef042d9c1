"""SIGHUP's reload, in-process: what a new config file changes, and what it must not."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from filewarden import catalog, config, logs
from filewarden.api import Peer
from filewarden.daemon import Daemon
from filewarden.protocol import RpcError
from tests.conftest import logged, make_files, wait_for


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "filewarden.toml"
    path.write_text(
        "\n".join(
            [
                "[daemon]",
                f'state_dir = "{tmp_path / "state"}"',
                f'socket = "{tmp_path / "fw.sock"}"',
                *lines,
            ]
        )
        + "\n"
    )
    return path


def root(path: Path, *options: str) -> list[str]:
    return ["[[root]]", f'path = "{path}"', *options]


@contextmanager
def running(cfg: config.Config, **options: Any) -> Iterator[Daemon]:
    d = Daemon(cfg, **options)
    d.start()
    try:
        assert d.syncer.sync(30)
        yield d
    finally:
        d.stop()
        logs.configure(config.LogConfig(format="json", level="warning"))


def reload(d: Daemon) -> dict[str, Any]:
    """Reload; the one daemon.reload event it logged."""
    with logged() as events:
        d.reload()
    (event,) = [dict(e) for e in events if e["event"] == "daemon.reload"]
    return event


def paths(d: Daemon) -> set[Path]:
    return {r.config.path for r in d.roots}


def test_a_reload_adds_removes_and_changes_roots(tmp_path: Path) -> None:
    """Roots added are indexed and watched, roots removed are let go, a changed root's options apply; each is named."""
    a, b, c = (tmp_path / n for n in "abc")
    for directory in (a, b, c):
        make_files(directory, 3)
    (b / "scratch.tmp").write_text("scratch")
    cfg = write(tmp_path, *root(a), *root(b))
    with running(config.load(cfg)) as d:
        reader = catalog.connect(d.db_path, readonly=True)
        old = {r.config.path: r for r in d.roots}
        assert catalog.file_at(reader, old[b].id, b"scratch.tmp") is not None
        write(tmp_path, *root(b, 'exclude = ["*.tmp"]'), *root(c))
        event = reload(d)
        assert event["log_level"] == "info" and event["config"] == str(cfg)
        assert event["changes"] == [f"root {a} removed", f"root {b} changed", f"root {c} added"]
        assert paths(d) == {b, c}
        new = {r.config.path: r for r in d.roots}
        assert new[b].config.exclude == ("*.tmp",)
        assert d.watcher.mode_of(new[c]) == "watch" and old[a].id not in d.watcher.modes
        # c is indexed, and watched from now on; a is not looked at any more.
        (c / "later.txt").write_text("later")
        (a / "unseen.txt").write_text("unseen")
        assert d.syncer.sync(30)
        wait_for(lambda: catalog.file_at(reader, new[c].id, b"later.txt") is not None, 30)
        assert catalog.file_at(reader, new[c].id, b"d0000/f00000.txt") is not None
        assert catalog.file_at(reader, old[a].id, b"unseen.txt") is None
        # b's new exclude: the excluded file leaves the catalog's present files at b's next sweep.
        d.scheduler.request(new[b], full=True)
        wait_for(
            lambda: catalog.file_at(reader, new[b].id, b"scratch.tmp").state == "missing",  # type: ignore[union-attr]
            30,
        )
        reader.close()


def test_a_reload_that_changes_nothing_says_so_and_tells_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged file: "nothing changed"; systemd hears RELOADING=1, then READY=1 with a status."""
    tree = tmp_path / "tree"
    make_files(tree, 2)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    cfg = write(tmp_path, *root(tree))
    try:
        with running(config.load(cfg)) as d:
            listener.setblocking(False)
            while True:  # whatever the start said
                try:
                    listener.recv(4096)
                except BlockingIOError:
                    break
            listener.settimeout(30)
            before = d.config
            assert reload(d)["changes"] == ["nothing changed"]
            assert d.config == before
            assert listener.recv(4096) == b"RELOADING=1"
            ready = listener.recv(4096).split(b"\n")
            assert ready[:2] == [
                b"READY=1",
                b"STATUS=" + d.health.status_line(d._reader_conn()).encode(),
            ]
    finally:
        listener.close()


def test_a_broken_file_changes_nothing(tmp_path: Path) -> None:
    """A reload of a file that does not parse is an error that keeps the running config, roots and all."""
    tree = tmp_path / "tree"
    make_files(tree, 2)
    cfg = write(tmp_path, "[sweep]", 'interval = "1h"', *root(tree))
    with running(config.load(cfg)) as d:
        before, roots = d.config, d.roots.snapshot()
        cfg.write_text(cfg.read_text() + "[sweep\n")
        event = reload(d)
        assert event["log_level"] == "error" and event["kept"] == "the running config"
        assert str(cfg) in event["error"]
        assert d.config is before and d.roots.snapshot() == roots


def test_without_a_config_file_there_is_nothing_to_reload(tmp_path: Path, tree: Path) -> None:
    """Started with --root only: a reload says so at warning and changes nothing."""
    make_files(tree, 2)
    cfg = config.embedded([tree])
    cfg = dataclasses.replace(
        cfg,
        daemon=dataclasses.replace(
            cfg.daemon, state_dir=tmp_path / "state", socket=tmp_path / "fw.sock"
        ),
    )
    with running(cfg) as d:
        event = reload(d)
        assert event["log_level"] == "warning"
        assert event["error"] == "started without a config file: nothing to reload"
        assert d.config is cfg


def test_roots_and_log_options_from_the_command_line_outlive_a_reload(tmp_path: Path) -> None:
    """`run --root DIR --log-level debug` with a config file: a reload applies the file, but not over those."""
    given, in_file = tmp_path / "given", tmp_path / "in-file"
    make_files(given, 2)
    make_files(in_file, 2)
    cfg = write(tmp_path, "[log]", 'format = "json"', 'level = "warning"', *root(in_file))
    started = config.with_roots(config.load(cfg), [given])
    fixed = {"level": "debug"}
    started = dataclasses.replace(started, log=config.LogConfig(format="json", level="debug"))
    with running(started, fixed_roots=True, fixed_log=fixed) as d:
        logs.configure(d.config.log)
        write(
            tmp_path,
            "[log]",
            'format = "json"',
            'level = "error"',
            "[sweep]",
            'interval = "2h"',
            *root(in_file),
        )
        changes = reload(d)["changes"]
        assert changes == ["[sweep] changed"]
        assert paths(d) == {given}
        assert d.config.log.level == "debug" and logs.get("t").is_enabled_for(10)
        assert d.config.sweep.interval == 7200


def test_a_root_removed_then_added_again_is_watched_and_swept_again(tmp_path: Path) -> None:
    """Removing one root keeps the others; adding it back (its catalog row still says online) watches and sweeps it."""
    a, b, c = (tmp_path / n for n in "abc")
    for directory in (a, b, c):
        make_files(directory, 2)
    cfg = write(tmp_path, *root(a), *root(b), *root(c))
    with running(config.load(cfg)) as d:
        reader = catalog.connect(d.db_path, readonly=True)
        write(tmp_path, *root(b), *root(c))
        assert reload(d)["changes"] == [f"root {a} removed"]
        assert paths(d) == {b, c}
        (a / "while-away.txt").write_text("while away")
        write(tmp_path, *root(a), *root(b), *root(c))
        assert reload(d)["changes"] == [f"root {a} added"]
        [again] = [r for r in d.roots if r.config.path == a]
        assert d.watcher.mode_of(again) == "watch"
        wait_for(lambda: catalog.file_at(reader, again.id, b"while-away.txt") is not None, 30)
        (a / "watched.txt").write_text("watched")
        assert d.syncer.sync(30)
        assert catalog.file_at(reader, again.id, b"watched.txt") is not None
        reader.close()


def test_daemon_and_watch_changes_wait_for_a_restart_and_hashing_left_off_starts_nothing(
    tmp_path: Path,
) -> None:
    """[daemon] and [watch] changes are named as waiting for a restart; a reload with hashing still off starts no hasher."""
    tree = tmp_path / "tree"
    make_files(tree, 2)
    off = ["[hash]", "enabled = false"]
    cfg = write(tmp_path, *off, "[watch]", 'backend = "watchdog"', *root(tree))
    with running(config.load(cfg)) as d:
        write(
            tmp_path, 'client_idle_timeout = "1m"', *off, "[watch]", 'backend = "poll"', *root(tree)
        )
        assert reload(d)["changes"] == [
            "[daemon] changed: takes effect at the next restart",
            "[watch] changed: takes effect at the next restart",
        ]
        assert not d.hasher.is_alive()
        assert d.config.watch.backend == "watchdog"


def test_a_removed_root_is_retired_keeps_its_ids_and_goes_only_with_purge_root(
    tmp_path: Path,
) -> None:
    """status lists a root removed from the config under retired_roots (not in totals); put
    back, it picks its files up with their ids; `purge --root` drops it and its files."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_files(a, 3)
    make_files(b, 2)
    cfg = write(tmp_path, *root(a), *root(b))
    with running(config.load(cfg)) as d:
        api = d.api
        admin = Peer(os.getpid(), 0, 0, True)
        ids = {(f.root, f.path): f.id for f in catalog.iter_files(api.reader())}
        rated = next(i for (r, _), i in ids.items() if d.roots.get(r).config.path == a)  # type: ignore[union-attr]
        api.annotate({"id": rated, "key": "rating", "value": "5"}, admin)
        write(tmp_path, *root(b))
        assert reload(d)["changes"] == [f"root {a} removed"]
        status = api.status({}, admin)
        assert status["totals"] == {"present": 2, "missing": 0, "offline": 0}
        assert status["retired_roots"] == [
            {"path": str(a), "files": {"present": 3, "missing": 0, "offline": 0}}
        ]
        with pytest.raises(RpcError) as configured:
            api.purge({"root": str(b)}, admin)
        assert configured.value.code == -32602
        with pytest.raises(RpcError) as nobody:
            api.purge({"root": str(a)}, Peer(os.getpid(), 65534, 65534, False))
        assert nobody.value.code == -32001
        # Back in the config: the same ids, the annotation with them.
        write(tmp_path, *root(a), *root(b))
        assert reload(d)["changes"] == [f"root {a} added"]
        assert d.syncer.sync(30)
        again = {(f.root, f.path): f.id for f in catalog.iter_files(api.reader())}
        assert again == ids
        assert api.file({"id": rated}, admin)["annotations"] == {"rating": "5"}
        assert api.status({}, admin)["retired_roots"] == []
        # Removed again and purged: its files go, with a purge entry each; b stays.
        write(tmp_path, *root(b))
        reload(d)
        seq = catalog.last_seq(api.reader())
        assert api.purge({"root": str(a)}, admin) == {"purged": 3, "refused": []}
        purged = [e for e in catalog.journal_since(api.reader(), seq, 100) if e.kind == "purge"]
        assert len(purged) == 3 and all(
            e.detail == {"by_uid": 0, "root_retired": True} for e in purged
        )
        status = api.status({}, admin)
        assert status["retired_roots"] == [] and status["totals"]["present"] == 2
        left = {f.root for f in catalog.iter_files(api.reader())}
        assert left == {r.id for r in d.roots}
        with pytest.raises(RpcError) as unknown:
            api.purge({"root": str(tmp_path / "never")}, admin)
        assert unknown.value.code == -32002
