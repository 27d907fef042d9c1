"""Is a root there? Real directories, real mounts, real markers, a real catalog: offline, never missing."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from filewarden import catalog, mounts
from filewarden.availability import Availability
from filewarden.config import RootConfig
from filewarden.roots import Root, RootSet
from tests.conftest import Harness, logged, make_files, wait_for

DIFFERENT = (
    "a different filesystem is here: was {was}, now {now};"
    " `filewarden accept-root {root}` if it is the same library"
)


class RecordingHost:
    """The daemon's side of it: what it was told, in order; ``root_online`` fails for some roots."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.failing = failing

    def root_offline(self, root: Root, reason: str) -> None:
        self.calls.append(("offline", root.id, reason))

    def root_online(self, root: Root) -> None:
        self.calls.append(("online", root.id))
        if root.id in self.failing:
            raise RuntimeError(f"cannot watch {root.display}")


def sh(*args: str | Path) -> str:
    return subprocess.run(
        [str(a) for a in args], check=True, capture_output=True, text=True
    ).stdout.strip()


class Mounts:
    """The mounts and loop devices a test makes, undone at its end whatever happens."""

    def __init__(self, prefix: tuple[str, ...] = ()) -> None:
        self.prefix = prefix  # runs the commands in another mount namespace
        self.points: list[Path] = []
        self.loops: list[str] = []

    def mount(self, *args: str | Path) -> None:
        sh(*self.prefix, "mount", *args)
        self.points.append(Path(args[-1]))

    def tmpfs(self, at: Path) -> None:
        self.mount("-t", "tmpfs", "tmpfs", at)

    def bind(self, source: Path, at: Path) -> None:
        self.mount("--bind", source, at)

    def unmount(self, at: Path) -> None:
        # The loop's probe may be reading the directory this very moment ("target is busy").
        command = [*self.prefix, "umount", str(at)]
        wait_for(lambda: subprocess.run(command, capture_output=True).returncode == 0)
        self.points.remove(at)

    def loop(self, image: Path) -> str:
        device = sh("losetup", "--find", "--show", image)
        self.loops.append(device)
        return device

    def close(self) -> None:
        for point in reversed(self.points):
            subprocess.run([*self.prefix, "umount", "-l", str(point)], check=False)
        for device in self.loops:
            subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture
def mnt() -> Iterator[Mounts]:
    if os.geteuid() != 0:
        pytest.skip("mounts filesystems")
    m = Mounts()
    try:
        yield m
    finally:
        m.close()


class Drive:
    """A drive holding the library in its ``lib`` directory, plugged in (bind-mounted) at the root."""

    def __init__(self, mnt: Mounts, disk: Path, at: Path) -> None:
        self.mnt, self.lib, self.at = mnt, disk / "lib", at
        mnt.tmpfs(disk)
        self.lib.mkdir()

    def plug(self) -> None:
        self.mnt.bind(self.lib, self.at)

    def unplug(self) -> None:
        self.mnt.unmount(self.at)


@pytest.fixture
def drive(mnt: Mounts, tmp_path: Path, tree: Path) -> Drive:
    (tmp_path / "disk").mkdir()
    return Drive(mnt, tmp_path / "disk", tree)


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


def checker_of(
    host: RecordingHost, harness: Harness, interval: float, *roots: Root
) -> Availability:
    """A mount checker over ``roots``, their recorded volumes loaded."""
    checker = Availability(host, RootSet(), harness.writer, interval, threading.Event())
    for root in roots:
        checker.roots.add(root)
        checker.load(root, harness.reader)
    return checker


@pytest.fixture
def av(harness: Harness, host: RecordingHost) -> Iterator[Availability]:
    checker = checker_of(host, harness, 30.0)
    yield checker
    checker.halt.set()


def identity(path: Path) -> mounts.Identity:
    ident = mounts.identity(os.fsencode(path))
    assert ident is not None
    return ident


def row(h: Harness, root: Root | None = None) -> catalog.RootRow:
    got = catalog.get_root(h.reader, (root or h.root).id)
    assert got is not None
    return got


