"""Network namespaces for transparent mode: a client, a balancer routing between two veth links,
a host whose route back to the client goes through the balancer (or does not).

    client ns  c0 10.N.1.2/24 (and .3)   fdNN:1::2/64 (and ::3), default via the balancer
                 |
    balancer   b1 10.N.1.1/24 fdNN:1::1/64     b2 10.N.2.1/24 fdNN:2::1/64
                                                 |
    host ns                                    h0 10.N.2.2/24 fdNN:2::2/64, default via the balancer
                                                  (none with return_route=False)

The balancer namespace gets the routing of contrib/transparent/rdpbalancer-transparent when
`routing=True` (the script itself runs, so the test checks what ships). Every name carries a
per-farm tag, so two farms (or a leftover one) never share a namespace. Root only."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "contrib" / "transparent" / "rdpbalancer-transparent"
_serial = itertools.count(1)


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Farm:
    tag: str
    net: int  # N in 10.N.x.x and fdNN::
    client: str
    balancer: str
    host: str

    def v4(self, link: int, last: int) -> str:
        return f"10.{self.net}.{link}.{last}"

    def v6(self, link: int, last: int) -> str:
        return f"fd{self.net:02x}:{link}::{last}"

    @property
    def client_v4(self) -> str:
        return self.v4(1, 2)

    @property
    def client_v4_second(self) -> str:
        return self.v4(1, 3)

    @property
    def client_v6(self) -> str:
        return self.v6(1, 2)

    @property
    def balancer_v4(self) -> str:  # what clients connect to
        return self.v4(1, 1)

    @property
    def balancer_v6(self) -> str:
        return self.v6(1, 1)

    @property
    def balancer_host_side_v4(self) -> str:  # the balancer's own address as the host sees it
        return self.v4(2, 1)

    @property
    def balancer_host_side_v6(self) -> str:
        return self.v6(2, 1)

    @property
    def host_v4(self) -> str:
        return self.v4(2, 2)

    @property
    def host_v6(self) -> str:
        return self.v6(2, 2)

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: Sequence[str], timeout_s: float = 30.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(ns, argv), capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=env)

    def popen(self, ns: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(ns, argv), **kw)  # type: ignore[call-overload, no-any-return]

    def routing(self, action: str = "up") -> subprocess.CompletedProcess[str]:
        """The shipped script in the balancer's namespace."""
        return self.run(self.balancer, [str(SCRIPT), action])

    def set_return_route(self, present: bool) -> None:
        """The host's default route through the balancer, or none (its replies to clients go nowhere)."""
        for flag, via in (("-4", self.balancer_host_side_v4), ("-6", self.balancer_host_side_v6)):
            with contextlib.suppress(RuntimeError):
                ip("-n", self.host, flag, "route", "del", "default")
            if present:
                ip("-n", self.host, flag, "route", "add", "default", "via", via)


def make_farm(*, routing: bool = True, return_route: bool = True) -> Farm:
    serial = next(_serial)
    tag = f"rt{os.getpid() % 100000}x{serial}"
    net = 100 + (os.getpid() + serial) % 100
    farm = Farm(tag, net, f"{tag}c", f"{tag}b", f"{tag}h")
    try:
        for ns in (farm.client, farm.balancer, farm.host):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", f"{tag}c0", "netns", farm.client, "type", "veth", "peer", "name", f"{tag}b1",
           "netns", farm.balancer)
        ip("link", "add", f"{tag}b2", "netns", farm.balancer, "type", "veth", "peer", "name", f"{tag}h0",
           "netns", farm.host)
        links = ((farm.client, f"{tag}c0", 1, (2, 3)), (farm.balancer, f"{tag}b1", 1, (1,)),
                 (farm.balancer, f"{tag}b2", 2, (1,)), (farm.host, f"{tag}h0", 2, (2,)))
        for ns, dev, link, lasts in links:
            for last in lasts:
                ip("-n", ns, "addr", "add", f"{farm.v4(link, last)}/24", "dev", dev)
                ip("-n", ns, "-6", "addr", "add", f"{farm.v6(link, last)}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", farm.client, "route", "add", "default", "via", farm.balancer_v4)
        ip("-n", farm.client, "-6", "route", "add", "default", "via", farm.balancer_v6)
        farm.set_return_route(return_route)
        if routing:
            done = farm.routing("up")
            if done.returncode != 0:
                raise RuntimeError(f"{SCRIPT} up: {done.stderr.strip() or done.stdout.strip()}")
    except BaseException:
        remove_farm(farm)
        raise
    return farm


def remove_farm(farm: Farm) -> None:
    """Deletes the namespaces (their links go with them). Processes started in them must be
    stopped first, by the test that started them."""
    for ns in (farm.client, farm.balancer, farm.host):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def farm(*, routing: bool = True, return_route: bool = True) -> Iterator[Farm]:
    made = make_farm(routing=routing, return_route=return_route)
    try:
        yield made
    finally:
        remove_farm(made)
