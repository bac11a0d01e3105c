"""gunicorn worker: gthread that reads whole requests before a thread runs them, and whose
workers share new connections evenly (docs/decisions.md §14).

- gthread hands a connection to a thread as soon as it is readable; the thread then blocks
  until the client has sent the whole request, so slow clients could hold every thread.
  Here the main loop reads (non-blocking) until the request is complete and only then
  queues it: a slow client costs a buffer, not a thread. A request head must arrive within
  ``HEAD_TIMEOUT`` s of its first byte and the whole request within ``REQUEST_TIMEOUT`` s
  (else 408 and close); a body over ``CDS_MAX_BODY_BYTES`` is answered 413 at once, unread.
- gthread accepts every connection it can: when a client pool opens its keep-alive
  connections in one instant, one worker may take them all and leave the other cores idle.
  Here a worker holding more connections than the least loaded live worker leaves the next
  one to it, for at most ``MAX_DEFER`` s (then it accepts without deferring for ``GIVE_UP``
  s), so a stuck or descheduled worker never blocks accepting for long.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from cds_service.web import worker_table as table
from cds_service.web.request_scan import Scan
from cds_service.web.worker_conn import BufferedConn, ReadAhead, RequestScan, canned

HEAD_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its head
REQUEST_TIMEOUT = 60.0  # seconds from a request's first byte to the end of its body
MAX_BUFFERED = 64 * 1024 * 1024  # bytes of unfinished requests one worker holds (else 503)
MAX_DEFER = 0.2  # seconds a worker leaves new connections to a less loaded one
GIVE_UP = 1.0  # seconds of accepting without deferring after the other worker did not come
DEFER_STEP = 0.002  # seconds between two looks at the listening socket while deferring
EPISODE_GAP = 0.05  # no look for this long: the connection deferred before was taken
RECV = 256 * 1024
HOUSEKEEPING = 0.25  # seconds between two rounds of the main loop's chores
FIRST = futures.FIRST_COMPLETED


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with whole-request read-ahead in the main loop and balanced accepting."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """TLS is terminated by a proxy: this worker reads plain sockets only."""
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("BufferedThreadWorker does not terminate TLS (use a proxy)")

    def init_process(self) -> None:
        """Read the body limit, then load the app and run."""
        from cds_service.config import Settings

        self.max_body = Settings.from_env().max_body_bytes
        self.reading: set[BufferedConn] = set()
        self.buffered = 0
        self.paused = False
        self.resume_at = 0.0
        self.defer_since: float | None = None
        self.no_defer_until = 0.0
        self.last_defer = 0.0
        self.slot = -1  # claimed in run(): a worker still loading the app is not counted
        super().init_process()

    # --- accepting ------------------------------------------------------------------------

    def accept(self, server: Any, listener: socket.socket) -> None:
        """Accept one connection, unless a less loaded worker should take it."""
        now = time.monotonic()
        least = table.least_other(self.slot)
        if least is not None and self.nr_conns > least and now >= self.no_defer_until:
            if self.defer_since is None or now - self.last_defer > EPISODE_GAP:
                self.defer_since = now  # a new connection waiting, not the one of before
            self.last_defer = now
            if now - self.defer_since < MAX_DEFER:
                self._pause(now)
                return
            self.no_defer_until = now + GIVE_UP  # the other worker did not come: take them all
        self.defer_since = None
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = BufferedConn(self.cfg, sock, client, server)
        self.nr_conns += 1
        self._publish()
        with self._lock:
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )

    def _pause(self, now: float) -> None:
        if not self.paused:
            for sock in self.sockets:
                self.poller.unregister(sock)
            self.paused = True
        self.resume_at = now + DEFER_STEP

    def _resume(self) -> None:
        if self.paused:
            for sock in self.sockets:
                server = sock.getsockname()
                self.poller.register(sock, selectors.EVENT_READ, partial(self.accept, server))
            self.paused = False

    def _publish(self) -> None:
        table.publish(self.slot, self.nr_conns)

    # --- reading --------------------------------------------------------------------------

    def on_client_socket_readable(self, conn: BufferedConn, client: Any) -> None:
        """Read what arrived; queue the request once it is whole."""
        with self._lock:
            if conn.initialized and conn in self._keep:
                self._keep.remove(conn)  # from idle keep-alive to reading a request
        before = len(conn.buf)
        try:
            while True:
                chunk = conn.sock.recv(RECV)
                if not chunk:
                    self._drop(conn)
                    return
                conn.buf += chunk
                if len(chunk) < RECV:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._drop(conn)
            return
        if conn.scan is None:
            conn.scan = RequestScan(self.max_body)
            conn.started = time.monotonic()
            self.reading.add(conn)
        self.buffered += len(conn.buf) - before
        verdict = conn.scan.feed(conn.buf)
        if verdict is Scan.MORE:
            if self.buffered > MAX_BUFFERED:
                self._answer(conn, canned("503 Service Unavailable", "transient", "Server busy"))
            return
        if verdict is Scan.TOO_LARGE:
            text = f"Request body larger than {self.max_body} bytes"
            self._answer(conn, canned("413 Content Too Large", "too-costly", text))
            return
        self._forget(conn)
        with self._lock:
            self.poller.unregister(conn.sock)
        conn.init()
        if not isinstance(conn.parser.unreader, ReadAhead):
            conn.parser.unreader = ReadAhead(conn.sock)
        conn.parser.unreader.feed(bytes(conn.buf))
        conn.buf = bytearray()
        conn.scan = None
        fs = self.tpool.submit(self.handle, conn)
        self._wrap_future(fs, conn)

    def _forget(self, conn: BufferedConn) -> None:
        self.reading.discard(conn)
        self.buffered -= len(conn.buf)

    def _drop(self, conn: BufferedConn) -> None:
        self._forget(conn)
        with self._lock:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        conn.close()
        self.nr_conns -= 1
        self._publish()

    def _answer(self, conn: BufferedConn, response: bytes) -> None:
        """Send a canned answer (best effort, non-blocking) and close the connection."""
        try:
            conn.sock.send(response)
        except OSError:
            pass
        self._drop(conn)

    def _expire_reads(self) -> None:
        now = time.monotonic()
        late = [
            c
            for c in self.reading
            if now - c.started > REQUEST_TIMEOUT
            or (now - c.started > HEAD_TIMEOUT and c.scan is not None and c.scan.head_end < 0)
        ]
        for conn in late:
            timeout = canned("408 Request Timeout", "timeout", "Request not received in time")
            self._answer(conn, timeout)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """gthread's loop, with deferred accepting and read deadlines.

        Housekeeping (heartbeat, parent check, keep-alive and read deadlines, finished
        futures) runs at most every ``HOUSEKEEPING`` s, not after every event: each of its
        system calls gives up the GIL and waits to take it back from a thread that is
        running a request (gthread's threads were mostly blocked reading at that moment).
        """
        self.slot = table.claim_slot(os.getpid())
        for sock in self.sockets:
            sock.setblocking(False)
        self.paused = True
        self._resume()
        chores = 0.0
        try:
            while self.alive:
                now = time.monotonic()
                if now >= chores:
                    chores = now + HOUSEKEEPING
                    self.notify()
                    done = futures.wait(self.futures, timeout=0, return_when=FIRST).done
                    for fut in done:
                        self.futures.remove(fut)
                    if not self.is_parent_alive():
                        break
                    self.murder_keepalived()
                    self._expire_reads()
                if self.paused and now >= self.resume_at:
                    self._resume()
                self._publish()
                if self.nr_conns < self.worker_connections:
                    wait = HOUSEKEEPING if not self.paused else max(0.0, self.resume_at - now)
                    for key, _ in self.poller.select(wait):
                        key.data(key.fileobj)
                else:  # at worker_connections: wait for a request to finish
                    done = futures.wait(self.futures, timeout=HOUSEKEEPING, return_when=FIRST).done
                    for fut in done:
                        self.futures.remove(fut)
        finally:
            table.release_slot(os.getpid())
        self.tpool.shutdown(False)
        self.poller.close()
        for s in self.sockets:
            s.close()
        futures.wait(self.futures, timeout=self.cfg.graceful_timeout)

    def finish_request(self, fs: futures.Future[Any]) -> None:
        """gthread's, keeping the shared connection count current."""
        super().finish_request(fs)
        self._publish()