def recorded(h: Harness, root: Root | None = None) -> mounts.Identity | None:
    return catalog.get_identity(h.reader, (root or h.root).id)


def journal(h: Harness, since: int) -> list[tuple[str, int | None, int | None]]:
    return [(e.kind, e.file, e.root) for e in catalog.journal_since(h.reader, since, 1000)]


def only(events: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e["event"] == name]


# -- first sight -----------------------------------------------------------------------


def test_a_root_seen_first_is_online_and_its_volume_recorded(
    harness: Harness, av: Availability, host: RecordingHost, tree: Path
) -> None:
    """A usable root never seen before goes online ("first seen") and its volume is recorded then."""
    assert av.daemon and av.name == "filewarden-mounts"  # never holds up the exit; named in dumps
    assert av.checks == 0 and row(harness).state == "unknown"
    before = time.time()
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) is None
    after = time.time()
    state = row(harness)
    assert (state.state, state.state_reason) == ("online", None)
    assert state.state_since is not None and before <= state.state_since <= after
    here = identity(tree)
    assert recorded(harness) == here
    assert here.device == os.stat(tree).st_dev and here.inner.endswith(os.fsencode(tree))
    assert host.calls == [("online", harness.root.id)]
    assert events == [
        {
            "event": "root.online",
            "log_level": "info",
            "root": str(tree),
            "reason": "first seen",
            "files": 0,
            "was": "unknown",
            "volume": here.describe(),
        }
    ]
    assert av.checks == 1

    # Checked again, still usable: nothing to do, nothing to say.
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) is None
    assert events == [] and host.calls == [("online", harness.root.id)]
    assert row(harness).state_since == state.state_since
    assert av.checks == 2


def test_a_root_first_seen_unusable_is_offline_and_no_volume_is_recorded(
    harness: Harness, av: Availability, host: RecordingHost, tmp_path: Path
) -> None:
    """A root that is not there at first sight goes offline with its reason; no volume is taken for it."""
    root = harness.add_root(tmp_path / "not-there")
    with logged() as events:
        assert av.refresh(root, harness.reader) == "path does not exist"
    state = row(harness, root)
    assert (state.state, state.state_reason) == ("offline", "path does not exist")
    assert recorded(harness, root) is None
    assert host.calls == [("offline", root.id, "path does not exist")]
    assert events == [
        {
            "event": "root.offline",
            "log_level": "warning",
            "root": str(tmp_path / "not-there"),
            "reason": "path does not exist",
            "files": 0,
        }
    ]


def test_a_root_without_a_catalog_row_is_checked_but_changes_nothing(
    harness: Harness, av: Availability, host: RecordingHost, tmp_path: Path, tree: Path
) -> None:
    """A root the catalog does not know (yet) gets its problem back and nothing is written or told."""
    gone = Root.make(999, RootConfig(path=tmp_path / "not-there"))
    here = Root.make(998, RootConfig(path=tree))
    with logged() as events:
        assert av.refresh(gone, harness.reader) == "path does not exist"
        assert av.refresh(here, harness.reader) is None
    assert events == [] and host.calls == []
    assert catalog.get_root(harness.reader, 999) is None
    assert catalog.get_identity(harness.reader, 998) is None
    assert row(harness).state == "unknown"
    assert av.checks == 2


# -- what makes a root unusable ---------------------------------------------------------------


def test_the_path_itself(harness: Harness, av: Availability, tmp_path: Path) -> None:
    """Missing, a file, under a file, a symlink loop: each has its reason; `problem` changes no state."""
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "link").symlink_to(tmp_path / "root")
    cases = {
        "not-there": "path does not exist",
        "file": "path is not a directory",
        "file/below": f"cannot stat the root: {os.strerror(errno.ENOTDIR)}",
        "loop": f"cannot stat the root: {os.strerror(errno.ELOOP)}",
        "link": None,  # a symlink to a directory is that directory
    }
    for name, reason in cases.items():
        root = harness.add_root(tmp_path / name)
        assert av.problem(root) == reason, name
        assert row(harness, root).state == "unknown"
    assert av.checks == 0


