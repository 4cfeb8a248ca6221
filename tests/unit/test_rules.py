"""Routing rules with a fake clock and a fake directory (the real AD is in tests/directory)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rdpbalancer.config import parse_config
from rdpbalancer.config.compile import compile_config
from rdpbalancer.policy.engine import Router
from rdpbalancer.policy.model import Reason, RouteRequest
from rdpbalancer.policy.rules import Trace
from rdpbalancer.policy.sticky import StickyTable
from rdpbalancer.proto import ClientHandshake, ConnectionRequestReceived

DATA = Path(__file__).resolve().parents[1] / "data" / "x224"


class FakeDirectory:
    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.users = sorted({u for members in groups.values() for u in members})

    def groups_of(self, user_key: str) -> frozenset[str]:
        return frozenset(g for g, members in self.groups.items() if user_key in members)

    def users_with_prefix(self, prefix: str) -> Sequence[str]:
        i = bisect.bisect_left(self.users, prefix)
        out = []
        while i < len(self.users) and self.users[i].startswith(prefix):
            out.append(self.users[i])
            i += 1
        return out


POOLS = """
[[pool]]
name = "default"
servers = [{ name = "D1", address = "127.0.0.1:1001" }]
[[pool]]
name = "sales"
servers = [{ name = "S1", address = "127.0.0.1:2001" }]
[[pool]]
name = "accounting"
servers = [{ name = "A1", address = "127.0.0.1:3001" }]
[[pool]]
name = "night"
servers = [{ name = "N1", address = "127.0.0.1:4001" }]
"""

ROUTES = """
[balancer]
listen = ["0.0.0.0:3389", "[::]:3390"]
[identity]
truncated_length = 9
[groups.Sales]
members = ["placeholder"]
[groups.Accounting]
members = ["placeholder"]
[[route]]
sources = ["192.0.2.0/24", "2001:db8:bad::/48"]
deny = true
[[route]]
name = "night-shift"
time = { days = ["fri"], hours = "22:00-06:00", timezone = "Europe/Paris" }
pool = "night"
[[route]]
collection = "Sales"
pool = "sales"
[[route]]
listener = "[::]:3390"
pool = "accounting"
[[route]]
users = ["CORP\\\\Boss"]
pool = "accounting"
[[route]]
groups = ["Accounting"]
pool = "accounting"
[[route]]
groups = ["Sales"]
pool = "sales"
[[route]]
pool = "default"
"""

# Wednesday 2026-11-25 12:00 in Paris
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()


def router(groups: dict[str, set[str]] | None = None, text: str = ROUTES) -> Router:
    snap = compile_config(parse_config(text + POOLS))
    r = Router(snap.policy, StickyTable(ttl_s=3600, max_entries=100))
    r.membership = FakeDirectory(groups or {"Sales": {"carol", "dave"}, "Accounting": {"alice"}})
    return r


def pool_of(r: Router, user: str | None, *, ip: str = "10.0.0.1", now: float = NOON, listener: str = "0.0.0.0:3389",
            collection: str | None = None) -> str | None:
    d = r.decide(RouteRequest(ip, user, collection=collection, listener=listener), now)
    return d.pool if d.reason is not Reason.DENIED else "DENIED"


def test_groups_route_first_match_wins() -> None:
    r = router()
    assert pool_of(r, "alice") == "accounting"
    assert pool_of(r, "carol") == "sales"
    assert pool_of(r, "zed") == "default"


def test_users_list_is_normalised_like_cookies() -> None:
    assert pool_of(router(), "boss") == "accounting"


@pytest.mark.parametrize(("ip", "expected"), [
    ("192.0.2.7", "DENIED"), ("2001:db8:bad::1", "DENIED"), ("::ffff:192.0.2.9", "DENIED"),
    ("192.0.3.1", "default"), ("2001:db8:bae::1", "default"),
])
def test_sources_v4_v6(ip: str, expected: str) -> None:
    assert pool_of(router(), "zed", ip=ip) == expected


def test_deny_applies_to_routing_tokens_too() -> None:
    r = router()
    d = r.decide(RouteRequest("192.0.2.1", None, msts_target=("127.0.0.1", 2001)), NOON)
    assert d.reason is Reason.DENIED


def test_listener_condition() -> None:
    assert pool_of(router(), "zed", listener="[::]:3390") == "accounting"


def test_collection_from_a_real_freerdp_load_balance_info() -> None:
    hs = ClientHandshake()
    hs.receive_data((DATA / "freerdp2-cr-lbinfo-tsv-sales.bin").read_bytes())
    event = hs.next_event()
    assert isinstance(event, ConnectionRequestReceived)
    assert event.request.collection == "Sales"
    assert pool_of(router(), None, collection=event.request.collection) == "sales"
    assert pool_of(router(), "zed", collection="sales") == "sales"  # case-insensitive


def paris(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Paris")).timestamp()


@pytest.mark.parametrize(("when", "expected"), [
    (paris(2026, 11, 27, 21, 59), "default"),  # Friday before the window
    (paris(2026, 11, 27, 22, 0), "night"),  # Friday 22:00
    (paris(2026, 11, 28, 5, 59), "night"),  # Saturday early: still Friday's window
    (paris(2026, 11, 28, 6, 0), "default"),  # end is exclusive
    (paris(2026, 11, 26, 23, 0), "default"),  # Thursday night: not a Friday window
    (paris(2026, 11, 27, 3, 0), "default"),  # Friday early belongs to Thursday's window
])
def test_time_window_across_midnight(when: float, expected: str) -> None:
    assert pool_of(router(), "zed", now=when) == expected


def test_time_window_follows_dst() -> None:
    text = ROUTES.replace('days = ["fri"], hours = "22:00-06:00"', 'days = ["sun"], hours = "02:30-03:30"')
    r = router(text=text)
    # 2026-03-29: Paris jumps from 02:00 to 03:00; 03:10 local exists and is in the window
    assert pool_of(r, "zed", now=paris(2026, 3, 29, 3, 10)) == "night"
    # 2026-10-25: 02:30 happens twice; both are in the window
    first = datetime(2026, 10, 25, 0, 30, tzinfo=ZoneInfo("UTC")).timestamp()  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp()  # 02:30 CET
    assert pool_of(r, "zed", now=first) == pool_of(r, "zed", now=second) == "night"
    assert pool_of(r, "zed", now=datetime(2026, 10, 25, 2, 45, tzinfo=ZoneInfo("UTC")).timestamp()) == "default"


def test_no_route_matched_is_denied() -> None:
    text = ROUTES.replace('[[route]]\npool = "default"\n', "")
    d = router(text=text).decide(RouteRequest("10.0.0.1", "zed", listener="0.0.0.0:3389"), NOON)
    assert d.reason is Reason.DENIED and d.detail == "no route matched"


def test_truncated_cookie_matches_directory_users() -> None:
    r = router({"Sales": {"christopher"}, "Accounting": set()})
    assert pool_of(r, "christoph") == "sales"  # 9 chars: stands for christopher
    assert pool_of(r, "christo") == "default"  # not the truncated length
    assert r.ambiguous == 0


def test_truncated_cookie_ambiguity_first_route_applies_and_is_counted() -> None:
    r = router({"Sales": {"christopher"}, "Accounting": {"christophe"}})
    trace = Trace()
    d = r.decide(RouteRequest("10.0.0.1", "christoph", listener="0.0.0.0:3389"), NOON, trace)
    assert d.pool == "accounting"  # the Accounting route comes first
    assert r.ambiguous == 1
    assert any(label == "ambiguous" for label, _, _ in trace.steps)


def test_sticky_entries_are_per_pool() -> None:
    groups: dict[str, set[str]] = {"Sales": {"carol"}, "Accounting": set()}
    r = router(groups)
    d = r.decide(RouteRequest("10.0.0.1", "carol", listener="0.0.0.0:3389"), NOON)
    r.assign(d, d.candidates[0], NOON)
    assert r.decide(RouteRequest("10.0.0.1", "carol", listener="0.0.0.0:3389"), NOON).reason is Reason.STICKY_HIT
    groups["Sales"].discard("carol")
    groups["Accounting"].add("carol")  # carol changed departments
    r.membership = FakeDirectory(groups)
    d = r.decide(RouteRequest("10.0.0.1", "carol", listener="0.0.0.0:3389"), NOON)
    assert (d.reason, d.pool) == (Reason.NEW, "accounting")


def test_trace_explains_each_route() -> None:
    trace = Trace()
    router().decide(RouteRequest("10.0.0.1", "carol", listener="0.0.0.0:3389"), NOON, trace)
    labels = [(label, matched) for label, matched, _ in trace.steps]
    assert labels == [("route[0]", False), ("route[1] (night-shift)", False), ("route[2]", False),
                      ("route[3]", False), ("route[4]", False), ("route[5]", False), ("route[6]", True)]
    assert "user in none of Accounting" in trace.steps[5][2]
