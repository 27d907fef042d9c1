"""The Unix socket server: JSON-RPC 2.0 over lines, many clients, never blocking the writer.

An asyncio loop in its own thread owns the connections; each request runs
in a worker thread with its own read connection, so a slow client or a
long query holds neither the loop nor the writer. Requests of one
connection are answered in order, pipelined or not. A client that sends
half a line and stalls, or nothing at all for too long, is dropped; one that
sends a line over 1 MiB gets an error and is dropped; one that does not read
its answers is dropped when its send buffer stays full.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import socket
import stat
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from filewarden import logs, protocol
from filewarden.api import MAX_WAIT, Api, Peer, changes_key
from filewarden.dirs import prepare_dir
from filewarden.errors import FilewardenError
from filewarden.protocol import INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError

log = logs.get("filewarden.server")

READ_CHUNK = 65536
NEAR_HEAD = 64  # a subscriber this close to the journal's end reads on the loop
HELD_CHUNK = 8  # held changes calls woken at a time (see _wake_some)
HELD_SETTLE = 0.02  # seconds from a commit to the held changes calls' answers (see _wake_waiters)
# Bytes waiting in a connection's buffer before an answer waits for the client to
# read (the kernel's socket buffer takes most answers at once).
DRAIN_ABOVE = 64 * 1024
MAX_CLIENTS = 512
# Methods that may wait (for the writer, a sweep, a cookie) run on their own
# threads so that a hundred waiting clients never starve quick reads.
WAITING_METHODS = frozenset({"sync", "scan", "annotate", "purge", "accept_root", "relink"})


class SocketInUse(FilewardenError):
    """Another live daemon serves the socket path, or the path is not a socket."""


def bind_unix_socket(path: Path, mode: int, group: str) -> socket.socket:
    """Bind and listen on ``path`` with ``mode`` and ``group``, replacing only a stale socket.

    The mode and group are set between bind and listen: nobody can connect
    before they are right.
    """
    prepare_dir(path.parent, 0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(os.fspath(path))
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # left by a daemon that died: nobody listens
        except OSError as exc:
            raise SocketInUse(
                f"{path}: cannot tell whether another daemon serves it: {exc}"
            ) from None
        else:
            raise SocketInUse(f"another filewarden is already serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, mode)
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise FilewardenError(f"socket_group {group!r}: no such group") from None
            os.chown(path, -1, gid)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class AdminCheck:
    """Who may purge: root, the daemon's own user, and members of ``admin_group``."""

    def __init__(self, admin_group: str) -> None:
        self.gid: int | None = None
        self.members: frozenset[str] = frozenset()
        if admin_group:
            try:
                entry = grp.getgrnam(admin_group)
            except KeyError:
                log.error(
                    "socket.error",
                    error=f"admin_group {admin_group!r} does not exist; only root may purge",
                )
            else:
                self.gid, self.members = entry.gr_gid, frozenset(entry.gr_mem)

    def __call__(self, pid: int, uid: int, gid: int) -> bool:
        if uid == 0 or uid == os.geteuid():
            return True
        if self.gid is None:
            return False
        if gid == self.gid or self.gid in _process_groups(pid):
            return True
        try:
            return pwd.getpwuid(uid).pw_name in self.members
        except KeyError:
            return False


