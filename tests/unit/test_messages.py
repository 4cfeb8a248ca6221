"""The worker and handoff channels carry typed messages; each side dispatches them in one place,
and a message it does not know is an error that names it."""

from __future__ import annotations

import dataclasses
import logging
import pickle

import pytest

from rdpbalancer.handoff import messages as handoff_messages
from rdpbalancer.handoff.new import Takeover
from rdpbalancer.handoff.old import Handover
from rdpbalancer.workers import messages as worker_messages
from rdpbalancer.workers.primary import WorkerLink
from rdpbalancer.workers.worker import Worker


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
