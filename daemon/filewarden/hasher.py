"""Content hashes (xxh3-128): how a file is hashed safely, and the background hasher.

A hash is only worth storing if it belongs to the signature stored beside
it. So a file is hashed through one descriptor, ``fstat`` before and after
reading (borg's files cache): if size, mtime, ctime or inode moved while it
was read, the hash is thrown away; and the catalog takes it only if the row
still has that signature (``catalog.set_hashes``). Any later change of the
signature drops the hash (``catalog.update_signature``), so only changed
files are hashed again. A photo's or song's fingerprint is read in the same
pass (:mod:`filewarden.fingerprint`) and lives as long as the hash.

The background hasher works through unhashed present files in id order
(so a restart resumes where it was), at idle CPU and I/O priority and, if
configured, under a rate limit, so live events and sweeps never wait for it.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import apsw
import xxhash

from filewarden import catalog, logs
from filewarden.catalog import Media, Signature
from filewarden.config import HashConfig
from filewarden.fingerprint import Fingerprinter, describe
from filewarden.roots import Root
from filewarden.writer import Writer, WriterStopped

log = logs.get("filewarden.hasher")

CHUNK = 1 << 20
BATCH = 256
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


_local = threading.local()


def _buffer() -> memoryview:
    """This thread's read buffer, made once: a fresh megabyte per file cost more than hashing
    a small file (the kernel hands out and zeroes its pages on every allocation)."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(CHUNK))
    return view


class Hashed(NamedTuple):
    digest: bytes  # xxh3-128
    signature: Signature  # what the file was while it was read
    media: Media | None = None  # a media file's fingerprint (asked for, and one of the formats)


def hash_file(
    path: bytes, expected: Signature | None = None, *, fingerprint: bool = False
) -> Hashed | None:
    """The xxh3-128 digest and the signature of the regular file at ``path``, or None.

    None when it is not a regular file, is not (any more) what ``expected``
    says, changed while being read, or cannot be read. O_NONBLOCK and
    O_NOFOLLOW: a FIFO or a symlink swapped in under the name is never
    waited on or followed. With ``fingerprint``, a photo or song is also
    fingerprinted (:mod:`filewarden.fingerprint`) from the same reads.
    """
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        sig = catalog.signature(before)
        if expected is not None and sig != expected:
            return None
        if before.st_size > CHUNK:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        digest = xxhash.xxh3_128()
        view = _buffer()
        media = Fingerprinter(before.st_size, partial(_pread, fd)) if fingerprint else None
        # Up to the size it had, not to end of file: a small file is then one
        # read, not two. Had it grown, shrunk or been rewritten meanwhile, the
        # signature after tells.
        left = before.st_size
        while left and (n := os.readv(fd, [view[: min(left, CHUNK)]])):
            digest.update(view[:n])
            if media is not None and not media.done:
                media.feed(view.obj, n)  # type: ignore[arg-type]
            left -= n
        described = _media(media, fd, path) if media is not None else None
        after = os.fstat(fd)
        if catalog.signature(after) != sig:
            return None  # written while we read it: this hash belongs to nothing
        return Hashed(digest.digest(), sig, described)
    except OSError:
        return None
    finally:
        os.close(fd)


def _pread(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, max(0, offset)) if size > 0 else b""


def _media(media: Fingerprinter, fd: int, path: bytes) -> Media | None:
    """What the reads made of a media file: its fingerprint, or why it has none."""
    found = media.finish()
    if media.format is None:
        return None
    if found is None:
        # A damaged or partial file is the user's business, not an alarm: once, at debug.
        log.debug("hash.unfit", path=path, format=media.format, reason=media.unfit)
        return Media(media.format, None, {})
    kind, value, extra = found
    return Media(kind, value, {**extra, **describe(fd, kind)})


