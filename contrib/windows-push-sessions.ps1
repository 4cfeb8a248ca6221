# Push this Windows session host's sessions to rdpbalancer (source = "push").
#
# The sessions are read from the Terminal Services API (wtsapi32.dll: WTSEnumerateSessionsW,
# WTSQuerySessionInformationW), not from `quser`'s text, whose header and state words are
# translated on a localized Windows. They are sent as the balancer's structured form, the same
# on every host whatever its language:
#   {"sessions":[{"user":"alice","domain":"CORP","id":"2","state":"active",
#                 "logon":"2026-12-02T07:30:00Z"}, ...],"deny_new":false}
# Only sessions that have a user and are active (WTSActive) or disconnected (WTSDisconnected)
# are sent: the services session, the listeners and a console at its logon screen have none.
# It also says whether the host refuses new logons: "change logon /disable"
# (WinStationsDisabled) or drain mode (TSServerDrainMode).
#
# -Quser sends what `quser` prints instead, as earlier versions of this script did: for English
# hosts, or a balancer older than the structured form's use here. On other languages the
# balancer knows a few state words only and refuses a line it cannot read.
#
# Install: copy it and the host's push token (a file readable by SYSTEM and Administrators only)
# to C:\ProgramData\rdpbalancer\, then run every minute as SYSTEM:
#   schtasks /Create /TN rdpbalancer-push /RU SYSTEM /SC MINUTE /MO 1 /TR ^
#     "powershell -NoProfile -ExecutionPolicy Bypass -File C:\ProgramData\rdpbalancer\windows-push-sessions.ps1 ^
#      -Url https://balancer:8080/api/v1/hosts/TS01/sessions -TokenFile C:\ProgramData\rdpbalancer\push-token"
# A task runs at most once a minute; for 15 s, let the script loop: -Repeat 4 -Every 15.
#
# Verified, and not verified: no Windows host and no PowerShell could run here (Debian has no
# powershell package). Verified: the balancer parses the body this script builds, written out as
# ConvertTo-Json -Compress renders it (tests/data/hosts/windows-push-structured.json, read by
# tests/unit/test_hosts_push_formats.py), and the -Quser text as Microsoft documents it
# (tests/component/test_session_directory.py). Not verified: this script itself on a host: the
# P/Invoke declarations and the WTSINFOW layout below follow Microsoft's wtsapi32.h reference,
# and were neither compiled nor run. Try it with -DryRun first: it prints the body and sends nothing.
param(
    [Parameter(Mandatory = $true)][string[]]$Url,  # every node of an HA pair: each keeps its own directory
    [Parameter(Mandatory = $true)][string]$TokenFile,
    [int]$Repeat = 1,
    [int]$Every = 15,
    [switch]$Quser,  # send quser's text (the old form) instead of the structured list
    [switch]$DryRun  # print the body, send nothing
)
$ErrorActionPreference = "Stop"
$token = (Get-Content -Raw -Path $TokenFile).Trim()
$key = "HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server"

