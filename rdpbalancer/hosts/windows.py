"""`source = "windows"`: ask a Windows session host for its sessions over MS-TSTS, the RPC
interface `qwinsta /server:` uses, with impacket (named pipes over SMB, port 445).

    TermSrvEnumeration.hRpcOpenEnum / hRpcGetEnumResult(Level=1)   session ids, names, states
    TermSrvSession.hRpcGetSessionInformationEx(id)                  user, domain, logon/disconnect times

Blocking (impacket is synchronous): the poller runs it in a bounded thread pool. The service
account needs the "Query Information" right on the host's RDP listener, which members of the
host's Administrators and, on Windows Server 2012 and later, "Remote Desktop Users" are not
given by default; SECURITY.md says how to grant exactly that. SMB signing is required of the
session: the client asks for it, and a host that does not sign is refused, not queried unsigned.

Verified against a fake endpoint built from impacket's own structures (tests/unit/
test_hosts_windows.py), not against a real Windows host: none can run here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from impacket.dcerpc.v5 import tsts
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.smbconnection import SessionError, SMBConnection

from rdpbalancer.hosts.spec import HostSource
from rdpbalancer.policy.host_sessions import HostReport, HostSession, SessionState

# WINSTATIONSTATECLASS values ([MS-TSTS] 2.2.1.9): the two a user's session can be in
STATE_ACTIVE, STATE_CONNECTED, STATE_DISCONNECTED = 0, 1, 4
NOT_USER_SESSIONS = {"services", "console-without-user", "rdp-tcp"}  # session 0, listeners
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


class WindowsError_(RuntimeError):  # WindowsError is a builtin alias of OSError
    """The host refused or failed the query; the message says which and why, never a secret."""


def connect(source: HostSource) -> Any:
    """An SMB connection to the host with the service account, signed (or refused)."""
    creds = source.credentials
    if creds is None:
        raise WindowsError_("no credentials for the windows source")
    port = source.port or 445
    try:
        smb = SMBConnection(source.host, source.host, sess_port=port, timeout=max(1, int(source.timeout_s)))
        require_signing(smb)
        smb.login(creds.user, creds.password, creds.domain)
    except SessionError as exc:
        raise WindowsError_(_smb_error(exc)) from None
    except OSError as exc:
        raise WindowsError_(f"cannot reach {source.host}:{port}: {exc.strerror or exc}") from None
    if not signed(smb):
        smb.close()
        raise WindowsError_(f"{source.host} did not sign the SMB session; refusing to query it unsigned")
    return smb


def require_signing(smb: Any) -> None:
    """Ask for a signed session before logging on (SMB 2/3: impacket's client flags)."""
    server = smb.getSMBServer()
    if hasattr(server, "RequireMessageSigning"):
        server.RequireMessageSigning = True
        server._Connection["RequireSigning"] = True  # impacket has no public setter


def signed(smb: Any) -> bool:
    session = getattr(smb.getSMBServer(), "_Session", None)
    return bool(session is not None and session["SigningActivated"])


def _smb_error(exc: Exception) -> str:
    text = str(exc)
    if "STATUS_LOGON_FAILURE" in text:
        return "the service account was refused (STATUS_LOGON_FAILURE): wrong user or password"
    if "STATUS_ACCESS_DENIED" in text:
        return "access denied (STATUS_ACCESS_DENIED): the service account lacks the right to query sessions"
    return text.split(" - ", maxsplit=1)[0][:200]


def query_windows(source: HostSource, now: float, *, endpoints: Any = tsts, connect: Any = connect) -> HostReport:
    """Blocking; `endpoints` and `connect` are impacket's (a test passes fakes built from its structures)."""
    smb = connect(source)
    try:
        with endpoints.TermSrvEnumeration(smb, source.host, False) as lsm:
            handle = lsm.hRpcOpenEnum()
            listed = lsm.hRpcGetEnumResult(handle, Level=1)["ppSessionEnumResult"]
            lsm.hRpcCloseEnum(handle)
        entries = [e["SessionInfo"]["SessionEnum_Level1"] for e in listed]
        with endpoints.TermSrvSession(smb, source.host, False) as termsrv:
            sessions = tuple(s for e in entries if (s := _session(termsrv, e)) is not None)
    except DCERPCException as exc:
        raise WindowsError_(_rpc_error(exc)) from None
    finally:
        smb.close()
    return HostReport(source.server, sessions, at=now)


def _rpc_error(exc: Exception) -> str:
    text = str(exc)
    if "rpc_s_access_denied" in text or "ACCESS_DENIED" in text:
        return "access denied by the RPC interface: the service account lacks Query Information on RDP-Tcp"
    return f"RPC error: {text[:200]}"


def _session(termsrv: Any, entry: Any) -> HostSession | None:
    state = int(entry["State"])
    if state not in (STATE_ACTIVE, STATE_CONNECTED, STATE_DISCONNECTED):
        return None  # listening, idle, down, ...: not a user's session
    session_id = int(entry["SessionId"])
    info = termsrv.hRpcGetSessionInformationEx(session_id)["LSMSessionInfoExPtr"]["LSM_SessionInfo_Level1"]
    user = _text(info["UserName"])
    if not user:
        return None  # a session before logon (the login screen)
    return HostSession(user=user, domain=_text(info["DomainName"]),
                       state=SessionState.DISCONNECTED if state == STATE_DISCONNECTED else SessionState.ACTIVE,
                       id=str(session_id), logon=_seconds(info["LogonTime"]),
                       disconnected=_seconds(info["DisconnectTime"]) if state == STATE_DISCONNECTED else None)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-16-le", errors="replace")
    return str(value).rstrip("\x00").strip()


def _seconds(value: Any) -> float | None:
    """impacket gives datetimes (naive UTC) for FILETIMEs; 1601 means "never"."""
    if isinstance(value, dt.datetime):
        if value.year <= 1601:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, int) and value > 0:
        return (_FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)).timestamp()
    return None
