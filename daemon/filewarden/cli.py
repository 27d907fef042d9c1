"""The ``filewarden`` command: ``run`` the daemon, and the client commands.

Exit codes (the contract): 0 ok, 1 failure, 2 usage or config error,
3 daemon unreachable, 4 permission denied, 5 not found.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from filewarden import __version__, client, config, logs
from filewarden.client import Client, Unreachable
from filewarden.errors import ConfigError, FilewardenError
from filewarden.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    NOT_FOUND,
    PERMISSION_DENIED,
    RpcError,
)
from filewarden.report import human_size, missing_csv

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4, 5


def load_config(path: str | None, roots: Sequence[str] = ()) -> config.Config:
    """The config to run with: a file (--config, $FILEWARDEN_CONFIG, /etc) and/or --root."""
    file = config.find_config_file(path)
    if file is None:
        if not roots:
            raise ConfigError(
                f"no config file (--config, $FILEWARDEN_CONFIG or {config.DEFAULT_CONFIG})"
                " and no --root DIR given"
            )
        return config.embedded(roots)
    cfg = config.load(file)
    return config.with_roots(cfg, roots) if roots else cfg


def _with_log_flags(cfg: config.Config, args: argparse.Namespace) -> config.Config:
    """The config with ``--log-format`` and ``--log-level`` over its ``[log]``."""
    if not (args.log_level or args.log_format):
        return cfg
    return dataclasses.replace(
        cfg,
        log=config.LogConfig(
            format=args.log_format or cfg.log.format, level=args.log_level or cfg.log.level
        ),
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from filewarden.daemon import Daemon  # the client commands need none of the daemon

    cfg = load_config(args.config, args.root)
    if not cfg.roots:
        raise ConfigError(f"{cfg.source}: no [[root]] configured and no --root DIR given")
    cfg = _with_log_flags(cfg, args)
    logs.configure(cfg.log)
    try:
        fixed_log = {k: v for k, v in (("format", args.log_format), ("level", args.log_level)) if v}
        code = Daemon(cfg, fixed_roots=bool(args.root), fixed_log=fixed_log).run()
    except FilewardenError as exc:  # before the daemon could start (run() logs its own)
        logs.get().critical("daemon.stop", reason=str(exc))
        _exit_now_if_threads_linger(EXIT_FAILURE)
        return EXIT_FAILURE
    _exit_now_if_threads_linger(code)
    return code


def _exit_now_if_threads_linger(code: int) -> None:
    """After the stop deadline a worker may still be inside SQLite; do not wait for it."""
    if any(t.is_alive() and t is not threading.main_thread() for t in threading.enumerate()):
        sys.stderr.flush()
        os._exit(code)


def _cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.root)
    where = cfg.source or "built-in defaults"
    print(
        f"{where}: ok ({len(cfg.roots)} root{'s' if len(cfg.roots) != 1 else ''},"
        f" catalog in {cfg.daemon.state_dir}, socket {cfg.daemon.socket})"
    )
    for root in cfg.roots:
        extra = [f"mode={root.mode}"]
        if root.require_mountpoint:
            extra.append("require_mountpoint")
        if root.marker:
            extra.append(f"marker={root.marker}")
        if root.exclude:
            extra.append(f"exclude={list(root.exclude)}")
        print(f"  root {root.path} ({', '.join(extra)})")
    return EXIT_OK


def _fleet_config(args: argparse.Namespace) -> config.Config:
    """The config for ``ship`` and ``fleet``: the file if there is one (else the embedded
    default), with ``--dsn`` over its ``[ship] dsn``."""
    file = config.find_config_file(args.config)
    cfg = config.load(file) if file is not None else config.embedded([])
    if args.dsn:
        cfg = dataclasses.replace(cfg, ship=dataclasses.replace(cfg.ship, dsn=args.dsn))
    if not cfg.ship.dsn:
        raise ConfigError("no PostgreSQL to use: give --dsn or [ship] dsn in the config")
    return cfg


def _needs_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            "shipping to PostgreSQL needs psycopg: pip install 'filewarden[ship]'"
        ) from None


def _cmd_ship(args: argparse.Namespace) -> int:
    _needs_psycopg()
    from filewarden import ship

    cfg = _fleet_config(args)
    cfg = _with_log_flags(cfg, args)
    logs.configure(cfg.log)
    try:
        return ship.main(cfg, str(args.socket) if args.socket else None)
    except ship.ShipError as exc:
        print(f"filewarden: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_fleet(args: argparse.Namespace) -> int:
    _needs_psycopg()
    import psycopg

    from filewarden import fleet

    cfg = _fleet_config(args)
    try:
        with fleet.connect(cfg.ship.dsn) as conn:
            if args.fleet == "status":
                rows = fleet.status(conn)
            elif args.fleet == "missing":
                root = args.root and os.path.abspath(args.root)
                rows = fleet.missing(
                    conn,
                    root=root,
                    host=args.host,
                    older_than=args.older_than,
                    newer_than=args.newer_than,
                )
            else:
                rows = fleet.find(conn, args.target)
    except psycopg.OperationalError as exc:
        print(f"filewarden: cannot use PostgreSQL: {str(exc).strip()}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except psycopg.errors.UndefinedTable:
        print("filewarden: no fleet here yet (`filewarden ship` makes it)", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ValueError as exc:  # a duration
        print(f"filewarden: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "json", False):
        _print_json(rows)
    elif getattr(args, "csv", False):
        sys.stdout.write(missing_csv(rows, fleet.FLEET_CSV_FIELDS))
    elif args.fleet == "status":
        _table(
            [
                [
                    r["name"],
                    str(r["root"] or "-"),
                    str(r["state"] or "-"),
                    str(r["present"]),
                    str(r["missing"]),
                    str(r["offline"]),
                    str(r["behind"]),
                    f"{r['lag_seconds']:g}s",
                    f"{r['heard_s_ago']:g}s ago",
                ]
                for r in rows
            ],
            ["HOST", "ROOT", "STATE", "PRESENT", "MISSING", "OFFLINE", "BEHIND", "LAG", "HEARD"],
        )
    else:
        head = ["HOST", "ID", "STATE", "SIZE", "PATH"]
        if args.fleet == "missing":
            head = ["MISSING SINCE", "REASON", *head]
        elif rows and "match" in rows[0]:
            head = ["MATCH", *head]
        _table(
            [
                [
                    *(
                        [str(r["missing_since"]), str(r["missing_reason"])]
                        if args.fleet == "missing"
                        else []
                    ),
                    *([r["match"]] if "match" in r and args.fleet == "find" else []),
                    r["host_name"],
                    str(r["id"]),
                    r["state"],
                    human_size(r["size"]),
                    _show(r["path"]),
                ]
                for r in rows
            ],
            head,
        )
    if args.fleet == "find" and not rows:
        return EXIT_NOT_FOUND
    return EXIT_OK


def socket_path(args: argparse.Namespace) -> Path:
    """The socket a client command talks to: --socket, else the config's, else the per-user default."""
    return client.socket_path(args.socket or None, args.config)


