"""Redis sticky store: one table shared by several balancer nodes, with a local copy for outages.

Each user is a hash `<prefix>u:<key>` {pool, server, created, last_used} that Redis expires
`ttl` after its last_used (open sessions are refreshed by every node's sweep, so they never
expire). Writes are compare-and-set (a Lua script, atomic in Redis): a put lands only where Redis
holds no entry, the same server, or the server this node's table replaced (`Change.prior`);
otherwise Redis's entry wins and is returned, and the node adopts it. So two nodes receiving
one new user at once agree on one server.

Redis is never on the path of a refusal: when it does not answer within `timeout`, the node
routes from its own table (and its SQLite copy), remembers what it wrote meanwhile, and replays
it when Redis is back. Conflict rule on replay: for a user both sides changed, the later
assignment (`created`) wins; a deletion is written as it would have been online, only where
Redis still holds a server this node believed the user on (so an entry another node wrote
meanwhile stays); every conflict is logged with both sides. Entries this node's table let go of
by itself (`Change.dropped`: expired, evicted) are never deleted from Redis, online or on replay:
Redis expires them on its own, `ttl` after the last use any node wrote.

Another master (a Sentinel failover, a split brain healed, a Redis restarted empty) may lack
what this node wrote to the one before: a master that lost its replica and was demoted later
drops every write it acknowledged meanwhile, and its successor never saw them. So the node
keeps the changes it wrote in the last JOURNAL_S seconds, and the heartbeat notes the master's
identity (run_id and replication id). When it changes, the journal is written again with the
outage's conflict rule (the later assignment wins), and the change feed is then read again from
its start: while this node read the old master, its cursor moved past the stamps the other
nodes wrote to the new one.

Refreshes of last_used (`refresh_later`) are coalesced as in the local copy: one write per user
at most every LAZY_FLUSH_S, dropped when an assignment of the same user is written first (it
carries a newer last_used). Redis expires entries `ttl` after last_used, so the delay only
ever postpones an expiry by those seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from rdpbalancer.policy.sticky import Change, StickyEntry
from rdpbalancer.store.port import ClusterView
from rdpbalancer.store.sqlite import LAZY_FLUSH_S, SqliteStickyStore
from rdpbalancer.tasks import TaskSet

log = logging.getLogger("rdpbalancer.store")

T = TypeVar("T")
RETRY_S = 1.0  # while Redis is away, try again this often
REPLAY_ATTEMPTS = 5  # a user another node keeps changing while this one replays: Redis's entry stays
JOURNAL_S = 300.0  # changes this node wrote are rewritten to a new master when written this recently
JOURNAL_MAX = 100_000  # and at most this many of them (the latest)

# Every write and delete also stamps the user in the change feed KEYS[2] (a sorted set scored by
# Redis's clock in ms), which the other nodes pull every second.
_STAMP = """
local function stamp(feed, user)
  local t = redis.call('TIME')
  redis.call('ZADD', feed, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), user)
end
"""
# KEYS[1] user, KEYS[2] feed; ARGV pool, server, created, last_used, expected server ("" none,
# "*" any), ttl ms, user key. Returns nil when written, else Redis's entry {pool, server, created, last_used}.
_CAS = _STAMP + """
local cur = redis.call('HMGET', KEYS[1], 'pool', 'server', 'created', 'last_used')
if ARGV[5] ~= '*' and cur[2] and cur[2] ~= ARGV[2] and cur[2] ~= ARGV[5] then
  return cur
end
if cur[2] == ARGV[2] and cur[3] then
  ARGV[3] = cur[3]
  if tonumber(cur[4]) > tonumber(ARGV[4]) then ARGV[4] = cur[4] end
