"""The primary's side of worker mode: start the workers, answer their routing questions.

`[balancer] workers = N` runs this process (the primary, which relays too) and N-1 worker
processes. Every process listens on the same addresses with SO_REUSEPORT, so the kernel spreads
new connections over them; each relays its own connections (splice or copy) end to end.

What must exist once stays here: the router, the sticky table and its store, health checks,
the directory, the admin API and metrics. A worker asks the primary where a connection goes
and tells what happened to it, in the session facts of `rdpbalancer.relay.facts`, sent as they
are; the primary hands each to the same `LocalControl` its own sessions use, one at a time on its
event loop, and sends the answers back as they are.
So two workers can never assign one new user to two servers, leastconn counts every worker's
sessions, and health checks are not multiplied.

A worker that dies is restarted; its sessions (gone with it) leave the counts at once. If the
primary dies, its workers see their channel close and exit: systemd restarts the whole unit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rdpbalancer.ipc import Channel, Message
from rdpbalancer.policy.model import Decision, Server
from rdpbalancer.relay.context import SessionView, Stats
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.facts import (
    Abandoned,
    Answer,
    AttemptFailed,
    AttemptStarted,
    Decided,
    Fact,
    Finished,
    Question,
    Relaying,
    RouteAsked,
    SessionInfo,
)
from rdpbalancer.relay.vocabulary import State
from rdpbalancer.runtime import Child, own_command
from rdpbalancer.tasks import TaskSet
from rdpbalancer.workers.messages import (
    Abort,
    Quiesce,
    Quiet,
    Ready,
    Report,
    Setup,
    Stop,
    WorkerSetup,
)

log = logging.getLogger("rdpbalancer.workers")

RESTART_DELAY_S = 1.0  # before restarting a worker that died (no tight crash loop)
STOP_TIMEOUT_S = 5.0  # a worker that has not exited this long after "stop" is killed


class RemoteSession:
    """A session relayed by a worker, as the admin API and metrics of the primary see it."""

    relaying = True

    def __init__(self, link: WorkerLink, sid: str, info: SessionInfo) -> None:
        self.link, self.id, self.info = link, sid, info
        self.state = State.RELAY
        self.decision: Decision = info.decision
        self.server: Server = info.server
        self.user, self.client_addr, self.listener = info.user, info.client_addr, info.listener
        self.started_wall = info.started_wall
        self.bytes_up = self.bytes_down = 0  # updated by the worker's periodic report
        self.worker = link.index

    def abort(self, reason: str) -> None:
        self.link.send(Abort(self.id, reason))


@dataclass(slots=True)
class WorkerLink:
    """One worker process and its channel."""

    index: int
    pool: WorkerPool
    process: Child | None = None
    channel: Channel | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    quiet: asyncio.Event = field(default_factory=asyncio.Event)  # closed its listeners (a handoff)
    stats: Stats = field(default_factory=Stats)
    handshaking: int = 0
    finished_up: int = 0  # bytes of this worker's finished sessions, counted here (exact, monotonic)
    finished_down: int = 0
    sessions: dict[str, RemoteSession] = field(default_factory=dict)
    attempts: dict[str, Server] = field(default_factory=dict)  # sid -> server of an attempt in flight

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.channel is not None and not self.channel.closed

    def send(self, message: Message) -> None:
        if self.channel is not None:
            self.channel.send(message)

    # -- messages from the worker ---------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        """Every message a worker sends, dispatched here (workers/messages.py)."""
        pool = self.pool
        match message:
            case RouteAsked() | AttemptStarted():
                pool.ask(self, message)
            case Relaying():
                pool.relaying(self, message)
            case Finished():
                pool.finished(self, message)
            case AttemptFailed() | Abandoned():
                self.attempts.pop(message.sid, None)
                pool.control.tell(message)
            case _ if isinstance(message, Fact):  # any other fact: to the control plane as it is
                pool.control.tell(message)
            case Report():
                pool.report(self, message)
            case Ready(pid):
                if not self.ready.is_set():
                    log.debug("worker %d applied its setup (pid %d)", self.index, pid)
                self.ready.set()
            case Quiet():
                self.quiet.set()
            case _:
                log.error("worker %d sent an unknown message %s; ignored", self.index, type(message).__name__)


class WorkerPool:
    """Starts `count - 1` worker processes and serves their control channels."""

    def __init__(self, count: int, control: LocalControl, sessions: dict[str, SessionView],
                 decisions: deque[dict[str, Any]], setup: Callable[[], WorkerSetup]) -> None:
        self.count = count
        self.control = control
        self.sessions = sessions  # the primary's registry (ctx.sessions): remote sessions join it
        self.decisions = decisions
        self.setup = setup
        self.links = [WorkerLink(i, self) for i in range(1, count)]
        self.stopping = False
        self.restarts_total = 0
        self.retired = Stats()  # counters of worker processes that exited (counters never go down)
        self._restart_tasks = TaskSet()
        self.draining = False  # a handoff: workers relay what they have, accept nothing, are not restarted

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, timeout_s: float = 30.0) -> None:
        for link in self.links:
            await self._spawn(link)
        try:
            async with asyncio.timeout(timeout_s):
                for link in self.links:
                    await link.ready.wait()
        except TimeoutError:
            dead = [str(link.index) for link in self.links if not link.ready.is_set()]
            await self.stop()
            raise WorkerError(f"worker(s) {', '.join(dead)} did not start within {timeout_s:g}s") from None
        log.info("%d worker processes started: pids %s", len(self.links), ", ".join(str(w.pid) for w in self.links))

    async def _spawn(self, link: WorkerLink) -> None:
        ours, theirs = socket.socketpair()
        try:
            link.process = Child(own_command("worker", "--fd", str(theirs.fileno()), "--index", str(link.index)),
                                 pass_fds=[theirs.fileno()])
        finally:
            theirs.close()
        link.ready = asyncio.Event()
        link.started_at = time.time()
        loop = asyncio.get_running_loop()
        channel = Channel(link.on_message, lambda exc: self._lost(link, exc))
        await loop.connect_accepted_socket(lambda: channel, ours)
        link.channel = channel
        channel.send(Setup(link.index, self.setup()))

    async def reconfigure(self, timeout_s: float = 10.0) -> None:
        """After a reload: every worker gets the new relay settings and listen addresses; returns
        once each live worker applied them (listening on new addresses), or after `timeout_s`."""
        setup = self.setup()
        await self._ask_all(lambda link: Setup(link.index, setup), "ready", "confirm the new configuration",
                            timeout_s)

    async def quiesce(self, timeout_s: float = 10.0) -> None:
        """A handoff: every worker accepts what is queued on its sockets and closes them."""
        self.draining = True
        await self._ask_all(lambda _link: Quiesce(), "quiet", "close their listeners", timeout_s)

    async def _ask_all(self, message: Callable[[WorkerLink], Message], answer: str, what: str,
                       timeout_s: float) -> None:
        """Send `message(link)` to every live worker; wait for each one's `answer` event
        (a WorkerLink field: "ready" or "quiet")."""
        waiting = [link for link in self.links if link.alive]
        for link in waiting:
            setattr(link, answer, asyncio.Event())
            link.send(message(link))
        try:
            async with asyncio.timeout(timeout_s):
                for link in waiting:
                    await getattr(link, answer).wait()
        except TimeoutError:
            late = [str(link.index) for link in waiting if not getattr(link, answer).is_set()]
            log.error("worker(s) %s did not %s within %gs", ", ".join(late), what, timeout_s)

    async def resume(self) -> None:
        """A handoff failed after `quiesce`: listen again (a setup re-opens what is missing)."""
        self.draining = False
        for link in self.links:
            if not link.alive and link.process is not None and not self.stopping:
                await self._spawn(link)
        await self.reconfigure()

    async def stop(self) -> None:
        self.stopping = True
        self._restart_tasks.cancel()
        for link in self.links:
            link.send(Stop())
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for link in self.links:
            process = link.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.error("worker %d (pid %d) did not stop within %gs; killed", link.index, process.pid,
                          STOP_TIMEOUT_S)
                process.kill()
                await process.wait()
            if link.channel is not None:
                link.channel.close()

    def _lost(self, link: WorkerLink, exc: Exception | None) -> None:
        """The channel closed: the worker exited or died. Its sessions died with it."""
        for sid, server in link.attempts.items():
            self.control.tell(Abandoned(sid, server))
        link.attempts.clear()
        for sid, session in link.sessions.items():
            self.sessions.pop(sid, None)
            link.finished_up += session.bytes_up
            link.finished_down += session.bytes_down
            self.control.tell(Finished(sid, session.decision, session.server, session.bytes_up, session.bytes_down))
        lost = len(link.sessions)
        link.sessions.clear()
        link.handshaking = 0
        self._merge(self.retired, link.stats)
        link.stats = Stats()
        if self.stopping or self.draining:
            return  # (draining: a replacement would listen again after a handoff)
        self._restart_tasks.spawn(self._restart(link, lost), name=f"restart-worker-{link.index}")

    async def _restart(self, link: WorkerLink, lost: int) -> None:
        code: int | str = "unknown"
        if link.process is not None:
            try:  # its channel closed: it has exited or is about to
                code = await asyncio.wait_for(link.process.wait(), RESTART_DELAY_S)
            except TimeoutError:
                code = "none: alive but deaf, killed"  # it cannot be trusted
                link.process.send_signal(signal.SIGKILL)
                await link.process.wait()
        log.error("worker %d (pid %s) is gone (exit status %s); its %d session(s) ended; restarting it",
                  link.index, link.pid, code, lost)
        await asyncio.sleep(RESTART_DELAY_S)
        if self.stopping:
            return
        link.restarts += 1
        self.restarts_total += 1
        await self._spawn(link)

    # -- what the API and metrics read ---------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": 0, "pid": os.getpid(), "alive": True, "role": "primary"}] + [
            {"index": w.index, "pid": w.pid, "alive": w.alive, "role": "worker", "restarts": w.restarts,
             "started": w.started_at, "sessions": len(w.sessions), "handshaking": w.handshaking,
             "connections": dict(w.stats.connections)}
            for w in self.links
        ]

    @property
    def any_alive(self) -> bool:
        """Some worker still runs (after a handoff: still serves what it accepted)."""
        return any(link.alive for link in self.links)

    @property
    def handshaking(self) -> int:
        return sum(w.handshaking for w in self.links)

    def merged_stats(self, local: Stats) -> Stats:
        total = Stats(Counter(local.connections), Counter(local.malformed), Counter(local.connect_failures),
                      local.bytes_up, local.bytes_down, Counter(local.refused), Counter(local.backend_sources))
        self._merge(total, self.retired)
        for w in self.links:
            self._merge(total, w.stats)
            total.bytes_up += w.finished_up
            total.bytes_down += w.finished_down
        return total

    @staticmethod
    def _merge(into: Stats, stats: Stats) -> None:
        """Add the counters of `stats` (bytes are counted from "finished" messages instead)."""
        into.connections.update(stats.connections)
        into.malformed.update(stats.malformed)
        into.connect_failures.update(stats.connect_failures)
        into.refused.update(stats.refused)
        into.backend_sources.update(stats.backend_sources)

    # -- what the workers' messages do (WorkerLink.on_message dispatches) ----------------------------

    def ask(self, link: WorkerLink, question: Question) -> None:
        """A worker's question, asked of the same `LocalControl` as the primary's own sessions
        ask (with a shared store, the user's entry is read from Redis before deciding); each
        answer goes back as it is."""
        if isinstance(question, AttemptStarted):
            link.attempts[question.sid] = question.server
        self.control.ask(question, lambda answer: self._answer(link, answer))

    def _answer(self, link: WorkerLink, answer: Answer) -> None:
        if isinstance(answer, Decided) and answer.attempted and answer.decision is not None:
            first = answer.decision.candidates[0]
            if not link.alive:  # the worker died while the store answered: its attempt is nobody's
                self.control.tell(Abandoned(answer.sid, first))
                return
            link.attempts[answer.sid] = first
        link.send(answer)

    def relaying(self, link: WorkerLink, fact: Relaying) -> None:
        link.attempts.pop(fact.sid, None)
        self.control.tell(fact)
        session = RemoteSession(link, fact.sid, fact.info)
        link.sessions[fact.sid] = session
        self.sessions[fact.sid] = session

    def finished(self, link: WorkerLink, fact: Finished) -> None:
        if link.sessions.pop(fact.sid, None) is None:
            return
        self.sessions.pop(fact.sid, None)
        link.finished_up += fact.bytes_up
        link.finished_down += fact.bytes_down
        self.control.tell(fact)

    def report(self, link: WorkerLink, report: Report) -> None:
        """The worker's periodic report: its counters, live byte counts, recent decisions."""
        link.stats, link.handshaking = report.stats, report.handshaking
        for sid, (up, down) in report.live.items():
            session = link.sessions.get(sid)
            if session is not None:
                session.bytes_up, session.bytes_down = up, down
        self.decisions.extend(report.decisions)


class WorkerError(Exception):
    """Worker processes could not be started."""