def _client(args: argparse.Namespace) -> Client:
    return Client(socket_path(args), timeout=None if getattr(args, "wait", False) else 120.0)


_LONE_SURROGATE = re.compile("[\udc80-\udcff]")


def _print_json(value: object) -> None:
    """Readable JSON (UTF-8 as is) that stays valid UTF-8: names that are not
    UTF-8 keep their \\udcXX escapes instead of becoming raw bytes."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    print(_LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _show(text: str) -> str:
    """A path for a terminal line: control characters escaped, so a newline in a name cannot break the table."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


# --- client commands -------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        st = c.status()
    if args.json:
        _print_json(st)
        return EXIT_OK
    print(
        f"filewarden {st['version']}, pid {st['pid']}, up {_duration(st['uptime_s'])}, journal seq {st['seq']}"
    )
    rows = [
        [
            _show(r["path"]),
            r["state"] + (f" ({r['reason']})" if r.get("reason") else ""),
            r["backend"],
            str(r["files"]["present"]),
            str(r["files"]["missing"]),
            str(r["files"]["offline"]),
            r["last_sweep"] or "never",
        ]
        for r in st["roots"]
    ]
    _table(rows, ["ROOT", "STATE", "BACKEND", "PRESENT", "MISSING", "OFFLINE", "LAST SWEEP"])
    t = st["totals"]
    print(f"total: {t['present']} present, {t['missing']} missing, {t['offline']} offline")
    for job in st["jobs"]:
        total = f"/{job['total']}" if job["total"] is not None else ""
        print(
            f"job {job['id']}: {job['kind']} sweep of {_show(job['root'] or 'all')}: {job['state']}, {job['done']}{total} files"
        )
    for w in [*st["warnings"], *(f"{r['path']}: {w}" for r in st["roots"] for w in r["warnings"])]:
        print(f"warning: {_show(w)}")
    return EXIT_OK


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def _cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as c:
        target = args.target
        record = None
        if target.isdigit() and not os.path.lexists(target):
            record = c.file(int(target))
        else:
            path = os.path.abspath(target)
            found = c.lookup(path)
            if found is None:
                print(f"filewarden: {_show(path)} is not in the catalog", file=sys.stderr)
                return EXIT_NOT_FOUND
            record = c.file(found["id"])
    if args.json:
        _print_json(record)
        return EXIT_OK
    for key in (
        "id",
        "root",
        "path",
        "state",
        "size",
        "mtime_ns",
        "device",
        "inode",
        "hash",
        "first_seen",
        "last_seen",
        "missing_since",
        "missing_reason",
    ):
        value = record.get(key)
        if value is not None:
            print(f"{key:15} {_show(str(value))}")
    fingerprint = record.get("fingerprint")
    if fingerprint:
        print(
            f"{'fingerprint':15} {fingerprint['kind']} {fingerprint['value'] or '(none: did not parse)'}"
        )
    for key, value in sorted(record["annotations"].items()):
        print(f"annotation      {_show(key)} = {_show(value)}")
    print("history:")
    for entry in record["history"]:
        old = f"  (from {_show(entry.get('old_path') or '')})" if entry.get("old_path") else ""
        print(
            f"  {entry['seq']:>8}  {entry['time']}  {entry['kind']:8} {_show(entry['path'] or '')}{old}"
        )
    return EXIT_OK


