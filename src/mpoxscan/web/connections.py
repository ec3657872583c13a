"""uvicorn's HTTP/1.1 protocol with the two guards against half-open connections (slowloris) that uvicorn lacks: a
time limit on a request's headers, and a cap on open connections that closes the one that has waited longest for its
headers when a new one comes. `mpoxscan serve` runs on it (app.uvicorn_options), with or without a proxy in front.

Written here because no option of uvicorn does it (its only timeout is keep-alive between requests, which stops as
soon as a byte arrives; its limit_concurrency answers 503 only once a request's headers are complete), and the
servers that do (nginx in front, deploy/nginx-mpoxscan.conf; hypercorn, granian) would replace the tested serving
stack (workers, TLS, proxy headers) for one feature. Issue 27: 1,100 half-open connections made /healthz time out and
wrote 38 MB of "Too many open files" tracebacks in 12 s.
"""

from __future__ import annotations

import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a connection may take to send a request's headers (from its opening, or from the end of the previous
#: response on a kept-alive connection); then it is closed. Phones on slow networks send a few hundred bytes of headers
#: in well under a second; nginx's default client_header_timeout is 60 s.
HEADER_TIMEOUT = 10.0
#: Open connections one process keeps at most.
MAX_CONNECTIONS = 2048
#: The listening socket's backlog, which is also how many connections asyncio accepts in one turn of its loop, before
#: the protocol sees any of them (uvicorn's default, 2048, accepted a whole flood at once: past the open-file limit).
BACKLOG = 128
#: Open files kept free under the limit: two turns' worth of accepted connections not yet counted, and the database,
#: photos, model and logs. (Measured with 1,100 half-open connections under a limit of 1,024: at most 818 open.)
SPARE_FILES = 2 * BACKLOG + 128


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (Linux distributions keep the soft one at
    1,024, far under the hard one); the worker processes inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may forbid it: the cap below follows the soft limit
            pass
    return soft


def connection_cap() -> int:
    """The connections this process keeps open at most: MAX_CONNECTIONS, or fewer where its open-file limit is low
    (so that accepting never fails with 'Too many open files')."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - SPARE_FILES))


class GuardedH11Protocol(H11Protocol):
    """H11Protocol whose connections must finish each request's headers within HEADER_TIMEOUT, and of which at most
    connection_cap() stay open: at the cap, a new connection closes the one that has kept the server waiting longest
    (for its headers, or for more of its request's body; itself, when every other one has a request that the server
    is working on or answering), so a flood of half-open connections cannot keep an honest client out. A request
    whose body trickles in is not cut by a timeout (a phone uploads a photo slowly), but it is what the cap closes
    first: 20 connections that sent their headers and a byte of body once held a cap of 20 and refused everyone."""

    header_timeout = HEADER_TIMEOUT
    _cap: int | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self._last_bytes = self.loop.time()
        self._header_timer = None
        self._arm_header_timer()
        cls = type(self)
        if cls._cap is None:
            cls._cap = connection_cap()
        if len(self.connections) > cls._cap:
            # (A connection already closing stays in the set until its socket is closed, on the loop's next turn.)
            open_ = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_) > cls._cap:
                idle = [(since, c) for c in open_ if c is not self and (since := c._idle_since()) is not None]
                victim = min(idle, key=lambda pair: pair[0])[1] if idle else self
                victim.transport.close()

    def data_received(self, data: bytes) -> None:
        self._last_bytes = self.loop.time()
        super().data_received(data)

    def _waiting(self) -> bool:
        """Whether this connection waits for a request's headers (no request in progress)."""
        return self.cycle is None or self.cycle.response_complete

    def _idle_since(self) -> float | None:
        """Since when this connection has kept the server waiting: for a request's headers (since it began to wait
        for them), or for more of its request's body (since its last bytes came); None while the server works on its
        request or answers it."""
        if self._waiting():
            return self._waiting_since
        if self.conn.their_state is h11.SEND_BODY:
            return self._last_bytes
        return None

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._waiting_since = self.loop.time()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_time_up)

    def _header_time_up(self) -> None:
        self._header_timer = None
        if self._waiting() and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same time

    def connection_lost(self, exc) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)
