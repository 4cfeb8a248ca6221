"""The sticky store the configuration names (the mapping from the pydantic config to the store
adapters, which do not import the config), and the cluster channel when several nodes share it."""

from __future__ import annotations

from rdpbalancer.config.schema import Config
from rdpbalancer.store.port import ClusterChannel, StickyStorePort
from rdpbalancer.store.redis import RedisCluster, RedisSettings, RedisStickyStore
from rdpbalancer.store.sqlite import SqliteStickyStore


def build_store(config: Config) -> tuple[StickyStorePort, ClusterChannel | None]:
    """The sticky store, and the cluster channel when several nodes share it."""
    sticky = config.sticky
    local = SqliteStickyStore(sticky.path, sync=sticky.sync)
    if sticky.store == "sqlite":
        return local, None
    r = sticky.redis
    sentinels = tuple((h, int(p)) for h, _, p in (s.rpartition(":") for s in r.sentinels))
    settings = RedisSettings(url=r.url, sentinels=sentinels, service_name=r.service_name,
                             key_prefix=r.key_prefix, timeout_s=r.timeout)
    shared = RedisStickyStore(settings, ttl_s=sticky.ttl, local=local)
    return shared, RedisCluster(shared)
