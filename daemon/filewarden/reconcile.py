"""Deciding what an observation of the disk means for the catalog.

Observers only report what they saw: the sweep, a directory's regular
files with their signatures and its subdirectories (a
:class:`~filewarden.listing.Listing`); the watcher, through the live planner
(:mod:`filewarden.live`), single paths that changed. :func:`diff_listing`
compares a listing with the catalog rows read through a read connection and
keeps only what differs — for an unchanged directory, nothing.
:func:`apply_diff` and the single-path decisions (:func:`observe_path`,
:func:`apply_move`, :func:`save_back`, ...) run in the writer thread and
decide again against the catalog as it is *then*, because a live event may
have been applied in between.

Files a listing no longer shows are returned as ids, not marked missing:
the caller checks they are really gone and that the root is still there
before calling :func:`confirm_missing`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import apsw

from filewarden import catalog, identity, logs
from filewarden.catalog import PRESENT, DirRow, DirStamp, FileRow, Signature
from filewarden.listing import Listing, Tally, stat_regular, still_listed
from filewarden.roots import Root

log = logs.get("filewarden.reconcile")


@dataclasses.dataclass(frozen=True, slots=True)
class DirDiff:
    """How a listing differs from the catalog; empty for an unchanged directory."""

    dir: bytes
    stamp: DirStamp | None  # the new stamp to store; None when unchanged
    new: list[tuple[bytes, Signature]]  # names the catalog does not have
    touched: list[tuple[bytes, Signature]]  # names whose row differs (signature or state)
    gone: list[int]  # present files the listing does not show
    vanished: list[bytes]  # known subdirectories that are not there any more
    # New names that are known files moved here: (name, signature, file id, its root id).
    found: list[tuple[bytes, Signature, FileRow, int]] = dataclasses.field(default_factory=list)
    # Names whose file is missing (or offline) and is on disk again: back
    # (same path first, whatever inode the name has now).
    returned: list[tuple[bytes, Signature]] = dataclasses.field(default_factory=list)
    # The listing's files digest, to store once the catalog's rows match it;
    # None when the stored digest already is the listing's.
    digest: bytes | None = None
    listed: int = 0  # files in the listing
    ident: tuple[int, int] | None = None  # the listed directory's (device, inode)

    def __bool__(self) -> bool:
        return bool(
            self.stamp
            or self.new
            or self.touched
            or self.gone
            or self.vanished
            or self.found
            or self.returned
            or self.digest is not None
        )


def diff_listing(
    listing: Listing,
    rows: Sequence[DirRow] | None,
    known_subdirs: Iterable[bytes],
    stored: DirStamp | None,
    digest: bytes | None = None,
) -> DirDiff:
    """Compare one listing with the catalog's rows for its directory.

    Pure: no I/O, no catalog access. ``rows`` are ``catalog.dir_rows``, or
    None when the stored files digest equals the listing's (nothing to
    compare); ``known_subdirs`` the paths ``catalog.child_dirs`` returns,
    ``stored`` the directory's stamp from its last listing, ``digest`` the
    listing's :func:`catalog.files_digest` when the stored one differs.
    """
    vanished = [p for p in known_subdirs if catalog.split(p)[1] not in listing.subdirs]
    stamp = None if stored == listing.stamp else listing.stamp
    files = listing.files
    if rows is None:
        return DirDiff(listing.dir, stamp, [], [], [], vanished, ident=listing.ident)
    touched: list[tuple[bytes, Signature]] = []
    returned: list[tuple[bytes, Signature]] = []
    gone: list[int] = []
    seen = set()
    for name, size, mtime_ns, ctime_ns, device, inode, state, file_id in _one_per_name(rows):
        sig = files.get(name)
        if sig is None:
            if state == PRESENT:
                gone.append(file_id)
            continue
        seen.add(name)
        if state != PRESENT:
            returned.append((name, sig))
        elif sig != (size, mtime_ns, ctime_ns, device, inode):
            touched.append((name, sig))
    new = [(name, sig) for name, sig in files.items() if name not in seen]
    new.sort()  # index order: cheaper B-tree inserts
    return DirDiff(
        listing.dir,
        stamp,
        new,
        touched,
        gone,
        vanished,
        digest=digest,
        listed=len(files),
        returned=returned,
        ident=listing.ident,
    )


def _one_per_name(rows: Sequence[DirRow]) -> Iterable[DirRow]:
    """The row that speaks for each name: the present file, else an offline one, else the newest missing one.

    Only one file is present at a path; missing ones keep their last path
    as history, and a new file there is the latest of them coming back.
    """
    best: dict[bytes, DirRow] = {}
    for row in rows:
        held = best.get(row[0])
        if held is None or _rank(row) > _rank(held):
            best[row[0]] = row
    return best.values() if len(best) < len(rows) else rows


def _rank(row: DirRow) -> tuple[int, int]:
    return (2 if row[6] == PRESENT else 1 if row[6] == catalog.OFFLINE else 0, row[7])


def _change_reason(old: Signature, new: Signature) -> str:
    size, mtime_ns, _, device, inode = new
    if old[4] != inode or old[3] != device:
        return "replaced"
    if old[0] != size:
        return "size"
    if old[1] != mtime_ns:
        return "mtime"
    return "ctime"


def observe_file(
    conn: apsw.Connection, root: Root, row: FileRow, sig: Signature, now: float, tally: Tally
) -> None:
    """A regular file with signature ``sig`` is at the path of ``row``: record what that means."""
    old = row.signature
    if row.state != PRESENT:
        # Back at the same path: the same file again, whatever it holds now.
        catalog.set_present(conn, row, now)
        if old != sig:
            catalog.update_signature(conn, row.id, sig, now, keep_hash=False)
        catalog.journal(conn, now, "restore", row.id, root.id, row.path, detail={"was": row.state})
        log.info(
            "file.restore", id=row.id, root=root.display, path=root.abs(row.path), was=row.state
        )
        tally.restored += 1
    elif old != sig:
        reason = _change_reason(old, sig)
        catalog.update_signature(conn, row.id, sig, now, keep_hash=False)
        catalog.journal(conn, now, "change", row.id, root.id, row.path, detail={"reason": reason})
        log.info(
            "file.change", id=row.id, root=root.display, path=root.abs(row.path), reason=reason
        )
        tally.changed += 1


def apply_diff(
    conn: apsw.Connection,
    root: Root,
    diff: DirDiff,
    now: float,
    *,
    first_index: bool,
    roots: Mapping[int, Root] | None = None,
) -> tuple[Tally, list[int]]:
    """Record one directory's differences (writer thread); returns the tally and gone ids."""
    tally = Tally()
    rid = root.id
    if diff.ident is not None and not still_listed(root, diff.dir, diff.ident):
        # The directory was moved (or removed) after it was listed, and the
        # live event that moved its rows may already be applied: recorded now,
        # the listing would put files back at paths that no longer exist, in a
        # directory no sweep lists again. Its new place is listed or hinted on
        # its own; until then nothing here is decided.
        log.debug("sweep.stale_listing", root=root.display, path=root.abs(diff.dir))
        return tally, []
    for name, sig, matched, src_root_id in diff.found:
        src = (roots or {}).get(src_root_id, root)
        moved = apply_move(
            conn,
            src,
            b"",
            root,
            catalog.join(diff.dir, name),
            sig,
            now,
            matched=matched,
            by="inode",
            roots=roots,
        )
        if moved is not None:
            tally.moved += 1
    # A directory the catalog knew nothing of that ends up holding exactly
    # the listing's files: its digest is the listing's, without reading back.
    fresh = (
        diff.digest is not None
        and not diff.touched
        and not diff.gone
        and len(diff.new) == diff.listed
        and catalog.dir_is_empty(conn, rid, diff.dir)
    )
    count = 0
    new = diff.new
    for name, sig in [*diff.touched, *diff.returned]:
        row = catalog.file_at(conn, rid, catalog.join(diff.dir, name))
        if row is not None:
            observe_file(conn, root, row, sig, now, tally)
        else:
            # The file the catalog had here was found elsewhere meanwhile (its
            # inode moved on, earlier in this sweep): what is here is new.
            new = sorted([*new, (name, sig)])
    if new:
        after, count = catalog.insert_files(conn, rid, diff.dir, new, now, arrivals=not first_index)
        tally.new += count
        # Per-file lines only when they will show: a first index of a million
        # files would otherwise build a million discarded events.
        level = 10 if first_index else 20
        if count < len(new) or log.is_enabled_for(level):
            added = catalog.added_since(conn, after)
            emit = log.debug if first_index else log.info
            for file_id, name in added:
                emit(
                    "file.new",
                    id=file_id,
                    root=root.display,
                    path=root.abs(catalog.join(diff.dir, name)),
                )
            if count < len(new):  # a live event created some of them meanwhile
                done = {name for _, name in added}
                for name, sig in new:
                    row = (
                        None
                        if name in done
                        else catalog.file_at(conn, rid, catalog.join(diff.dir, name))
                    )
                    if row is not None:
                        observe_file(conn, root, row, sig, now, tally)
    gone = list(diff.gone)
    for path in diff.vanished:
        # Its listings are forgotten only once its files are confirmed missing
        # (see the sweep's end): a sweep that stops before must leave the way
        # to them known.
        gone.extend(file_id for file_id, _, _ in catalog.present_ids_under(conn, rid, path))
    if diff.gone or diff.vanished:
        # Until those files are confirmed missing, this listing is not the
        # catalog's: the next quick sweep must list the directory again.
        catalog.put_dir(conn, rid, diff.dir, catalog.DIRTY)
    elif diff.stamp is not None:
        catalog.put_dir(conn, rid, diff.dir, diff.stamp)
    # The digest describes the rows as they are now, not the listing: a live
    # change since the sweep read the rows makes the two differ, and then
    # nothing is stored. (With files still to confirm missing it would differ too.)
    if diff.digest is not None and not diff.gone:
        if (fresh and count == len(new)) or catalog.present_digest(
            conn, rid, diff.dir
        ) == diff.digest:
            catalog.set_dir_digest(conn, rid, diff.dir, diff.digest)
    return tally, gone


