from rdpbalancer.health.state import (
    FIRST_CHECK_SPREAD_S,
    JITTER_FRACTION,
    Health,
    HealthTracker,
    first_delay,
    next_delay,
)


def tracker(rise: int = 2, fall: int = 3) -> HealthTracker:
    return HealthTracker("TS01", rise=rise, fall=fall)


def test_starts_unknown_and_routable() -> None:
    t = tracker()
    assert t.state is Health.UNKNOWN and t.routable


def test_first_check_is_decisive() -> None:
    up, down = tracker(), tracker()
    assert up.check_result(True, 1.0) is not None and up.state is Health.UP
    tr = down.check_result(False, 1.0, error="connection refused")
    assert tr is not None and tr.new is Health.DOWN and tr.last_error == "connection refused"
    assert not down.routable and down.since == 1.0


def test_fall_consecutive_failures_take_it_down() -> None:
    t = tracker(fall=3)
    t.check_result(True, 0.0)
    assert t.check_result(False, 1.0) is None
    assert t.check_result(False, 2.0) is None
    tr = t.check_result(False, 3.0, error="timeout")
    assert tr is not None and (tr.old, tr.new, tr.at) == (Health.UP, Health.DOWN, 3.0)


def test_a_success_resets_the_failure_streak() -> None:
    t = tracker(fall=2)
    t.check_result(True, 0.0)
    for i in range(10):  # flapping fail/ok never reaches fall=2
        assert t.check_result(i % 2 == 0, float(i)) is None
    assert t.state is Health.UP


def test_rise_consecutive_successes_bring_it_back() -> None:
    t = tracker(rise=2)
    t.check_result(False, 0.0)
    assert t.check_result(True, 1.0) is None
    assert t.check_result(False, 2.0) is None  # streak broken
    assert t.check_result(True, 3.0) is None
    tr = t.check_result(True, 4.0)
    assert tr is not None and tr.new is Health.UP and t.since == 4.0


def test_passive_failures_count_toward_fall() -> None:
    t = tracker(fall=3)
    t.check_result(True, 0.0)
    t.passive_failure(1.0, "connection refused")
    t.check_result(False, 2.0)
    tr = t.passive_failure(2.5, "connection refused")
    assert tr is not None and tr.new is Health.DOWN and "passive" in tr.reason


def test_passive_success_breaks_a_failure_streak_but_never_raises() -> None:
    t = tracker(fall=2, rise=1)
    t.check_result(True, 0.0)
    t.passive_failure(1.0, "refused")
    t.passive_success()
    assert t.passive_failure(2.0, "refused") is None  # streak restarted
    t.passive_failure(3.0, "refused")
    assert t.state is Health.DOWN
    t.passive_success()
    assert t.state is Health.DOWN  # only checks bring a server back


def test_unchecked_server_is_always_up() -> None:
    t = HealthTracker("TS01", checked=False)
    assert t.state is Health.UP
    assert t.check_result(False, 1.0) is None and t.passive_failure(1.0, "x") is None
    assert t.state is Health.UP


def test_jitter_bounds() -> None:
    for r in (0.0, 0.25, 0.5, 0.999999):
        d = next_delay(3.0, r)
        assert 3.0 * (1 - JITTER_FRACTION) <= d <= 3.0 * (1 + JITTER_FRACTION)
    assert next_delay(3.0, 0.5) == 3.0
    assert 0.0 <= first_delay(3.0, 0.99) < FIRST_CHECK_SPREAD_S
    assert first_delay(0.2, 0.5) == 0.1
