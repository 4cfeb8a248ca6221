"""Per-connection latencies are appended and reach the Prometheus histogram at the scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from rdpbalancer.metrics import FOLD_EVERY, LATENCY_BUCKETS, Latencies


def _count(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("t_seconds_count")
    return 0.0 if value is None else value


def test_samples_wait_for_the_scrape_and_none_is_lost() -> None:
    registry = CollectorRegistry()
    latencies = Latencies(Histogram("t_seconds", "t", buckets=LATENCY_BUCKETS, registry=registry))
    for seconds in (0.0001, 0.002, 3.0):
        latencies.observe(seconds)
    assert _count(registry) == 0  # not folded yet: no lock, no bucket search on the connection path
    latencies.fold()  # what Metrics.exposition does first
    assert _count(registry) == 3
    assert registry.get_sample_value("t_seconds_bucket", {"le": "0.0025"}) == 2
    assert registry.get_sample_value("t_seconds_sum") == 3.0021


def test_a_long_time_without_scrapes_keeps_memory_bounded() -> None:
    registry = CollectorRegistry()
    latencies = Latencies(Histogram("t_seconds", "t", buckets=LATENCY_BUCKETS, registry=registry))
    for _ in range(FOLD_EVERY * 3 + 5):
        latencies.observe(0.001)
    assert len(latencies.pending) == 5 and _count(registry) == FOLD_EVERY * 3