def test_require_mountpoint(
    harness: Harness, av: Availability, mnt: Mounts, tmp_path: Path
) -> None:
    """With require_mountpoint, a plain directory is offline; once something is mounted there it is usable."""
    point = tmp_path / "usb"
    point.mkdir()
    root = harness.add_root(point, require_mountpoint=True)
    plain = harness.add_root(tmp_path / "root")  # a plain directory too, and not required to be one
    assert av.problem(root) == "not a mount point (is the drive mounted?)"
    assert av.problem(plain) is None
    mnt.tmpfs(point)
    assert av.problem(root) is None
    assert av.refresh(root, harness.reader) is None
    assert recorded(harness, root) == identity(point)
    assert identity(point).fstype == "tmpfs" and identity(point).inner == b"/"


def test_marker(harness: Harness, av: Availability, tmp_path: Path, tree: Path) -> None:
    """The marker must be there (lstat: a dangling symlink counts); absent or under a file is 'missing', other errors 'cannot check'."""
    root = harness.add_root(tree, marker=".library")
    assert av.problem(root) == "marker .library is missing"
    (tree / ".library").symlink_to(tmp_path / "nowhere")
    assert av.problem(root) is None
    (tree / ".library").unlink()
    (tree / ".library").write_text("")
    assert av.problem(root) is None

    (tree / "sub").write_text("a file, not a directory")
    assert av.problem(harness.add_root(tree, marker="sub/.library")) == (
        "marker sub/.library is missing"
    )
    (tree / "loop").symlink_to(tree / "loop")
    assert av.problem(harness.add_root(tree, marker="loop/.library")) == (
        f"cannot check the marker: {os.strerror(errno.ELOOP)}"
    )
    assert av.problem(harness.add_root(tree, marker="x" * 300)) == (
        f"cannot check the marker: {os.strerror(errno.ENAMETOOLONG)}"
    )
    # The marker is looked for in the root, not beside it.
    (tmp_path / ".library").write_text("")
    assert av.problem(harness.add_root(tmp_path / "other", marker=".library")) == (
        "path does not exist"
    )
    (tmp_path / "other").mkdir()
    assert av.problem(harness.add_root(tmp_path / "other", marker=".library")) == (
        "marker .library is missing"
    )


def test_a_root_that_cannot_be_read_is_offline(
    harness: Harness, av: Availability, host: RecordingHost, mnt: Mounts, tmp_path: Path
) -> None:
    """A directory that stats but whose listing fails (a damaged disk: EBADMSG here) is offline, not empty."""
    if shutil.which("debugfs") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs e2fsprogs")
    image, point = tmp_path / "disk.img", tmp_path / "disk"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", image)
    point.mkdir()
    mnt.mount("-o", "loop", image, point)
    make_files(point / "lib", 5, per_dir=5)
    mnt.unmount(point)
    block = int(sh("debugfs", "-R", "blocks /lib/d0000", image).split()[0])
    with open(image, "r+b") as f:  # the directory's only block: its entries are gone
        f.seek(block * 4096)
        f.write(os.urandom(4096))
    mnt.mount("-o", "loop,errors=continue", image, point)
    root = harness.add_root(point / "lib" / "d0000")
    assert os.path.isdir(point / "lib" / "d0000")
    with logged() as events:
        problem = av.refresh(root, harness.reader)
    # EBADMSG where the directory block has a checksum (the default), EUCLEAN or EIO otherwise.
    assert problem in {
        f"cannot read the root: {os.strerror(e)}" for e in (errno.EBADMSG, errno.EUCLEAN, errno.EIO)
    }
    assert (row(harness, root).state, row(harness, root).state_reason) == ("offline", problem)
    assert host.calls == [("offline", root.id, problem)]
    assert [e["reason"] for e in only(events, "root.offline")] == [problem]


# -- going offline and coming back ---------------------------------------------------------------


