"""The ``filewarden`` command: ``run`` the daemon, and the client commands.

Exit codes (the contract): 0 ok, 1 failure, 2 usage or config error,
3 daemon unreachable, 4 permission denied, 5 not found.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
from collections.abc import Sequence

from filewarden import __version__, config, logs
from filewarden.errors import CatalogError, ConfigError

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


def _cmd_run(args: argparse.Namespace) -> int:
    from filewarden.daemon import Daemon  # the client commands need none of the daemon

    cfg = load_config(args.config, args.root)
    if not cfg.roots:
        raise ConfigError(f"{cfg.source}: no [[root]] configured and no --root DIR given")
    if args.log_level or args.log_format:
        cfg = dataclasses.replace(
            cfg,
            log=config.LogConfig(
                format=args.log_format or cfg.log.format, level=args.log_level or cfg.log.level
            ),
        )
    logs.configure(cfg.log)
    try:
        code = Daemon(cfg).run()
    except CatalogError as exc:
        logs.get().critical("daemon.stop", reason=str(exc))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filewarden", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"filewarden {__version__}")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"filewarden: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
