"""End-to-end stories: a real daemon, real files, `sync` instead of sleeps, answers from the socket."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from filewarden.testing import DaemonProcess, Live, Setup, write_config

BACKENDS = ["watchdog", "poll"] + (["pyinotify"] if importlib.util.find_spec("pyinotify") else [])

EXCLUDED = "excluded"  # a directory name every scenario's root excludes


def scenario_config(
    tmp: Path,
    roots: list[Path],
    *,
    backend: str = "watchdog",
    state_dir: Path | None = None,
    daemon: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping[str, object]] | None = None,
    root: Mapping[str, object] | None = None,
) -> Setup:
    """The scenarios' config (see ``write_config``): every root excludes ``excluded``."""
    return write_config(
        tmp,
        roots,
        backend=backend,
        state_dir=state_dir,
        daemon=daemon,
        sections=sections,
        root={"exclude": [EXCLUDED], **(root or {})},
    )


def live_view(proc: DaemonProcess, roots: list[Path], backend: str) -> Live:
    """The scenarios' Live view of a daemon started on ``scenario_config``."""
    return Live(proc, roots, backend=backend, excluded=[EXCLUDED])


@contextmanager
def live_daemon(
    tmp: Path,
    backend: str,
    *,
    roots: int = 2,
    sections: Mapping[str, Mapping[str, object]] | None = None,
    before_start: Callable[[list[Path]], object] | None = None,
    root_options: Mapping[str, object] | None = None,
) -> Iterator[Live]:
    """A daemon over ``roots`` new directories ``tmp/rootN``, once each has had its start-up sweep."""
    root_paths = [tmp / f"root{i}" for i in range(1, roots + 1)]
    for r in root_paths:
        r.mkdir(exist_ok=True)
    (tmp / "outside").mkdir(exist_ok=True)  # outside every root: a place to move files to
    if before_start is not None:
        before_start(root_paths)
    setup = scenario_config(tmp, root_paths, backend=backend, sections=sections, root=root_options)
    proc = setup.start()
    try:
        for _ in root_paths:
            proc.wait_event("sweep.finish", timeout=120)
        live = live_view(proc, root_paths, backend)
    except BaseException:
        proc.kill()
        raise
    try:
        yield live
    finally:
        code = live.close()
        assert code == 0, proc.tail()


@pytest.fixture(params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    with live_daemon(tmp_path, request.param) as d:
        yield d


from tests.scenarios.drives import drive  # noqa: E402, F401 - the fixture, for every scenario
