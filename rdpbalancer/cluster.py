"""Several balancer nodes on one table: this node's side of the cluster channel.

Every heartbeat it publishes its connections per server, takes the others' into leastconn
(`Router.external`), applies the admin states and weights set through another node, and adopts
the sticky entries changed anywhere. An operator's change on this node is shared the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections import Counter

from rdpbalancer.config.types import MAX_WEIGHT
from rdpbalancer.operations import Operations, Share
from rdpbalancer.policy.model import AdminState
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.store.port import ClusterChannel, ClusterView
from rdpbalancer.tasks import TaskSet

log = logging.getLogger("rdpbalancer")

HEARTBEAT_S = 1.0  # publish our session counts, read the others', this often
HEARTBEAT_EXPIRE_S = 3 * HEARTBEAT_S  # a node silent this long (crashed) leaves the totals
ADMIN_STATES = frozenset(str(s) for s in AdminState)


def sharing(channel: ClusterChannel | None, tasks: TaskSet) -> Share:
    """How an operator's change on this node reaches the others (`Operations`' `share`): they
    apply it within a heartbeat. Without a cluster channel it goes nowhere."""
    def share(setting: str, server: str, value: str) -> None:
        if channel is not None:
            tasks.spawn(channel.share(setting, server, value), name=f"share-{setting}")
    return share


class ClusterSync:
    def __init__(self, channel: ClusterChannel, control: LocalControl, ops: Operations, tasks: TaskSet) -> None:
        self.channel, self.control, self.ops, self.tasks = channel, control, ops, tasks
        self.router = control.router
        self._heartbeat: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._heartbeat = self.tasks.spawn(self._beat(), name="cluster-heartbeat")

    def stop(self) -> None:
        """Leave the cluster (a handoff's old process: its successor counts its sessions)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def _beat(self) -> None:
        node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"  # this run of this node
        try:
            while True:
                view = await self.channel.exchange(node, dict(self.router.connections), HEARTBEAT_EXPIRE_S)
                if view is not None:
                    self.router.external = Counter(view.others)
                    self.apply(view)
                for key, entry in await self.channel.pull() or ():
                    self.control.adopt(key, entry)
                await asyncio.sleep(HEARTBEAT_S)
        finally:
            await self.channel.leave(node)

    def apply(self, view: ClusterView) -> None:
        """The admin states and weights set through any node (values this version does not know
        are ignored: another version may have written them)."""
        servers = self.ops.snapshot.policy.servers()
        for server, state in view.admin_states.items():
            if state in ADMIN_STATES and server in servers and self.router.condition(server).admin != state:
                self.ops.set_admin_state(server, AdminState(state), shared=False)
        for server, weight in view.weights.items():
            if server in servers and 0 <= weight <= MAX_WEIGHT and self.ops.weight_overrides.get(server) != weight:
                self.ops.set_weight(server, weight, shared=False)