def _process_groups(pid: int) -> set[int]:
    """The supplementary groups of a live process (what it really has, not /etc/group)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


class Server:
    """Serves the API on a listening Unix socket until stopped."""

    def __init__(
        self,
        api: Api,
        sock: socket.socket,
        *,
        admin: AdminCheck,
        request_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        owns_path: Path | None = None,
    ) -> None:
        self.api = api
        self.sock = sock
        self.admin = admin
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.owns_path = owns_path  # unlinked at stop; None for a socket passed by systemd
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="filewarden-server", daemon=True)
        self._ready = threading.Event()
        self._quick = ThreadPoolExecutor(4, thread_name_prefix="filewarden-read")
        self._slow = ThreadPoolExecutor(64, thread_name_prefix="filewarden-wait")
        # Subscriptions read the journal here, not behind a crowd of quick reads.
        self._feed = ThreadPoolExecutor(2, thread_name_prefix="filewarden-feed")
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0
        # Set (and replaced) at each commit that moved the journal: every
        # client waiting for changes wakes once, on the loop, holding no thread.
        self._serving = False  # the loop runs: commits may be handed to it
        self._streaming_moved = asyncio.Event()  # the same, for subscriptions
        self._held_wake_due = False
        self._held: list[asyncio.Future[None]] = []  # changes calls held, in arrival order
        self._waking: list[asyncio.Future[None]] = []  # those a commit woke, chunk by chunk
        self.waiting = 0  # changes calls held now
        self.subscribers = 0  # connections streaming the journal now
        self._reading: dict[Any, asyncio.Future[Any]] = {}  # changes reads under way
        self.errors = 0  # error answers, ever
        api.writer.listen(self._on_commit)
        api.serving = self.stats

    def stats(self) -> dict[str, int]:
        """For ``status``: clients connected, ``changes`` calls held, requests and errors."""
        return {
            "clients": len(self._clients),
            "waiting": self.waiting,
            "subscribers": self.subscribers,
            "requests": self.requests,
            "errors": self.errors,
        }

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 3.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout)
        self._quick.shutdown(wait=False, cancel_futures=True)
        self._slow.shutdown(wait=False, cancel_futures=True)
        self._feed.shutdown(wait=False, cancel_futures=True)
        if self.owns_path is not None:
            try:
                os.unlink(self.owns_path)
            except FileNotFoundError:
                pass

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()

        async def settle() -> None:
            # The cancelled clients close their connections; give them 0.2 s, no more.
            if clients:
                await asyncio.wait(clients, timeout=0.2)
            self.loop.stop()

        self.loop.create_task(settle())

    def _on_commit(self, seq: int) -> None:
        """Writer thread: hand the news to the loop (never blocks)."""
        if self._serving and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._wake_waiters)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake_waiters(self) -> None:
        """Subscribers at once (each reads its few new entries on the loop and sends
        them); the held ``changes`` calls ``HELD_SETTLE`` later, once for every commit
        in between, as watchman's ``settle`` does. Each held call costs the loop a
        read and a write: a hundred of them woken at every commit of a stream of
        renames would stand between each commit and the next one's notifications
        (measured: rename to notification went from 1.5 to 22 ms, p50)."""
        streaming, self._streaming_moved = self._streaming_moved, asyncio.Event()
        streaming.set()
        if not self._held_wake_due:  # commits within HELD_SETTLE wake them once
            self._held_wake_due = True
            self.loop.call_later(HELD_SETTLE, self._wake_held)

    def _wake_held(self) -> None:
        self._held_wake_due = False
        self._waking += self._held
        self._held = []
        self._wake_some()

    def _wake_some(self) -> None:
        """Wake ``HELD_CHUNK`` held calls, then let the loop run what else is ready (a
        subscriber's notification, a lookup) before the next chunk."""
        chunk, self._waking = self._waking[:HELD_CHUNK], self._waking[HELD_CHUNK:]
        for waiter in chunk:
            if not waiter.done():
                waiter.set_result(None)
        if self._waking:
            self.loop.call_soon(self._wake_some)

    async def _wait_for_changes(self, params: dict[str, Any]) -> None:
        """Hold a ``changes`` call with ``wait`` until the journal moves past ``since``,
        or the wait ends. Malformed params are left to the method to refuse."""
        since, wait = params.get("since"), params.get("wait")
        if not isinstance(since, int) or not isinstance(wait, int | float) or wait <= 0:
            return
        if params.get("instance") not in (None, self.api.instance):
            return  # a reset to tell at once
        deadline = self.loop.time() + min(float(wait), MAX_WAIT)
        writer = self.api.writer
        self.waiting += 1
        try:
            while since == writer.seq:
                left = deadline - self.loop.time()
                if left <= 0:
                    return
                waiter: asyncio.Future[None] = self.loop.create_future()
                self._held.append(waiter)
                try:
                    async with asyncio.timeout(left):  # no task of its own, unlike wait_for
                        await waiter
                except TimeoutError:
                    return
                finally:
                    if not waiter.done():
                        waiter.cancel()  # skipped when its turn comes
        finally:
            self.waiting -= 1

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._serving = True

        async def serve() -> None:
            self._server = await asyncio.start_unix_server(
                self._client, sock=self.sock, limit=READ_CHUNK
            )

        self.loop.run_until_complete(serve())
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except TimeoutError:
            # It stopped reading its answers: dropped, as a stalled client is.
            log.debug("socket.timeout", reason="answers not read")
        except Exception as exc:  # one connection's trouble never stops the server
            log.error("socket.error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._clients.discard(task)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        peer = Peer(pid, uid, gid, self.admin(pid, uid, gid))
        buffer = bytearray()
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > protocol.MAX_LINE:
                    await self._send(
                        writer,
                        protocol.error_response(
                            None,
                            RpcError(protocol.INVALID_REQUEST, "request line over 1 MiB; closing"),
                        ),
                    )
                    return
                # A started line must be finished soon; an idle connection may wait longer.
                timeout = self.request_timeout if buffer else self.idle_timeout
                try:
                    async with asyncio.timeout(timeout):
                        chunk = await reader.read(READ_CHUNK)
                except TimeoutError:
                    log.debug("socket.timeout", pid=pid, uid=uid, partial=len(buffer))
                    return
                if not chunk:
                    if buffer.strip():  # a last line without its newline
                        await self._answer(writer, bytes(buffer), peer)
                    return
                buffer += chunk
                continue
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if len(line) > protocol.MAX_LINE:
                await self._send(
                    writer,
                    protocol.error_response(
                        None, RpcError(protocol.INVALID_REQUEST, "request line over 1 MiB; closing")
                    ),
                )
                return
            if line.strip():
                if b'"subscribe"' in line and await self._subscribe(reader, writer, line):
                    return  # a subscription holds the connection to its end
                await self._answer(writer, line, peer)

    async def _subscribe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes
    ) -> bool:
        """Stream the journal as ``change`` notifications, in seq order; False if ``line``
        is not a ``subscribe`` request after all.

        Flow control is the socket's: a subscriber that stops reading is
        dropped once its answers stop draining (``client_request_timeout``),
        and resumes from its cursor. A cursor that cannot be served ends the
        subscription with a ``reset`` notification.
        """
        try:
            request_id, method, params, _ = protocol.parse_request(line)
        except RpcError:
            return False
        if method != "subscribe":
            return False
        self.requests += 1
        try:
            spec = await self.loop.run_in_executor(self._quick, self.api.subscription, params)
        except RpcError as exc:
            await self._send(writer, self._error(request_id, exc))
            return True
        await self._send(
            writer,
            protocol.response(
                request_id, {"subscribed": True, "seq": spec.since, "instance": spec.instance}
            ),
        )
        self.subscribers += 1
        # What the subscriber sends is read and let go; its end ends the subscription.
        gone = asyncio.ensure_future(_read_to_end(reader))
        cursor = spec.since
        try:
            while not gone.done():
                moved = self._streaming_moved
                if self.api.writer.seq - cursor <= NEAR_HEAD:
                    # A few new entries: read here, at once (a fraction of a millisecond).
                    batch = self.api.feed_batch(spec, cursor)
                else:  # catching up: thousands of entries, read off the loop
                    batch = await self.loop.run_in_executor(
                        self._feed, self.api.feed_batch, spec, cursor
                    )
                if batch.reset is not None:
                    note = {"reason": batch.reset, "seq": batch.seq, "instance": spec.instance}
                    await self._send(writer, protocol.notification("reset", note))
                    return True
                for entry in batch.entries:
                    await self._send(writer, protocol.notification("change", entry))
                cursor = batch.seq
                if batch.more:
                    continue
                news = asyncio.ensure_future(moved.wait())
                await asyncio.wait({gone, news}, return_when=asyncio.FIRST_COMPLETED)
                news.cancel()
        finally:
            self.subscribers -= 1
            gone.cancel()
        return True

    async def _answer(self, writer: asyncio.StreamWriter, line: bytes, peer: Peer) -> None:
        reply = await self._dispatch(line, peer)
        if reply is not None:
            await self._send(writer, reply)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        # A client that does not read its answers is dropped, not waited for.
        if writer.transport.get_write_buffer_size() > DRAIN_ABOVE:
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()

    async def _dispatch(self, line: bytes, peer: Peer) -> bytes | None:
        self.requests += 1
        try:
            request_id, method, params, notification = protocol.parse_request(line)
        except RpcError as exc:
            request_id = exc.data.get("id") if isinstance(exc.data, dict) else None
            return self._error(request_id, RpcError(exc.code, exc.message))
        handler = self.api.methods.get(method)
        if handler is None:
            error = RpcError(METHOD_NOT_FOUND, f"unknown method {method!r}")
            return None if notification else self._error(request_id, error)
        slow = method in WAITING_METHODS or (method == "lookup" and params.get("verify"))
        if method == "changes" and params.get("wait"):
            await self._wait_for_changes(params)
        try:
            if method == "changes":
                result: Any = await self._changes(params, peer)
            else:
                result = await self.loop.run_in_executor(
                    self._slow if slow else self._quick, handler, params, peer
                )
        except RpcError as exc:
            return None if notification else self._error(request_id, exc)
        except Exception as exc:  # a bug answers -32603 and is logged; the server goes on
            log.exception("socket.error", method=method, error=f"{type(exc).__name__}: {exc}")
            error = RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            return None if notification else self._error(request_id, error)
        return None if notification else protocol.response(request_id, result)

    async def _changes(self, params: dict[str, Any], peer: Peer) -> Any:
        """A ``changes`` answer, read once for every caller with the same params after the
        same commit: a crowd woken by one commit shares one read (single flight)."""
        shared = self.api.cached_changes(params)
        if shared is not None:
            return shared
        key = (changes_key(params), self.api.writer.seq)
        if key[0] is None:
            return await self.loop.run_in_executor(self._quick, self.api.changes, params, peer)
        pending = self._reading.get(key)
        if pending is None:
            pending = self.loop.run_in_executor(self._quick, self.api.changes, params, peer)
            self._reading[key] = pending
            pending.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(pending)

    def _error(self, request_id: Any, error: RpcError) -> bytes:
        self.errors += 1
        return protocol.error_response(request_id, error)


async def _read_to_end(reader: asyncio.StreamReader) -> None:
    """Read and drop what a subscriber sends, until it closes its end."""
    while await reader.read(READ_CHUNK):
        pass
