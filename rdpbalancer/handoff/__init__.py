"""Graceful restart and upgrade: a new process takes the listeners, the old one finishes its sessions.

Started by SIGUSR2, `POST /api/v1/handoff` or `rdpbalancer ctl handoff` on the running (old)
process:

1. The old process starts `rdpbalancer run -c <same file> --takeover-fd N` (the code installed
   on disk now: that is the upgrade), passing its listening sockets and one end of a socketpair.
   It keeps accepting and relaying meanwhile.
2. The new process loads the configuration and the sticky table, wraps the inherited listening
   sockets without accepting yet, and says "loaded". A bad configuration or any start-up failure
   ends it here; the old process logs why and goes on as if nothing happened.
3. The old process stops accepting (the sockets stay open in the new one: connections arriving
   now wait in the kernel's queue, none is refused), stops its admin API, health checks and
   directory sync, flushes its sticky writes to disk and sends "yours" with its run-time state:
   drain/maintenance and weight overrides, health, and its live sessions (per server, per user).
4. The new process replays the old one's journal of table changes (every put and delete it made
   since before it started the successor, deletions and its own late assignments included),
   takes over that state, starts its admin API, starts accepting, says "serving" and tells
   systemd it is the main process now. If it dies or stalls before "serving", the old process
   accepts again on the same sockets (it kept a duplicate of each) and restarts its API and
   checks: a failed upgrade drops nothing but the connections the dead process had accepted.
5. The old process relays its sessions until they end (each end is passed on, so the new
   process's leastconn counts and sticky expiry stay right), then exits; with
   `[balancer] drain_timeout` it cuts what is left after that long.

With workers (`[balancer] workers` > 1), step 3 starts by steering each SO_REUSEPORT group's new
connections to the primary's socket (BPF "return socket 0"; the new process holds that socket),
then the old workers accept what is queued on their sockets and close them; the new process
removes the steering once its own workers listen. Old sessions that were still connecting at
step 3 are reported when they start relaying ("opened") as well as when they end ("closed").

The sticky table is one SQLite file used by both processes in turn (WAL, busy timeout): the old
process only refreshes `last_used` of its ending sessions after step 3. If the old process dies
while it drains, the new one releases the sessions it still counted for it (`Predecessor`).

Modules: `messages` (what crosses the channel, typed), `old` (the running process's side),
`new` (the successor's side), `host` (the running balancer as both sides see it: its parts, the
reload lock, the services a handoff pauses and resumes).
"""


from rdpbalancer.handoff.messages import HandoffError, RuntimeState

__all__ = ["HandoffError", "RuntimeState"]