def test_an_unplugged_drive_makes_its_files_offline_and_never_missing(
    harness: Harness, av: Availability, host: RecordingHost, drive: Drive, tree: Path
) -> None:
    """Unplugged: present files turn offline in one update, missing stay missing; plugged back: present again."""
    drive.plug()
    paths = make_files(tree, 3)
    harness.sweep()
    assert av.refresh(harness.root, harness.reader) is None
    plugged = identity(tree)
    assert (plugged.fstype, plugged.inner) == ("tmpfs", b"/lib")
    assert recorded(harness) == plugged
    paths[0].unlink()
    harness.sweep()
    assert harness.counts() == (2, 1, 0)
    seq = catalog.last_seq(harness.reader)

    drive.unplug()
    empty = identity(tree)  # the empty mount point: a directory of the parent filesystem
    problem = DIFFERENT.format(was=plugged.describe(), now=empty.describe(), root=tree)
    before = time.time()
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) == problem
    state = row(harness)
    assert (state.state, state.state_reason) == ("offline", problem)
    assert state.state_since is not None and before <= state.state_since <= time.time()
    assert harness.counts() == (0, 1, 2)
    assert {f.path: f.state for f in harness.files()} == {
        b"d0000/f00000.txt": "missing",
        b"d0000/f00001.txt": "offline",
        b"d0000/f00002.txt": "offline",
    }
    assert journal(harness, seq) == [("offline", None, harness.root.id)]
    assert events == [
        {
            "event": "root.offline",
            "log_level": "warning",
            "root": str(tree),
            "reason": problem,
            "files": 2,
        }
    ]
    assert host.calls[-1] == ("offline", harness.root.id, problem)
    calls = len(host.calls)

    # Still gone, for the same reason: nothing written, logged or told.
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) == problem
    assert events == [] and len(host.calls) == calls
    assert row(harness).state_since == state.state_since
    assert recorded(harness) == plugged

    drive.plug()
    seq = catalog.last_seq(harness.reader)
    before = time.time()
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) is None
    state = row(harness)
    assert (state.state, state.state_reason) == ("online", None)
    assert state.state_since is not None and before <= state.state_since <= time.time()
    assert harness.counts() == (2, 1, 0)
    assert all(f.last_seen >= before for f in harness.files("present"))
    assert journal(harness, seq) == [("online", None, harness.root.id)]
    assert events == [
        {
            "event": "root.online",
            "log_level": "info",
            "root": str(tree),
            "reason": "usable again",
            "files": 2,
            "was": "offline",
            "volume": plugged.describe(),
        }
    ]
    assert host.calls[calls:] == [("online", harness.root.id)]
    assert recorded(harness) == plugged


def test_a_new_reason_while_offline_is_recorded_and_logged_but_not_told_again(
    harness: Harness, av: Availability, host: RecordingHost, drive: Drive, tree: Path
) -> None:
    """An offline root whose reason changes keeps its offline files; the state says the new reason."""
    drive.plug()
    make_files(tree, 4)
    harness.sweep()
    av.refresh(harness.root, harness.reader)
    drive.unplug()
    first = av.refresh(harness.root, harness.reader)
    assert first is not None and first.startswith("a different filesystem is here")
    calls, seq = list(host.calls), catalog.last_seq(harness.reader)
    offline_since = row(harness).state_since
    assert offline_since is not None
    tree.rmdir()
    with logged() as events:
        assert av.refresh(harness.root, harness.reader) == "path does not exist"
    state = row(harness)
    assert (state.state, state.state_reason) == ("offline", "path does not exist")
    assert state.state_since is not None and offline_since <= state.state_since <= time.time()
    assert harness.counts() == (0, 0, 4)
    assert events == [
        {
            "event": "root.offline",
            "log_level": "warning",
            "root": str(tree),
            "reason": "path does not exist",
            "files": 4,
        }
    ]
    assert host.calls == calls
    assert journal(harness, seq) == []


def test_check_volume_off_takes_any_filesystem_at_the_path(
    harness: Harness,
    av: Availability,
    host: RecordingHost,
    drive: Drive,
    tmp_path: Path,
    tree: Path,
) -> None:
    """With check_volume = false, what is at the path is the root, whichever filesystem it is."""
    root = harness.add_root(tree, check_volume=False)
    drive.plug()
    assert av.refresh(root, harness.reader) is None
    drive.unplug()
    assert av.refresh(root, harness.reader) is None
    assert row(harness, root).state == "online"
    assert host.calls == [("online", root.id)]


