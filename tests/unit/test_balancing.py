from collections import Counter

from rdpbalancer.policy.balancing import WeightedLeastLoad
from rdpbalancer.policy.model import PoolMember, Server


def members(*weights: int) -> list[PoolMember]:
    return [PoolMember(Server(f"S{i}", "127.0.0.1", 3389 + i), w) for i, w in enumerate(weights)]


def run(ms: list[PoolMember], picks: int) -> Counter[str]:
    algo, load = WeightedLeastLoad(), Counter[str]()
    for turn in range(picks):
        best = algo.rank(ms, load.__getitem__, turn)[0]
        load[best.name] += 1
    return load


def test_weights_are_respected() -> None:
    load = run(members(10, 20, 10, 20), 600)
    assert load == {"S0": 100, "S1": 200, "S2": 100, "S3": 200}


def test_idle_servers_first() -> None:
    ms = members(1, 100)
    algo = WeightedLeastLoad()
    # S1 has weight 100 but one session; S0 is idle: HAProxy picks the idle one first
    assert algo.rank(ms, {"S0": 0, "S1": 1}.__getitem__, 0)[0].name == "S0"


def test_weight_zero_takes_no_new_users() -> None:
    algo = WeightedLeastLoad()
    assert [s.name for s in algo.rank(members(0, 1), lambda _: 0, 0)] == ["S1"]
    assert algo.rank(members(0), lambda _: 0, 0) == []


def test_ties_rotate() -> None:
    algo, ms = WeightedLeastLoad(), members(1, 1, 1)
    firsts = [algo.rank(ms, lambda _: 0, turn)[0].name for turn in range(3)]
    assert sorted(firsts) == ["S0", "S1", "S2"]
    assert algo.rank(ms, lambda _: 0, 1) == algo.rank(ms, lambda _: 0, 1)  # pure: the turn is the caller's


def test_rank_lists_every_eligible_server_best_first() -> None:
    algo = WeightedLeastLoad()
    ranked = algo.rank(members(1, 1, 1), {"S0": 5, "S1": 1, "S2": 3}.__getitem__, 0)
    assert [s.name for s in ranked] == ["S1", "S2", "S0"]
