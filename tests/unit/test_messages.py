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
from rdpbalancer.policy.model import Server
from rdpbalancer.relay.control import ControlUnavailable, durable_outcome
from rdpbalancer.workers import messages as worker_messages
from rdpbalancer.workers.primary import WorkerLink
from rdpbalancer.workers.worker import RemoteControl, Worker


@dataclasses.dataclass(frozen=True, slots=True)
class FromANewerVersion:
    payload: int = 1


@pytest.mark.parametrize("module", [worker_messages, handoff_messages], ids=["workers", "handoff"])
def test_every_message_is_a_frozen_slotted_dataclass(module) -> None:  # type: ignore[no-untyped-def]
    kinds = [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
             and v.__module__ == module.__name__ and v.__name__ not in ("RuntimeState",)]
    assert len(kinds) >= 6
    for kind in kinds:
        params = kind.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and hasattr(kind, "__slots__"), kind.__name__


def test_messages_survive_the_channel_encoding() -> None:
    message = worker_messages.Durable("s1", None)
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
    """One reading of a done attempt future on both paths: a store fault is never "durable"."""
    loop = asyncio.get_running_loop()
    failed, cancelled, placed = loop.create_future(), loop.create_future(), loop.create_future()
    failed.set_exception(OSError("disk I/O error"))
    cancelled.cancel()
    ts02 = Server("TS02", "127.0.0.1", 3392)
    placed.set_result(ts02)
    assert durable_outcome(failed) == (None, "disk I/O error")
    assert durable_outcome(cancelled) == (None, "cancelled")
    assert durable_outcome(placed) == (ts02, None)
    # the primary sends what durable_outcome says; the worker's session sees the same fact
    control = RemoteControl(channel=None)  # type: ignore[arg-type]  # nothing is sent here
    answer = control._durable["s1"] = control._future()
    control.durable("s1", *durable_outcome(failed))
    assert isinstance(answer.exception(), ControlUnavailable) and str(answer.exception()) == "disk I/O error"
    assert durable_outcome(answer) == (None, "disk I/O error")