def _all_files(
    c: Client, state: str, root: str | None, **ages: str | None
) -> list[dict[str, object]]:
    files: list[dict[str, object]] = []
    after = 0
    while True:
        params: dict[str, object] = {"state": state, "after_id": after, "limit": 10000}
        params.update({k: v for k, v in ages.items() if v})
        if root:
            params["root"] = os.path.abspath(root)
        page = c.call("list", params)
        files.extend(page["files"])
        if page["next_after_id"] is None:
            return files
        after = page["next_after_id"]


def _cmd_missing(args: argparse.Namespace) -> int:
    with _client(args) as c:
        files = _all_files(
            c, "missing", args.root, older_than=args.older_than, newer_than=args.newer_than
        )
    files.sort(key=lambda f: (str(f["missing_since"] or ""), int(f["id"])), reverse=True)  # type: ignore[call-overload]
    if args.json:
        _print_json(files)
    elif args.csv:
        # Names that are not UTF-8 keep their raw bytes (stdout uses
        # surrogateescape), so they round-trip.
        sys.stdout.write(missing_csv(files))
    else:
        rows = [
            [
                str(f["missing_since"]),
                str(f["missing_reason"]),
                str(f["id"]),
                human_size(f["size"]),  # type: ignore[arg-type]
                _show(str(f["path"])),
            ]
            for f in files
        ]
        _table(rows, ["MISSING SINCE", "REASON", "ID", "SIZE", "PATH"])
        if sys.stdout.isatty():
            print(f"{len(files)} missing")
    return EXIT_OK


def _cmd_offline(args: argparse.Namespace) -> int:
    with _client(args) as c:
        files = _all_files(c, "offline", args.root)
    if args.json:
        _print_json(files)
        return EXIT_OK
    by_root: dict[str, list[dict[str, object]]] = {}
    for f in files:
        by_root.setdefault(str(f["root"]), []).append(f)
    for root, group in sorted(by_root.items()):
        print(f"{_show(root)}: {len(group)} offline")
        for f in group:
            print(f"  {f['id']:>8}  {human_size(f['size']):>7}  {_show(str(f['path']))}")  # type: ignore[arg-type]
    return EXIT_OK