end
redis.call('HSET', KEYS[1], 'pool', ARGV[1], 'server', ARGV[2], 'created', ARGV[3], 'last_used', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
stamp(KEYS[2], ARGV[7])
return nil
"""
# KEYS[1] user, KEYS[2] feed; ARGV user key, then the expected servers ("*" any). Deletes only
# what this node believed: online one server, on replay the ones its queued changes believed.
_CAD = _STAMP + """
local cur = redis.call('HGET', KEYS[1], 'server')
for i = 2, #ARGV do
  if ARGV[i] == '*' or cur == ARGV[i] then
    stamp(KEYS[2], ARGV[1])
    return redis.call('DEL', KEYS[1])
  end
end
return 0
"""
FEED_SLACK_S = 3600.0  # stamps are kept this long past the ttl
PULL_BATCH = 5000  # users read from the change feed per heartbeat at most (the rest next time)


@dataclass(frozen=True, slots=True)
class _Queued:
    """A user's change kept while Redis is away: the latest one, and what Redis may hold for it
    to land as the queued changes would have landed online, one after the other."""

    entry: StickyEntry | None  # None: deleted
    # the server this node believed before its first queued change ("" none, "*" any: forced),
    # then each one a later queued change replaced (its own earlier ones: another node may have
    # written the same). A deletion is replayed only where Redis holds one of them.
    priors: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str = "mymaster"
    key_prefix: str = "rdpb:"
    timeout_s: float = 0.5


class RedisStickyStore:
    def __init__(self, settings: RedisSettings, *, ttl_s: float, local: SqliteStickyStore) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self.local = local  # every change is mirrored here: the node's own copy for outages
        self.path = local.path
        self.available: bool | None = None  # None until the first answer
        self.last_error: str | None = None
        self.conflicts = 0
        self.failures = 0
        self._outbox: dict[str, _Queued] = {}  # key -> its change kept while Redis is away
        self._client: aioredis.Redis | None = None
        self._retry: asyncio.Task[None] | None = None
        self._tasks = TaskSet()  # background writes and the retry: kept, failures logged
        self._lazy: dict[str, tuple[StickyEntry, str]] = {}  # refreshes not written yet: (copy, server)
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._sentinels: list[aioredis.Redis] = []  # the Sentinel connections, closed with the store
        self._cursor: float | None = None  # Redis ms: change-feed entries from here on are not pulled yet
        # (monotonic time, user, entry or None for a deletion, prior) of each change written lately
        self._journal: deque[tuple[float, str, StickyEntry | None, str]] = deque(maxlen=JOURNAL_MAX)
        self._master: str | None = None  # the master's "run_id/replid" as last seen
        self._repull = False  # another master: the feed is read again from its start once the journal is written
        self._identifies = True  # False: INFO is not allowed to this node's Redis user (ACL)

    # -- the port ----------------------------------------------------------------------------

    @property
    def unsaved(self) -> int:
        return len(self._outbox) + self.local.unsaved

    @property
    def commits(self) -> int:
        return self.local.commits

    shared = True  # other nodes write it too

    def load(self) -> Sequence[StickyEntry]:
        """Redis's entries (a blocking read, called in a thread at start); its local copy when
        Redis does not answer, which is logged: the node starts and routes anyway."""
        local = self.local.load()
        try:
            client = self._sync_client()
            seconds, micros = cast("tuple[int, int]", client.time())
            self._cursor = seconds * 1000 + micros // 1000  # what changes during the scan is pulled later
            try:
                self._master = _identity(cast("dict[str, Any]", client.info("server")),
                                         cast("dict[str, Any]", client.info("replication")))
            except redis.ResponseError as exc:  # an ACL without INFO (@dangerous): no identity, not down
                self._no_identity(exc)
            entries = []
            for key in client.scan_iter(match=f"{self.settings.key_prefix}u:*", count=1000):
                fields = cast("dict[bytes, bytes]", client.hgetall(key))
                entry = _entry(key.decode()[len(self.settings.key_prefix) + 2:], fields)
                if entry is not None:
                    entries.append(entry)
            client.close()
        except redis.RedisError as exc:
            self._down(exc)
            log.warning("sticky store: Redis %s does not answer (%s); starting from the local copy %s "
                        "(%d entries)", self._where(), exc, self.path, len(local))
            return local
        self.available = True
        return entries

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.local.start(loop)
        self._client = self._async_client()

    async def apply(self, change: Change) -> Sequence[StickyEntry]:
        """Write `change`; returns the entries Redis holds instead of ours (conflicts)."""
        self.local.apply_later(change)
        self._supersede(change)
        return await self._shared(change)

    def apply_later(self, change: Change) -> None:
        self.local.apply_later(change)
        self._supersede(change)
        if change.put or change.delete:
            self._tasks.spawn(self._shared(change), name="redis-write")

    def set_commit_window(self, seconds: float) -> None:
        self.local.set_commit_window(seconds)  # Redis writes are pipelined per change as they come

    def refresh_later(self, change: Change) -> None:
        """A refresh of last_used: coalesced per user, written within LAZY_FLUSH_S."""
        self.local.refresh_later(change)
        prior = dict(change.prior)
        for entry in change.put:
            copy = StickyEntry(entry.key, entry.pool, entry.server, entry.created, entry.last_used)
            self._lazy[entry.key] = (copy, prior.get(entry.key, entry.server))
        if self._lazy and self._lazy_timer is None:
            with contextlib.suppress(RuntimeError):  # no loop (start-up, shutdown): written by close()
                self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_FLUSH_S, self._flush_lazy)

    def _supersede(self, change: Change) -> None:
        """A change of a user replaces a refresh of that user still waiting."""
        if self._lazy:
            for entry in change.put:
                self._lazy.pop(entry.key, None)
            for key in change.delete:
                self._lazy.pop(key, None)

    def _lazy_change(self) -> Change:
        waiting, self._lazy = self._lazy, {}
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        return Change(put=tuple(e for e, _ in waiting.values()),
                      prior=tuple((key, server) for key, (_, server) in waiting.items()))

    def _flush_lazy(self) -> None:
        self._lazy_timer = None
        if self._lazy:
            self._tasks.spawn(self._shared(self._lazy_change(), journal=False), name="redis-refresh")

    async def barrier(self) -> None:
        await self.local.barrier()

    def watch(self, watcher: Callable[[Change], None] | None) -> None:
        """Every change this node makes goes through its local copy: see SqliteStickyStore.watch."""
        self.local.watch(watcher)

    async def lookup(self, key: str) -> tuple[bool, StickyEntry | None]:
        """(True, Redis's entry or None) when Redis answered, (False, None) when it did not."""
        if self._client is None or self.available is False:
            return False, None
        try:
            fields = await _hgetall(self._client, self._key(key))
        except (redis.RedisError, OSError) as exc:
            self._down(exc)
            return False, None
        return True, _entry(key, fields)

    async def close(self) -> None:
        if self._lazy:
            await self._shared(self._lazy_change(), journal=False)
        if self._retry is not None:
            self._retry.cancel()
        if self._client is not None:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()
        for watcher in self._sentinels:
            await watcher.aclose()
        await self.local.close()

    # -- writing ------------------------------------------------------------------------------------

    async def _shared(self, change: Change, *, journal: bool = True) -> list[StickyEntry]:
        """Write `change` (a refresh of last_used: `journal` False, nothing to rewrite if lost)."""
        if not change.put and not change.delete:
            return []
        prior = dict(change.prior)
        if self._client is None or self.available is False:
            self._keep(change, prior)
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for entry in change.put:
                    expected = "*" if change.force else prior.get(entry.key, "")
                    pipe.eval(_CAS, 2, *self._cas_args(entry, expected))  # type: ignore[arg-type]  # redis-py types ARGV as str
                for key in change.delete:
                    pipe.eval(_CAD, 2, *self._cad_args(key, ("*" if change.force or key not in prior
                                                             else prior[key],)))
                results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._down(exc)
            self._keep(change, prior)
            return []
        self._up()
        if journal:
            self._note(change, prior, results)
        winners = []
        for entry, result in zip(change.put, results, strict=False):
            if result:
                winner = _entry(entry.key, dict(zip((b"pool", b"server", b"created", b"last_used"), result,
                                                    strict=True)))
                if winner is not None:
                    self.conflicts += 1
                    winners.append(winner)
        return winners

    def _note(self, change: Change, prior: dict[str, str], results: Sequence[object]) -> None:
        """Journal what Redis took: puts it wrote (no winner returned), deletions it made. Aged
        by the monotonic clock: a step of the wall clock neither empties nor keeps it."""
        now, journal = time.monotonic(), self._journal
        for entry, result in zip(change.put, results, strict=False):
            if not result:
                journal.append((now, entry.key, entry, "*" if change.force else prior.get(entry.key, "")))
        for key, result in zip(change.delete, results[len(change.put):], strict=False):
            if result:
                journal.append((now, key, None, "*" if change.force or key not in prior else prior[key]))
        while journal and journal[0][0] < now - JOURNAL_S:
            journal.popleft()

    def _no_identity(self, exc: BaseException) -> None:
        """Redis refuses INFO (an ACL without @dangerous): routing goes on, but another master
        is not noticed; said once."""
        if self._identifies:
            self._identifies = False
            log.warning("sticky store: Redis %s refuses INFO (%s): a change of master is not noticed, so changes "
                        "written to a master that is later demoted are not written again (allow +info to this "
                        "user)", self._where(), exc)

    def _another_master(self, identity: str) -> None:
        """The heartbeat saw another master than before (RedisCluster.exchange): rewrite the
        journal to it, then read its change feed from the start (see the module's docstring)."""
        old, self._master = self._master, identity
        if old is None or old == identity:
            return
        now = time.monotonic()
        recent = [item for item in self._journal if item[0] >= now - JOURNAL_S]
        log.warning("sticky store: Redis %s is another master now (%s, was %s); it may lack what this node wrote "
                    "to the one before: rewriting this node's %d change(s) of the last %.0f s, then reading the "
                    "whole change feed again", self._where(), identity, old, len(recent), JOURNAL_S)
        kept = set(self._outbox)  # changes of the outage are newer than the journal's: they stay
        wall = time.time()
        for _at, key, entry, prior in recent:
            if key not in kept:
                self._queue(key, entry, prior, wall)
        self._journal.clear()
        self._repull = True
        if self._retry is None or self._retry.done():  # an outage's retry replays the outbox itself
            rewrite = self._replay("is another master, this node's recent changes rewritten")
            self._tasks.spawn(rewrite, name="redis-rewrite")

    def _keep(self, change: Change, prior: dict[str, str]) -> None:
        """Redis is away: remember the latest change per user, replayed when it is back.
        (`dropped` is not written to Redis, online or later: see the module's docstring.)"""
        now = time.time()
        for entry in change.put:
            self._queue(entry.key, entry, "*" if change.force else prior.get(entry.key, ""), now)
        for key in change.delete:
            self._queue(key, None, "*" if change.force or key not in prior else prior[key], now)

    def _queue(self, key: str, entry: StickyEntry | None, prior: str, now: float) -> None:
        """Coalesce with the change of `key` already kept: the latest change is written, on the
        condition of the first (what Redis held as this node knew it), or on a server this node
        wrote since. A forced change in the row makes the rest unconditional, as online."""
        kept = self._outbox.get(key)
        if kept is None:
            priors: tuple[str, ...] = (prior,)
        elif prior == "*" or "*" in kept.priors:
            priors = ("*",)
        else:
            priors = kept.priors if prior in kept.priors else (*kept.priors, prior)
        self._outbox[key] = _Queued(entry, priors, now)

    async def _replay(self, done: str = "is back, the changes made meanwhile replayed") -> None:
        """Redis is back (or another master): write what changed meanwhile; the later assignment
        wins a conflict. Each write is journaled again: this master may be replaced in turn."""
        assert self._client is not None
        pending = dict(self._outbox)  # each leaves the outbox once written (unsaved counts the rest)
        replayed = conflicts = 0
        for key, queued in pending.items():  # the later assignment (created) wins
            try:
                conflicts += await self._replay_one(key, queued)
            except (redis.RedisError, OSError) as exc:
                self._down(exc)
                return
            replayed += 1
            self._journal.append((time.monotonic(), key, queued.entry, queued.priors[0]))
            if self._outbox.get(key) is queued:
                del self._outbox[key]  # not changed again meanwhile
        self.conflicts += conflicts
        log.warning("sticky store: Redis %s %s: %d change(s) written, %d conflict(s)",
                    self._where(), done, replayed, conflicts)

    async def _replay_one(self, key: str, queued: _Queued) -> int:
        """Write one user kept during the outage; 1 if another node had placed them elsewhere.

        The write is a compare-and-set on what was read: other nodes replay at the same moment,
        and a read followed by a blind write would let the earlier assignment overwrite the
        later one. When the set fails, the user is read and decided again. A deletion is the
        online one: it deletes only where Redis holds a server this node believed."""
        assert self._client is not None
        entry = queued.entry
        if entry is None:
            if await _awaited(self._client.eval(_CAD, 2, *self._cad_args(key, queued.priors))):
                return 0
            current = _entry(key, await _hgetall(self._client, self._key(key)))
            if current is None:
                return 0  # gone already: deleted or expired
            log.warning("sticky conflict after the Redis outage: user %s was deleted here (on %s as this "
                        "node knew it) and is on %s elsewhere since %.0f; that entry is kept",
                        key, " or ".join(s or "none" for s in queued.priors), current.server, current.created)
            return 1
        for _ in range(REPLAY_ATTEMPTS):
            current = _entry(key, await _hgetall(self._client, self._key(key)))
            if current is not None and current.server != entry.server and current.created > entry.created:
                kept = current.server
            else:
                expected = "" if current is None else current.server
                if await _awaited(self._client.eval(_CAS, 2, *self._cas_args(entry, expected))):  # type: ignore[arg-type]
                    continue  # written by another node since the read: decide again
                if current is None or current.server == entry.server:
                    return 0
                kept = entry.server
            assert current is not None
            log.warning("sticky conflict after the Redis outage: user %s was put on %s here at %.0f "
                        "and on %s elsewhere at %.0f; %s (the later) is kept",
                        key, entry.server, entry.created, current.server, current.created, kept)
            return 1
        log.warning("sticky replay after the Redis outage: user %s changed %d times while being written; "
                    "Redis's entry is kept", key, REPLAY_ATTEMPTS)
        return 1

    # -- availability ---------------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {exc}"
        if self.available is not False:
            log.error("sticky store: Redis %s unavailable (%s); routing goes on from the local table, "
                      "changes are kept and replayed when it is back", self._where(), exc)
        self.available = False
        if self._client is not None and (self._retry is None or self._retry.done()):
            # no loop yet (start-up load): start() creates the client and the first write retries
            with contextlib.suppress(RuntimeError):
                self._retry = self._tasks.spawn(self._wait_for_redis(), name="redis-retry")

    def _up(self) -> None:
        if self.available is False:
            self.available = True

    async def _wait_for_redis(self) -> None:
        assert self._client is not None
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await self._client.ping()
            except (redis.RedisError, OSError):
                continue
            self.available = True
            await self._replay()
            if self.available:
                return

    # -- clients ------------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.settings.key_prefix}u:{key}"

    @property
    def _feed(self) -> str:
        return f"{self.settings.key_prefix}changes"

    def _cas_args(self, entry: StickyEntry, expected: str) -> tuple[str | float | int, ...]:
        return (self._key(entry.key), self._feed, entry.pool, entry.server, repr(entry.created),
                repr(entry.last_used), expected, int(self.ttl_s * 1000), entry.key)

    def _cad_args(self, key: str, expected: Sequence[str]) -> tuple[str, ...]:
        return (self._key(key), self._feed, key, *expected)

    def _where(self) -> str:
        s = self.settings
        if s.sentinels:
            return f"sentinel {s.service_name} via {', '.join(f'{h}:{p}' for h, p in s.sentinels)}"
        return s.url

    def _options(self) -> dict[str, Any]:
        t = self.settings.timeout_s
        return {"socket_timeout": t, "socket_connect_timeout": t}

    def _sync_client(self) -> redis.Redis:
        s = self.settings
        if s.sentinels:
            sentinel = Sentinel(list(s.sentinels), **self._options())  # type: ignore[no-untyped-call]
            master = cast(redis.Redis, sentinel.master_for(s.service_name, **self._options()))  # type: ignore[no-untyped-call]
            for watcher in sentinel.sentinels:
                watcher.close()  # master_for asked them already; the master connection is what is used
            return master
        return redis.Redis.from_url(s.url, **self._options())

    def _async_client(self) -> aioredis.Redis:
        s = self.settings
        if s.sentinels:
            sentinel = AsyncSentinel(list(s.sentinels), **self._options())  # type: ignore[no-untyped-call]
            self._sentinels = list(sentinel.sentinels)
            return cast(aioredis.Redis, sentinel.master_for(s.service_name, **self._options()))
        return cast(aioredis.Redis, aioredis.Redis.from_url(s.url, **self._options()))


# redis-py types a command's result as `Awaitable[T] | T` for its sync and async clients alike;
# on the asyncio client it is always the awaitable
def _awaited(result: Awaitable[T] | T) -> Awaitable[T]:
    return cast("Awaitable[T]", result)


async def _hgetall(client: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    return cast("dict[bytes, bytes]", await _awaited(client.hgetall(key)))


def _identity(server: dict[str, Any], replication: dict[str, Any]) -> str | None:
    """A master's identity: its process (run_id) and its history (the replication id, new on a
    promotion and taken from the new master by a demoted one). None when INFO does not say."""
    run_id, replid = server.get("run_id"), replication.get("master_replid")
    return f"{run_id}/{replid}" if run_id and replid else None


def _entry(key: str, fields: dict[bytes, bytes]) -> StickyEntry | None:
    try:
        return StickyEntry(key, fields[b"pool"].decode(), fields[b"server"].decode(),
                           float(fields[b"created"]), float(fields[b"last_used"]))
    except (KeyError, ValueError, AttributeError, TypeError):
        return None


class RedisCluster:
    """The cluster channel over the store's Redis connection (store/port.py `ClusterChannel`):
    every node publishes its connections per server each heartbeat, reads the others' and the
    shared admin settings, and pulls the change feed into its table and its local copy."""

    def __init__(self, store: RedisStickyStore) -> None:
        self.store = store

    async def exchange(self, node: str, counts: dict[str, int], expire_s: float) -> ClusterView | None:
        """Publish this node's per-server connections (gone `expire_s` after its last beat, so
        a crashed node's sessions leave the totals); the other nodes' sum and the shared admin
        states and weights. None while Redis is away."""
        if self.store._client is None or self.store.available is False:
            return None
        p = self.store.settings.key_prefix
        try:
            # the feed's stamps are Redis's clock: trimmed by it, not by this node's (a node whose
            # wall clock runs a day ahead would otherwise empty the feed for every node)
            async with self.store._client.pipeline(transaction=False) as pipe:
                pipe.time()
                if self.store._identifies:
                    pipe.info("server")
                    pipe.info("replication")
                now, *info = await pipe.execute(raise_on_error=False)
            if isinstance(now, Exception):
                raise now  # TIME refused: as before, Redis is away for this node
            seconds, micros = now
            redis_ms = seconds * 1000 + micros // 1000
            if any(isinstance(r, redis.ResponseError) for r in info):  # an ACL without INFO
                self.store._no_identity(next(r for r in info if isinstance(r, redis.ResponseError)))
            elif info and (identity := _identity(info[0], info[1])) is not None:
                self.store._another_master(identity)
            async with self.store._client.pipeline(transaction=True) as pipe:
                pipe.delete(f"{p}load:{node}")
                if counts:
                    pipe.hset(f"{p}load:{node}", mapping=counts)
                pipe.pexpire(f"{p}load:{node}", int(expire_s * 1000))
                # feed stamps older than the ttl name entries that have expired everywhere
                pipe.zremrangebyscore(self.store._feed, "-inf", redis_ms - (self.store.ttl_s + FEED_SLACK_S) * 1000)
                await pipe.execute()
            others: dict[str, int] = {}
            async for key in self.store._client.scan_iter(match=f"{p}load:*", count=1000):
                if key.decode() == f"{p}load:{node}":
                    continue
                for server, count in (await _hgetall(self.store._client, key)).items():
                    others[server.decode()] = others.get(server.decode(), 0) + int(count)
            states = {k.decode(): v.decode() for k, v in (await _hgetall(self.store._client, f"{p}admin")).items()}
            weights = {}
            for k, v in (await _hgetall(self.store._client, f"{p}weight")).items():
                with contextlib.suppress(ValueError):
                    weights[k.decode()] = int(v)
        except (redis.RedisError, OSError) as exc:
            self.store._down(exc)
            return None
        return ClusterView(others, states, weights)

    async def pull(self) -> list[tuple[str, StickyEntry | None]] | None:
        """Users another node (or this one) wrote or deleted since the last pull, with Redis's
        entry now (None: deleted or expired); mirrored into the local copy. So every node's
        table, and its homed-user counts, follow the cluster's. None while Redis is away."""
        if self.store._client is None or self.store.available is False:
            return None
        if self.store._repull:  # another master: its feed from the start, once the journal is written to it
            if self.store._outbox:
                return []  # its entries would undo this node's changes not written back yet
            self.store._repull, self.store._cursor = False, 0.0
        try:
            if self.store._cursor is None:
                seconds, micros = await self.store._client.time()
                self.store._cursor = seconds * 1000 + micros // 1000
                return []
            stamped = await self.store._client.zrangebyscore(self.store._feed, self.store._cursor, "+inf", start=0,
                                                       num=PULL_BATCH, withscores=True)
            if not stamped:
                return []
            async with self.store._client.pipeline(transaction=False) as pipe:
                for member, _score in stamped:
                    pipe.hgetall(self.store._key(member.decode()))
                found = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.store._down(exc)
            return None
        # inclusive: a stamp in the same ms as the last one is read again next time (harmless)
        self.store._cursor = max(score for _member, score in stamped)
        pulled = [(member.decode(), _entry(member.decode(), fields))
                  for (member, _score), fields in zip(stamped, found, strict=True)]
        puts = tuple(e for _k, e in pulled if e is not None)
        deletes = tuple(k for k, e in pulled if e is None)
        self.store.local.apply_later(Change(put=puts, delete=deletes))
        return pulled

    async def share(self, setting: str, server: str, value: str) -> None:
        """An administrator's setting ("admin": drain/ready/maint, or "weight") for every node
        (best effort: while Redis is away it stays on this node, and the outage is logged)."""
        if self.store._client is None:
            return
        try:
            await _awaited(self.store._client.hset(f"{self.store.settings.key_prefix}{setting}", server, value))
        except (redis.RedisError, OSError) as exc:
            self.store._down(exc)

    async def leave(self, node: str) -> None:
        if self.store._client is not None and self.store.available is not False:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.store._client.delete(f"{self.store.settings.key_prefix}load:{node}")
