"""policy.limits: the admission arithmetic, with an explicit clock."""

from __future__ import annotations

from rdpbalancer.policy.limits import PRUNE_EVERY, Admission, LimitSettings, NewUserBudget, Refusal, source_of


def test_global_and_handshake_limits() -> None:
    a = Admission(LimitSettings(max_connections=3, max_handshakes=2, per_source_burst=100))
    assert a.admit("10.0.0.1", 0) is None
    assert a.admit("10.0.0.2", 0) is None
    assert a.admit("10.0.0.3", 0) is Refusal.MAX_HANDSHAKES
    a.handshake_done()
    assert a.admit("10.0.0.3", 0) is None
    a.handshake_done()
    assert a.admit("10.0.0.4", 0) is Refusal.MAX_CONNECTIONS
    a.closed("10.0.0.1")
    assert a.admit("10.0.0.4", 0) is None
    assert (a.open, a.handshaking) == (3, 2)


def test_per_source_connections_and_rate() -> None:
    a = Admission(LimitSettings(per_source_connections=2, per_source_rate=1.0, per_source_burst=3))
    assert [a.admit("nat", 0) for _ in range(3)] == [None, None, Refusal.SOURCE_CONNECTIONS]
    assert a.admit("other", 0) is None  # another address is not affected
    a.closed("nat")
    a.closed("nat")
    assert a.admit("nat", 0) is None  # the third token of the burst
    a.closed("nat")
    assert a.admit("nat", 0) is Refusal.SOURCE_RATE  # bucket empty
    assert a.admit("nat", 0.5) is Refusal.SOURCE_RATE
    assert a.admit("nat", 1.0) is None  # one token a second


def test_idle_sources_are_forgotten() -> None:
    a = Admission(LimitSettings(per_source_rate=1000.0))
    for i in range(PRUNE_EVERY - 2):
        assert a.admit(f"10.1.{i // 250}.{i % 250}", 0) is None
        a.handshake_done()
        a.closed(f"10.1.{i // 250}.{i % 250}")
    a.admit("10.9.9.9", 0)  # holds a connection
    assert a.sources() == PRUNE_EVERY - 1
    a.admit("10.9.9.10", 10.0)  # the next new source sweeps: refilled and idle ones go
    assert a.sources() == 2


def test_ipv6_clients_count_by_their_64() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:ffff::2") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert source_of("10.0.0.1") == "10.0.0.1"
    assert source_of("fe80::1%eth0") == "fe80::/64"
    assert source_of("not-an-ip:x") == "not-an-ip:x"


def test_new_user_budget_refills_per_minute() -> None:
    b = NewUserBudget(per_minute=3)
    assert [b.take("nat", 0) for _ in range(4)] == [True, True, True, False]
    assert b.take("other", 0)
    assert not b.take("nat", 10.0)  # 0.5 token
    assert b.take("nat", 20.0)  # 1 token after 20 s
    b.per_minute = 1000  # a reload raises it: the bucket refills at the new rate
    assert not b.take("nat", 20.0)
    assert all(b.take("nat", 21.0) for _ in range(16))
