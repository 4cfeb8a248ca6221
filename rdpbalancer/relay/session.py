"""One client connection, from its first byte to the end of the relay.

    HANDSHAKE --CR--> ROUTING --connected--> RELAY --both sides gone--> CLOSED
        \\--junk/timeout/EOF--> CLOSED     \\--no server/denied/all connects failed--> CLOSED

The two asyncio Protocols (`ClientSide`, `BackendSide`) are thin: in the relay phase each
`data_received` is one `write` on the other transport, nothing more. Flow control couples the
two legs: when one transport's write buffer passes its high-water mark, reading from the other
leg pauses until it drains, so a slow reader never makes memory grow. EOF on one side becomes
`write_eof()` on the other (half-close), and the session ends when both legs are closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

from rdpbalancer import tasks
from rdpbalancer.netaddr import describe_os_error, format_addr
from rdpbalancer.policy.identity import printable, user_key
from rdpbalancer.policy.limits import Refusal, source_of
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.policy.placement import AttemptOutcome, follow_winner, judge_attempt
from rdpbalancer.proto import ClientHandshake, ConnectionRequest, ConnectionRequestReceived, ProtocolError
from rdpbalancer.proto.errors import EOF as EOF_KIND
from rdpbalancer.proto.proxy import parse_proxy_header
from rdpbalancer.relay.context import RelayContext, State
from rdpbalancer.relay.control import ControlUnavailable, SessionInfo
from rdpbalancer.relay.sockets import connect_raw, peer_host, reset, tune
from rdpbalancer.relay.splice import SplicePump

log = logging.getLogger("rdpbalancer.session")

MIN_ATTEMPT_TIMEOUT_S = 0.25  # never give a connect attempt less than this, even late in the budget
# Client bytes after its Connection Request, held while a server is chosen and reached. The client
# is still read meanwhile so that its leaving is noticed at once (a paused transport sees no EOF or
# reset); a client normally waits for the Confirm, so beyond this it is paused until the relay.
MAX_EARLY_CLIENT_BYTES = 64 * 1024
REFUSAL_LOG_EVERY_S = 10.0  # a flood is logged once per reason this often, with the count since


class _RefusalLog:
    """One warning per refusal reason per REFUSAL_LOG_EVERY_S: a flood cannot flood the log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, reason: str, client: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -REFUSAL_LOG_EVERY_S) < REFUSAL_LOG_EVERY_S:
            self._since[reason] = self._since.get(reason, 0) + 1
            return
        more = self._since.pop(reason, 0)
        self._last[reason] = now
        log.warning("refused client=%s reason=%s: %s%s", client, reason, detail,
                    f" ({more} more refused for this reason since the last line)" if more else "",
                    extra={"event": {"event": "refused", "client": client, "reason": reason, "detail": detail,
                                     "suppressed": more}})


refusals = _RefusalLog()


class _ClientLeft(Exception):
    pass


