#!/bin/sh
# The sessions of this xrdp host, as the JSON rdpbalancer's session directory reads, printed or
# pushed to the balancer. For xrdp 0.9 (Debian 12): its sesman tells user names to nobody over
# its port (xrdp-sesadmin's list has ids and times only), so the host's own process table is the
# source. Each session is an X server (Xvnc or Xorg) started by a child of xrdp-sesman, running
# as the user; it is "active" while xrdp holds a connection to it, else "disconnected".
#
#   xrdp-sessions.sh                                  print the JSON
#   xrdp-sessions.sh --push URL [--push URL2] --token-file FILE
#                                                     PUT it to each URL with the host's push token
#
# URL: https://balancer:8080/api/v1/hosts/<this server's name>/sessions; give every node of an HA
# pair (each keeps its own directory). Run it as root every 15 seconds (a systemd timer:
# contrib/README.md). Needs ps, ss and, to push, curl. Exit status 1 if a push failed.
set -eu

push_urls="" token_file=""
while [ $# -gt 0 ]; do
    case "$1" in
        --push) push_urls="$push_urls $2"; shift 2 ;;
        --token-file) token_file="$2"; shift 2 ;;
        *) echo "usage: $0 [--push URL --token-file FILE]" >&2; exit 2 ;;
    esac
done

# pid, parent, user, start time (epoch), command and arguments of every process
sessions_json() {
    sesman_children=$(ps -e -o pid=,comm= | awk '$2 == "xrdp-sesman" {print $1}' | while read -r sesman; do
        ps -o pid= --ppid "$sesman"
    done | tr -s ' \n' ' ')
    first=1
    printf '{"sessions": ['
    ps -e -o pid=,ppid=,user=,lstart=,args= | while read -r pid ppid user _d _m _n _t _y cmd args; do
        case "$cmd" in */Xvnc|Xvnc|*/Xorg|Xorg) ;; *) continue ;; esac
        case " $sesman_children " in *" $ppid "*) ;; *) continue ;; esac
        display=$(printf '%s\n' "$args" | tr ' ' '\n' | sed -n 's/^:\([0-9][0-9]*\)$/\1/p' | head -n 1)
        [ -n "$display" ] || continue
        logon=$(date -d "$_d $_m $_n $_t $_y" +%s 2>/dev/null || echo null)
        # Xvnc: xrdp connects to the RFB port; Xorg (xorgxrdp): to the display's unix socket
        state=disconnected
        if ss -Htn state established "( sport = :$((5900 + display)) )" 2>/dev/null | grep -q .; then
            state=active
        elif ss -Hx 2>/dev/null | grep -q "xrdp_display_${display}\b"; then
            state=active
        fi
        [ $first -eq 1 ] || printf ', '
        first=0
        # Linux user names are [a-z0-9_.-]: nothing to escape
        printf '{"user": "%s", "state": "%s", "id": "%s", "logon": %s}' "$user" "$state" "$ppid" "$logon"
    done
    printf ']}\n'
}

if [ -z "$push_urls" ]; then
    sessions_json
    exit 0
fi
[ -n "$token_file" ] || { echo "--push needs --token-file" >&2; exit 2; }
token=$(cat "$token_file")
body=$(sessions_json)
status=0
for url in $push_urls; do
    printf '%s' "$body" | curl -fsS --max-time 10 -X PUT -H "Authorization: Bearer $token" \
        -H "Content-Type: application/json" --data-binary @- "$url" >/dev/null || status=1
done
exit $status