def test_a_different_filesystem_stays_offline_until_accepted(
    harness: Harness, av: Availability, host: RecordingHost, drive: Drive, mnt: Mounts, tree: Path
) -> None:
    """Another drive at the root's path is offline with the accept-root hint; accept() records it as the root's."""
    drive.plug()
    make_files(tree, 2)
    harness.sweep()
    av.refresh(harness.root, harness.reader)
    first = identity(tree)
    drive.unplug()
    mnt.tmpfs(tree)  # another drive, mounted where the library was
    other = identity(tree)
    problem = DIFFERENT.format(was=first.describe(), now=other.describe(), root=tree)
    assert av.refresh(harness.root, harness.reader) == problem
    assert harness.counts() == (0, 0, 2)
    calls = len(host.calls)

    with logged() as events:
        assert av.accept(harness.root, harness.reader) is None
    assert recorded(harness) == other
    assert [(e["event"], e.get("reason")) for e in events] == [
        ("root.accepted", None),
        ("root.online", "usable again"),
    ]
    assert events[0] == {
        "event": "root.accepted",
        "log_level": "info",
        "root": str(tree),
        "volume": other.describe(),
        "was": first.describe(),
    }
    assert (row(harness).state, row(harness).state_reason) == ("online", None)
    assert host.calls[calls:] == [("online", harness.root.id)]

    # The library's own drive is now the stranger.
    mnt.unmount(tree)
    drive.plug()
    assert av.refresh(harness.root, harness.reader) == DIFFERENT.format(
        was=other.describe(), now=first.describe(), root=tree
    )


def test_accept_without_a_recorded_volume_and_without_a_volume(
    harness: Harness, av: Availability, host: RecordingHost, tmp_path: Path, tree: Path
) -> None:
    """accept() of a root never seen records its volume (was: None); with nothing there it changes nothing."""
    with logged() as events:
        assert av.accept(harness.root, harness.reader) is None
    assert events[0] == {
        "event": "root.accepted",
        "log_level": "info",
        "root": str(tree),
        "volume": identity(tree).describe(),
        "was": None,
    }
    assert events[1]["event"] == "root.online" and events[1]["reason"] == "first seen"
    assert recorded(harness) == identity(tree)

    gone = harness.add_root(tmp_path / "not-there")
    with logged() as events:
        assert av.accept(gone, harness.reader) == "the root's volume cannot be identified now"
    assert events == []
    assert recorded(harness, gone) is None and row(harness, gone).state == "unknown"
    assert host.calls == [("online", harness.root.id)]


def test_the_volume_recorded_at_first_sight_is_kept(
    harness: Harness, av: Availability, mnt: Mounts, tmp_path: Path, tree: Path
) -> None:
    """The same drive back through another device (another loop device, another st_dev) is the same root, and the record stays the first."""
    image = tmp_path / "drive.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    sh("mkfs.ext4", "-q", "-F", image)
    first = mnt.loop(image)
    mnt.mount(first, tree)
    assert av.refresh(harness.root, harness.reader) is None
    was = identity(tree)
    assert was.source == first
    mnt.unmount(tree)
    second = mnt.loop(image)  # the first is still attached: another number
    assert second != first
    mnt.mount(second, tree)
    now = identity(tree)
    assert now.source == second and now != was and now.same_volume(was)
    assert av.refresh(harness.root, harness.reader) is None
    assert row(harness).state == "online"
    assert recorded(harness) == was


# -- which roots, and what was recorded for them -----------------------------------------------------


def test_load(
    harness: Harness, host: RecordingHost, drive: Drive, tmp_path: Path, tree: Path
) -> None:
    """The volumes recorded earlier are known again after load()."""
    other = harness.add_root(tmp_path / "other")
    (tmp_path / "other").mkdir()
    drive.plug()
    first = checker_of(host, harness, 30.0, harness.root)
    first.refresh(harness.root, harness.reader)
    plugged = identity(tree)
    drive.unplug()
    problem = DIFFERENT.format(was=plugged.describe(), now=identity(tree).describe(), root=tree)

    # A restart: the catalog remembers the volume, the new checker reads it.
    loaded = checker_of(host, harness, 30.0, harness.root, other)
    assert loaded.problem(harness.root) == problem
    assert loaded.problem(other) is None
    # Checking goes by the roots now in the set: a removed root is no longer looked at.
    loaded.roots.remove(harness.root.id)
    assert list(loaded.roots) == [other]


