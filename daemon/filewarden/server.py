"""The Unix socket server: JSON-RPC 2.0 over lines, many clients, never blocking the writer.

An asyncio loop in its own thread owns the connections (a protocol object
each, :class:`Connection`). What is cheap is answered on the loop itself: a
``changes`` call held until a commit or answered from the answer its
neighbours got, and a ``lookup`` of one path. Every other request runs in a
worker thread with its own read connection, so a slow client or a long
query holds neither the loop nor the writer. Requests of one connection
are answered in order, pipelined or not. A client that sends
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from filewarden import logs, protocol
from filewarden.api import MAX_WAIT, Api, Peer, changes_key
from filewarden.dirs import prepare_dir
from filewarden.errors import FilewardenError
from filewarden.protocol import INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError

log = logs.get("filewarden.server")

NEAR_HEAD = 64  # a subscriber this close to the journal's end reads on the loop
HELD_CHUNK = 8  # held changes calls answered at a time (see _answer_some)
HELD_SETTLE = 0.1  # seconds from a commit to the held changes calls' answers (see _wake_waiters)
HELD_GAP = 0.003  # seconds between two chunks of them
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
        self._conns: set[Connection] = set()
        self.requests = 0
        self._serving = False  # the loop runs: commits may be handed to it
        # Set (and replaced) at each commit that moved the journal: every
        # subscription wakes once, on the loop, holding no thread.
        self._streaming_moved = asyncio.Event()
        self._held_wake_due = False
        self._held: list[_Held] = []  # changes calls held, in arrival order
        self._waking: list[_Held] = []  # those a commit woke, answered chunk by chunk
        self._woken_answers: dict[Any, Any] = {}  # what those got, by params
        self.waiting = 0  # changes calls held now
        self.subscribers = 0  # connections streaming the journal now
        self._reading: dict[Any, asyncio.Future[Any]] = {}  # changes reads under way
        self.errors = 0  # error answers, ever
        api.writer.listen(self._on_commit)
        api.serving = self.stats

    def stats(self) -> dict[str, int]:
        """For ``status``: clients connected, ``changes`` calls held, requests and errors."""
        return {
            "clients": len(self._conns),
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
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            conn.close()

        async def settle() -> None:
            # The connections' requests under way end; give them 0.2 s, no more.
            if tasks:
                await asyncio.wait(tasks, timeout=0.2)
            self.loop.stop()

        self.loop.create_task(settle())

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._serving = True

        async def serve() -> None:
            self._server = await self.loop.create_unix_server(
                lambda: Connection(self), sock=self.sock
            )

        self.loop.run_until_complete(serve())
        reaper = self.loop.create_task(self._reap())
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            reaper.cancel()
            self.loop.close()

    async def _reap(self) -> None:
        """Drop the connections whose next bytes are overdue: a started line not finished
        within ``request_timeout``, or nothing at all for ``idle_timeout``. One timer for
        all of them, not one a read."""
        tick = max(0.05, min(1.0, self.request_timeout / 4, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for conn in list(self._conns):
                if conn.due < now:
                    log.debug(
                        "socket.timeout", pid=conn.peer.pid, uid=conn.peer.uid, partial=conn.partial
                    )
                    conn.close()

    # -- the feed: held changes calls and subscriptions --------------------------------

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
        in between, as watchman's ``settle`` does, and spread: ``HELD_CHUNK`` at a
        time, ``HELD_GAP`` apart. A hundred held calls answered at once keep the
        loop, and the clients they wake keep the machine's cores, busy for 20 to 30
        ms: a rename in that window waited for it (measured with 100 held calls and
        10 subscribers: rename to notification p99 33 ms at once, 7 ms spread)."""
        streaming, self._streaming_moved = self._streaming_moved, asyncio.Event()
        streaming.set()
        if not self._held_wake_due:  # commits within HELD_SETTLE wake them once
            self._held_wake_due = True
            self.loop.call_later(HELD_SETTLE, self._wake_held)

    def _wake_held(self) -> None:
        self._held_wake_due = False
        self._waking += self._held
        self._held = []
        self._woken_answers = {}
        self._answer_some()

    def _answer_some(self) -> None:
        """Answer ``HELD_CHUNK`` woken calls; the next chunk ``HELD_GAP`` later, so that
        what else is ready (a commit, a subscriber's notification, a lookup) never
        waits for more than a chunk."""
        chunk, self._waking = self._waking[:HELD_CHUNK], self._waking[HELD_CHUNK:]
        for held in chunk:
            if not held.done:
                self._release(held, self._woken_answers)
        if self._waking:
            self.loop.call_later(HELD_GAP, self._answer_some)

    def _joins_wake(self, since: int) -> bool:
        """A held call a little behind the journal while a wake is due is answered with
        that wake, not at once: a client that re-asks after each answer gets one answer
        a wake, however fast the journal moves, and never polls."""
        return self._held_wake_due and 0 < self.api.writer.seq - since <= NEAR_HEAD

    def _on_loop_if_quick(self, conn: Connection, line: bytes) -> bool:
        """Serve ``line`` on the loop if it is a request the loop answers itself (see
        :meth:`_quick_changes` and :meth:`_quick_lookup`); False: the general way."""
        try:
            request_id, method, params, notification = protocol.parse_request(line)
        except RpcError:
            return False  # refused the general way, with its error
        if notification:
            return False
        if method == "changes":
            return self._quick_changes(conn, request_id, params)
        if method == "lookup":
            return self._quick_lookup(conn, request_id, params)
        return False

    def _quick_changes(self, conn: Connection, request_id: Any, params: dict[str, Any]) -> bool:
        """Serve a well-formed ``changes`` call on the loop, with no task and no thread:
        hold it (``wait``, nothing new yet), or answer it from the answer another
        caller got since the last commit. False: not one of those (the request takes
        the general way, :meth:`_dispatch`). A crowd of apps following the journal
        costs the loop a parse and a write a call, no more."""
        if not _plain_changes(params):
            return False
        if params.get("instance") not in (None, self.api.instance):
            return False  # a reset to tell: the general way
        wait = params.get("wait")
        since: int = params["since"]
        if wait and (since == self.api.writer.seq or self._joins_wake(since)):
            self.requests += 1
            self._hold(conn, request_id, params, wait)
            return True
        if conn.backed_up():
            return False
        shared = self.api.cached_changes(params)
        if shared is None:
            return False
        self.requests += 1
        conn.transport.write(protocol.response(request_id, shared))
        return True

    def _quick_lookup(self, conn: Connection, request_id: Any, params: dict[str, Any]) -> bool:
        """Answer a ``lookup`` of one path on the loop: an indexed read of a few
        pages, cheaper than the hop to a worker thread and back (a client polling for
        a rename's new path waits on that hop). ``verify`` (which reads the file) and
        bulk lookups take the general way, as does anything malformed."""
        if not _LOOKUP_ONE.issuperset(params):
            return False
        if conn.backed_up():
            return False
        self.requests += 1
        conn.transport.write(
            self._on_loop(request_id, "lookup", lambda: self.api.lookup(params, conn.peer))
        )
        return True

    def _on_loop(self, request_id: Any, method: str, answer: Callable[[], Any]) -> bytes:
        """The answer line of a request answered on the loop, or its error line."""
        try:
            return protocol.response(request_id, answer())
        except RpcError as exc:
            return self._error(request_id, exc)
        except Exception as exc:  # a bug answers -32603 and is logged; the server goes on
            log.exception("socket.error", method=method, error=f"{type(exc).__name__}: {exc}")
            error = RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            return self._error(request_id, error)

    def _hold(self, conn: Connection, request_id: Any, params: dict[str, Any], wait: float) -> None:
        held = _Held(conn, request_id, params)
        held.timer = self.loop.call_at(
            self.loop.time() + min(float(wait), MAX_WAIT), self._release, held
        )
        conn.busy = True
        conn.held = held
        self.waiting += 1
        if len(self._held) > 2 * self.waiting + 64:  # calls whose wait ended, with no commit
            self._held = [h for h in self._held if not h.done]
        self._held.append(held)

    def _release(self, held: _Held, shared: dict[Any, Any] | None = None) -> None:
        """Answer a held call: woken (the journal moved) or its wait over. A call woken
        while still at the head (the commit moved nothing it sees) is held again.

        The calls one wake answers share their answers (``shared``, by params): one
        read for the crowd at a cursor, even while commits go on meanwhile (each
        caller's next call gets what they added).
        """
        conn, since = held.conn, held.params["since"]
        timed_out = held.timer is not None and held.timer.when() <= self.loop.time()
        if not timed_out and since == self.api.writer.seq:
            self._held.append(held)
            return
        held.done = True
        if held.timer is not None:
            held.timer.cancel()
        conn.held = None
        self.waiting -= 1
        if conn.closed:
            return

        def answer() -> Any:
            key = changes_key(held.params)
            found = None if shared is None else shared.get(key)
            if found is None:
                found = self.api.cached_changes(held.params)
            if found is None:  # the first of the crowd: a read of a few entries, here
                found = self.api.changes(held.params, conn.peer)
            if shared is not None:
                shared[key] = found
            return found

        conn.transport.write(self._on_loop(held.request_id, "changes", answer))
        conn.idle()

    async def _subscribe(self, conn: Connection, line: bytes) -> bool:
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
            await conn.send(self._error(request_id, exc))
            return True
        conn.subscribed = True  # what it sends from now on is read and let go
        await conn.send(
            protocol.response(
                request_id, {"subscribed": True, "seq": spec.since, "instance": spec.instance}
            )
        )
        self.subscribers += 1
        cursor = spec.since
        try:
            while not conn.closed:
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
                    await conn.send(protocol.notification("reset", note))
                    return True
                if batch.entries:  # one write for the batch, encoded once for all sharing it
                    await conn.send(batch.lines)
                cursor = batch.seq
                if batch.more:
                    continue
                news: asyncio.Future[Any] = asyncio.ensure_future(moved.wait())
                either: set[asyncio.Future[Any]] = {conn.gone, news}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                news.cancel()
        finally:
            self.subscribers -= 1
        return True

    # -- the general way: a request answered by a worker thread ------------------------

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
        same commit (single flight)."""
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


class Connection(asyncio.Protocol):
    """One client: its bytes split into request lines, answered one at a time, in order.

    A line that :meth:`Server._quick_changes` serves on the spot costs no
    task; any other runs in a task of its own (:meth:`_serve`), and the lines
    after it wait for its answer.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        self.peer = Peer(0, -1, -1, False)
        self.buffer = bytearray()
        self.lines: deque[bytes] = deque()
        self.busy = False  # a request is being answered
        self.held: _Held | None = None
        self.task: asyncio.Task[None] | None = None
        self.subscribed = False
        self.closed = False
        self.ended = False  # the client closed its end
        self.gone: asyncio.Future[None] = self.loop.create_future()
        self.due = float("inf")  # when its next bytes are due (see Server._reap)
        self.partial = 0
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio's calls ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        if len(server._conns) >= MAX_CLIENTS:
            self.closed = True
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        pid, uid, gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        self.peer = Peer(pid, uid, gid, server.admin(pid, uid, gid))
        server._conns.add(self)
        transport.set_write_buffer_limits(high=DRAIN_ABOVE)
        self.idle()

    def data_received(self, data: bytes) -> None:
        if self.subscribed or self.closed:
            return  # a subscriber's bytes are read and let go
        buffer = self.buffer
        buffer += data
        start = 0
        while True:
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            line = bytes(buffer[start:newline])
            start = newline + 1
            if len(line) > protocol.MAX_LINE:
                self._too_long()
                return
            if line.strip():
                self.lines.append(line)
        del buffer[:start]
        if len(buffer) > protocol.MAX_LINE:
            self._too_long()
            return
        self._pump()

    def eof_received(self) -> bool:
        self.ended = True
        if not self.gone.done():
            self.gone.set_result(None)  # a subscriber's end ends its subscription
        if self.buffer.strip() and not self.subscribed:  # a last line without its newline
            self.lines.append(bytes(self.buffer))
        self.buffer.clear()
        self._pump()
        return True  # answer what was asked, then close (see idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._conns.discard(self)
        if not self.gone.done():
            self.gone.set_result(None)
        if self.held is not None and not self.held.done:
            self.held.done = True
            if self.held.timer is not None:
                self.held.timer.cancel()
            self.server.waiting -= 1
            self.held = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- ours ----------------------------------------------------------------------------

    def close(self) -> None:
        self.due = float("inf")
        if self.task is not None:
            self.task.cancel()
        if not self.closed:
            self.closed = True
            self.transport.close()

    def backed_up(self) -> bool:
        """Its answers are not being read: the next one waits for the buffer to drain."""
        return self._drained is not None and not self._drained.done()

    async def send(self, data: bytes) -> None:
        """Write; a client that does not read its answers is dropped, not waited for."""
        self.transport.write(data)
        if self.backed_up():
            assert self._drained is not None
            async with asyncio.timeout(self.server.request_timeout):
                await asyncio.shield(self._drained)

    def idle(self) -> None:
        """Its request is answered: on to the next line, or wait for one."""
        self.busy = False
        self._pump()

    def _pump(self) -> None:
        server = self.server
        while not self.busy and self.lines and not self.closed:
            line = self.lines.popleft()
            if (b'"changes"' in line or b'"lookup"' in line) and server._on_loop_if_quick(
                self, line
            ):
                continue
            self.busy = True
            self.task = self.loop.create_task(self._serve(line))
        if self.busy or self.closed:
            self.due = float("inf")  # not due while a request is answered
        elif self.ended:
            self.close()
        else:  # a started line must be finished soon; an idle connection may wait longer
            self.partial = len(self.buffer)
            wait = server.request_timeout if self.buffer else server.idle_timeout
            self.due = self.loop.time() + wait

    async def _serve(self, line: bytes) -> None:
        server = self.server
        try:
            if b'"subscribe"' in line and await server._subscribe(self, line):
                self.close()  # a subscription holds the connection to its end
                return
            reply = await server._dispatch(line, self.peer)
            if reply is not None:
                await self.send(reply)
        except (ConnectionError, asyncio.CancelledError):
            self.close()
            return
        except TimeoutError:
            # It stopped reading its answers: dropped, as a stalled client is.
            log.debug("socket.timeout", reason="answers not read")
            self.close()
            return
        except Exception as exc:  # one connection's trouble never stops the server
            log.error("socket.error", error=f"{type(exc).__name__}: {exc}")
            self.close()
            return
        self.task = None
        self.idle()

    def _too_long(self) -> None:
        error = RpcError(protocol.INVALID_REQUEST, "request line over 1 MiB; closing")
        self.transport.write(self.server._error(None, error))
        self.close()


class _Held:
    """A ``changes`` call held until the journal moves or its wait ends."""

    __slots__ = ("conn", "done", "params", "request_id", "timer")

    def __init__(self, conn: Connection, request_id: Any, params: dict[str, Any]) -> None:
        self.conn = conn
        self.request_id = request_id
        self.params = params
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


_LOOKUP_ONE = frozenset({"path", "path_b64"})  # lookups the loop answers itself
_CHANGES_PARAMS = frozenset({"since", "limit", "wait", "instance"})


def _plain_changes(params: dict[str, Any]) -> bool:
    """``changes`` params the quick way may serve: well formed, so that the answer is the
    method's own; anything else goes the general way and gets its error there."""
    if not _CHANGES_PARAMS.issuperset(params):
        return False
    since, limit, wait, instance = (params.get(k) for k in ("since", "limit", "wait", "instance"))
    return (
        type(since) is int
        and since >= 0
        and (limit is None or (type(limit) is int and limit >= 0))
        and (wait is None or (type(wait) in (int, float) and 0 <= wait <= MAX_WAIT))
        and (instance is None or type(instance) is str)
    )
