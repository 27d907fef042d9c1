"""Structured logging: one event per line, JSON for machines, console for people.

Event names are stable dotted names (``sweep.finish``); the catalogue is in
the README. Paths are bytes inside filewarden and are decoded here, at the
edge, with ``surrogateescape`` so a name that is not UTF-8 still logs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

from filewarden import log_events
from filewarden.config import LogConfig

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


_PLAIN = (str, int, float, type(None))


def _edge_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Decode bytes and paths so every renderer gets plain strings."""
    for key, value in event.items():
        if isinstance(value, _PLAIN):
            continue  # most values: spared the PathLike check, an ABC's and slow
        if isinstance(value, bytes):
            event[key] = os.fsdecode(value)
        elif isinstance(value, os.PathLike):
            event[key] = os.fspath(value)
    return event


def _contract_order(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Put ``timestamp``, ``level``, ``event`` first, as the contract lists them."""
    head = {k: event.pop(k) for k in ("timestamp", "level", "event") if k in event}
    head.update(event)
    return head


# What the catalogue check found since the process started (tests assert it stays empty).
UNCATALOGUED: list[str] = []


def _check_catalogue(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """An event, level or field that the catalogue (log_events.py) does not list is marked.

    The line is still written, with ``uncatalogued`` saying what is wrong:
    monitoring sees it, and tests fail on it.
    """
    wrong = log_events.problem(str(event.get("event")), str(event.get("level")), event)
    if wrong is not None:
        UNCATALOGUED.append(wrong)
        event["uncatalogued"] = wrong
    return event


def configure(config: LogConfig, stream: TextIO | None = None) -> None:
    """Set up structlog for the daemon; may be called again (reload)."""
    out = stream or sys.stderr
    fmt = config.format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        # ensure_ascii keeps lone surrogates (non-UTF-8 names) as \\udcXX escapes:
        # the line stays valid JSON and valid UTF-8.
        renderer = structlog.processors.JSONRenderer(ensure_ascii=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _check_catalogue,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _edge_values,
            _contract_order,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, _LineWriter(out))),
        # Not cached by structlog: a reload that changes the level must reach module
        # loggers. Each module's logger is made again after this instead (_Logger).
        cache_logger_on_first_use=False,
    )
    reconfigured()
    # Libraries log through the standard library (watchdog does) and Python
    # warns on stderr: both become catalogue events, so every line stays JSON.
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


class _ToStructlog(logging.Handler):
    """Standard-library log records as ``daemon.library`` events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger("library")
            method = getattr(logger, record.levelname.lower(), logger.warning)
            method("daemon.library", logger=record.name, message=record.getMessage())
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


class _LineWriter:
    """A file-like that writes each message in one write call and flushes.

    Several threads log at once; one write per line keeps lines whole for
    journald and for tests reading the stream.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, message: str) -> None:
        try:
            self.out.write(message + "\n" if not message.endswith("\n") else message)
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream must never stop the daemon

    def flush(self) -> None:
        pass


_generation = 0  # structlog configurations so far


def reconfigured() -> None:
    """structlog was configured anew (:func:`configure` says so itself; code that calls
    ``structlog.configure`` or ``capture_logs`` directly must): loggers are made again."""
    global _generation
    _generation += 1


class _Logger:
    """A module's logger, made once per configuration.

    structlog's lazy proxy, uncached, binds a new logger on every call:
    a third of what a log line cost (16 of 46 us).
    """

    __slots__ = ("_logger", "_made_for", "_name")

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._logger: Any = None
        self._made_for = -1

    def __getattr__(self, attr: str) -> Any:
        if self._made_for != _generation:
            proxy = structlog.get_logger(self._name) if self._name else structlog.get_logger()
            self._logger, self._made_for = proxy.bind(), _generation
        return getattr(self._logger, attr)


def get(name: str | None = None) -> Any:
    """A logger; module loggers are cheap to create and follow reconfiguration."""
    return _Logger(name)
