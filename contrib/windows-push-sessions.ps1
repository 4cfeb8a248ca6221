# Push this Windows session host's sessions to rdpbalancer (source = "push").
#
# It sends what `quser` prints, as it prints it; the balancer parses it (one parser, tested
# there, instead of one per host). It also says whether the host refuses new logons:
# "change logon /disable" (WinStationsDisabled) or drain mode (TSServerDrainMode).
#
# Install: copy it and the host's push token (a file readable by SYSTEM and Administrators only)
# to C:\ProgramData\rdpbalancer\, then run every minute as SYSTEM:
#   schtasks /Create /TN rdpbalancer-push /RU SYSTEM /SC MINUTE /MO 1 /TR ^
#     "powershell -NoProfile -ExecutionPolicy Bypass -File C:\ProgramData\rdpbalancer\windows-push-sessions.ps1 ^
#      -Url https://balancer:8080/api/v1/hosts/TS01/sessions -TokenFile C:\ProgramData\rdpbalancer\push-token"
# A task runs at most once a minute; for 15 s, let the script loop: -Repeat 4 -Every 15.
#
# Verified here against the balancer's endpoint with quser output as Microsoft documents it
# (tests/component/test_session_directory.py); no Windows host could run it.
param(
    [Parameter(Mandatory = $true)][string[]]$Url,  # every node of an HA pair: each keeps its own directory
    [Parameter(Mandatory = $true)][string]$TokenFile,
    [int]$Repeat = 1,
    [int]$Every = 15
)
$ErrorActionPreference = "Stop"
$token = (Get-Content -Raw -Path $TokenFile).Trim()
$key = "HKLM:\SYSTEM\CurrentControlSet\Control\Terminal Server"

for ($i = 0; $i -lt $Repeat; $i++) {
    # quser writes "No User exists for *" to stderr and exits 1 when nobody is logged on
    $text = (& quser.exe 2>&1 | Out-String)
    $settings = Get-ItemProperty -Path $key
    $denyNew = ($settings.WinStationsDisabled -eq 1) -or ($settings.TSServerDrainMode -in 1, 2)
    $body = @{ quser = $text; deny_new = [bool]$denyNew } | ConvertTo-Json -Compress
    foreach ($u in $Url) {
        try {
            Invoke-RestMethod -Method Put -Uri $u -Body $body -ContentType "application/json" `
                -Headers @{ Authorization = "Bearer $token" } -TimeoutSec 10 | Out-Null
        } catch {
            Write-Warning "push to $u failed: $_"  # the other nodes still get it
        }
    }
    if ($i -lt $Repeat - 1) { Start-Sleep -Seconds $Every }
}
