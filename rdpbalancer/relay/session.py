"""One client connection: the shell around its state machine (relay/machine.py).

The machine decides; this module owns the transports, the descriptors, the timers and the
tasks, and turns each of the machine's commands into calls (`_do`). The two asyncio Protocols
(`Leg`) are thin: in the relay phase each `data_received` is one `write` on the other
transport, nothing more, and the machine is not asked. Flow control couples the two legs: when
one transport's write buffer passes its high-water mark, reading from the other leg pauses until
it drains, so a slow reader never makes memory grow. EOF on one side becomes `write_eof()` on
the other (half-close), and the session ends when both legs are closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rdpbalancer import logs, tasks
from rdpbalancer.netaddr import describe_os_error, format_addr
from rdpbalancer.policy.model import Decision, Server
from rdpbalancer.relay import facts as f
from rdpbalancer.relay import vocabulary as v
from rdpbalancer.relay.context import RelayContext
from rdpbalancer.relay.deadlines import Deadline, Deadlines
from rdpbalancer.relay.machine import SessionMachine, refusal_detail
from rdpbalancer.relay.sockets import connect_raw, peer_host, reset
from rdpbalancer.relay.splice import SplicePump
from rdpbalancer.transparent import source_for

log = logging.getLogger("rdpbalancer.session")

REFUSAL_LOG_EVERY_S = 10.0  # a flood is logged once per reason this often, with the count since
CLIENT, SERVER = v.Side.CLIENT, v.Side.SERVER
T = TypeVar("T")


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


class Leg(asyncio.Protocol):
    """One side of a session: forwards to `peer` once relaying, reports the rest to the session."""

    __slots__ = ("closed", "eof", "nbytes", "peer", "session", "side", "transport", "writing_paused")

    def __init__(self, session: Session, side: v.Side) -> None:
        self.session, self.side = session, side
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None  # the other leg's transport, while relaying
        self.nbytes = 0
        self.eof = False
        self.closed = False
        self.writing_paused = False  # our write buffer is over its high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the backend socket was tuned when it was created (relay/sockets.connect_raw)
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None:
            self.nbytes += len(data)
            peer.write(data)
        else:
            self.session.early_data(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        return self.session.leg_event(self, v.Eof(self.side))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.session.leg_event(self, v.Lost(self.side, None if exc is None else str(exc)))

    # Our transport's write buffer is full: stop reading from the other side until it drains.
    def pause_writing(self) -> None:
        self.writing_paused = True
        other = self.session.leg(CLIENT if self.side is SERVER else SERVER).transport
        if other is not None and not other.is_closing():
            other.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        other = self.session.leg(CLIENT if self.side is SERVER else SERVER).transport
        if other is not None and not other.is_closing():
            other.resume_reading()


class ClientSide(Leg):
    """The protocol factory target for listeners: each accepted connection starts a Session."""

    def __init__(self, ctx: RelayContext, listener: str) -> None:
        super().__init__(Session(ctx, listener, self), CLIENT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # accepted sockets inherit TCP_NODELAY and keepalive from the listener (Linux)
        self.transport = transport  # type: ignore[assignment]
        self.session.started_client()


class Session:
    worker = 0  # relayed by this process (a worker's sessions are RemoteSession in the primary)

    def __init__(self, ctx: RelayContext, listener: str, client: Leg) -> None:
        self.ctx = ctx
        self.id = ctx.new_session_id()
        self.listener = listener
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.machine = SessionMachine(ctx.settings, listener, self.id, self.started_wall)
        self.client = client
        self.backend = Leg(self, SERVER)
        self._deadline: Deadline | None = None
        self._backend_early = b""  # what a server says before relaying starts (rare: no buffer kept)
        self._backend_sock: socket.socket | None = None
        self._pump: SplicePump | None = None
        self._source: str | None = None  # set once admitted (policy.limits): released at the end
        self._handshaking = False
        self._connecting: asyncio.Future[Any] | None = None  # the connect under way (CancelConnect stops it)
        self._transparent: str | None = None  # transparent mode: the client address the connect comes from
        self.host_saw: tuple[str, int] | None = None  # the address the server saw (set when connected)
        self._sending: asyncio.Task[None] | None = None  # a splice relay's first bytes, still going out
        self._cut = False  # aborted for an illegal event (_handle)

    # -- what readers see (relay/context.SessionView) ------------------------------------------

    @property
    def state(self) -> v.State:
        return self.machine.state

    @property
    def relaying(self) -> bool:
        return self.machine.state is v.State.RELAY

    @property
    def client_addr(self) -> tuple[str, int]:
        return self.machine.addr

    @property
    def user(self) -> str | None:
        return self.machine.user

    @property
    def decision(self) -> Decision | None:
        return self.machine.decision

    @property
    def server(self) -> Server | None:
        return self.machine.server

    @property
    def end_reason(self) -> str:
        return self.machine.end_reason

    @property
    def bytes_up(self) -> int:
        """Client -> server bytes so far (live, whichever relay moves them)."""
        pump = self._pump
        return self.client.nbytes + (pump.up.nbytes if pump is not None and not pump.closed else 0)

    @property
    def bytes_down(self) -> int:
        pump = self._pump
        return self.backend.nbytes + (pump.down.nbytes if pump is not None and not pump.closed else 0)

    def leg(self, side: v.Side) -> Leg:
        return self.client if side is CLIENT else self.backend

    # -- events in -------------------------------------------------------------------------------

    def started_client(self) -> None:
        assert self.client.transport is not None
        self._handle(v.ClientConnected(peer_host(self.client.transport)))

    def early_data(self, leg: Leg, data: bytes) -> None:
        if leg is self.backend:
            self._backend_early += data  # a server speaking before relaying starts: kept, sent later
        else:
            self._handle(v.ClientData(data))

    def leg_event(self, leg: Leg, event: v.Eof | v.Lost) -> bool:
        """An end from a leg; True keeps our half open (half-close, while relaying)."""
        if leg is not self.client and leg is not self.backend:
            return False  # a backend attempt that was abandoned
        self._handle(event)
        return self.machine.state is v.State.RELAY

    def _handshake_expired(self) -> None:
        self._deadline = None
        self._handle(v.DeadlinePassed())

    def abort(self, reason: str) -> None:
        """Cut the session now (shutdown, admin action). The machine resets the legs it relays
        through transports; a splice relay (no transports) is cut here, and its end comes back as
        RelayEnded."""
        self._handle(v.Aborted(reason))
        if self._pump is not None:
            self._pump.abort(reason)
        elif self._sending is not None:
            self._sending.cancel()

    def _handle(self, event: v.Event) -> None:
        """Every event goes to the machine here, the session's edge. An illegal one (a bug of ours:
        the shell and the machine disagree about this connection) is logged with the session id and
        counted, and the session is cut, once: the machine's state is untouched by it, so the abort
        winds the session down as any other; the process goes on."""
        try:
            commands = self.machine.handle(event)
        except v.IllegalEvent as exc:
            self.ctx.stats.connections["illegal-event"] += 1
            log.error("session=%s %s; the session is cut", self.id, exc,
                      extra={"event": {"event": "illegal-event", "session": self.id, "state": exc.state.value,
                                       "illegal": type(exc.event).__name__}})
            if not self._cut:
                self._cut = True
                self.abort("illegal event")
            return
        self._do(commands)

    # -- commands out ---------------------------------------------------------------------------

    def _do(self, commands: list[v.Command]) -> None:
        """Each command, in order, carried out before the next; nothing is left for later. A
        command whose answer can come at once (`Admit`, a `Connect` that connected or failed in
        its first call, a `StartRelay` whose splice relay failed at its first send) is the last
        of its batch (tests/unit/test_session_machine_stateful.py checks it), so its answer,
        handled then and there, always follows every command before it."""
        for command in commands:
            _COMMANDS[type(command)](self, command)

    # one method per command (dispatched by type in _COMMANDS, after the class)

    def _c_admit(self, c: v.Admit) -> None:
        self._admit(c.source)

    def _c_register(self, c: v.Register) -> None:
        self.ctx.sessions[self.id] = self
        self._deadline = self.ctx.deadlines.add(c.deadline_s, self._handshake_expired)

    def _c_handshake_done(self, _c: v.HandshakeDone) -> None:
        self._out_of_handshake()
        self.ctx.observe_handshake(time.monotonic() - self.started)

    def _c_route_asked(self, c: f.RouteAsked) -> None:
        # asked in a callback of its own; its Decided may come within the call (handled then)
        asyncio.get_running_loop().call_soon(self.ctx.control.ask, c, self._answered)

    def _c_attempt_started(self, c: f.AttemptStarted) -> None:
        # its Durable comes in a later pass of the loop, after the Connect that follows this command
        self.ctx.control.ask(c, self._answered)

    def _c_tell(self, c: f.Fact) -> None:
        self.ctx.control.tell(c)

    def _c_connect(self, c: v.Connect) -> None:
        self._connect(c.server, c.budget_s)

    def _c_cancel_connect(self, _c: v.CancelConnect) -> None:
        if self._connecting is not None:
            self._connecting.cancel()  # an abandoned attempt: stop connecting now

    def _c_attempt_failed(self, c: f.AttemptFailed) -> None:
        self.ctx.control.tell(c)
        self.ctx.stats.connect_failures[c.server.name] += 1
        log.warning("session=%s connect to %s (%s) failed: %s", self.id, c.server.name, c.server.address, c.error)
        self._drop_backend()

    def _c_abandoned(self, c: f.Abandoned) -> None:
        self.ctx.control.tell(c)
        self._drop_backend()

    def _c_pause_client(self, _c: v.PauseClient) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def _c_start_relay(self, c: v.StartRelay) -> None:
        self._account_relay(c.decision, c.server)
        if self._backend_sock is not None:
            self._start_splice(c.first)
        else:
            self._start_copy(c.first, c.resume)

    def _c_write_eof(self, c: v.WriteEof) -> None:
        transport = self.leg(c.side).transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def _c_close(self, c: v.Close) -> None:
        self._close(self.leg(c.side), hard=c.reset)

    def _c_refuse(self, c: v.Refuse) -> None:
        self._refuse(c.reason, c.detail)

    def _c_reject(self, c: v.Reject) -> None:
        self._reject(c.count, c.reason, c.malformed)

    def _c_count_empty(self, _c: v.CountEmpty) -> None:
        self._out_of_handshake()
        self.ctx.stats.connections["empty"] += 1

    def _c_finish(self, c: v.Finish) -> None:
        self._finish(c.relayed, c.count)

    def _c_log(self, c: v.Log) -> None:
        self._log(c.level, c.message, c.count)

    def _log(self, level: int, message: str, count: str) -> None:
        if count:
            self.ctx.stats.connections[count] += 1
        log.log(level, "session=%s %s", self.id, message)

    def _admit(self, source: str) -> None:
        """The limits of [limits] (policy.limits.Admission), by the client's address."""
        refusal = self.ctx.admission.admit(source, time.monotonic())
        if refusal is None:
            self._source, self._handshaking = source, True
            self._handle(v.Admitted())
        else:
            self._handle(v.Admitted(refusal, refusal_detail(refusal, source, self.ctx.settings)))

    def _out_of_handshake(self) -> None:
        if self._deadline is not None:
            Deadlines.cancel(self._deadline)
            self._deadline = None
        if self._handshaking:
            self._handshaking = False
            self.ctx.admission.handshake_done()

    def _refuse(self, reason: str, detail: str) -> None:
        """Before any byte is relayed: reset, counted, logged (rate-limited)."""
        self._out_of_handshake()
        self.ctx.stats.refused[reason] += 1
        refusals.note(reason, format_addr(*self.client_addr), detail)
        if self.decision is not None:  # refused after routing (a per-user or new-user limit): a decision too
            self.ctx.record_decision(self, reason, None, detail)
        transport = self.client.transport
        if transport is not None:
            transport.abort()  # nothing to flush, and no TIME_WAIT left behind by a flood

    def _reject(self, count: str, reason: str, malformed: str | None) -> None:
        self._out_of_handshake()
        if malformed is not None:
            self.ctx.stats.malformed[malformed] += 1
        self.ctx.stats.connections[count] += 1
        self.ctx.record_decision(self, count, None, reason)
        log.info("session=%s rejected client=%s user=%s reason=%s",
                 self.id, format_addr(*self.client_addr), self.machine.user_text(), reason,
                 extra={"event": {"event": "rejected", "session": self.id, "client": format_addr(*self.client_addr),
                                  "user": self.user, "result": count, "reason": reason}})
        transport = self.client.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    # -- routing and attempts ----------------------------------------------------------------------

    # Routing, connecting and waiting for durability are callbacks, not a task: a connection with
    # a known user and a server that answers at once runs from the Connection Request to the relay
    # in one pass of the event loop, without a Task, a coroutine or a timeout context of its own.
    # Every operation the machine starts answers with its event: the route's Decided with
    # RouteAnswered, each connect with ConnectDone, each attempt's Durable (the route's first, each
    # AttemptStarted) with AttemptDurable, in whichever order they end; the machine waits for what
    # it needs. The machine reads no clock: each of these events carries time.monotonic() (`at`),
    # the one clock of the connect budget.

    def _answered(self, answer: f.Answer) -> None:
        """The control plane's answer, as the machine's event (stamped with the time it came)."""
        match answer:
            case f.Decided(_, decision, ambiguous, attempted, unavailable):
                self._handle(v.RouteAnswered(decision, ambiguous, attempted, unavailable, at=time.monotonic()))
            case f.Durable(_, winner, unavailable):
                self._handle(v.AttemptDurable(winner, unavailable, at=time.monotonic()))

    def _connect(self, server: Server, budget_s: float) -> None:
        """Connect (relay/sockets.connect_raw, bounded by the budget); its ConnectDone follows,
        whatever happens (at once if the first call settled it). The copy relay wraps the
        connected socket in a transport."""
        self._backend_sock = None
        started = time.monotonic()
        self._transparent = self.machine.addr[0] if server.name in self.ctx.settings.transparent else None
        connecting = connect_raw(asyncio.get_running_loop(), server.host, server.port, budget_s, self._transparent)
        if self.ctx.splice is None:
            connecting = tasks.start(self._wrap(connecting))
        self._connecting = connecting
        _when_done(connecting, lambda done: self._connect_ended(done, budget_s, started))

    async def _wrap(self, connecting: asyncio.Future[socket.socket]) -> socket.socket:
        sock = await connecting
        try:
            await asyncio.get_running_loop().create_connection(lambda: self.backend, sock=sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_ended(self, connecting: asyncio.Future[socket.socket], budget_s: float, started: float) -> None:
        self._connecting = None
        error = self._connect_result(connecting, budget_s, started)
        self._handle(v.ConnectDone(error, at=time.monotonic()))

    def _connect_result(self, connecting: asyncio.Future[socket.socket], budget_s: float,
                        started: float) -> str | None:
        """None when connected, else why not (a cancelled connect: the client left)."""
        if connecting.cancelled():
            return "client left during connect"
        exc = connecting.exception()
        if isinstance(exc, TimeoutError):
            if self._transparent is not None:  # the SYN left; the SYN-ACK to the client's address did not come
                return (f"connect timeout after {budget_s:.2f}s in transparent mode: the server's replies to "
                        f"{self._transparent} most likely do not route back through this balancer (README, "
                        "Transparent mode: the hosts' route to clients, the ip rule and the nftables mark)")
            return f"connect timeout after {budget_s:.2f}s"
        if isinstance(exc, OSError):
            return describe_os_error(exc)
        if exc is not None:
            raise exc
        sock = connecting.result()
        if self.ctx.splice is not None:
            self._backend_sock = sock
        self.ctx.observe_connect(time.monotonic() - started)
        self._saw(sock)
        if self.backend.closed:
            return "closed by server during connect"
        return None

    def _saw(self, sock: socket.socket) -> None:
        """Note the address the server saw (the log line, the metric): the client's in
        transparent mode, else the balancer's own. Asked of the kernel only when it is shown."""
        transparent = self._transparent
        if transparent is None and not log.isEnabledFor(logging.INFO):
            self.ctx.stats.backend_sources["balancer"] += 1
            return
        try:
            name = sock.getsockname()
            self.host_saw = (str(name[0]), int(name[1]))
        except OSError:  # reset already: the relay finds out
            self.host_saw = None
        seen = "balancer"
        if transparent is not None and self.host_saw is not None:
            if self.host_saw[0] == source_for(transparent, sock.family):
                seen = "client"
            else:
                log.info("session=%s transparent: client %s and server %s are not of one IP version, the "
                         "server sees the balancer's address", self.id, transparent, self.machine.server and
                         self.machine.server.address)
        self.ctx.stats.backend_sources[seen] += 1

    def _drop_backend(self) -> None:
        if self.backend.transport is not None:
            self.backend.transport.abort()
        if self._backend_sock is not None:
            self._backend_sock.close()
            self._backend_sock = None
        self.backend = Leg(self, SERVER)
        self._backend_early = b""

    # -- the relay -------------------------------------------------------------------------------------

    def _start_copy(self, first_bytes: bytes, resume: bool) -> None:
        client, backend = self.client, self.backend
        assert client.transport is not None and backend.transport is not None
        client.peer, backend.peer = backend.transport, client.transport
        client.nbytes += len(first_bytes)
        backend.transport.write(first_bytes)  # the CR verbatim, then what came after it
        if self._backend_early:
            backend.nbytes += len(self._backend_early)
            client.transport.write(self._backend_early)
            self._backend_early = b""
        if resume and not backend.writing_paused:  # paused for the early bytes: read again, unless the
            client.transport.resume_reading()  # first write filled the server's buffer (pause_writing paused it)

    def _start_splice(self, first_bytes: bytes) -> None:
        """Hand both sockets to a SplicePump: the client's fd is taken over from its transport."""
        assert self._backend_sock is not None and self.client.transport is not None and self.ctx.splice is not None
        backend, self._backend_sock = self._backend_sock, None
        transport = self.client.transport
        fd = transport.get_extra_info("socket").fileno()
        client = socket.socket(backend.family, socket.SOCK_STREAM, 0, os.dup(fd))  # no probing syscalls
        self.client = Leg(self, CLIENT)  # the old leg's connection_lost (from the abort below) is ignored
        self.client.transport, self.client.nbytes = None, len(first_bytes)
        transport.abort()  # closes the transport's fd only: our dup keeps the connection
        try:
            sent = _send_now(backend, first_bytes)  # a few hundred bytes into an empty buffer: all
        except OSError as exc:
            self._splice_failed(client, backend, exc)
            return
        if sent == len(first_bytes):
            self._start_pump(client, backend)
        else:
            # bounded like a connect, and cut by abort() (shutdown, admin): a server that reads
            # nothing must not hold the session here forever
            self._sending = tasks.start(self._send_rest(client, backend, first_bytes[sent:]))

    async def _send_rest(self, client: socket.socket, backend: socket.socket, rest: bytes) -> None:
        try:
            async with asyncio.timeout(self.ctx.settings.connect_timeout_s):
                await asyncio.get_running_loop().sock_sendall(backend, rest)
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not self.machine.end_reason:
                raise  # not an abort: the session's own task is cancelled
            self._splice_failed(client, backend, exc)
            return
        finally:
            self._sending = None
        self._start_pump(client, backend)

    def _start_pump(self, client: socket.socket, backend: socket.socket) -> None:
        assert self.ctx.splice is not None
        self._pump = SplicePump(client, backend, self.ctx.splice, self._splice_done)
        self._pump.start()

    def _splice_failed(self, client: socket.socket, backend: socket.socket, exc: BaseException) -> None:
        backend.close()
        client.close()
        reason = self.machine.end_reason
        if isinstance(exc, OSError):
            reason = f"server error: {describe_os_error(exc)}"
        elif isinstance(exc, TimeoutError):
            reason = "server error: it did not take the first bytes within connect_timeout"
        self._handle(v.RelayEnded(0, 0, reason))

    def _splice_done(self, up: int, down: int, reason: str) -> None:
        self.client.nbytes += up
        self.backend.nbytes += down
        self.client.closed = self.backend.closed = True
        self._handle(v.RelayEnded(up, down, reason))

    def _account_relay(self, decision: Decision, server: Server) -> None:
        """Relaying from now on (the control plane was told): counted, logged, before the first
        byte is sent."""
        ctx = self.ctx
        ctx.stats.connections[str(decision.reason)] += 1
        ctx.record_decision(self, str(decision.reason), server.name, decision.note)
        if log.isEnabledFor(logging.INFO):
            client = format_addr(*self.client_addr)
            moved = f" moved_from={decision.moved_from}" if decision.moved_from else ""
            note = f' note="{decision.note}"' if decision.note else ""  # a backup or slow start decided
            route = _route_text(decision.route)
            host_saw = format_addr(*self.host_saw) if self.host_saw is not None else None
            saw = f" host_saw={host_saw}" if host_saw is not None else ""
            logs.line(log, logging.INFO,
                      f"session={self.id} routed client={client} listener={self.listener} "
                      f"user={self.machine.user_text()} pool={decision.pool} server={server.name} "
                      f"addr={server.address} reason={decision.reason} route={route}{moved}{note}"
                      f"{saw}",
                      {"event": "routed", "session": self.id, "client": client, "listener": self.listener,
                       "user": self.user, "pool": decision.pool, "server": server.name, "address": server.address,
                       "reason": str(decision.reason), "route": decision.route, "moved_from": decision.moved_from,
                       "note": decision.note or None, "host_saw": host_saw})

    # -- teardown -----------------------------------------------------------------------------------

    @staticmethod
    def _close(leg: Leg, *, hard: bool) -> None:
        transport = leg.transport
        if transport is not None and not transport.is_closing():
            if hard:
                reset(transport)  # the peer reset, or an abort: pass the reset on, promptly
            else:
                transport.close()  # flushes what is buffered, then FIN

    def _finish(self, relayed: bool, count: str) -> None:
        if self.ctx.sessions.pop(self.id, None) is None:
            return  # never registered, or finished already
        self._out_of_handshake()
        if count:
            self.ctx.stats.connections[count] += 1
        if self._source is not None:
            self.ctx.admission.closed(self._source)
        server, decision = self.machine.server, self.machine.decision
        if not relayed or server is None or decision is None:
            return
        ctx = self.ctx
        ctx.control.tell(f.Finished(self.id, decision, server, self.client.nbytes, self.backend.nbytes))
        ctx.stats.bytes_up += self.client.nbytes
        ctx.stats.bytes_down += self.backend.nbytes
        if log.isEnabledFor(logging.INFO):
            duration = time.monotonic() - self.started
            client, up, down = format_addr(*self.client_addr), self.client.nbytes, self.backend.nbytes
            logs.line(log, logging.INFO,
                      f"session={self.id} end client={client} user={self.machine.user_text()} server={server.name} "
                      f"bytes_up={up} bytes_down={down} duration={duration:.3f}s close={self.end_reason}",
                      {"event": "end", "session": self.id, "client": client, "user": self.user,
                       "server": server.name, "bytes_up": up, "bytes_down": down,
                       "duration_s": round(duration, 3), "close": self.end_reason})

_COMMANDS: dict[type, Callable[[Session, Any], None]] = {
    v.Admit: Session._c_admit, v.Register: Session._c_register, v.HandshakeDone: Session._c_handshake_done,
    **dict.fromkeys(f.Fact.__args__, Session._c_tell),  # a fact is told as it is, unless named below
    f.RouteAsked: Session._c_route_asked, f.AttemptStarted: Session._c_attempt_started,
    v.Connect: Session._c_connect, v.CancelConnect: Session._c_cancel_connect,
    f.AttemptFailed: Session._c_attempt_failed, f.Abandoned: Session._c_abandoned,
    v.PauseClient: Session._c_pause_client,
    v.StartRelay: Session._c_start_relay, v.WriteEof: Session._c_write_eof, v.Close: Session._c_close,
    v.Refuse: Session._c_refuse, v.Reject: Session._c_reject, v.CountEmpty: Session._c_count_empty,
    v.Finish: Session._c_finish, v.Log: Session._c_log,
}


def _when_done(future: asyncio.Future[T], callback: Callable[[asyncio.Future[T]], None]) -> None:
    """`callback(future)` now if it is done (no pass of the loop in between), else when it is."""
    if future.done():
        callback(future)
    else:
        future.add_done_callback(callback)


def _send_now(sock: socket.socket, data: bytes) -> int:
    """What a non-blocking send takes of `data` at once (0 when the buffer is full)."""
    try:
        return sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0


def _route_text(label: str | None) -> str:
    return "-" if label is None else label.split(" ", 1)[0]
