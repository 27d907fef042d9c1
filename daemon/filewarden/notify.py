"""The systemd service protocols: sd_notify, the watchdog, and socket activation.

The few lines of each protocol (sd_notify(3), sd_listen_fds(3)) rather than
a dependency: a datagram to $NOTIFY_SOCKET, and fd 3 when $LISTEN_PID is us.
Outside systemd every call here is a no-op.
"""

from __future__ import annotations

import os
import socket

from filewarden import logs

log = logs.get("filewarden.notify")

LISTEN_FDS_START = 3


class Notifier:
    """Sends state lines to systemd, if it asked for them."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address or None
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6
        # Children must not talk to systemd as if they were us.
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(name, None)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; False when nobody listens or the send failed."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
            return True
        except OSError as exc:
            log.warning("daemon.notify_failed", error=exc.strerror or str(exc))
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def listen_socket() -> socket.socket | None:
    """The listening socket passed by socket activation, or None.

    Honoured only when $LISTEN_PID is this process; the variables are then
    removed so nothing started later believes it was activated.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if pid != str(os.getpid()) or not count or not count.isdigit() or int(count) < 1:
        return None
    if int(count) > 1:
        log.error(
            "socket.error", error=f"{count} sockets passed; using the first (fd {LISTEN_FDS_START})"
        )
    sock = socket.socket(fileno=LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(f"the passed socket (fd {LISTEN_FDS_START}) is not a Unix stream socket")
    os.set_inheritable(LISTEN_FDS_START, False)
    return sock