def observe_path(
    conn: apsw.Connection,
    root: Root,
    rel: bytes,
    sig: Signature | None,
    now: float,
    *,
    reason: str = "not_found",
    roots: Mapping[int, Root] | None = None,
) -> int | None:
    """One path as just seen on disk (``sig``) or seen absent (None); returns the file id there.

    For checks on access and live hints: a present file that is gone becomes
    missing with ``reason``; a known one is compared as a sweep would (same
    path first); a file the catalog did not know is new, unless (with
    ``roots``) it is a known file by its inode, as far as that can be told
    here without reading the file (see :func:`identity.by_inode`).
    """
    row = catalog.file_at(conn, root.id, rel)
    dir, name = catalog.split(rel)
    if sig is None:
        if row is not None and row.state == PRESENT:
            confirm_missing(conn, root, [(row.id, rel)], reason, now, None)
            catalog.mark_dir_dirty(conn, root.id, dir)
        return row.id if row is not None else None
    if row is not None:
        observe_file(conn, root, row, sig, now, Tally())
        return row.id
    if roots:
        found = identity.by_inode(conn, sig, roots, root.abs(rel), can_hash=False)
        if found is not None:
            return apply_move(
                conn, found[1], b"", root, rel, sig, now, matched=found[0], by="inode"
            )
    added = _insert_new(conn, root, dir, [(name, sig)], now)
    return added[0][0] if added else None