class Leg(asyncio.Protocol):
    """One side of a session: forwards to `peer` once relaying, reports the rest to the session."""

    __slots__ = ("closed", "eof", "nbytes", "peer", "session", "transport", "writing_paused")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None  # the other leg's transport, while relaying
        self.nbytes = 0
        self.eof = False
        self.closed = False
        self.writing_paused = False  # our write buffer is over its high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        tune(transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None:
            self.nbytes += len(data)
            peer.write(data)
        else:
            self.session.early_data(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        return self.session.leg_eof(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.session.leg_lost(self, exc)

    # Our transport's write buffer is full: stop reading from the other side until it drains.
    def pause_writing(self) -> None:
        self.writing_paused = True
        other = self.session.other(self).transport
        if other is not None and not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        other = self.session.other(self).transport
        if other is not None and not other.is_closing():
            other.resume_reading()


class ClientSide(Leg):
    """The protocol factory target for listeners: each accepted connection starts a Session."""

    def __init__(self, ctx: RelayContext, listener: str) -> None:
        super().__init__(Session(ctx, listener, self))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # no tune(): accepted sockets inherit TCP_NODELAY and keepalive from the listener (Linux)
        self.transport = transport  # type: ignore[assignment]
        self.session.started_client()


class Session:
    worker = 0  # relayed by this process (a worker's sessions are RemoteSession in the primary)

    def __init__(self, ctx: RelayContext, listener: str, client: Leg) -> None:
        self.ctx = ctx
        self.id = ctx.new_session_id()
        self.listener = listener
        self.client = client
        self.backend = Leg(self)
        self.state = State.HANDSHAKE
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.client_addr = ("unknown", 0)
        self.user: str | None = None
        self.decision: Decision | None = None
        self.server: Server | None = None
        self.end_reason = ""
        self._handshake = ClientHandshake()
        self._deadline: asyncio.TimerHandle | None = None
        self._backend_early = bytearray()
        self._client_early = bytearray()  # after the CR, while routing (MAX_EARLY_CLIENT_BYTES)
        self._client_paused = False  # we paused the client's reading (early bytes over the bound)
        self._connecting: asyncio.Future[None] | None = None  # the backend connect under way
        self._backend_sock: socket.socket | None = None
        self._pump: SplicePump | None = None
        self._source: str | None = None  # set once admitted (policy.limits): released in _finish
        self._proxy_header: bytearray | None = None  # a PROXY listener: bytes until the header is complete
        self._handshaking = False

    @property
    def bytes_up(self) -> int:
        """Client -> server bytes so far (live, whichever relay moves them)."""
        pump = self._pump
        return self.client.nbytes + (pump.up.nbytes if pump is not None and not pump.closed else 0)

    @property
    def bytes_down(self) -> int:
        pump = self._pump
        return self.backend.nbytes + (pump.down.nbytes if pump is not None and not pump.closed else 0)

    @property
    def relaying(self) -> bool:
        return self.state is State.RELAY

    # -- wiring ---------------------------------------------------------------------------

    def other(self, leg: Leg) -> Leg:
        return self.backend if leg is self.client else self.client

    def started_client(self) -> None:
        assert self.client.transport is not None
        self.client_addr = peer_host(self.client.transport)
        if self.listener in self.ctx.settings.proxy_listeners:
            if not _trusted(self.client_addr[0], self.ctx.settings.trusted_proxies):
                self._refuse("untrusted-proxy", f"{self.client_addr[0]} connected to PROXY protocol listener "
                                                f"{self.listener} but is not in [balancer] trusted_proxies")
                return
            self._proxy_header = bytearray()  # admitted once the header names the real client
        elif not self._admit():
            return
        self.ctx.sessions[self.id] = self
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.ctx.settings.handshake_timeout_s, self._handshake_expired)

    def _admit(self) -> bool:
        """The limits of [limits] (policy.limits.Admission), by the client's address."""
        ctx = self.ctx
        source = source_of(self.client_addr[0])
        refusal = ctx.admission.admit(source, time.monotonic())
        if refusal is not None:
            self._refuse(refusal, _REFUSAL_DETAIL[refusal].format(source=source, limits=ctx.settings.limits))
            return False
        self._source, self._handshaking = source, True
        return True

    def _refuse(self, reason: str, detail: str) -> None:
        """Before any byte is read: closed, counted, logged (rate-limited); never a session."""
        self.ctx.stats.refused[reason] += 1
        refusals.note(reason, format_addr(*self.client_addr), detail)
        self.state = State.CLOSED
        transport = self.client.transport
        if transport is not None:
            transport.abort()  # nothing to flush, and no TIME_WAIT left behind by a flood

    def _left_handshake(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self.ctx.admission.handshake_done()

    # -- handshake --------------------------------------------------------------------------

    def early_data(self, leg: Leg, data: bytes) -> None:
        if leg is self.backend:
            self._backend_early += data  # a server speaking before relaying starts: kept, sent later
        elif self.state is State.ROUTING:
            self._client_early += data  # forwarded after the CR once relaying
            if len(self._client_early) > MAX_EARLY_CLIENT_BYTES and leg.transport is not None:
                leg.transport.pause_reading()
                self._client_paused = True
        elif self.state is State.HANDSHAKE:
            if self._proxy_header is not None:
                self._feed_proxy(data)
            else:
                self._feed(data)

    def _feed_proxy(self, data: bytes) -> None:
        """A trusted proxy's PROXY v1/v2 header, then the client's own bytes."""
        assert self._proxy_header is not None
        buffer = self._proxy_header
        buffer += data
        try:
            header = parse_proxy_header(buffer)  # bounded: refuses past MAX_PROXY_HEADER_BYTES
        except ProtocolError as exc:
            self._reject_malformed(exc)
            return
        if header is None:
            return
        self._proxy_header = None
        if header.source is not None:  # None: LOCAL/UNKNOWN (the proxy's own check): the proxy it is
            self.client_addr = header.source
        if not self._admit():
            return
        rest = bytes(buffer[header.length:])
        if rest:
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        try:
            self._handshake.receive_data(data)
            event = self._handshake.next_event()
        except ProtocolError as exc:
            self._reject_malformed(exc)
            return
        if isinstance(event, ConnectionRequestReceived):
            self._cancel_deadline()
            self._left_handshake()
            self.ctx.observe_handshake(time.monotonic() - self.started)
            self.state = State.ROUTING  # the client is still read: its leaving is noticed at once
            request, trailing = event.request, self._handshake.trailing_data
            self.ctx.tasks.spawn(self._route(request, trailing), name=f"route-{self.id}")

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.state is State.HANDSHAKE:
            self.ctx.stats.malformed["handshake-timeout"] += 1
            self._close_client("handshake-timeout", count="handshake-timeout")

    def _reject_malformed(self, exc: ProtocolError) -> None:
        self._cancel_deadline()
        if exc.kind == EOF_KIND:
            # connect-then-close without a byte: a TCP health check (keepalived, another load
            # balancer, a port scan). Counted, but not logged at info level: it is not an error.
            self.end_reason = "closed without sending"
            self.ctx.stats.connections["empty"] += 1
            self.state = State.CLOSED
            return
        self.ctx.stats.malformed[exc.kind] += 1
        self._close_client(f"malformed: {exc.kind}: {exc}", count="malformed")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- routing ----------------------------------------------------------------------------

    def _request(self, cr: ConnectionRequest) -> RouteRequest:
        key = None
        if cr.cookie is not None:
            key = user_key(cr.cookie, strip_domain=self.ctx.settings.strip_domain)
        self.user = key
        return RouteRequest(client_host=self.client_addr[0], user_key=key, msts_target=cr.msts_target,
                            collection=cr.collection, listener=self.listener)

    async def _route(self, cr: ConnectionRequest, trailing: bytes) -> None:
        ctx = self.ctx
        try:
            routed = await ctx.control.route(self.id, self._request(cr))
        except ControlUnavailable as exc:
            self._close_client(f"unavailable: {exc}", count="unavailable")
            return
        decision = self.decision = routed.decision
        if decision.reason is Reason.LIMITED:
            self._refuse(Refusal.NEW_USERS, f"user {self._user_text()}: {decision.detail}")
            self._finish()
            return
        if routed.first_attempt is None:
            self._close_client(f"{decision.reason}: {decision.detail}", count=str(decision.reason))
            return
        if routed.ambiguous:
            ctx.stats.connections["ambiguous"] += 1
            log.warning("session=%s user=%s is a truncated name shared by users routed differently; "
                        "%s applied", self.id, self._user_text(), decision.route)
        deadline = time.monotonic() + ctx.settings.connect_timeout_s
        persist: Awaitable[Server | None] | None = routed.first_attempt
        candidates, attempt, followed = list(decision.candidates), 0, False
        while attempt < len(candidates):
            server = candidates[attempt]
            if persist is None:
                if self.state is not State.ROUTING:
                    return  # the client went away meanwhile
                persist = ctx.control.attempt(self.id, decision, server)
            outcome = await self._try_server(decision, server, persist, deadline, len(candidates) - attempt)
            persist = None
            if outcome is True:
                first = cr.raw + trailing + bytes(self._client_early)
                self._client_early.clear()
                if self._backend_sock is not None:
                    await self._start_splice(first)
                else:
                    self._start_relay(first)
                return
            if isinstance(outcome, Server):
                follow = follow_winner(decision, outcome, followed)
                if follow is None:
                    break
                followed = True
                decision = self.decision = follow
                candidates, attempt = list(follow.candidates), 0
                continue
            attempt += 1
        self._all_attempts_failed(decision)

    async def _try_server(self, decision: Decision, server: Server, persist: Awaitable[Server | None],
                          deadline: float, left: int) -> bool | Server:
        """Connect to `server`, whose attempt (assignment, count) the control plane started.
        True: connected; False: failed or abandoned; a Server: the user belongs there (another
        balancer placed them first)."""
        self.server = server
        budget = max(MIN_ATTEMPT_TIMEOUT_S, (deadline - time.monotonic()) / left)
        client_left = False
        try:
            error = await self._connect_attempt(server, budget)
        except _ClientLeft:
            error, client_left = "client left during connect", True
        winner: Server | None = None
        try:
            winner = await persist  # durable before the client's bytes reach the server
        except ControlUnavailable as exc:
            error = error or f"control plane unavailable: {exc}"
        if winner is not None and not client_left:
            log.info("session=%s user=%s was placed on %s by another balancer first; following",
                     self.id, self._user_text(), winner.name)
            self._abandon_attempt(server)
            return winner
        if not error and self.backend.closed:
            error = "closed by server during connect"
        outcome = judge_attempt(error=error, client_left=client_left or self.state is not State.ROUTING)
        if outcome is AttemptOutcome.ABANDONED:
            return self._abandon_attempt(server)
        if outcome is AttemptOutcome.FAILED:
            self._attempt_failed(server, error)
            return False
        self.ctx.control.connected(self.id, server)
        return True

    async def _connect_attempt(self, server: Server, budget: float) -> str:
        """"" when connected, else why not; raises _ClientLeft when the client left first (the
        connect is cancelled as it leaves: `leg_lost`)."""
        if self.state is not State.ROUTING:
            raise _ClientLeft
        self._backend_sock = None
        started = time.monotonic()
        self._connecting = tasks.start(self._connect(asyncio.get_running_loop(), server, budget))
        try:
            await self._connecting
        except asyncio.CancelledError:
            if self.state is State.ROUTING:
                raise  # not ours: the session's own task is cancelled (shutdown)
            raise _ClientLeft from None
        except TimeoutError:
            return f"connect timeout after {budget:.2f}s"
        except OSError as exc:
            return describe_os_error(exc)
        finally:
            self._connecting = None
        self.ctx.observe_connect(time.monotonic() - started)
        return ""

    def _abandon_attempt(self, server: Server) -> bool:
        """Given up for no fault of the server (the client left, another node placed the user):
        only its count is undone, health is not told."""
        self.ctx.control.abandon(self.id, server)
        self.server = None
        self._drop_backend()
        return False

    def _attempt_failed(self, server: Server, error: str) -> None:
        self.ctx.control.attempt_failed(self.id, server, error)
        self.server = None
        self.ctx.stats.connect_failures[server.name] += 1
        log.warning("session=%s connect to %s (%s) failed: %s", self.id, server.name, server.address, error)
        self._drop_backend()

    async def _connect(self, loop: asyncio.AbstractEventLoop, server: Server, budget: float) -> None:
        async with asyncio.timeout(budget):
            if self.ctx.splice is not None:
                self._backend_sock = await connect_raw(loop, server.host, server.port)
            else:
                await loop.create_connection(lambda: self.backend, server.host, server.port)

    def _drop_backend(self) -> None:
        if self.backend.transport is not None:
            self.backend.transport.abort()
        if self._backend_sock is not None:
            self._backend_sock.close()
            self._backend_sock = None
        self.backend = Leg(self)
        self._backend_early.clear()

    def _all_attempts_failed(self, decision: Decision) -> None:
        # a new user we could not place anywhere, or a moved one: do not remember a server they
        # never reached (a moved user gets their old entry back)
        self.ctx.control.all_failed(self.id, decision)
        if self.state is State.ROUTING:
            tried = ", ".join(s.name for s in decision.candidates)
            self._close_client(f"connect-failed: {tried} unreachable ({decision.detail})", count="connect-failed")

    def _start_relay(self, first_bytes: bytes) -> None:
        client, backend = self.client, self.backend
        assert client.transport is not None and backend.transport is not None
        self._routed()
        client.peer, backend.peer = backend.transport, client.transport
        client.nbytes += len(first_bytes)
        backend.transport.write(first_bytes)  # the CR verbatim, then what came after it
        if self._backend_early:
            backend.nbytes += len(self._backend_early)
            client.transport.write(bytes(self._backend_early))
            self._backend_early.clear()
        if self._client_paused:  # paused for the early bytes: read again, unless the first write
            self._client_paused = False  # filled the server's buffer (pause_writing paused it then)
            if not backend.writing_paused:
                client.transport.resume_reading()

    async def _start_splice(self, first_bytes: bytes) -> None:
        """Hand both sockets to a SplicePump: the client's fd is taken over from its transport."""
        assert self._backend_sock is not None and self.client.transport is not None and self.ctx.splice is not None
        backend, self._backend_sock = self._backend_sock, None
        transport = self.client.transport
        client = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        self.client = Leg(self)  # the old leg's connection_lost (from the abort below) is ignored
        self.client.transport, self.client.nbytes = None, len(first_bytes)
        transport.abort()  # closes the transport's fd only: our dup keeps the connection
        self._routed()  # before the first send: a failure below ends a routed session (counts balance)
        # bounded like a connect, and cut by abort() (shutdown, admin): a server that reads nothing
        # must not hold the session here forever
        self._connecting = tasks.start(self._send_first(backend, first_bytes))
        try:
            async with asyncio.timeout(self.ctx.settings.connect_timeout_s):
                await self._connecting
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and self.end_reason == "":
                raise  # not an abort: the session's own task is cancelled
            backend.close()
            client.close()
            if isinstance(exc, OSError):
                self.end_reason = f"server error: {describe_os_error(exc)}"
            elif isinstance(exc, TimeoutError):
                self.end_reason = "server error: it did not take the first bytes within connect_timeout"
            self._finish()
            return
        finally:
            self._connecting = None
        self._pump = SplicePump(client, backend, self.ctx.splice, self._splice_done)
        self._pump.start()

    @staticmethod
    async def _send_first(backend: socket.socket, first_bytes: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(backend, first_bytes)

    def _splice_done(self, up: int, down: int, reason: str) -> None:
        self.client.nbytes += up
        self.backend.nbytes += down
        self.end_reason = self.end_reason or reason
        self.client.closed = self.backend.closed = True
        self._finish()

    def _routed(self) -> None:
        decision, server = self.decision, self.server
        assert decision is not None and server is not None
        self.state = State.RELAY
        self.ctx.control.relaying(self.id, SessionInfo(decision, server, self.user, self.client_addr,
                                                       self.listener, self.started_wall))
        self.ctx.stats.connections[str(decision.reason)] += 1
        self.ctx.record_decision(self, str(decision.reason), server.name)
        moved = f" moved_from={decision.moved_from}" if decision.moved_from else ""
        log.info(
            "session=%s routed client=%s listener=%s user=%s pool=%s server=%s addr=%s reason=%s route=%s%s",
            self.id, format_addr(*self.client_addr), self.listener, self._user_text(), decision.pool,
            server.name, server.address, decision.reason, _route_text(decision.route), moved,
            extra={"event": {"event": "routed", "session": self.id, "client": format_addr(*self.client_addr),
                             "listener": self.listener, "user": self.user, "pool": decision.pool,
                             "server": server.name, "address": server.address,
                             "reason": str(decision.reason), "route": decision.route,
                             "moved_from": decision.moved_from}},
        )

    def _user_text(self) -> str:
        return f'"{printable(self.user)}"' if self.user is not None else "-"

    # -- half-close and teardown ------------------------------------------------------------

    def leg_eof(self, leg: Leg) -> bool:
        if self.state is not State.RELAY:
            if leg is self.client and self.state is State.HANDSHAKE:
                self._feed(b"")  # EOF before a full CR: the parser reports it
            return False  # close this leg
        other = self.other(leg).transport
        if other is not None and not other.is_closing() and other.can_write_eof():
            other.write_eof()
        if self.client.eof and self.backend.eof:
            self._close_both()
        return True  # keep our half open until the other side is done too

    def leg_lost(self, leg: Leg, exc: Exception | None) -> None:
        if leg is not self.client and leg is not self.backend:
            return  # a backend attempt that was abandoned
        if not self.end_reason:
            side = "client" if leg is self.client else "server"
            self.end_reason = f"{side} closed" if exc is None else f"{side} error: {exc}"
        if self.state is State.RELAY:
            other = self.other(leg).transport
            if other is not None and not other.is_closing():
                if exc is None:
                    other.close()  # flushes what is buffered, then FIN
                else:
                    reset(other)  # the peer reset: pass the reset on, promptly
            if self.client.closed and self.backend.closed:
                self._finish()
        elif leg is self.client:
            self._cancel_deadline()
            if self.state is State.HANDSHAKE:
                self.ctx.stats.connections["client-gone"] += 1
                self._finish()
            else:
                self.state = State.CLOSED  # routing notices and gives up; _finish from there
                if self._connecting is not None:
                    self._connecting.cancel()  # an abandoned attempt: stop connecting now
                self._finish()

    def _close_both(self) -> None:
        for leg in (self.client, self.backend):
            if leg.transport is not None and not leg.transport.is_closing():
                leg.transport.close()

    def _close_client(self, reason: str, *, count: str) -> None:
        self.end_reason = reason
        self.ctx.stats.connections[count] += 1
        self.ctx.record_decision(self, count, None, reason)
        log.info("session=%s rejected client=%s user=%s reason=%s",
                 self.id, format_addr(*self.client_addr), self._user_text(), reason,
                 extra={"event": {"event": "rejected", "session": self.id, "client": format_addr(*self.client_addr),
                                  "user": self.user, "result": count, "reason": reason}})
        self.state = State.CLOSED
        transport = self.client.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        self._finish_if_closed()

    def _finish_if_closed(self) -> None:
        if self.client.closed:
            self._finish()

    def _finish(self) -> None:
        if self.ctx.sessions.pop(self.id, None) is None:
            return  # already finished
        if self._source is not None:
            self._left_handshake()
            self.ctx.admission.closed(self._source)
        was_relaying = self.state is State.RELAY
        self.state = State.CLOSED
        if not was_relaying or self.server is None:
            return
        ctx, decision = self.ctx, self.decision
        assert decision is not None
        ctx.control.finished(self.id, decision, self.server, self.client.nbytes, self.backend.nbytes)
        ctx.stats.bytes_up += self.client.nbytes
        ctx.stats.bytes_down += self.backend.nbytes
        log.info(
            "session=%s end client=%s user=%s server=%s bytes_up=%d bytes_down=%d duration=%.3fs close=%s",
            self.id, format_addr(*self.client_addr), self._user_text(), self.server.name,
            self.client.nbytes, self.backend.nbytes, time.monotonic() - self.started, self.end_reason,
            extra={"event": {"event": "end", "session": self.id, "client": format_addr(*self.client_addr),
                             "user": self.user, "server": self.server.name, "bytes_up": self.client.nbytes,
                             "bytes_down": self.backend.nbytes,
                             "duration_s": round(time.monotonic() - self.started, 3), "close": self.end_reason}},
        )

    def abort(self, reason: str) -> None:
        """Cut the session now (shutdown, admin action)."""
        self.end_reason = self.end_reason or reason
        if self._pump is not None:
            self._pump.abort(reason)
            return
        if self.state is State.RELAY and self._connecting is not None:  # the splice's first bytes
            self._connecting.cancel()
            return
        for leg in (self.client, self.backend):
            if leg.transport is not None and not leg.transport.is_closing():
                reset(leg.transport)



_REFUSAL_DETAIL = {
    Refusal.MAX_CONNECTIONS: "[limits] max_connections ({limits.max_connections} in this process) reached",
    Refusal.MAX_HANDSHAKES: "[limits] max_handshakes ({limits.max_handshakes} in this process) reached",
    Refusal.SOURCE_CONNECTIONS: "{source} has [limits] per_source_connections "
                                "({limits.per_source_connections}) open",
    Refusal.SOURCE_RATE: "{source} connects faster than [limits] per_source_rate "
                         "({limits.per_source_rate:g}/s after a burst of {limits.per_source_burst})",
}


def _trusted(host: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _route_text(label: str | None) -> str:
    return "-" if label is None else label.split(" ", 1)[0]
