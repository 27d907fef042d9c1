"""Identity: which known file a file that appears is. One order, one place.

A path P under a root holds a regular file, and the catalog has no present
file at P. The rules, tried in this order (README, "Relinking"):

1. **Same path.** A missing or offline file last at P gets its id back
   (``restore``), whatever P holds now, unless the file there is, by inode
   *and* content, another known file moved there. So does a file that an editor moved
   aside a moment ago to make its backup (``f`` → ``f~``, then a new ``f``):
   it was at P until then (see :class:`Saves`).
2. **Same (device, inode), size and mtime** as a known file whose own path
   no longer holds that inode: the file moved (also while nobody watched).
   Inode numbers are handed out again at once (ext4), and tools that
   restore mtimes (tar, rsync -t, unzip, cp -p) make another file look the
   same, so the match is confirmed, never assumed: a candidate with a hash
   must have the new file's content (it is one file to hash), and a file
   the watcher saw deleted (its inode freed) is never a candidate.
3. **Same size and content** (xxh3-128), decided after the file is added,
   from the journal (:class:`Relinker`), both ways: a new file whose
   content a missing file has, however much later; and a file that goes
   missing while an identical file arrived within ``match_window`` before
   it (copy, then delete), on any filesystem.
4. **Same media fingerprint** (:mod:`filewarden.fingerprint`), after rule 3
   found nothing: a new photo or song whose audio or image data a missing
   file has, however its tags, captions or dates were edited. The new file
   is read now (a fingerprint is from its bytes, never assumed), and only
   one missing file and one arrival may share it.
5. Otherwise it is **new**. A copy of a present file is a new file.

A rule that finds several candidates it cannot tell apart, or evidence
that disagrees, moves no id: both are kept and ``file.ambiguous`` is
logged. A wrong merge is worse than a missed one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import apsw

from filewarden import catalog, fingerprint, hasher, logs
from filewarden.catalog import FileRow, Media, Signature
from filewarden.config import IdentityConfig
from filewarden.listing import stat_regular
from filewarden.roots import Root
from filewarden.writer import Writer

log = logs.get("filewarden.identity")

MATCH_WINDOW = 7 * 86400.0  # [identity] match_window: how far apart a copy and a delete may be
SAVE_WINDOW = 5.0  # seconds between an editor moving a file aside and the new file (see Saves)
MAX_CONTENT_CANDIDATES = 64  # files hashed at most to decide one departure
MAX_UNHASHED_ARRIVALS = 4096  # unhashed copy candidates weighed at most for files gone at once
LISTED = 10  # identical copies weighed (and logged) at most: two already make it ambiguous


# --- rule 2: the inode -----------------------------------------------------------


def inode_candidates(
    conn: apsw.Connection, sig: Signature, roots: Mapping[int, Root]
) -> list[tuple[FileRow, Root]]:
    """Known files that ``sig`` may be, by inode: same device, inode, size and mtime.

    Not a file still at its own path with that inode (a hard link, or the
    same file), and not one the watcher saw deleted: its inode was freed,
    and a file that has the number now is another file.
    """
    size, mtime_ns, _, device, inode = sig
    found = []
    for row in catalog.files_with_inode(conn, device, inode):
        root = roots.get(row.root)
        if root is None or row.size != size or row.mtime_ns != mtime_ns:
            continue
        if row.state == catalog.MISSING and row.missing_reason == "deleted":
            continue
        if row.state == catalog.PRESENT:
            there = stat_regular(root.abs(row.path))
            if there is not None and there[3:] == (device, inode):
                continue
        found.append((row, root))
    return found


def by_inode(
    conn: apsw.Connection,
    sig: Signature,
    roots: Mapping[int, Root],
    path: bytes,
    *,
    can_hash: bool = True,
    over_path: bool = False,
) -> tuple[FileRow, Root] | None:
    """The known file that the file at ``path`` (signature ``sig``) is by rule 2, confirmed; or None.

    A candidate with a hash is taken only if the file has that content:
    hashed here when ``can_hash``, else (in the writer, which must not read
    files) such a candidate is left to rule 3. A present candidate (moved
    while nobody watched) comes before missing ones; among those the most
    recently missing. Two candidates that nothing tells apart: none.
    ``over_path``: a missing file is recorded at ``path`` (rule 1 would
    restore it), and only a candidate whose content proves it moved there
    outweighs that.
    """
    candidates = inode_candidates(conn, sig, roots)
    if over_path:
        candidates = [c for c in candidates if c[0].hash is not None]
    if not candidates:
        return None
    if any(row.hash is not None for row, _ in candidates):
        if not can_hash:
            return None
        got = hasher.hash_file(path, sig)
        if got is None:
            return None  # changed or gone meanwhile: the event that follows decides
        same = [(row, root) for row, root in candidates if row.hash == got[0]]
        if not same:
            # Same inode, size and mtime, other content: the number was reused.
            ambiguous(path, "inode", [row.id for row, _ in candidates], "the content differs")
            return None
        candidates = same
    present = [c for c in candidates if c[0].state == catalog.PRESENT]
    if len(present) > 1:
        ambiguous(path, "inode", [row.id for row, _ in present], "several files moved here")
        return None
    if present:
        return present[0]
    return max(candidates, key=lambda c: (c[0].missing_since or 0.0, c[0].id))


def still_candidate(
    conn: apsw.Connection, seen: FileRow, sig: Signature, roots: Mapping[int, Root]
) -> FileRow | None:
    """File ``seen``, matched to ``sig`` by inode on a read connection, as it is now if it still matches.

    Checked in the writer before the id moves: a live event may have moved
    it since (then it is at a path that holds the inode, and undoing that
    would be wrong), or marked it missing (it still matches). Its hash, if
    it had one, must be the one that confirmed the match.
    """
    now = catalog.get_file(conn, seen.id)
    if now is None or now.hash != seen.hash:
        return None
    return next((row for row, _ in inode_candidates(conn, sig, roots) if row.id == seen.id), None)


def ambiguous(path: bytes, rule: str, candidates: list[int], reason: str) -> None:
    """Evidence that does not decide: both ids are kept, and this says why."""
    log.info("file.ambiguous", path=path, rule=rule, candidates=candidates, reason=reason)


# --- rule 1, live: an editor's backup ------------------------------------------------


def looks_like_backup(src: bytes, dest: bytes) -> bool:
    """Whether moving ``src`` to ``dest`` is how an editor moves a file aside to save it.

    vim and emacs rename ``f`` to ``f~`` (``f.~1~``, ``f.bak``, ``.f.swp``...)
    in the same directory, then write a new ``f``.
    """
    src_dir, _, src_name = src.rpartition(b"/")
    dest_dir, _, dest_name = dest.rpartition(b"/")
    if src_dir != dest_dir or dest_name == src_name:
        return False
    return dest_name.startswith(src_name) or dest_name.startswith(b"." + src_name)


class Saves:
    """Files an editor moved aside in the last ``SAVE_WINDOW`` seconds, by the path they left.

    A sweep with the daemon stopped sees ``f`` with new content where ``f``
    was: the same file, changed (rule 1). The watcher sees ``f`` move to
    ``f~``, a new ``f``, and ``f~`` deleted (vim) or kept (emacs). Remembering
    the move lets it decide as the sweep would: the id stays at ``f``.
    Absolute paths and wall-clock times (compared with the catalog's
    first_seen); the live planner's, in the aggregator's thread only.
    """

    def __init__(self, window: float = SAVE_WINDOW) -> None:
        self.window = window
        self._home: dict[bytes, tuple[bytes, float]] = {}  # left path → (backup path, when)
        self._backup: dict[bytes, bytes] = {}  # backup path → left path

    def moved(self, src: bytes, dest: bytes, now: float) -> None:
        self._forget(now)
        if looks_like_backup(src, dest):
            self._home[src] = (dest, now)
            self._backup[dest] = src

    def backup_of(self, home: bytes, now: float) -> tuple[bytes, float] | None:
        """The backup that the file which was at ``home`` a moment ago was moved to, and when."""
        self._forget(now)
        return self._home.get(home)

    def home_of(self, backup: bytes, now: float) -> tuple[bytes, float] | None:
        """Where the file now at ``backup`` was a moment ago, if an editor moved it there, and when."""
        self._forget(now)
        home = self._backup.get(backup)
        return (home, self._home[home][1]) if home is not None else None

    def done(self, home: bytes) -> None:
        got = self._home.pop(home, None)
        if got is not None:
            self._backup.pop(got[0], None)

    def _forget(self, now: float) -> None:
        if not self._home:
            return
        old = [h for h, (_, when) in self._home.items() if now - when > self.window]
        for home in old:
            self.done(home)


# --- rule 3: the content ---------------------------------------------------------------


def choose(candidates: list[FileRow], name: bytes) -> FileRow:
    """Among missing files with the same content: same name first, then the most recently missing."""
    return max(candidates, key=lambda r: (r.name == name, r.missing_since or 0.0, r.id))


class Relinker:
    """Applies rule 3 to what the journal says arrived or went missing; one cursor for the daemon.

    Runs in the thread that calls :meth:`catch_up` (the aggregator's after a
    live batch, a sweep's after it ends), never in the writer: it reads and
    hashes files, then hands each decision to the writer, which checks it
    still holds.
    """

    def __init__(
        self, writer: Writer, roots: Callable[[], dict[int, Root]], window: float = MATCH_WINDOW
    ) -> None:
        self.writer = writer
        self.roots = roots
        self.window = window
        self._lock = threading.Lock()
        self._seq: int | None = None
        self.relinked = 0
        self.by_fingerprint = 0  # of those, by rule 4
        self.hashed = 0  # files hashed to decide a relink (not the background hasher's)

    def apply(self, config: IdentityConfig) -> None:
        """``[identity]``, on reload."""
        self.window = config.match_window

    def start_at(self, seq: int) -> None:
        with self._lock:
            if self._seq is None:
                self._seq = seq

    def skip_to(self, seq: int) -> None:
        """Do not look at entries up to ``seq`` (a root's first index: nothing there is a return)."""
        with self._lock:
            if self._seq is None or self._seq < seq:
                self._seq = seq

    def catch_up(self, reader: apsw.Connection) -> int:
        """Look at every journal entry since the last call; returns how many files were relinked."""
        with self._lock:
            if self._seq is None:
                self._seq = catalog.last_seq(reader)
                return 0
            done = 0
            upto = catalog.last_seq(reader)
            while True:
                entries = catalog.journal_tail(reader, self._seq, upto, 5000)
                if not entries:
                    self._seq = max(self._seq, upto)
                    return done
                self._seq = entries[-1][0]
                wanted = catalog.missing_hashed_sizes(reader)
                kinds = catalog.missing_media_kinds(reader)
                arrived = [
                    f for _, kind, f, size in entries if kind == "new" and (size in wanted or kinds)
                ]
                gone = [f for _, kind, f, _ in entries if kind == "missing"]
                done += self._arrivals(reader, arrived, wanted, kinds)
                done += self._departures(reader, gone)

    def _digest(self, row: FileRow, roots: Mapping[int, Root]) -> bytes | None:
        """``row``'s content hash: stored, or read now (None if it changed or went)."""
        if row.hash is not None:
            return row.hash
        root = roots.get(row.root)
        if root is None:
            return None
        self.hashed += 1
        got = hasher.hash_file(root.abs(row.path), row.signature)
        return got[0] if got is not None else None

    def _arrivals(
        self, reader: apsw.Connection, ids: Iterable[int], wanted: set[int], kinds: set[str]
    ) -> int:
        """New files whose size a hashed missing file has (hash them now and compare), or
        that may be a photo or song of a kind some missing file has (and rule 3 found
        nothing): read them now, with their fingerprint, for rule 4."""
        done = 0
        roots = self.roots()
        # The missing files of each size, by hash, asked once for all that arrived.
        missing: dict[int, dict[bytes | None, list[FileRow]]] = {}
        media: list[tuple[FileRow, bytes, Media]] = []
        for file_id in ids:
            row = catalog.get_file(reader, file_id)
            if row is None or row.state != catalog.PRESENT:
                continue
            look = bool(kinds.intersection(fingerprint.kinds_for(row.name)))
            if row.size not in wanted and not look:
                continue
            digest: bytes | None
            if look:
                got = self._read(row, roots)
                if got is None:
                    continue
                digest = got.digest
                if got.media is not None and got.media.value is not None:
                    media.append((row, digest, got.media))
            else:
                digest = self._digest(row, roots)
            if digest is None or row.size not in wanted:
                continue
            if row.size not in missing:
                by_hash: dict[bytes | None, list[FileRow]] = {}
                for c in catalog.missing_with_size(reader, row.size):
                    by_hash.setdefault(c.hash, []).append(c)
                missing[row.size] = by_hash
            matches = missing[row.size].get(digest)
            if matches:
                keep = choose(matches, row.name)
                chose = (
                    "only one"
                    if len(matches) == 1
                    else "same name"
                    if keep.name == row.name
                    else "most recently missing"
                )
                if self._merge(keep, row, digest, len(matches), chose):
                    done += 1
                    matches.remove(keep)  # present again
                    media = [m for m in media if m[0].id != row.id]
        return done + self._by_fingerprint(reader, media, roots)

    def _read(self, row: FileRow, roots: Mapping[int, Root]) -> hasher.Hashed | None:
        """``row``'s hash and fingerprint, read now (None if it changed or went)."""
        root = roots.get(row.root)
        if root is None:
            return None
        self.hashed += 1
        got = hasher.hash_file(root.abs(row.path), row.signature, fingerprint=True)
        if got is not None and row.hash is None:
            # Kept, so that the background hasher need not read it again.
            found = [(row.id, got.signature, got.media)] if got.media is not None else []
            self.writer.submit(
                partial(
                    hasher.store,
                    results=[(row.id, got.signature, got.digest)],
                    media=[(i, s, got.digest, m) for i, s, m in found],
                ),
                background=True,
            )
        return got

    def _by_fingerprint(
        self,
        reader: apsw.Connection,
        arrivals: list[tuple[FileRow, bytes, Media]],
        roots: Mapping[int, Root],
    ) -> int:
        """Rule 4: an arrival and a missing file that alone share a fingerprint are one file."""
        done = 0
        by_value: dict[tuple[str, bytes], list[tuple[FileRow, bytes, Media]]] = {}
        for arrival in arrivals:
            assert arrival[2].value is not None
            by_value.setdefault((arrival[2].kind, arrival[2].value), []).append(arrival)
        for (kind, value), same in by_value.items():
            gone = catalog.with_fingerprint(reader, kind, value, catalog.MISSING)
            if not gone:
                continue
            if len(gone) > 1 or len(same) > 1:
                path = _abs(same[0][0], roots)
                ids = [row.id for row in gone] + [row.id for row, _, _ in same[1:]]
                ambiguous(path, "fingerprint", ids, "several files share the fingerprint")
                continue
            row, digest, media = same[0]
            if self._merge(gone[0], row, digest, 1, "only one", by="fingerprint", media=media):
                done += 1
        return done

    def _departures(self, reader: apsw.Connection, ids: Iterable[int]) -> int:
        """Hashed files that went missing: an identical file that arrived shortly before is the copy half."""
        done = 0
        roots = self.roots()
        gone_by_size: dict[int, list[FileRow]] = {}
        for file_id in ids:
            gone = catalog.get_file(reader, file_id)
            if (
                gone is not None
                and gone.state == catalog.MISSING
                and gone.hash is not None
                and gone.missing_since is not None
            ):
                gone_by_size.setdefault(gone.size, []).append(gone)
        taken: set[int] = set()
        digests: dict[int, bytes | None] = {}  # unhashed candidates read now
        for size, gones in gone_by_size.items():
            found: dict[bytes | None, list[FileRow]] = {}
            for new in catalog.copy_candidates(
                reader,
                size,
                {g.hash for g in gones if g.hash is not None},
                unhashed=min(MAX_CONTENT_CANDIDATES * len(gones), MAX_UNHASHED_ARRIVALS),
            ):
                found.setdefault(new.hash, []).append(new)
            unhashed = found.pop(None, [])
            copies = {digest: _Copies(rows) for digest, rows in found.items() if digest}
            for gone in gones:
                chosen = self._copy_of(gone, copies, unhashed, taken, digests, roots)
                if chosen is not None and self._merge(gone, *chosen):
                    done += 1
                    taken.add(chosen[0].id)
                elif chosen is None:
                    done += self._copy_by_fingerprint(reader, gone, taken, roots)
        return done

    def _window_start(self, gone: FileRow) -> float:
        """The earliest a copy half of ``gone``'s move may have arrived."""
        assert gone.missing_since is not None
        return gone.missing_since - self.window

    def _copy_by_fingerprint(
        self, reader: apsw.Connection, gone: FileRow, taken: set[int], roots: Mapping[int, Root]
    ) -> int:
        """Rule 4 for a departure: the one copy half, read already, with ``gone``'s fingerprint."""
        media = catalog.get_media(reader, gone.id)
        if media is None or media.value is None or gone.missing_since is None:
            return 0
        since = self._window_start(gone)
        halves = [
            new
            for new in catalog.with_fingerprint(reader, media.kind, media.value, catalog.PRESENT)
            if new.id not in taken and _copy_half(new, gone, since)
        ]
        if not halves:
            return 0
        twins = catalog.with_fingerprint(reader, media.kind, media.value, catalog.MISSING)
        if len(halves) > 1 or len(twins) > 1:
            ids = [new.id for new in halves[:LISTED]] + [t.id for t in twins if t.id != gone.id]
            ambiguous(_abs(gone, roots), "fingerprint", ids, "several files share the fingerprint")
            return 0
        if halves[0].hash is None:
            return 0
        if self._merge(gone, halves[0], halves[0].hash, 1, "only one", by="fingerprint"):
            taken.add(halves[0].id)
            return 1
        return 0

    def _copy_of(
        self,
        gone: FileRow,
        copies: Mapping[bytes, _Copies],
        unhashed: list[FileRow],
        taken: set[int],
        digests: dict[int, bytes | None],
        roots: Mapping[int, Root],
    ) -> tuple[FileRow, bytes, int, str] | None:
        """The copy half of ``gone``'s move among ``copies`` (by hash) and ``unhashed``, with
        its hash, how many candidates there were and why it was chosen; None if none or
        several that cannot be told apart (logged, with at most ``LISTED`` of them)."""
        assert gone.hash is not None and gone.missing_since is not None
        since = self._window_start(gone)
        group = copies.get(gone.hash)
        same = group.halves(gone, since, taken, LISTED) if group else []
        # Without a hash yet: read now (each once, in ``digests``), the latest
        # arrivals first (a copy's half came shortly before), so many at most.
        unread = [new for new in unhashed if new.id not in taken and _copy_half(new, gone, since)]
        read = []
        for new in unread[:MAX_CONTENT_CANDIDATES]:
            if new.id not in digests:
                digests[new.id] = self._digest(new, roots)
            if digests[new.id] == gone.hash:
                read.append(new)
        same = sorted(same + read, key=lambda new: new.id)
        if len(same) == 1:
            return same[0], gone.hash, 1, "only one"
        named = group.halves(gone, since, taken, 2, name=gone.name) if group else []
        named += [new for new in read if new.name == gone.name]
        if len(named) == 1:
            return named[0], gone.hash, len(same), "same name"
        if same:
            ambiguous(_abs(gone, roots), "hash", [new.id for new in same], "several copies arrived")
        return None

    def _merge(
        self,
        keep: FileRow,
        take: FileRow,
        digest: bytes,
        candidates: int,
        chose: str,
        *,
        by: str = "hash",
        media: Media | None = None,
    ) -> int:
        roots = self.roots()
        merged = self.writer.call(
            partial(
                catalog.retire_into,
                keep=keep,
                take=take,
                digest=digest,
                now=time.time(),
                detail={"by": by},
                media=media,
            ),
            background=True,
        )
        if merged:
            self.relinked += 1
            if by == "fingerprint":
                self.by_fingerprint += 1
            log.info(
                "file.relink",
                id=keep.id,
                by=by,
                candidates=candidates,
                path=_abs(take, roots),
                old_path=_abs(keep, roots),
                replaces_id=take.id,
                chose=chose,
            )
        return int(merged)


class _Copies:
    """The arrivals with one hash, newest first, and by name.

    A departure's copy halves are the arrivals after it was last seen, so
    the newest few decide it ("only one", "several") without weighing the
    rest: deleting many identical files (empty ones, say) used to weigh
    every identical arrival for each, the square of their number.
    """

    def __init__(self, rows: list[FileRow]) -> None:
        self.rows = sorted(rows, key=lambda row: (row.first_seen, row.id), reverse=True)
        self.by_name: dict[bytes, list[FileRow]] = {}
        for row in self.rows:
            self.by_name.setdefault(row.name, []).append(row)

    def halves(
        self,
        gone: FileRow,
        since: float,
        taken: set[int],
        limit: int,
        name: bytes | None = None,
    ) -> list[FileRow]:
        """Up to ``limit`` of these (named ``name``, if given) that may be ``gone``'s copy half."""
        found = []
        for new in self.rows if name is None else self.by_name.get(name, ()):
            if new.id == gone.id or new.id in taken:
                continue
            if not _copy_half(new, gone, since):
                break  # it came too early, and so did every one after it
            found.append(new)
            if len(found) == limit:
                break
        return found


def _copy_half(new: FileRow, gone: FileRow, since: float) -> bool:
    """Whether ``new`` may be the copy half of a move whose original ``gone`` went missing."""
    return (
        new.id != gone.id
        and new.first_seen >= since
        # Known before the original was last seen, the two lived side by
        # side: a copy in its own right, not a move's half.
        and new.first_seen > gone.last_seen
    )


def _abs(row: FileRow, roots: Mapping[int, Root]) -> bytes:
    root = roots.get(row.root)
    return root.abs(row.path) if root is not None else row.path