def observe_new(
    conn: apsw.Connection,
    root: Root,
    dir: bytes,
    seen: Sequence[tuple[bytes, Signature]],
    now: float,
) -> None:
    """Files of one directory just seen on disk (live hints): :func:`observe_path` for each,
    with those the catalog does not know inserted together.

    A create storm records thousands of files in one directory: one insert
    (and one journal statement) for them all instead of one for each.
    """
    new: dict[bytes, Signature] = {}
    for name, sig in seen:
        row = catalog.file_at(conn, root.id, catalog.join(dir, name))
        if row is not None:
            observe_file(conn, root, row, sig, now, Tally())
        else:
            new[name] = sig  # the last word, if a name was seen twice
    if new:
        _insert_new(conn, root, dir, list(new.items()), now)


def _insert_new(
    conn: apsw.Connection,
    root: Root,
    dir: bytes,
    entries: Sequence[tuple[bytes, Signature]],
    now: float,
) -> list[tuple[int, bytes]]:
    """New files of one directory seen live, recorded and logged; their ``(id, name)``.

    A name a live event recorded meanwhile is skipped (see ``insert_files``).
    """
    after, count = catalog.insert_files(conn, root.id, dir, entries, now)
    catalog.mark_dir_dirty(conn, root.id, dir)
    added = catalog.added_since(conn, after) if count else []
    for file_id, name in added:
        log.info("file.new", id=file_id, root=root.display, path=root.abs(catalog.join(dir, name)))
    return added


