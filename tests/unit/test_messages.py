"""The worker and handoff channels carry typed messages; each side dispatches them in one place,
and a message it does not know is an error that names it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle

import pytest

from rdpbalancer.handoff import messages as handoff_messages
from rdpbalancer.handoff.new import Takeover
from rdpbalancer.handoff.old import Handover
from rdpbalancer.policy.model import Decision, Reason, RouteRequest, Server
from rdpbalancer.relay import facts
from rdpbalancer.relay.control import durable
from rdpbalancer.workers import messages as worker_messages
from rdpbalancer.workers.primary import WorkerLink
from rdpbalancer.workers.worker import RemoteControl, Worker


@dataclasses.dataclass(frozen=True, slots=True)
class FromANewerVersion:
    payload: int = 1


@pytest.mark.parametrize("module", [worker_messages, handoff_messages, facts], ids=["workers", "handoff", "facts"])
def test_every_message_is_a_frozen_slotted_dataclass(module) -> None:  # type: ignore[no-untyped-def]
    kinds = [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
             and v.__module__ == module.__name__ and v.__name__ not in ("RuntimeState",)]
    assert len(kinds) >= 6
    for kind in kinds:
        params = kind.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and hasattr(kind, "__slots__"), kind.__name__


def test_messages_survive_the_channel_encoding() -> None:
    ts01 = Server("TS01", "127.0.0.1", 3391)
    decision = Decision(Reason.NEW, "alice", "default", (ts01,))
    info = facts.SessionInfo(decision, ts01, "alice", ("127.0.0.1", 50000), "0.0.0.0:3389", 1.0)
    for message in (facts.Durable("s1", None), facts.Relaying("s1", info),
                    facts.Decided("s1", decision, attempted=True), worker_messages.Abort("s1", "admin")):
        assert pickle.loads(pickle.dumps(message)) == message


def test_unknown_messages_are_errors_that_name_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    WorkerLink(1, None).on_message(FromANewerVersion())  # type: ignore[arg-type]
    Worker(1, -1)._on_message(FromANewerVersion())
    Takeover(-1)._on_message(FromANewerVersion())
    Handover(None)._on_message(FromANewerVersion())  # type: ignore[arg-type]
    named = [r for r in caplog.records if "FromANewerVersion" in r.getMessage()]
    assert len(named) == 4, [r.getMessage() for r in caplog.records]


async def test_a_write_that_failed_is_unavailable_for_a_workers_session_as_for_the_primarys() -> None:
    """One reading of a done attempt future on both paths: a store fault is never "durable". The
    primary sends the `Durable` its LocalControl made; the worker hands the same object on."""
    loop = asyncio.get_running_loop()
    failed, cancelled, placed = loop.create_future(), loop.create_future(), loop.create_future()
    failed.set_exception(OSError("disk I/O error"))
    cancelled.cancel()
    ts02 = Server("TS02", "127.0.0.1", 3392)
    placed.set_result(ts02)
    assert durable("s1", failed) == facts.Durable("s1", None, "disk I/O error")
    assert durable("s1", cancelled) == facts.Durable("s1", None, "cancelled")
    assert durable("s1", placed) == facts.Durable("s1", ts02, None)

    class Sent:
        def __init__(self) -> None:
            self.messages: list[object] = []

        def send(self, message: object) -> None:
            self.messages.append(message)

    channel = Sent()
    control = RemoteControl(channel)  # type: ignore[arg-type]
    answers: list[facts.Answer] = []
    question = facts.AttemptStarted("s1", Decision(Reason.NEW, "alice", "default", (ts02,)), ts02)
    control.ask(question, answers.append)
    assert channel.messages == [question]  # the fact itself goes over the channel
    control.answered(pickle.loads(pickle.dumps(durable("s1", failed))))
    assert answers == [facts.Durable("s1", None, "disk I/O error")]


async def test_a_worker_whose_primary_is_gone_answers_every_open_question_unavailable() -> None:
    ts01 = Server("TS01", "127.0.0.1", 3391)
    decision = Decision(Reason.NEW, "alice", "default", (ts01,))
    control = RemoteControl(channel=type("Quiet", (), {"send": lambda self, m: None})())  # type: ignore[arg-type]
    answers: list[facts.Answer] = []
    control.ask(facts.RouteAsked("s1", RouteRequest("10.0.0.1", "alice")), answers.append)
    control.ask(facts.AttemptStarted("s2", decision, ts01), answers.append)
    control.answered(facts.Decided("s1", decision, attempted=True))  # s1 now awaits its first Durable
    control.lost("the primary process is gone")
    assert answers[0] == facts.Decided("s1", decision, attempted=True)
    assert sorted(answers[1:], key=lambda a: a.sid) == [facts.Durable("s1", unavailable="the primary process is gone"),
                                                        facts.Durable("s2", unavailable="the primary process is gone")]
    control.ask(facts.AttemptStarted("s3", decision, ts01), answers.append)  # asked after: answered, not at once
    assert len(answers) == 3
    await asyncio.sleep(0)
    assert answers[3] == facts.Durable("s3", unavailable="the primary process is gone")