if (-not ("RdpbWts" -as [type])) {
    Add-Type -TypeDefinition @"
using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Runtime.InteropServices;

public class RdpbSession {
    public int Id;
    public string User;
    public string Domain;
    public string State;
    public long LogonTime;       // FILETIME, UTC; 0: none
    public long DisconnectTime;  // FILETIME, UTC; 0: none
}

public static class RdpbWts {
    const int WTSActive = 0, WTSDisconnected = 4;                   // WTS_CONNECTSTATE_CLASS
    const int WTSUserName = 5, WTSDomainName = 7, WTSSessionInfo = 24;  // WTS_INFO_CLASS

    [StructLayout(LayoutKind.Sequential)]
    struct WTS_SESSION_INFOW {
        public int SessionId;
        public IntPtr pWinStationName;
        public int State;
    }

    [StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
    struct WTSINFOW {
        public int State;
        public int SessionId;
        public int IncomingBytes, OutgoingBytes, IncomingFrames, OutgoingFrames;
        public int IncomingCompressedBytes, OutgoingCompressedBytes;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 32)] public string WinStationName;  // WINSTATIONNAME_LENGTH
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 17)] public string Domain;          // DOMAIN_LENGTH
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 21)] public string UserName;        // USERNAME_LENGTH + 1
        public long ConnectTime, DisconnectTime, LastInputTime, LogonTime, CurrentTime;
    }

    [DllImport("wtsapi32.dll", EntryPoint = "WTSEnumerateSessionsW", SetLastError = true)]
    static extern bool WTSEnumerateSessions(IntPtr server, int reserved, int version, out IntPtr sessions, out int count);

    [DllImport("wtsapi32.dll", EntryPoint = "WTSQuerySessionInformationW", SetLastError = true)]
    static extern bool WTSQuerySessionInformation(IntPtr server, int sessionId, int infoClass, out IntPtr buffer, out int bytes);

    [DllImport("wtsapi32.dll")]
    static extern void WTSFreeMemory(IntPtr memory);

    static IntPtr Query(int sessionId, int infoClass) {
        IntPtr buffer;
        int bytes;
        // IntPtr.Zero: WTS_CURRENT_SERVER_HANDLE, this host
        if (!WTSQuerySessionInformation(IntPtr.Zero, sessionId, infoClass, out buffer, out bytes)) return IntPtr.Zero;
        return buffer;
    }

    static string Text(int sessionId, int infoClass) {
        IntPtr buffer = Query(sessionId, infoClass);
        if (buffer == IntPtr.Zero) return "";
        try { return Marshal.PtrToStringUni(buffer) ?? ""; } finally { WTSFreeMemory(buffer); }
    }

    public static RdpbSession[] List() {
        IntPtr first;
        int count;
        if (!WTSEnumerateSessions(IntPtr.Zero, 0, 1, out first, out count))
            throw new Win32Exception(Marshal.GetLastWin32Error());
        var found = new List<RdpbSession>();
        try {
            int size = Marshal.SizeOf(typeof(WTS_SESSION_INFOW));
            for (int i = 0; i < count; i++) {
                var s = (WTS_SESSION_INFOW)Marshal.PtrToStructure(
                    new IntPtr(first.ToInt64() + (long)i * size), typeof(WTS_SESSION_INFOW));
                if (s.State != WTSActive && s.State != WTSDisconnected) continue;  // listeners, connecting, ...
                string user = Text(s.SessionId, WTSUserName);
                if (user.Length == 0) continue;  // services, a logon screen: no user
                var session = new RdpbSession {
                    Id = s.SessionId, User = user, Domain = Text(s.SessionId, WTSDomainName),
                    State = s.State == WTSActive ? "active" : "disconnected" };
                IntPtr info = Query(s.SessionId, WTSSessionInfo);
                if (info != IntPtr.Zero) {
                    try {
                        var w = (WTSINFOW)Marshal.PtrToStructure(info, typeof(WTSINFOW));
                        session.LogonTime = w.LogonTime;
                        session.DisconnectTime = w.DisconnectTime;
                    } finally { WTSFreeMemory(info); }
                }
                found.Add(session);
            }
        } finally { WTSFreeMemory(first); }
        return found.ToArray();
    }
}
"@
}

function Format-Utc([long]$filetime) {
    if ($filetime -le 0) { return $null }
    # "2026-12-02T07:30:00Z": RFC 3339 with its zone, as the balancer requires
    return [DateTime]::FromFileTimeUtc($filetime).ToString("s", [Globalization.CultureInfo]::InvariantCulture) + "Z"
}

function Get-Sessions {
    foreach ($s in [RdpbWts]::List()) {
        $item = [ordered]@{ user = $s.User; domain = $s.Domain; id = [string]$s.Id; state = $s.State }
        $logon = Format-Utc $s.LogonTime
        if ($logon) { $item.logon = $logon }
        $gone = Format-Utc $s.DisconnectTime
        if ($s.State -eq "disconnected" -and $gone) { $item.disconnected = $gone }
        $item
    }
}

function Get-QuserText {
    # quser writes "No User exists for *" to stderr and exits 1 when nobody is logged on; with
    # "Stop", Windows PowerShell would turn that stderr line into a terminating error
    $ErrorActionPreference = "Continue"
    return (& quser.exe 2>&1 | ForEach-Object { "$_" } | Out-String)
}

for ($i = 0; $i -lt $Repeat; $i++) {
    $settings = Get-ItemProperty -Path $key
    $denyNew = ($settings.WinStationsDisabled -eq 1) -or ($settings.TSServerDrainMode -in 1, 2)
    if ($Quser) {
        $doc = [ordered]@{ quser = (Get-QuserText); deny_new = [bool]$denyNew }
    } else {
        $doc = [ordered]@{ sessions = @(Get-Sessions); deny_new = [bool]$denyNew }
    }
    $body = $doc | ConvertTo-Json -Compress -Depth 4
    if ($DryRun) { $body; break }
    # as UTF-8 bytes: given a string, Windows PowerShell's Invoke-RestMethod would send ISO-8859-1
    $bytes = [Text.Encoding]::UTF8.GetBytes($body)
    foreach ($u in $Url) {
        try {
            Invoke-RestMethod -Method Put -Uri $u -Body $bytes -ContentType "application/json; charset=utf-8" `
                -Headers @{ Authorization = "Bearer $token" } -TimeoutSec 10 | Out-Null
        } catch {
            Write-Warning "push to $u failed: $_"  # the other nodes still get it
        }
    }
    if ($i -lt $Repeat - 1) { Start-Sleep -Seconds $Every }
}