def apply_move(
    conn: apsw.Connection,
    src: Root,
    src_rel: bytes,
    dst: Root,
    dst_rel: bytes,
    sig: Signature | None,
    now: float,
    *,
    matched: FileRow | None = None,
    by: str | None = None,
    roots: Mapping[int, Root] | None = None,
) -> int | None:
    """A file moved from ``src_rel`` to ``dst_rel`` (a live event, or found by inode).

    The id goes with the file. If a *present* file is at the destination (a
    rename over it, as an atomic save does), that file keeps its id and gets
    the new content as a change, and the moved one is gone (``deleted``). A
    missing file recorded at the destination stays missing: the moved file
    is known, and keeps its own id.
    ``matched`` is the file the destination's inode matched when it was read
    (by a sweep or the watcher; ``by`` says how), instead of ``src_rel``. It
    is checked again here (:func:`identity.still_candidate`): if a newer
    observation moved it since, the destination is looked at afresh instead.
    With ``roots``, a source path the catalog does not know (a directory
    above it moved while nobody watched, and no sweep has caught up yet, or
    a temporary file renamed over) is not the end: the destination is
    observed, and a known file may still be found by its inode.
    """
    all_roots = roots or {src.id: src, dst.id: dst}
    if matched is not None:
        row = identity.still_candidate(conn, matched, sig, all_roots) if sig else None
        if row is None:
            return _look_again(conn, dst, dst_rel, now, all_roots)
    else:
        row = catalog.file_at(conn, src.id, src_rel)
        if row is None or row.state != PRESENT:
            return (
                observe_path(conn, dst, dst_rel, sig, now, roots=roots) if sig is not None else None
            )
    there = catalog.file_at(conn, dst.id, dst_rel)
    if there is not None and there.id != row.id and there.state == PRESENT:
        if sig is not None:
            observe_file(conn, dst, there, sig, now, Tally())
        if row.state == PRESENT:
            confirm_missing(conn, src, [(row.id, row.path)], "deleted", now, None)
        return there.id
    old = all_roots[row.root].abs(row.path) if row.root in all_roots else row.path
    was = row.state
    kind = "relink" if was != PRESENT else "move"
    detail = {"by": by} if by else None
    catalog.move_file(conn, row, dst.id, dst_rel, sig, now, kind=kind, detail=detail)
    catalog.mark_dir_dirty(conn, dst.id, catalog.split(dst_rel)[0])
    event = "file.relink" if kind == "relink" else "file.move"
    fields = {"candidates": 1, "chose": "only one"} if kind == "relink" else {}
    log.info(
        event,
        id=row.id,
        root=dst.display,
        path=dst.abs(dst_rel),
        old_path=old,
        by=by or "event",
        **fields,
    )
    return row.id


def _look_again(
    conn: apsw.Connection, root: Root, rel: bytes, now: float, roots: Mapping[int, Root]
) -> int | None:
    """A decision made on a read connection no longer holds: decide from what is there now."""
    sig = stat_regular(root.abs(rel))
    if sig is None:
        return None  # moved on or gone: its own event, or the next sweep, says where
    return observe_path(conn, root, rel, sig, now, roots=roots)


