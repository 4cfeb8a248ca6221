"""Simulated session hosts: a fake RDP server (tests/support/fakes.py) that keeps its users'
sessions the way an RDS or xrdp host does, as the broker sees it.

- A Connection Request with a user's cookie attaches the connection to her session: an existing
  one (disconnected or active: a new client takes it over and the old connection is closed, as
  RDS does), else a new logon, which takes a random time before the user shows in the host's
  list (longer while many logons run at once: a storm). A host that refuses new logons (drain,
  "deny new connections") answers the Connection Request, then closes: no session.
- The connection closing disconnects the session (a logon under way goes on and ends
  disconnected); a logoff ends it.
- The list (sessions whose logon is done) is pushed every interval with jitter, through the
  balancer's real push endpoint, with the host's own token.
- Chaos: a reboot (port closed, every session gone, back after a while, empty), a health flap
  (port closed, sessions kept), silence (no pushes), drain (deny_new).

Every change of the truth goes to the simulator's `record(kind, **fields)` at once, so the
invariant checker sees it in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.fakes import FakeRdpServer

Record = Callable[..., None]


@dataclass
class Session:
    user: str
    id: int
    state: str  # pending, active, disconnected
    logon_at: float | None = None  # wall clock (the host's, which is the real one)
    disconnected_at: float | None = None
    writer: asyncio.StreamWriter | None = None
    client: str | None = None


@dataclass(eq=False)
class SimHost(FakeRdpServer):
    """A FakeRdpServer that keeps sessions. `logon_s`: (min, max) of a logon in real seconds."""

    record: Record = field(default=lambda *a, **k: None)
    rng: random.Random = field(default_factory=random.Random)
    logon_s: tuple[float, float] = (0.2, 3.0)
    sessions: dict[str, Session] = field(default_factory=dict)
    deny_new: bool = False
    silent: bool = False
    down: bool = False  # port closed (flap or reboot)
    next_id: int = 1
    pushes: int = 0
    push_failures: int = 0
    refused_logons: int = 0
    _logons: set[asyncio.Task[None]] = field(default_factory=set)
    _denied: set[asyncio.StreamWriter] = field(default_factory=set)

    # -- the RDP side (overrides of FakeRdpServer) ----------------------------------------------------

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        seen = len(self.cookies)
        rest = await super()._handshake(reader, writer)
        if rest is None or len(self.cookies) == seen:
            return rest
        cookie = self.cookies[-1]  # this connection's: appended just before the CC, no await between
        if cookie is None:
            return rest  # a health probe (or a client without a cookie): no session
        user = cookie.decode(errors="replace")
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else None
        if not self.attach(user, writer, client):
            self._denied.add(writer)  # drain: the logon is refused (told to the client, then closed)
        return rest

    async def _echo(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if writer in self._denied:
            self._denied.discard(writer)
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                if not first:
                    await asyncio.wait_for(reader.read(64), 5)
                writer.write(self.name.encode() + b" denied\n")
                await writer.drain()
            return
        try:
            await super()._echo(first, reader, writer)
        finally:
            self.detach(writer)

    # -- sessions -----------------------------------------------------------------------------------

    def attach(self, user: str, writer: asyncio.StreamWriter, client: str | None) -> bool:
        s = self.sessions.get(user)
        if s is None:
            if self.deny_new:
                self.refused_logons += 1
                self.record("logon_refused", user=user, host=self.name)
                return False
            s = self.sessions[user] = Session(user, self.next_id, "pending", writer=writer, client=client)
            self.next_id += 1
            self.record("logon_start", user=user, host=self.name, id=s.id)
            lo, hi = self.logon_s
            pending = sum(1 for x in self.sessions.values() if x.state == "pending")
            took = min(self.rng.uniform(lo, hi) * (1 + pending / 20), 2 * hi)  # longer under a storm
            task = asyncio.get_running_loop().create_task(self._logon(s, took))
            self._logons.add(task)
            task.add_done_callback(self._logons.discard)
            return True
        old, s.writer, s.client = s.writer, writer, client
        if old is not None and old is not writer:
            old.close()  # a new client takes the session over
        if s.state == "disconnected":
            s.state, s.disconnected_at = "active", None
            self.record("session_state", user=user, host=self.name, state="active")
        else:
            self.record("session_takeover", user=user, host=self.name)
        return True

    async def _logon(self, s: Session, took: float) -> None:
        await asyncio.sleep(took)
        if self.sessions.get(s.user) is not s or s.state != "pending":
            return  # rebooted or logged off meanwhile
        s.logon_at = time.time()
        s.state = "active" if s.writer is not None else "disconnected"
        if s.state == "disconnected":
            s.disconnected_at = time.time()
        self.record("logon_done", user=s.user, host=self.name, state=s.state, took=round(took, 2))

    def detach(self, writer: asyncio.StreamWriter) -> None:
        for s in self.sessions.values():
            if s.writer is writer:
                s.writer = None
                if s.state == "active":
                    s.state, s.disconnected_at = "disconnected", time.time()
                    self.record("session_state", user=s.user, host=self.name, state="disconnected")
                return

    def logoff(self, user: str) -> bool:
        s = self.sessions.pop(user, None)
        if s is None:
            return False
        self.record("logoff", user=user, host=self.name, state=s.state)
        if s.writer is not None:
            s.writer.close()
        return True

    def has(self, user: str) -> str | None:
        s = self.sessions.get(user)
        return None if s is None else s.state

    # -- chaos --------------------------------------------------------------------------------------

    async def reboot(self, down_s: float) -> None:
        """Port closed, every session gone (and the logons under way), back empty after `down_s`;
        no pushes while down."""
        self.down = True
        self.record("reboot", host=self.name, down_s=round(down_s, 2))
        self.sessions.clear()
        await self.crash()
        await asyncio.sleep(down_s)
        await self.listen_again()
        self.down = False
        self.record("port_open", host=self.name)

    async def flap(self, down_s: float) -> None:
        """The RDP port closed for `down_s` (a service restart, a network blip): sessions kept."""
        self.down = True
        self.record("port_closed", host=self.name, down_s=round(down_s, 2))
        await self.stop_listening()
        await asyncio.sleep(down_s)
        await self.listen_again()
        self.down = False
        self.record("port_open", host=self.name)

    def listed(self) -> list[dict[str, Any]]:
        out = []
        for s in self.sessions.values():
            if s.state == "pending":
                continue  # not in the list until the logon is done
            row: dict[str, Any] = {"user": s.user, "domain": "CORP", "state": s.state, "id": str(s.id)}
            if s.logon_at is not None:
                row["logon"] = round(s.logon_at, 3)
            if s.disconnected_at is not None:
                row["disconnected"] = round(s.disconnected_at, 3)
            if s.client:
                row["client"] = s.client
            out.append(row)
        return out

    async def stop_all(self) -> None:
        for task in list(self._logons):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.stop()