def lower_priority() -> None:
    """Idle CPU and I/O priority for the calling thread (Linux: both are per thread)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except OSError:
        pass
    if hasattr(os, "sched_param"):
        try:
            # ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE << 13); no Python binding exists.
            libc = ctypes.CDLL(None, use_errno=True)
            syscall_nr = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
            if syscall_nr is not None:
                libc.syscall(syscall_nr, 1, tid, 3 << 13)
        except OSError:
            pass


def store(
    conn: apsw.Connection,
    results: list[tuple[int, Signature, bytes]],
    media: Sequence[tuple[int, Signature, bytes, Media]] = (),
) -> int:
    """Store hashes (and the fingerprints read with them); returns how many hashes."""
    stored, mismatched = catalog.set_hashes(conn, results)
    if media:
        catalog.set_media(conn, media)
    for file_id in mismatched:
        # The row held another hash for this very signature: a hash that
        # belongs to another file. Dropped; the next pass hashes it again.
        log.error("hash.mismatch", id=file_id, action="hash dropped; rehashing")
    return stored


class Hasher(threading.Thread):
    """Hashes every present file that has no hash yet, in the background."""

    def __init__(
        self,
        writer: Writer,
        roots: Callable[[], dict[int, Root]],
        *,
        max_bytes_per_s: float = 0.0,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="filewarden-hasher", daemon=True)
        self.writer = writer
        self.roots = roots
        self.max_bytes_per_s = max_bytes_per_s
        self.enabled = True  # [hash] enabled; a reload may turn it off and on again
        self.halt = stop
        self._poke = threading.Event()
        self.hashed = 0
        self.bytes = 0
        self.skipped = 0
        self.pending: int | None = None
        self.busy = False

    def apply(self, config: HashConfig) -> None:
        """``[hash]``, at start and on reload: whether to hash at all, and how fast."""
        self.max_bytes_per_s = config.max_mb_per_s * 1e6
        self.enabled = config.enabled
        if config.enabled and self.ident is None:
            self.start()  # off until now
        self.poke()

    def poke(self) -> None:
        """New unhashed files may exist: look again now."""
        self._poke.set()

    def run(self) -> None:
        lower_priority()
        if self.halt.is_set():
            return  # stopped before it began: the catalog may be closed already
        reader = self.writer.catalog.reader()
        try:
            while not self.halt.is_set():
                self._poke.clear()
                self.pending = catalog.count_unhashed(reader)
                started, hashed, size = time.monotonic(), self.hashed, self.bytes
                try:
                    worked = self.enabled and self._pass(reader)
                except WriterStopped:
                    return  # the daemon is stopping
                if worked:
                    seconds, files = time.monotonic() - started, self.hashed - hashed
                    # Caught up: worth an operator's notice after a long pass, not after each save.
                    emit = log.info if seconds >= 1.0 or files >= 1000 else log.debug
                    emit(
                        "hash.done",
                        files=files,
                        bytes=self.bytes - size,
                        duration_s=round(seconds, 3),
                    )
                else:
                    self.busy = False
                    self._poke.wait(30)
        finally:
            reader.close()

    def _pass(self, reader: apsw.Connection) -> bool:
        """One walk over the unhashed files; True if anything was hashed."""
        after, worked = 0, False
        while not self.halt.is_set() and self.enabled:
            rows = catalog.unhashed(reader, after, BATCH)
            if not rows:
                return worked
            self.busy = True
            after = rows[-1].id
            roots = self.roots()
            results: list[tuple[int, Signature, bytes]] = []
            media: list[tuple[int, Signature, bytes, Media]] = []
            started = time.monotonic()
            size = 0
            for row in rows:
                root = roots.get(row.root)
                if root is None or self.halt.is_set():
                    continue
                got = hash_file(root.abs(row.path), row.signature, fingerprint=True)
                if got is None:
                    self.skipped += 1  # changed or gone: the next sweep or event settles it
                    continue
                results.append((row.id, got.signature, got.digest))
                if got.media is not None:
                    media.append((row.id, got.signature, got.digest, got.media))
                size += row.size
            if results:
                stored = self.writer.call(
                    partial(store, results=results, media=media), background=True
                )
                self.hashed += stored
                self.bytes += size
                worked = True
                if self.pending is not None:
                    self.pending = max(0, self.pending - stored)
            if self.max_bytes_per_s > 0:
                # A rate limit is a matter of time: wait out the budget this batch used.
                self.halt.wait(max(0.0, size / self.max_bytes_per_s - (time.monotonic() - started)))
        return worked
