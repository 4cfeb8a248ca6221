"""The MS-TSTS adapter (hosts/windows.py) against a fake endpoint whose answers are impacket's own
structures (RpcGetEnumResultResponse, RpcGetSessionInformationExResponse), filled as a Windows
host fills them: no Windows host can run here. Also: access denied, a logon refused, a host that
is down or does not sign, and a query slower than its timeout in the real poller."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from impacket.dcerpc.v5 import tsts
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.smbconnection import SessionError

from rdpbalancer.hosts import windows
from rdpbalancer.hosts.poller import SessionPoller
from rdpbalancer.hosts.spec import Credentials, HostSource, SessionsPlan
from rdpbalancer.policy.host_sessions import HostSession, SessionState
from rdpbalancer.policy.session_index import SessionDirectory
from tests.support.balancer import refused_port

SOURCE = HostSource("TS01", "127.0.0.1", "windows", 15.0, 2.0, 60.0, port=None,
                    credentials=Credentials("svc-rdpb", "pw", "CORP"))
NOW = 1_796_246_000.0


def filetime(when: dt.datetime) -> int:
    return int((when - dt.datetime(1601, 1, 1, tzinfo=dt.UTC)).total_seconds() * 10_000_000)


LOGON = dt.datetime(2026, 12, 2, 7, 30, tzinfo=dt.UTC)
GONE = dt.datetime(2026, 12, 2, 9, 5, tzinfo=dt.UTC)
# session id -> (state, name, user, domain): what `qwinsta` would show on a busy host
HOST = {0: (tsts.WINSTATIONSTATECLASS.enumItems.State_Disconnected.value, "Services", "", ""),
        1: (tsts.WINSTATIONSTATECLASS.enumItems.State_Connected.value, "Console", "", ""),  # the login screen
        2: (tsts.WINSTATIONSTATECLASS.enumItems.State_Active.value, "RDP-Tcp#3", "alice", "CORP"),
        3: (tsts.WINSTATIONSTATECLASS.enumItems.State_Disconnected.value, "", "bob", "CORP"),
        65536: (tsts.WINSTATIONSTATECLASS.enumItems.State_Listen.value, "RDP-Tcp", "", "")}


def enum_response() -> Any:
    response = tsts.RpcGetEnumResultResponse()
    for session_id, (state, name, _user, _domain) in HOST.items():
        item = tsts.SessionInfo_STRUCT()
        item["Level"] = 1
        item["SessionInfo"]["tag"] = 1
        level1 = item["SessionInfo"]["SessionEnum_Level1"]
        level1["SessionId"], level1["State"], level1["Name"] = session_id, state, name
        response["ppSessionEnumResult"].append(item)
    response["pEntries"] = len(HOST)
    return response


def info_response(session_id: int) -> Any:
    state, name, user, domain = HOST[session_id]
    response = tsts.RpcGetSessionInformationExResponse()
    response["LSMSessionInfoExPtr"]["tag"] = 1
    info = response["LSMSessionInfoExPtr"]["LSM_SessionInfo_Level1"]
    info["SessionState"], info["SessionName"], info["UserName"], info["DomainName"] = state, name, user, domain
    info["LogonTime"] = filetime(LOGON)
    disconnected = state == tsts.WINSTATIONSTATECLASS.enumItems.State_Disconnected.value
    info["DisconnectTime"] = filetime(GONE) if disconnected else 0
    info["ConnectTime"] = filetime(LOGON)
    return response


class FakeEndpoints:
    """tsts.TermSrvEnumeration / TermSrvSession, answering with the structures above."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.closed_enums = 0
        outer = self

        class Endpoint:
            def __init__(self, smb: object, host: str, kerberos: bool) -> None:
                assert not kerberos and host == "127.0.0.1"

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def hRpcOpenEnum(self) -> bytes:  # impacket's names
                if outer.fail is not None:
                    raise outer.fail
                return b"\x01" * 20

            def hRpcGetEnumResult(self, handle: bytes, Level: int = 1) -> Any:
                assert Level == 1
                return enum_response()

            def hRpcCloseEnum(self, handle: bytes) -> None:
                outer.closed_enums += 1

            def hRpcGetSessionInformationEx(self, session_id: int) -> Any:
                return info_response(session_id)

        self.TermSrvEnumeration = self.TermSrvSession = Endpoint


