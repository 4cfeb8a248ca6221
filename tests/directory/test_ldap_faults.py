"""LdapDirectory against servers that misbehave, on loopback sockets (no Samba needed).

Whatever the server does, only DirectoryError leaves fetch(), with the URL and a short cause.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from rdpbalancer.directory.errors import DirectoryError
from rdpbalancer.directory.ldap import LdapDirectory, LdapSettings

GROUPS = {"Sales": "CN=Sales,OU=Groups,DC=corp,DC=example"}


def settings(url: str, **overrides: object) -> LdapSettings:
    values: dict[str, object] = {
        "urls": (url,),
        "bind_user": "svc@corp.example",
        "password": "S3cret-not-shown",
        "base_dn": "DC=corp,DC=example",
        "connect_timeout_s": 0.5,
        "operation_timeout_s": 1,
    }
    values.update(overrides)
    return LdapSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock


@contextlib.contextmanager
def answering(listener: socket.socket, reply: bytes) -> Iterator[str]:
    """A server that answers the first request of each client with `reply`, then hangs up."""
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(2)
                client.recv(4096)
                client.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)


def test_a_server_that_never_answers_times_out(listener: socket.socket) -> None:
    # The kernel completes the handshake for a listening socket: connect works, the bind gets no answer.
    url = f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(settings(url)).fetch(GROUPS)
    assert str(info.value) == f"bind as svc@corp.example to {url}: no answer within 1s"
    assert time.monotonic() - started < 5


def test_a_server_that_does_not_accept_times_out_on_connect() -> None:
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = full.getsockname()
        with contextlib.ExitStack() as stack:
            _fill_accept_queue(address, stack)
            url = f"ldap://127.0.0.1:{address[1]}"
            with pytest.raises(DirectoryError) as info:
                LdapDirectory(settings(url)).fetch(GROUPS)
    assert str(info.value) == f"connect to {url}: no answer within 0.5s"


def _fill_accept_queue(address: tuple[str, int], stack: contextlib.ExitStack) -> None:
    """Connect until a connect times out: the listener's queue is full and further SYNs are dropped."""
    for _ in range(64):
        client = stack.enter_context(socket.socket())
        client.settimeout(0.2)
        try:
            client.connect(address)
        except TimeoutError:
            return
    pytest.fail("the accept queue never filled up")


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        b"\x30\x03\x02\x01\x01",  # a BER sequence holding only a message id
        b"\x30\x84\xff\xff\xff\xff",  # a 4 GiB length
        b"",  # hang up without a word
    ],
    ids=["http", "truncated-ldap-message", "huge-length", "hang-up"],
)
def test_a_server_that_is_not_ldap_is_reported(listener: socket.socket, reply: bytes) -> None:
    with answering(listener, reply) as url, pytest.raises(DirectoryError) as info:
        LdapDirectory(settings(url)).fetch(GROUPS)
    assert str(info.value).startswith(f"bind as svc@corp.example to {url}: ")
    assert "S3cret" not in str(info.value)


def test_the_next_url_is_tried_after_a_timeout(listener: socket.socket) -> None:
    silent = f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(DirectoryError) as info:
        LdapDirectory(settings(silent, urls=(silent, "ldap://127.0.0.1:1"))).fetch(GROUPS)
    assert str(info.value) == (
        f"bind as svc@corp.example to {silent}: no answer within 1s; connect to ldap://127.0.0.1:1: connection refused"
    )