def save_back(
    conn: apsw.Connection,
    root: Root,
    backup: bytes,
    home: bytes,
    now: float,
    *,
    since: float,
    keep_backup: bool,
    roots: Mapping[int, Root],
) -> int | None:
    """An editor moved file ``backup`` aside from ``home`` and wrote a new ``home``: the id stays home.

    Same path first, as a sweep with the daemon stopped would decide: the
    file now at ``home`` is the one that was there, changed. With
    ``keep_backup`` the backup is still on disk (emacs) and becomes a new
    file; otherwise it was deleted (vim). If the new ``home`` was already
    recorded as a new file, that interim id is retired into the old one,
    unless it has annotations of its own or was known before the move
    (``since``). Anything else: decided as usual.
    """
    row = catalog.file_at(conn, root.id, backup)
    sig = stat_regular(root.abs(home))
    backup_sig = stat_regular(root.abs(backup)) if keep_backup else None
    if row is None or row.state != PRESENT or sig is None or (keep_backup and backup_sig is None):
        observe_path(conn, root, backup, backup_sig, now, reason="deleted")
        return observe_path(conn, root, home, sig, now, roots=roots) if sig else None
    there = catalog.file_at(conn, root.id, home)
    detail = {"by": "save"}
    if there is not None and there.state == PRESENT and there.id != row.id:
        if there.first_seen < since or not catalog.retire_into(conn, row, there, None, now, detail):
            observe_path(conn, root, backup, backup_sig, now, reason="deleted")
            return there.id
        kept = catalog.get_file(conn, row.id)
        assert kept is not None
        observe_file(conn, root, kept, sig, now, Tally())
    else:
        catalog.move_file(conn, row, root.id, home, row.signature, now, detail=detail)
        moved = catalog.get_file(conn, row.id)
        assert moved is not None
        observe_file(conn, root, moved, sig, now, Tally())
    catalog.mark_dir_dirty(conn, root.id, catalog.split(home)[0])
    log.info(
        "file.move",
        id=row.id,
        root=root.display,
        path=root.abs(home),
        old_path=root.abs(backup),
        by="save",
    )
    if backup_sig is not None:
        observe_path(conn, root, backup, backup_sig, now)
    return row.id


def apply_move_dir(
    conn: apsw.Connection, src: Root, src_rel: bytes, dst: Root, dst_rel: bytes, now: float
) -> int:
    """A directory moved: every file below it follows in one update."""
    count = catalog.move_prefix(conn, src.id, src_rel, dst.id, dst_rel, now)
    log.info(
        "dir.move", root=dst.display, path=dst.abs(dst_rel), old_path=src.abs(src_rel), files=count
    )
    return count


def gone_under(conn: apsw.Connection, root: Root, rel: bytes, reason: str, now: float) -> int:
    """Everything present at or below ``rel`` left (deleted, moved out): missing with ``reason``."""
    row = catalog.file_at(conn, root.id, rel) if rel else None
    targets = [(row.id, rel)] if row is not None and row.state == PRESENT else []
    targets += [
        (file_id, catalog.join(dir, name))
        for file_id, dir, name in catalog.present_ids_under(conn, root.id, rel)
    ]
    count = confirm_missing(conn, root, targets, reason, now, None) if targets else 0
    catalog.forget_dirs_under(conn, root.id, rel)
    if rel:
        catalog.mark_dir_dirty(conn, root.id, catalog.split(rel)[0])
    return count


def confirm_missing(
    conn: apsw.Connection,
    root: Root,
    paths: Sequence[tuple[int, bytes]],
    reason: str,
    now: float,
    last_seen: float | None,
) -> int:
    """Mark files missing that the caller has checked are gone from disk.

    Each entry is ``(id, root-relative path)`` as the caller saw it; a file
    that has moved in the catalog since (a live event got there first) is
    left alone.
    """
    ids = []
    for file_id, path in paths:
        row = catalog.get_file(conn, file_id)
        if row is not None and row.state == PRESENT and row.root == root.id and row.path == path:
            ids.append(file_id)
    changed = catalog.mark_missing(conn, ids, reason, now, last_seen)
    for file_id, _, path in changed:
        log.info("file.missing", id=file_id, root=root.display, path=root.abs(path), reason=reason)
    return len(changed)
