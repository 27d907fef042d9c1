"""A real daemon process for tests and benchmarks: its config, its process, its log, its socket.

Like ``structlog.testing``, this ships with the package so that the tests
and the benchmarks drive the daemon the same way: ``write_config`` writes a
TOML file with no periodic sweeps, ``Setup.start`` runs ``python -m
filewarden run`` on it with JSON logs going to a file, ``DaemonProcess``
reads that log as the daemon writes it and waits for events, and ``Live``
asks the socket (``filewarden.client``) and pages ``list`` and ``changes``
to the end. ``Postgres`` is a private PostgreSQL server for ``filewarden
ship``. It imports only filewarden's socket client, never the daemon's
own modules: it sees the daemon from outside, as a user's program does.
"""

from filewarden.testing._config import QUIET_SWEEPS, Setup, write_config
from filewarden.testing._live import Live, changes, files, regular_files
from filewarden.testing._postgres import Postgres
from filewarden.testing._process import DaemonProcess, NotifyListener, Record, log_time

__all__ = [
    "QUIET_SWEEPS",
    "DaemonProcess",
    "Live",
    "NotifyListener",
    "Postgres",
    "Record",
    "Setup",
    "changes",
    "files",
    "log_time",
    "regular_files",
    "write_config",
]