# -- the watch loop -----------------------------------------------------------------------
#
# Each loop runs in a thread with a mount namespace of its own: other work on this machine
# mounting things (another test run, say) cannot wake it, so what wakes it is known.

CLONE_NEWNS, MS_REC, MS_PRIVATE, MS_BIND, MNT_DETACH = 0x00020000, 0x4000, 1 << 18, 0x1000, 2


class Namespace:
    """A thread with a private mount namespace: no mount made elsewhere reaches it, none made in it leaves.

    Its ``/proc/self/mountinfo`` is its own table (the thread's, bound over the process's);
    with ``proc=False`` /proc is not mounted there at all, as in a bare container. ``start``
    runs a function there; ``mounts`` mounts there (through nsenter).
    """

    def __init__(self, *, proc: bool = True) -> None:
        self.proc = proc
        self.tid = 0
        self.failed: str | None = None
        self._target: Callable[[], None] | None = None
        self._ready, self._go = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._body, name="test-namespace", daemon=True)
        self.thread.start()
        self._ready.wait(5)
        self.mounts = Mounts(("nsenter", f"--mount=/proc/{os.getpid()}/task/{self.tid}/ns/mnt"))

    def _setup(self) -> str | None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.tid = threading.get_native_id()
        own = f"/proc/self/task/{self.tid}/mountinfo".encode()
        # Private before anything else: an unmount in a namespace that shares its mounts
        # with the host's would unmount there too.
        steps: list[tuple[str, Callable[[], int]]] = [
            ("unshare", lambda: libc.unshare(CLONE_NEWNS)),
            ("make private", lambda: libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)),
            (
                "bind mountinfo",
                lambda: libc.mount(own, b"/proc/self/mountinfo", None, MS_BIND, None),
            )
            if self.proc
            else ("unmount /proc", lambda: libc.umount2(b"/proc", MNT_DETACH)),
        ]
        for what, step in steps:
            if step() != 0:
                return f"{what}: {os.strerror(ctypes.get_errno())}"
        return None

    def _body(self) -> None:
        self.failed = self._setup()
        self._ready.set()
        if self.failed is None:
            self._go.wait()
            if self._target is not None:
                self._target()

    def start(self, target: Callable[[], None]) -> None:
        self._target = target
        self._go.set()

    def close(self) -> None:
        self.mounts.close()
        self._go.set()  # one never started ends now


@contextmanager
def namespace(*, proc: bool = True) -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.skip("needs a mount namespace")
    space = Namespace(proc=proc)
    try:
        if space.failed is not None:
            pytest.skip(space.failed)
        yield space
    finally:
        space.close()


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with namespace() as space:
        yield space


def mountinfo_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("/mountinfo"):
                count += 1
        except OSError:
            pass
    return count