class FakeSmb:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_sessions_of_users_with_their_states_and_times() -> None:
    smb = FakeSmb()
    report = windows.query_windows(SOURCE, NOW, endpoints=FakeEndpoints(), connect=lambda _s: smb)
    assert report.sessions == (
        HostSession("alice", "CORP", SessionState.ACTIVE, "2", LOGON.timestamp(), None),
        HostSession("bob", "CORP", SessionState.DISCONNECTED, "3", LOGON.timestamp(), GONE.timestamp()),
    )  # services, the login screen and the listener are no user's sessions
    assert report.at == NOW and smb.closed


def test_access_denied_by_the_rpc_interface_says_which_right_is_missing() -> None:
    smb = FakeSmb()
    denied = DCERPCException("rpc_s_access_denied")
    with pytest.raises(windows.WindowsError_, match="lacks Query Information on RDP-Tcp"):
        windows.query_windows(SOURCE, NOW, endpoints=FakeEndpoints(denied), connect=lambda _s: smb)
    assert smb.closed


class FakeSmbServer:
    def __init__(self, signs: bool) -> None:
        self.RequireMessageSigning = False
        self._Connection = {"RequireSigning": False}
        self._Session = {"SigningActivated": False}
        self.signs = signs


class FakeConnection:
    """impacket.smbconnection.SMBConnection as connect() uses it."""

    refuse: Exception | None = None
    signs = True

    def __init__(self, name: str, host: str, sess_port: int, timeout: int) -> None:
        if sess_port != 445:
            raise ConnectionRefusedError(111, "Connection refused")
        self.server = FakeSmbServer(FakeConnection.signs)
        self.closed = False

    def getSMBServer(self) -> FakeSmbServer:
        return self.server

    def login(self, user: str, password: str, domain: str) -> None:
        if FakeConnection.refuse is not None:
            raise FakeConnection.refuse
        assert self.server.RequireMessageSigning and self.server._Connection["RequireSigning"]  # asked for
        self.server._Session["SigningActivated"] = self.server.signs

    def close(self) -> None:
        self.closed = True


def test_connect_asks_for_signing_and_refuses_a_host_that_does_not_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "SMBConnection", FakeConnection)
    FakeConnection.refuse, FakeConnection.signs = None, True
    assert isinstance(windows.connect(SOURCE), FakeConnection)
    FakeConnection.signs = False
    with pytest.raises(windows.WindowsError_, match="did not sign the SMB session"):
        windows.connect(SOURCE)


def test_a_wrong_password_and_a_host_that_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "SMBConnection", FakeConnection)
    FakeConnection.signs = True
    FakeConnection.refuse = SessionError(0xC000006D)  # STATUS_LOGON_FAILURE
    with pytest.raises(windows.WindowsError_, match="service account was refused") as info:
        windows.connect(SOURCE)
    assert "pw" not in str(info.value)
    FakeConnection.refuse = None
    down = HostSource("TS01", "127.0.0.1", "windows", 15.0, 2.0, 60.0, port=1, credentials=SOURCE.credentials)
    with pytest.raises(windows.WindowsError_, match=r"cannot reach 127.0.0.1:1: Connection refused"):
        windows.connect(down)


# impacket drops its socket without closing it when the connect is refused; the collector closes it
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_real_impacket_reaches_a_host_that_is_down() -> None:
    """No fake: impacket's own SMBConnection against a loopback port nobody listens on."""
    with refused_port() as port:  # held bound while the test runs: nobody can listen there meanwhile
        down = HostSource("TS01", "127.0.0.1", "windows", 15.0, 2.0, 60.0, port=port, credentials=SOURCE.credentials)
        with pytest.raises(windows.WindowsError_, match=f"cannot reach 127.0.0.1:{port}"):
            windows.connect(down)


async def test_a_slow_host_times_out_in_the_poller_and_routing_falls_back() -> None:
    directory = SessionDirectory()

    async def slow(_source: HostSource) -> Any:
        await asyncio.sleep(10)

    plan = SessionsPlan(sources=(HostSource("TS01", "127.0.0.1", "windows", 15.0, 0.2, 60.0),))
    poller = SessionPoller(directory, plan, clock=lambda: NOW, windows=slow)
    await poller.poll_once(plan.sources[0])
    assert directory.reports["TS01"].error == "no answer within 0.2s"
    assert not directory.fresh("TS01", NOW)
    assert poller.stats["TS01"].failures == 1 and poller.stats["TS01"].failing_since == NOW
