"""A worker process (`python -m rdpbalancer worker --fd N --index I`, started by the primary).

It relays connections exactly as the primary does, but asks the primary where each goes:
`RemoteControl` sends every question and fact (relay/facts.py) as it is on the inherited
socketpair, and hands the primary's answers to the session that asked. It has no configuration
file of its own: the primary sends its relay settings and the addresses to listen on (the ports it
already bound), again after each reload.

If the channel closes (the primary exited or was killed), the worker aborts its sessions and
exits: a session nobody counts must not outlive the process that routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from rdpbalancer.ipc import Channel, Message
from rdpbalancer.relay.context import RelayContext, Stats
from rdpbalancer.relay.control import Reply
from rdpbalancer.relay.facts import Answer, Decided, Durable, Fact, Question, RouteAsked
from rdpbalancer.relay.listener import open_listeners
from rdpbalancer.relay.splice import PipePool
from rdpbalancer.runtime import loop_factory, tune_gc
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

log = logging.getLogger("rdpbalancer.worker")

REPORT_INTERVAL_S = 1.0  # counters and live byte counts go to the primary this often


class RemoteControl:
    """`Control` over the channel to the primary: each question and fact goes as it is, and the
    primary's answers come back as they are (one question in flight per session)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        # sid -> its reply, and the answer it awaits
        self._waiting: dict[str, tuple[Reply, type[Decided] | type[Durable]]] = {}
        self.gone: str | None = None

    def ask(self, question: Question, reply: Reply) -> None:
        # (a route's first attempt the primary starts itself: its Durable follows the Decided)
        awaited = Decided if isinstance(question, RouteAsked) else Durable
        if self.gone is not None:  # never within the call: an attempt's Connect is still to come
            asyncio.get_running_loop().call_soon(reply, _unavailable(awaited, question.sid, self.gone))
            return
        self._waiting[question.sid] = (reply, awaited)
        self.channel.send(question)

    def tell(self, fact: Fact) -> None:
        self.channel.send(fact)

    def answered(self, answer: Answer) -> None:
        """The primary's answer: to the session that asked (nobody's once it left)."""
        waiting = self._waiting.pop(answer.sid, None)
        if waiting is None:
            return
        reply, _awaited = waiting
        if isinstance(answer, Decided) and answer.attempted:
            self._waiting[answer.sid] = (reply, Durable)  # the first attempt's Durable follows
        reply(answer)

    def lost(self, why: str) -> None:
        """The primary is gone: every question still open is answered "unavailable"."""
        self.gone = why
        waiting, self._waiting = self._waiting, {}
        for sid, (reply, awaited) in waiting.items():
            reply(_unavailable(awaited, sid, why))


def _unavailable(awaited: type[Decided] | type[Durable], sid: str, why: str) -> Answer:
    return Decided(sid, None, unavailable=why) if awaited is Decided else Durable(sid, unavailable=why)


QUIESCE_ACCEPT_S = 0.2  # a handoff: time to accept what was queued on our sockets before closing
DRAIN_POLL_S = 0.1  # after a handoff: how often to look whether the last connection ended