def _cmd_changes(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.changes(args.since, limit=args.limit)
    if args.json:
        _print_json(result)
        return EXIT_OK
    for ch in result["changes"]:
        old = f" (from {_show(ch.get('old_path') or '')})" if ch.get("old_path") else ""
        print(
            f"{ch['seq']:>8}  {ch['time']}  {ch['kind']:8} {ch['id'] if ch['id'] is not None else '-':>8}  "
            f"{_show(ch['path'] or '')}{old}"
        )
    print(f"seq {result['seq']}", file=sys.stderr)
    return EXIT_OK


def _cmd_annotate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.value is None and not args.delete:
            record = c.file(args.id)
            if args.key not in record["annotations"]:
                print(f"filewarden: file {args.id} has no annotation {args.key!r}", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(record["annotations"][args.key])
            return EXIT_OK
        c.call(
            "annotate",
            {"id": args.id, "key": args.key, "value": None if args.delete else args.value},
        )
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    params: dict[str, object]
    if args.id:
        params = {"ids": args.id}
    elif args.root:
        params = {"root": os.path.abspath(args.root)}
    elif args.older_than:
        params = {"older_than": args.older_than}
    else:
        params = {"all": True}
    with _client(args) as c:
        if sys.stdin.isatty() and not args.yes:
            what = (
                f"files {', '.join(map(str, args.id))}"
                if args.id
                else f"the retired root {args.root} and every file it had"
                if args.root
                else f"every file missing for more than {args.older_than}"
                if args.older_than
                else "every missing file"
            )
            answer = input(f"Purge {what} from the catalog, with their annotations? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged", file=sys.stderr)
                return EXIT_FAILURE
        result = c.call("purge", params)
    print(f"purged {result['purged']}")
    for refused in result["refused"]:
        print(f"not purged: {refused['id']}: {refused['reason']}", file=sys.stderr)
    return EXIT_OK if not result["refused"] else EXIT_FAILURE


def _cmd_candidates(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.candidates(args.id, limit=args.limit)
    if args.json:
        _print_json(result)
        return EXIT_OK
    gone = result["file"]
    print(f"{gone['id']}  {gone['state']:8} {_show(gone['path'])}")
    if not result["candidates"]:
        print("no likely successor")
        return EXIT_OK
    for found in result["candidates"]:
        why = ", ".join(found["evidence"]) or "-"
        print(f"  {found['id']:>8}  {_show(found['path'])}  ({why})")
    return EXIT_OK


def _cmd_relink(args: argparse.Namespace) -> int:
    with _client(args) as c:
        record = c.relink(args.missing_id, args.present_id)
    print(f"{record['id']}: {_show(record['path'])} (id {args.present_id} retired into it)")
    return EXIT_OK


def _cmd_scan(args: argparse.Namespace) -> int:
    params: dict[str, object] = {}
    if args.root:
        params["root"] = os.path.abspath(args.root)
    with _client(args) as c:
        if args.wait and sys.stderr.isatty():
            jobs = c.call("scan", params)["jobs"]
            ids = {j["id"] for j in jobs}
            while True:
                table = {j["id"]: j for j in c.jobs() if j["id"] in ids}
                _progress(list(table.values()))
                if all(j["state"] not in ("queued", "running") for j in table.values()):
                    break
                time.sleep(0.25)  # a progress bar refreshes on a clock
            sys.stderr.write("\n")
            jobs = list(table.values())
        else:
            jobs = c.call("scan", {**params, "wait": args.wait})["jobs"]
    for job in jobs:
        counts = (
            ", ".join(f"{k} {v}" for k, v in job["counts"].items() if v) if job["counts"] else ""
        )
        print(
            f"job {job['id']}: {job['kind']} sweep of {_show(job['root'])}: {job['state']}"
            + (f" ({counts})" if counts else "")
            + (f": {job['error']}" if job.get("error") else "")
        )
    return (
        EXIT_OK if all(j["state"] in ("done", "queued", "running") for j in jobs) else EXIT_FAILURE
    )


def _progress(jobs: list[dict[str, object]]) -> None:
    done = sum(int(j["done"]) for j in jobs)  # type: ignore[call-overload]
    totals = [j["total"] for j in jobs]
    if all(t is not None for t in totals) and sum(totals):  # type: ignore[arg-type]
        total = sum(totals)  # type: ignore[arg-type]
        width = 30
        filled = min(width, int(width * done / total))
        bar = "=" * filled + ">" * (filled < width) + " " * (width - filled - 1)
        sys.stderr.write(f"\r[{bar}] {done}/{total} files")
    else:
        sys.stderr.write(f"\rindexing: {done} files")
    sys.stderr.flush()


def _cmd_accept_root(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.accept_root(os.path.abspath(args.root))
    if result["state"] == "online":
        print(f"{_show(result['root'])}: accepted; online")
        return EXIT_OK
    print(
        f"{_show(result['root'])}: accepted, but still offline: {_show(result['reason'] or '')}",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def _cmd_metrics(args: argparse.Namespace) -> int:
    with _client(args) as c:
        text = c.metrics()
    if args.output:
        # Whole or not at all, as node_exporter's textfile collector must read it.
        tmp = f"{args.output}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_web_token(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.list:
            rows = [
                [str(t["id"]), t["role"], t["created"], t["revoked"] or "-", _show(t["label"])]
                for t in c.web_tokens()
            ]
            _table(rows, ["ID", "ROLE", "CREATED", "REVOKED", "LABEL"])
        elif args.revoke is not None:
            c.revoke_web_token(args.revoke)
            print(f"token {args.revoke} revoked")
        else:
            made = c.web_token("admin" if args.admin else "reader", args.label)
            print(made["token"])
            if sys.stderr.isatty():
                print(f"(token {made['id']}, {made['role']}: shown once)", file=sys.stderr)
    return EXIT_OK


def _cmd_sync(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.call("sync", {"timeout_s": args.timeout})
    print(f"in sync at seq {result['seq']}")
    return EXIT_OK


def _missing_filters(p: argparse.ArgumentParser) -> None:
    """What `missing` and `fleet missing` both take: a root, ages, and the output format."""
    p.add_argument("--root", metavar="R")
    p.add_argument(
        "--older-than", metavar="DURATION", help='missing for longer than this, e.g. "30d"'
    )
    p.add_argument("--newer-than", metavar="DURATION", help='missing for less than this, e.g. "1h"')
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="RFC 4180 CSV with a header row")
    fmt.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filewarden", description="A stable-id catalog of the files under your roots."
    )
    parser.add_argument("--version", action="version", version=f"filewarden {__version__}")
    # Also before the command, as users type them (`filewarden --socket S status`);
    # their own dests, or a subcommand's default None would hide them.
    parser.add_argument("--socket", dest="socket_first", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--config", dest="config_first", metavar="FILE", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $FILEWARDEN_CONFIG, /etc/filewarden/config.toml)",
    )
    run.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DIR",
        help="a root to watch (repeatable); replaces the config's roots",
    )
    run.add_argument("--log-format", choices=("auto", "console", "json"))
    run.add_argument("--log-level", choices=config.LEVELS)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="check a config file and print what it means")
    check.add_argument("--config", metavar="FILE")
    check.add_argument("--root", action="append", default=[], metavar="DIR")
    check.set_defaults(func=_cmd_check_config)

    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's socket (default: from the config, else per user)",
    )
    conn.add_argument("--config", metavar="FILE", help="read the socket path from this config file")

    def client(name: str, help: str, func: object) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[conn])
        p.set_defaults(func=func)
        return p

    p = client("status", "roots, states, counts, last sweeps, warnings", _cmd_status)
    p.add_argument("--json", action="store_true")
    p = client("info", "everything about one file, by path or id, with its history", _cmd_info)
    p.add_argument("target", metavar="PATH|ID")
    p.add_argument("--json", action="store_true")
    p = client("missing", "list missing files, newest first", _cmd_missing)
    _missing_filters(p)
    p = client("offline", "list files of offline roots, per root", _cmd_offline)
    p.add_argument("--root", metavar="R")
    p.add_argument("--json", action="store_true")
    p = client("changes", "the journal since a seq", _cmd_changes)
    p.add_argument("--since", type=int, default=0, metavar="N")
    p.add_argument("--limit", type=int, default=1000, metavar="N")
    p.add_argument("--json", action="store_true")
    p = client("annotate", "show, set or remove an annotation of a file", _cmd_annotate)
    p.add_argument("id", type=int)
    p.add_argument("key")
    p.add_argument("value", nargs="?")
    p.add_argument("--delete", action="store_true", help="remove the key")
    p = client("purge", "delete missing files from the catalog for good (admin)", _cmd_purge)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, nargs="+", metavar="N")
    which.add_argument("--older-than", metavar="DURATION", help='e.g. "30d"')
    which.add_argument("--all", action="store_true")
    which.add_argument(
        "--root", metavar="PATH", help="a root removed from the config: drop it and all its files"
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = client(
        "candidates",
        "files that may be what a missing file became: same stem, tags, duration, size of image",
        _cmd_candidates,
    )
    p.add_argument("id", type=int)
    p.add_argument("--limit", type=int, default=20, metavar="N")
    p.add_argument("--json", action="store_true")
    p = client(
        "relink",
        "confirm that a present file is what a missing one became: it takes the missing id (admin)",
        _cmd_relink,
    )
    p.add_argument("missing_id", type=int, metavar="MISSING_ID")
    p.add_argument("present_id", type=int, metavar="PRESENT_ID")
    p = client("scan", "full sweep of one root or all, now", _cmd_scan)
    p.add_argument("root", nargs="?", metavar="ROOT")
    p.add_argument(
        "--wait", action="store_true", help="wait for the end (progress bar on a terminal)"
    )
    p = client(
        "accept-root",
        "take the filesystem now mounted at ROOT as that root's volume (admin)",
        _cmd_accept_root,
    )
    p.add_argument("root", metavar="ROOT")
    p = client("metrics", "Prometheus metrics, in the text format", _cmd_metrics)
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write FILE atomically (e.g. for node_exporter's textfile collector)",
    )
    p = client(
        "web-token",
        "print a new token for the web page (reader; --admin for an admin's), list or revoke them",
        _cmd_web_token,
    )
    p.add_argument("--admin", action="store_true", help="a token that may remove files (admins)")
    p.add_argument("--label", help="what the token is for (shown on the page and in --list)")
    p.add_argument("--list", action="store_true", help="every token made")
    p.add_argument("--revoke", type=int, metavar="ID", help="revoke a token (admins)")
    p = client(
        "ship",
        "follow the journal into a fleet's PostgreSQL ([ship] dsn), until stopped",
        _cmd_ship,
    )
    p.add_argument("--dsn", help="libpq connection string or URI (default: [ship] dsn)")
    p.add_argument("--log-format", choices=("auto", "console", "json"))
    p.add_argument("--log-level", choices=config.LEVELS)
    fleet = sub.add_parser("fleet", help="ask the fleet's PostgreSQL: status, missing, find")
    fleet_sub = fleet.add_subparsers(dest="fleet", required=True, metavar="QUESTION")
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--config", metavar="FILE", help="read [ship] dsn from this config file")
    base.add_argument("--dsn", help="libpq connection string or URI (default: [ship] dsn)")
    p = fleet_sub.add_parser(
        "status", help="hosts, roots and counts, each host's lag", parents=[base]
    )
    p.add_argument("--json", action="store_true")
    p = fleet_sub.add_parser(
        "missing", help="missing files on every host, newest first", parents=[base]
    )
    _missing_filters(p)
    p.add_argument("--host", metavar="NAME|UUID")
    p = fleet_sub.add_parser(
        "find",
        help="where a file is (a path), or its content (a hash, or a path's), on any host",
        parents=[base],
    )
    p.add_argument("target", metavar="PATH|HASH")
    p.add_argument("--json", action="store_true")
    fleet.set_defaults(func=_cmd_fleet, socket=None)
    p = client("sync", "wait until the catalog has every change made on disk before now", _cmd_sync)
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Names that are not UTF-8 go out as their own bytes, not as an exception.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("socket", "config"):
        if getattr(args, name, None) is None and getattr(args, f"{name}_first") is not None:
            setattr(args, name, getattr(args, f"{name}_first"))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"filewarden: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"filewarden: {exc} (is `filewarden run` running?)", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RpcError as exc:
        print(f"filewarden: {exc.message}", file=sys.stderr)
        return _RPC_EXIT.get(exc.code, EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK  # the reader (head, less) had enough


_RPC_EXIT = {
    PERMISSION_DENIED: EXIT_DENIED,
    NOT_FOUND: EXIT_NOT_FOUND,
    INVALID_PARAMS: EXIT_USAGE,
    INVALID_REQUEST: EXIT_USAGE,
}