def test_the_loop_notices_mounts_and_unmounts_at_once(
    harness: Harness,
    av: Availability,
    host: RecordingHost,
    ns: Namespace,
    tmp_path: Path,
    tree: Path,
) -> None:
    """Mounting and unmounting flip the root within moments (mountinfo's POLLPRI), long before the 30 s interval; one look per change."""
    root = harness.add_root(tree, require_mountpoint=True)
    av.roots.add(root)
    av.load(root, harness.reader)
    unmounted = "not a mount point (is the drive mounted?)"
    assert av.refresh(root, harness.reader) == unmounted
    fds = mountinfo_fds()
    # Mounted after the caller's own check, before the loop opens the mount table: no POLLPRI
    # will say so, the loop's first look does.
    ns.mounts.tmpfs(tree)
    ns.start(av.run)
    try:
        wait_for(lambda: host.calls[-1:] == [("online", root.id)], timeout=5)
        assert row(harness, root).state == "online"
        assert av.checks == 2
        ns.mounts.unmount(tree)
        wait_for(lambda: host.calls[-1] == ("offline", root.id, unmounted), timeout=5)
        assert (row(harness, root).state, row(harness, root).state_reason) == ("offline", unmounted)
        assert av.checks == 3
        # A mount point whose name is not UTF-8 is read like any other.
        odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"\xff-usb"))
        os.mkdir(odd)
        ns.mounts.tmpfs(Path(odd))
        wait_for(lambda: av.checks == 4, timeout=5)
        # While the mount table is quiet the loop waits: it does not look over and over
        # (polling without a wait, it looks about 150 times in this window).
        assert not av.halt.wait(0.3)
        assert av.checks == 4
    finally:
        av.halt.set()
    # Stopped: the next mount change ends the loop, which closes the mount table itself
    # (left to the garbage collector, an open file warns).
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always", ResourceWarning)
        ns.mounts.tmpfs(tree)
        ns.thread.join(5)
        assert not ns.thread.is_alive()
    assert av.checks == 4
    assert mountinfo_fds() == fds
    assert [w for w in warned if issubclass(w.category, ResourceWarning)] == []


def test_one_roots_trouble_does_not_stop_the_others(
    harness: Harness, ns: Namespace, tmp_path: Path, tree: Path
) -> None:
    """An exception while handling one root is logged as root.error and the other roots are still checked."""
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = harness.add_root(other_dir)
    host = RecordingHost(failing=frozenset({harness.root.id}))
    checker = checker_of(host, harness, 0.05, harness.root, other)
    with logged() as events:
        ns.start(checker.run)
        try:
            wait_for(lambda: ("online", other.id) in host.calls, timeout=5)
        finally:
            checker.halt.set()
        ns.thread.join(2)  # within the interval, no mount change needed
        assert not ns.thread.is_alive()
    assert only(events, "root.error") == [
        {
            "event": "root.error",
            "log_level": "error",
            "root": str(tree),
            "error": f"RuntimeError: cannot watch {tree}",
        }
    ]
    assert host.calls[:2] == [("online", harness.root.id), ("online", other.id)]
    assert row(harness).state == "online"  # the catalog's part was done before the host failed
    assert row(harness, other).state == "online"


def test_the_interval_notices_what_no_mount_change_says(
    harness: Harness, host: RecordingHost, ns: Namespace, tree: Path
) -> None:
    """A marker removed and put back, with no mount change at all, is noticed within the interval each time."""
    root = harness.add_root(tree, marker=".library")
    (tree / ".library").write_text("")
    checker = checker_of(host, harness, 0.05, root)
    assert checker.refresh(root, harness.reader) is None
    ns.start(checker.run)
    try:
        for _ in range(3):
            (tree / ".library").unlink()
            wait_for(lambda: row(harness, root).state == "offline", timeout=2)
            (tree / ".library").write_text("")
            wait_for(lambda: row(harness, root).state == "online", timeout=2)
    finally:
        checker.halt.set()
    ns.thread.join(2)
    assert not ns.thread.is_alive()
    reasons = [c[2] for c in host.calls if c[0] == "offline"]
    assert reasons == ["marker .library is missing"] * 3


def test_without_a_mount_table_the_interval_alone_checks(
    harness: Harness, host: RecordingHost, tree: Path
) -> None:
    """Where /proc is not mounted the loop still checks every interval; the volume is unknown, so none is recorded."""
    checker = checker_of(host, harness, 0.05, harness.root)
    with logged() as events, namespace(proc=False) as bare:
        bare.start(checker.run)
        try:
            wait_for(lambda: host.calls == [("online", harness.root.id)], timeout=5)
            checks = checker.checks
            wait_for(lambda: checker.checks >= checks + 3, timeout=5)
        finally:
            checker.halt.set()
        bare.thread.join(2)
        assert not bare.thread.is_alive()
    assert only(events, "root.online") == [
        {
            "event": "root.online",
            "log_level": "info",
            "root": str(tree),
            "reason": "first seen",
            "files": 0,
            "was": "unknown",
            "volume": None,
        }
    ]
    assert recorded(harness) is None
    assert row(harness).state == "online"
