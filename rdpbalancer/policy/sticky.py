"""The sticky table: user key -> the server that holds the user's session.

Pure and synchronous: time is passed in (`now`, seconds since the epoch, since entries outlive
the process), persistence is the shell's job (it stores what `assign` and friends return).

Expiry counts from the end of the user's last connection: an entry with an open session never
expires, and `ttl` after the last session closed it is gone. The table is bounded: past
`max_entries`, the least recently used entries without an open session are evicted.

Entries are kept in an OrderedDict in least-recently-used order; `last_used` only grows along
that order, so expiry sweeps and eviction both work from the front.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class StickyEntry:
    key: str
    pool: str
    server: str
    created: float
    last_used: float
    active: int = 0  # open sessions through this balancer process (not persisted)

    def expired(self, now: float, ttl_s: float) -> bool:
        return self.active == 0 and now >= self.last_used + ttl_s


@dataclass(frozen=True, slots=True)
class Change:
    """What the shell must persist after a mutation.

    - `put`: entries to write; `delete`: users to forget (a decision about them).
    - `dropped`: entries this table let go of by itself (expired, evicted when full). A store
      with its own expiry, shared by several balancers, may keep them; a file drops them too.
    - `prior`: for keys of `put` and `delete`, the server this change replaces, as this table
      knew it. A shared store writes only where it still holds that server (or none, or the same
      one), so a stale table cannot undo another balancer's newer decision. `force`: the
      administrator's word, written whatever the store holds.
    """

    put: tuple[StickyEntry, ...] = ()
    delete: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    prior: tuple[tuple[str, str], ...] = ()
    force: bool = False


class StickyTable:
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StickyEntry] = OrderedDict()
        self._homed: Counter[str] = Counter()  # server name -> entries pointing at it
        self.evictions = 0
        self.expirations = 0
        # dropped on sight by `get` and not deleted from storage yet: the next sweep reports them
        # (else a restart with a longer ttl would bring them back from the file)
        self._expired_unsaved: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[StickyEntry]:
        return iter(list(self._entries.values()))

    def get(self, key: str, now: float) -> StickyEntry | None:
        """The live entry for `key`, or None. An expired entry is dropped on sight."""
        entry = self._entries.get(key)
        if entry is not None and entry.expired(now, self.ttl_s):
            self._remove(key)
            self.expirations += 1
            self._expired_unsaved.append(key)
            return None
        return entry

    def homed(self, server: str) -> int:
        """Users whose (possibly disconnected) session lives on `server`."""
        return self._homed[server]

    def load(self, entries: Iterable[StickyEntry], now: float) -> Change:
        """Fill the table from storage; expired entries are skipped and reported for deletion."""
        stale: list[str] = []
        for entry in sorted(entries, key=lambda e: e.last_used):
            if entry.expired(now, self.ttl_s):
                stale.append(entry.key)
                continue
            self._insert(entry)
        return Change(dropped=tuple(stale) + self._evict_overflow().dropped)

    def merge(self, stored: StickyEntry, *, authoritative: bool = False) -> None:
        """Take a stored entry written by another process: if newer than ours, or always when
        `authoritative` (a store shared by several balancers decides); open sessions are kept."""
        entry = self._entries.get(stored.key)
        if entry is None:
            self._insert(StickyEntry(stored.key, stored.pool, stored.server, stored.created, stored.last_used))
            return
        if stored.last_used < entry.last_used and not authoritative:
            return
        if entry.server != stored.server:
            self._homed[entry.server] -= 1
            self._homed[stored.server] += 1
        entry.pool, entry.server, entry.created = stored.pool, stored.server, stored.created
        entry.last_used = max(entry.last_used, stored.last_used)
        self._entries.move_to_end(stored.key)

    def assign(self, key: str, pool: str, server: str, now: float) -> Change:
        """Point `key` at `server` (new user, failover, or admin override)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = StickyEntry(key=key, pool=pool, server=server, created=now, last_used=now)
            self._insert(entry)
            evicted = self._evict_overflow()
            return Change(put=(entry,), dropped=evicted.dropped)
        prior = ((key, entry.server),)
        if entry.server != server:
            self._homed[entry.server] -= 1
            self._homed[server] += 1
            entry.created = now
        entry.pool, entry.server, entry.last_used = pool, server, now
        self._entries.move_to_end(key)
        return Change(put=(entry,), prior=prior)

    def session_opened(self, key: str, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.active += 1
            self._touch(entry, now)

    def refreshed(self, entry: StickyEntry) -> Change:
        """The write that records `entry`'s new last_used (after a session ended)."""
        return Change(put=(entry,), prior=((entry.key, entry.server),))

    def session_closed(self, key: str, now: float) -> StickyEntry | None:
        """Record the end of a session; the returned entry's new last_used should be stored."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.active = max(0, entry.active - 1)
        self._touch(entry, now)
        return entry

    def delete(self, key: str) -> bool:
        if key not in self._entries:
            return False
        self._remove(key)
        return True

    def delete_server(self, server: str) -> Change:
        """Forget every entry pointing at `server` (removed from the config, admin flush)."""
        keys = [e.key for e in self._entries.values() if e.server == server]
        for key in keys:
            self._remove(key)
        return Change(delete=tuple(keys), prior=tuple((key, server) for key in keys))

    def sweep(self, now: float) -> Change:
        """Drop expired entries; refresh `last_used` of entries with open sessions.

        The refresh matters after a crash: a user connected for longer than the TTL must not
        come back to an entry that looks expired because its last write was at logon.
        """
        stale = [e.key for e in self._entries.values() if e.expired(now, self.ttl_s)]
        for key in stale:
            self._remove(key)
        self.expirations += len(stale)
        seen, self._expired_unsaved = self._expired_unsaved, []
        stale += [key for key in seen if key not in self._entries]  # not assigned again since
        busy = [e for e in self._entries.values() if e.active > 0]
        for entry in busy:
            self._touch(entry, now)
        return Change(put=tuple(busy), dropped=tuple(stale), prior=tuple((e.key, e.server) for e in busy))

    def _touch(self, entry: StickyEntry, now: float) -> None:
        entry.last_used = max(entry.last_used, now)
        self._entries.move_to_end(entry.key)

    def _insert(self, entry: StickyEntry) -> None:
        self._entries[entry.key] = entry
        self._homed[entry.server] += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._homed[entry.server] -= 1
        if self._homed[entry.server] <= 0:
            del self._homed[entry.server]

    def _evict_overflow(self) -> Change:
        """Evict least recently used idle entries until the table fits `max_entries`."""
        overflow = len(self._entries) - self.max_entries
        if overflow <= 0:
            return Change()
        victims: list[str] = []
        for entry in self._entries.values():
            if len(victims) == overflow:
                break
            if entry.active == 0:
                victims.append(entry.key)
        for key in victims:
            self._remove(key)
        self.evictions += len(victims)
        return Change(dropped=tuple(victims))
