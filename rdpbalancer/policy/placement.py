"""The rules around a routing decision that the relay shell used to apply by itself, as values:
what happens when another node placed the user first, and whether an attempt that did not
connect is the server's fault. (The new-user budget is applied by the router: engine.py.)"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from rdpbalancer.policy.model import Decision, Reason, Server


def follow_winner(decision: Decision, winner: Server, followed_once: bool) -> Decision | None:
    """Another balancer sharing the table placed this user on `winner` first: follow it, once.
    A second disagreement (the table changed again meanwhile) gives up: None."""
    if followed_once:
        return None
    return replace(decision, reason=Reason.STICKY_HIT, candidates=(winner,), moved_from=None,
                   detail=f"placed on {winner.name} by another node")


class AttemptOutcome(StrEnum):
    CONNECTED = "connected"  # the server answered: relay
    FAILED = "failed"  # the server's fault: counted, told to passive health checking, next candidate
    ABANDONED = "abandoned"  # nobody's fault (the client left, another node won): only the count is undone


def judge_attempt(*, error: str, client_left: bool) -> AttemptOutcome:
    """A client that left makes an attempt nobody's fault, whatever the connect did meanwhile: its
    outcome says nothing about the server (it was cancelled, or succeeded for nobody)."""
    if client_left:
        return AttemptOutcome.ABANDONED
    return AttemptOutcome.FAILED if error else AttemptOutcome.CONNECTED
