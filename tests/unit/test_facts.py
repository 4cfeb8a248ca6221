"""The session facts (relay/facts.py) are one vocabulary: the shell tells them as the machine
emitted them, a worker's channel carries them as they are, and the primary hands them to the same
`LocalControl` unchanged. So a new fact is a class in facts.py and a case in LocalControl.tell."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pickle
import textwrap
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.relay import facts as f
from rdpbalancer.relay.control import LocalControl
from rdpbalancer.relay.session import _COMMANDS
from rdpbalancer.relay.vocabulary import Command
from rdpbalancer.workers.primary import WorkerPool

TS01 = Server("TS01", "127.0.0.1", 3391)
DECISION = Decision(Reason.NEW, "alice", "default", (TS01,))
INFO = f.SessionInfo(DECISION, TS01, "alice", ("192.0.2.7", 50000), "0.0.0.0:3389", 1.0)
SAMPLES: dict[type, Any] = {
    f.RouteAsked: f.RouteAsked("1-7", RouteRequest("192.0.2.7", "alice")),
    f.AttemptStarted: f.AttemptStarted("1-7", DECISION, TS01),
    f.Connected: f.Connected("1-7", TS01),
    f.AttemptFailed: f.AttemptFailed("1-7", TS01, "connection refused"),
    f.Abandoned: f.Abandoned("1-7", TS01),
    f.AllFailed: f.AllFailed("1-7", DECISION),
    f.Relaying: f.Relaying("1-7", INFO),
    f.Finished: f.Finished("1-7", DECISION, TS01, 10, 20),
    f.Decided: f.Decided("1-7", DECISION, attempted=True),
    f.Durable: f.Durable("1-7", None, "redis: timeout"),
}
FACTS = f.Fact.__args__
QUESTIONS = f.Question.__args__


def test_every_fact_question_and_answer_is_sampled_here() -> None:
    declared = {v for v in vars(f).values()
                if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == f.__name__}
    assert declared - {f.SessionInfo} == set(SAMPLES)
    assert set(FACTS) | set(QUESTIONS) | set(f.Answer.__args__) == set(SAMPLES)


@pytest.mark.parametrize("kind", list(SAMPLES), ids=lambda k: k.__name__)
def test_each_is_frozen_slotted_keyed_by_the_session_and_crosses_a_channel_unchanged(kind: type) -> None:
    sample = SAMPLES[kind]
    params = kind.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and hasattr(kind, "__slots__")
    assert sample.sid == "1-7"
    assert pickle.loads(pickle.dumps(sample)) == sample


def test_the_machine_emits_the_facts_and_questions_as_commands() -> None:
    assert set(FACTS) | set(QUESTIONS) <= set(Command.__args__)


class Recording:
    def __init__(self) -> None:
        self.told: list[object] = []
        self.asked: list[object] = []

    def tell(self, fact: object) -> None:
        self.told.append(fact)

    def ask(self, question: object, reply: object) -> None:
        self.asked.append(question)


@pytest.mark.parametrize("kind", [k for k in FACTS if k is not f.Finished], ids=lambda k: k.__name__)
def test_the_shell_tells_each_fact_the_machine_emits_as_it_is(kind: type) -> None:
    control = Recording()
    session = SimpleNamespace(id="1-7", ctx=SimpleNamespace(control=control, stats=SimpleNamespace(
        connect_failures={"TS01": 0})), _drop_backend=lambda: None)
    _COMMANDS[kind](session, SAMPLES[kind])  # type: ignore[arg-type]
    assert control.told == [SAMPLES[kind]] and control.told[0] is SAMPLES[kind]


@pytest.mark.parametrize("kind", FACTS + QUESTIONS, ids=lambda k: k.__name__)
def test_the_primary_hands_a_workers_fact_to_its_control_plane_as_it_is(kind: type) -> None:
    control = Recording()
    pool = WorkerPool(2, control, {}, deque(), lambda: None)  # type: ignore[arg-type]
    link = pool.links[0]
    if kind is f.Finished:
        link.on_message(SAMPLES[f.Relaying])  # a session the worker relays ends
        control.told.clear()
    link.on_message(SAMPLES[kind])
    seen = control.asked if kind in QUESTIONS else control.told
    assert seen == [SAMPLES[kind]] and seen[0] is SAMPLES[kind]


def test_the_control_plane_has_a_case_for_every_fact_and_question() -> None:
    """LocalControl.tell and .ask each match every kind they can be given: none falls through."""
    def cases(method: Any) -> set[str]:
        tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
        return {node.pattern.cls.id for node in ast.walk(tree)
                if isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchClass)
                and isinstance(node.pattern.cls, ast.Name)}

    assert cases(LocalControl.tell) == {k.__name__ for k in FACTS}
    assert cases(LocalControl.ask) == {k.__name__ for k in QUESTIONS}