class Worker:
    def __init__(self, index: int, channel_fd: int) -> None:
        self.index = index
        self.channel_fd = channel_fd
        self.channel = Channel(self._on_message, self._on_lost)
        self.control = RemoteControl(self.channel)
        self.ctx: RelayContext | None = None
        self.listeners: dict[tuple[str, int], asyncio.Server] = {}
        self.stopped = asyncio.Event()
        self._setup_received = asyncio.Event()
        self._setup: WorkerSetup | None = None
        self._applying = asyncio.Lock()
        self._draining = False  # quiesced by a handoff: exit once idle (a new setup cancels it)
        self.tasks = TaskSet()  # this worker's own background work (its sessions' tasks are ctx.tasks)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=self.channel_fd)
        await loop.connect_accepted_socket(lambda: self.channel, sock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopped.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads come from the primary
        await self._setup_received.wait()
        tune_gc()
        if not self.stopped.is_set():
            reporter = self.tasks.spawn(self._reporter(), name="report")
            await self.stopped.wait()
            reporter.cancel()
        await self._shutdown()

    async def _apply(self, setup: WorkerSetup) -> None:
        async with self._applying:  # one setup at a time, in the order they came
            await self._apply_now(setup)

    async def _apply_now(self, setup: WorkerSetup) -> None:
        from rdpbalancer.logs import setup_logging  # noqa: PLC0415

        self._draining = False  # a failed handoff: listen and serve again

        first = self.ctx is None
        if first:
            setup_logging(setup.log_level, setup.log_format)
            self.ctx = RelayContext(control=self.control, settings=setup.settings)
        else:
            logging.getLogger().setLevel(setup.log_level.upper())
        ctx = self.ctx
        assert ctx is not None
        ctx.configure(setup.settings)
        ctx.splice = (ctx.splice or PipePool(processes=setup.settings.processes)) if setup.settings.splice else None
        wanted = {(host, port): name for name, host, port in setup.listen}
        for address in set(self.listeners) - set(wanted):
            self.listeners.pop(address).close()
        new = [a for a in wanted if a not in self.listeners]
        try:
            opened = await open_listeners(ctx, new, reuse_port=True, names=[wanted[a] for a in new])
        except Exception:
            log.exception("worker %d cannot listen; exiting", self.index)
            self.stopped.set()
        else:
            self.listeners.update(zip(new, opened, strict=True))
            self.channel.send(Ready(os.getpid()))  # applied: the primary may go on
        self._setup_received.set()

    def _on_message(self, message: Message) -> None:
        """Every message the primary sends, dispatched here (workers/messages.py)."""
        match message:
            case Decided() | Durable():
                self.control.answered(message)
            case Abort(sid, reason):
                session = self.ctx.sessions.get(sid) if self.ctx is not None else None
                if session is not None:
                    session.abort(reason)
            case Setup(_index, setup):
                self.tasks.spawn(self._apply(setup), name="setup")
            case Stop():
                self.stopped.set()
            case Quiesce():
                self.tasks.spawn(self._quiesce(), name="quiesce")
            case _:
                log.error("worker %d: unknown message %s from the primary; ignored", self.index,
                          type(message).__name__)

    async def _quiesce(self) -> None:
        """A handoff: new connections go to the new process now (the primary steered the
        SO_REUSEPORT group); accept what is already queued here, then close the listeners. The
        sessions stay until they end; a later "setup" opens the listeners again (a failed handoff)."""
        await asyncio.sleep(QUIESCE_ACCEPT_S)
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        self.channel.send(Quiet(os.getpid()))
        self._draining = True
        # every connection accepted here is served to its end, those still before their
        # Connection Request included; then this worker leaves (the old primary waits for it)
        while self._draining and self.ctx is not None and self.ctx.sessions:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(DRAIN_POLL_S)
        if self._draining:
            log.info("worker %d: its last connection ended after the handoff; exiting", self.index)
            self.stopped.set()

    def _on_lost(self, exc: Exception | None) -> None:
        self.control.lost("the primary process is gone")
        if not self.stopped.is_set():
            log.error("worker %d: the primary process is gone; closing %d session(s) and exiting", self.index,
                      len(self.ctx.sessions) if self.ctx else 0)
        self.stopped.set()
        self._setup_received.set()

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            self._report()

    def _report(self) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        live = {sid: (s.bytes_up, s.bytes_down) for sid, s in ctx.sessions.items() if s.relaying}
        stats = Stats(ctx.stats.connections, ctx.stats.malformed, ctx.stats.connect_failures,
                      ctx.stats.bytes_up, ctx.stats.bytes_down, ctx.stats.refused, ctx.stats.backend_sources)
        decisions = list(ctx.decisions)
        ctx.decisions.clear()
        self.channel.send(Report(stats, live, len(ctx.sessions) - len(live), decisions))

    async def _shutdown(self) -> None:
        for server in self.listeners.values():
            server.close()
        ctx = self.ctx
        if ctx is not None:
            for session in list(ctx.sessions.values()):
                session.abort("shutdown")
            await ctx.tasks.cancel_all()
            await asyncio.sleep(0)
            if not self.channel.closed:
                self._report()
        self.channel.close()
        for server in self.listeners.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)


def main(index: int, channel_fd: int) -> int:

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(Worker(index, channel_fd).run())
    return 0
